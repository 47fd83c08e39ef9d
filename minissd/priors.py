"""Default boxes (priors): the fixed boxes every SSD prediction is an offset from.

Dimension letters: P default boxes in all, f_k the side of feature map k, B_k boxes per location.

Each source feature map k (38x38, 19x19, ... for SSD300) tiles the image with a grid of
f_k x f_k cells. Every cell holds B_k boxes centred on it, all of one scale s_k, in this order
(ssd.pytorch / Caffe SSD; the trained weights depend on it):

    (s_k, s_k)                       aspect ratio 1
    (s'_k, s'_k), s'_k = sqrt(s_k * max_k)   aspect ratio 1, a bit larger
    for each ratio a of the map:
        (s_k * sqrt(a), s_k / sqrt(a))   wide
        (s_k / sqrt(a), s_k * sqrt(a))   tall

so a 6-box location is [1, 1', 2, 1/2, 3, 1/3]. With f_k = image_size / step_k the centre of
cell (row i, column j) is cx = (j + 0.5) / f_k, cy = (i + 0.5) / f_k. The boxes are listed
feature map by feature map, then row by row, then column by column, then box by box: the same
order as the heads' outputs after their NHWC flatten, so box p and prediction p belong together.
"""
from __future__ import annotations

import math

import numpy as np


def boxes_per_location(aspect_ratios) -> int:
    """B_k for one feature map: two square boxes plus two per extra aspect ratio."""
    return 2 + 2 * len(aspect_ratios)


def default_boxes(config):
    """All default boxes of a config, in the order the network predicts them.

    config: SSDConfig with feature_maps, steps, aspect_ratios, mbox, image_size, clip and
            either min_sizes/max_sizes (pixels) or s_min/s_max (the paper's formula, used when
            min_sizes is empty; see SSDConfig.scales)
    returns (P, 4) float32 NumPy array, center form (cx, cy, w, h), normalised to [0, 1];
            P = sum_k f_k^2 * B_k (8732 for SSD300, 24564 for SSD512).
            Move it to the GPU with backend.to_device when the model runs there.
    """
    _check(config)
    min_sizes, max_sizes = config.scales()
    size = float(config.image_size)
    per_map = []
    for f, step, s_min, s_max, ratios in zip(config.feature_maps, config.steps, min_sizes,
                                             max_sizes, config.aspect_ratios):
        # The B_k (w, h) shapes of one location, as fractions of the image.
        s = s_min / size
        s_prime = math.sqrt(s * (s_max / size))
        wh = [(s, s), (s_prime, s_prime)]
        for a in ratios:
            r = math.sqrt(a)
            wh += [(s * r, s / r), (s / r, s * r)]
        wh = np.array(wh, dtype=np.float64)                       # (B_k, 2)

        # Cell centres, row i major, column j minor.
        f_k = size / step
        centres = (np.arange(f, dtype=np.float64) + 0.5) / f_k    # (f,)
        cy, cx = np.meshgrid(centres, centres, indexing="ij")     # (f, f) each, [i, j]
        cxcy = np.stack([cx, cy], axis=-1).reshape(f * f, 1, 2)   # (f*f, 1, 2)

        b = len(wh)
        boxes = np.concatenate([np.broadcast_to(cxcy, (f * f, b, 2)),
                                np.broadcast_to(wh, (f * f, b, 2))], axis=-1)  # (f*f, B_k, 4)
        per_map.append(boxes.reshape(-1, 4))                      # (f*f*B_k, 4)

    priors = np.concatenate(per_map, axis=0)                      # (P, 4)
    if config.clip:
        priors = clip_priors(priors, config.prior_clip)
    return priors.astype(np.float32)


