"""Shared test fixtures.

The device under test is chosen with `pytest --device cuda` (or MINISSD_TEST_DEVICE=cuda):
tests that take the `xp` fixture then run on CuPy arrays, and the kernels run for real.
Default is the CPU. Tests marked `gpu` are skipped when no GPU answers, never failed.
"""
import os

import numpy as np
import pytest

from minissd import backend


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("MINISSD_TEST_DEVICE", "cpu"),
                     choices=("cpu", "cuda"), help="array device the tests run on")


def pytest_configure(config):
    device = config.getoption("--device")
    if device == "cuda":
        backend.set_device("cuda")      # raises, naming what is missing, when there is no GPU
    else:
        backend.set_device("cpu")


def pytest_collection_modifyitems(config, items):
    if backend.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def xp():
    """The array module under test: numpy, or cupy with --device cuda."""
    return backend.current_device_xp()


@pytest.fixture
def to_xp(xp):
    """Move a NumPy array to the device under test."""
    return lambda a: xp.asarray(a)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
