"""What train takes from the data report: the recall ceiling of the run's default boxes (a
line of its plan) and, with --fit-boxes, default boxes fitted to the training objects.

Both read the training annotations only (no image decoded), at most PLAN_IMAGES images, and
use no random state of the run, so a run's batches, init and numbers are the same with or
without them (except for the boxes --fit-boxes changes)."""
from __future__ import annotations

import numpy as np

from ..priors import default_boxes
from .coverage import best_prior_iou
from .dataset import collect
from .fit import fit_default_boxes

PLAN_IMAGES = 2000


def training_boxes(train_set, limit=PLAN_IMAGES):
    """(G, 4) normalised boxes of the first `limit` training images (unreadable ones skipped)."""
    return collect(train_set, "train", limit).boxes


def ceiling_line(config, boxes, threshold=0.5):
    """The plan's line: the share of training objects with a default box at IoU >= 0.5."""
    if len(boxes) == 0:
        return None
    best, _ = best_prior_iou(boxes, default_boxes(config))
    return (f"recall ceiling: {100 * float(np.mean(best >= threshold)):.1f}% of {len(boxes)} "
            f"training objects have a default box at IoU >= {threshold:g} (mean best IoU "
            f"{float(best.mean()):.2f}; python -m minissd.inspect for the report)")


def fitted_config(config, boxes):
    """(config with default boxes fitted to `boxes`, one line saying what changed)."""
    if len(boxes) == 0:
        return config, "--fit-boxes: no training objects; default boxes left as they are"
    fit = fit_default_boxes(config, boxes)
    mins = ", ".join(f"{v:.1f}" for v in fit.config.scales()[0])
    ratios = [list(r) for r in fit.config.aspect_ratios]
    return fit.config, (f"--fit-boxes: default boxes fitted to the training objects: recall "
                        f"ceiling {100 * fit.before:.1f}% -> {100 * fit.after:.1f}% (min sizes "
                        f"{mins} px, ratios {ratios}, {fit.config.num_priors()} boxes)")


def auto_image_size(config_name, train_set, class_names=None):
    """(S, line): --image-size auto, the input side advice.pick_size gives for the training
    objects (the smallest of advice.SIZE_CANDIDATES that keeps the recall ceiling within a
    point of the best and leaves at most 5% of the objects under 8 pixels), with its cost."""
    from ..config import get_config
    from .advice import MIN_LEARNABLE, pick_size, size_table
    config = get_config(config_name, class_names=class_names or train_set.class_names)
    boxes = training_boxes(train_set)
    if len(boxes) == 0:
        return config.image_size, f"--image-size auto: no training objects; {config.image_size}"
    rows = size_table(config_name, config, boxes)
    size = pick_size(rows)
    _, ceiling, small, cost = next(r for r in rows if r[0] == size)
    return size, (f"--image-size auto: {size} px (recall ceiling {100 * ceiling:.1f}%, "
                  f"{100 * small:.1f}% of the objects under {MIN_LEARNABLE} px, about "
                  f"{cost:.1f}x the time per step of {config.image_size} px)")
