"""Built-in vocoders, their commands and bench, registered through the hooks third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_vocoders(register):
    from .griffinlim import GriffinLimVocoder
    from .unit_hifigan.vocoder import UnitHifiganVocoder

    register("griffinlim", GriffinLimVocoder)
    register("unit_hifigan", UnitHifiganVocoder)


@hookimpl
def register_commands(register):
    register("train-vocoder", "diffuspeech.plugins.vocoders.unit_hifigan.train_command:configure",
             help="train a unit HiFi-GAN vocoder on (units, waveform) pairs")
    register("convert-vocoder", "diffuspeech.plugins.vocoders.unit_hifigan.convert_command:configure",
             help="convert a speechbrain/CodeHiFiGAN unit vocoder to the diffuspeech format")


@hookimpl
def register_benches(register):
    register("vocoder", "diffuspeech.plugins.vocoders.bench:run", add_arguments="diffuspeech.plugins.vocoders.bench:add_arguments",
             help="real-time factor of a ~14M-parameter 25 Hz unit HiFi-GAN and of Griffin-Lim on 10 s of units")
