"""Detection output: from the network's (loc, conf) to boxes, scores and labels per image.

    detect(loc (N, P, 4), conf (N, P, C), priors (P, 4)) -> N x (boxes (K, 4), scores (K,),
                                                                labels (K,))

Steps (SSD paper, section 3, "inference"; the same as ssd.pytorch's Detect):
  1. softmax over the C classes of each default box      scores (N, P, C)
  2. decode the offsets against the default boxes         boxes  (N, P, 4) corner form
     (torchvision then clips them to the image: clip_boxes=True)
  3. candidates: every (box, class > 0) pair whose score > conf_threshold, at most
     per_class_top_k of them per class (Caffe SSD's nms_param top_k = 400; ssd.pytorch uses
     200): this bounds NMS's work (its GPU bitmask is M^2 / 8 bytes) on an untrained network,
     where almost every pair passes the threshold
  4. NMS within each class (minissd.kernels.batched_nms: boxes of different classes never
     suppress each other), IoU > nms_threshold suppresses
  5. keep the top_k highest scores of the image
Step 3 is vectorised over classes: a box that passes for several classes becomes several
candidates, each with its own label, and one batched NMS handles them all. The loop over images
stays, because each image has a different number of candidates.

Dimension letters: N images, P default boxes, C classes (0 = background), M candidates of an
image, K detections kept. Runs on NumPy or CuPy; outputs stay on the inputs' device.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, stable_argsort
from .boxes import decode
from .kernels import batched_nms
from .ops.softmax import softmax


def detect(loc, conf, priors, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
           variances=(0.1, 0.2), per_class_top_k=400, clip_boxes=False, wh_clamp=None):
    """Per-image detections from SSD outputs.

    loc:    (N, P, 4) predicted offsets
    conf:   (N, P, C) class logits (column 0 = background)
    priors: (P, 4) default boxes, center form
    clip_boxes: clip the decoded boxes to the image, [0, 1], before NMS (torchvision does;
            ssd.pytorch does not, so its NMS sees boxes that reach past the edge)
    wh_clamp: cap on the decoded log size change (boxes.decode; torchvision: log(1000 / 16))
    returns a list of N tuples (boxes (K, 4) corner form, scores (K,), labels (K,) int64 in
            1..C-1), K <= top_k, sorted by descending score (ties: lower box index, then
            lower class first)
    """
    xp = get_array_module(loc, conf, priors)
    if loc.ndim != 3 or loc.shape[-1] != 4 or conf.ndim != 3 or conf.shape[:2] != loc.shape[:2]:
        raise ValueError("minissd/postprocess.py detect: loc must be (N, P, 4) and conf "
                         f"(N, P, C); got {tuple(loc.shape)} and {tuple(conf.shape)}")
    if priors.shape != (loc.shape[1], 4):
        raise ValueError(f"minissd/postprocess.py detect: priors must be (P, 4) = "
                         f"({loc.shape[1]}, 4) center form, got {tuple(priors.shape)}")
    scores = softmax(conf, axis=-1)[:, :, 1:]          # (N, P, C-1), background dropped
    boxes = decode(loc, priors, variances, wh_clamp)   # (N, P, 4)
    if clip_boxes:
        boxes = xp.clip(boxes, 0.0, 1.0)
    detections = []
    for n in range(loc.shape[0]):
        box_idx, cls_idx = xp.nonzero(scores[n] > conf_threshold)   # (M,), (M,) box-major
        cand_scores = scores[n][box_idx, cls_idx]                    # (M,)
        cand_boxes = boxes[n][box_idx]                               # (M, 4)
        cand_labels = (cls_idx + 1).astype(np.int64)                 # (M,) in 1..C-1
        if per_class_top_k is not None and cand_scores.shape[0] > per_class_top_k:
            keep = _top_per_class(cand_scores, cand_labels, per_class_top_k)
            cand_boxes, cand_scores, cand_labels = (cand_boxes[keep], cand_scores[keep],
                                                    cand_labels[keep])
        keep = batched_nms(cand_boxes, cand_scores, cand_labels, nms_threshold)[:top_k]
        detections.append((cand_boxes[keep], cand_scores[keep], cand_labels[keep]))
    return detections


def _top_per_class(scores, labels, k):
    """Indices of the (at most) k highest-scoring candidates of each label, grouped by label,
    best first; of equal scores, the lower candidate index goes first (and is kept when the
    k-th place is tied), on NumPy and CuPy alike.

    scores (M,), labels (M,) int -> (M',) int64. One stable sort on the key
    label + (1 - score) groups the candidates by label, best first; a candidate's rank inside
    its group is its position minus the position where the group starts.
    """
    xp = get_array_module(scores)
    key = labels.astype(xp.float64) + (1.0 - scores.astype(xp.float64))  # score in [0, 1]
    order = stable_argsort(key)                                           # (M,)
    sorted_labels = labels[order]
    group_start = xp.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = xp.arange(order.shape[0]) - group_start                        # (M,)
    return order[rank < k]
