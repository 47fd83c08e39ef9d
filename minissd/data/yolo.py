"""The YOLO reader: Ultralytics' dataset layout (what Roboflow, CVAT, Label Studio and
Ultralytics export), as --yolo-root DIR.

Dimension letters: G ground-truth objects, K classes.

Facts of the format relied on (Ultralytics' dataset docs, its coco8.yaml):
- data.yaml (or data.yml) holds `names`, a list [name0, name1, ...] or a dict {0: name0, ...},
  class ids 0-based; `path` the dataset root (absent: the yaml's folder; relative: taken from
  the yaml's folder here); `train`, `val` (and `test`), each a folder of images, a .txt file
  listing image paths, or a list of those, relative to `path`. Roboflow writes `../train/images`
  relative to a root it does not name: a "../" path that does not exist is tried without
  its "../" under `path`, as Ultralytics does.
- The label file of an image is its path with the last "images" folder replaced by "labels"
  and the extension by .txt: images/train/a.jpg -> labels/train/a.txt (Roboflow:
  train/images/a.jpg -> train/labels/a.txt).
- One line per object: `class cx cy w h`, the box centre and size normalised by the image's
  width and height (0..1). An image without a label file, or with an empty one, has no objects.
Without data.yaml: images/{train,val} (and labels/{train,val}) are the splits, or a flat
images/ + labels/ pair is split by a hash of the image ids (folders.hash_split, as for VOC
folders); class names then come from classes.txt (labels.txt) in the root.

Boxes become normalised corners (cx - w/2, cy - h/2, cx + w/2, cy + h/2), clipped to [0, 1].
A malformed line (not 5 fields, a value that is not a number or lies outside 0..1, a class id
that is not one of the names, a zero width or height) is a DataError naming the file and the
line number. YOLO has no "difficult" flag: every object counts.
"""
from __future__ import annotations

import math
import os
import threading
from typing import NamedTuple

import numpy as np

from .folders import IMAGE_EXTENSIONS, hash_split, labels_file
from .voc import Annotation, DataError, Sample, image_size, load_image, read_labels_file

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
MAX_LABEL_BYTES = 10_000_000        # a label file larger than this is not a label file


class YoloItem(NamedTuple):
    image_id: str          # the image path relative to the root, without its extension
    image: str
    label: str | None      # None: no label file (a background image)


class YoloLayout(NamedTuple):
    root: str
    names: tuple | None            # class names from data.yaml / classes.txt (None: none given)
    splits: dict                   # "train" / "val" / "test" -> [YoloItem]; {} when flat
    pool: list                     # every item (a flat folder: the ones to split)


def label_path(image_path) -> str:
    """images/train/a.jpg -> labels/train/a.txt (the last "images" folder becomes "labels")."""
    parts = os.path.normpath(image_path).split(os.sep)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def _images_under(folder):
    found = []
    for base, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(base, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _item(root, image):
    label = label_path(image)
    rel = os.path.relpath(image, root).replace(os.sep, "/")
    return YoloItem(os.path.splitext(rel)[0], image, label if os.path.isfile(label) else None)


def _yaml_names(names, path):
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            ids = None
        if ids != list(range(len(names))):
            raise DataError(f"{path}: names must be a list or a dict with the class ids 0..K-1 "
                            "as keys; fix the names entry")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names or \
            not all(isinstance(n, (str, int, float)) for n in names):
        raise DataError(f"{path}: names must be a non-empty list of class names or a dict "
                        "{0: name, 1: name, ...}; fix the names entry")
    names = tuple(str(n) for n in names)
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name appears twice in names; give each class its "
                        "own name")
    return names


def _split_images(entry, base, path, key):
    """Image paths of one yaml entry: a folder, a .txt list, or a list of those."""
    images = []
    for e in entry if isinstance(entry, list) else [entry]:
        if not isinstance(e, str):
            raise DataError(f"{path}: {key} must be a folder or a .txt file of image paths "
                            "(or a list of them)")
        where = os.path.join(base, e)
        if not os.path.exists(where) and e.startswith("../"):
            where = os.path.join(base, e[3:])          # Roboflow's "../train/images"
        if os.path.isdir(where):
            images += _images_under(where)
        elif os.path.isfile(where) and where.endswith(".txt"):
            folder = os.path.dirname(where)
            with open(where, encoding="utf-8", errors="replace") as f:
                images += [os.path.join(folder, ln.strip()) for ln in f if ln.strip()]
        else:
            raise DataError(f"{path}: {key}: {e} is neither an images folder nor a .txt list "
                            f"under {base}; fix the path in the yaml")
    return images


def _read_yaml(path):
    try:
        import yaml
    except ImportError:
        raise DataError(f"{path}: reading it needs PyYAML; install it with pip install "
                        "pyyaml") from None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: not a readable YAML file ({type(e).__name__}); fix or "
                        "re-export it") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path}: no names entry; a YOLO data.yaml lists the class names "
                        "(names: [a, b] or names: {0: a, 1: b})")
    return data


