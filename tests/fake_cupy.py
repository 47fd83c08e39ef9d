"""A stand-in for CuPy and numba.cuda, for testing device *logic* on a machine without a GPU.

Which device an array is on, which device a kernel is launched in, which stream it gets: none
of that needs a GPU to be decided, only to be run. These fakes let the tests check the
decisions; the arithmetic is checked elsewhere (NumPy paths, Numba's simulator) and on a GPU
by the tests marked `gpu`.

    fake = FakeCupy(num_devices=2)     # installed with install(monkeypatch, fake)
    x = fake.asarray(np.ones(3))       # a DeviceArray on the current device (0)
    with fake.cuda.Device(1):
        y = fake.asarray(np.ones(3))   # ... on device 1

DeviceArray is a NumPy array subclass that remembers its device; backend.is_cupy() is True
for it once install() has pointed minissd.backend at the fake. Numbers stay NumPy's.

FakeNumbaCuda records what a launcher asks of numba.cuda: which device context it enters
(`gpus[i]`), which stream it wraps (`external_stream(ptr)`), in which context each array is
wrapped (`as_cuda_array`), and what each launch received.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np


class DeviceArray(np.ndarray):
    """A NumPy array tagged with the fake GPU it lives on (`.device.id`)."""
    device = None

    def __array_finalize__(self, obj):
        if self.device is None:
            self.device = getattr(obj, "device", None)


class FakeCupy:
    """The few parts of CuPy the device logic touches: ndarray, asarray/asnumpy, array
    constructors (any NumPy function; array results become DeviceArrays on the current
    device), cuda.Device (current device, `with Device(i):`) and cuda.get_current_stream()."""

    def __init__(self, num_devices=1):
        self.ndarray = DeviceArray
        self.current = 0
        fake = self

        class Device:
            def __init__(self, device_id=None):
                self.id = fake.current if device_id is None else device_id
                self._previous = []

            def use(self):
                fake.current = self.id

            def __enter__(self):
                self._previous.append(fake.current)
                fake.current = self.id
                return self

            def __exit__(self, *exc):
                fake.current = self._previous.pop()

        def get_current_stream():
            return types.SimpleNamespace(ptr=1000 + fake.current,   # one fake stream per GPU
                                         synchronize=lambda: None)

        runtime = types.SimpleNamespace(getDeviceCount=lambda: num_devices)
        self.cuda = types.SimpleNamespace(Device=Device, get_current_stream=get_current_stream,
                                          runtime=runtime)

    def _on_device(self, a, device_id=None):
        out = np.asarray(a).view(DeviceArray)
        out.device = types.SimpleNamespace(id=self.current if device_id is None else device_id)
        return out

    def asarray(self, a, dtype=None):
        if isinstance(a, DeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        return self._on_device(np.asarray(np.asarray(a).view(np.ndarray), dtype=dtype))

    def asnumpy(self, a):
        return np.array(np.asarray(a).view(np.ndarray))

    def __getattr__(self, name):           # zeros, empty, ascontiguousarray, float64, ...
        value = getattr(np, name)
        if not callable(value) or isinstance(value, type):
            return value

        def on_device(*args, **kwargs):
            # the result lives where the first device input lives (else on the current GPU)
            device_id = next((a.device.id for a in args if isinstance(a, DeviceArray)), None)
            args = [a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args]
            kwargs = {k: a.view(np.ndarray) if isinstance(a, DeviceArray) else a
                      for k, a in kwargs.items()}
            out = value(*args, **kwargs)
            if isinstance(out, tuple):                      # nonzero, divmod, ...
                return tuple(self._on_device(o, device_id) if isinstance(o, np.ndarray) else o
                             for o in out)
            return self._on_device(out, device_id) if isinstance(out, np.ndarray) else out
        return on_device


def install(monkeypatch, fake):
    """Point minissd.backend at `fake` for one test (monkeypatch undoes it)."""
    from minissd import backend
    monkeypatch.setattr(backend, "_cupy", fake)
    monkeypatch.setattr(backend, "_cupy_error", None)


class FakeNumbaCuda:
    """Records the numba.cuda calls of a launch. `entered` is the device context stack."""

    def __init__(self):
        self.entered = []            # device ids of the contexts currently entered
        self.streams = []            # (device context at the time, stream pointer)
        self.wrapped = []            # (device context at the time, array device id)
        fake = self

        class Gpu:
            def __init__(self, i):
                self.id = i

            def __enter__(self):
                fake.entered.append(self.id)

            def __exit__(self, *exc):
                fake.entered.pop()

        class Gpus:
            def __getitem__(self, i):
                return Gpu(i)

        self.gpus = Gpus()

    def _context(self):
        return self.entered[-1] if self.entered else None

    def external_stream(self, ptr):
        self.streams.append((self._context(), ptr))
        return types.SimpleNamespace(ptr=ptr)

    def as_cuda_array(self, x, sync=True):
        self.wrapped.append((self._context(), x.device.id))
        return x


class RecordingKernel:
    """Stands for a jitted kernel: `kernel[grid, block, stream](*args)` records the call
    (with the device context current at launch) and runs nothing."""

    def __init__(self, numba_fake):
        self.numba_fake = numba_fake
        self.launches = []

    def __getitem__(self, config):
        def launch(*args):
            self.launches.append({"context": self.numba_fake._context(), "config": config,
                                  "args": args})
        return launch


@contextlib.contextmanager
def recording_kernels(monkeypatch, kernel_module, numba_fake, names):
    """Replace kernel_module's lazily jitted kernels by RecordingKernels; yields them."""
    kernels = {name: RecordingKernel(numba_fake) for name in names}
    monkeypatch.setattr(kernel_module, "_kernels", kernels)
    yield kernels
