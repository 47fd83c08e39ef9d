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
