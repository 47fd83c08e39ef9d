"""The PASCAL VOC reader: a VOCdevkit, or one VOC-format folder such as the synthetic set.

Dimension letters: H, W image height and width in pixels, G ground-truth objects, K classes.

Two layouts are read:

    VOCdevkit/                        one VOC-format folder
      VOC2007/                          JPEGImages/<id>.jpg
        JPEGImages/<id>.jpg             Annotations/<id>.xml
        Annotations/<id>.xml            ImageSets/Main/train.txt, val.txt
        ImageSets/Main/trainval.txt     labels.txt   (one class name per line, label order 1..K)
      VOC2012/ ...
    splits "2007/trainval", "2012/trainval", "2007/test"      splits "train", "val"

Box convention. VOC XML stores 1-based, inclusive pixel indices: a box whose leftmost pixel
column is the first one has xmin = 1. As ssd.pytorch does, all four coordinates become 0-based
indices (subtract 1) and are divided by the image width or height:

    box = ((xmin - 1) / W, (ymin - 1) / H, (xmax - 1) / W, (ymax - 1) / H)

so boxes are normalised corners in [0, 1]. The synthetic writer uses the same convention, so
a box written and read back is exact.

Bad input raises DataError (a ValueError) naming the file, the problem and the fix. A box that
sticks out of the image is clipped, with one warning per dataset; an image without objects is
allowed (G = 0).

Files from strangers (minissd/untrusted.py): every file is opened only when it is a regular
file (a FIFO named a.xml is refused, not waited on); numbers must be finite (nan, inf, 1e999
are errors naming the file and field); split-file ids may not leave the VOCdevkit
("../x"); class names have their control characters escaped (untrusted.printable); text
files (labels.txt, split files) must be UTF-8.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import NamedTuple

import math
from struct import error as struct_error

import numpy as np
from defusedxml import ElementTree
from PIL import Image

from ..config import VOC_CLASS_NAMES
from ..untrusted import (NotARegularFile, inside, is_regular_file, open_regular, printable,
                         read_text)
from .folders import (Item, count_classes, find_layout, labels_file,
                      order_classes)

VOC_CLASSES = VOC_CLASS_NAMES       # the 20 PASCAL VOC classes; label i is VOC_CLASSES[i - 1]


class DataError(ValueError):
    """A dataset file is missing or malformed. The message names the file and the fix."""


class Sample(NamedTuple):
    image: np.ndarray       # (H, W, 3) uint8 RGB
    boxes: np.ndarray       # (G, 4) float32 normalised corners (xmin, ymin, xmax, ymax)
    labels: np.ndarray      # (G,) int64 in 1..K
    difficult: np.ndarray   # (G,) bool
    image_id: str


class Annotation(NamedTuple):
    """The ground truth of one image, read from its XML alone (no image decoding)."""
    boxes: np.ndarray       # (G, 4) float32 normalised corners
    labels: np.ndarray      # (G,) int64 in 1..K
    difficult: np.ndarray   # (G,) bool
    image_id: str
    width: int
    height: int


def read_labels_file(path) -> tuple:
    """Class names from a labels.txt: one name per line, label order 1..K; blank lines skipped."""
    names = tuple(printable(line.strip()) for line in _text(path, "class list").splitlines()
                  if line.strip())
    if not names:
        raise DataError(f"{path}: no class names found; write one class name per line")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name appears twice; each line must be a different class")
    return names


def _text(path, what):
    """A small UTF-8 text file's content (untrusted.read_text), errors as DataError."""
    try:
        return read_text(path, what)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (ValueError, OSError) as e:
        raise DataError(str(e)) from None


# 16-bit and 32-bit grayscale modes: Pillow's convert("RGB") clips them at 255 (solid white).
_WIDE_GRAY = {"I;16": 257.0, "I;16L": 257.0, "I;16B": 257.0, "I;16N": 257.0, "I": 257.0}


def _to_rgb8(im) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded Pillow image. A 16-bit grayscale PNG (mode I;16, or I
    for a 32-bit integer one read as 16-bit values) is scaled to 8 bits (v / 257: 65535 ->
    255), a float image (F) clipped to 0..255, rather than clipped to solid white."""
    if im.mode in _WIDE_GRAY or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)                                  # (H, W)
        if im.mode != "F":
            a = a / _WIDE_GRAY[im.mode]
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)                            # (H, W, 3)
    if im.mode != "RGB":
        # A palette image with transparency converts through RGBA first, which
        # Pillow asks for; the alpha channel is then dropped.
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def load_image(path, missing_fix="check the path", bad_fix="replace it") -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (grayscale, 16-bit grayscale, CMYK,
    palette, RGBA converted: _to_rgb8).

    A missing or undecodable file is a DataError naming the file; missing_fix and bad_fix are
    what the caller tells the user to do (a dataset names its split or annotation file). A
    path that is not a regular file (a FIFO, a device) is refused without opening it."""
    try:
        with open_regular(path) as f, Image.open(f) as im:
            im.load()                       # decode now: a truncated file fails here
            return _to_rgb8(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; {missing_fix}") from None
    except (OSError, SyntaxError, ValueError, ArithmeticError, Image.DecompressionBombError,
            struct_error, EOFError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e}); the file is "
                        f"truncated or not an image: {bad_fix}") from None


