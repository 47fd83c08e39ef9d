"""A synthetic detection set in VOC format: coloured shapes on textured backgrounds.

    python -m minissd.data.synthetic --out DIR [--num-train N] [--num-val N]
                                     [--image-size S] [--seed S] [--coco] [--yolo]

PASCAL VOC cannot be downloaded everywhere, so this writes a small set with the same layout
(JPEGImages/*.jpg, Annotations/*.xml, ImageSets/Main/{train,val}.txt, labels.txt) that
minissd.data.voc.VOCDataset reads. Six classes differ by SHAPE only (colours are random):

    circle  square  triangle  star  cross  ring

What an image holds (all drawn from one seed, so the same seed gives the same bytes):
- a background: noise, stripes at a random angle, or a two-colour gradient, plus mild noise;
- usually 1 to 4 objects, most 10%-60% of the image side, some up to 95%, a few tiny (~4%);
- in about 1 image in 8, a crowd of 6 to 12 small objects (6%-13% of the side);
- overlaps: objects may overlap and the later one hides part of the earlier one. As the VOC
  annotation guidelines ask, the ground truth box is the box of the VISIBLE part of the shape
  ("not the estimated total extent of the object"); when more than 20% of the shape lies
  outside that box the object is marked truncated. An object with less than 40% of its
  pixels visible is marked difficult (ignored by training and by the VOC metric).

Sizes are chosen so that a small CNN learns the set to VOC07 mAP >= 0.9 in minutes at 128x128.
`ensure_synthetic(...)` generates a set once into a cache folder and reuses it.

--coco (or write_coco_files(root)) also writes the set as COCO instances files,
<out>/coco_train.json and <out>/coco_val.json, with file_names relative to <out>/JPEGImages:
an example of COCO-format data, read by --coco-root <out>/JPEGImages --coco-ann ... .
Difficult objects become crowds (iscrowd 1), which both metrics ignore alike.

--yolo (or write_yolo_files(root)) also writes it in Ultralytics' YOLO layout under
<out>/yolo (images/{train,val} hard-linked to the JPEGs, labels/{train,val}/*.txt, data.yaml),
read by --yolo-root <out>/yolo. YOLO has no difficult flag: difficult objects are left out.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import shutil
import sys
import tempfile
from xml.etree import ElementTree as ET       # writing only; reading uses defusedxml

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
GENERATOR_VERSION = 2           # bump when the output changes, so caches are regenerated
                                # (2: boxes of the visible part, truncated flag)
JPEG_QUALITY = 92
DIFFICULT_VISIBLE = 0.4         # an object with less than this fraction visible is difficult
TRUNCATED_OUTSIDE = 0.2         # truncated: more than this fraction of the shape outside its box


# ----------------------------------------------------------------------------- shapes
def _shape_polygon(kind, cx, cy, rx, ry, angle):
    """Vertices (V, 2) of a polygon shape centred at (cx, cy) with radii rx, ry, rotated."""
    if kind == "triangle":
        t = angle + np.array([0, 2, 4]) * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)                           # (3, 2)
    elif kind == "star":
        t = angle + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)                   # (10, 2)
    elif kind == "cross":
        a = 1 / 3                                   # half the arm thickness, as a radius fraction
        pts = np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1),
                        (-a, a), (-1, a), (-1, -a), (-a, -a)], float)       # (12, 2)
    else:
        raise ValueError(kind)
    return pts * (rx, ry) + (cx, cy)


def _draw_shape(draw, kind, cx, cy, rx, ry, angle, fill):
    """Draw one shape with Pillow. Round shapes take their box; polygons their vertices."""
    if kind in ("circle", "square", "ring"):
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        if kind == "circle":
            draw.ellipse(box, fill=fill)
        elif kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            width = max(2, int(round(0.28 * min(rx, ry))))
            draw.ellipse(box, outline=fill, width=width)
    else:
        pts = _shape_polygon(kind, cx, cy, rx, ry, angle)
        draw.polygon([tuple(p) for p in pts], fill=fill)


# ----------------------------------------------------------------------------- backgrounds
def _background(rng, s):
    """(s, s, 3) float32 textured background in 0..255."""
    kind = rng.integers(3)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s                    # (s, s) each
    if kind == 0:                                   # coarse noise, upsampled
        cells = rng.integers(4, 17)
        coarse = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse, "F").resize((s, s), Image.BILINEAR))
    elif kind == 1:                                 # stripes at a random angle
        a, freq = rng.uniform(0, np.pi), rng.uniform(3, 12)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(a) + yy * np.sin(a)))
    else:                                           # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]                                     # (s, s, 3)
    img += rng.normal(0, rng.uniform(2, 12), (s, s, 1)).astype(np.float32)
    return img.astype(np.float32)


def _object_colour(rng, bg_mean):
    """A random colour far enough from the background's mean colour to be seen."""
    for _ in range(20):
        c = rng.integers(0, 256, 3)
        if np.abs(c - bg_mean).sum() > 120:
            return tuple(int(v) for v in c)
    return tuple(int(v) for v in 255 - bg_mean.astype(int))


