"""IoU matrix of two corner-form box sets: a (A, 4), b (B, 4) -> (A, B).

    IoU(i, j) = inter / (area_a[i] + area_b[j] - inter),  and 0 where that union is 0,
    inter = max(min(x2) - max(x1), 0) * max(min(y2) - max(y1), 0)

Semantics are torchvision.ops.box_iou's, except that a zero union (two zero-area boxes) gives
0, never NaN, and inverted boxes count as area 0 (as minissd.boxes.area does). Every version
below is checked against the NumPy reference minissd.boxes.iou (tests/test_kernels*.py).

Versions (llm.c dev/cuda style):
  cpu  iou_matrix_cpu   numba njit, two nested loops with the areas precomputed; no
                        (A, B, 2) temporaries as the NumPy broadcast makes.
  v1   iou_kernel_v1    one CUDA thread per (i, j) pair on a 2-D grid; each thread reads its
                        two boxes from global memory. Any float dtype.
  v2   iou_kernel_v2    a 32 x 8 thread block first stages its 32 b-boxes and 8 a-boxes (and
                        their areas) in shared memory, so each box is read from global memory
                        once per block instead of once per thread; writes stay coalesced
                        along b. float32 only (shared arrays have a fixed dtype).
The launcher iou_matrix_cuda uses v2 for float32 and v1 otherwise.

Dimension letters: A, B the two box sets. The arithmetic is done in the boxes' dtype in the
same order as the reference, so the results agree with it bit for bit, float32 and float64. On
the GPU that needs one more step: every product is `mul_rn(x, y)` (kernels/_launch.py), which
NVVM cannot contract with the following add into an FMA (a fused `area_a + area_b` would be
rounded once instead of twice and could differ by an ulp). tests/test_kernels_ptx.py checks
that the PTX of these kernels holds no `fma` and only `mul.rn` float products.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import _launch

cuda = None          # numba.cuda, bound by _launch.bind_cuda() on first use (keeps imports cheap)
mul_rn = None        # x * y never fused into an FMA (_launch.exact_mul), bound with `cuda`
V2_TILE_B = 32       # v2 block: 32 threads along b ...
V2_TILE_A = 8        # ... by 8 threads along a


def _check(a, b):
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2 or x.shape[1] != 4:
            raise ValueError(f"kernels/iou_kernel.py iou_matrix: `{name}` must be (n, 4) "
                             f"corner-form boxes, got shape {tuple(x.shape)}; reshape it to "
                             "(-1, 4)")


# ----------------------------------------------------------------------------------------------
# CPU path

@numba.njit(cache=True)
def _iou_cpu(a, b, out, zero):
    """Fill out (A, B) with IoU(a[i], b[j]). `zero` is 0 in the box dtype: it keeps numba's
    arithmetic in that dtype (a bare 0 literal would promote float32 to float64)."""
    A, B = a.shape[0], b.shape[0]
    area_b = np.empty(B, dtype=out.dtype)
    for j in range(B):
        area_b[j] = max(b[j, 2] - b[j, 0], zero) * max(b[j, 3] - b[j, 1], zero)
    for i in range(A):
        area_a = max(a[i, 2] - a[i, 0], zero) * max(a[i, 3] - a[i, 1], zero)
        for j in range(B):
            w = max(min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]), zero)
            h = max(min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]), zero)
            inter = w * h
            union = area_a + area_b[j] - inter
            out[i, j] = inter / union if union > zero else zero


def iou_matrix_cpu(a, b):
    """IoU matrix on the CPU. a: (A, 4), b: (B, 4) corner form -> (A, B) in their common dtype."""
    dtype = np.result_type(a, b)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float32
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    _check(a, b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=dtype)
    if out.size:
        _iou_cpu(a, b, out, dtype.type(0))
    return out


# ----------------------------------------------------------------------------------------------
# CUDA kernels (plain functions; jitted by _kernels (LazyKernels), compiled to PTX by the tests)

def iou_kernel_v1(a, b, out, zero):
    """v1: thread (i, j) computes out[i, j] = IoU(a[i], b[j]). Grid covers (B, A), x along b."""
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    i = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    if i >= a.shape[0] or j >= b.shape[0]:
        return
    area_a = mul_rn(max(a[i, 2] - a[i, 0], zero), max(a[i, 3] - a[i, 1], zero))
    area_b = mul_rn(max(b[j, 2] - b[j, 0], zero), max(b[j, 3] - b[j, 1], zero))
    w = max(min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]), zero)
    h = max(min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]), zero)
    inter = mul_rn(w, h)
    union = area_a + area_b - inter
    out[i, j] = inter / union if union > zero else zero


def iou_kernel_v2(a, b, out, zero):
    """v2: a (V2_TILE_B x V2_TILE_A) block stages its boxes and areas in shared memory."""
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j0 = cuda.blockIdx.x * V2_TILE_B
    i0 = cuda.blockIdx.y * V2_TILE_A
    sb = cuda.shared.array((V2_TILE_B, 5), numba.float32)   # x1 y1 x2 y2 area
    sa = cuda.shared.array((V2_TILE_A, 5), numba.float32)
    # the block's 32 + 8 boxes are loaded by its first 40 threads (flat thread id t)
    t = ty * V2_TILE_B + tx
    if t < V2_TILE_B and j0 + t < b.shape[0]:
        for c in range(4):
            sb[t, c] = b[j0 + t, c]
        sb[t, 4] = mul_rn(max(sb[t, 2] - sb[t, 0], zero), max(sb[t, 3] - sb[t, 1], zero))
    elif V2_TILE_B <= t < V2_TILE_B + V2_TILE_A and i0 + t - V2_TILE_B < a.shape[0]:
        r = t - V2_TILE_B
        for c in range(4):
            sa[r, c] = a[i0 + r, c]
        sa[r, 4] = mul_rn(max(sa[r, 2] - sa[r, 0], zero), max(sa[r, 3] - sa[r, 1], zero))
    cuda.syncthreads()
    i, j = i0 + ty, j0 + tx
    if i >= a.shape[0] or j >= b.shape[0]:
        return
    w = max(min(sa[ty, 2], sb[tx, 2]) - max(sa[ty, 0], sb[tx, 0]), zero)
    h = max(min(sa[ty, 3], sb[tx, 3]) - max(sa[ty, 1], sb[tx, 1]), zero)
    inter = mul_rn(w, h)
    union = sa[ty, 4] + sb[tx, 4] - inter
    out[i, j] = inter / union if union > zero else zero


_kernels = _launch.LazyKernels(globals(), v1=iou_kernel_v1, v2=iou_kernel_v2)


def ptx_signatures():
    """[(name, python function, numba signature)] of every kernel version, for compile_ptx."""
    _launch.bind_cuda(globals())
    f4, f8 = numba.float32, numba.float64
    return [
        ("iou_kernel_v1 f32", iou_kernel_v1, (f4[:, ::1], f4[:, ::1], f4[:, ::1], f4)),
        ("iou_kernel_v1 f64", iou_kernel_v1, (f8[:, ::1], f8[:, ::1], f8[:, ::1], f8)),
        ("iou_kernel_v2 f32", iou_kernel_v2, (f4[:, ::1], f4[:, ::1], f4[:, ::1], f4)),
    ]


def iou_matrix_cuda(a, b, version=None):
    """IoU matrix with a CUDA kernel. a: (A, 4), b: (B, 4) -> (A, B), allocated like a.

    CuPy inputs stay on the device and the kernel runs on CuPy's current device and stream;
    when only one of a, b is a CuPy array, the other is copied to its device first. NumPy
    inputs work too (Numba's simulator). version: "v1" | "v2" | None (auto).
    """
    a, b = _launch.on_one_device(a, b)
    xp = _launch.get_array_module(a, b)
    dtype = xp.result_type(a, b)
    a = xp.ascontiguousarray(a, dtype=dtype)
    b = xp.ascontiguousarray(b, dtype=dtype)
    _check(a, b)
    out = xp.empty((a.shape[0], b.shape[0]), dtype=dtype)
    if out.size == 0:
        return out
    if version is None:
        version = "v2" if dtype == np.float32 else "v1"
    if version == "v2" and dtype != np.float32:
        raise ValueError("kernels/iou_kernel.py: iou_kernel_v2 is float32 only; pass version='v1'")
    kernel = _kernels[version]
    if version == "v1":
        block = (32, 8)
    else:
        block = (V2_TILE_B, V2_TILE_A)
    grid = (math.ceil(b.shape[0] / block[0]), math.ceil(a.shape[0] / block[1]))
    dev = _launch.device_array
    with _launch.launch_on(a) as stream:
        kernel[grid, block, stream](dev(a), dev(b), dev(out), dtype.type(0))
    return out
