"""The synthetic VOC-format set: deterministic bytes, readable by VOCDataset, cached safely."""
import os

import numpy as np
import pytest

from minissd.data import synthetic
from minissd.data.voc import VOCDataset


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(synthetic.generate(tmp_path / "a", num_train=6, num_val=2, image_size=64, seed=3))
    b = _files(synthetic.generate(tmp_path / "b", num_train=6, num_val=2, image_size=64, seed=3))
    c = _files(synthetic.generate(tmp_path / "c", num_train=6, num_val=2, image_size=64, seed=4))
    assert len(a) == 8 + 8 + 2 + 1           # jpgs, xmls, train/val lists, labels.txt
    assert a == b
    assert a["JPEGImages/000000.jpg"] != c["JPEGImages/000000.jpg"]


def test_readable_by_voc_reader_with_sane_objects(tmp_path):
    root = synthetic.generate(tmp_path / "s", num_train=60, num_val=4, image_size=96, seed=0)
    train = VOCDataset(root, splits=("train",), keep_difficult=True)
    val = VOCDataset(root, splits=("val",))
    assert len(train) == 60 and len(val) == 4
    assert train.class_names == synthetic.CLASSES
    sides, labels = [], []
    for i in range(len(train)):
        s = train[i]
        assert s.image.shape == (96, 96, 3)
        assert ((s.boxes >= 0) & (s.boxes <= 1)).all()
        assert ((s.boxes[:, 2] > s.boxes[:, 0]) & (s.boxes[:, 3] > s.boxes[:, 1])).all()
        sides += list(np.sqrt((s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])))
        labels += list(s.labels)
        # A box holds a drawn shape, so its pixels are not one flat colour.
        for b in s.boxes:
            x0, y0, x1, y1 = (b * 95).round().astype(int)
            patch = s.image[y0:y1 + 1, x0:x1 + 1].astype(float)
            assert patch.std() > 3
    sides = np.array(sides)
    assert set(labels) == set(range(1, 7))                   # every class appears
    assert ((sides >= 0.1) & (sides <= 0.6)).mean() > 0.5    # most objects mid-sized
    assert sides.min() < 0.1 and sides.max() > 0.6           # and some small, some large


def test_ensure_synthetic_caches_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("MINISSD_CACHE", str(tmp_path / "cache"))
    root = synthetic.ensure_synthetic(4, 2, 48, seed=1, progress=False)
    assert root == synthetic.default_root(4, 2, 48, 1)
    assert root.startswith(str(tmp_path / "cache"))
    stamp = os.path.getmtime(os.path.join(root, "labels.txt"))
    assert synthetic.ensure_synthetic(4, 2, 48, seed=1, progress=False) == root
    assert os.path.getmtime(os.path.join(root, "labels.txt")) == stamp      # reused
    assert synthetic.default_root(4, 2, 48, 2) != root
    # no temporary folder left behind, and an interrupted generation leaves nothing usable
    assert [n for n in os.listdir(tmp_path / "cache") if n.startswith(".tmp")] == []

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(synthetic, "_render", boom)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic(5, 2, 48, seed=1, progress=False)
    assert not os.path.exists(synthetic.default_root(5, 2, 48, 1))
    assert [n for n in os.listdir(tmp_path / "cache") if n.startswith(".tmp")] == []


def test_command_line(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path / "cli"), "--num-train", "3", "--num-val",
                           "1", "--image-size", "40", "--seed", "5"]) == 0
    assert "3 train + 1 val" in capsys.readouterr().out
    assert len(VOCDataset(str(tmp_path / "cli"), splits=("train",))) == 3


def test_box_is_the_visible_area_as_voc_asks():
    """VOC guidelines: the box of the visible area, not the estimated total extent; truncated
    when much of the object lies outside it."""
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True                            # a 6x6 square, pixels 2..7
    seen = mask.copy()
    seen[:, 5:] = False                              # a later shape hides columns 5..9
    assert synthetic._visible_box(seen, mask) == ((2, 2, 4, 7), True)
    seen = mask.copy()
    seen[7, 7] = False                               # one hidden corner: same box
    assert synthetic._visible_box(seen, mask) == ((2, 2, 7, 7), False)
    seen[:, 3:] = False                              # one column left: no VOC box
    assert synthetic._visible_box(seen, mask) is None
    seen[:] = False                                  # hidden entirely: no VOC box
    assert synthetic._visible_box(seen, mask) is None
