"""Default boxes fitted to a dataset's objects: a search that maximises the recall ceiling.

The search changes only the default boxes' sizes and aspect ratios, never the feature maps or
their steps, so the network keeps its layers (a new aspect ratio adds two boxes per location
to that map's heads: mbox follows). Steps, each keeping what raises the ceiling (ties: the
larger mean best IoU):
  1. one factor for every scale (min_sizes and max_sizes together): 2^(-1..1) in 9 steps;
  2. per feature map, its own factor, 0.7..1.4, two passes over the maps;
  3. when many objects are elongated (w/h or h/w past 2.5), the ratios 3 (where missing),
     then 4 and 5, each kept only when it lifts the ceiling by at least MIN_RATIO_GAIN.
Objects are subsampled to at most `max_objects` (deterministically) so one evaluation of the
ceiling costs one (max_objects, P) IoU matrix.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from ..priors import boxes_per_location, default_boxes
from .coverage import best_prior_iou

GLOBAL_FACTORS = tuple(2.0 ** np.linspace(-1, 1, 9))
MAP_FACTORS = (0.7, 0.8, 0.9, 1.1, 1.25, 1.4)
EXTRA_RATIOS = (3, 4, 5)
MIN_RATIO_GAIN = 0.005      # a ratio costs head channels: keep it for half a point or more
ELONGATED = 2.5             # w/h or h/w beyond this counts as elongated


class Fit(NamedTuple):
    config: object          # the fitted SSDConfig
    before: float           # recall ceiling of the given config on the (subsampled) objects
    after: float            # ... of the fitted one
    steps: list             # [(what was tried and kept, ceiling after it)]


def with_boxes(config, min_sizes=None, max_sizes=None, aspect_ratios=None):
    """`config` with other default-box sizes (pixels) and/or aspect ratios; mbox follows."""
    mins, maxs = config.scales()
    mins = mins if min_sizes is None else min_sizes
    maxs = maxs if max_sizes is None else max_sizes
    ratios = tuple(tuple(r) for r in (
        config.aspect_ratios if aspect_ratios is None else aspect_ratios))
    return dataclasses.replace(
        config, min_sizes=tuple(float(v) for v in mins),
        max_sizes=tuple(float(v) for v in maxs), aspect_ratios=ratios,
        mbox=tuple(boxes_per_location(r) for r in ratios))


def score(config, gt_boxes, threshold=0.5):
    """(recall ceiling, mean best IoU) of config's default boxes on gt_boxes (G, 4)."""
    best, _ = best_prior_iou(gt_boxes, default_boxes(config))
    if len(best) == 0:
        return float("nan"), float("nan")
    return float((best >= threshold).mean()), float(best.mean())


def subsample(gt_boxes, max_objects, seed=0):
    """At most max_objects rows of gt_boxes, picked without replacement by a fixed seed."""
    if len(gt_boxes) <= max_objects:
        return gt_boxes
    pick = np.random.default_rng(seed).choice(len(gt_boxes), max_objects, replace=False)
    return gt_boxes[np.sort(pick)]


def fit_default_boxes(config, gt_boxes, threshold=0.5, max_objects=3000, ratios=True) -> Fit:
    """Search default-box scales (and, with ratios, aspect ratios) that maximise the recall
    ceiling of `config` on gt_boxes (G, 4) normalised corners. Returns a Fit."""
    boxes = subsample(np.asarray(gt_boxes, np.float64).reshape(-1, 4), max_objects)
    best_cfg = with_boxes(config)
    best = score(best_cfg, boxes, threshold)
    before, steps = best[0], []
    mins0, maxs0 = (np.array(v, np.float64) for v in best_cfg.scales())

    def consider(candidate, what, gain=0.0):
        nonlocal best_cfg, best
        s = score(candidate, boxes, threshold)
        if s[0] > best[0] + gain or (gain == 0.0 and s[0] == best[0] and s[1] > best[1]):
            best_cfg, best = candidate, s
            steps.append((what, s[0]))

    for f in GLOBAL_FACTORS:                                   # 1. all scales at once
        consider(with_boxes(config, mins0 * f, maxs0 * f), f"all scales x{f:.2f}")
    for _ in range(2):                                         # 2. map by map
        for k in range(len(config.feature_maps)):
            for f in MAP_FACTORS:
                mins, maxs = (np.array(v) for v in best_cfg.scales())
                mins[k], maxs[k] = mins[k] * f, maxs[k] * f
                consider(with_boxes(best_cfg, mins, maxs), f"map {k} scale x{f:g}")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    aspect = np.maximum(w, 1e-9) / np.maximum(h, 1e-9)
    elongated = float(((aspect > ELONGATED) | (aspect < 1 / ELONGATED)).mean()) if len(w) else 0
    if ratios and elongated > 0.02:                            # 3. ratios for long objects
        for r in EXTRA_RATIOS:
            new = tuple(tuple(sorted(set(rs) | {r})) for rs in best_cfg.aspect_ratios)
            consider(with_boxes(best_cfg, aspect_ratios=new), f"ratio {r} on every map",
                     MIN_RATIO_GAIN)
    return Fit(best_cfg, before, best[0], steps)


def boxes_dict(config) -> dict:
    """The default-box fields of a config, JSON-friendly (what a fitted run records)."""
    return {"min_sizes": list(config.min_sizes), "max_sizes": list(config.max_sizes),
            "aspect_ratios": [list(r) for r in config.aspect_ratios]}


def apply_boxes(config, boxes: dict | None):
    """config with the default boxes of boxes_dict's dict (None: unchanged). Sizes are in
    pixels of the input the dict was fitted at (boxes["image_size"]); at another input side
    they scale with it, as config.resized does."""
    if not boxes:
        return config
    f = config.image_size / boxes.get("image_size", config.image_size)
    return with_boxes(config, [v * f for v in boxes["min_sizes"]],
                      [v * f for v in boxes["max_sizes"]], boxes["aspect_ratios"])
