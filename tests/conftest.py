"""Shared test fixtures: which device each test runs on.

`pytest --device cuda` (or MINISSD_TEST_DEVICE=cuda) names the device under test. It reaches a
test only through the fixtures below, so every test says which device it means:

  xp, to_xp, device   the device under test: numpy and "cpu" by default, cupy and "cuda" with
                      --device cuda. The fixture makes it the current device for the test
                      (backend.set_device), so models built inside the test live there too.
  (none of them)      the CPU. Every test starts with the CPU as the current device, whatever
                      --device says, so a test that builds a model and feeds it NumPy arrays
                      (gradient checks, state dicts, exact resumes) runs on NumPy.
  @pytest.mark.gpu    needs a GPU and compares devices itself (builds on the CPU, then .to("cuda"),
                      or runs a command with --device cuda). Such tests run whenever a GPU
                      answers, with --device cpu too, and are skipped (never failed) elsewhere.

--device cuda on a machine where no GPU answers stops before collection with one line that
says what is missing (pytest's usage error, exit status 4), instead of running the CPU tests
under a GPU name.
"""
import os

import numpy as np
import pytest

from minissd import backend


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("MINISSD_TEST_DEVICE", "cpu"),
                     choices=("cpu", "cuda"), help="array device the tests that take the xp, "
                     "to_xp or device fixture run on (default cpu; MINISSD_TEST_DEVICE)")


def pytest_configure(config):
    if config.getoption("--device") == "cuda":
        try:
            backend.set_device("cuda")           # checks that CuPy imports and a GPU answers
        except RuntimeError as e:
            raise pytest.UsageError(f"{e} (Without a GPU, run the tests without --device "
                                    "cuda: the kernels are then checked on the CPU.)") from None
    backend.set_device("cpu")                    # the current device between tests


def pytest_report_header(config):
    gpu = "a GPU answers" if backend.cuda_available() else "no GPU: tests marked gpu skip"
    return f"minissd: device under test {config.getoption('--device')}; {gpu}"


def pytest_collection_modifyitems(config, items):
    if backend.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cpu_unless_asked():
    """Every test starts, and ends, with the CPU as the current device."""
    backend.set_device("cpu")
    yield
    backend.set_device("cpu")


@pytest.fixture
def device(request, _cpu_unless_asked):
    """The device under test, "cpu" or "cuda" (--device), made current for this test."""
    name = request.config.getoption("--device")
    backend.set_device(name)
    return name


@pytest.fixture
def xp(device):
    """The array module under test: numpy, or cupy with --device cuda."""
    return backend.current_device_xp()


@pytest.fixture
def to_xp(xp):
    """Move a NumPy array to the device under test."""
    return lambda a: xp.asarray(a)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
