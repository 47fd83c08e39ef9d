"""VOC AP and mAP on hand-computed cases, and against a loop transcription of the devkit."""
import math

import numpy as np
import pytest

from minissd.metrics import evaluate_detections, voc_ap


def gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64)
    difficult = np.zeros(len(labels), bool) if difficult is None else np.asarray(difficult, bool)
    return {"boxes": boxes, "labels": labels, "difficult": difficult}


def det(boxes, scores, labels):
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
            np.asarray(labels, np.int64))


A = [0.1, 0.1, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]
FAR = [0.0, 0.6, 0.05, 0.65]


def test_voc_ap_known_values():
    # TP, FP, TP with 2 positives: recall .5 .5 1, precision 1 .5 .667
    rec, prec = [0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]
    # 11-point: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> 2/3 (5 points)
    assert voc_ap(rec, prec, True) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # all-point: 0.5 * 1 + 0.5 * 2/3
    assert voc_ap(rec, prec, False) == pytest.approx(0.5 + 1 / 3)
    # the envelope: a later higher precision lifts earlier points
    assert voc_ap([0.25, 0.5], [0.5, 1.0], False) == pytest.approx(0.5)
    assert voc_ap([0.25, 0.5], [0.5, 1.0], True) == pytest.approx(6 / 11)
    assert voc_ap([], [], True) == 0.0 and voc_ap([], [], False) == 0.0
    assert voc_ap([1.0], [1.0], True) == pytest.approx(1.0)


