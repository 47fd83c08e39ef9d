"""What the three kernel launchers share: importing numba.cuda late, and handing arrays over.

numba.cuda is imported only when a kernel is first launched or compiled, so that
`import minissd.kernels` stays cheap and works on machines without CUDA.

A launcher receives either CuPy arrays (the real path: zero-copy, on CuPy's current stream)
or NumPy arrays (Numba's simulator, NUMBA_ENABLE_CUDASIM=1, and quick experiments: Numba
copies them to the device and back around each launch).
"""
from __future__ import annotations

from minissd.backend import get_array_module, is_cupy


def numba_cuda():
    """The numba.cuda module, imported on first use."""
    from numba import cuda
    return cuda


def device_array(x):
    """x as something a Numba kernel accepts, without copying a CuPy array.

    CuPy arrays are wrapped through __cuda_array_interface__ (sync=False: the kernel runs on
    the same stream that produced them). NumPy arrays pass through unchanged.
    """
    if is_cupy(x):
        return numba_cuda().as_cuda_array(x, sync=False)
    return x


def stream_of(x):
    """The Numba stream a kernel on x must use: CuPy's current stream, else the default (0)."""
    if is_cupy(x):
        cupy = get_array_module(x)
        return numba_cuda().external_stream(cupy.cuda.get_current_stream().ptr)
    return 0


def bind_cuda(namespace):
    """Bind the name `cuda` in a kernel file's globals to numba.cuda, once, and return it.

    The kernel bodies are plain functions that say cuda.threadIdx, cuda.syncthreads(), ...;
    the name is looked up in their module's globals when Numba compiles them, so it must be
    bound before the first jit or compile_ptx.
    """
    if namespace.get("cuda") is None:
        namespace["cuda"] = numba_cuda()
    return namespace["cuda"]


class LazyKernels:
    """A kernel file's jitted kernels by name, each compiled by cuda.jit on first use.

        _kernels = LazyKernels(globals(), v1=iou_kernel_v1, v2=iou_kernel_v2)
        _kernels["v2"][blocks, threads, stream](...)
    """

    def __init__(self, namespace, **pyfuncs):
        self._namespace = namespace
        self._pyfuncs = pyfuncs
        self._jitted = {}

    def __getitem__(self, name):
        if name not in self._jitted:
            cuda = bind_cuda(self._namespace)
            self._jitted[name] = cuda.jit(self._pyfuncs[name])
        return self._jitted[name]