# ----------------------------------------------------------------------------- layout
def _object_sizes(rng):
    """Diameters, as fractions of the image side, of the objects in one image."""
    if rng.random() < 0.12:                         # a crowd of small objects
        return rng.uniform(0.06, 0.13, rng.integers(6, 13))
    n = rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15])
    u = rng.random(n)
    mid = np.exp(rng.uniform(np.log(0.10), np.log(0.6), n))        # most objects
    big = rng.uniform(0.6, 0.95, n)
    tiny = rng.uniform(0.04, 0.10, n)
    sizes = np.where(u < 0.85, mid, np.where(u < 0.95, big, tiny))
    return np.sort(sizes)[::-1]                     # big first, so small ones land on top


def _render(rng, s):
    """One image: (s, s, 3) uint8, objects [(class index, (x0, y0, x1, y1) inclusive pixels of
    the visible part, difficult, truncated)]."""
    img = _background(rng, s)
    bg_mean = img.reshape(-1, 3).mean(0)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    ids = Image.new("L", (s, s), 0)                 # which object owns each pixel
    id_draw = ImageDraw.Draw(ids)

    objects = []                                    # (kind, full-shape box, shape mask)
    for size in _object_sizes(rng):
        kind = int(rng.integers(len(CLASSES)))
        d = max(size * s, 4.0)
        aspect = math.exp(rng.uniform(-0.3, 0.3))
        rx, ry = d / 2 * math.sqrt(aspect), d / 2 / math.sqrt(aspect)
        rx, ry = min(rx, s / 2 - 1), min(ry, s / 2 - 1)
        angle = rng.uniform(0, 2 * np.pi)
        # Place it, avoiding heavy overlap with earlier objects (a few tries).
        for _ in range(10):
            cx, cy = rng.uniform(rx, s - 1 - rx), rng.uniform(ry, s - 1 - ry)
            if all(_box_iou((cx - rx, cy - ry, cx + rx, cy + ry), b) < 0.35
                   for _, b, _ in objects):
                break
        # The exact box and area come from the shape drawn alone on a mask.
        mask = Image.new("L", (s, s), 0)
        _draw_shape(ImageDraw.Draw(mask), CLASSES[kind], cx, cy, rx, ry, angle, 255)
        m = np.asarray(mask) > 0                                            # (s, s)
        if m.sum() < 4:
            continue
        cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))   # inclusive pixels
        objects.append((kind, box, m))
        _draw_shape(draw, CLASSES[kind], cx, cy, rx, ry, angle, _object_colour(rng, bg_mean))
        _draw_shape(id_draw, CLASSES[kind], cx, cy, rx, ry, angle, len(objects))

    owner = np.asarray(ids)                                                 # (s, s)
    out = []
    for j, (kind, box, m) in enumerate(objects):
        seen = owner == j + 1                       # the pixels of this shape left visible
        difficult = seen.sum() / m.sum() < DIFFICULT_VISIBLE
        visible = _visible_box(seen, m)
        if visible is None:             # hidden, or a sliver: keep the shape's box, difficult
            visible, difficult = (box, True), True
        out.append((kind, visible[0], difficult, visible[1]))
    return np.asarray(canvas), out


