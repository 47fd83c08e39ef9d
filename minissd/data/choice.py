"""Which data a run uses, and how it is fed: the data spec, its splits, its classes, the
augmentation and the training loader.

A data spec is a small JSON dict that says where the images come from:
    {"kind": "synthetic", "num_train", "num_val", "image_size", "seed"}   (generated, cached)
    {"kind": "voc", "root", "layout", "classes", "drop_other_classes",
     "train": [splits] or "train_ids": [image ids],
     "val": [splits] or "val_ids": [image ids]}                           (a --voc-root folder)
    {"kind": "coco", "root", "ann", "val_root", "val_ann", "classes", "drop_other_classes",
     "train_ids" / "val_ids": [file_names] (a made split; absent: every image of the file)}
                                                  (--coco-root and --coco-ann, data/coco.py)
    {"kind": "yolo", "root", "classes", "drop_other_classes",
     "train_ids" / "val_ids": [image ids] (a made split; absent: the folder's train / val)}
                                                  (--yolo-root, data/yolo.py)
train stores it in every checkpoint, so evaluate and --resume open exactly the same images:
where the folder gives no validation split, the one made (folders.hash_split) is recorded as
its image ids. Errors are DataError (a ValueError) with a message for the user; each command
prints it as its own one-line error.

A spec read back from a checkpoint is a stranger's: open_split checks it first (check_spec):
the synthetic set's sizes within untrusted.MAX_SYNTHETIC_IMAGES images of at most
untrusted.MAX_IMAGE_SIZE pixels (a crafted checkpoint cannot make evaluate write millions of
images), and every field of the type it must have.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import get_config
from .augment import SSDAugmentation, pixel_mean
from .coco import COCODataset, read_coco_file
from .folders import count_classes, find_layout, hash_split, labels_file, order_classes
from .loader import DataLoader
from .synthetic import ensure_synthetic
from ..untrusted import MAX_IMAGE_SIZE, MAX_SYNTHETIC_IMAGES, MIN_SYNTHETIC_SIZE, atomic_write
from .voc import DataError, VOCDataset, read_labels_file
from .yolo import YOLODataset, yolo_spec  # noqa: F401  (yolo_spec: train and evaluate use it)

SYNTHETIC_DATA_SEED = 0          # the synthetic set is the same whatever --seed is
# Split files of a VOC-format folder, in order of preference, for training and validation.
TRAIN_SPLIT_FILES, VAL_SPLIT_FILES = ("train", "trainval"), ("val", "test")


def data_spec(voc_root, config_name, num_train=None, num_val=None, classes=None,
              image_size=None, report=None) -> dict:
    """The data spec of a run: the synthetic set (voc_root None; num_train / num_val images
    at the config's input size) or the --voc-root folder, with its splits (made by hash when
    the folder has none) and its class names: `classes` when given (objects of other classes
    are then dropped; DataError when one does not occur), else labels.txt / classes.txt, else
    VOC's 20 for a VOCdevkit, else the names found in the annotations. report(text) is told
    the classes found and a made split."""
    report = report or (lambda text: None)
    if voc_root is None:
        size = image_size or get_config(config_name).image_size
        return {"kind": "synthetic", "num_train": num_train, "num_val": num_val,
                "image_size": size, "seed": SYNTHETIC_DATA_SEED}
    spec = _voc_splits(voc_root)
    if spec.get("split_made"):
        report(f"{voc_root}: no validation split given; made one from a hash of each image "
               f"id: {len(spec['train_ids'])} train / {len(spec['val_ids'])} val images")
    spec["drop_other_classes"] = classes is not None
    labels = labels_file(voc_root)
    if classes is None and labels is not None:
        spec["classes"] = list(read_labels_file(labels))
        return spec
    if classes is None and spec["layout"] == "devkit":
        return spec                                      # VOC's 20 classes (data/voc.py)
    xmls = [it.xml for part in ("train", "val") for it in open_split(
        {**spec, "classes": [], "drop_other_classes": True}, part).items]
    counts = count_classes(xmls)
    found = ", ".join(f"{n} ({counts[n]})" for n in order_classes(counts)) or "none"
    if classes is not None:
        absent = [n for n in classes if counts[n] == 0]
        if absent:
            raise DataError(f"--classes: {', '.join(absent)} does not occur in the annotations "
                            f"under {voc_root}; the classes found there are {found}")
        spec["classes"] = list(classes)
        return spec
    if not counts:
        raise DataError(f"{voc_root}: no object in any annotation (.xml), so there is nothing "
                        "to learn; label some images (labelImg, CVAT, ...) or check that the "
                        "XML files sit next to the images")
    spec["classes"] = list(order_classes(counts))
    report(f"classes found in the annotations (objects): {found}")
    return spec


def coco_spec(root, ann, val_root=None, val_ann=None, classes=None, report=None) -> dict:
    """The data spec of COCO-format data: images under `root` annotated by the JSON file
    `ann`, validated on the images of `val_ann` (under `val_root`, default `root`) or, without
    one, on a split made from a hash of the file_names (folders.hash_split, recorded as ids).
    Classes: `classes` (objects of other categories dropped), else the file's categories in
    id order; a validation file's categories are matched to them by name."""
    report = report or (lambda text: None)
    first = read_coco_file(ann)
    if not first.objects:
        raise DataError(f"{ann}: no annotation in the file, so there is nothing to learn; "
                        "export the annotations with the images, or check the file")
    names = [n for _, n in first.categories]
    if classes is not None:
        absent = [n for n in classes if n not in names]
        if absent:
            raise DataError(f"--classes: {', '.join(absent)} is not a category of {ann}; its "
                            f"categories are {', '.join(names[:20])}")
    spec = {"kind": "coco", "root": root, "ann": first.path, "val_root": val_root or root,
            "val_ann": None, "classes": list(classes or names),
            "drop_other_classes": classes is not None}
    if val_ann is not None:
        spec["val_ann"] = read_coco_file(val_ann).path
        COCODataset(spec["val_root"], val_ann, classes=spec["classes"],
                    drop_other_classes=spec["drop_other_classes"])   # checked now, not later
        return spec
    pool = [name for _, name, _, _ in first.images]
    if len(pool) < 2:
        raise DataError(f"{ann}: {len(pool)} image(s) listed; training needs at least two "
                        "(one to train on, one to validate on)")
    spec["val_ann"] = spec["ann"]
    spec["train_ids"], spec["val_ids"] = hash_split(pool)
    report(f"{ann}: no validation file given (--coco-val-ann); made a split from a hash of "
           f"each file_name: {len(spec['train_ids'])} train / {len(spec['val_ids'])} val "
           "images")
    return spec


