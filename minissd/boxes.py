"""Box geometry: corner <-> center form, encode/decode with variances, and a reference IoU.

Dimension letters: P default boxes (priors), G ground-truth boxes, A and B any two box sets.
Corner form is (xmin, ymin, xmax, ymax); center form is (cx, cy, w, h); both normalised to
[0, 1] inside the library. Every function takes its array module from its inputs, so it runs
on NumPy and CuPy alike.
"""
from __future__ import annotations

from .backend import get_array_module


def center_to_corner(boxes):
    """(..., 4) center form (cx, cy, w, h) -> corner form (xmin, ymin, xmax, ymax)."""
    xp = get_array_module(boxes)
    cxcy, wh = boxes[..., :2], boxes[..., 2:]
    return xp.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=-1)


def corner_to_center(boxes):
    """(..., 4) corner form (xmin, ymin, xmax, ymax) -> center form (cx, cy, w, h)."""
    xp = get_array_module(boxes)
    mins, maxs = boxes[..., :2], boxes[..., 2:]
    return xp.concatenate([(mins + maxs) / 2, maxs - mins], axis=-1)


def encode(matched, priors, variances=(0.1, 0.2)):
    """Regression targets of matched ground truth against default boxes (SSD eq. 2).

    matched: (..., P, 4) corner form ground truth matched to each prior
    priors:  (P, 4) center form default boxes
    returns  (..., P, 4) offsets t:
        t_cxcy = (g_cxcy - p_cxcy) / (v0 * p_wh)
        t_wh   = log(g_wh / p_wh) / v1
    """
    xp = get_array_module(matched, priors)
    g = corner_to_center(matched)
    t_cxcy = (g[..., :2] - priors[:, :2]) / (variances[0] * priors[:, 2:])
    # A zero-size ground truth never reaches here in training (the data layer drops it);
    # the floor keeps log() finite for callers that pass one anyway.
    t_wh = xp.log(xp.maximum(g[..., 2:], 1e-12) / priors[:, 2:]) / variances[1]
    return xp.concatenate([t_cxcy, t_wh], axis=-1)


def decode(loc, priors, variances=(0.1, 0.2), wh_clamp=None):
    """Inverse of encode: predicted offsets -> corner-form boxes.

    loc:      (..., P, 4) offsets
    priors:   (P, 4) center form
    wh_clamp: None, or the largest log size change allowed: exp(min(t_wh * v1, wh_clamp)).
              torchvision's BoxCoder caps it at log(1000 / 16) (a box at most 62.5 times its
              default box) so that an untrained network cannot overflow exp().
    returns   (..., P, 4) corner form
    """
    xp = get_array_module(loc, priors)
    cxcy = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    log_wh = loc[..., 2:] * variances[1]
    if wh_clamp is not None:
        log_wh = xp.minimum(log_wh, loc.dtype.type(wh_clamp))
    wh = priors[:, 2:] * xp.exp(log_wh)
    return center_to_corner(xp.concatenate([cxcy, wh], axis=-1))


def area(boxes):
    """(..., 4) corner form -> (...,) area; inverted boxes count as 0."""
    xp = get_array_module(boxes)
    wh = xp.clip(boxes[..., 2:] - boxes[..., :2], 0, None)
    return wh[..., 0] * wh[..., 1]


def iou(a, b):
    """Reference IoU matrix of two corner-form box sets: (A, 4), (B, 4) -> (A, B).

    Matches torchvision.ops.box_iou except where a union is zero (two zero-area boxes):
    there IoU is 0, never NaN. This is the NumPy reference every kernel is checked against.
    """
    xp = get_array_module(a, b)
    lt = xp.maximum(a[:, None, :2], b[None, :, :2])        # (A, B, 2)
    rb = xp.minimum(a[:, None, 2:], b[None, :, 2:])        # (A, B, 2)
    wh = xp.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]                        # (A, B)
    union = area(a)[:, None] + area(b)[None, :] - inter    # (A, B)
    safe = xp.where(union > 0, union, 1)
    return xp.where(union > 0, inter / safe, 0).astype(xp.result_type(a, b), copy=False)
