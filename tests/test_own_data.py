"""Training on your own data: the folder layouts --voc-root reads, the classes found in them,
the validation split made by hash, the schedule in epochs, and one-line errors (exit 2)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_checks import FAST, fails
from minissd import evaluate, train
from minissd.config import VOC_CLASS_NAMES, tiny
from minissd.data.choice import data_spec, open_split
from minissd.data.folders import find_layout, hash_split
from minissd.data.voc import DataError, VOCDataset
from minissd.metrics import evaluate_detections
from minissd.model import SSD
from minissd.priors import default_boxes
from minissd.training.settings import (SSD300_VOC_RECIPE, TINY_ON_OWN_DATA, TINY_ON_SYNTHETIC,
                                       default_settings, scheduled)
from minissd.training.step import forward_backward



def xml(objects, size=(48, 40)):
    """VOC XML text; objects: (name, (xmin, ymin, xmax, ymax)); size None: no <size>."""
    s = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return f"<annotation>{s}{objs}</annotation>"


def put(folder, stem, objects=(("disc", (5, 5, 30, 30)),), ext=".jpg", xml_folder=None,
        size=(48, 40), write_xml=True):
    """An image <folder>/<stem><ext> and, unless write_xml is False, its same-stem XML."""
    os.makedirs(folder, exist_ok=True)
    fmt = "PNG" if ext.lower() == ".png" else "JPEG"
    Image.new("RGB", (48, 40), (len(stem) * 20 % 255, 90, 30)).save(
        os.path.join(folder, stem + ext), format=fmt)
    if write_xml:
        xf = xml_folder or folder
        os.makedirs(xf, exist_ok=True)
        with open(os.path.join(xf, stem + ".xml"), "w") as f:
            f.write(xml(objects, size))


def flat(root, n=12, names=("disc", "bar")):
    for i in range(n):
        put(str(root), f"img{i:03d}", [(names[i % len(names)], (4, 4, 30, 30))])
    return str(root)


def voc_folder(root, n=10, split_files=True):
    root = str(root)
    for i in range(n):
        put(os.path.join(root, "JPEGImages"), f"{i:04d}", [("car" if i % 2 else "dog",
                                                           (3, 3, 20, 25))],
            xml_folder=os.path.join(root, "Annotations"))
    if split_files:
        main = os.path.join(root, "ImageSets", "Main")
        os.makedirs(main)
        with open(os.path.join(main, "train.txt"), "w") as f:
            f.write("".join(f"{i:04d}\n" for i in range(n - 3)))
        with open(os.path.join(main, "val.txt"), "w") as f:
            f.write("".join(f"{i:04d}\n" for i in range(n - 3, n)))
    return root


# ---------------------------------------------------------------------------- layouts
def test_voc_format_folder_with_split_files(tmp_path):
    spec = data_spec(voc_folder(tmp_path / "v"), "tiny")
    assert (spec["layout"], spec["train"], spec["val"]) == ("voc", ["train"], ["val"])
    tr, va = open_split(spec, "train"), open_split(spec, "val")
    assert (len(tr), len(va)) == (7, 3)
    assert tr.class_names == ("car", "dog")              # VOC names: VOC's order (car < dog)


def test_voc_format_folder_without_split_files_gets_a_hash_split(tmp_path):
    spec = data_spec(voc_folder(tmp_path / "v", n=20, split_files=False), "tiny")
    assert spec["split_made"] and "train" not in spec
    assert sorted(spec["train_ids"] + spec["val_ids"]) == [f"{i:04d}" for i in range(20)]
    assert len(open_split(spec, "val")) == len(spec["val_ids"]) >= 1


def test_devkit(tmp_path):
    root = tmp_path / "VOCdevkit"
    for year, ids in (("2007", ["a", "b"]), ("2012", ["c"])):
        v = root / f"VOC{year}"
        for i in ids:
            put(str(v / "JPEGImages"), i, [("cat", (2, 2, 20, 20))],
                xml_folder=str(v / "Annotations"))
        (v / "ImageSets" / "Main").mkdir(parents=True)
        (v / "ImageSets" / "Main" / "trainval.txt").write_text("".join(i + "\n" for i in ids))
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("b\n")
    spec = data_spec(str(root), "tiny")
    assert spec["train"] == ["2007/trainval", "2012/trainval"] and spec["val"] == ["2007/test"]
    assert len(open_split(spec, "train")) == 3
    assert open_split(spec, "val").class_names == VOC_CLASS_NAMES


def test_flat_export_mixed_case_background_and_no_size(tmp_path):
    root = flat(tmp_path / "f", n=10)
    put(root, "UPPER", ext=".JPG")
    put(root, "shot", ext=".Png", size=None)              # XML without <size>
    put(root, "empty", objects=())                        # XML with no objects
    put(root, "nolabel", ext=".jpeg", write_xml=False)    # no XML: background
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    layout = find_layout(root)
    assert layout.kind == "flat" and len(layout.items) == 14
    ds = VOCDataset(root, splits=("all",))
    assert ds.class_names == ("bar", "disc")              # found, sorted
    by_id = {it.image_id: k for k, it in enumerate(ds.items)}
    assert len(ds[by_id["nolabel"]].boxes) == 0 and len(ds[by_id["empty"]].boxes) == 0
    s = ds[by_id["shot"]]
    assert s.image.shape == (40, 48, 3) and len(s.boxes) == 1
    np.testing.assert_allclose(s.boxes[0], [4 / 48, 4 / 40, 29 / 48, 29 / 40], atol=1e-6)
    assert ds[by_id["UPPER"]].image_id == "UPPER"


def test_flat_export_with_split_subfolders(tmp_path):
    root = tmp_path / "rf"
    flat(root / "train", n=6)
    flat(root / "valid", n=2)
    flat(root / "test", n=3)
    spec = data_spec(str(root), "tiny")
    assert (spec["train"], spec["val"]) == (["train"], ["val"])
    assert [it.image_id for it in open_split(spec, "val").items] == ["valid/img000",
                                                                   "valid/img001"]
    assert len(VOCDataset(str(root), splits=("test",))) == 3
    only_train = tmp_path / "only"
    flat(only_train / "train", n=12)
    spec = data_spec(str(only_train), "tiny")
    assert spec["split_made"] and all(i.startswith("train/") for i in spec["val_ids"])


# ---------------------------------------------------------------------------- classes
def test_labels_txt_wins_then_classes_txt(tmp_path):
    root = flat(tmp_path / "f", n=4)
    (tmp_path / "f" / "classes.txt").write_text("disc\nbar\nextra\n")
    assert data_spec(root, "tiny")["classes"] == ["disc", "bar", "extra"]
    (tmp_path / "f" / "labels.txt").write_text("bar\ndisc\n")
    assert data_spec(root, "tiny")["classes"] == ["bar", "disc"]


def test_classes_flag_overrides_and_must_occur(tmp_path):
    root = flat(tmp_path / "f", n=6)
    spec = data_spec(root, "tiny", classes=("disc",))
    assert spec["classes"] == ["disc"] and spec["drop_other_classes"]
    labels = set()
    for part in ("train", "val"):
        ds = open_split(spec, part)
        for i in range(len(ds)):
            labels |= set(ds[i].labels.tolist())
    assert labels == {1}                               # bar's objects are dropped
    with pytest.raises(DataError, match=r"--classes: wheel does not occur.*bar \(3\)"):
        data_spec(root, "tiny", classes=("disc", "wheel"))


def test_voc_subset_keeps_voc_order_and_others_sort(tmp_path):
    root = flat(tmp_path / "v", n=6, names=("tvmonitor", "aeroplane", "person"))
    assert data_spec(root, "tiny")["classes"] == ["aeroplane", "person", "tvmonitor"]
    root = flat(tmp_path / "o", n=6, names=("zebra", "person", "apple"))
    assert data_spec(root, "tiny")["classes"] == ["apple", "person", "zebra"]


# ---------------------------------------------------------------------------- the split
def test_hash_split_is_deterministic_disjoint_about_a_tenth_and_stable():
    ids = [f"photo_{i:05d}" for i in range(2000)]
    train, val = hash_split(ids)
    assert hash_split(ids[::-1]) == (train[::-1], val[::-1])      # order does not matter
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(ids)
    assert 0.08 < len(val) / len(ids) < 0.12
    more_train, more_val = hash_split(ids + [f"new_{i}" for i in range(500)])
    assert set(val) <= set(more_val) and set(train) <= set(more_train)    # old images stay
    # a small set still gets one validation image, and keeps one for training
    t, v = hash_split(["a", "b", "c"])
    assert len(v) >= 1 and len(t) >= 1
    # not Python's salted hash(): the same in another interpreter
    code = "from minissd.data.folders import hash_split; print(hash_split(%r)[1])" % ids[:200]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert out.strip() == str(hash_split(ids[:200])[1])


# ---------------------------------------------------------------------------- zero boxes
def test_a_training_step_and_metrics_with_a_background_image(rng):
    cfg = tiny(class_names=("a", "b"))
    model = SSD(cfg, rng=0)
    priors = default_boxes(cfg)
    x = rng.standard_normal((2, 3, 128, 128)).astype(np.float32)
    boxes = [np.zeros((0, 4), np.float32), np.array([[0.1, 0.1, 0.6, 0.5]], np.float32)]
    labels = [np.zeros(0, np.int64), np.array([2])]
    loss, loc, conf = forward_backward(model, priors, (x, boxes, labels), cfg)
    assert np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in model.grads.values())
    # both images background only: N = 0 positives still gives a finite loss
    loss, _, _ = forward_backward(model, priors, (x, boxes[:1] * 2, labels[:1] * 2), cfg)
    assert np.isfinite(float(loss))
    dets = [(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), np.array([0.9], np.float32),
             np.array([1])), (boxes[1], np.array([0.8], np.float32), np.array([2]))]
    gts = [{"boxes": b, "labels": l, "difficult": np.zeros(len(l), bool)}
           for b, l in zip(boxes, labels)]
    r = evaluate_detections(dets, gts, 3)
    assert r["ap"][2] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- schedule
def test_schedule_in_epochs_keeps_the_published_lengths():
    s = scheduled(TINY_ON_SYNTHETIC, 6000)
    assert (s.iters, s.batch_size, s.warmup, s.milestones) == (6600, 8, 150, (4950, 6000))
    v = scheduled(SSD300_VOC_RECIPE, 16551)
    assert (v.iters, v.warmup, v.milestones) == (120000, 500, (80000, 100000))
    small = scheduled(TINY_ON_OWN_DATA, 600)              # clamped up to min_iters
    assert small.iters == TINY_ON_OWN_DATA.min_iters and small.optimizer == "adam"
    big = scheduled(TINY_ON_OWN_DATA, 10 ** 6)
    assert big.iters == TINY_ON_OWN_DATA.max_iters
    e = scheduled(TINY_ON_OWN_DATA, 600, epochs=2)        # --epochs: exactly, no clamping
    assert e.iters == 150 and e.milestones == (112, 136)
    assert default_settings("tiny", on_voc=True).optimizer == "adam"
    assert default_settings("ssd300", on_voc=True).optimizer == "sgd"


def test_image_size_scales_the_tiny_config():
    assert tiny(image_size=128) == tiny()
    c = tiny(image_size=256)
    assert c.feature_maps == (64, 32, 16, 8, 4, 3) and c.min_sizes[0] == 20
    loc, _ = SSD(c, rng=0).forward(np.zeros((1, 3, 256, 256), np.float32), keep_cache=False)
    assert loc.shape[1] == len(default_boxes(c)) == c.num_priors()


# ---------------------------------------------------------------------------- end to end
def test_flat_folder_trains_and_evaluate_reuses_the_recorded_split(tmp_path, capsys):
    root = flat(tmp_path / "f", n=24)
    out = tmp_path / "run"
    assert train.main(["--voc-root", root, "--out", str(out)] + FAST) == 0
    err = capsys.readouterr().err
    assert "bar (12), disc (12)" in err and "2 steps of batch 2" not in err
    from minissd.weights import load_checkpoint
    _, meta = load_checkpoint(out / "last.npz")
    spec = meta["data"]
    val = (out / "split_val.txt").read_text().split()
    assert val == spec["val_ids"] and (out / "split_train.txt").read_text().split() == \
        spec["train_ids"]
    assert meta["config"]["class_names"] == ["bar", "disc"]
    # a new image in the folder does not change what evaluate uses without --voc-root
    put(root, "late_addition")
    assert evaluate.main(["--checkpoint", str(out / "last.npz"), "--json", "--device",
                          "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_images"] == len(val) and set(result["ap"]) == {"bar", "disc"}
    # --resume continues on the recorded images too (the folder now has one more)
    assert train.main(["--resume", str(out / "last.npz"), "--iters", "3", "--no-progress",
                       "--workers", "1", "--device", "cpu"]) == 0
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["step"] == 3 and meta["data"] == spec
    assert "late_addition" not in spec["train_ids"] + spec["val_ids"]


# ---------------------------------------------------------------------------- errors


def test_clean_errors_name_the_file_or_flag(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert "nothing: is none of the dataset layouts" in fails(
        ["--voc-root", str(tmp_path / "nothing")], capsys)
    root = voc_folder(tmp_path / "v")
    with open(os.path.join(root, "ImageSets", "Main", "val.txt"), "a") as f:
        f.write("lost1\nlost2\n")
    assert "val.txt: 2 of its 5 images are missing (lost1, lost2)" in fails(
        ["--voc-root", root], capsys)
    small = flat(tmp_path / "s", n=6)
    err = fails(["--voc-root", small, "--batch-size", "64"], capsys)
    assert "--batch-size: 64 is larger than the training set (" in err and "images in" in err
    assert "--classes: wheel does not occur" in fails(
        ["--voc-root", small, "--classes", "disc,wheel"], capsys)
    assert "--image-size" in fails(["--image-size", "400", "--config", "ssd300"], capsys)
    assert "--iters: invalid int value" in fails(["--iters", "many"], capsys)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    assert "--resume: " in fails(["--resume", str(bad)], capsys)
    assert "bad.npz: not a readable" in fails(["--checkpoint", str(bad)], capsys, evaluate)


def test_errors_in_a_subprocess_have_no_traceback(tmp_path):
    put(str(tmp_path), "im")
    # --device cpu: with CuPy installed and no GPU, --device auto adds its one-line notice
    for argv in (["minissd.train", "--voc-root", str(tmp_path / "missing")],
                 ["minissd.detect", "--checkpoint", str(tmp_path / "x.npz"),
                  str(tmp_path / "im.jpg"), "--out", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", *argv, "--device", "cpu"],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and argv[2] in r.stderr


def test_a_corrupt_pretrained_vgg_is_one_line(tmp_path, capsys):
    # torchfile's CheckpointError is the one the commands catch (it was a second class once,
    # and train --pretrained-vgg on a broken file ended in a traceback)
    bad = tmp_path / "vgg16.pth"
    bad.write_bytes(b"garbage")
    line = fails(["--config", "ssd300", "--pretrained-vgg", str(bad), "--iters", "1",
                   "--procs", "1", "--device", "cpu", "--num-train", "4", "--num-val", "2",
                   "--batch-size", "2"],
                  capsys)
    assert "vgg16.pth: cannot read this PyTorch checkpoint" in line
