"""Datasets "of your own" for checking that minissd trains on folders it has never seen.

    python tests/shape_sets.py --kind polygons|outlines|blobs --out DIR
                               [--num-train 600] [--num-val 150] [--size 300] [--seed 0]
                               [--no-splits] [--flat]

Three generators, independent of minissd.data.synthetic (other shapes, other backgrounds,
another drawing code), each writing 3 classes, 1-6 objects per image, object sides from 6% to
70% of the image, on noisy backgrounds:

    polygons   filled diamond / hexagon / arrow on Gaussian noise over a colour gradient
    outlines   thick-outlined ellipse / rectangle / triangle on salt-and-pepper clutter
               (random lines and dots in the object colours)
    blobs      filled crescent / plus / bar (elongated, any angle) on low-frequency
               "cloud" noise

Default layout: a VOC-format folder (JPEGImages/, Annotations/, ImageSets/Main/train.txt and
val.txt, no labels.txt, so the classes must be found from the annotations). --no-splits leaves
out ImageSets/; --flat writes a labelImg-style export instead (img.jpg + img.xml side by side,
<size> left out of every third XML). Boxes are the tight boxes of what was drawn (objects are
placed so that they do not overlap much).
"""
from __future__ import annotations

import argparse
import math
import os
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

KINDS = {"polygons": ("diamond", "hexagon", "arrow"),
         "outlines": ("ellipse", "rectangle", "triangle"),
         "blobs": ("crescent", "plus", "bar"),
         # harder sets (issue 25; appended, so the first three keep their seeds and images):
         "dense": ("diamond", "hexagon", "plus"),       # 20-150 objects of 6-40 px (--size 800)
         "elongated": ("slab", "oval", "frame"),        # axis-aligned, length/width 3..8
         "rare": ("diamond", "hexagon", "arrow")}       # the arrow: 0.5% (about 10 objects)
HARD_KINDS = ("dense", "elongated", "rare")


def _rot(pts, angle):
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _polygon(name, r, angle):
    """Unit-radius outline of a shape (V, 2), scaled by r and rotated."""
    if name == "diamond":
        pts = np.array([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], float)
    elif name == "hexagon":
        t = np.arange(6) * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == "arrow":
        pts = np.array([(-1, -0.25), (0.2, -0.25), (0.2, -0.6), (1, 0), (0.2, 0.6),
                        (0.2, 0.25), (-1, 0.25)], float)
    elif name == "triangle":
        t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == "plus":
        a = 0.3
        pts = np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1),
                        (-a, a), (-1, a), (-1, -a), (-a, -a)], float)
    elif name == "bar":
        pts = np.array([(-1, -0.22), (1, -0.22), (1, 0.22), (-1, 0.22)], float)
    else:
        raise ValueError(name)
    return _rot(pts * r, angle)


