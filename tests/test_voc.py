"""The VOC reader on a hand-made VOCdevkit and VOC-format folder written into tmp_path."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from minissd.data.voc import VOC_CLASSES, DataError, VOCDataset


def _xml(w, h, objects, size=True):
    """VOC XML text. objects: (name, (xmin, ymin, xmax, ymax) or None, difficult)."""
    parts = ["<annotation><filename>x.jpg</filename>"]
    if size:
        parts.append(f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult>")
        if box is not None:
            parts.append("<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in
                                              zip(("xmin", "ymin", "xmax", "ymax"), box))
                         + "</bndbox>")
        parts.append("</object>")
    parts.append("</annotation>")
    return "".join(parts)


def _write(folder, image_id, image, objects, fmt="JPEG", size=True, wh=None):
    """Write JPEGImages/<id>.jpg (any format, by content) and Annotations/<id>.xml."""
    os.makedirs(os.path.join(folder, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(folder, "Annotations"), exist_ok=True)
    if image is not None:
        image.save(os.path.join(folder, "JPEGImages", image_id + ".jpg"), format=fmt,
                   **({"quality": 95} if fmt == "JPEG" else {}))
    w, h = wh or image.size
    with open(os.path.join(folder, "Annotations", image_id + ".xml"), "w") as f:
        f.write(_xml(w, h, objects, size=size))


def _split(folder, name, ids):
    os.makedirs(os.path.join(folder, "ImageSets", "Main"), exist_ok=True)
    with open(os.path.join(folder, "ImageSets", "Main", name + ".txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))


@pytest.fixture
def devkit(tmp_path):
    """VOCdevkit/VOC2007 with RGB, gray, CMYK JPEGs and palette / RGBA PNGs; VOC2012 with one."""
    root = tmp_path / "VOCdevkit"
    v7 = str(root / "VOC2007")
    _write(v7, "rgb", Image.new("RGB", (40, 30), (200, 30, 40)),
           [("dog", (1, 1, 40, 30), False),              # touches all four borders
            ("cat", (11, 6, 20, 15), True)])             # difficult
    _write(v7, "gray", Image.new("L", (20, 20), 100), [("person", (5, 5, 15, 18), False)])
    _write(v7, "cmyk", Image.new("CMYK", (24, 16), (0, 255, 255, 0)),
           [("car", (3, 2, 20, 16), False)])
    pal = Image.new("P", (16, 12), 1)
    pal.putpalette([0, 0, 0, 10, 200, 90] + [0] * 762)
    _write(v7, "palette", pal, [("bus", (2, 2, 8, 8), False)], fmt="PNG")
    _write(v7, "rgba", Image.new("RGBA", (10, 10), (5, 6, 7, 128)), [], fmt="PNG")
    _split(v7, "trainval", ["rgb", "gray", "cmyk", "palette", "rgba"])
    _split(v7, "test", ["gray"])
    v12 = str(root / "VOC2012")
    _write(v12, "2012_000001", Image.new("RGB", (8, 8), (1, 2, 3)),
           [("horse", (2, 3, 6, 7), False)])
    _split(v12, "trainval", ["2012_000001"])
    return str(root)


@pytest.fixture
def folder(tmp_path):
    """One VOC-format folder with labels.txt and a clean "train" split of one image."""
    root = str(tmp_path / "set")
    os.makedirs(root)
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("circle\nsquare\n\n")
    _write(root, "ok", Image.new("RGB", (20, 10), (9, 9, 9)), [("square", (3, 2, 12, 9), False)])
    _split(root, "train", ["ok"])
    return root


def test_devkit_reads_back_exactly(devkit):
    ds = VOCDataset(devkit, splits=("2007/trainval", "2012/trainval"))
    assert len(ds) == 6 and ds.class_names == VOC_CLASSES
    s = ds[0]
    assert s.image_id == "rgb" and s.image.shape == (30, 40, 3) and s.image.dtype == np.uint8
    assert np.abs(s.image.astype(int) - (200, 30, 40)).max() <= 3
    # difficult "cat" dropped by default; the border box maps to ((1-1)/40, .., (40-1)/40, ..)
    np.testing.assert_array_equal(s.labels, [VOC_CLASSES.index("dog") + 1])
    np.testing.assert_allclose(s.boxes, [[0, 0, 39 / 40, 29 / 30]], rtol=0, atol=1e-7)
    assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64
    assert s.difficult.dtype == bool and not s.difficult.any()

    gray = ds[1]
    assert gray.image.shape == (20, 20, 3)
    assert np.abs(gray.image.astype(int) - 100).max() <= 2
    np.testing.assert_allclose(gray.boxes, [[4 / 20, 4 / 20, 14 / 20, 17 / 20]], atol=1e-7)

    cmyk = ds[2]                                 # CMYK (0, 255, 255, 0) is red
    assert cmyk.image.shape == (16, 24, 3)
    assert cmyk.image[..., 0].min() > 240 and cmyk.image[..., 1:].max() < 15

    pal = ds[3]                                  # PNG is lossless: exact colours
    np.testing.assert_array_equal(pal.image[0, 0], (10, 200, 90))
    rgba = ds[4]
    assert rgba.image.shape == (10, 10, 3) and rgba.boxes.shape == (0, 4)
    assert rgba.labels.shape == (0,)

    v12 = ds[5]
    assert v12.image_id == "2012_000001"
    np.testing.assert_allclose(v12.boxes, [[1 / 8, 2 / 8, 5 / 8, 6 / 8]], atol=1e-7)
    np.testing.assert_array_equal(v12.labels, [VOC_CLASSES.index("horse") + 1])


def test_keep_difficult_and_ground_truths(devkit):
    ds = VOCDataset(devkit, splits="2007/trainval", keep_difficult=True)
    s = ds[0]
    np.testing.assert_array_equal(s.labels, [VOC_CLASSES.index("dog") + 1,
                                             VOC_CLASSES.index("cat") + 1])
    np.testing.assert_array_equal(s.difficult, [False, True])
    np.testing.assert_allclose(s.boxes[1], [10 / 40, 5 / 30, 19 / 40, 14 / 30], atol=1e-7)
    gts = ds.ground_truths()
    assert len(gts) == len(ds)
    np.testing.assert_array_equal(gts[0]["difficult"], [False, True])
    ann = ds.annotation(2)                       # from the XML alone
    assert (ann.width, ann.height, ann.image_id) == (24, 16, "cmyk")


def test_folder_layout_and_labels_txt(folder):
    ds = VOCDataset(folder, splits=("train",))
    assert ds.class_names == ("circle", "square")
    s = ds[0]
    np.testing.assert_array_equal(s.labels, [2])
    np.testing.assert_allclose(s.boxes, [[2 / 20, 1 / 10, 11 / 20, 8 / 10]], atol=1e-7)
    with pytest.raises(DataError, match="year"):
        VOCDataset(folder, splits=("2007/trainval",))


def test_wrong_root_and_missing_split(tmp_path, devkit, folder):
    with pytest.raises(DataError, match="VOC2007.*JPEGImages"):
        VOCDataset(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match=r"val\.txt.*splits found there: train"):
        VOCDataset(folder, splits=("val",))
    with pytest.raises(DataError, match=r"VOC2012.*train\.txt.*trainval"):
        VOCDataset(devkit, splits=("2012/train",))


def _bad(folder, image_id, image, objects, **kw):
    _write(folder, image_id, image, objects, **kw)
    _split(folder, "train", [image_id])
    return VOCDataset(folder, splits=("train",))


@pytest.mark.parametrize("case, objects, kw, message", [
    ("no_bndbox", [("circle", None, False)], {}, "no <bndbox>"),
    ("unknown", [("dragon", (1, 1, 5, 5), False)], {}, "unknown class 'dragon'"),
    ("inverted", [("circle", (8, 1, 3, 5), False)], {}, "inverted box"),
    ("zero", [("circle", (3, 1, 3, 5), False)], {}, "zero-size box"),
    ("outside", [("circle", (30, 30, 40, 40), False)], {}, "entirely outside"),
    # a difficult object is checked like any other before the default reader drops it
    ("difficult_no_bndbox", [("circle", (1, 1, 5, 5), False), ("circle", None, True)], {},
     "no <bndbox>"),
    ("difficult_inverted", [("circle", (8, 1, 3, 5), True)], {}, "inverted box"),
])
def test_bad_annotations_name_the_file(folder, case, objects, kw, message):
    ds = _bad(folder, case, Image.new("RGB", (20, 10)), objects, **kw)
    with pytest.raises(DataError, match=message) as e:
        ds[0]
    assert f"{case}.xml" in str(e.value)


def test_xml_without_size_takes_the_image_size(folder):
    ds = _bad(folder, "no_size", Image.new("RGB", (20, 10)), [("circle", (1, 1, 5, 5), False)],
              size=False)
    s = ds[0]
    assert (ds.annotation(0).width, ds.annotation(0).height) == (20, 10)
    np.testing.assert_allclose(s.boxes, [[0, 0, 4 / 20, 4 / 10]], atol=1e-7)


def test_split_file_listing_missing_images_names_file_and_count(folder):
    _write(folder, "missing", None, [], wh=(20, 10))
    _split(folder, "train", ["ok", "missing", "gone"])
    with pytest.raises(DataError, match=r"train\.txt: 2 of its 3 images are missing "
                                        r"\(missing, gone\)"):
        VOCDataset(folder, splits=("train",))

    _split(folder, "train", ["ok"])

    path = os.path.join(folder, "JPEGImages", "ok.jpg")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    ds = VOCDataset(folder, splits=("train",))       # "ok" is now truncated
    with pytest.raises(DataError, match="cannot decode") as e:
        ds[0]
    assert "ok.jpg" in str(e.value)


def test_size_mismatch_is_named(folder):
    ds = _bad(folder, "mismatch", Image.new("RGB", (20, 10)), [], wh=(30, 10))
    with pytest.raises(DataError, match="20x10.*30x10"):
        ds[0]


def test_box_outside_is_clipped_and_warned_once(folder):
    _write(folder, "a", Image.new("RGB", (20, 10)), [("circle", (0, -3, 25, 8), False)])
    _write(folder, "b", Image.new("RGB", (20, 10)), [("square", (15, 5, 30, 12), False)])
    _split(folder, "train", ["a", "b", "ok"])
    ds = VOCDataset(folder, splits=("train",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b, _ = ds[0], ds[1], ds[2]
    assert len([w for w in caught if "clipped" in str(w.message)]) == 1
    np.testing.assert_allclose(a.boxes, [[0, 0, 1.0, 7 / 10]], atol=1e-7)
    np.testing.assert_allclose(b.boxes, [[14 / 20, 4 / 10, 1.0, 1.0]], atol=1e-7)


def test_load_image_says_the_callers_fix(tmp_path):
    from minissd.data.voc import load_image
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as e:                  # detect: no dataset, no split file
        load_image(str(bad))
    assert str(e.value).endswith("not an image: replace it")
    with pytest.raises(DataError) as e:
        load_image(str(bad), bad_fix="replace it, or remove it from a.json")
    assert str(e.value).endswith("remove it from a.json")
    with pytest.raises(DataError, match="image file not found; check the path"):
        load_image(str(tmp_path / "missing.jpg"))
