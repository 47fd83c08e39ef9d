"""coco_eval: the conversion to COCO's formats by hand, and the result against pycocotools'
COCOeval run by hand on the same data in COCO's own pixel format."""
import contextlib
import io
import math

import numpy as np
import pytest

from minissd.coco_metrics import COCO_KEYS, format_coco_table
from minissd.metrics import coco_eval, to_coco

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def cocoeval_by_hand(images, annotations, results, num_classes):
    """COCOeval's 12 stats from COCO-format lists (pixels), as a COCO user runs it."""
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def random_set(rng, num_images, num_classes, max_dets=30):
    """Random images of different sizes in COCO's pixel format, and the same in minissd's
    normalised format: (images, annotations, results, detections, ground_truths, sizes)."""
    images, annotations, results, dets, gts, sizes = [], [], [], [], [], []
    for i in range(num_images):
        w, h = int(rng.integers(40, 700)), int(rng.integers(40, 700))
        images.append({"id": i + 1, "width": w, "height": h})
        sizes.append((w, h))
        g = int(rng.integers(0, 7)) if i else 0           # image 0: no ground truth
        x0 = rng.uniform(0, 0.8, g) * w
        y0 = rng.uniform(0, 0.8, g) * h
        bw = rng.uniform(0.02, 1.0, g) * (w - x0)         # small, medium and large boxes
        bh = rng.uniform(0.02, 1.0, g) * (h - y0)
        labels = rng.integers(1, num_classes, g)
        crowd = rng.random(g) < 0.15
        for k in range(g):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(labels[k]),
                                "bbox": [x0[k], y0[k], bw[k], bh[k]],
                                "area": bw[k] * bh[k], "iscrowd": int(crowd[k])})
        gts.append({"boxes": np.stack([x0 / w, y0 / h, (x0 + bw) / w, (y0 + bh) / h], 1)
                    .reshape(-1, 4), "labels": labels, "difficult": crowd})
        # detections: jittered copies of the ground truth (some relabelled) and random boxes
        n_near = int(rng.integers(0, 3 * g + 1))
        src = rng.integers(0, max(g, 1), n_near)
        near = np.stack([x0, y0, bw, bh], 1)[src] if g else np.zeros((0, 4))
        near = near + rng.normal(0, 0.08, near.shape) * near[:, [2, 3, 2, 3]]
        n_rand = int(rng.integers(0, max_dets - n_near + 1)) if i != 1 else 0
        rx, ry = rng.uniform(0, w, n_rand), rng.uniform(0, h, n_rand)
        rand = np.stack([rx, ry, rng.uniform(1, w, n_rand), rng.uniform(1, h, n_rand)], 1)
        boxes = np.concatenate([near, rand])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        d_labels = np.concatenate([labels[src] if g else np.zeros(0, int),
                                   rng.integers(1, num_classes, n_rand)])
        flip = rng.random(len(d_labels)) < 0.1
        d_labels[flip] = rng.integers(1, num_classes, flip.sum())
        scores = rng.random(len(boxes))
        for b, s, lab in zip(boxes, scores, d_labels):
            results.append({"image_id": i + 1, "category_id": int(lab),
                            "bbox": [float(v) for v in b], "score": float(s)})
        corners = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        dets.append((corners / [w, h, w, h], scores, d_labels))
    return images, annotations, results, dets, gts, sizes


def assert_same_stats(result, stats):
    """coco_eval's keys against COCOeval.stats (-1, undefined, is NaN in coco_eval)."""
    for key, ref in zip(COCO_KEYS, stats):
        if ref == -1:
            assert math.isnan(result[key]), key
        else:
            assert abs(result[key] - ref) <= 1e-6, (key, result[key], ref)


