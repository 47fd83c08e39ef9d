"""How well a config's default boxes can cover the objects of a dataset: the recall ceiling.

Dimension letters: G objects (ground-truth boxes, over all images), P default boxes.

Training makes a default box positive for an object when their IoU is >= the matching
threshold (0.5; matching.py). An object whose best default box stays below it still gets one
positive from the bipartite step, but that box must be regressed a long way and is scored as
a weak match, so such objects are the ones SSD misses first (the "best possible recall" of
YOLOv5's AutoAnchor is the same measure for anchors). Here, for every object, the best IoU
with any default box (objects are boxes in the network's normalised [0, 1] input, so an
image's resize to S x S is already in them), and

    recall ceiling = share of objects whose best IoU >= threshold

overall, by object size and by class. It is a ceiling of what the default boxes allow, not of
what a detector reaches: regression can still move a box past 0.5 IoU, and the metric's own
threshold (IoU > 0.5) is applied to the regressed box.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..boxes import center_to_corner
from ..kernels import iou_matrix

# Object sides (sqrt(w * h)) in pixels of the network's input, the edges of the size bins.
SIZE_BINS = (0, 8, 16, 32, 64, 128, 256, float("inf"))


def best_prior_iou(gt_boxes, priors, chunk=1024):
    """Every object's best IoU with any default box, and that box's index.

    gt_boxes: (G, 4) corner form, normalised
    priors:   (P, 4) center form (priors.default_boxes)
    chunk:    objects per IoU call, so that (chunk, P) stays small in memory
    returns   (best (G,) float64, index (G,) int64); G = 0 gives two empty arrays
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    corners = center_to_corner(np.asarray(priors, np.float64))              # (P, 4)
    best = np.zeros(len(gt))
    index = np.zeros(len(gt), np.int64)
    for s in range(0, len(gt), chunk):                                      # chunks of objects
        overlaps = iou_matrix(gt[s:s + chunk], corners)                     # (chunk, P)
        index[s:s + chunk] = overlaps.argmax(axis=1)
        best[s:s + chunk] = overlaps.max(axis=1)
    return best, index


def best_prior_iou_loop(gt_boxes, priors):
    """The same as best_prior_iou, written as two plain loops (the test's reference)."""
    out = []
    for x0, y0, x1, y1 in np.asarray(gt_boxes, np.float64).reshape(-1, 4):
        top, arg = 0.0, 0
        for p, (cx, cy, w, h) in enumerate(np.asarray(priors, np.float64)):
            px0, py0, px1, py1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            iw = max(0.0, min(x1, px1) - max(x0, px0))
            ih = max(0.0, min(y1, py1) - max(y0, py0))
            inter = iw * ih
            union = (x1 - x0) * (y1 - y0) + (px1 - px0) * (py1 - py0) - inter
            v = inter / union if union > 0 else 0.0
            if v > top:
                top, arg = v, p
        out.append((top, arg))
    return (np.array([v for v, _ in out]), np.array([a for _, a in out], np.int64))


class Ceiling(NamedTuple):
    """The recall ceiling of one config on one set of objects."""
    threshold: float
    overall: float                 # share of objects with best IoU >= threshold (NaN: none)
    by_size: list                  # [(label "8-16 px", objects, ceiling)] non-empty bins
    by_class: dict                 # {label: (objects, ceiling)}
    best: np.ndarray               # (G,) best IoU per object
    index: np.ndarray              # (G,) its default box


def object_sides(gt_boxes, image_size):
    """sqrt(w * h) of each object in pixels of the S x S network input: (G,)."""
    b = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)) \
        * image_size


def size_label(lo, hi):
    return f">={lo:g} px" if hi == float("inf") else f"{lo:g}-{hi:g} px"


def recall_ceiling(gt_boxes, gt_labels, priors, image_size, threshold=0.5, best=None):
    """The recall ceiling (Ceiling) of default boxes `priors` on objects gt_boxes (G, 4)
    normalised corners with labels (G,); image_size S sorts objects into SIZE_BINS by their
    side in input pixels. `best` = (best, index) already computed for these objects."""
    labels = np.asarray(gt_labels).reshape(-1)
    best, index = best if best is not None else best_prior_iou(gt_boxes, priors)
    reached = best >= threshold                                              # (G,)
    overall = float(reached.mean()) if len(reached) else float("nan")
    sides = object_sides(gt_boxes, image_size)
    by_size = []
    for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        inside = (sides >= lo) & (sides < hi)
        if inside.any():
            by_size.append((size_label(lo, hi), int(inside.sum()), float(reached[inside].mean())))
    by_class = {int(c): (int((labels == c).sum()), float(reached[labels == c].mean()))
                for c in np.unique(labels)}
    return Ceiling(threshold, overall, by_size, by_class, best, index)