def box_labels(config) -> list:
    """A short name for every default box, in the order of default_boxes(config): its scale
    and its aspect ratio w/h, e.g. "s=0.10, 1", "s'=0.14, 1", "s=0.10, 2", "s=0.10, 1/2".

    "s" is the map's scale s_k (min_size / image_size) and "s'" the extra square's
    s'_k = sqrt(s_k * max_k). Pictures label boxes with these (notebooks 01 and 04):

        >>> from minissd.config import ssd300
        >>> box_labels(ssd300())[:4]
        ['s=0.10, 1', "s'=0.14, 1", 's=0.10, 2', 's=0.10, 1/2']
    returns a list of P strings.
    """
    _check(config)
    min_sizes, max_sizes = config.scales()
    size = float(config.image_size)
    labels = []
    for f, s_min, s_max, ratios in zip(config.feature_maps, min_sizes, max_sizes,
                                       config.aspect_ratios):
        s = s_min / size
        location = [f"s={s:.2f}, 1", f"s'={math.sqrt(s * s_max / size):.2f}, 1"]
        for a in ratios:
            location += [f"s={s:.2f}, {a:g}", f"s={s:.2f}, 1/{a:g}"]
        labels += location * (f * f)                                # same order as the boxes
    return labels


PRIOR_CLIP_RULES = ("ssd.pytorch", "torchvision", "caffe")


def clip_priors(priors, rule="ssd.pytorch"):
    """Clip center-form default boxes (P, 4) to [0, 1] by one of two rules.

    Neither clips the corners (a box may still reach past the image edge); both clamp the
    center-form numbers themselves:
      "ssd.pytorch"  (its PriorBox, and Caffe SSD's clip) clamps all four, cx, cy, w and h;
      "torchvision"  (DefaultBoxGenerator(clip=True)) clamps only w and h, leaving the centres.
    Caffe SSD's PriorBox (clip: true) is a third rule, "caffe": it clamps the CORNERS
    (xmin, ymin, xmax, ymax) to [0, 1], so a clipped box shrinks and its centre moves inward.
    They differ where a centre lies outside [0, 1], which happens when a feature map has more
    cells than image_size / step (f_k > S / step_k). SSD300 has such a map: 10x10 cells of step
    32 (300 / 32 = 9.375 cells), whose last column and row are centred at 9.5 / 9.375 = 1.0133.
    ssd.pytorch moves those 120 centres (10 locations x 6 boxes, x and y) to 1.0, torchvision
    keeps them; w and h of the large boxes of the coarse maps are cut to 1 by both.
    """
    if rule == "ssd.pytorch":
        return np.clip(priors, 0.0, 1.0)
    if rule == "torchvision":
        return np.concatenate([priors[:, :2], np.clip(priors[:, 2:], 0.0, 1.0)], axis=1)
    if rule == "caffe":
        corners = np.clip(np.concatenate([priors[:, :2] - priors[:, 2:] / 2,
                                          priors[:, :2] + priors[:, 2:] / 2], axis=1), 0.0, 1.0)
        return np.concatenate([(corners[:, :2] + corners[:, 2:]) / 2,
                               corners[:, 2:] - corners[:, :2]], axis=1)
    raise ValueError(f"prior_clip is {rule!r}; use one of {', '.join(PRIOR_CLIP_RULES)} "
                     "(minissd/config.py)")


def _check(config):
    """Raise a ValueError naming the config field and the fix when the box layout disagrees."""
    name = getattr(config, "name", "config")
    n = len(config.feature_maps)
    fields = {"steps": config.steps, "aspect_ratios": config.aspect_ratios, "mbox": config.mbox}
    if config.min_sizes:
        fields.update(min_sizes=config.min_sizes, max_sizes=config.max_sizes)
    elif n < 2:
        raise ValueError(f"config {name!r}: the paper's scale formula needs at least 2 feature "
                         "maps; give min_sizes/max_sizes explicitly (minissd/config.py)")
    for field_name, values in fields.items():
        if len(values) != n:
            raise ValueError(
                f"config {name!r}: {field_name} has {len(values)} entries but feature_maps has "
                f"{n}; give one per source feature map (minissd/config.py)")
    for k, (ratios, m) in enumerate(zip(config.aspect_ratios, config.mbox)):
        if boxes_per_location(ratios) != m:
            raise ValueError(
                f"config {name!r}: mbox[{k}] = {m} but aspect_ratios[{k}] = {tuple(ratios)} "
                f"gives {boxes_per_location(ratios)} boxes per location (2 + 2 per ratio); set "
                f"mbox[{k}] = {boxes_per_location(ratios)} or change the ratios "
                "(minissd/config.py)")
