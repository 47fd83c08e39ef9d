"""TIDE's error types (minissd.analysis.errors): hand-built cases, each error type once with
the mAP its fix adds worked out by hand, and random sets against the `tidecv` package
(pip install tidecv; skipped without it)."""
import numpy as np
import pytest

from minissd.analysis.errors import ap101, tide_errors

A = [0.1, 0.1, 0.3, 0.3]                   # a box, and boxes at known IoU with it
A_IOU_09 = [0.1, 0.1, 0.3, 0.3 * 0.9 + 0.1 * 0.1]     # inside A, 90% of its height
A_IOU_03 = [0.1, 0.1, 0.3, 0.16]                      # 30% of A's height: IoU 0.3
FAR = [0.7, 0.7, 0.9, 0.9]


def image(dets, gts):
    """dets: [(box, score, label)], gts: [(box, label)] -> (detection, ground truth)."""
    b = np.array([d[0] for d in dets], float).reshape(-1, 4)
    s = np.array([d[1] for d in dets], float)
    lab = np.array([d[2] for d in dets], np.int64)
    return (b, s, lab), {"boxes": np.array([g[0] for g in gts], float).reshape(-1, 4),
                         "labels": np.array([g[1] for g in gts], np.int64)}


def run(*images):
    return tide_errors([d for d, _ in images], [g for _, g in images])


def test_each_type_once():
    r = run(image([(A, 0.9, 1), (A_IOU_03, 0.8, 1), (A_IOU_09, 0.7, 1), (A_IOU_09, 0.6, 2),
                   (FAR, 0.5, 1), (A_IOU_03, 0.4, 2)],
                  [(A, 1), ([0.5, 0.1, 0.6, 0.2], 1)]))
    # A is found (0.9); 0.8 overlaps A by 0.3 (Loc, on a matched box: its fix removes it);
    # 0.7 is a second detection of A (Dupe); 0.6 has the wrong class (Cls); 0.5 lies on no
    # box (Bkg); 0.4 has the wrong class at IoU 0.3 (Both); the second box is missed
    assert r.counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1, "Miss": 1}
    assert [e.score for e in sorted(r.errors, key=lambda e: -e.score)] == \
        [0.8, 0.7, 0.6, 0.5, 0.4, 0.0]
    assert not any(e.free for e in r.errors)


def test_known_daps():
    # background: a false positive above a true positive halves the AP; removing it fixes it
    r = run(image([(FAR, 0.95, 1), (A, 0.9, 1)], [(A, 1)]))
    assert r.map == pytest.approx(0.5)
    assert r.counts["Bkg"] == 1
    assert r.dap["Bkg"] == pytest.approx(0.5) and r.dap["FP"] == pytest.approx(0.5)
    assert r.dap["Loc"] == r.dap["Cls"] == r.dap["Miss"] == 0
    # localisation: the only detection at IoU 0.3; fixing it finds the box (the box is not
    # "missed": the fix recovers it)
    r = run(image([(A_IOU_03, 0.9, 1)], [(A, 1)]))
    assert r.map == 0 and r.counts["Loc"] == 1 and r.counts["Miss"] == 0
    assert r.dap["Loc"] == pytest.approx(1.0)
    # classification: class 1 on a box of class 2; fixed, it is a true positive of class 2
    # and class 1 (no ground truth, no detection left) leaves the mean
    r = run(image([(A_IOU_09, 0.9, 1)], [(A, 2)]))
    assert r.counts["Cls"] == 1 and r.map == 0 and r.dap["Cls"] == pytest.approx(1.0)
    # duplicate: the second detection of the same box
    r = run(image([(A, 0.9, 1), (A_IOU_09, 0.8, 1), (FAR, 0.7, 1)], [(A, 1), (FAR, 1)]))
    assert r.counts["Dupe"] == 1 and r.counts["Miss"] == 0
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: the envelope is 1 up to 1/2, 2/3 beyond
    assert r.map == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert r.dap["Dupe"] == pytest.approx(1 - r.map)
    # missed: one box found, one not; not counting it gives AP 1
    r = run(image([(A, 0.9, 1)], [(A, 1), (FAR, 1)]))
    assert r.counts["Miss"] == 1 and r.map == pytest.approx(51 / 101)
    assert r.dap["Miss"] == pytest.approx(1 - 51 / 101) == pytest.approx(r.dap["FN"])
    # an image without ground truth: every detection is background
    r = run(image([(A, 0.9, 1)], [(A, 1)]), image([(A, 0.95, 1)], []))
    assert r.counts["Bkg"] == 1 and r.dap["Bkg"] == pytest.approx(0.5)


def test_both_and_the_highest_scoring_fix_wins():
    # class 2 at IoU 0.3 with a class-1 box: wrong class and badly placed
    r = run(image([(A_IOU_03, 0.9, 2)], [(A, 1)]))
    assert r.counts["Both"] == 1 and r.counts["Miss"] == 1
    # two Loc errors on one free box: fixing recovers ONE true positive (the higher score),
    # the other vanishes
    r = run(image([(A_IOU_03, 0.9, 1), (A_IOU_03, 0.8, 1)], [(A, 1)]))
    assert r.counts["Loc"] == 2 and r.dap["Loc"] == pytest.approx(1.0)


def test_difficult_boxes_are_ignored_regions():
    det, gt = image([(A, 0.9, 1), (FAR, 0.8, 1)], [(A, 1), (FAR, 1)])
    gt["difficult"] = np.array([False, True])
    r = tide_errors([det], [gt])
    assert r.num_gt == {1: 1} and r.map == pytest.approx(1.0) and not r.errors


