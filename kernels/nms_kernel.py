"""Non-maximum suppression: greedy, torchvision.ops.nms / batched_nms semantics.

    nms(boxes (M, 4) corner, scores (M,), iou_threshold) -> kept indices (K,) int64
    batched_nms(boxes, scores, labels (M,), iou_threshold) -> kept indices (K,) int64

Boxes are visited by descending score (a stable sort: equal scores, lower index first). A box
is kept unless a kept box with a higher rank (and, for batched_nms, the same label) overlaps it
with IoU > iou_threshold (strictly; IoU computed in the box dtype as in kernels/iou_kernel.py,
compared in float64 as torchvision does; the CUDA kernel multiplies with mul_rn so that no
FMA changes an IoU next to the threshold). Kept indices come back in descending score order.
Boxes of different labels never suppress each other: the label is checked directly, not
through torchvision's coordinate-offset trick, so results do not depend on coordinate
magnitudes.

nms_reference is the plain-Python loop every version is checked against.

Versions (llm.c dev/cuda style):
  cpu  nms_cpu / batched_nms_cpu   numba njit greedy loop. Boxes are sorted by (label, -score),
                                   so a kept box only scans the rest of its own label's run.
  v1   nms_mask_kernel +           CUDA bitmask NMS. Boxes sorted by score are cut in blocks of
       nms_reduce_kernel           64; block (row r, column c >= r) of 64 threads writes, for
                                   each row box i, one uint64 word whose bit b says "IoU(i,
                                   64c + b) > threshold, same label, later in order". Then a
                                   single-block reduce walks the boxes in order, keeping box i
                                   unless its bit is set in the running `removed` words, and ORs
                                   row i into `removed`. The keep list is written on the GPU;
                                   only its length (one scalar) is read back. Memory: M * M/64
                                   words (8732 boxes: 9.5 MB).

Dimension letters: M boxes, K kept, W = ceil(M / 64) mask words per box.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from minissd.backend import stable_argsort

from . import _launch

cuda = None            # numba.cuda, bound by _launch.bind_cuda() on first use
mul_rn = None          # x * y never fused into an FMA (_launch.exact_mul), bound with `cuda`
NMS_BLOCK = 64         # boxes per mask block = bits per uint64 word


def _check(boxes, scores, labels=None):
    M = scores.shape[0] if scores.ndim == 1 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 1 or boxes.shape[0] != M:
        raise ValueError("kernels/nms_kernel.py: boxes must be (M, 4) corner form and scores "
                         f"(M,); got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if labels is not None and tuple(labels.shape) != (M,):
        raise ValueError(f"kernels/nms_kernel.py batched_nms: labels must be (M,) = ({M},), got "
                         f"{tuple(labels.shape)}")


def nms_reference(boxes, scores, iou_threshold, labels=None):
    """Greedy NMS as a plain Python loop over minissd.boxes.iou (the reference)."""
    from minissd.boxes import iou
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    _check(boxes, scores, None if labels is None else np.asarray(labels))
    M = len(scores)
    labels = np.zeros(M, np.int64) if labels is None else np.asarray(labels)
    overlap = iou(boxes, boxes).astype(np.float64)          # (M, M)
    order = sorted(range(M), key=lambda i: (-scores[i], i))
    suppressed = [False] * M
    keep = []
    for rank, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[rank + 1:]:
            if labels[j] == labels[i] and overlap[i, j] > iou_threshold:
                suppressed[j] = True
    return np.array(keep, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# CPU path

@numba.njit(cache=True)
def _greedy_cpu(boxes, labels, iou_threshold, zero):
    """Greedy NMS over boxes (M, 4) already in visiting order (by label, then descending
    score), labels (M,). Returns keep (M,) bool. `zero` is 0 in the box dtype, which keeps
    numba's arithmetic in that dtype (a bare 0 would promote float32 to float64)."""
    M = boxes.shape[0]
    area = np.empty(M, dtype=boxes.dtype)
    for i in range(M):
        area[i] = max(boxes[i, 2] - boxes[i, 0], zero) * max(boxes[i, 3] - boxes[i, 1], zero)
    keep = np.ones(M, dtype=np.bool_)
    for i in range(M):
        if not keep[i]:
            continue
        for j in range(i + 1, M):
            if labels[j] != labels[i]:
                break                       # sorted by label: the rest belong to other labels
            if not keep[j]:
                continue
            w = max(min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]), zero)
            h = max(min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]), zero)
            inter = w * h
            union = area[i] + area[j] - inter
            iou = inter / union if union > zero else zero
            if iou > iou_threshold:
                keep[j] = False
    return keep


