"""pytest plugin: a strict fake GPU, to run `pytest --device cuda` on a machine without one.

    PYTHONPATH=tests python -m pytest -p strict_fake_gpu --device cuda tests/test_model.py

minissd.backend gets tests/fake_cupy.py's FakeCupy as its "CuPy", and its arrays are made
strict the way CuPy's are: a ufunc or NumPy function that mixes a device array with a plain
NumPy array raises TypeError (CuPy raises there too), and indexing one element gives a 0-d
device array, not a NumPy scalar. The numbers are NumPy's; what this catches is a test or a
function that puts data on the wrong device, the reason `pytest --device cuda` once failed in
tests that never asked for a GPU. The kernels' CUDA paths run their CPU paths on the host
copies (the CUDA kernels themselves are checked by the simulator, the PTX tests and, on a GPU,
the real thing).

Imported by `-p` before conftest.py configures the session, so `--device cuda` finds a GPU.
"""
import sys
import types

import numpy as np

from fake_cupy import DeviceArray, FakeCupy
from minissd import backend


def _is_plain(a):
    return isinstance(a, np.ndarray) and not isinstance(a, DeviceArray) and a.ndim > 0


def _unwrap(a):
    if isinstance(a, DeviceArray):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_unwrap(x) for x in a)
    return a


def _wrap(out, like=None):
    if isinstance(out, tuple):
        return tuple(_wrap(x, like) for x in out)
    if isinstance(out, np.generic):              # CuPy gives 0-d arrays, never NumPy scalars
        out = np.asarray(out)
    if isinstance(out, np.ndarray) and not isinstance(out, DeviceArray):
        out = out.view(DeviceArray)
        out.device = getattr(like, "device", None) or types.SimpleNamespace(id=0)
    return out


def _flat(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    if any(_is_plain(a) for a in _flat(list(inputs) + list(kwargs.get("out", ())))):
        raise TypeError(f"strict fake GPU: {ufunc.__name__} mixes a NumPy array with a device "
                        "array (CuPy raises here too)")
    if "out" in kwargs:
        kwargs["out"] = tuple(_unwrap(a) for a in kwargs["out"])
    return _wrap(getattr(ufunc, method)(*_unwrap(list(inputs)), **kwargs), self)


def _array_function(self, func, types_, args, kwargs):
    if any(_is_plain(a) for a in _flat(list(args) + list(kwargs.values()))):
        raise TypeError(f"strict fake GPU: numpy.{func.__name__} given a device array and a "
                        "NumPy array (CuPy raises here too)")
    out = func(*_unwrap(list(args)), **{k: _unwrap(v) for k, v in kwargs.items()})
    return _wrap(out, self)


def _getitem(self, key):
    out = np.ndarray.__getitem__(self, key)
    return out if isinstance(out, np.ndarray) else _wrap(np.asarray(out), self)   # 0-d


DeviceArray.__array_ufunc__ = _array_ufunc
DeviceArray.__array_function__ = _array_function
DeviceArray.__getitem__ = _getitem

FAKE = FakeCupy()
FAKE.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
    as_strided=lambda x, *a, **k: _wrap(np.lib.stride_tricks.as_strided(_unwrap(x), *a, **k),
                                        x)))
FAKE.argsort = lambda a, axis=-1: _wrap(np.argsort(_unwrap(a), axis=axis, kind="stable"), a)
backend._cupy, backend._cupy_error = FAKE, None


class _Stream:
    """Streams and events for backend.HostToDevice: on one fake device everything is in order,
    so recording, waiting and synchronizing have nothing to do."""
    def __init__(self, non_blocking=False, ptr=None):
        self.ptr = 1000 + FAKE.current if ptr is None else ptr

    def synchronize(self):
        pass

    def wait_event(self, event):
        pass


class _Event:
    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


def _set(self, host, stream=None):
    """cupy.ndarray.set: copy a host array into this device array."""
    np.copyto(self.view(np.ndarray), host)


FAKE.cuda.Stream, FAKE.cuda.Event = _Stream, _Event
FAKE.cuda.get_current_stream = lambda: _Stream()
DeviceArray.set = _set
sys.modules.setdefault("cupyx", types.SimpleNamespace(empty_pinned=np.empty))  # pinned_empty


def _on_host(f, num_args):
    """A kernel's CPU path on host copies of its first num_args inputs (the rest, a kernel
    version or block size, mean nothing on the CPU), the result back on the fake GPU."""
    def run(*args, **ignored):
        host = [FAKE.asnumpy(a) if isinstance(a, DeviceArray) else a for a in args[:num_args]]
        return FAKE.asarray(f(*host))
    return run


def _route_kernels():
    from minissd import kernels
    from minissd.kernels import hard_negative_kernel, iou_kernel, nms_kernel
    for module, name, cpu, num_args in (
            (iou_kernel, "iou_matrix_cuda", iou_kernel.iou_matrix_cpu, 2),
            (nms_kernel, "nms_cuda", nms_kernel.nms_cpu, 3),
            (nms_kernel, "batched_nms_cuda", nms_kernel.batched_nms_cpu, 4),
            (hard_negative_kernel, "hard_negative_mask_cuda",
             hard_negative_kernel.hard_negative_mask_cpu, 3)):
        setattr(module, name, _on_host(cpu, num_args))   # what kernels/__init__.py calls


_route_kernels()


def pytest_collection_modifyitems(config, items):
    """tests/test_kernels_devices.py checks the launches with its own fake CuPy and numba.cuda;
    under this plugin the kernels are routed to their CPU paths, so it has nothing to check."""
    import pytest
    skip = pytest.mark.skip(reason="test_kernels_devices.py brings its own fakes")
    for item in items:
        if item.fspath.basename == "test_kernels_devices.py":
            item.add_marker(skip)
