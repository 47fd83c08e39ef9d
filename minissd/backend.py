"""Array-module choice: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every array function in minissd takes its module from its inputs:

    xp = get_array_module(x)      # numpy or cupy, whichever x belongs to
    y = xp.maximum(x, 0)

so one code path serves both devices (Chainer's pattern). This file is the ONLY place that
imports cupy; the few spots where CuPy and NumPy differ are wrapped here.

The *current device* (set_device) only decides where new arrays are created: the model's
parameters, the batches the loader hands over. Functions never move data on their own.
"""
from __future__ import annotations

import os
import sys

import numpy as np

_cupy = None            # the cupy module once imported, else None
_cupy_error = None      # why cupy is not usable (str), once we have tried
_device = "cpu"         # "cpu" or "cuda": where new arrays go


def _try_import_cupy():
    """Import CuPy and ask the driver for a GPU. Returns (module or None, reason or None)."""
    global _cupy, _cupy_error
    if _cupy is not None or _cupy_error is not None:
        return _cupy, _cupy_error
    if os.environ.get("MINISSD_DISABLE_CUDA"):
        _cupy_error = "MINISSD_DISABLE_CUDA is set"
        return None, _cupy_error
    try:
        import cupy  # noqa: F401  (the only cupy import in minissd)
    except Exception as e:  # ImportError, or a broken CUDA library underneath
        _cupy_error = (f"CuPy is not importable ({type(e).__name__}: {e}). "
                       "Install it with: pip install -e '.[cuda12]' or '.[cuda13]'")
        return None, _cupy_error
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device, driver too old
        _cupy_error = (f"CuPy is installed but no GPU answers ({type(e).__name__}: {e}). "
                       "Check the NVIDIA driver with nvidia-smi")
        return None, _cupy_error
    if n < 1:
        _cupy_error = "CuPy is installed but the driver reports 0 GPUs"
        return None, _cupy_error
    _cupy = cupy
    return _cupy, None


def cuda_available() -> bool:
    """True when CuPy imports and at least one GPU answers."""
    return _try_import_cupy()[0] is not None


class DeviceError(RuntimeError):
    """--device cuda without a usable GPU; the commands print it as their one error line."""


def set_device(device: str = "auto") -> str:
    """Choose where new arrays live: "cpu", "cuda" or "auto". Returns the device chosen.

    "auto" picks CUDA only when CuPy imports AND a GPU answers; otherwise it falls back to
    the CPU with a one-line notice (only when CuPy is installed, since then the user likely
    expected the GPU). An explicit "cuda" without a usable GPU raises RuntimeError saying
    what is missing (DeviceError, a RuntimeError).
    """
    global _device
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cpu":
        _device = "cpu"
        return _device
    cp, why = _try_import_cupy()
    if cp is None:
        if device == "cuda":
            raise DeviceError(f"--device cuda: asked for, but {why}; check the NVIDIA driver "
                              "with nvidia-smi, or pass --device cpu")
        if "not importable" not in why:
            print(f"minissd: no usable GPU, running on the CPU ({why})", file=sys.stderr)
        _device = "cpu"
        return _device
    _device = "cuda"
    return _device


def get_device() -> str:
    """The current device: "cpu" or "cuda"."""
    return _device


def current_device_xp():
    """The array module of the current device (set_device): numpy on "cpu", cupy on "cuda".
    Use it to create new arrays on that device; to compute on given arrays, take their own
    module with get_array_module(x) instead."""
    return _cupy if _device == "cuda" else np


xp = current_device_xp     # the name in DESIGN.md's public API, kept as an alias


def get_array_module(*arrays):
    """numpy or cupy, whichever the given arrays belong to (numpy for plain Python values)."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def is_cupy(x) -> bool:
    """True when x is a CuPy array."""
    return _cupy is not None and isinstance(x, _cupy.ndarray)


def stable_argsort(a, axis=-1):
    """Indices that sort `a` ascending along `axis`, equal values in index order, the same
    rule on NumPy and CuPy. NumPy's default argsort is quicksort, which orders ties
    arbitrarily; CuPy's argsort is always stable (and older CuPy rejects `kind`)."""
    if is_cupy(a):
        return _cupy.argsort(a, axis=axis)
    return np.argsort(a, axis=axis, kind="stable")


def to_numpy(x):
    """A NumPy copy of x (a CuPy array is copied to the host; NumPy arrays pass through)."""
    if is_cupy(x):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def device_of(x) -> str:
    """"cuda" for a CuPy array, "cpu" for anything else."""
    return "cuda" if is_cupy(x) else "cpu"


def to_device(x, device: str | None = None):
    """x as an array on `device` (default: the current device)."""
    device = device or _device
    if device == "cuda":
        cp, why = _try_import_cupy()
        if cp is None:
            raise RuntimeError(f"cannot move an array to cuda: {why}.")
        return cp.asarray(x)
    return to_numpy(x)


def synchronize(x=None):
    """Wait for the GPU to finish queued work (a no-op on the CPU). For timing only."""
    if _cupy is not None and (x is None or is_cupy(x)):
        _cupy.cuda.get_current_stream().synchronize()