def image_size(path) -> tuple:
    """(width, height) of an image file from its header (no decoding)."""
    try:
        with open_regular(path) as f, Image.open(f) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, ArithmeticError, Image.DecompressionBombError,
            struct_error, EOFError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e}); replace "
                        "the file or remove it") from None


class VOCDataset:
    """Images and ground truth of one or more splits of a VOCdevkit, a VOC-format folder or a
    flat export (data/folders.py describes the three layouts).

    root:           a VOCdevkit folder (VOC2007/, VOC2012/ inside), one VOC-format folder, or a
                    flat export (images and same-stem .xml files, maybe in train/ valid/ test/)
    splits:         ("2007/trainval", "2012/trainval") for a VOCdevkit; ("train",) for a
                    folder (ImageSets/Main/train.txt, or a flat export's train/ subfolder);
                    ("all",) every image of a folder or flat export
    classes:        class names, label order 1..K; None -> labels.txt (or classes.txt) when
                    present, else VOC's 20 for a VOCdevkit, else the names in the annotations
                    (folders.order_classes)
    keep_difficult: keep objects marked difficult (training drops them; evaluation keeps them)
    ids:            these image ids instead of `splits` (a folder or flat export; a made split)
    drop_other_classes: objects of classes not in `classes` are dropped instead of being an
                    error (training on a chosen subset, --classes)

    len(ds) images; ds[i] -> Sample; ds.annotation(i) -> Annotation without decoding the image;
    ds.class_names the K names.
    """

    def __init__(self, root, splits=("2007/trainval",), classes=None, keep_difficult=False,
                 ids=None, drop_other_classes=False):
        if isinstance(splits, str):
            splits = (splits,)
        self.root = os.fspath(root)
        self.keep_difficult = keep_difficult
        self.drop_other_classes = drop_other_classes
        found = find_layout(self.root)
        if found is None:
            raise DataError(_not_a_dataset(self.root))
        self.items = []                     # every image as a folders.Item
        if ids is not None:
            self.items = _listed_items(found, list(ids), f"{self.root} (the recorded split)")
        else:
            for split in splits:
                self.items += _split_items(found, split)
        if classes is None:
            path = labels_file(self.root)
            if path is not None:
                classes = read_labels_file(path)
            elif found.kind == "devkit":
                classes = VOC_CLASSES
            else:
                classes = order_classes(count_classes(it.xml for it in self.items))
        self.class_names = tuple(classes)
        self._label_of = {name: i + 1 for i, name in enumerate(self.class_names)}
        self._annotations = {}              # index -> Annotation, parsed once
        self._clip_warned = False
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.items)

    def image_path(self, i) -> str:
        return self.items[i].image

    def xml_path(self, i) -> str | None:
        """The image's XML file; None for a background image without one."""
        return self.items[i].xml

    def annotation(self, i) -> Annotation:
        """Ground truth of image i from its XML (cached); difficult objects dropped unless
        keep_difficult."""
        ann = self._annotations.get(i)
        if ann is None:
            ann = self._parse(i)
            self._annotations[i] = ann
        return ann

    def ground_truths(self) -> list:
        """Every image's ground truth as minissd.metrics.evaluate_detections wants it:
        [{"boxes": (G, 4), "labels": (G,), "difficult": (G,) bool}, ...]."""
        out = []
        for i in range(len(self)):
            a = self.annotation(i)
            out.append({"boxes": a.boxes, "labels": a.labels, "difficult": a.difficult})
        return out

    def __getitem__(self, i) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        ann = self.annotation(i)
        path = self.image_path(i)
        image = load_image(path, missing_fix="every id listed in the split file needs "
                           "JPEGImages/<id>.jpg",
                           bad_fix="replace it, or remove its id from the split file")
        h, w = image.shape[:2]
        if (w, h) != (ann.width, ann.height):
            raise DataError(f"{path}: image is {w}x{h} but {self.xml_path(i)} says "
                            f"<size> {ann.width}x{ann.height}; fix the <size> field")
        return Sample(image, ann.boxes, ann.labels, ann.difficult, ann.image_id)

    def _parse(self, i) -> Annotation:
        """Read one XML file into an Annotation, checking every field. An image without an
        XML is a background image (no objects); an XML without <size> takes the image's."""
        path = self.xml_path(i)
        image_id = self.items[i].image_id
        if path is None:
            width, height = image_size(self.image_path(i))
            return Annotation(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                              np.zeros(0, bool), image_id, width, height)
        try:
            with open_regular(path) as f:
                tree = ElementTree.parse(f)
        except FileNotFoundError:
            raise DataError(f"{path}: annotation file not found; every id in the split file "
                            "needs Annotations/<id>.xml") from None
        except NotARegularFile as e:
            raise DataError(str(e)) from None
        except Exception as e:              # ParseError and defusedxml's refusals
            raise DataError(f"{path}: not valid XML ({type(e).__name__}: {e}); fix or "
                            "regenerate the file") from None
        root = tree.getroot()
        width = _int_field(root, "size/width", path)
        height = _int_field(root, "size/height", path)
        if width is None or height is None or (width == 0 and height == 0):
            width, height = image_size(self.image_path(i))     # no <size>: the image's own
        if width <= 0 or height <= 0:
            raise DataError(f"{path}: <size> is {width}x{height}; width and height must be > 0")

        boxes, labels, difficult = [], [], []
        clipped = False
        for k, obj in enumerate(root.iter("object")):
            name = printable((obj.findtext("name") or "").strip())
            if name not in self._label_of:
                if self.drop_other_classes:
                    continue            # a class this run does not train on
                raise DataError(
                    f"{path}: object {k} has unknown class {name!r}; known classes are "
                    f"{', '.join(self.class_names)}. Add it to labels.txt or pass classes=")
            is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
            if obj.find("bndbox") is None:
                raise DataError(f"{path}: object {k} ({name}) has no <bndbox>; add "
                                "<bndbox><xmin>..</xmin><ymin>..</ymin><xmax>..</xmax>"
                                "<ymax>..</ymax></bndbox>")
            x0, y0, x1, y1 = (_float_field(obj, f"bndbox/{t}", path, k)
                              for t in ("xmin", "ymin", "xmax", "ymax"))
            if x1 <= x0 or y1 <= y0:
                kind = "inverted" if (x1 < x0 or y1 < y0) else "zero-size"
                raise DataError(f"{path}: object {k} ({name}) has an {kind} box "
                                f"xmin={x0:g} ymin={y0:g} xmax={x1:g} ymax={y1:g}; "
                                "xmax must exceed xmin and ymax exceed ymin")
            if is_difficult and not self.keep_difficult:
                continue                # checked like every object, then dropped
            if x0 < 1 or y0 < 1 or x1 > width or y1 > height:
                clipped = True
            boxes.append(((x0 - 1) / width, (y0 - 1) / height, (x1 - 1) / width,
                          (y1 - 1) / height))
            labels.append(self._label_of[name])
            difficult.append(is_difficult)

        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)   # (G, 4)
        if clipped:
            empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if empty.any():
                raise DataError(f"{path}: a box lies entirely outside the {width}x{height} "
                                "image; fix its coordinates or the <size> field")
            self._warn_clip_once(path, width, height)
        return Annotation(boxes, np.asarray(labels, np.int64), np.asarray(difficult, bool),
                          image_id, width, height)

    def _warn_clip_once(self, path, width, height):
        with self._lock:
            if self._clip_warned:
                return
            self._clip_warned = True
        warnings.warn(f"{path}: a box extends outside the {width}x{height} image and was "
                      "clipped to it (further clipped boxes in this dataset are not reported)",
                      stacklevel=3)


