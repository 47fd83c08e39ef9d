"""What a dataset holds, read from its annotations alone (no image is decoded): every object's
box, class and image, each image's size, and the annotations' problems.

Dimension letters: G objects over all images of a split, I images.

Problems found (each a Problem(kind, where, detail)):
    unreadable     the reader refuses the annotation (invalid XML, a zero-size or inverted
                   box, a box wholly outside the image, ...): its own one-line message
    outside        a box reaching past the image's border (the readers clip it)
    duplicate      two boxes of the same class in one image with IoU >= DUPLICATE_IOU
    empty          an image without objects (a background image: fine in moderation)
    few            a class with fewer than FEW_OBJECTS training objects, or none to validate
"""
from __future__ import annotations

from typing import NamedTuple
from xml.etree import ElementTree

import numpy as np

from ..boxes import iou
from ..data.voc import DataError

DUPLICATE_IOU = 0.9       # same class, this much overlap: almost surely one object labelled twice
FEW_OBJECTS = 20          # fewer training objects than this: the class's AP will be noisy


class Problem(NamedTuple):
    kind: str             # "unreadable", "outside", "duplicate", "empty", "few"
    where: str            # a file, an image id or a class name
    detail: str


class Objects(NamedTuple):
    """The objects of one split."""
    split: str
    boxes: np.ndarray     # (G, 4) normalised corners
    labels: np.ndarray    # (G,) int64 1..K
    image: np.ndarray     # (G,) int64: index of the object's image in the dataset
    sizes: np.ndarray     # (I, 2) int: each image's (width, height) in pixels; 0 when unreadable
    ids: list             # (I,) image ids
    problems: list        # [Problem]


def collect(dataset, split, limit=None) -> Objects:
    """Read the annotations of the first `limit` images (all) of a VOCDataset or COCODataset."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    boxes, labels, image, problems, ids = [], [], [], [], []
    sizes = np.zeros((n, 2), np.int64)
    for i in range(n):                                     # one loop over images
        try:
            ann = dataset.annotation(i)
        except DataError as e:
            problems.append(Problem("unreadable", str(e).split(":")[0], str(e)))
            ids.append(str(i))
            continue
        ids.append(ann.image_id)
        sizes[i] = (ann.width, ann.height)
        if len(ann.labels) == 0:
            problems.append(Problem("empty", ann.image_id, "no objects"))
        outside = _outside_count(dataset, i, ann)
        if outside:
            problems.append(Problem("outside", ann.image_id,
                                    f"{outside} box(es) reach past the {ann.width}x{ann.height} "
                                    "image (clipped when read)"))
        problems += _duplicates(ann)
        boxes.append(ann.boxes.reshape(-1, 4))
        labels.append(ann.labels.reshape(-1))
        image.append(np.full(len(ann.labels), i))
    cat = lambda parts, shape, dt: np.concatenate(parts + [np.zeros(shape, dt)])  # noqa: E731
    return Objects(split, cat(boxes, (0, 4), np.float32).astype(np.float64),
                   cat(labels, (0,), np.int64), cat(image, (0,), np.int64), sizes, ids, problems)


def class_problems(train: Objects, val: Objects | None, class_names) -> list:
    """"few": classes with fewer than FEW_OBJECTS training objects or none in validation."""
    out = []
    for c, name in enumerate(class_names, start=1):
        n = int((train.labels == c).sum())
        if n < FEW_OBJECTS:
            out.append(Problem("few", name, f"{n} training object(s); fewer than "
                               f"{FEW_OBJECTS} give a noisy AP: label more, or merge classes"))
        if val is not None and len(val.ids) and not (val.labels == c).any():
            out.append(Problem("few", name, "no validation object, so it gets no AP"))
    return out


def _duplicates(ann) -> list:
    """Pairs of same-class boxes of one image with IoU >= DUPLICATE_IOU."""
    b = np.asarray(ann.boxes, np.float64).reshape(-1, 4)
    if len(b) < 2:
        return []
    overlap = iou(b, b)                                                   # (G, G)
    same = ann.labels[:, None] == ann.labels[None, :]
    pairs = np.argwhere(np.triu(same & (overlap >= DUPLICATE_IOU), k=1))
    return [Problem("duplicate", ann.image_id, f"objects {a} and {c} (IoU {overlap[a, c]:.2f})")
            for a, c in pairs]


def _outside_count(dataset, i, ann) -> int:
    """Boxes of image i that reach past its border in the file itself (the readers clip them,
    so the normalised boxes no longer show it): VOC's 1-based xmin < 1 or xmax > width, COCO's
    x < 0 or x + w > width."""
    if hasattr(dataset, "xml_path"):
        path = dataset.xml_path(i)
        if path is None:
            return 0
        count = 0
        for obj in ElementTree.parse(path).getroot().iter("object"):
            try:
                x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{t}"))
                                  for t in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                continue
            count += x0 < 1 or y0 < 1 or x1 > ann.width or y1 > ann.height
        return count
    objects = getattr(dataset, "file", None)
    if objects is None:
        return 0
    found = objects.objects.get(dataset.images[i][0])
    if found is None:
        return 0
    bbox = found[2]                                                       # (G, 4) x, y, w, h
    out = (bbox[:, 0] < 0) | (bbox[:, 1] < 0) | (bbox[:, 0] + bbox[:, 2] > ann.width) | \
        (bbox[:, 1] + bbox[:, 3] > ann.height)
    return int(out.sum())
