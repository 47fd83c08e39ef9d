"""The COCO reader: an images folder and a COCO "instances" annotation file (JSON).

Dimension letters: H, W image height and width in pixels, G ground-truth objects, K classes.

    --coco-root DIR   the folder the file's "file_name"s are relative to (COCO: train2017/)
    --coco-ann FILE   {"images":      [{"id", "file_name", "width", "height"}, ...],
                       "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h],
                                        "iscrowd" (0/1, optional), "area" (optional)}, ...],
                       "categories":  [{"id", "name"}, ...]}

Classes. The categories sorted by id become labels 1..K with their names, so COCO's 80
categories, whose ids run 1..90 with gaps, are labels 1..80 in id order (config.py's
COCO_CLASS_NAMES). With `classes` given, a category is the label of its NAME in that list
(a model trained on one file, evaluated on another).

Box convention. COCO boxes are [x, y, width, height] in pixels, continuous coordinates with
the image spanning [0, W] x [0, H]; they become normalised corners

    box = (x / W, y / H, (x + width) / W, (y + height) / H)

(ssd.pytorch's COCO transform does the same). A box that sticks out of the image is clipped,
with one warning per dataset; a box entirely outside the image is an error; a box with zero
width or height (a few exist in COCO's own files) is dropped, with one warning.

Crowds. An annotation with iscrowd 1 (a region of many objects) is returned as a "difficult"
object: training leaves it out (keep_difficult=False), evaluation keeps it, and both metrics
then ignore detections of it (VOC's difficult rule, COCO's crowd rule: metrics.coco_eval).

Images without annotations are background images (G = 0). Bad input raises DataError (a
ValueError) naming the file, the problem and the fix: a file that is not COCO JSON, an
annotation of an unknown image or category id, an image file missing under the root, a box
outside its image.

Files from strangers (minissd/untrusted.py): ids must be integers or strings; numbers
(bbox, width, height, area) must be finite (JSON's NaN and Infinity are refused, naming the
field); iscrowd is 0 or 1 (also written "0", "1", false, true); a file_name must stay under
the images folder (no "../", no absolute path); category names have their control
characters escaped; a file with no annotations at all is read with a warning (every image a
background image); the JSON is read only from a regular file, and nesting too deep for
Python is a DataError.
"""
from __future__ import annotations

import json
import math
import os
import threading
import warnings
from typing import NamedTuple

import numpy as np

from ..untrusted import (NotARegularFile, inside, is_regular_file, open_regular, printable)
from .voc import DataError, Sample, image_size, load_image

MAX_SIDE = 1 << 20          # an image width or height above a million pixels is not an image


class CocoAnnotation(NamedTuple):
    """The ground truth of one image, from the annotation file alone (no image decoding)."""
    boxes: np.ndarray       # (G, 4) float32 normalised corners
    labels: np.ndarray      # (G,) int64 in 1..K
    difficult: np.ndarray   # (G,) bool: iscrowd
    image_id: str           # the image's file_name
    width: int
    height: int
    area: np.ndarray        # (G,) float64 pixel areas: the file's "area", else w * h


class CocoFile(NamedTuple):
    """An annotation file, checked and indexed (read once per process: see read_coco_file)."""
    path: str
    images: list            # [(coco id, file_name, width or None, height or None)], file order
    categories: list        # [(coco id, name)] sorted by id
    objects: dict           # coco image id -> (ann ids (G,), cat ids (G,), bbox (G, 4),
                            #                   iscrowd (G,) bool, area (G,)); absent: none


_CACHE = {}                 # (path, size, mtime) -> CocoFile; COCO's train file is 450 MB
_CACHE_FILES = 2            # a training file and a validation file
_CACHE_LOCK = threading.Lock()


