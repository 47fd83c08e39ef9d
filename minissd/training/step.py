"""One training step's loss and gradients (the optimizer update follows in loop.py):

    loc, conf       = model.forward(images)                             model.py
    loc_t, conf_t   = match_batch(gt boxes, gt labels, priors)          matching.py
    loss, parts, c  = multibox_loss_forward(loc, conf, loc_t, conf_t)   loss.py
    dloc, dconf     = multibox_loss_backward(c)
    model.backward(dloc, dconf)                                         fills model.grads
"""
from __future__ import annotations

from ..loss import multibox_loss_backward, multibox_loss_forward
from ..matching import match_batch


def forward_backward(model, priors, batch, config, comm=None):
    """Loss and gradients of one batch (images, [boxes], [labels]): fills model.grads.
    Returns (loss, loc part, conf part) as 0-d device arrays (no host sync here).

    comm: data parallelism (minissd/distributed.py): the batch is this process's shard, and
    the loss is normalised by the positives of the global batch, all processes together; the
    gradients are this process's part of the whole batch's (distributed.allreduce_gradients
    adds them up)."""
    x, boxes, labels = batch
    loc, conf = model.forward(x)                                          # (N, P, 4), (N, P, C)
    loc_t, conf_t = match_batch(boxes, labels, priors, variances=config.variances)
    num_pos = None if comm is None else comm.allreduce_sum((conf_t > 0).sum())
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t, num_pos=num_pos)
    dloc, dconf = multibox_loss_backward(cache)
    model.backward(dloc, dconf, need_dx=False)
    return loss, parts["loc"], parts["conf"]
