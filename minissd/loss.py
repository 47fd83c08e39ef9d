"""The MultiBox loss (SSD paper eq. 1) and its hand-written gradient.

Dimension letters: N images, P default boxes, C classes including background (K + 1).

    L = (L_conf + alpha * L_loc) / N_pos,      alpha = 1

    L_loc  = sum over positive boxes p of sum over the 4 offsets of smoothL1(loc[p] - loc_t[p])
             smoothL1(d) = 0.5 d^2 if |d| < 1 else |d| - 0.5        (beta = 1)
    L_conf = sum over positive boxes and hard negatives of -log softmax(conf[p])[conf_t[p]]

A box is positive when matching gave it a class (conf_t > 0). Almost all boxes are background,
so only the hardest ones count: per image, the background boxes with the largest background
cross-entropy -log softmax(conf)[0], neg_pos_ratio (3) per positive of that image, capped at
the image's number of background boxes (kernels.hard_negative_mask). N_pos counts positives in
the whole batch; with none, the division is by 1 so the loss stays finite.

The mined set is chosen by the forward pass and treated as a constant: the loss is piecewise
smooth, and the gradient is that of the loss with the mask held fixed (as in every SSD
implementation). `negatives=` lets a caller (a gradient check) pass the mask in.

The loss and its parts are 0-d arrays of the input's module (numpy or cupy), so nothing waits
for the GPU until someone asks for a number: float(loss) works on both.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_array_module
from .kernels import hard_negative_mask
from .ops.softmax import (SoftmaxCECache, softmax_cross_entropy_backward,
                          softmax_cross_entropy_forward)


class MultiBoxCache(NamedTuple):
    diff: object            # (N, P, 4) loc - loc_t
    ce: SoftmaxCECache      # softmax of conf (N, P, C) and the target class conf_t (N, P)
    positive: object        # (N, P) bool, conf_t > 0
    negative: object        # (N, P) bool, the mined hard negatives
    num_pos: object         # 0-d array, max(number of positives in the batch, 1), conf's dtype
    alpha: float


def multibox_loss_forward(loc, conf, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0, negatives=None,
                          num_pos=None):
    """MultiBox loss of a batch.

    Inputs:
        loc:    (N, P, 4) predicted offsets
        conf:   (N, P, C) class logits (before softmax)
        loc_t:  (N, P, 4) target offsets (matching.match_batch); read only where conf_t > 0
        conf_t: (N, P) int target class, 0 = background, 1..K objects
        neg_pos_ratio: hard negatives kept per positive, per image
        alpha:  weight of the localisation term
        negatives: optional (N, P) bool mask of negatives to use instead of mining (for
                gradient checks, which need the mined set held fixed)
        num_pos: optional number of positives to divide by instead of this batch's: data
                parallelism passes the GLOBAL batch's count (summed over the processes), so
                that the processes' losses add up to the whole batch's loss
    Returns:
        loss:  0-d array, (L_conf + alpha * L_loc) / N_pos
        parts: {"loc": L_loc / N_pos, "conf": L_conf / N_pos}, 0-d arrays
        cache: MultiBoxCache for multibox_loss_backward
    """
    xp = get_array_module(loc, conf)
    _check_shapes(loc, conf, loc_t, conf_t)
    positive = conf_t > 0                                                # (N, P)
    if num_pos is None:
        num_pos = positive.sum()
    num_pos = xp.maximum(xp.asarray(num_pos), 1).astype(conf.dtype)     # 0-d, never 0

    # Localisation: smooth L1 over the 4 offsets of every positive box.
    diff = loc - loc_t                                                   # (N, P, 4)
    abs_diff = xp.abs(diff)
    smooth_l1 = xp.where(abs_diff < 1, 0.5 * diff * diff, abs_diff - 0.5)   # (N, P, 4)
    loss_loc = (smooth_l1.sum(axis=-1) * positive).sum()

    # Confidence: cross-entropy of every box against its target class, -log softmax(conf)[conf_t]
    # (ops/softmax.py: a stable log-softmax, the row max subtracted before exp).
    ce, ce_cache = softmax_cross_entropy_forward(conf, conf_t)           # (N, P)
    if negatives is None:
        # On a background box the target class is 0, so ce is its background cross-entropy;
        # the mining ignores positive boxes.
        negatives = hard_negative_mask(ce, positive, neg_pos_ratio)      # (N, P) bool
    elif tuple(negatives.shape) != tuple(positive.shape):
        raise ValueError(f"minissd/loss.py multibox_loss_forward: negatives has shape "
                         f"{tuple(negatives.shape)}; pass an (N, P) = {tuple(positive.shape)} "
                         f"bool mask")
    selected = positive | negatives                                      # (N, P)
    loss_conf = (ce * selected).sum()

    loss = (loss_conf + alpha * loss_loc) / num_pos
    parts = {"loc": xp.asarray(loss_loc / num_pos), "conf": xp.asarray(loss_conf / num_pos)}
    cache = MultiBoxCache(diff, ce_cache, positive, negatives, num_pos, alpha)
    return xp.asarray(loss), parts, cache


def multibox_loss_backward(cache: MultiBoxCache, dloss=1.0):
    """Gradient of the loss with respect to the predictions (the mined set held fixed).

    Inputs:
        cache: from multibox_loss_forward
        dloss: upstream gradient of the scalar loss (1 when the loss is the objective)
    Returns:
        dloc:  (N, P, 4), loc's dtype
        dconf: (N, P, C), conf's dtype
    """
    xp = get_array_module(cache.diff)
    diff = cache.diff
    scale = dloss / cache.num_pos                                        # 0-d

    # loss = (loss_conf + alpha * loss_loc) / num_pos
    dloss_loc = cache.alpha * scale
    dloss_conf = scale
    # loss_loc = (smooth_l1.sum(axis=-1) * positive).sum()
    dsmooth_l1 = cache.positive[..., None] * dloss_loc                   # (N, P, 1)
    # smooth_l1 = where(|diff| < 1, 0.5 * diff^2, |diff| - 0.5)   ->  d/ddiff = clip(diff, -1, 1)
    ddiff = xp.clip(diff, -1, 1) * dsmooth_l1                            # (N, P, 4)
    # diff = loc - loc_t
    dloc = ddiff.astype(diff.dtype, copy=False)

    # loss_conf = (ce * selected).sum()
    dce = (cache.positive | cache.negative) * dloss_conf                 # (N, P)
    # ce = -log softmax(conf)[conf_t]   ->  dconf = (softmax(conf) - onehot(conf_t)) * dce
    dconf = softmax_cross_entropy_backward(dce, cache.ce)               # (N, P, C)
    return dloc, dconf


def _check_shapes(loc, conf, loc_t, conf_t):
    """Raise a ValueError that names the argument and the expected shape."""
    if loc.ndim != 3 or loc.shape[-1] != 4:
        raise ValueError(f"minissd/loss.py: loc has shape {tuple(loc.shape)}; expected (N, P, 4) "
                         "as SSD.forward returns it")
    N, P = loc.shape[:2]
    expected = {"conf": (conf, (N, P, conf.shape[-1] if conf.ndim == 3 else "C")),
                "loc_t": (loc_t, (N, P, 4)), "conf_t": (conf_t, (N, P))}
    for name, (a, shape) in expected.items():
        if tuple(a.shape) != shape:
            raise ValueError(f"minissd/loss.py: {name} has shape {tuple(a.shape)}; expected "
                             f"{shape} to go with loc {tuple(loc.shape)} (targets come from "
                             "matching.match_batch with the model's default boxes)")
    if conf.shape[-1] < 2:
        raise ValueError(f"minissd/loss.py: conf has {conf.shape[-1]} class; it needs background "
                         "plus at least one object class (config.num_classes >= 2)")
    if conf_t.dtype.kind not in "iu":
        raise TypeError(f"minissd/loss.py: conf_t has dtype {conf_t.dtype}; pass integer labels "
                        "(conf_t.astype('int64'))")