def test_conversion_by_hand():
    truth = [{"boxes": np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]),
              "labels": np.array([2, 1]), "difficult": np.array([False, True])}]
    dets = [(np.array([[0.1, 0.2, 0.6, 0.7], [0.5, 0.5, 0.75, 1.0]]), np.array([0.2, 0.9]),
             np.array([2, 1]))]
    gt, results = to_coco(dets, truth, 3, [(200, 100)], class_names=("cat", "dog"))
    assert gt["images"] == [{"id": 1, "width": 200.0, "height": 100.0}]
    assert gt["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    a0, a1 = gt["annotations"]
    assert a0["bbox"] == pytest.approx([20, 20, 80, 40]) and a0["area"] == pytest.approx(3200)
    assert (a0["category_id"], a0["iscrowd"], a1["iscrowd"]) == (2, 0, 1)
    assert a1["bbox"] == pytest.approx([0, 0, 200, 100]) and a1["area"] == pytest.approx(2e4)
    # results sorted by score; pixel [x, y, w, h]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.2])
    assert results[0]["bbox"] == pytest.approx([100, 50, 50, 50])
    assert results[1]["bbox"] == pytest.approx([20, 20, 100, 50])
    assert results[0]["category_id"] == 1
    # a given pixel area (a segmentation's) wins over the box's
    truth[0]["area"] = np.array([1000.0, 5.0])
    gt, _ = to_coco(dets, truth, 3, [(200, 100)])
    assert [a["area"] for a in gt["annotations"]] == [1000.0, 5.0]
    with pytest.raises(ValueError, match="labels must be 1..2"):
        to_coco([(np.zeros((1, 4)), np.ones(1), np.array([3]))], truth, 3, [(200, 100)])
    with pytest.raises(ValueError, match="one entry per image"):
        to_coco(dets, truth, 3, [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_cocoeval_by_hand_on_random_data(seed):
    rng = np.random.default_rng(seed)
    images, anns, results, dets, gts, sizes = random_set(rng, num_images=25, num_classes=5)
    stats = cocoeval_by_hand(images, anns, results, num_classes=5)
    r = coco_eval(dets, gts, 5, sizes)
    assert_same_stats(r, stats)
    assert r["stats"] == [r[k] for k in COCO_KEYS]
    assert 0 < r["map"] < r["map50"] < 1           # a random set that is neither 0 nor 1
    classes = [v for v in r["ap"].values() if not math.isnan(v)]
    assert r["map"] == pytest.approx(np.mean(classes))


def test_keeps_the_100_best_detections_of_each_image():
    rng = np.random.default_rng(3)
    images, anns, results, dets, gts, sizes = random_set(rng, 8, 3, max_dets=400)
    assert max(len(d[1]) for d in dets) > 100
    top = []                                # COCO's rule by hand: 100 per image by score
    for i in range(len(images)):
        mine = sorted((r for r in results if r["image_id"] == i + 1), key=lambda r: -r["score"])
        top += mine[:100]
    assert_same_stats(coco_eval(dets, gts, 3, sizes), cocoeval_by_hand(images, anns, top, 3))
    _, kept = to_coco(dets, gts, 3, sizes)
    assert len(kept) == len(top) < len(results)
    everything = coco_eval(dets, gts, 3, sizes, max_detections=None)
    assert_same_stats(everything, cocoeval_by_hand(images, anns, results, 3))


A = [0.1, 0.1, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]


def test_difficult_objects_are_crowds():
    """A detection of a difficult object changes nothing (as in VOC); were the object left
    out, the same detection would be a false positive."""
    two = [{"boxes": np.array([A, B]), "labels": np.array([1, 1]),
            "difficult": np.array([False, True])}]
    dets = [(np.array([B, A]), np.array([0.9, 0.8]), np.array([1, 1]))]   # B scores higher
    with_difficult = coco_eval(dets, two, 2, [(300, 300)])
    only_a = coco_eval([(np.array([A]), np.array([0.8]), np.array([1]))],
                       [{"boxes": np.array([A]), "labels": np.array([1])}], 2, [(300, 300)])
    assert with_difficult["map"] == pytest.approx(1.0) and only_a["map"] == pytest.approx(1.0)
    left_out = coco_eval(dets, [{"boxes": np.array([A]), "labels": np.array([1])}], 2,
                         [(300, 300)])
    assert left_out["map50"] < 0.6                 # the detection of B is a false positive now
    # iscrowd is the same flag
    crowd = [{"boxes": np.array([A, B]), "labels": np.array([1, 1]),
              "iscrowd": np.array([0, 1])}]
    assert coco_eval(dets, crowd, 2, [(300, 300)])["map"] == pytest.approx(1.0)


def test_no_detections_and_no_ground_truth():
    truth = [{"boxes": np.array([A]), "labels": np.array([1])}]
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    r = coco_eval([empty], truth, 3, [(100, 100)])
    assert r["map"] == 0.0 and r["mar_100"] == 0.0
    assert r["ap"][1] == 0.0 and math.isnan(r["ap"][2])          # class 2 has no ground truth
    assert math.isnan(r["map_medium"])                          # no object of that size
    none = coco_eval([empty], [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}], 3,
                     [(100, 100)])
    assert math.isnan(none["map"])


def test_table_lists_every_key(capsys):
    truth = [{"boxes": np.array([A]), "labels": np.array([1])}]
    r = coco_eval([(np.array([A]), np.array([0.5]), np.array([1]))], truth, 2, [(640, 480)])
    text = format_coco_table(r)
    assert capsys.readouterr().out == ""           # pycocotools' prints are silenced
    for key in COCO_KEYS:
        assert key in text
    assert "n/a" in text and "1.0000" in text      # AP small is undefined here