def _visible_box(seen, mask):
    """VOC's box of the visible area: (box, truncated), or None when the visible part has no
    VOC box (nothing visible, or a sliver one pixel thin: a VOC box never has zero size).

    seen: (s, s) bool, the shape's pixels left visible; mask: (s, s) bool, the whole shape.
    box = inclusive pixels (x0, y0, x1, y1); truncated = more than TRUNCATED_OUTSIDE of the
    shape lies outside that box.
    """
    if not seen.any():
        return None
    cols, rows = np.flatnonzero(seen.any(0)), np.flatnonzero(seen.any(1))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    inside = mask[box[1]:box[3] + 1, box[0]:box[2] + 1].sum()
    return box, bool(1 - inside / mask.sum() > TRUNCATED_OUTSIDE)


def _box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------- writing
def _annotation_xml(image_id, s, objects) -> bytes:
    """VOC XML: 1-based inclusive pixel indices (pixel column c is written as c + 1)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "synthetic"
    ET.SubElement(root, "filename").text = image_id + ".jpg"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", s), ("height", s), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for kind, (x0, y0, x1, y1), difficult, truncated in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASSES[kind]
        ET.SubElement(obj, "truncated").text = "1" if truncated else "0"
        ET.SubElement(obj, "difficult").text = "1" if difficult else "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", x0), ("ymin", y0), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bb, tag).text = str(v + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def _jpeg_bytes(image) -> bytes:
    """Deterministic JPEG: fixed quality and subsampling, no EXIF or other metadata."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY,
                                       subsampling=0, optimize=False)
    return buf.getvalue()


def generate(out_dir, num_train=2000, num_val=500, image_size=160, seed=0, progress=False):
    """Write the synthetic set into out_dir (created if needed) and return its path.

    Image j (train first, then val) is drawn from its own generator seeded by (seed, j), so
    the same arguments give the same bytes, image by image.
    """
    if image_size < 32:
        raise ValueError(f"image_size is {image_size}; use at least 32 pixels")
    out_dir = os.fspath(out_dir)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    with open(os.path.join(out_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(CLASSES) + "\n")

    total = num_train + num_val
    ids = [f"{j:06d}" for j in range(total)]
    iterator = range(total)
    if progress:
        from tqdm import tqdm          # imported here: only the progress bar needs it
        iterator = tqdm(iterator, desc="synthetic images", unit="img")
    for j in iterator:
        rng = np.random.default_rng(np.random.SeedSequence([seed, j]))
        image, objects = _render(rng, image_size)
        with open(os.path.join(out_dir, "JPEGImages", ids[j] + ".jpg"), "wb") as f:
            f.write(_jpeg_bytes(image))
        with open(os.path.join(out_dir, "Annotations", ids[j] + ".xml"), "wb") as f:
            f.write(_annotation_xml(ids[j], image_size, objects))
    for name, part in (("train", ids[:num_train]), ("val", ids[num_train:])):
        with open(os.path.join(out_dir, "ImageSets", "Main", name + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in part))
    return out_dir


# ----------------------------------------------------------------------------- cache
def cache_dir() -> str:
    """$MINISSD_CACHE, else $XDG_CACHE_HOME/minissd, else ~/.cache/minissd."""
    if os.environ.get("MINISSD_CACHE"):
        return os.environ["MINISSD_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minissd")


def default_root(num_train=2000, num_val=500, image_size=160, seed=0) -> str:
    """The cache folder of the set with these parameters: <cache_dir()>/synthetic-<hash>."""
    key = f"v{GENERATOR_VERSION}-{num_train}-{num_val}-{image_size}-{seed}"
    return os.path.join(cache_dir(), "synthetic-" + hashlib.sha1(key.encode()).hexdigest()[:12])


def ensure_synthetic(num_train=2000, num_val=500, image_size=160, seed=0, progress=True) -> str:
    """The cached set for these parameters, generated on first use.

    Generation writes into a temporary folder next to the cache and renames it into place
    when complete (rename is atomic), so an interrupted run never leaves a half set behind.
    """
    root = default_root(num_train, num_val, image_size, seed)
    if os.path.isdir(root):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=os.path.dirname(root))
    try:
        generate(tmp, num_train, num_val, image_size, seed, progress=progress)
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isdir(root):     # not "another process finished first"
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_coco_files(root) -> tuple:
    """The synthetic set at `root` as COCO files: (<root>/coco_train.json, coco_val.json)."""
    from .coco import write_coco         # imported here: coco.py imports the VOC reader
    from .voc import VOCDataset
    images = os.path.join(root, "JPEGImages")
    return tuple(write_coco(VOCDataset(root, splits=(split,), keep_difficult=True),
                            os.path.join(root, f"coco_{split}.json"), image_root=images)
                 for split in ("train", "val"))


