import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def fresh_registry():
    """A registry built anew for the test (built-ins + installed entry points), restored after."""
    from diffuspeech.registry import Registry, reset_registry

    reg = Registry()
    previous = reset_registry(reg)
    yield reg
    reset_registry(previous)
