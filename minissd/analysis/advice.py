"""Advice with numbers: which input size, which default boxes and whether to tile, each
backed by the recall ceiling it would give (coverage.py) on the same objects.

  * input size (configs that take one: tiny): the ceiling at each of SIZE_CANDIDATES, with
    the cost of a step relative to the current size ((S / S0)^2: a step costs what its
    high-resolution convs cost); the advice is the smallest size within ONE_POINT of the best;
  * default boxes: fit.fit_default_boxes' scales and ratios, with the ceiling before and after;
  * tiling: images much larger than the input, cut into T x T tiles (T pixels of the original
    image, each resized to S), give their small objects T / W times more input pixels; the
    ceiling is computed on the tiles' own objects (an object belongs to the tile holding its
    centre, clipped to it).
"""
from __future__ import annotations

import numpy as np

from ..config import get_config
from ..priors import default_boxes
from .coverage import best_prior_iou, object_sides
from .fit import fit_default_boxes, subsample

SIZE_CANDIDATES = (96, 128, 160, 192, 256, 320, 384, 512)
ONE_POINT = 0.01
# Objects under this side (input pixels) are hard to learn whatever the default boxes: the
# README's tiny runs miss objects of 5-8 pixels last. A config resized to S scales its boxes
# with S, so the ceiling barely moves with S; what S changes is this share.
MIN_LEARNABLE = 8
SMALL_SHARE = 0.05          # the input size advised leaves at most this share under it
TILE_IMAGE_FACTOR = 3       # tiling is considered for images 3x the input side or more
TILE_GAIN = 0.05            # tiling is advised when it lifts the ceiling by 5 points or more


def ceiling_of(config, gt_boxes, threshold=0.5):
    best, _ = best_prior_iou(gt_boxes, default_boxes(config))
    return float((best >= threshold).mean()) if len(best) else float("nan")


def size_table(config_name, config, gt_boxes, threshold=0.5, max_objects=3000):
    """[(S, ceiling, share of objects under MIN_LEARNABLE px, relative step cost)] for the
    input sides config_name accepts (only its own for a fixed-size config)."""
    boxes = subsample(gt_boxes, max_objects)
    rows = []
    for s in sorted(set(SIZE_CANDIDATES) | {config.image_size}):
        try:
            c = get_config(config_name, class_names=config.class_names, image_size=s)
        except ValueError:
            continue                                   # a fixed-size config, or does not fit
        small = float((object_sides(boxes, s) < MIN_LEARNABLE).mean())
        rows.append((s, ceiling_of(c, boxes, threshold), small, (s / config.image_size) ** 2))
    return rows


def pick_size(rows):
    """The smallest S whose ceiling is within ONE_POINT of the table's best and that leaves at
    most SMALL_SHARE of the objects under MIN_LEARNABLE pixels (else the largest S)."""
    top = max(c for _, c, _, _ in rows)
    good = [s for s, c, small, _ in rows if c >= top - ONE_POINT and small <= SMALL_SHARE]
    return min(good) if good else max(s for s, _, _, _ in rows)


def tile_boxes(boxes, image, sizes, tile):
    """Objects re-expressed in T x T tiles of their images (T = tile, in original pixels).

    boxes (G, 4) normalised corners of image index image (G,), sizes (I, 2) (width, height).
    An image's tiles start at 0, T, 2T, ... with the last one moved back to end at the border
    (a side not larger than T is one tile of that side). Each object goes to the tile holding
    its centre and is clipped to it; returns (G, 4) corners normalised to that tile.
    """
    wh = sizes[image].astype(np.float64)                                  # (G, 2)
    px = boxes * np.concatenate([wh, wh], axis=1)                         # (G, 4) pixels
    side = np.minimum(wh, tile)                                           # (G, 2) tile w, h
    centre = (px[:, :2] + px[:, 2:]) / 2
    origin = np.minimum(np.floor(centre / tile) * tile, wh - side)        # (G, 2)
    rel = (px - np.concatenate([origin, origin], axis=1)) / np.concatenate([side, side], axis=1)
    return np.clip(rel, 0.0, 1.0)