def write_yolo_files(root) -> str:
    """The synthetic set at `root` in YOLO layout: <root>/yolo (data/yolo.py)."""
    from .voc import VOCDataset
    from .yolo import write_yolo         # imported here: yolo.py imports the VOC reader
    return write_yolo({split: VOCDataset(root, splits=(split,), keep_difficult=True)
                       for split in ("train", "val")}, os.path.join(root, "yolo"))


# What generate() and --coco write into --out: a folder holding only these is an earlier output.
OWN_ENTRIES = {"JPEGImages", "Annotations", "ImageSets", "labels.txt", "coco_train.json",
               "coco_val.json", "yolo"}


def _not_ours(out):
    """Why --out may not be written into (None when it may): it is a file, or a non-empty
    folder holding something this command does not write, or a labels.txt of other classes.
    The user's files are never overwritten."""
    if not os.path.exists(out):
        return None
    if not os.path.isdir(out):
        return "is a file, not a folder"
    names = set(os.listdir(out))
    other = sorted(names - OWN_ENTRIES)
    if other:
        return f"is not empty (it holds {', '.join(other[:3])}{', ...' if len(other) > 3 else ''})"
    labels = os.path.join(out, "labels.txt")
    if names:
        try:
            with open(labels, "rb") as f:
                own = f.read(4096) == ("\n".join(CLASSES) + "\n").encode()
        except OSError:
            own = False
        if not own:
            return "holds a dataset that this command did not write (its labels.txt differs)"
    return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minissd.data.synthetic",
                                description="Write the synthetic VOC-format detection set.")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--num-train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--num-val", type=int, default=500, help="validation images (default 500)")
    p.add_argument("--image-size", type=int, default=160, help="image side in pixels (160)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--coco", action="store_true", help="also write the annotations as COCO "
                   "instances files, <out>/coco_train.json and coco_val.json (file_names "
                   "relative to <out>/JPEGImages)")
    p.add_argument("--yolo", action="store_true", help="also write the set in Ultralytics' "
                   "YOLO layout under <out>/yolo (data.yaml, images/, labels/)")
    a = p.parse_args(argv)
    problem = _not_ours(a.out)
    if problem:
        print(f"python -m minissd.data.synthetic: error: --out: {a.out} {problem}; give an "
              "empty or new folder (or an earlier output of this command)", file=sys.stderr)
        return 2
    root = generate(a.out, a.num_train, a.num_val, a.image_size, a.seed, progress=True)
    print(f"wrote {a.num_train} train + {a.num_val} val images to {root}")
    if a.coco:
        train, val = write_coco_files(root)
        images = os.path.join(root, "JPEGImages")
        print(f"wrote {train} and {val}; train on them with: python -m minissd.train "
              f"--coco-root {images} --coco-ann {train} --coco-val-ann {val}")
    if a.yolo:
        yolo = write_yolo_files(root)
        print(f"wrote {yolo}; train on it with: python -m minissd.train --yolo-root {yolo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