def read_coco_file(path) -> CocoFile:
    """Parse and check a COCO instances file (cached per process while it is unchanged)."""
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found; pass a COCO instances file "
                        "(e.g. annotations/instances_val2017.json) to --coco-ann") from None
    key = (path, st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    parsed = _parse_file(path)
    with _CACHE_LOCK:
        while len(_CACHE) >= _CACHE_FILES:          # the oldest goes: memory is the limit
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = parsed
    return parsed


def _parse_file(path) -> CocoFile:
    try:
        with open_regular(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except NotARegularFile as e:
        raise DataError(str(e)) from None
    except RecursionError:
        raise DataError(f"{path}: the JSON nests deeper than Python can read; a COCO file is "
                        "three levels deep: fix or re-export it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable JSON file ({type(e).__name__}: {e}); fix "
                        "or re-export the COCO annotation file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO instances file (no \"images\" list at the top); "
                        "export the annotations in COCO format")
    anns, cats = data.get("annotations", []), data.get("categories")
    if not isinstance(anns, list) or not isinstance(cats, list) or not cats:
        raise DataError(f"{path}: a COCO instances file needs a non-empty \"categories\" list "
                        "and an \"annotations\" list; export the annotations in COCO format")

    categories = []
    for k, c in enumerate(cats):
        if not isinstance(c, dict) or not _is_id(c.get("id"), int) or "name" not in c:
            raise DataError(f"{path}: categories[{k}] needs an integer \"id\" and a \"name\"")
        categories.append((c["id"], printable(c["name"])))
    categories.sort()
    ids = [c for c, _ in categories]
    names = [n for _, n in categories]
    for what, values in (("id", ids), ("name", names)):
        twice = sorted({v for v in values if values.count(v) > 1}, key=str)
        if twice:
            raise DataError(f"{path}: category {what} {twice[0]!r} appears twice; each "
                            "category needs its own id and name")

    images, known, names_seen = [], set(), set()
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_id(im.get("id")) \
                or not isinstance(im.get("file_name"), str):
            raise DataError(f"{path}: images[{k}] needs an \"id\" (an integer or a string) "
                            "and a \"file_name\"")
        if inside(".", im["file_name"]) is None:
            raise DataError(f"{path}: images[{k}] has file_name "
                            f"{printable(im['file_name'][:80])!r}, which leaves the images "
                            "folder; a file_name is a path relative to --coco-root, without "
                            "'..' and not absolute")
        if im["id"] in known:
            raise DataError(f"{path}: image id {im['id']!r} appears twice in \"images\"")
        if im["file_name"] in names_seen:
            raise DataError(f"{path}: file_name {im['file_name']!r} appears twice in "
                            "\"images\"; each image is listed once")
        known.add(im["id"])
        names_seen.add(im["file_name"])
        w, h = im.get("width"), im.get("height")
        if w is not None and h is not None and not (_positive(w) and _positive(h)):
            raise DataError(f"{path}: image {im['file_name']} has width {w!r} and height "
                            f"{h!r}; write its size in pixels, or leave both out")
        images.append((im["id"], im["file_name"],
                       None if w is None or h is None else int(w),
                       None if w is None or h is None else int(h)))

    per_image = {}
    cat_set = set(ids)
    for k, a in enumerate(anns):
        where = f"{path}: annotation {_name_of(a.get('id', k)) if isinstance(a, dict) else k}"
        if not isinstance(a, dict):
            raise DataError(f"{where} is not an object")
        if not _is_id(a.get("image_id")) or a["image_id"] not in known:
            raise DataError(f"{where} refers to image id {_short(a.get('image_id'))}, which "
                            "is not in \"images\"; add the image or remove the annotation")
        if not _is_id(a.get("category_id"), int) or a["category_id"] not in cat_set:
            shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
            raise DataError(f"{where} has unknown category id {_short(a.get('category_id'))}; the "
                            f"file's categories are ids {shown}. Add the category to "
                            "\"categories\" or remove the annotation")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(map(_finite, box))):
            raise DataError(f"{where} has bbox {_short(box)}; a COCO box is [x, y, width, "
                            "height], four finite numbers in pixels")
        crowd = _CROWD.get(_key(a.get("iscrowd", 0)))
        if crowd is None:
            raise DataError(f"{where} has iscrowd {_short(a.get('iscrowd'))}; write 0 (one "
                            "object) or 1 (a crowd)")
        if a.get("area") is not None and not _finite(a["area"]):
            raise DataError(f"{where} has area {_short(a['area'])}; write the object's area "
                            "in pixels (a finite number), or leave it out")
        per_image.setdefault(a["image_id"], []).append(
            (_key(a.get("id", k)), a["category_id"], box, crowd, a.get("area")))
    if not anns:
        warnings.warn(f"{path}: the file has no annotations: every image is a background "
                      "image (nothing to learn, nothing to find)", stacklevel=3)
    objects = {}
    for image_id, rows in per_image.items():
        bbox = np.array([r[2] for r in rows], np.float64).reshape(-1, 4)       # (G, 4)
        area = np.array([bbox[j, 2] * bbox[j, 3] if r[4] is None else float(r[4])
                         for j, r in enumerate(rows)], np.float64)
        objects[image_id] = (np.array([r[0] for r in rows]),
                             np.array([r[1] for r in rows], np.int64), bbox,
                             np.array([r[3] for r in rows], bool), area)
    return CocoFile(path, images, categories, objects)


def _finite(v):
    """A JSON number that is finite (not NaN, Infinity, nor a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v):
    return _finite(v) and 0 < v <= MAX_SIDE


def _is_id(v, kinds=(int, str)):
    """An id COCO allows: an integer (or a string, for images); never a list or a dict."""
    return isinstance(v, kinds) and not isinstance(v, bool)


def _key(v):
    """v itself when hashable and printable as an id, else its short text."""
    return v if isinstance(v, (int, float, str, bool, type(None))) else _short(v)


def _name_of(v):
    """An id as the messages show it: an int or string as it is (escaped), else _short."""
    return printable(str(v))[:60] if _is_id(v) else _short(v)


def _short(v):
    """A value for an error message: repr, control characters escaped, at most 60 chars."""
    text = printable(repr(v))
    return text if len(text) <= 60 else text[:57] + "..."


# iscrowd as written by the tools: 0/1, false/true, and "0"/"1" (strings, from some exporters)
_CROWD = {0: False, 1: True, "0": False, "1": True}


class COCODataset:
    """Images and ground truth of one COCO annotation file, with VOCDataset's interface.

    root:           the folder the file's file_names are relative to
    ann_file:       the COCO instances JSON file
    classes:        class names, label order 1..K; None -> the file's categories by id
    keep_difficult: keep crowd objects (iscrowd 1) as difficult ones (evaluation does)
    ids:            only these images (file_names), in this order; None: every image of the
                    file, in file order
    drop_other_classes: annotations of categories whose name is not in `classes` are dropped
                    instead of being an error

    len(ds) images; ds[i] -> Sample; ds.annotation(i) -> CocoAnnotation without decoding the
    image; ds.object_areas(i) the pixel areas of sample i's objects; ds.class_names.
    """

    def __init__(self, root, ann_file, classes=None, keep_difficult=False, ids=None,
                 drop_other_classes=False):
        self.root = os.fspath(root)
        self.file = read_coco_file(ann_file)
        self.ann_file = self.file.path
        self.keep_difficult = keep_difficult
        if not os.path.isdir(self.root):
            raise DataError(f"{self.root}: images folder not found; pass the folder that "
                            f"{os.path.basename(self.ann_file)}'s file_names are relative to "
                            "(e.g. train2017/) as --coco-root")
        file_names = {name: (cid, name, w, h) for cid, name, w, h in self.file.images}
        if ids is None:
            self.images = list(self.file.images)
        else:
            unknown = [i for i in ids if i not in file_names]
            if unknown:
                raise DataError(f"{self.ann_file}: {len(unknown)} recorded image(s) are not "
                                f"in the file ({', '.join(unknown[:5])}); evaluate with the "
                                "annotation file the run was trained with")
            self.images = [file_names[i] for i in ids]
        missing = [name for _, name, _, _ in self.images
                   if not is_regular_file(os.path.join(self.root, name))]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataError(f"{self.ann_file}: {len(missing)} of its {len(self.images)} images "
                            f"are missing under {self.root} ({shown}); pass the images "
                            "folder as --coco-root, or restore the files")

        by_id = dict(self.file.categories)
        if classes is None:
            classes = tuple(name for _, name in self.file.categories)
        self.class_names = tuple(classes)
        label_of = {n: k + 1 for k, n in enumerate(self.class_names)}
        if not drop_other_classes:
            other = [n for n in by_id.values() if n not in label_of]
            if other:
                raise DataError(f"{self.ann_file}: category {other[0]!r} is not one of the "
                                f"classes {', '.join(self.class_names[:12])}; add it to the "
                                "classes or drop it (--classes)")
        # category id -> label (0: a class this dataset leaves out)
        self._label_of_cat = {c: label_of.get(n, 0) for c, n in by_id.items()}
        self._annotations = {}
        self._warned = set()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.images)

    def image_path(self, i) -> str:
        return os.path.join(self.root, self.images[i][1])

    def annotation(self, i) -> CocoAnnotation:
        """Ground truth of image i (cached); crowd objects dropped unless keep_difficult."""
        ann = self._annotations.get(i)
        if ann is None:
            ann = self._annotations[i] = self._convert(i)
        return ann

    def object_areas(self, i) -> np.ndarray:
        """(G,) pixel areas of image i's objects (the file's "area", e.g. a mask's; else the
        box's w * h): what COCO's small / medium / large ranges are measured on."""
        return self.annotation(i).area

    def ground_truths(self) -> list:
        """Every image's ground truth as minissd.metrics wants it: [{"boxes", "labels",
        "difficult", "area"}, ...]."""
        return [{"boxes": a.boxes, "labels": a.labels, "difficult": a.difficult,
                 "area": a.area} for a in map(self.annotation, range(len(self)))]

    def __getitem__(self, i) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        ann = self.annotation(i)
        image = load_image(self.image_path(i),
                           missing_fix=f"every file_name in {self.ann_file} must be under "
                           "--coco-root", bad_fix=f"replace it, or remove it from {self.ann_file}")
        h, w = image.shape[:2]
        if (w, h) != (ann.width, ann.height):
            raise DataError(f"{self.image_path(i)}: image is {w}x{h} but {self.ann_file} "
                            f"says {ann.width}x{ann.height}; fix the image's width and "
                            "height there")
        return Sample(image, ann.boxes, ann.labels, ann.difficult, ann.image_id)

    def _convert(self, i) -> CocoAnnotation:
        """One image's annotations as normalised corners and labels, each box checked."""
        coco_id, name, width, height = self.images[i]
        if width is None:
            width, height = image_size(self.image_path(i))      # no size in the file
        empty = CocoAnnotation(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                               np.zeros(0, bool), name, width, height, np.zeros(0))
        if coco_id not in self.file.objects:
            return empty                                        # a background image
        ann_ids, cats, bbox, crowd, area = self.file.objects[coco_id]
        labels = np.array([self._label_of_cat[c] for c in cats], np.int64)
        keep = labels > 0
        if not self.keep_difficult:
            keep &= ~crowd
        flat = (bbox[:, 2] <= 0) | (bbox[:, 3] <= 0)
        if (flat & keep).any():
            self._warn_once("flat", f"{self.ann_file}: annotation {ann_ids[flat & keep][0]} "
                            f"(image {name}) has a box of zero width or height and was dropped "
                            "(further ones in this dataset are not reported)")
        keep &= ~flat
        x0, y0 = bbox[:, 0] / width, bbox[:, 1] / height
        x1, y1 = (bbox[:, 0] + bbox[:, 2]) / width, (bbox[:, 1] + bbox[:, 3]) / height
        corners = np.stack([x0, y0, x1, y1], axis=1)[keep]                    # (G, 4)
        outside = (corners[:, 0] >= 1) | (corners[:, 1] >= 1) | (corners[:, 2] <= 0) | \
            (corners[:, 3] <= 0)
        if outside.any():
            raise DataError(f"{self.ann_file}: annotation {ann_ids[keep][outside][0]} lies "
                            f"entirely outside its {width}x{height} image {name}; fix its "
                            "bbox ([x, y, width, height] in pixels) or the image's size")
        if ((corners < 0) | (corners > 1)).any():
            self._warn_once("clip", f"{self.ann_file}: a box of image {name} extends outside "
                            f"the {width}x{height} image and was clipped to it (further "
                            "clipped boxes in this dataset are not reported)")
        return CocoAnnotation(np.clip(corners, 0.0, 1.0).astype(np.float32), labels[keep],
                              crowd[keep], name, width, height, area[keep])

    def _warn_once(self, kind, message):
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        warnings.warn(message, stacklevel=4)