# --- several GPUs: one per process, NCCL between them (minissd/distributed.py) -------------
# Written against CuPy's API (cupy.cuda.nccl); not run on a machine with several GPUs yet.

def use_gpu(index: int):
    """Make GPU `index % number of GPUs` this process's current CUDA device (one process per
    GPU, the index being the process's rank on its node) and select the "cuda" device."""
    cp, why = _try_import_cupy()
    if cp is None:
        raise RuntimeError(f"several processes on GPUs were asked for, but {why}.")
    cp.cuda.Device(index % cp.cuda.runtime.getDeviceCount()).use()
    set_device("cuda")


def nccl_unique_id():
    """A new NCCL unique id (made by one rank, sent to the others over MPI)."""
    from cupy.cuda import nccl
    return nccl.get_unique_id()


def nccl_communicator(size: int, unique_id, rank: int):
    """This rank's NCCL communicator of `size` ranks, on the current CUDA device."""
    from cupy.cuda import nccl
    return nccl.NcclCommunicator(size, unique_id, rank)


def nccl_allreduce_sum(comm, a):
    """The sum of CuPy array `a` over the NCCL communicator's ranks, as a new array, queued on
    CuPy's current stream (no host copy, no synchronisation)."""
    from cupy.cuda import nccl
    types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
             "float16": nccl.NCCL_FLOAT16, "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}
    if a.dtype.name not in types:
        raise TypeError(f"minissd.backend: NCCL all-reduce of dtype {a.dtype} is not supported; "
                        f"use one of {sorted(types)}")
    send = _cupy.ascontiguousarray(a)
    out = _cupy.empty_like(send)
    comm.allReduce(send.data.ptr, out.data.ptr, send.size, types[a.dtype.name], nccl.NCCL_SUM,
                   _cupy.cuda.get_current_stream().ptr)
    return out


# --- host-to-device copies that overlap the GPU's work (the training loader) ---------------

def pinned_empty(shape, dtype):
    """A NumPy array in page-locked (pinned) host memory when CuPy is in use, else a plain
    np.empty. The GPU's copy engine reads pinned memory directly, so a copy from it can run
    asynchronously, beside kernels; a copy from ordinary (pageable) memory is first staged by
    the driver, on the host's time."""
    if _cupy is None or _device != "cuda":
        return np.empty(shape, dtype)
    import cupyx                      # part of CuPy (the only CuPy import besides cupy's)
    return cupyx.empty_pinned(shape, dtype)


class HostToDevice:
    """Copies arrays (image batches) to the GPU from pinned memory on a side stream, so that
    the copy of the next batch runs while the current step computes. On the CPU both calls
    hand the NumPy array straight back (no copy at all).

        ticket = copier.start(host)      # copy queued on the side stream; returns at once
        x = copier.finish(ticket)        # the device array; the current stream waits for the
                                         # copy on the GPU (no host wait)

    Ordering, all of it on the GPU except one host wait:
      * the copy goes into a new array of the current stream's memory pool; that block may
        have been freed by Python while queued kernels still use it, so the side stream first
        waits for everything queued on the current stream so far (an event);
      * two pinned buffers are used in turn; before the host refills one, it waits for that
        buffer's previous copy (a host sync, needed: the copy must have read the buffer; it was
        queued a step earlier, so it has normally long finished).
    minissd/data/loader.py's to_device_prefetched calls start(batch s + 1) before handing
    batch s to the step, so the copy waits only for step s - 1 and overlaps step s.
    """

    def __init__(self, slots=2):
        self.on_gpu = _cupy is not None and _device == "cuda"
        self.slots = [None] * slots        # pinned host buffers
        self.done = [None] * slots         # the event of each buffer's last copy
        self.count = 0
        self.stream = _cupy.cuda.Stream(non_blocking=True) if self.on_gpu else None

    def start(self, host):
        """Queue the copy of NumPy array `host` to the device; returns a ticket for finish."""
        if not self.on_gpu:
            return host
        k = self.count % len(self.slots)
        self.count += 1
        if self.done[k] is not None:
            self.done[k].synchronize()     # host sync (needed): buffer k's last copy has read it
        buf = self.slots[k]
        if buf is None or buf.shape != host.shape or buf.dtype != host.dtype:
            buf = self.slots[k] = pinned_empty(host.shape, host.dtype)
        buf[...] = host                                      # host memcpy into pinned memory
        current = _cupy.cuda.get_current_stream()
        dst = _cupy.empty(host.shape, host.dtype)            # from the current stream's pool
        queued = _cupy.cuda.Event()
        queued.record(current)                               # everything queued so far
        self.stream.wait_event(queued)
        dst.set(buf, stream=self.stream)                     # asynchronous: pinned source
        done = self.done[k] = _cupy.cuda.Event()
        done.record(self.stream)
        return dst, done

    def finish(self, ticket):
        """The device array of a started copy; work queued after this waits for the copy."""
        if not self.on_gpu:
            return ticket
        dst, done = ticket
        _cupy.cuda.get_current_stream().wait_event(done)     # a GPU-side wait, not the host's
        return dst