def _voc_splits(root) -> dict:
    """The "layout" and the train/val part of a --voc-root folder's data spec."""
    found = find_layout(root)
    if found is None:
        VOCDataset(root)                                  # raises the "which layouts" error
    spec = {"kind": "voc", "root": root, "layout": found.kind}
    if found.kind == "devkit":
        years = [y for y in ("2007", "2012") if os.path.isdir(os.path.join(root, f"VOC{y}"))]
        if "2007" not in years:
            raise DataError(f"{root}: a VOCdevkit without VOC2007/, which holds the test split "
                            "validation uses; add VOC2007/ or point --voc-root at a "
                            "VOC-format folder")
        return {**spec, "train": [f"{y}/trainval" for y in years], "val": ["2007/test"]}
    if found.kind == "voc":
        main = os.path.join(root, "ImageSets", "Main")
        given = {n for n in TRAIN_SPLIT_FILES + VAL_SPLIT_FILES
                 if os.path.isfile(os.path.join(main, n + ".txt"))}
    else:
        given = set(found.splits)
    train = next((n for n in TRAIN_SPLIT_FILES if n in given), None)
    val = next((n for n in VAL_SPLIT_FILES if n in given and n != train), None)
    if train and val:
        return {**spec, "train": [train], "val": [val]}
    pool = [it.image_id for it in VOCDataset(root, splits=(train or "all",), classes=()).items]
    if len(pool) < 2:
        raise DataError(f"{root}: {len(pool)} image(s) found; training needs at least two "
                        "(one to train on, one to validate on)")
    train_ids, val_ids = hash_split(pool)
    return {**spec, "train_ids": train_ids, "val_ids": val_ids, "split_made": True}


def _is_int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_strs(v):
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def check_spec(spec):
    """DataError unless `spec` is a data spec this code could have written (it may come from
    a checkpoint made by anyone): a known kind, fields of the right types, and for the
    synthetic set at most MAX_SYNTHETIC_IMAGES images of MIN_SYNTHETIC_SIZE to
    MAX_IMAGE_SIZE pixels."""
    what = "the checkpoint's data description"
    if not isinstance(spec, dict) or spec.get("kind") not in ("synthetic", "voc", "coco",
                                                              "yolo"):
        raise DataError(f"{what} is not a synthetic, voc, coco or yolo data spec; pass "
                        "--voc-root DIR, --coco-root DIR --coco-ann FILE.json or --yolo-root "
                        "DIR")
    if spec["kind"] == "synthetic":
        for key, lo, hi in (("num_train", 1, MAX_SYNTHETIC_IMAGES),
                            ("num_val", 1, MAX_SYNTHETIC_IMAGES),
                            ("image_size", MIN_SYNTHETIC_SIZE, MAX_IMAGE_SIZE),
                            ("seed", 0, 2**63 - 1)):
            if not _is_int(spec.get(key), lo, hi):
                raise DataError(f"{what} asks for a synthetic set with {key} "
                                f"{str(spec.get(key))[:40]}; it must be an integer from {lo} "
                                f"to {hi}. Pass --voc-root DIR to evaluate on other data")
        return
    bad = [k for k in ("root", "ann", "val_root", "val_ann") if k in spec
           and spec[k] is not None and not isinstance(spec[k], str)]
    bad += [k for k in ("classes", "train", "val", "train_ids", "val_ids") if k in spec
            and spec[k] is not None and not _is_strs(spec[k])]
    if not isinstance(spec.get("root"), str):
        bad.append("root")
    if bad:
        raise DataError(f"{what} has a malformed {bad[0]!r}; pass --voc-root DIR or "
                        "--coco-root DIR --coco-ann FILE.json")