def _not_a_dataset(root) -> str:
    """The error for a --voc-root that is none of the layouts."""
    what = "does not exist" if not os.path.isdir(root) else "is none of the dataset layouts"
    return (f"{root}: {what}; expected a VOCdevkit (VOC2007/, VOC2012/), a VOC-format folder "
            "(JPEGImages/, Annotations/, optional ImageSets/Main/*.txt), or a flat export with "
            "images (.jpg/.jpeg/.png) and same-stem .xml files, side by side or in train/, "
            "valid/, test/; or generate one: python -m minissd.data.synthetic --out DIR")


def _split_items(found, split) -> list:
    """The Items of one split of a Layout: a split file (devkit, VOC-format folder), a flat
    export's subfolder, or "all" (every image of a folder)."""
    root = found.root
    if found.kind != "devkit" and split == "all":
        return list(found.items.values())
    if found.kind == "flat":
        if split not in found.splits:
            given = ", ".join(found.splits) or "none (one folder of images: use 'all')"
            raise DataError(f"{root}: split {split!r} not found; this flat export has the "
                            f"splits {given} (subfolders train/, valid/ or val/, test/)")
        return [found.items[i] for i in found.splits[split]]
    folder, list_file = _split_paths(root, found.kind, split)
    ids = [line.split()[0] for line in _text(list_file, "split file").splitlines()
           if line.strip()]
    if found.kind == "devkit":
        found = found._replace(items=_devkit_items(folder, ids, list_file))
    return _listed_items(found, ids, list_file)


