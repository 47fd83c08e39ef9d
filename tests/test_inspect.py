"""python -m minissd.inspect and minissd.analysis: the best IoU of every object with any default
box against a brute-force loop, the recall ceiling by size and class against counting by hand,
tiles, the default-box fit, the annotation problems found, and the command's report and
one-line errors."""
import json
import os

import numpy as np
import pytest

from cli_checks import fails
from minissd import inspect as inspect_cmd
from minissd.analysis.advice import pick_size, tile_boxes
from minissd.analysis.coverage import (SIZE_BINS, best_prior_iou, best_prior_iou_loop,
                                       object_sides, recall_ceiling)
from minissd.analysis.dataset import collect
from minissd.analysis.fit import apply_boxes, boxes_dict, fit_default_boxes, score, with_boxes
from minissd.config import ssd300, tiny
from minissd.data.voc import VOCDataset
from minissd.model import SSD
from minissd.priors import default_boxes
from test_own_data import put


def random_boxes(rng, n, lo=0.02, hi=0.8):
    wh = rng.uniform(lo, hi, (n, 2))
    xy = rng.uniform(0, 1, (n, 2)) * (1 - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def test_best_prior_iou_matches_the_loop_on_tiny_default_boxes(rng):
    priors = default_boxes(tiny())
    gt = np.concatenate([random_boxes(rng, 12, 0.01, 0.9), random_boxes(rng, 4, 0.03, 0.08)])
    best, index = best_prior_iou(gt, priors, chunk=5)              # several chunks
    ref, ref_index = best_prior_iou_loop(gt, priors)
    np.testing.assert_allclose(best, ref, rtol=1e-6, atol=1e-7)
    # the index names a box with that IoU (a tie may pick another box than the loop's)
    got = [best_prior_iou_loop(g[None], priors[i][None])[0][0] for g, i in zip(gt, index)]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert (best > 0).all() and ref_index.shape == (16,)


def test_an_object_equal_to_a_default_box_has_iou_one_and_empty_input_is_empty():
    priors = default_boxes(tiny())
    p = priors[1234].astype(np.float64)
    gt = np.array([[p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2]])
    best, _ = best_prior_iou(gt, priors)
    assert best[0] == pytest.approx(1.0, abs=1e-6)
    best, index = best_prior_iou(np.zeros((0, 4)), priors)
    assert best.shape == (0,) and index.shape == (0,)


def test_recall_ceiling_by_size_and_class_counts_like_a_loop(rng):
    config = tiny()
    priors = default_boxes(config)
    gt = np.concatenate([random_boxes(rng, 30, 0.02, 0.9), random_boxes(rng, 10, 0.01, 0.06)])
    labels = rng.integers(1, 4, len(gt))
    c = recall_ceiling(gt, labels, priors, config.image_size, threshold=0.5)
    ref, _ = best_prior_iou_loop(gt, priors)
    reached = [v >= 0.5 for v in ref]
    assert c.overall == pytest.approx(sum(reached) / len(gt))
    sides = [np.sqrt((b[2] - b[0]) * (b[3] - b[1])) * config.image_size for b in gt]
    expected = []
    for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        inside = [r for r, s in zip(reached, sides) if lo <= s < hi]
        if inside:
            expected.append((len(inside), sum(inside) / len(inside)))
    assert [(n, pytest.approx(v)) for _, n, v in c.by_size] == expected
    for k in (1, 2, 3):
        mine = [r for r, lab in zip(reached, labels) if lab == k]
        assert c.by_class[k] == (len(mine), pytest.approx(sum(mine) / len(mine)))
    # objects smaller than the smallest box are what the ceiling misses first
    assert min(v for _, _, v in c.by_size) < 1.0


def test_tile_boxes_by_hand():
    # a 1000x500 image cut into 400-pixel tiles: x origins 0, 400, 600 (the last moved back),
    # y origin 0 with a tile height of 400
    boxes = np.array([[0.45, 0.1, 0.5, 0.2], [0.95, 0.5, 1.0, 0.6], [0.38, 0.0, 0.42, 0.1]])
    sizes = np.array([[1000, 500]])
    got = tile_boxes(boxes, np.zeros(3, np.int64), sizes, 400)
    np.testing.assert_allclose(got[0], [50 / 400, 50 / 400, 100 / 400, 100 / 400])
    np.testing.assert_allclose(got[1], [(950 - 600) / 400, 250 / 400, 1.0, 300 / 400])
    # centre x = 400 -> the tile at 400; the part left of it is clipped away
    np.testing.assert_allclose(got[2], [0.0, 0.0, 20 / 400, 50 / 400])
    # tiles larger than the image: the image itself
    np.testing.assert_allclose(tile_boxes(boxes, np.zeros(3, np.int64), sizes, 2000), boxes)


def test_pick_size_is_the_smallest_good_enough():
    rows = [(96, 0.80, 0.30, 0.6), (128, 0.90, 0.10, 1.0), (160, 0.905, 0.03, 1.6),
            (256, 0.91, 0.0, 4.0)]
    assert pick_size(rows) == 160
    assert pick_size([(96, 0.5, 0.5, 1), (128, 0.6, 0.4, 1)]) == 128


def test_fit_lifts_the_ceiling_of_small_and_elongated_objects_and_builds(rng):
    config = tiny(num_classes=3)
    small = random_boxes(rng, 150, 0.02, 0.05)                          # 2.5-6.4 px at 128
    long = random_boxes(rng, 150, 0.05, 0.1)
    long[:, 2] = np.minimum(long[:, 0] + 5 * (long[:, 3] - long[:, 1]), 1.0)   # w = 5 h
    gt = np.concatenate([small, long])
    fit = fit_default_boxes(config, gt)
    assert fit.before == pytest.approx(score(config, gt)[0])
    assert fit.after == pytest.approx(score(fit.config, gt)[0])
    assert fit.after > fit.before + 0.2
    assert any(4 in r or 5 in r or 3 in r for r in fit.config.aspect_ratios)
    SSD(fit.config)                                            # heads follow mbox
    assert default_boxes(fit.config).shape[0] == fit.config.num_priors()
    # a fit never makes the ceiling worse, here on objects the default boxes fit well
    good = fit_default_boxes(config, random_boxes(rng, 100, 0.2, 0.5), ratios=False)
    assert good.after >= good.before
    # recorded as a dict and applied again (also at another input side: sizes scale)
    d = dict(boxes_dict(fit.config), image_size=128)
    again = apply_boxes(tiny(num_classes=3), d)
    np.testing.assert_array_equal(default_boxes(again), default_boxes(fit.config))
    bigger = apply_boxes(tiny(num_classes=3, image_size=256), d)
    assert bigger.min_sizes[0] == pytest.approx(2 * fit.config.min_sizes[0])
    assert apply_boxes(config, None) is config


def test_with_boxes_keeps_ssd300_when_nothing_changes():
    c = ssd300()
    np.testing.assert_array_equal(default_boxes(with_boxes(c)), default_boxes(c))


def problem_folder(root):
    """A VOC-format folder with one of each problem: a box past the border, two boxes of one
    object, an image without objects, a rare class; and a fine image."""
    img, ann = os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations")
    put(img, "a", [("disc", (5, 5, 30, 30))], xml_folder=ann)
    put(img, "b", [("disc", (20, 10, 60, 35))], xml_folder=ann)            # xmax > 48
    put(img, "c", [("disc", (5, 5, 30, 30)), ("disc", (5, 5, 30, 31))], xml_folder=ann)
    put(img, "d", [], xml_folder=ann)
    put(img, "e", [("bar", (2, 2, 10, 30))], xml_folder=ann)
    put(img, "f", [("disc", (3, 3, 40, 30))], xml_folder=ann)
    main = os.path.join(root, "ImageSets", "Main")
    os.makedirs(main)
    with open(os.path.join(main, "train.txt"), "w") as f:
        f.write("a\nb\nc\nd\ne\n")
    with open(os.path.join(main, "val.txt"), "w") as f:
        f.write("f\n")
    return str(root)


def test_collect_finds_each_problem(tmp_path):
    root = problem_folder(tmp_path / "p")
    ds = VOCDataset(root, splits=("train",), classes=("disc", "bar"))
    with pytest.warns(UserWarning):
        o = collect(ds, "train")
    kinds = sorted((p.kind, p.where) for p in o.problems)
    assert kinds == [("duplicate", "c"), ("empty", "d"), ("outside", "b")]
    assert o.boxes.shape == (5, 4) and list(o.labels) == [1, 1, 1, 1, 2]
    assert list(o.image) == [0, 1, 2, 2, 4] and tuple(o.sizes[0]) == (48, 40)


def test_the_command_writes_its_report(tmp_path, capsys):
    root = problem_folder(tmp_path / "p")
    out = str(tmp_path / "rep")
    with pytest.warns(UserWarning):
        assert inspect_cmd.main(["--voc-root", root, "--out", out, "--worst", "2"]) == 0
    text = capsys.readouterr().out
    assert "recall ceiling:" in text and "duplicate: 1" in text and "few:" in text
    r = json.load(open(os.path.join(out, "report.json")))
    assert r["objects"] == {"train": 5, "val": 1}
    assert r["counts"]["train"] == {"disc": 4, "bar": 1}
    assert {p["kind"] for p in r["problems"]} == {"duplicate", "empty", "outside", "few"}
    assert 0 <= r["ceiling"] <= 1 and r["fit"]["after"] >= r["fit"]["before"]
    for png in ("sizes.png", "worst_covered.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000


def test_the_command_fails_in_one_line(tmp_path, capsys):
    assert "no data given" in fails([], capsys, inspect_cmd)
    assert "--image-size" in fails(["--voc-root", problem_folder(tmp_path / "p"),
                                    "--config", "ssd300", "--image-size", "200"],
                                   capsys, inspect_cmd)
    assert "does not exist" in fails(["--voc-root", str(tmp_path / "nope")], capsys,
                                     inspect_cmd)
    assert "--threshold" in fails(["--voc-root", "x", "--threshold", "1.5"], capsys,
                                  inspect_cmd)


def test_yolo_and_coco_folders_give_the_same_counts(tmp_path, capsys):
    from minissd.data.synthetic import generate, write_coco_files, write_yolo_files
    root = generate(str(tmp_path / "syn"), num_train=6, num_val=2, image_size=64, seed=3)
    yolo = write_yolo_files(root)
    train_json, val_json = write_coco_files(root)
    images = os.path.join(root, "JPEGImages")
    out = {}
    for kind, flags in (("voc", ["--voc-root", root]), ("yolo", ["--yolo-root", yolo]),
                        ("coco", ["--coco-root", images, "--coco-ann", train_json,
                                  "--coco-val-ann", val_json])):
        assert inspect_cmd.main(flags + ["--out", str(tmp_path / kind), "--no-fit",
                                         "--worst", "0"]) == 0
        out[kind] = json.load(open(tmp_path / kind / "report.json"))
    capsys.readouterr()
    # YOLO has no difficult flag (those objects are left out in both readers' training view)
    assert out["voc"]["counts"] == out["yolo"]["counts"] == out["coco"]["counts"]
    assert out["voc"]["ceiling"] == pytest.approx(out["yolo"]["ceiling"], abs=0.02)
    assert out["voc"]["ceiling"] == pytest.approx(out["coco"]["ceiling"], abs=0.02)
    assert "not several" in fails(["--voc-root", root, "--yolo-root", yolo], capsys,
                                  inspect_cmd)


def test_train_fit_boxes_goes_into_the_checkpoint(tmp_path, capsys):
    import shape_sets
    from cli_checks import FAST
    from minissd import evaluate, train
    from minissd.training.checkpoint import load_run_checkpoint
    root = shape_sets.generate(str(tmp_path / "long"), "elongated", num_train=12, num_val=3,
                               size=128, seed=1)
    plain, fitted = str(tmp_path / "plain"), str(tmp_path / "fitted")
    train.main(["--voc-root", root, "--out", plain] + FAST)
    assert "recall ceiling:" in capsys.readouterr().err
    train.main(["--voc-root", root, "--out", fitted, "--fit-boxes"] + FAST)
    err = capsys.readouterr().err
    assert "--fit-boxes: default boxes fitted" in err and "recall ceiling:" in err
    _, meta_plain = load_run_checkpoint(os.path.join(plain, "last.npz"))
    _, meta = load_run_checkpoint(os.path.join(fitted, "last.npz"))
    # without the flag the boxes are tiny's own; with it they are the fitted ones, recorded
    assert tuple(map(tuple, meta_plain["config"]["aspect_ratios"])) == tiny().aspect_ratios
    assert list(meta_plain["config"]["min_sizes"]) == list(tiny().min_sizes)
    assert meta["settings"]["fit_boxes"] is True
    assert meta["config"]["min_sizes"] != meta_plain["config"]["min_sizes"] or \
        meta["config"]["aspect_ratios"] != meta_plain["config"]["aspect_ratios"]
    # evaluate rebuilds the network with the recorded boxes
    assert evaluate.main(["--checkpoint", os.path.join(fitted, "last.npz"), "--metric",
                          "voc07", "--out", fitted]) == 0


def test_train_image_size_auto(tmp_path, capsys):
    import shape_sets
    from cli_checks import FAST
    from minissd import train
    from minissd.training.checkpoint import load_run_checkpoint
    root = shape_sets.generate(str(tmp_path / "poly"), "polygons", num_train=10, num_val=3,
                               size=300, seed=2)
    out = str(tmp_path / "run")
    train.main(["--voc-root", root, "--out", out, "--image-size", "auto"] + FAST)
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "--image-size auto:" in ln)
    size = int(line.split("auto: ")[1].split(" px")[0])
    _, meta = load_run_checkpoint(os.path.join(out, "last.npz"))
    assert meta["config"]["image_size"] == size == meta["settings"]["image_size"]
    assert "auto needs --config tiny" in fails(["--image-size", "auto"] + FAST, capsys, train)
    assert "or auto" in fails(["--image-size", "big"] + FAST, capsys, train)
