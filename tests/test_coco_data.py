"""The COCO reader on tiny COCO files the tests write: labels in category-id order, boxes,
crowds, background images, clean errors; the synthetic set read as VOC and as COCO; and
train / evaluate with --coco-root --coco-ann end to end."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from cli_checks import FAST, fails
from minissd import evaluate, train
from minissd.config import COCO_CLASS_NAMES, get_config
from minissd.data.choice import coco_spec, open_split
from minissd.data.coco import COCODataset, write_coco
from minissd.data.synthetic import generate, write_coco_files
from minissd.data.voc import DataError, VOCDataset
from minissd.training.settings import default_settings, scheduled
from minissd.weights import load_checkpoint

SIZES = {"a.png": (40, 20), "b.png": (30, 30), "c.png": (16, 24), "empty.png": (20, 20)}


def coco_set(root, annotations=None, images=None, categories=None):
    """Images of different sizes in root/images and root/ann.json; returns (images, ann)."""
    folder = os.path.join(str(root), "images")
    os.makedirs(folder, exist_ok=True)
    for name, (w, h) in SIZES.items():
        Image.new("RGB", (w, h), (len(name) * 40, 90, 30)).save(os.path.join(folder, name))
    if images is None:
        images = [{"id": 10 + k, "file_name": n, "width": w, "height": h}
                  for k, (n, (w, h)) in enumerate(SIZES.items())]
    if categories is None:      # ids with gaps, out of order: labels follow the ids
        categories = [{"id": 7, "name": "dog"}, {"id": 1, "name": "bird"},
                      {"id": 3, "name": "cat"}]
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [4, 2, 20, 10], "area": 150.0,
             "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0, 0, 40, 20], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [3, 3, 6, 9]},
            {"id": 4, "image_id": 12, "category_id": 1, "bbox": [10, 20, 10, 10]},  # clipped
        ]
    ann = os.path.join(str(root), "ann.json")
    with open(ann, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return folder, ann


@pytest.mark.filterwarnings("ignore:.*clipped")
def test_labels_boxes_crowds_and_background_images(tmp_path):
    root, ann = coco_set(tmp_path)
    with pytest.warns(UserWarning, match="clipped"):
        ds = COCODataset(root, ann)
        s = [ds[i] for i in range(len(ds))]
    assert ds.class_names == ("bird", "cat", "dog") and len(ds) == 4
    assert s[0].image.shape == (20, 40, 3) and s[0].image_id == "a.png"
    np.testing.assert_array_equal(s[0].labels, [3])                     # the crowd is left out
    np.testing.assert_allclose(s[0].boxes, [[4 / 40, 2 / 20, 24 / 40, 12 / 20]], rtol=1e-6)
    np.testing.assert_allclose(s[1].boxes, [[3 / 30, 3 / 30, 9 / 30, 12 / 30]], rtol=1e-6)
    np.testing.assert_allclose(s[2].boxes, [[10 / 16, 20 / 24, 1, 1]], rtol=1e-6)
    assert s[3].boxes.shape == (0, 4) and s[3].labels.shape == (0,)      # no annotations
    kept = COCODataset(root, ann, keep_difficult=True)
    a = kept.annotation(0)
    np.testing.assert_array_equal(a.labels, [3, 1])
    np.testing.assert_array_equal(a.difficult, [False, True])
    np.testing.assert_allclose(kept.object_areas(0), [150.0, 800.0])   # the file's, else w*h
    assert kept.ground_truths()[0]["area"].tolist() == [150.0, 800.0]
    # a model's classes, by name: other categories dropped
    only = COCODataset(root, ann, classes=("cat", "dog"), drop_other_classes=True)
    np.testing.assert_array_equal(only.annotation(0).labels, [2])
    with pytest.raises(DataError, match="'bird' is not one of the classes"):
        COCODataset(root, ann, classes=("cat", "dog"))


@pytest.mark.parametrize("change, message", [
    ({"annotations": [{"id": 5, "image_id": 10, "category_id": 2, "bbox": [0, 0, 5, 5]}]},
     r"annotation 5 has unknown category id 2; the file's categories are ids 1, 3, 7"),
    ({"annotations": [{"id": 6, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5]}]},
     r"annotation 6 refers to image id 99"),
    ({"annotations": [{"id": 7, "image_id": 10, "category_id": 1, "bbox": [0, 0, 5]}]},
     r"annotation 7 has bbox \[0, 0, 5\]; a COCO box is \[x, y, width, height\]"),
    ({"images": [{"id": 10, "file_name": "lost.jpg", "width": 9, "height": 9}],
      "annotations": []},
     r"1 of its 1 images are missing under .*images \(lost.jpg\); pass the images folder"),
    ({"categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "x"}]},
     r"category name 'x' appears twice"),
    ({"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}],
      "annotations": []}, r"file_name 'a.png' appears twice"),
])
def test_bad_files_name_the_file_and_the_fix(tmp_path, change, message):
    root, ann = coco_set(tmp_path, **change)
    with pytest.raises(DataError, match=message) as e:
        COCODataset(root, ann)
    assert "ann.json" in str(e.value)


def test_box_outside_the_image_and_unreadable_files(tmp_path):
    root, ann = coco_set(tmp_path, annotations=[
        {"id": 8, "image_id": 11, "category_id": 3, "bbox": [31, 2, 5, 5]}])
    ds = COCODataset(root, ann)
    with pytest.raises(DataError, match=r"ann.json: annotation 8 lies entirely outside its "
                                        r"30x30 image b.png"):
        ds[1]
    flat = tmp_path / "flat"
    root, ann = coco_set(flat, annotations=[
        {"id": 9, "image_id": 11, "category_id": 3, "bbox": [3, 2, 0, 5]}])
    with pytest.warns(UserWarning, match="annotation 9 .* zero width or height"):
        assert len(COCODataset(root, ann)[1].boxes) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a readable JSON file"):
        COCODataset(root, str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="bad.json: not a COCO instances file"):
        COCODataset(root, str(bad))
    with pytest.raises(DataError, match="missing.json: annotation file not found"):
        COCODataset(root, str(tmp_path / "missing.json"))


def test_synthetic_set_reads_the_same_as_voc_and_as_coco(tmp_path):
    root = generate(tmp_path / "syn", num_train=6, num_val=4, image_size=64, seed=3)
    train_json, val_json = write_coco_files(root)
    images = os.path.join(root, "JPEGImages")
    for split, path in (("train", train_json), ("val", val_json)):
        voc = VOCDataset(root, splits=(split,), keep_difficult=True)
        coco = COCODataset(images, path, keep_difficult=True)
        assert coco.class_names == voc.class_names and len(coco) == len(voc)
        for i in range(len(voc)):
            v, c = voc[i], coco[i]
            np.testing.assert_array_equal(c.boxes, v.boxes)
            np.testing.assert_array_equal(c.labels, v.labels)
            np.testing.assert_array_equal(c.difficult, v.difficult)
            np.testing.assert_array_equal(c.image, v.image)
    again = tmp_path / "again.json"
    write_coco(COCODataset(images, val_json, keep_difficult=True), again, image_root=images)
    assert json.loads(again.read_text()) == json.loads(open(val_json).read())


@pytest.mark.filterwarnings("ignore:.*clipped")
def test_coco_spec_splits_by_hash_or_takes_the_validation_file(tmp_path):
    root, ann = coco_set(tmp_path)
    told = []
    spec = coco_spec(root, ann, report=told.append)
    assert sorted(spec["train_ids"] + spec["val_ids"]) == sorted(SIZES)
    assert spec["classes"] == ["bird", "cat", "dog"] and "hash" in told[0]
    assert [s.image_id for s in map(open_split(spec, "val").__getitem__,
                                    range(len(spec["val_ids"])))] == spec["val_ids"]
    spec = coco_spec(root, ann, val_ann=ann, classes=("dog",))
    assert "train_ids" not in spec and len(open_split(spec, "val")) == 4
    assert open_split(spec, "train", keep_difficult=True).annotation(0).labels.tolist() == [1]
    with pytest.raises(DataError, match="--classes: horse is not a category"):
        coco_spec(root, ann, classes=("horse",))


def test_coco_configs():
    c = get_config("ssd300_coco")
    assert c.num_classes == 81 and c.class_names == COCO_CLASS_NAMES
    assert c.scales() == ((21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315))
    assert c.num_priors() == 8732 and len(set(COCO_CLASS_NAMES)) == 80
    c = get_config("ssd512_coco")
    assert c.scales()[0][0] == 20.48 and c.scales()[1][-1] == 542.72
    assert c.num_priors() == 24564
    assert get_config("ssd300_coco", class_names=("a", "b")).num_classes == 3
    # Caffe SSD's / ssd.pytorch's COCO schedule on trainval35k's 117266 images
    s = scheduled(default_settings("ssd512_coco", on_voc=True), 117266)
    assert (s.iters, s.milestones, s.batch_size, s.lr) == (400000, (280000, 360000), 32, 1e-3)


def test_train_and_evaluate_on_coco_files(tmp_path, capsys):
    root = generate(tmp_path / "syn", num_train=8, num_val=4, image_size=64, seed=1)
    train_json, val_json = write_coco_files(root)
    images = os.path.join(root, "JPEGImages")
    out = tmp_path / "run"
    assert train.main(["--coco-root", images, "--coco-ann", train_json, "--coco-val-ann",
                       val_json, "--coco-metric", "--out", str(out)]
                      + FAST) == 0
    err = capsys.readouterr().err
    assert "on coco data: 8 train / 4 val images, 6 classes" in err and "COCO AP" in err
    assert "could not draw" not in err and (out / "curves.png").is_file()
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"map"' in line]
    assert {"coco_map", "coco_map50", "coco_mar_100"} <= set(evals[-1])
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["data"]["kind"] == "coco" and meta["settings"]["coco_metric"] is True
    # evaluate: the recorded validation file, and --coco-root given; the same numbers
    results = []
    for extra in ([], ["--coco-root", images, "--coco-ann", val_json]):
        assert evaluate.main(["--checkpoint", str(out / "last.npz"), "--json", "--device",
                              "cpu", "--metric", "all"] + extra) == 0
        captured = capsys.readouterr()
        results.append(json.loads(captured.out.strip().splitlines()[-1]))
        assert "AP @[.50:.95]" in captured.err and "AP (COCO)" in captured.err
    assert results[0]["coco"] == results[1]["coco"] and results[0]["num_images"] == 4
    assert evaluate.main(["--checkpoint", str(out / "last.npz"), "--metric", "voc07",
                          "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "AP (VOC07)" in text and "VOC10" not in text and "COCO" not in text




def test_command_line_errors(tmp_path, capsys):
    root, ann = coco_set(tmp_path, annotations=[
        {"id": 5, "image_id": 10, "category_id": 4, "bbox": [0, 0, 5, 5]}])
    assert "--coco-root: COCO-format data needs both" in fails(["--coco-root", root], capsys)
    assert "--coco-ann: COCO-format data needs both" in fails(
        ["--checkpoint", "x.npz", "--coco-ann", ann], capsys, evaluate)
    assert "give either --voc-root or --coco-root" in fails(
        ["--voc-root", root, "--coco-root", root, "--coco-ann", ann], capsys)
    assert "annotation 5 has unknown category id 4" in fails(
        ["--coco-root", root, "--coco-ann", ann] + FAST, capsys)
    assert "--metric: invalid choice" in fails(["--checkpoint", "x.npz", "--metric", "map"],
                                                capsys, evaluate)
