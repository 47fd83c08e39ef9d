"""PASCAL VOC average precision (AP) and mean AP, with the devkit's matching rules.

Dimension letters: I images, D detections of one class (over all images), G ground-truth boxes.

For each object class c (labels 1..K; 0 is background):
  1. take every detection of class c in every image, sorted by score, highest first;
  2. a detection's candidate is the ground-truth box of class c in ITS image with the highest
     IoU; it is a match when that IoU > iou_threshold (strictly, as py-faster-rcnn's
     voc_eval.py `ovmax > ovthresh`; the devkit's VOCevaldet.m counts IoU >= 0.5, which
     differs only at exactly 0.5; notebook 07);
  3. a match to a "difficult" box is ignored (neither true nor false positive); a match to a
     box already taken by a higher-scoring detection is a false positive (the detection does
     NOT fall back to its second-best box, as in the devkit); no match is a false positive;
  4. precision = TP / (TP + FP) and recall = TP / (non-difficult boxes of class c) along that
     order, and AP summarises the precision/recall curve (voc_ap).
The mAP is the mean AP over the classes that have at least one non-difficult ground-truth box.

Differences from the devkit (VOCdevkit voc_eval.m / py-faster-rcnn voc_eval.py), on purpose:
  * Boxes here are normalised to [0, 1], so IoU is the plain area ratio; the devkit adds 1 to
    widths and heights because it works on integer pixel coordinates.
  * A class without non-difficult ground truth has no defined recall (the devkit divides by
    zero and gets NaN or 0). Here its AP is NaN and it is left out of the mAP; `num_gt` and
    `ignored` in the result say which classes those were.
  * Ties in score keep a fixed order (a stable sort: image order, then detection order); the
    devkit's quicksort leaves it to chance.

The matching is vectorised per class: step 3's "first detection wins a box" does not depend on
other images, so "the first detection, in score order, whose candidate is (image i, box j)"
can be found for all detections at once with np.unique.
"""
from __future__ import annotations

import numpy as np

from .backend import to_numpy


