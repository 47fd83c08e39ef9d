"""Numba kernels for the three hot, irregular steps of SSD (installed as minissd.kernels).

    iou_matrix(a (A, 4), b (B, 4)) -> (A, B)                        kernels/iou.py
    hard_negative_mask(conf_loss (N, P), positive (N, P) bool,
                       neg_pos_ratio) -> (N, P) bool                kernels/hard_negative.py
    nms(boxes (M, 4), scores (M,), iou_threshold) -> (K,) int64     kernels/nms.py
    batched_nms(boxes, scores, labels (M,), iou_threshold) -> (K,) int64

Each function dispatches on its input's array type: a CuPy array runs the file's CUDA kernel
on CuPy's current stream, without copying to the host; anything else runs the CPU path (numba
njit). Results live where the inputs live. numba.cuda is imported only when a CUDA kernel is
first used, so importing this package is cheap and works without CUDA.

Semantics follow torchvision.ops (box_iou, nms, batched_nms), with 0 instead of NaN for the
IoU of two zero-area boxes. Each file's docstring lists its kernel versions.

The function `nms` shadows the submodule of the same name; reach the files themselves
(references, CPU and CUDA launchers, ptx_signatures) with
importlib.import_module("minissd.kernels.nms") and likewise for "iou", "hard_negative".
"""
from minissd.backend import is_cupy

from . import hard_negative as _hard_negative
from . import iou as _iou
from . import nms as _nms


def iou_matrix(a, b):
    """IoU of corner-form boxes a (A, 4) and b (B, 4) -> (A, B), in their common float dtype."""
    if is_cupy(a) or is_cupy(b):
        return _iou.iou_matrix_cuda(a, b)
    return _iou.iou_matrix_cpu(a, b)


def hard_negative_mask(conf_loss, positive, neg_pos_ratio=3):
    """Per image, the min(floor(ratio * num_pos), num_neg) non-positive boxes with the largest
    conf_loss (ties: lower index first). conf_loss (N, P), positive (N, P) bool -> (N, P) bool.
    Positives are never selected; an image without positives selects nothing."""
    if is_cupy(conf_loss):
        return _hard_negative.hard_negative_mask_cuda(conf_loss, positive, neg_pos_ratio)
    return _hard_negative.hard_negative_mask_cpu(conf_loss, positive, neg_pos_ratio)


def nms(boxes, scores, iou_threshold):
    """Greedy NMS: kept indices (K,) int64 in descending score order; suppresses IoU > thr."""
    if is_cupy(boxes):
        return _nms.nms_cuda(boxes, scores, iou_threshold)
    return _nms.nms_cpu(boxes, scores, iou_threshold)


def batched_nms(boxes, scores, labels, iou_threshold):
    """NMS within each label (boxes of different labels never suppress each other)."""
    if is_cupy(boxes):
        return _nms.batched_nms_cuda(boxes, scores, labels, iou_threshold)
    return _nms.batched_nms_cpu(boxes, scores, labels, iou_threshold)


__all__ = ["iou_matrix", "hard_negative_mask", "nms", "batched_nms"]