def _greedy_in_order(boxes, labels, order, iou_threshold):
    """Run _greedy_cpu on the boxes gathered in `order` (sequential memory access)."""
    sorted_boxes = np.ascontiguousarray(boxes[order])               # (M, 4)
    keep = _greedy_cpu(sorted_boxes, labels[order], float(iou_threshold),
                       boxes.dtype.type(0))
    return order[keep]


def _prepare_cpu(boxes, scores, labels):
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    labels = np.zeros(len(scores), np.int64) if labels is None else np.asarray(labels)
    _check(boxes, scores, labels)
    dtype = boxes.dtype if np.issubdtype(boxes.dtype, np.floating) else np.dtype(np.float32)
    return np.ascontiguousarray(boxes, dtype=dtype), scores, labels.astype(np.int64)


def nms_cpu(boxes, scores, iou_threshold):
    """NMS on the CPU: (M, 4), (M,) -> kept indices (K,) int64 in descending score order."""
    boxes, scores, labels = _prepare_cpu(boxes, scores, None)
    order = np.argsort(-scores, kind="stable")
    return _greedy_in_order(boxes, labels, order, iou_threshold).astype(np.int64)


def batched_nms_cpu(boxes, scores, labels, iou_threshold):
    """Per-label NMS on the CPU -> kept indices (K,) int64 in descending score order."""
    boxes, scores, labels = _prepare_cpu(boxes, scores, labels)
    order = np.lexsort((-scores, labels))                     # by label, then score descending
    kept = np.sort(_greedy_in_order(boxes, labels, order, iou_threshold))  # ties: lower index
    return kept[np.argsort(-scores[kept], kind="stable")].astype(np.int64)


# ----------------------------------------------------------------------------------------------
# CUDA kernels (plain functions; jitted by _kernels (LazyKernels), compiled to PTX by the tests)

def nms_mask_kernel(boxes, labels, iou_threshold, zero, mask):
    """v1 step 1. boxes (M, 4) sorted by descending score, labels (M,), mask (M, W) uint64.
    Grid (W, W), 64 threads: block (c, r) compares row boxes 64r.. with column boxes 64c.."""
    col_block = cuda.blockIdx.x
    row_block = cuda.blockIdx.y
    if col_block < row_block:
        return                      # a box only suppresses boxes later in score order
    M = boxes.shape[0]
    t = cuda.threadIdx.x
    i = row_block * NMS_BLOCK + t
    if i >= M:
        return
    col_size = min(M - col_block * NMS_BLOCK, NMS_BLOCK)
    area_i = mul_rn(max(boxes[i, 2] - boxes[i, 0], zero), max(boxes[i, 3] - boxes[i, 1], zero))
    bits = numba.uint64(0)
    start = t + 1 if row_block == col_block else 0
    for c in range(start, col_size):
        j = col_block * NMS_BLOCK + c
        if labels[j] != labels[i]:
            continue
        area_j = mul_rn(max(boxes[j, 2] - boxes[j, 0], zero),
                        max(boxes[j, 3] - boxes[j, 1], zero))
        w = max(min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]), zero)
        h = max(min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]), zero)
        inter = mul_rn(w, h)
        union = area_i + area_j - inter
        iou = inter / union if union > zero else zero
        if iou > iou_threshold:
            bits |= numba.uint64(1) << numba.uint64(c)
    mask[i, col_block] = bits


