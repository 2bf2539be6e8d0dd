"""One module per CLI sub-command (see ``diffuspeech.cli``)."""
