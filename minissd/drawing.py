"""Detections drawn on an image with Pillow, at a bounded size (what detect writes).

    draw_detections(image, boxes, labels, scores, names, max_side=MAX_SIDE) -> (h, w, 3) uint8

The image is first shrunk so that its longer side is at most max_side (never enlarged), and
the boxes are drawn on that copy: a 24-megapixel photo costs one 1600-pixel copy, not a
figure of the photo's size (matplotlib, which viz.py uses for the notebooks, held several
bytes per pixel per layer: 4 GB for 24 megapixels). Boxes are normalised corners, so they
need no rescaling. Line width and font size follow the drawn size.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 1600          # pixels: the longer side of a drawn image or video frame
_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))


def bounded(image, max_side=MAX_SIDE, even=False) -> Image.Image:
    """A Pillow copy of (H, W, 3) uint8 `image` with its longer side at most max_side;
    even=True rounds both sides down to even numbers (what H.264's 4:2:0 video needs)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if even:
        size = (max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2))
    im = Image.fromarray(image)
    return im if size == (w, h) else im.resize(size, Image.BILINEAR)


def draw_detections(image, boxes, labels, scores, names, max_side=MAX_SIDE, even=False):
    """image (H, W, 3) uint8 RGB; boxes (K, 4) normalised corners; labels (K,) in 1..len(names);
    scores (K,) -> the drawn copy, (h, w, 3) uint8 with max(h, w) <= max_side."""
    im = bounded(image, max_side, even)
    w, h = im.size
    draw = ImageDraw.Draw(im)
    line = max(1, round(max(w, h) / 300))
    font = _font(max(10, round(max(w, h) / 60)))
    px = np.clip(np.asarray(boxes, np.float64), 0, 1) * [w - 1, h - 1, w - 1, h - 1]   # (K, 4)
    for (x0, y0, x1, y1), label, score in zip(px, labels, scores):
        color = _COLORS[(int(label) - 1) % len(_COLORS)]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=line)
        text = f"{names[int(label) - 1]} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        ty = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0
        draw.rectangle([x0, ty, x0 + (right - left) + 4, ty + (bottom - top) + 2], fill=color)
        draw.text((x0 + 2, ty - (top - y0)), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def _font(size):
    try:
        return ImageFont.load_default(size)      # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()