def nms_reduce_kernel(mask, removed, keep, count):
    """v1 step 2, ONE block. Walk boxes in score order; keep i unless removed, then OR its mask
    row into `removed` (W,) uint64 (the block's threads share the W words). Writes the kept
    positions to keep[:count[0]]."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    M, W = mask.shape[0], mask.shape[1]
    for w in range(t, W, T):
        removed[w] = numba.uint64(0)
    cuda.syncthreads()
    kept = 0
    for i in range(M):
        word = i // NMS_BLOCK
        bit = numba.uint64(1) << numba.uint64(i % NMS_BLOCK)
        is_kept = (removed[word] & bit) == 0         # every thread reads the same word
        cuda.syncthreads()                           # ... before anyone updates it
        if is_kept:
            if t == 0:
                keep[kept] = i
            kept += 1
            for w in range(word + t, W, T):
                removed[w] |= mask[i, w]
        cuda.syncthreads()
    if t == 0:
        count[0] = kept


_kernels = _launch.LazyKernels(globals(), mask=nms_mask_kernel, reduce=nms_reduce_kernel)


def ptx_signatures():
    """[(name, python function, numba signature)] of every kernel, for compile_ptx."""
    _launch.bind_cuda(globals())
    f4, i8, u8 = numba.float32, numba.int64, numba.uint64
    return [
        ("nms_mask_kernel f32", nms_mask_kernel,
         (f4[:, ::1], i8[::1], numba.float64, f4, u8[:, ::1])),
        ("nms_mask_kernel f64", nms_mask_kernel,
         (numba.float64[:, ::1], i8[::1], numba.float64, numba.float64, u8[:, ::1])),
        ("nms_reduce_kernel", nms_reduce_kernel, (u8[:, ::1], u8[::1], i8[::1], i8[::1])),
    ]


def _greedy_cuda(boxes, order, labels, iou_threshold):
    """Positions (K,) int64 in `order` kept by the bitmask kernels (on boxes' device)."""
    xp = _launch.get_array_module(boxes)
    M = order.shape[0]
    W = math.ceil(M / NMS_BLOCK)
    sorted_boxes = xp.ascontiguousarray(boxes[order])                  # (M, 4)
    sorted_labels = xp.ascontiguousarray(labels[order], dtype=np.int64)  # (M,)
    mask = xp.zeros((M, W), dtype=np.uint64)
    removed = xp.empty(W, dtype=np.uint64)
    keep = xp.empty(M, dtype=np.int64)
    count = xp.zeros(1, dtype=np.int64)
    kernels, dev = _kernels, _launch.device_array
    threads = min(256, 32 * math.ceil(W / 32))
    with _launch.launch_on(boxes) as stream:
        kernels["mask"][(W, W), NMS_BLOCK, stream](
            dev(sorted_boxes), dev(sorted_labels), float(iou_threshold),
            sorted_boxes.dtype.type(0), dev(mask))
        kernels["reduce"][1, threads, stream](dev(mask), dev(removed), dev(keep), dev(count))
    return keep[:int(count[0])]                  # the one scalar that comes back to the host


def _prepare_cuda(boxes, scores, labels):
    """boxes, scores and labels on one device: that of the first CuPy array among them (the
    others are copied there), else NumPy (the simulator). -> (xp, boxes, scores, labels)"""
    boxes, scores, labels = _launch.on_one_device(boxes, scores, labels)
    xp = _launch.get_array_module(boxes)
    _check(boxes, scores, labels)
    dtype = boxes.dtype if boxes.dtype in (np.float32, np.float64) else np.float32
    labels = xp.zeros(scores.shape[0], np.int64) if labels is None else labels
    return xp, xp.ascontiguousarray(boxes, dtype=dtype), scores, labels


def nms_cuda(boxes, scores, iou_threshold):
    """NMS with the CUDA bitmask kernels -> kept indices (K,) int64 on boxes' device
    (batched_nms_cuda with one label for all boxes)."""
    return batched_nms_cuda(boxes, scores, None, iou_threshold)


def batched_nms_cuda(boxes, scores, labels, iou_threshold):
    """Per-label NMS with the CUDA bitmask kernels (a label test inside the mask kernel) ->
    kept indices (K,) int64 in descending score order, on boxes' device. labels None: one
    label for all boxes (plain NMS)."""
    xp, boxes, scores, labels = _prepare_cuda(boxes, scores, labels)
    if scores.shape[0] == 0:
        return xp.empty(0, dtype=np.int64)
    order = stable_argsort(-scores)              # descending score, ties in index order
    return order[_greedy_cuda(boxes, order, labels, iou_threshold)].astype(np.int64)