def _devkit_items(folder, ids, list_file="the split file") -> dict:
    """{id: Item} of a VOCdevkit year folder: JPEGImages/<id>.jpg, Annotations/<id>.xml.
    An id that would leave those folders ("../x", "/etc/x", "a/b") is a DataError."""
    bad = [i for i in ids if "/" in i or inside(folder, i) is None]
    if bad:
        raise DataError(f"{list_file}: image id {printable(bad[0])!r} is a path, not a file "
                        "name (ids may not contain / or ..); fix the split file")
    return {i: Item(i, os.path.join(folder, "JPEGImages", i + ".jpg"),
                    os.path.join(folder, "Annotations", i + ".xml")) for i in ids
            if is_regular_file(os.path.join(folder, "JPEGImages", i + ".jpg"))}


def _listed_items(found, ids, listed_in) -> list:
    """The Items of `ids`; DataError naming `listed_in` when some have no image file."""
    missing = [i for i in ids if i not in found.items]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{listed_in}: {len(missing)} of its {len(ids)} images are missing "
                        f"({shown}); restore the image files, or remove their ids from the "
                        "list")
    return [found.items[i] for i in ids]


def _split_paths(root, layout, split):
    """(folder, split list file) of one split, or a DataError listing what was expected. A
    split name that would leave the folder ("../x", a checkpoint's crafted data spec) is a
    DataError."""
    if not isinstance(split, str) or ".." in split or split.startswith("/") or "\\" in split \
            or split.count("/") > 1:
        raise DataError(f"{root}: split {printable(split)!r} is not a split name (like "
                        "'train' or '2007/trainval'); a split cannot name another folder")
    if layout == "devkit":
        if "/" not in split:
            raise DataError(f"{root}: split {split!r} needs a year for a VOCdevkit, e.g. "
                            "'2007/trainval', '2012/trainval' or '2007/test'")
        year, name = split.split("/", 1)
        folder = os.path.join(root, f"VOC{year}")
    else:
        if "/" in split:
            raise DataError(f"{root}: split {split!r} has a year, but this is one VOC-format "
                            "folder (no VOC2007/ inside); use 'train' or 'val'")
        name, folder = split, root
    list_file = os.path.join(folder, "ImageSets", "Main", f"{name}.txt")
    if not os.path.isfile(list_file):
        main = os.path.join(folder, "ImageSets", "Main")
        found = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt")
                       and "_" not in f) if os.path.isdir(main) else []
        raise DataError(f"{list_file}: split file not found for split {split!r}. Expected "
                        f"ImageSets/Main/{name}.txt under {folder}; splits found there: "
                        f"{', '.join(found) or 'none'}")
    return folder, list_file


MAX_PIXELS_SIDE = 1 << 20      # a <size> above a million pixels a side is not an image


def _int_field(node, tag, path) -> int | None:
    """An integer field, or None when it is absent or empty; nan, inf and absurd sizes are a
    DataError naming the field."""
    text = node.findtext(tag)
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: <{tag}> is {printable(text[:40])!r}, not a number; write "
                        "the image's size in pixels, or delete the <size> element") from None
    if not math.isfinite(value) or abs(value) > MAX_PIXELS_SIDE:
        raise DataError(f"{path}: <{tag}> is {printable(text.strip()[:40])!r}; write the "
                        "image's size in pixels (a finite number), or delete the <size> "
                        "element")
    return int(value)


def _float_field(node, tag, path, k) -> float:
    """A box coordinate: a finite number (nan, inf, 1e999 are a DataError naming it)."""
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise DataError(f"{path}: object {k} has no <{tag.split('/')[-1]}> in <bndbox>; "
                        "each box needs xmin, ymin, xmax, ymax")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: object {k} <{tag}> is {printable(text[:40])!r}, not a "
                        "number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: object {k} <{tag}> is {printable(text.strip()[:40])!r}; "
                        "box coordinates must be finite pixel positions")
    return value
