"""TIDE's error types (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection
Errors", ECCV 2020): why each false positive is false, which objects were missed, and the mAP
each kind of error costs. Written from TIDE's definitions; tests/test_errors.py checks them on
hand-built cases and against the `tidecv` package when it is installed.

Dimension letters: D detections of one image, G its ground-truth boxes.

Per image, detections in descending score order are matched the way TIDE does (COCO's way): a
detection takes the unmatched ground truth of its class with the highest IoU, when that IoU is
>= POS (0.5). Each detection left unmatched gets ONE type, the first that applies:
    background (no ground truth in the image at all)
    Loc   localisation: its best IoU with a box of its own class is in [BG, POS]
    Cls   classification: IoU >= POS with a box of another class
    Dupe  duplicate: IoU >= POS with a box of its class that a higher-scoring detection took
    Bkg   background: IoU <= BG (0.1) with every box
    Both  anything else (wrong class and badly placed)
and every ground-truth box left unmatched is Miss, unless a Loc or Cls error points at it (then
fixing that error recovers it). Fixing a type, one type at a time:
    Loc, Cls  the highest-scoring such error on an unmatched box becomes a true positive (of
              the box's class for Cls); the others on that box, or on a matched box, vanish
    Dupe, Bkg, Both   the detection vanishes
    Miss      the box no longer counts as a positive
and the type's dAP is the mAP after the fix minus before (never below 0). The special types:
FP (every false positive vanishes) and FN (every unmatched box stops counting).
AP is TIDE's: COCO's 101-point interpolated precision at IoU POS; the mAP averages it over the
classes that have ground truth or detections (a class with detections and no ground truth
scores 0).

Differences from tidecv, on purpose: "difficult" (VOC) and crowd (COCO) boxes are ignored
regions as in tidecv (an unmatched detection of their class covering more than POS of its own
area by one is ignored) but an ignored detection gets no error type here (tidecv classifies it
and may let it fix a Loc/Cls error).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import to_numpy
from ..boxes import iou

POS, BG = 0.5, 0.1
TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "both (class and place)",
         "Dupe": "duplicate", "Bkg": "background", "Miss": "missed",
         "FP": "all false positives", "FN": "all false negatives"}


class Error(NamedTuple):
    kind: str              # one of TYPES
    image: int
    det: int               # index into the image's detections (-1 for Miss)
    gt: int                # the box it concerns (-1: none)
    score: float
    label: int             # the detection's class (Miss: the box's)
    free: bool = False     # Loc/Cls: the box was left unmatched (a fix can recover it)


def _crowd_overlap(det, regions):
    """Area of each detection covered by each region over the detection's own area: (D, R)."""
    lt = np.maximum(det[:, None, :2], regions[None, :, :2])
    rb = np.minimum(det[:, None, 2:], regions[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = np.prod(np.clip(det[:, 2:] - det[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area, 1e-12)[:, None]


def classify_image(boxes, scores, labels, gt_boxes, gt_labels, gt_ignore, image=0,
                   pos=POS, bg=BG):
    """One image: (points, errors, num_gt) where points = [(label, score, is_tp, det)] for the
    detections that count (not ignored), errors = [Error], num_gt = {label: boxes}."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    keep = ~gt_ignore
    gt, gl = gt_boxes[keep], gt_labels[keep]                             # (G, 4), (G,)
    regions, region_labels = gt_boxes[gt_ignore], gt_labels[gt_ignore]
    num_gt = {int(c): int((gl == c).sum()) for c in np.unique(gl)}
    D, G = len(scores), len(gl)
    overlap = iou(boxes, gt) if D and G else np.zeros((D, G))            # (D, G)
    same = labels[:, None] == gl[None, :]                                # (D, G)
    cls_iou = overlap * same
    used_gt = np.zeros(G, bool)
    matched = np.full(D, -1)
    buffer = cls_iou.copy()
    for d in range(D):                                  # score order: greedy, as TIDE/COCO
        if G == 0:
            break
        j = int(buffer[d].argmax())
        if buffer[d, j] >= pos:
            matched[d], used_gt[j] = j, True
            buffer[:, j] = 0
    ignored = np.zeros(D, bool)
    if len(regions) and D:
        cover = _crowd_overlap(boxes, regions)                           # (D, R)
        ok = cover > pos
        ok &= labels[:, None] == region_labels[None, :]
        ignored = (matched < 0) & ok.any(axis=1)
    points = [(int(labels[d]), float(scores[d]), bool(matched[d] >= 0), int(order[d]))
              for d in range(D) if not ignored[d]]
    errors, usable = [], np.zeros(G, bool)
    noncls = overlap * ~same
    used_cls = cls_iou * used_gt[None, :]
    for d in range(D):
        if matched[d] >= 0 or ignored[d]:
            continue
        def e(kind, j=-1, free=False):
            return Error(kind, image, int(order[d]), j, float(scores[d]), int(labels[d]), free)
        if G == 0:
            errors.append(e("Bkg"))
            continue
        j = int(cls_iou[d].argmax())
        if bg <= cls_iou[d, j] <= pos:
            errors.append(e("Loc", j, not used_gt[j]))
            usable[j] |= not used_gt[j]
            continue
        j = int(noncls[d].argmax())
        if noncls[d, j] >= pos:
            errors.append(e("Cls", j, not used_gt[j]))
            usable[j] |= not used_gt[j]
            continue
        j = int(used_cls[d].argmax())
        if used_cls[d, j] >= pos:
            errors.append(e("Dupe", j))
            continue
        if overlap[d].max() <= bg:
            errors.append(e("Bkg"))
            continue
        errors.append(e("Both"))
    for j in np.flatnonzero(~used_gt & ~usable):
        errors.append(Error("Miss", image, -1, int(j), 0.0, int(gl[j])))
    unmatched = {int(c): int(((gl == c) & ~used_gt).sum()) for c in np.unique(gl)}
    return points, errors, num_gt, unmatched


def ap101(scores, tps, num_gt):
    """TIDE's (COCO's) AP: precision made non-increasing from the right, read at the recalls
    0, 0.01, ..., 1 (the first point reaching each; 0 past the last), averaged. 0 when no
    ground truth."""
    if num_gt <= 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    tp = np.asarray(tps, bool)[order]
    ntp = np.cumsum(tp)
    precision = ntp / np.arange(1, len(tp) + 1)
    recall = ntp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(tp) else precision
    # the recall points as TIDE writes them, k / 100 (np.linspace rounds a few differently)
    idx = np.searchsorted(recall, np.arange(101) / 100, side="left")
    got = np.where(idx < len(tp), precision[np.minimum(idx, max(len(tp) - 1, 0))]
                   if len(tp) else 0.0, 0.0)
    return float(np.mean(got))


def _map(points, num_gt):
    """TIDE's mAP of points {label: [(score, tp)]} and {label: positives}: over the classes
    with ground truth or detections."""
    classes = set(num_gt) | {c for c, p in points.items() if p}
    aps = [ap101([s for s, _ in points.get(c, [])], [t for _, t in points.get(c, [])],
                 num_gt.get(c, 0)) for c in sorted(classes)
           if points.get(c) or num_gt.get(c, 0) > 0]
    return float(np.mean(aps)) if aps else float("nan")


class Breakdown(NamedTuple):
    map: float                     # TIDE's mAP at IoU POS (101-point), before any fix
    dap: dict                      # {type: mAP gained by fixing it}, TYPES then "FP", "FN"
    counts: dict                   # {type: errors}
    errors: list                   # [Error]
    points: dict                   # {label: [(score, tp)]}
    num_gt: dict                   # {label: positives}


def tide_errors(detections, ground_truths, pos=POS, bg=BG) -> Breakdown:
    """The error breakdown of detections (per image (boxes, scores, labels), as
    postprocess.detect gives) against ground_truths (per image {"boxes", "labels",
    "difficult"}; difficult boxes are ignored regions)."""
    points, num_gt, errors, unmatched = {}, {}, [], {}
    base = {}                                   # (image, det) -> (label, score, tp)
    for i, (det, g) in enumerate(zip(detections, ground_truths)):
        b, s, lab = (to_numpy(a) for a in det)
        gb = to_numpy(g["boxes"]).reshape(-1, 4).astype(np.float64)
        gl = to_numpy(g["labels"]).reshape(-1).astype(np.int64)
        ign = g.get("difficult")
        ign = np.zeros(len(gl), bool) if ign is None else to_numpy(ign).reshape(-1).astype(bool)
        p, e, n, u = classify_image(np.asarray(b, np.float64).reshape(-1, 4),
                                    np.asarray(s, np.float64).reshape(-1),
                                    np.asarray(lab, np.int64).reshape(-1), gb, gl, ign, i,
                                    pos, bg)
        for label, score, tp, d in p:
            base[(i, d)] = (label, score, tp)
        errors += e
        for c, k in n.items():
            num_gt[c] = num_gt.get(c, 0) + k
        for c, k in u.items():
            unmatched[c] = unmatched.get(c, 0) + k
    for label, score, tp in base.values():
        points.setdefault(label, []).append((score, tp))
    before = _map(points, num_gt)
    # per (image, box): the highest-scoring Loc/Cls error on it is the one a fix recovers
    best = {}
    for k, e in enumerate(errors):
        if e.kind in ("Loc", "Cls") and e.free:
            key = (e.image, e.gt)
            if key not in best or e.score > errors[best[key]].score:
                best[key] = k
    recoverable = set(best.values())
    dap = {}
    for kind in TYPES:
        pts = {c: list(v) for c, v in points.items()}
        gts = dict(num_gt)
        changed = {}
        for k, e in enumerate(errors):
            if e.kind != kind:
                continue
            if kind == "Miss":
                gts[e.label] -= 1
                continue
            changed[(e.image, e.det)] = None
            if k in recoverable:                        # Loc / Cls on a free box
                changed[(e.image, e.det)] = (_gt_label(e, ground_truths), e.score, True)
        if kind != "Miss":
            pts = {}
            for key, (label, score, tp) in base.items():
                new = changed[key] if key in changed else (label, score, tp)
                if new is not None:
                    pts.setdefault(new[0], []).append((new[1], new[2]))
        dap[kind] = max(_map(pts, gts) - before, 0.0)
    only_tp = {c: [(s, t) for s, t in v if t] for c, v in points.items()}
    dap["FP"] = max(_map(only_tp, num_gt) - before, 0.0)
    fewer = {c: n - unmatched.get(c, 0) for c, n in num_gt.items()}
    dap["FN"] = max(_map(points, fewer) - before, 0.0)
    counts = {kind: sum(e.kind == kind for e in errors) for kind in TYPES}
    return Breakdown(before, dap, counts, errors, points, num_gt)


def _gt_label(e, ground_truths):
    """The class of the box a Loc/Cls error points at (its image's non-ignored boxes)."""
    g = ground_truths[e.image]
    gl = to_numpy(g["labels"]).reshape(-1)
    ign = g.get("difficult")
    keep = np.ones(len(gl), bool) if ign is None else ~to_numpy(ign).reshape(-1).astype(bool)
    return int(gl[keep][e.gt])