def find_yolo(root) -> YoloLayout:
    """The YOLO layout of `root` (see the module docstring); DataError when it is none."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: folder not found; pass the folder holding data.yaml (or "
                        "images/ and labels/) as --yolo-root")
    yml = next((os.path.join(root, n) for n in YAML_NAMES
                if os.path.isfile(os.path.join(root, n))), None)
    if yml is not None:
        data = _read_yaml(yml)
        names = _yaml_names(data["names"], yml)
        base = data.get("path") or "."
        base = os.path.join(root, base) if isinstance(base, str) else root
        splits = {}
        for key in ("train", "val", "test"):
            if data.get(key):
                splits[key] = [_item(root, im) for im in _split_images(data[key], base, yml,
                                                                       key)]
        if "train" not in splits:
            raise DataError(f"{yml}: no train entry; give the training images (train: "
                            "images/train)")
        return YoloLayout(root, names, splits, [it for v in splits.values() for it in v])
    labels = labels_file(root)
    names = read_labels_file(labels) if labels is not None else None
    images = os.path.join(root, "images")
    if not os.path.isdir(images):
        raise DataError(f"{root}: neither data.yaml nor an images/ folder; a YOLO dataset "
                        "has data.yaml, or images/ and labels/ (with classes.txt)")
    splits = {key: [_item(root, im) for im in _images_under(os.path.join(images, folder))]
              for key, folder in (("train", "train"), ("val", "val"), ("val", "valid"),
                                  ("test", "test"))
              if os.path.isdir(os.path.join(images, folder))}
    pool = [it for v in splits.values() for it in v] if splits else \
        [_item(root, im) for im in _images_under(images)]
    return YoloLayout(root, names, splits, pool)


def read_labels(path, num_classes):
    """(classes (G,) int64 0-based, boxes (G, 4) float64 cx cy w h) of one label file,
    every line checked (DataError naming the file and line)."""
    try:
        if os.path.getsize(path) > MAX_LABEL_BYTES:
            raise DataError(f"{path}: {os.path.getsize(path)} bytes is too large for a label "
                            "file; check that it is one")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; a YOLO label file has one "
                        "'class cx cy w h' line per object") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the label file ({e.strerror})") from None
    classes, boxes = [], []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {n}"
        if len(fields) != 5:
            raise DataError(f"{where}: {len(fields)} fields; a box line is 'class cx cy w h' "
                            "(5 fields; segmentation polygons are not read)")
        try:
            cls = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DataError(f"{where}: {line.strip()[:60]!r} is not 'class cx cy w h' "
                            "(an integer class id and four numbers)") from None
        if not 0 <= cls < num_classes:
            raise DataError(f"{where}: class id {cls} is not one of the {num_classes} classes "
                            f"(0..{num_classes - 1}); fix the line or the names in data.yaml")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise DataError(f"{where}: values {' '.join(fields[1:])} must be normalised to "
                            "0..1 (centre and size divided by the image's width and height)")
        if values[2] <= 0 or values[3] <= 0:
            raise DataError(f"{where}: the box has zero width or height; remove the line")
        classes.append(cls)
        boxes.append(values)
    return np.array(classes, np.int64), np.array(boxes, np.float64).reshape(-1, 4)


def yolo_spec(root, classes=None, report=None) -> dict:
    """The data spec of --yolo-root (data/choice.py): its class names, and the image ids of
    a split made by hash when the folder has no validation split. Every label file is read
    and checked now, so a bad line stops the run before training starts."""
    report = report or (lambda text: None)
    layout = find_yolo(root)
    if layout.names is None:
        raise DataError(f"{layout.root}: no class names; add data.yaml with names: [...] or "
                        "a classes.txt with one class name per line (class id 0 first)")
    for it in layout.pool:
        if it.label is not None:
            read_labels(it.label, len(layout.names))
    names = list(layout.names)
    if classes is not None:
        absent = [n for n in classes if n not in names]
        if absent:
            raise DataError(f"--classes: {', '.join(absent)} is not a class of {layout.root}; "
                            f"its classes are {', '.join(names[:20])}")
    spec = {"kind": "yolo", "root": layout.root, "classes": list(classes or names),
            "drop_other_classes": classes is not None}
    if "train" in layout.splits and "val" in layout.splits:
        return spec
    pool = [it.image_id for it in layout.splits.get("train", layout.pool)]
    if len(pool) < 2:
        raise DataError(f"{layout.root}: {len(pool)} image(s) found; training needs at least "
                        "two (one to train on, one to validate on)")
    spec["train_ids"], spec["val_ids"] = hash_split(pool)
    report(f"{layout.root}: no validation split given; made one from a hash of each image "
           f"id: {len(spec['train_ids'])} train / {len(spec['val_ids'])} val images")
    return spec


class YOLODataset:
    """Images and ground truth of one split of a YOLO folder, with VOCDataset's interface.

    root:    the --yolo-root folder
    split:   "train", "val" or "test" (the yaml's entries or images/<split>); ignored with ids
    classes: names in label order 1..K; None: the folder's names. Objects of a class not in
             `classes` are an error unless drop_other_classes.
    ids:     only these image ids (a made split), in this order

    len(ds); ds[i] -> Sample; ds.annotation(i) -> voc.Annotation (the image's header is read
    for its size, not decoded); ds.image_path(i); ds.class_names.
    """

    def __init__(self, root, split="train", classes=None, keep_difficult=False, ids=None,
                 drop_other_classes=False):
        self.layout = find_yolo(root)
        self.root = self.layout.root
        names = self.layout.names
        if names is None:
            raise DataError(f"{self.root}: no class names; add data.yaml or classes.txt")
        if ids is not None:
            by_id = {it.image_id: it for it in self.layout.pool}
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise DataError(f"{self.root}: {len(unknown)} recorded image(s) are missing "
                                f"({', '.join(unknown[:5])}); restore them or train again")
            self.items = [by_id[i] for i in ids]
        elif split in self.layout.splits:
            self.items = list(self.layout.splits[split])
        else:
            raise DataError(f"{self.root}: no {split} split; give it in data.yaml ({split}: "
                            f"images/{split}) or as images/{split}/")
        self.class_names = tuple(classes) if classes is not None else names
        label_of = {n: k + 1 for k, n in enumerate(self.class_names)}
        other = [n for n in names if n not in label_of]
        if other and not drop_other_classes:
            raise DataError(f"{self.root}: class {other[0]!r} is not one of the classes "
                            f"{', '.join(self.class_names[:12])}; add it or drop it (--classes)")
        self._label_of_id = np.array([label_of.get(n, 0) for n in names], np.int64)  # (K0,)
        self._annotations, self._lock = {}, threading.Lock()

    def __len__(self):
        return len(self.items)

    def image_path(self, i) -> str:
        return self.items[i].image

    def annotation(self, i) -> Annotation:
        ann = self._annotations.get(i)
        if ann is None:
            it = self.items[i]
            width, height = image_size(it.image)
            if it.label is None:
                cls, b = np.zeros(0, np.int64), np.zeros((0, 4))
            else:
                cls, b = read_labels(it.label, len(self._label_of_id))
            labels = self._label_of_id[cls]                                    # (G,)
            corners = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
            keep = labels > 0
            ann = Annotation(np.clip(corners[keep], 0.0, 1.0).astype(np.float32),
                             labels[keep], np.zeros(int(keep.sum()), bool), it.image_id,
                             width, height)
            with self._lock:
                self._annotations[i] = ann
        return ann

    def __getitem__(self, i) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        ann = self.annotation(i)
        image = load_image(self.image_path(i), bad_fix="replace it or remove it and its "
                           "label file")
        return Sample(image, ann.boxes, ann.labels, ann.difficult, ann.image_id)


def write_yolo(dataset, out) -> str:
    """Write a dataset (annotation(i), image_path(i), class_names) as a YOLO folder:
    out/images/<split>/<name> (a hard link, else a copy, of each image),
    out/labels/<split>/<stem>.txt and out/data.yaml; difficult objects are left out (YOLO has
    no such flag). dataset: a dict {"train": ds, "val": ds}. Returns out."""
    import shutil
    first = next(iter(dataset.values()))
    for split, ds in dataset.items():
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(out, sub, split), exist_ok=True)
        for i in range(len(ds)):
            a = ds.annotation(i)
            src = ds.image_path(i)
            dest = os.path.join(out, "images", split, os.path.basename(src))
            if not os.path.exists(dest):
                try:
                    os.link(src, dest)
                except OSError:
                    shutil.copyfile(src, dest)
            b = a.boxes[~a.difficult].astype(np.float64)                       # (G, 4)
            lines = [f"{int(c) - 1} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} "
                     f"{y1 - y0:.6f}\n"
                     for c, (x0, y0, x1, y1) in zip(a.labels[~a.difficult], b)]
            stem = os.path.splitext(os.path.basename(src))[0]
            with open(os.path.join(out, "labels", split, stem + ".txt"), "w",
                      encoding="utf-8") as f:
                f.write("".join(lines))
    with open(os.path.join(out, "data.yaml"), "w", encoding="utf-8") as f:
        f.write("path: .\n" + "".join(f"{s}: images/{s}\n" for s in dataset) + "names:\n" +
                "".join(f"  {k}: {_yaml_str(n)}\n" for k, n in enumerate(first.class_names)))
    return out


def _yaml_str(name):
    """A class name as a YAML scalar (quoted, so 'yes', '1' or 'a: b' stay strings)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