def test_perfect_and_no_detections():
    gts = [gt([A, B], [1, 2])]
    perfect = evaluate_detections([det([A, B], [0.9, 0.8], [1, 2])], gts, num_classes=3)
    assert perfect["map"] == pytest.approx(1.0)
    assert perfect["ap"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    none = evaluate_detections([det(np.zeros((0, 4)), [], [])], gts, num_classes=3)
    assert none["map"] == 0.0 and none["ap"][1] == 0.0 and len(none["precision"][1]) == 0


def test_duplicate_detection_is_a_false_positive():
    gts = [gt([A], [1])]
    dup = [0.11, 0.1, 0.4, 0.41]
    r = evaluate_detections([det([A, dup], [0.9, 0.8], [1, 1])], gts, num_classes=2,
                            use_07_metric=False)
    np.testing.assert_allclose(r["precision"][1], [1.0, 0.5])
    np.testing.assert_allclose(r["recall"][1], [1.0, 1.0])
    assert r["ap"][1] == pytest.approx(1.0)
    # the duplicate scoring higher takes the box; the exact box then becomes the FP
    r = evaluate_detections([det([A, dup], [0.7, 0.8], [1, 1])], gts, num_classes=2)
    np.testing.assert_allclose(r["precision"][1], [1.0, 0.5])


def test_ranking_matters_and_07_differs_from_all_point():
    # image 0: A (class 1); image 1: B (class 1). Detections: FP 0.9, TP(A) 0.8, TP(B) 0.3
    gts = [gt([A], [1]), gt([B], [1])]
    dets = [det([FAR, A], [0.9, 0.8], [1, 1]), det([B], [0.3], [1])]
    r07 = evaluate_detections(dets, gts, num_classes=2, use_07_metric=True)
    r10 = evaluate_detections(dets, gts, num_classes=2, use_07_metric=False)
    np.testing.assert_allclose(r10["precision"][1], [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(r10["recall"][1], [0.0, 0.5, 1.0])
    assert r10["map"] == pytest.approx(2 / 3)                # envelope is 2/3 everywhere
    assert r07["map"] == pytest.approx(2 / 3)
    # detections in the other image never match this image's box
    r = evaluate_detections([det([B], [0.9], [1]), det([A], [0.9], [1])], gts, num_classes=2)
    assert r["map"] == 0.0


def test_iou_threshold_is_strict():
    # box of area 0.5 inside a box of area 1 -> IoU exactly 0.5: not a match
    g = [0.0, 0.0, 1.0, 1.0]
    d = [0.0, 0.0, 1.0, 0.5]
    r = evaluate_detections([det([d], [0.9], [1])], [gt([g], [1])], num_classes=2)
    assert r["map"] == 0.0
    r = evaluate_detections([det([d], [0.9], [1])], [gt([g], [1])], num_classes=2,
                            iou_threshold=0.49)
    assert r["map"] == pytest.approx(1.0)


def test_difficult_boxes_are_neither_tp_nor_fp():
    # A is difficult, B is not. Detections: A (0.9, ignored), B (0.8, TP), FAR (0.7, FP)
    gts = [gt([A, B], [1, 1], difficult=[True, False])]
    r = evaluate_detections([det([A, B, FAR], [0.9, 0.8, 0.7], [1, 1, 1])], gts, num_classes=2,
                            use_07_metric=False)
    assert r["num_gt"][1] == 1
    np.testing.assert_allclose(r["precision"][1], [1.0, 0.5])
    np.testing.assert_allclose(r["recall"][1], [1.0, 1.0])
    assert r["map"] == pytest.approx(1.0)
    # a second detection of a difficult box is ignored too (never a false positive)
    r = evaluate_detections([det([A, A, B], [0.9, 0.85, 0.8], [1, 1, 1])], gts, num_classes=2)
    np.testing.assert_allclose(r["precision"][1], [1.0])


def test_class_without_ground_truth_is_left_out_of_the_map():
    gts = [gt([A], [1]), gt([B], [3], difficult=[True])]
    dets = [det([A, B], [0.9, 0.5], [1, 2]), det([B], [0.4], [3])]
    r = evaluate_detections(dets, gts, num_classes=4)
    assert r["ap"][1] == pytest.approx(1.0)
    assert math.isnan(r["ap"][2]) and math.isnan(r["ap"][3])       # 2: no GT; 3: difficult only
    assert r["ignored"] == [2, 3]
    assert r["map"] == pytest.approx(1.0)
    assert r["num_det"] == {1: 1, 2: 1, 3: 1}
    empty = evaluate_detections([det(np.zeros((0, 4)), [], [])], [gt(np.zeros((0, 4)), [])], 3)
    assert math.isnan(empty["map"])


def test_mismatched_lengths_name_the_problem():
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_detections([], [gt([A], [1])], num_classes=2)


def _devkit_ap(dets, gts, c, use_07):
    """The devkit's voc_eval loop, transcribed plainly (plain IoU, no +1)."""
    rows = [(s, i, b) for i, (bs, ss, ls) in enumerate(dets)
            for b, s, l in zip(bs, ss, ls) if l == c]
    rows.sort(key=lambda r: -r[0])
    taken = [np.zeros(len(g["labels"]), bool) for g in gts]
    npos = sum(int(((g["labels"] == c) & ~g["difficult"]).sum()) for g in gts)
    tp, fp = [], []
    for _, i, b in rows:
        g = gts[i]
        best, jbest = -1.0, -1
        for j, (gb, gl) in enumerate(zip(g["boxes"], g["labels"])):
            if gl != c:
                continue
            iw = max(min(b[2], gb[2]) - max(b[0], gb[0]), 0)
            ih = max(min(b[3], gb[3]) - max(b[1], gb[1]), 0)
            inter = iw * ih
            uni = (b[2] - b[0]) * (b[3] - b[1]) + (gb[2] - gb[0]) * (gb[3] - gb[1]) - inter
            o = inter / uni
            if o > best:
                best, jbest = o, j
        if best > 0.5:
            if g["difficult"][jbest]:
                continue
            if not taken[i][jbest]:
                taken[i][jbest] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07)


@pytest.mark.parametrize("use_07", [True, False])
def test_matches_devkit_loop_on_random_scenes(use_07):
    rng = np.random.default_rng(1)
    gts, dets = [], []
    for _ in range(12):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 0.7, (g, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.3, (g, 2))], 1)
        labels = rng.integers(1, 4, g)
        gts.append(gt(boxes, labels, rng.random(g) < 0.2))
        # detections: jittered copies of the ground truth (some twice) plus clutter
        src = np.concatenate([boxes, boxes[: g // 2]]) if g else np.zeros((0, 4))
        jit = src + rng.normal(0, 0.03, src.shape)
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 0.8, (n, 2))
        clutter = np.concatenate([xy, xy + 0.15], 1)
        bs = np.concatenate([jit, clutter])
        ls = np.concatenate([labels, labels[: g // 2], rng.integers(1, 4, n)])
        ls = np.where(rng.random(len(ls)) < 0.1, rng.integers(1, 4, len(ls)), ls)
        dets.append(det(bs, rng.random(len(bs)), ls))
    r = evaluate_detections(dets, gts, num_classes=4, use_07_metric=use_07)
    for c in (1, 2, 3):
        assert r["ap"][c] == pytest.approx(_devkit_ap(dets, gts, c, use_07), abs=1e-12)
    assert 0.0 < r["map"] < 1.0
