"""The ``unit_hifigan`` vocoder: architecture (``arch``), checkpoint formats (``formats``), the
vocoder (``vocoder``), its trainer (``train``) and commands (``train-vocoder``, ``convert-vocoder``)."""