def voc_ap(recall, precision, use_07_metric=True):
    """Average precision from a precision/recall curve.

    recall, precision: (D,) values after each detection in score order (recall non-decreasing)
    use_07_metric:     True  -> VOC2007 11-point: mean over t in {0, 0.1, ..., 1} of the
                                highest precision at recall >= t (0 when recall never gets there)
                       False -> VOC2010+ all-point: area under the precision envelope (precision
                                made non-increasing from the right), summed where recall changes
    returns            float AP in [0, 1]
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):          # 11 thresholds, not a loop over boxes
            above = recall >= t
            ap += (precision[above].max() if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]     # envelope: max precision to the right
    i = np.flatnonzero(mrec[1:] != mrec[:-1])          # points where recall changes
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _pairwise_iou(a, b):
    """IoU of matching rows: a (D, 4) against b (D, G, 4) corner boxes -> (D, G)."""
    lt = np.maximum(a[:, None, :2], b[..., :2])                       # (D, G, 2)
    rb = np.minimum(a[:, None, 2:], b[..., 2:])                       # (D, G, 2)
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]                                   # (D, G)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)  # (D,)
    area_b = np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # (D, G)
    union = area_a[:, None] + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _class_tp_fp(det_image, det_boxes, gt_pad, gt_valid, gt_difficult, iou_threshold):
    """True/false positive flags of one class's detections, already sorted by score.

    det_image:    (D,) image index of each detection
    det_boxes:    (D, 4) corner boxes
    gt_pad:       (I, Gmax, 4) ground truth of this class per image, padded
    gt_valid:     (I, Gmax) bool, False on padding
    gt_difficult: (I, Gmax) bool
    returns       tp (D,) bool, fp (D,) bool (both False for a match to a difficult box)
    """
    D = len(det_image)
    if gt_pad.shape[1] == 0:
        return np.zeros(D, bool), np.ones(D, bool)
    overlaps = _pairwise_iou(det_boxes, gt_pad[det_image])             # (D, Gmax)
    overlaps = np.where(gt_valid[det_image], overlaps, -1.0)
    best = overlaps.argmax(axis=1)                                     # (D,) candidate box
    ovmax = overlaps[np.arange(D), best]
    matched = ovmax > iou_threshold
    difficult = matched & gt_difficult[det_image, best]
    candidate = matched & ~difficult
    # "each box matched once": only the first detection (in score order) of each
    # (image, box) pair is a true positive; np.unique returns first occurrences.
    key = det_image.astype(np.int64) * gt_pad.shape[1] + best
    idx = np.flatnonzero(candidate)
    _, first = np.unique(key[idx], return_index=True)
    tp = np.zeros(D, bool)
    tp[idx[first]] = True
    fp = ~tp & ~difficult
    return tp, fp


def evaluate_detections(detections, ground_truths, num_classes, iou_threshold=0.5,
                        use_07_metric=True):
    """VOC AP per class and mAP.

    detections:    per image, (boxes (K, 4) corner normalised, scores (K,), labels (K,) in 1..C-1),
                   as postprocess.detect() returns them (NumPy or CuPy)
    ground_truths: per image, {"boxes": (G, 4), "labels": (G,), "difficult": (G,) bool}
                   ("difficult" may be missing: no box is difficult)
    num_classes:   C, background included (labels 1..C-1 are scored)
    returns {
        "map":       float, mean of the AP over classes with ground truth (NaN if none has),
        "ap":        {class_id: float} for every class 1..C-1 (NaN where there is no ground truth),
        "precision": {class_id: (D,) array}, "recall": {class_id: (D,) array} (for PR curves),
        "num_gt":    {class_id: int} non-difficult boxes, "num_det": {class_id: int},
        "ignored":   [class_id, ...] classes left out of the mAP (no non-difficult ground truth),
        "metric":    "voc07" or "voc10",
    }
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"evaluate_detections: {len(detections)} images of detections but "
                         f"{len(ground_truths)} of ground truth; pass one entry per image to both")
    dets = [tuple(to_numpy(a) for a in d) for d in detections]
    gts = []
    for g in ground_truths:
        boxes = to_numpy(g["boxes"]).reshape(-1, 4).astype(np.float64)
        labels = to_numpy(g["labels"]).reshape(-1).astype(np.int64)
        difficult = g.get("difficult")
        difficult = (np.zeros(len(labels), bool) if difficult is None
                     else to_numpy(difficult).reshape(-1).astype(bool))
        gts.append((boxes, labels, difficult))

    I = len(gts)
    # the trailing empty arrays make concatenate work when there are no detections at all
    det_image = np.concatenate([np.full(len(d[1]), i) for i, d in enumerate(dets)]
                               + [np.zeros(0, int)])
    det_boxes = np.concatenate([d[0].reshape(-1, 4) for d in dets]
                               + [np.zeros((0, 4))]).astype(np.float64)
    det_scores = np.concatenate([d[1].reshape(-1) for d in dets]
                                + [np.zeros(0)]).astype(np.float64)
    det_labels = np.concatenate([d[2].reshape(-1) for d in dets]
                                + [np.zeros(0, int)]).astype(np.int64)

    out = {"ap": {}, "precision": {}, "recall": {}, "num_gt": {}, "num_det": {}, "ignored": [],
           "metric": "voc07" if use_07_metric else "voc10"}
    for c in range(1, num_classes):
        # ground truth of class c, padded to (I, Gmax, 4)
        per_image = [(b[l == c], d[l == c]) for b, l, d in gts]
        gmax = max([len(b) for b, _ in per_image] + [0])
        gt_pad = np.zeros((I, gmax, 4))
        gt_valid = np.zeros((I, gmax), bool)
        gt_difficult = np.zeros((I, gmax), bool)
        for i, (b, d) in enumerate(per_image):      # one loop over images, not over boxes
            gt_pad[i, :len(b)] = b
            gt_valid[i, :len(b)] = True
            gt_difficult[i, :len(b)] = d
        npos = int((gt_valid & ~gt_difficult).sum())

        sel = np.flatnonzero(det_labels == c)
        order = sel[np.argsort(-det_scores[sel], kind="stable")]     # highest score first
        tp, fp = _class_tp_fp(det_image[order], det_boxes[order], gt_pad, gt_valid,
                              gt_difficult, iou_threshold)
        # drop the detections that are neither (matches to difficult boxes)
        keep = tp | fp
        tp_cum = np.cumsum(tp[keep])
        fp_cum = np.cumsum(fp[keep])
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        recall = tp_cum / npos if npos > 0 else np.zeros_like(precision)

        out["num_gt"][c] = npos
        out["num_det"][c] = int(len(order))
        out["precision"][c] = precision
        out["recall"][c] = recall
        if npos == 0:
            out["ap"][c] = float("nan")
            out["ignored"].append(c)
        else:
            out["ap"][c] = voc_ap(recall, precision, use_07_metric)
    scored = [ap for c, ap in out["ap"].items() if c not in out["ignored"]]
    out["map"] = float(np.mean(scored)) if scored else float("nan")
    return out


# COCO's metric (AP@[.5:.95] and the rest) is pycocotools' COCOeval, reached through minissd's
# formats in coco_metrics.py; it is importable from here with the VOC metric.
from .coco_metrics import coco_eval, to_coco  # noqa: E402,F401
