"""Where the images of a dataset folder are: the layouts --voc-root accepts, the class names
found in the annotations, and the validation split made when the folder gives none.

Three layouts (find_layout tells them apart):

    VOCdevkit/                 a VOC-format folder            a flat export (labelImg, CVAT,
      VOC2007/ (VOC-format)      JPEGImages/<id>.jpg            Roboflow)
      VOC2012/ ...               Annotations/<id>.xml             <id>.jpg  <id>.xml  ...
                                 ImageSets/Main/train.txt ...   or train/, valid/ (or val/),
                                   (optional)                     test/ holding such pairs
                                 labels.txt (optional)          labels.txt / classes.txt

Images are .jpg, .jpeg or .png in any letter case. An image without an XML (or an XML without
objects) is a background image. A VOCdevkit is read through its split files only
(data/voc.py); the two other layouts are indexed here: image id -> (image file, XML or None).
In a flat export with subfolders, an image id is "<subfolder>/<stem>" and the subfolders are
the splits "train", "val" and "test".

Where no validation split is given, `hash_split` makes one from a hash of each image id
(SHA-1 of the id string: the same on every machine and Python, unlike hash()), so adding
images never moves an old image from one side to the other.
"""
from __future__ import annotations

import collections
import hashlib
import os
from typing import NamedTuple

from defusedxml import ElementTree

from ..config import VOC_CLASS_NAMES
from ..untrusted import is_regular_file, open_regular, printable

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The subfolders of a flat export that are splits, and the split each one is.
SPLIT_FOLDERS = (("train", "train"), ("valid", "val"), ("val", "val"), ("test", "test"))
LABEL_FILES = ("labels.txt", "classes.txt")      # labels.txt wins; classes.txt is labelImg's
VAL_FRACTION = 0.1                               # the share of a made validation split


class Item(NamedTuple):
    """One image of a folder: its id, its image file and its XML (None: a background image)."""
    image_id: str
    image: str
    xml: str | None


class Layout(NamedTuple):
    """What find_layout found in a --voc-root folder."""
    kind: str          # "devkit", "voc" (VOC-format folder) or "flat"
    root: str
    items: dict        # image id -> Item, sorted by id ({} for a devkit: see data/voc.py)
    splits: dict       # split name -> [image ids] given by the folder itself (subfolders)


def find_layout(root) -> Layout | None:
    """The layout of `root`, or None when it is none of them (the caller says what to do)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return None
    if os.path.isdir(os.path.join(root, "JPEGImages")):
        items = _pairs(os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations"))
        return Layout("voc", root, items, {})
    if any(os.path.isdir(os.path.join(root, f"VOC{y}")) for y in ("2007", "2012")):
        return Layout("devkit", root, {}, {})
    items, splits = {}, {}
    for folder, split in SPLIT_FOLDERS:
        path = os.path.join(root, folder)
        if split in splits or not os.path.isdir(path):
            continue
        found = _pairs(path, path, prefix=folder + "/")
        if found:
            items.update(found)
            splits[split] = list(found)
    if not splits:
        items = _pairs(root, root)
    if not items:
        return None
    return Layout("flat", root, dict(sorted(items.items())), splits)


def _pairs(image_folder, xml_folder, prefix="") -> dict:
    """{id: Item} of the images in image_folder, each with the same-stem XML in xml_folder."""
    xmls = {}
    if os.path.isdir(xml_folder):
        for name in os.listdir(xml_folder):
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".xml" and is_regular_file(os.path.join(xml_folder, name)):
                xmls[stem] = os.path.join(xml_folder, name)     # not a FIFO named a.xml
    items = {}
    for name in sorted(os.listdir(image_folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS or prefix + stem in items:
            continue          # not an image, or a second file of that stem (a.jpg, a.png)
        path = os.path.join(image_folder, name)
        if is_regular_file(path):
            items[prefix + stem] = Item(prefix + stem, path, xmls.get(stem))
    return items


def labels_file(root) -> str | None:
    """labels.txt (or labelImg's classes.txt) in root, when there is one."""
    for name in LABEL_FILES:
        path = os.path.join(root, name)
        if os.path.exists(path) and not os.path.isdir(path):   # a FIFO: refused when read
            return path
    return None


def count_classes(xml_paths) -> collections.Counter:
    """{class name: number of objects} over the XML files (unreadable ones are left to the
    reader, which names them when their image is used)."""
    counts = collections.Counter()
    for path in xml_paths:
        if path is None:
            continue
        try:
            with open_regular(path) as f:
                root = ElementTree.parse(f).getroot()
        except Exception:                # ParseError, a missing file, defusedxml's refusals
            continue
        for obj in root.iter("object"):
            name = printable((obj.findtext("name") or "").strip())
            if name:
                counts[name] += 1
    return counts


def order_classes(names) -> tuple:
    """Class names in label order: VOC's canonical order when they are all VOC names (so a
    VOC subset keeps VOC's numbering of them), else sorted."""
    names = set(names)
    if names and names <= set(VOC_CLASS_NAMES):
        return tuple(n for n in VOC_CLASS_NAMES if n in names)
    return tuple(sorted(names))


def hash_fraction(image_id) -> float:
    """A number in [0, 1) fixed by the id alone (SHA-1 of its UTF-8 bytes; a file name that is
    not UTF-8 hashes its own bytes, which Python keeps as surrogate escapes)."""
    digest = hashlib.sha1(image_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def hash_split(ids, fraction=VAL_FRACTION) -> tuple:
    """(train ids, val ids): an id goes to val when its hash_fraction is below `fraction`,
    so each id's side never depends on the others. At least one image goes to val (the one
    with the smallest hash) and at least one stays in train; needs two images or more."""
    ids = list(ids)
    if len(ids) < 2:
        raise ValueError("a validation split needs at least two images")
    h = {i: hash_fraction(i) for i in ids}
    val = {i for i in ids if h[i] < fraction}
    if not val:
        val = {min(ids, key=h.get)}
    if len(val) == len(ids):
        val.discard(max(ids, key=h.get))
    return [i for i in ids if i not in val], [i for i in ids if i in val]