def test_ap101_by_hand():
    assert ap101([0.9, 0.8], [True, True], 2) == pytest.approx(1.0)
    assert ap101([0.9, 0.8], [False, True], 1) == pytest.approx(0.5)
    assert ap101([], [], 3) == 0 and ap101([0.5], [True], 0) == 0


def random_set(rng, images=25, classes=3):
    dets, gts = [], []
    for _ in range(images):
        g = int(rng.integers(0, 5))
        wh = rng.uniform(0.05, 0.4, (g, 2))
        xy = rng.uniform(0, 1, (g, 2)) * (1 - wh)
        gb = np.concatenate([xy, xy + wh], 1)
        gl = rng.integers(1, classes + 1, g)
        boxes, labels = [], []
        for b, lab in zip(gb, gl):                  # near-copies, shifted, relabelled
            for _ in range(int(rng.integers(0, 4))):
                jitter = rng.normal(0, rng.choice([0.01, 0.05, 0.15]), 4) * (b[2] - b[0])
                boxes.append(np.clip(b + jitter, 0, 1))
                labels.append(lab if rng.random() < 0.8 else rng.integers(1, classes + 1))
        for _ in range(int(rng.integers(0, 3))):     # background
            w = rng.uniform(0.05, 0.3, 2)
            x = rng.uniform(0, 1 - w)
            boxes.append(np.concatenate([x, x + w]))
            labels.append(rng.integers(1, classes + 1))
        b = np.array(boxes).reshape(-1, 4)
        ok = (b[:, 2] > b[:, 0] + 1e-3) & (b[:, 3] > b[:, 1] + 1e-3)
        dets.append((b[ok], rng.uniform(0, 1, len(b))[ok], np.array(labels, np.int64)[ok]))
        gts.append({"boxes": gb, "labels": gl})
    return dets, gts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_tidecv(seed):
    tidecv = pytest.importorskip("tidecv", reason="pip install tidecv")
    rng = np.random.default_rng(seed)
    dets, gts = random_set(rng)
    gt_data, pred_data = tidecv.Data("gt"), tidecv.Data("pred")
    for i, ((b, s, lab), g) in enumerate(zip(dets, gts)):
        gt_data.add_image(i, str(i))                  # images without objects count too
        for box, label in zip(g["boxes"] * 100, g["labels"]):
            gt_data.add_ground_truth(i, int(label), [box[0], box[1], box[2] - box[0],
                                                     box[3] - box[1]])
        for box, score, label in zip(b * 100, s, lab):
            pred_data.add_detection(i, int(label), float(score),
                                    [box[0], box[1], box[2] - box[0], box[3] - box[1]])
    tide = tidecv.TIDE()
    tide.evaluate(gt_data, pred_data, mode=tidecv.TIDE.BOX)
    run_ = tide.runs["pred"]
    main = {k.short_name: v for k, v in run_.fix_main_errors().items()}
    special = {k.short_name: v for k, v in run_.fix_special_errors().items()}
    counts = {k.short_name: v for k, v in run_.count_errors().items()}
    ours = tide_errors(dets, [dict(g) for g in gts])
    assert 100 * ours.map == pytest.approx(run_.ap, abs=1e-6)
    assert ours.counts == counts
    for kind in ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"):
        assert 100 * ours.dap[kind] == pytest.approx(main[kind], abs=1e-6), kind
    assert 100 * ours.dap["FP"] == pytest.approx(max(special["FalsePos"], 0), abs=1e-6)
    assert 100 * ours.dap["FN"] == pytest.approx(max(special["FalseNeg"], 0), abs=1e-6)


def test_best_f1_and_confusion_by_hand():
    from minissd.analysis.confusion import best_f1, confusion_matrix
    f1 = best_f1({1: [(0.9, True), (0.8, False), (0.7, True), (0.1, False)]}, {1: 3})
    # cut at 0.9: P 1, R 1/3, F1 0.5; at 0.7: P 2/3, R 2/3, F1 2/3 (the best)
    assert f1[1] == pytest.approx((0.7, 2 / 3, 2 / 3, 2 / 3))
    det, gt = image([(A, 0.9, 1), (A_IOU_09, 0.8, 2), (FAR, 0.7, 2), (FAR, 0.05, 1)],
                    [(A, 1), (FAR, 2), ([0.4, 0.4, 0.5, 0.5], 1)])
    C = confusion_matrix([det], [gt], 3, {1: 0.5, 2: 0.5})
    # A -> class 1 (IoU 1 beats the class-2 detection at 0.9, which is then a false alarm);
    # FAR -> class 2; the third box is missed; the 0.05 detection is below its threshold
    assert C.tolist() == [[0, 0, 1], [1, 1, 0], [0, 0, 1]]


def test_evaluate_errors_end_to_end(tmp_path, capsys):
    import json
    import os

    from cli_checks import FAST
    from minissd import evaluate, train
    from test_inspect import problem_folder
    root = problem_folder(tmp_path / "data")
    run = str(tmp_path / "run")
    with pytest.warns(UserWarning):
        train.main(["--voc-root", root, "--out", run] + FAST)
        evaluate.main(["--checkpoint", os.path.join(run, "last.npz"), "--errors", "--json",
                       "--metric", "voc07", "--out", run])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    e = out["errors"]
    assert set(e["dap"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FP", "FN"}
    C = np.array(e["confusion"])
    assert C.shape == (3, 3) and C[1:].sum() == 1          # the one validation object
    assert os.path.getsize(os.path.join(run, "errors.png")) > 1000
    assert json.load(open(os.path.join(run, "errors.json")))["counts"] == e["counts"]
