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