def write_coco(dataset, path, image_root=None) -> str:
    """Write a dataset (VOCDataset or COCODataset: annotation(i), image_path(i),
    class_names) as a COCO instances file; returns path.

    Open the dataset with keep_difficult=True: its difficult objects are written as crowds
    (iscrowd 1), which both minissd metrics ignore as VOC ignores difficult objects.
    file_name is each image's path relative to image_root (default: the folder of the first
    image), the root to pass as --coco-root. Boxes are written in pixels, rounded to 1/1000
    pixel: a VOC box (integer pixels) read back through COCODataset is the same box.
    """
    n = len(dataset)
    if image_root is None:
        image_root = os.path.dirname(dataset.image_path(0)) if n else "."
    images, annotations = [], []
    for i in range(n):
        a = dataset.annotation(i)
        images.append({"id": i + 1, "width": int(a.width), "height": int(a.height),
                       "file_name": os.path.relpath(dataset.image_path(i), image_root)})
        px = a.boxes.astype(np.float64) * [a.width, a.height, a.width, a.height]   # (G, 4)
        for box, label, hard in zip(px, a.labels, a.difficult):
            x, y, w, h = (round(float(v), 3) for v in (box[0], box[1], box[2] - box[0],
                                                       box[3] - box[1]))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(label), "bbox": [x, y, w, h],
                                "area": round(w * h, 3), "iscrowd": int(hard)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(dataset.class_names)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path
