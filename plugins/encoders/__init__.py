"""Built-in speech encoders, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_encoders(register):
    from .mel import MelEncoder
    from .whisper import WhisperSpeechEncoder

    register("whisper", WhisperSpeechEncoder)
    register("mel", MelEncoder)
