"""End-to-end recipes (``diffuspeech recipe ...``)."""
