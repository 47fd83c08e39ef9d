"""COCO detection metrics (AP@[.5:.95], AP50, AP75, AP and AR by object size) by pycocotools.

Dimension letters: I images, K detections of one image, G ground-truth boxes of one image.

minissd does not re-implement COCO's metric: pycocotools' COCOeval is the reference every
published COCO number comes from, and it is small and well kept. What lives here is the
conversion from minissd's formats to COCO's, written out so that it can be read and tested:

    minissd (normalised)                          COCO (pixels of the original image)
    box (xmin, ymin, xmax, ymax) in [0, 1]   ->   bbox [x, y, w, h] = [xmin * W, ymin * H,
                                                       (xmax - xmin) * W, (ymax - ymin) * H]
    labels 1..K                              ->   category_id 1..K (the same numbers)
    image i of the lists (0-based)           ->   image id i + 1, with its width W, height H
    ground truth "area" (pixels), if given   ->   area; else w * h of the pixel bbox
    "difficult" (or "iscrowd") True          ->   iscrowd 1 (see coco_eval's docstring)
    detections of one image                  ->   its `max_detections` highest scores

COCOeval then matches per image and class at the ten IoU thresholds 0.50, 0.55, ..., 0.95,
highest score first, interpolates precision at 101 recall points, and averages over the
classes that have ground truth. Small / medium / large are ground-truth areas below 32^2,
between 32^2 and 96^2, and above 96^2 pixels, which is why the image sizes are needed: the
areas are in pixels of the original image, not of the network's input.
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np

from .backend import to_numpy

# The keys of coco_eval's result, in the order of COCOeval.stats (its summarize() lines).
COCO_KEYS = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
             "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
# What each key is, as COCOeval.summarize() prints it (the table of python -m minissd.evaluate).
COCO_KEY_NAMES = {
    "map": "AP @[.50:.95]", "map50": "AP @.50", "map75": "AP @.75",
    "map_small": "AP small", "map_medium": "AP medium", "map_large": "AP large",
    "mar_1": "AR max 1 det", "mar_10": "AR max 10 dets", "mar_100": "AR max 100 dets",
    "mar_small": "AR small", "mar_medium": "AR medium", "mar_large": "AR large",
}
MAX_DETECTIONS = 100      # COCO's rule: at most 100 detections per image are scored


def to_coco(detections, ground_truths, num_classes, image_sizes, class_names=None,
            max_detections=MAX_DETECTIONS):
    """minissd's detections and ground truth as COCO's ground-truth dataset and result list.

    detections:    per image (boxes (K, 4) normalised corners, scores (K,), labels (K,) in
                   1..num_classes-1), as postprocess.detect() returns them (NumPy or CuPy)
    ground_truths: per image {"boxes": (G, 4) normalised corners, "labels": (G,),
                   optional "difficult" (G,) bool, "iscrowd" (G,) bool, "area" (G,) pixels}
    num_classes:   C, background included
    image_sizes:   per image (W, H) in pixels of the original image
    class_names:   names of labels 1..C-1 (only written into the categories)
    max_detections: keep this many detections of each image, highest scores first (all
                   classes together, as COCO's results format asks); None keeps all
    returns (gt, results): gt a dict with "images", "annotations", "categories" (what
             pycocotools.coco.COCO reads from an instances file), results a list of
             {"image_id", "category_id", "bbox", "score"} (what COCO.loadRes reads)
    """
    n = len(ground_truths)
    if len(detections) != n or len(image_sizes) != n:
        raise ValueError(f"coco_eval: {len(detections)} images of detections, {n} of ground "
                         f"truth and {len(image_sizes)} image sizes; pass one entry per image "
                         "to each")
    names = class_names or [f"class{c}" for c in range(1, num_classes)]
    gt = {"images": [], "annotations": [],
          "categories": [{"id": c, "name": str(names[c - 1])} for c in range(1, num_classes)]}
    results = []
    for i, (det, truth, size) in enumerate(zip(detections, ground_truths, image_sizes)):
        w, h = (float(v) for v in size)
        if not (w > 0 and h > 0):
            raise ValueError(f"coco_eval: image {i} has size {size}; give (width, height) in "
                             "pixels, both > 0")
        gt["images"].append({"id": i + 1, "width": w, "height": h})
        boxes = _pixel_boxes(truth["boxes"], w, h)                      # (G, 4) x, y, w, h
        labels = _labels(truth["labels"], len(boxes), num_classes, f"image {i} ground truth")
        crowd = np.zeros(len(boxes), bool)
        for key in ("difficult", "iscrowd"):
            if truth.get(key) is not None:
                crowd |= to_numpy(truth[key]).reshape(-1).astype(bool)
        area = truth.get("area")
        area = boxes[:, 2] * boxes[:, 3] if area is None else \
            to_numpy(area).reshape(-1).astype(np.float64)
        for b, lab, cr, a in zip(boxes, labels, crowd, area):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1,
                                      "category_id": int(lab), "bbox": [float(v) for v in b],
                                      "area": float(a), "iscrowd": int(cr)})

        d_boxes, d_scores, d_labels = (to_numpy(a) for a in det)
        d_boxes = _pixel_boxes(d_boxes, w, h)                           # (K, 4)
        d_scores = d_scores.reshape(-1).astype(np.float64)
        d_labels = _labels(d_labels, len(d_boxes), num_classes, f"image {i} detections")
        order = np.argsort(-d_scores, kind="stable")[:max_detections]   # highest first
        for k in order:
            results.append({"image_id": i + 1, "category_id": int(d_labels[k]),
                            "bbox": [float(v) for v in d_boxes[k]],
                            "score": float(d_scores[k])})
    return gt, results


def _pixel_boxes(boxes, w, h):
    """Normalised corners (N, 4) -> COCO pixel boxes [x, y, width, height] (N, 4) float64."""
    b = to_numpy(boxes).reshape(-1, 4).astype(np.float64)
    scale = np.array([w, h, w, h])
    b = b * scale                                               # pixel corners
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _labels(labels, n, num_classes, what):
    labels = to_numpy(labels).reshape(-1).astype(np.int64)
    if len(labels) != n:
        raise ValueError(f"coco_eval: {what}: {n} boxes but {len(labels)} labels")
    if n and (labels.min() < 1 or labels.max() >= num_classes):
        raise ValueError(f"coco_eval: {what}: labels must be 1..{num_classes - 1} (0 is the "
                         f"background), got {labels.min()}..{labels.max()}")
    return labels


def coco_eval(detections, ground_truths, num_classes, image_sizes, class_names=None,
              max_detections=MAX_DETECTIONS) -> dict:
    """COCO's detection metrics of minissd detections, computed by pycocotools' COCOeval.

    detections, ground_truths, num_classes, image_sizes, class_names, max_detections: as in
    to_coco (above): per image (boxes, scores, labels) and {"boxes", "labels", "difficult"},
    boxes normalised corners, labels 1..K, image_sizes (W, H) in pixels per image.
    returns {
        "map":        AP averaged over IoU 0.50:0.05:0.95 (COCO's headline number),
        "map50", "map75":  AP at IoU 0.5 (close to VOC's all-point AP) and 0.75,
        "map_small", "map_medium", "map_large":  AP of objects < 32^2, 32^2..96^2, > 96^2
                      pixels of area,
        "mar_1", "mar_10", "mar_100":  average recall with at most 1, 10, 100 detections per
                      image and class,
        "mar_small", "mar_medium", "mar_large":  AR (100 detections) by object size,
        "ap":         {class_id: AP@[.5:.95] of that class} (NaN: no ground truth),
        "stats":      the 12 numbers above as COCOeval.stats orders them,
    }
    A number COCOeval cannot define (no ground truth in that size range, or none at all;
    pycocotools writes -1) is NaN here, as minissd's VOC metric writes it.

    "Difficult" objects (VOC) are passed as crowd regions (iscrowd = 1), not left out. Why:
    COCOeval treats a crowd the way VOC treats a difficult object: it is not counted among
    the objects to find (recall's denominator), and a detection matched to it is ignored,
    neither a true nor a false positive. Left out, a correct detection of a difficult object
    would become a false positive, and the COCO AP of a VOC-format set would punish finding
    objects its annotators marked as optional. The rules differ in two details: a crowd is
    matched by intersection over the DETECTION's area (a small box inside a large crowd
    region matches it), and one crowd region can absorb any number of detections, where VOC
    needs IoU > 0.5 and lets each box be matched once. COCO files' own iscrowd objects reach
    this function the same way (the COCO reader, data/coco.py, sets "difficult" from them),
    so COCO data is scored exactly as COCO scores it.
    """
    gt, results = to_coco(detections, ground_truths, num_classes, image_sizes, class_names,
                          max_detections)
    from pycocotools.coco import COCO               # imported here: only this metric needs it
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it works
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:                        # loadRes cannot take an empty list; an empty result set
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"],
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [_nan_for_undefined(v) for v in ev.stats]
    out = dict(zip(COCO_KEYS, stats))
    # per class: precision (T IoUs, R recalls, K classes, A areas, M maxDets), area "all",
    # 100 detections; -1 marks the classes without ground truth
    precision = ev.eval["precision"][:, :, :, 0, -1]
    out["ap"] = {}
    for k, c in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        out["ap"][int(c)] = float(np.mean(p[p > -1])) if (p > -1).any() else float("nan")
    out["stats"] = stats
    return out


def _nan_for_undefined(v):
    """COCOeval's -1 (undefined) as NaN; other values as plain floats."""
    v = float(v)
    return float("nan") if v == -1 else v


def format_coco_table(result) -> str:
    """The 12 COCO numbers as a two-column text table (key, value), one line each."""
    width = max(len(v) for v in COCO_KEY_NAMES.values())
    lines = [f"{'COCO metric':<{width}}  {'value':>7}  key"]
    for key in COCO_KEYS:
        v = result[key]
        text = "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"
        lines.append(f"{COCO_KEY_NAMES[key]:<{width}}  {text:>7}  {key}")
    return "\n".join(lines)
