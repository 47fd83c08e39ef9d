"""The YOLO reader (minissd/data/yolo.py) and --yolo-root in train and evaluate.

The synthetic set written in all three formats gives the same boxes through the VOC, COCO and
YOLO readers; data.yaml's variants (names as a list or a dict, Roboflow's "../train/images",
a .txt list of images) and a flat images/ + labels/ folder are read; each malformed line ends
the command with one line naming the file and the line number.
"""
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("yaml", reason="pip install pyyaml")

from minissd import evaluate, train  # noqa: E402
from minissd.data.coco import COCODataset  # noqa: E402
from minissd.data.synthetic import CLASSES, generate, write_coco_files, write_yolo_files  # noqa: E402
from minissd.data.voc import DataError, VOCDataset  # noqa: E402
from minissd.data.yolo import YOLODataset, label_path, yolo_spec  # noqa: E402

from cli_checks import FAST, fails  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn"))
    generate(root, num_train=8, num_val=4, image_size=64, seed=3)
    write_coco_files(root)
    write_yolo_files(root)
    return root


def test_same_boxes_through_voc_coco_and_yolo(synthetic):
    for split in ("train", "val"):
        voc = VOCDataset(synthetic, splits=(split,))
        coco = COCODataset(os.path.join(synthetic, "JPEGImages"),
                           os.path.join(synthetic, f"coco_{split}.json"))
        yolo = YOLODataset(os.path.join(synthetic, "yolo"), split)
        assert voc.class_names == coco.class_names == yolo.class_names == CLASSES
        assert len(voc) == len(coco) == len(yolo)
        objects = 0
        for i in range(len(voc)):
            a, b, c = voc[i], coco[i], yolo[i]
            assert c.image_id == f"images/{split}/{a.image_id}"
            np.testing.assert_array_equal(a.image, c.image)
            for other in (b, c):
                np.testing.assert_array_equal(other.labels, a.labels)
                np.testing.assert_allclose(other.boxes, a.boxes, atol=2e-6)
            objects += len(a.labels)
        assert objects > 0


def _yolo_folder(tmp_path, synthetic, yaml_text=None, roboflow=False):
    """A YOLO folder copied from the synthetic one, with another data.yaml."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(synthetic, "yolo"), root)
    if roboflow:                              # train/images, train/labels, ...
        for split in ("train", "val"):
            os.makedirs(root / split)
            for sub in ("images", "labels"):
                os.rename(root / sub / split, root / split / sub)
    if yaml_text is not None:
        (root / "data.yaml").write_text(yaml_text)
    return str(root)


@pytest.mark.parametrize("yaml_text", [
    "train: images/train\nval: images/val\nnames: [circle, square, triangle, star, cross, ring]\n",
    "path: .\ntrain: [images/train]\nval: images/val\nnc: 6\nnames:\n  0: circle\n  1: square\n"
    "  2: triangle\n  3: star\n  4: cross\n  5: ring\n",
])
def test_data_yaml_names_as_list_or_dict(tmp_path, synthetic, yaml_text):
    root = _yolo_folder(tmp_path, synthetic, yaml_text)
    ds = YOLODataset(root, "val")
    assert ds.class_names == CLASSES and len(ds) == 4
    assert "train_ids" not in yolo_spec(root)


def test_roboflow_paths_and_txt_lists(tmp_path, synthetic):
    root = _yolo_folder(tmp_path, synthetic, "train: ../train/images\nval: val.txt\n"
                        "names: [circle, square, triangle, star, cross, ring]\n", roboflow=True)
    val = sorted(os.listdir(os.path.join(root, "val", "images")))
    with open(os.path.join(root, "val.txt"), "w") as f:
        f.write("".join(f"val/images/{name}\n" for name in val))
    train_set, val_set = YOLODataset(root, "train"), YOLODataset(root, "val")
    assert len(train_set) == 8 and len(val_set) == 4
    assert label_path(os.path.join("x", "train", "images", "a.jpg")) == \
        os.path.join("x", "train", "labels", "a.txt")
    assert sum(len(train_set.annotation(i).labels) for i in range(8)) > 0


def test_flat_folder_with_classes_txt_is_split_by_hash(tmp_path, synthetic):
    root = tmp_path / "flat"
    for sub in ("images", "labels"):
        os.makedirs(root / sub)
        for split in ("train", "val"):
            for name in os.listdir(os.path.join(synthetic, "yolo", sub, split)):
                shutil.copy(os.path.join(synthetic, "yolo", sub, split, name), root / sub / name)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    os.remove(root / "labels" / "000000.txt")               # a background image
    spec = yolo_spec(str(root))
    assert len(spec["train_ids"]) + len(spec["val_ids"]) == 12
    ds = YOLODataset(str(root), ids=["images/000000"], classes=CLASSES)
    assert len(ds[0].labels) == 0 and ds[0].boxes.shape == (0, 4)


@pytest.mark.parametrize("line, problem", [
    ("0 0.5 0.5 0.2", "4 fields"),
    ("0 0.5 0.5 0.2 0.2 0.1", "6 fields"),
    ("0 0.5 1.5 0.2 0.2", "normalised to 0..1"),
    ("0 0.5 0.5 nan 0.2", "normalised to 0..1"),
    ("6 0.5 0.5 0.2 0.2", "class id 6"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1"),
    ("cat 0.5 0.5 0.2 0.2", "not 'class cx cy w h'"),
    ("0 0.5 0.5 0 0.2", "zero width"),
])
def test_a_malformed_line_is_one_error_with_file_and_line(tmp_path, synthetic, capsys, line,
                                                           problem):
    root = _yolo_folder(tmp_path, synthetic)
    bad = os.path.join(root, "labels", "train", "000002.txt")
    with open(bad, "a") as f:
        f.write("\n" + line + "\n")
    n = len(open(bad).read().splitlines())
    with pytest.raises(DataError, match=problem):
        yolo_spec(root)
    error = fails(["--yolo-root", root, "--out", str(tmp_path / "run")] + FAST, capsys)
    assert f"{bad}, line {n}: " in error and problem in error


def test_train_and_evaluate_on_a_yolo_folder(tmp_path, synthetic, capsys):
    root = os.path.join(synthetic, "yolo")
    out = str(tmp_path / "run")
    assert train.main(["--yolo-root", root, "--out", out, "--image-size", "96"] + FAST) \
        in (0, None)
    assert os.path.isfile(os.path.join(out, "last.npz"))
    assert evaluate.main(["--checkpoint", os.path.join(out, "last.npz"), "--yolo-root", root,
                          "--json", "--metric", "voc07", "--out", str(tmp_path)]) in (0, None)
    assert '"map"' in capsys.readouterr().out
    error = fails(["--yolo-root", root, "--voc-root", root, "--out", out] + FAST, capsys)
    assert "not both" in error