def tile_table(config, objects, threshold=0.5, max_objects=3000):
    """[(T, tiles per image (mean), ceiling)] for tiles of 1, 1.5, 2, 3 and 4 input sides that
    are smaller than the median image's longer side; [] when the images are not large."""
    longest = np.median(objects.sizes.max(axis=1)) if len(objects.sizes) else 0
    if longest < TILE_IMAGE_FACTOR * config.image_size:
        return []
    rows = []
    for k in (4, 3, 2, 1.5, 1):
        t = int(round(config.image_size * k))
        if t * 1.2 >= longest:
            continue
        tiled = tile_boxes(objects.boxes, objects.image, objects.sizes, t)
        w, h = objects.sizes[:, 0], objects.sizes[:, 1]
        count = float(np.mean(np.ceil(w / t) * np.ceil(h / t)))
        rows.append((t, count, ceiling_of(config, subsample(tiled, max_objects), threshold)))
    return rows


def advise(config_name, config, objects, threshold=0.5, fit_ratios=True) -> dict:
    """Every piece of advice, as numbers and lines of text: {"lines": [...], "sizes": rows,
    "fit": Fit, "tiles": rows, "now": ceiling}."""
    boxes = objects.boxes
    lines, out = [], {}
    if len(boxes) == 0:
        return {"lines": ["no objects: nothing to advise"], "sizes": [], "fit": None,
                "tiles": [], "now": float("nan")}
    now = ceiling_of(config, subsample(boxes, 3000), threshold)
    out["now"] = now
    sides = object_sides(boxes, config.image_size)
    smallest = min(config.scales()[0])
    below = float((sides < smallest / 2).mean())
    below_learnable = float((sides < MIN_LEARNABLE).mean())
    lines.append(f"now: recall ceiling {100 * now:.1f}% at IoU >= {threshold:g} with "
                 f"{config.name} at {config.image_size} px; {100 * below:.1f}% of the objects "
                 f"are under half the smallest default box ({smallest:.1f} px)")
    rows = size_table(config_name, config, boxes, threshold)
    out["sizes"] = rows
    if len(rows) > 1:
        pick = pick_size(rows)
        c, small = {s: (v, sm) for s, v, sm, _ in rows}[pick]
        if pick != config.image_size:
            lines.append(f"input size: --image-size {pick} leaves {100 * small:.1f}% of the "
                         f"objects under {MIN_LEARNABLE} px (now {100 * below_learnable:.1f}%) "
                         f"with a ceiling of {100 * c:.1f}%, at about "
                         f"{(pick / config.image_size) ** 2:.1f}x the time per step")
        else:
            lines.append(f"input size: {pick} px is the smallest size tried that keeps the "
                         f"ceiling within a point of the best ({100 * c:.1f}%) with at most "
                         f"{100 * SMALL_SHARE:.0f}% of the objects under {MIN_LEARNABLE} px")
    fit = fit_default_boxes(config, boxes, threshold, ratios=fit_ratios)
    out["fit"] = fit
    if fit.after > fit.before:
        mins, _ = fit.config.scales()
        sizes = ", ".join(f"{v:.0f}" for v in mins)
        lines.append(f"default boxes: fitted scales (min sizes {sizes} px"
                     f"; ratios {list(map(list, fit.config.aspect_ratios))}) lift the ceiling from "
                     f"{100 * fit.before:.1f}% to {100 * fit.after:.1f}%: train --fit-boxes")
    else:
        lines.append(f"default boxes: no change of scales or ratios tried lifts the ceiling "
                     f"({100 * fit.before:.1f}%)")
    tiles = tile_table(config, objects, threshold)
    out["tiles"] = tiles
    if tiles:
        t, count, c = max(tiles, key=lambda r: r[2])
        if c >= now + TILE_GAIN:
            lines.append(f"tiling: images are large (median longer side "
                         f"{np.median(objects.sizes.max(axis=1)):.0f} px); {t}x{t} tiles "
                         f"({count:.1f} per image) give a ceiling of {100 * c:.1f}%")
    out["lines"] = lines
    return out
