import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (tiny models; reductions in a fixed order), restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fresh_registry():
    """A registry built anew for the test (built-ins + installed entry points), restored after."""
    from diffuspeech.registry import Registry, reset_registry

    reg = Registry()
    previous = reset_registry(reg)
    yield reg
    reset_registry(previous)