def _background(rng, kind, s):
    if kind == "polygons":
        c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
        t = np.linspace(0, 1, s)[None, :, None] if rng.random() < 0.5 else \
            np.linspace(0, 1, s)[:, None, None]
        img = c0 * (1 - t) + c1 * t + rng.normal(0, 28, (s, s, 3))
    elif kind == "outlines":
        img = np.full((s, s, 3), rng.uniform(60, 200, 3)) + rng.normal(0, 12, (s, s, 3))
        salt = rng.random((s, s)) < 0.04
        img[salt] = rng.uniform(0, 255, (int(salt.sum()), 3))
    else:                                          # low-frequency clouds
        small = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((s, s), Image.BICUBIC), float)
        img = img + rng.normal(0, 15, (s, s, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(rng, draw, s, n):
    """Random lines and dots (the 'outlines' kind): distractors in object-like colours."""
    for _ in range(n):
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        x0, y0 = rng.uniform(0, s, 2)
        x1, y1 = x0 + rng.normal(0, s / 6), y0 + rng.normal(0, s / 6)
        draw.line([(x0, y0), (x1, y1)], fill=col, width=int(rng.integers(1, 3)))


def _draw(draw, mask_draw, name, cx, cy, r, angle, col, width):
    if name == "ellipse" or name == "rectangle":
        ry = r * 0.65
        if name == "ellipse":
            box = [cx - r, cy - ry, cx + r, cy + ry]
            draw.ellipse(box, outline=col, width=width)
            mask_draw.ellipse(box, outline=255, width=width)
        else:
            pts = _rot(np.array([(-r, -ry), (r, -ry), (r, ry), (-r, ry)]), angle) + (cx, cy)
            pts = [tuple(p) for p in pts] + [tuple(pts[0])]
            draw.line(pts, fill=col, width=width, joint="curve")
            mask_draw.line(pts, fill=255, width=width, joint="curve")
        return
    if name == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        mask_draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = 0.45 * r * math.cos(angle), 0.45 * r * math.sin(angle)
        inner = [cx + ox - 0.8 * r, cy + oy - 0.8 * r, cx + ox + 0.8 * r, cy + oy + 0.8 * r]
        mask_draw.ellipse(inner, fill=0)
        return                               # the bite is restored from the mask below
    pts = [tuple(p) for p in _polygon(name, r, angle) + (cx, cy)]
    if name == "triangle":
        draw.line(pts + [pts[0]], fill=col, width=width, joint="curve")
        mask_draw.line(pts + [pts[0]], fill=255, width=width, joint="curve")
    else:
        draw.polygon(pts, fill=col)
        mask_draw.polygon(pts, fill=255)


def render_hard(rng, kind, s):
    """The harder sets: one image (s, s, 3) uint8 and its objects, as render()."""
    names = KINDS[kind]
    image = Image.fromarray(_background(rng, "polygons", s))
    draw = ImageDraw.Draw(image)
    if kind == "dense":
        count, sides = int(rng.integers(20, 151)), (6, 40)
    else:
        count, sides = int(rng.integers(1, 7)), (0.06 * s, 0.7 * s)
    objects, placed = [], []
    for _ in range(count):
        for _try in range(30):
            side = math.exp(rng.uniform(math.log(sides[0]), math.log(sides[1])))
            if kind == "elongated":
                ratio = rng.uniform(3, 8)
                w, h = side * math.sqrt(ratio), side / math.sqrt(ratio)
                w, h = (w, h) if rng.random() < 0.5 else (h, w)
            else:
                w = h = side
            w, h = min(w, s - 4), min(h, s - 4)
            cx, cy = rng.uniform(w / 2 + 1, s - w / 2 - 1), rng.uniform(h / 2 + 1, s - h / 2 - 1)
            if all(abs(cx - px) > 0.45 * (w + pw) or abs(cy - py) > 0.45 * (h + ph)
                   for px, py, pw, ph in placed):
                break
        else:
            continue
        placed.append((cx, cy, w, h))
        if kind == "rare":
            name = names[int(rng.choice(3, p=[0.4975, 0.4975, 0.005]))]
        else:
            name = names[int(rng.integers(len(names)))]
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if name == "slab":
            draw.rectangle(box, fill=col)
        elif name == "oval":
            draw.ellipse(box, fill=col)
        elif name == "frame":
            draw.rectangle(box, outline=col, width=max(2, int(min(w, h) * 0.25)))
        else:
            r = min(w, h) / 2
            pts = _polygon(name, r, rng.uniform(0, 2 * np.pi)) + (cx, cy)
            draw.polygon([tuple(p) for p in pts], fill=col)
            xs, ys = pts[:, 0], pts[:, 1]
            box = [xs.min(), ys.min(), xs.max(), ys.max()]
        x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
        x1, y1 = min(s - 1, int(round(box[2]))), min(s - 1, int(round(box[3])))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            objects.append((name, (x0 + 1, y0 + 1, x1 + 1, y1 + 1)))     # VOC: 1-based
    return np.asarray(image), objects


def render(rng, kind, s):
    """One image (s, s, 3) uint8 and its objects [(class, (x0, y0, x1, y1) pixels)]."""
    if kind in HARD_KINDS:
        return render_hard(rng, kind, s)
    names = KINDS[kind]
    bg = _background(rng, kind, s)
    image = Image.fromarray(bg)
    draw = ImageDraw.Draw(image)
    if kind == "outlines":
        _clutter(rng, draw, s, int(rng.integers(4, 12)))
    objects, placed = [], []
    for _ in range(int(rng.integers(1, 7))):
        for _try in range(30):
            side = s * math.exp(rng.uniform(math.log(0.06), math.log(0.7)))
            r = side / 2
            cx, cy = rng.uniform(r * 0.6, s - r * 0.6, 2)
            if all(math.hypot(cx - px, cy - py) > 0.8 * (r + pr) for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        name = names[int(rng.integers(len(names)))]
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        mask = Image.new("L", (s, s), 0)
        before = np.asarray(image).copy()
        _draw(draw, ImageDraw.Draw(mask), name, cx, cy, r, rng.uniform(0, 2 * np.pi), col,
              max(2, int(side * 0.09)))
        m = np.asarray(mask) > 0
        if name == "crescent":                 # paint the crescent from its mask
            now = before.copy()
            now[m] = col
            image.paste(Image.fromarray(now))
            draw = ImageDraw.Draw(image)
        ys, xs = np.nonzero(m)
        if len(xs) < 4:
            continue
        objects.append((name, (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1,
                               int(ys.max()) + 1)))            # VOC: 1-based pixels
    return np.asarray(image), objects


def _xml(image_id, s, objects, with_size=True):
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    if with_size:
        size = ET.SubElement(root, "size")
        for tag, v in (("width", s), ("height", s), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
    for name, (x0, y0, x1, y1) in objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "difficult").text = "0"
        b = ET.SubElement(o, "bndbox")
        for tag, v in (("xmin", x0), ("ymin", y0), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(b, tag).text = str(v)
    return ET.tostring(root)


def generate(out, kind="polygons", num_train=600, num_val=150, size=300, seed=0,
             splits=True, flat=False):
    """Write the set into `out`; returns out."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    ids = [f"{kind}_{i:05d}" for i in range(num_train + num_val)]
    img_dir = out if flat else os.path.join(out, "JPEGImages")
    ann_dir = out if flat else os.path.join(out, "Annotations")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i, image_id in enumerate(ids):
        image, objects = render(rng, kind, size)
        Image.fromarray(image).save(os.path.join(img_dir, f"{image_id}.jpg"), quality=92)
        with open(os.path.join(ann_dir, f"{image_id}.xml"), "wb") as f:
            f.write(_xml(image_id, size, objects, with_size=not (flat and i % 3 == 0)))
    if splits and not flat:
        main = os.path.join(out, "ImageSets", "Main")
        os.makedirs(main, exist_ok=True)
        for name, part in (("train", ids[:num_train]), ("val", ids[num_train:])):
            with open(os.path.join(main, f"{name}.txt"), "w") as f:
                f.write("\n".join(part) + "\n")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=tuple(KINDS), default="polygons")
    p.add_argument("--out", required=True)
    p.add_argument("--num-train", type=int, default=600)
    p.add_argument("--num-val", type=int, default=150)
    p.add_argument("--size", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-splits", action="store_true")
    p.add_argument("--flat", action="store_true")
    a = p.parse_args(argv)
    generate(a.out, a.kind, a.num_train, a.num_val, a.size, a.seed, not a.no_splits, a.flat)
    print(a.out)


if __name__ == "__main__":
    main()
