"""Device selection, the NumPy/CuPy switch, and the package layout (minissd.kernels)."""
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

from minissd import backend


@pytest.fixture
def fresh_backend(monkeypatch):
    """Forget what the backend learnt about CuPy, and restore the device afterwards."""
    saved = (backend._cupy, backend._cupy_error, backend._device)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", None)
    yield
    backend._cupy, backend._cupy_error, backend._device = saved


def _fake_cupy_without_driver():
    """A module that imports like CuPy but whose driver call fails, as on a machine without GPU."""
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    return cupy


def test_cpu_device_gives_numpy(fresh_backend):
    assert backend.set_device("cpu") == "cpu"
    assert backend.current_device_xp() is np
    x = np.ones(3, np.float32)
    assert backend.get_array_module(x) is np
    assert backend.to_numpy(x) is x


def test_bad_device_name(fresh_backend):
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'auto'"):
        backend.set_device("gpu")


def test_cupy_without_driver_auto_falls_back(fresh_backend, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy_without_driver())
    assert backend.set_device("auto") == "cpu"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable GPU" in err and "no GPU answers" in err
    assert backend.xp() is backend.current_device_xp() is np     # the old name still works


def test_cupy_without_driver_explicit_cuda_fails(fresh_backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy_without_driver())
    with pytest.raises(RuntimeError, match="no GPU answers.*nvidia-smi"):
        backend.set_device("cuda")


def test_no_cupy_explicit_cuda_names_the_install(fresh_backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)       # import cupy -> ImportError
    with pytest.raises(RuntimeError, match=r"not importable.*\.\[cuda12\]"):
        backend.set_device("cuda")
    assert backend.set_device("auto") == "cpu"           # silent: CuPy was never installed


def test_wheel_contains_kernels_subpackage(tmp_path):
    """A normal (non-editable) install must ship kernels/ as minissd/kernels/."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(root)], check=True)
    (wheel,) = tmp_path.glob("minissd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "minissd/kernels/__init__.py" in names
    assert "minissd/backend.py" in names and "minissd/ops/__init__.py" in names
    assert "minissd/training/loop.py" in names and "minissd/data/choice.py" in names


def test_kernels_importable_as_subpackage():
    import minissd.kernels
    assert minissd.kernels.__name__ == "minissd.kernels"
