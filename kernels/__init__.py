"""Numba kernels for the three hot, irregular steps of SSD (installed as minissd.kernels).

    iou_matrix(a (A, 4), b (B, 4)) -> (A, B)                    kernels/iou_kernel.py
    hard_negative_mask(conf_loss (N, P), positive (N, P) bool,
                       neg_pos_ratio) -> (N, P) bool            kernels/hard_negative_kernel.py
    nms(boxes (M, 4), scores (M,), iou_threshold) -> (K,) int64 kernels/nms_kernel.py
    batched_nms(boxes, scores, labels (M,), iou_threshold)
                -> (K,) int64                                   kernels/nms_kernel.py

Each function dispatches on its inputs' array types: if any input is a CuPy array, the file's
CUDA kernel runs on CuPy's current device and stream (the other inputs are copied there first),
without copying to the host; otherwise the CPU path runs (numba njit). Results live where the
(CuPy) inputs live. numba.cuda is imported only when a CUDA kernel is
first used, so importing this package is cheap and works without CUDA.

Semantics follow torchvision.ops (box_iou, nms, batched_nms), with 0 instead of NaN for the
IoU of two zero-area boxes. Each file's docstring lists its kernel versions.

Each kernel file is a submodule named after its kernel, so it never collides with the
function this package exports: the references, CPU and CUDA launchers and ptx_signatures are
`from minissd.kernels.nms_kernel import nms_reference` (likewise iou_kernel,
hard_negative_kernel).
"""
from minissd.backend import is_cupy

from . import hard_negative_kernel as _hard_negative
from . import iou_kernel as _iou
from . import nms_kernel as _nms


def iou_matrix(a, b):
    """IoU of corner-form boxes a (A, 4) and b (B, 4) -> (A, B), in their common float dtype."""
    if is_cupy(a) or is_cupy(b):
        return _iou.iou_matrix_cuda(a, b)
    return _iou.iou_matrix_cpu(a, b)


def hard_negative_mask(conf_loss, positive, neg_pos_ratio=3):
    """Per image, the min(floor(ratio * num_pos), num_neg) non-positive boxes with the largest
    conf_loss (ties: lower index first). conf_loss (N, P), positive (N, P) bool -> (N, P) bool.
    Positives are never selected; an image without positives selects nothing."""
    if is_cupy(conf_loss) or is_cupy(positive):
        return _hard_negative.hard_negative_mask_cuda(conf_loss, positive, neg_pos_ratio)
    return _hard_negative.hard_negative_mask_cpu(conf_loss, positive, neg_pos_ratio)


def nms(boxes, scores, iou_threshold):
    """Greedy NMS: kept indices (K,) int64 in descending score order; suppresses IoU > thr."""
    if is_cupy(boxes) or is_cupy(scores):
        return _nms.nms_cuda(boxes, scores, iou_threshold)
    return _nms.nms_cpu(boxes, scores, iou_threshold)


def batched_nms(boxes, scores, labels, iou_threshold):
    """NMS within each label (boxes of different labels never suppress each other)."""
    if is_cupy(boxes) or is_cupy(scores) or is_cupy(labels):
        return _nms.batched_nms_cuda(boxes, scores, labels, iou_threshold)
    return _nms.batched_nms_cpu(boxes, scores, labels, iou_threshold)


__all__ = ["iou_matrix", "hard_negative_mask", "nms", "batched_nms"]
