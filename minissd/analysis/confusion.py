"""After training: the precision/recall at each class's best-F1 score threshold, and the
confusion matrix of the detections kept at those thresholds (evaluate --errors).

Confusion matrix C (K+1, K+1), index 0 = background: per image, detections kept (score >= the
threshold of their class) and ground-truth boxes (difficult ones left out) are paired by IoU
>= IOU, largest IoU first, each once, whatever their classes; C[true class, detected class]
counts the pairs, C[true, 0] the boxes left alone (missed), C[0, detected] the detections left
alone (false alarms on background).
"""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..boxes import iou

IOU = 0.5


def best_f1(points, num_gt):
    """{label: (threshold, precision, recall, f1)} from TIDE's points {label: [(score, tp)]}
    and positives {label: n}: the score cut (keep scores >= threshold) with the best F1.
    A class without ground truth or without a true positive gets (nan, 0, 0, 0)."""
    out = {}
    for c in sorted(set(num_gt) | set(points)):
        pts = sorted(points.get(c, []), key=lambda p: -p[0])
        n = num_gt.get(c, 0)
        if not pts or n == 0:
            out[c] = (float("nan"), 0.0, 0.0, 0.0)
            continue
        scores = np.array([s for s, _ in pts])
        tp = np.cumsum([t for _, t in pts])
        precision = tp / np.arange(1, len(pts) + 1)
        recall = tp / n
        f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        k = int(f1.argmax())
        out[c] = (float(scores[k]) if f1[k] > 0 else float("nan"), float(precision[k]),
                  float(recall[k]), float(f1[k]))
    return out


def confusion_matrix(detections, ground_truths, num_classes, thresholds, iou_threshold=IOU):
    """(num_classes, num_classes) int64 matrix C as the module docstring says; thresholds
    {label: score} (a label without one, or NaN: its detections are all dropped)."""
    C = np.zeros((num_classes, num_classes), np.int64)
    for (b, s, lab), g in zip(detections, ground_truths):
        b, s, lab = (to_numpy(a) for a in (b, s, lab))
        lab = np.asarray(lab, np.int64).reshape(-1)
        cut = np.array([thresholds.get(int(c), np.nan) for c in lab], np.float64)
        keep = np.asarray(s, np.float64).reshape(-1) >= cut                  # NaN: False
        db, dl = np.asarray(b, np.float64).reshape(-1, 4)[keep], lab[keep]
        gl = to_numpy(g["labels"]).reshape(-1).astype(np.int64)
        gb = to_numpy(g["boxes"]).reshape(-1, 4).astype(np.float64)
        diff = g.get("difficult")
        if diff is not None:
            ok = ~to_numpy(diff).reshape(-1).astype(bool)
            gb, gl = gb[ok], gl[ok]
        overlap = iou(gb, db) if len(gb) and len(db) else np.zeros((len(gb), len(db)))
        pairs = np.argwhere(overlap >= iou_threshold)                        # (M, 2)
        pairs = pairs[np.argsort(-overlap[pairs[:, 0], pairs[:, 1]], kind="stable")]
        g_used, d_used = np.zeros(len(gb), bool), np.zeros(len(db), bool)
        for gi, di in pairs:                                  # largest IoU first, each once
            if not g_used[gi] and not d_used[di]:
                g_used[gi] = d_used[di] = True
                C[gl[gi], dl[di]] += 1
        np.add.at(C, (gl[~g_used], 0), 1)
        np.add.at(C, (0, dl[~d_used]), 1)
    return C