def open_split(spec, split, keep_difficult=False):
    """The dataset (VOCDataset or COCODataset) of a data spec's "train" or "val" part
    (generating the synthetic set). The spec is checked first (check_spec)."""
    check_spec(spec)
    if spec["kind"] == "coco":
        root, ann = (spec["root"], spec["ann"]) if split == "train" else \
            (spec["val_root"], spec["val_ann"])
        return COCODataset(root, ann, classes=tuple(spec["classes"]),
                           keep_difficult=keep_difficult, ids=spec.get(f"{split}_ids"),
                           drop_other_classes=spec.get("drop_other_classes", False))
    if spec["kind"] == "yolo":
        return YOLODataset(spec["root"], split, classes=tuple(spec["classes"]),
                           ids=spec.get(f"{split}_ids"),
                           drop_other_classes=spec.get("drop_other_classes", False))
    if spec["kind"] == "synthetic":
        root = ensure_synthetic(spec["num_train"], spec["num_val"], spec["image_size"],
                                spec["seed"], progress=True)
        return VOCDataset(root, splits=(split,), keep_difficult=keep_difficult)
    classes = spec.get("classes")
    return VOCDataset(spec["root"], splits=tuple(spec.get(split, ())),
                      classes=None if classes is None else tuple(classes),
                      keep_difficult=keep_difficult, ids=spec.get(f"{split}_ids"),
                      drop_other_classes=spec.get("drop_other_classes", False))


def write_split_files(spec, out):
    """<out>/split_train.txt and split_val.txt: a made split's image ids, one per line."""
    for part in ("train", "val"):
        ids = spec.get(f"{part}_ids")
        if ids is not None:         # (file names that are not UTF-8 keep their own bytes)
            with atomic_write(os.path.join(out, f"split_{part}.txt")) as f:
                f.write("".join(i + "\n" for i in ids).encode("utf-8", "surrogateescape"))


def median_object_side(dataset, image_size, limit=500):
    """The median side (sqrt(w * h)) of the objects of the first `limit` images, in pixels of
    the network's image_size input; None when there are none (unreadable XMLs are skipped)."""
    sides = []
    for i in range(min(limit, len(dataset))):
        try:
            b = dataset.annotation(i).boxes                              # (G, 4)
        except DataError:
            continue
        sides += list(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * image_size)
    return float(np.median(sides)) if sides else None


def make_augmentation(kind, config):
    """The training transform: "full" (SSD recipe), "light", "flip" or "none".

    The tiny synthetic run uses "flip" on 6000 images: the synthetic set already holds every
    size, position and colour. Measured VOC07 mAP after 1100 / 4400 steps: "light" on 2000
    images 0.60 / 0.899; "none" on 2000 0.81 / 0.892 (it learns fast, then overfits); "flip"
    on 6000 0.77 / 0.909; "none" on 6000 0.79 / 0.911."""
    mean = pixel_mean(config.preprocess)
    if kind == "full":
        return SSDAugmentation(config.image_size, mean)
    if kind == "light":
        # A mild zoom-out and the SSD crops, without the colour changes.
        return SSDAugmentation(config.image_size, mean, photometric=False, max_expand=1.5)
    if kind == "flip":
        return SSDAugmentation(config.image_size, mean, photometric=False, expand=False,
                               crop=False, flip=True)
    return SSDAugmentation(config.image_size, mean, photometric=False, expand=False, crop=False,
                           flip=False)


class CachedDataset:
    """A dataset whose decoded samples are kept in memory after the first read (for small
    sets such as the synthetic one: 6000 images of 128x128 are 300 MB)."""

    def __init__(self, dataset):
        self.dataset, self._cache = dataset, {}
        self.class_names = dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        s = self._cache.get(i)
        if s is None:
            s = self._cache[i] = self.dataset[i]
        return s


def make_loader(dataset, config, batch_size, augment, seed, workers):
    """The training DataLoader (data/loader.py) with the `augment` transform: the batch of
    step s is a function of (seed, s), so `loader.batches(start_step)` resumes exactly."""
    return DataLoader(dataset, batch_size, make_augmentation(augment, config), config,
                      seed=seed, num_workers=workers)
