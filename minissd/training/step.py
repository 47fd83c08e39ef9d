"""One training step's loss and gradients (the optimizer update follows in loop.py):

    loc, conf       = model.forward(images)                             model.py
    loc_t, conf_t   = match_batch(gt boxes, gt labels, priors)          matching.py
    loss, parts, c  = multibox_loss_forward(loc, conf, loc_t, conf_t)   loss.py
    dloc, dconf     = multibox_loss_backward(c)
    model.backward(dloc, dconf)                                         fills model.grads

Host syncs. On a GPU nothing here waits for the device: the images arrive already copied
(data/loader.py's to_device_prefetched, from pinned memory on a side stream), matching builds
its targets with where/argmax (no nonzero) from two copies of the batch's ground truth, the
loss and its mining stay on the device, and the losses come back as 0-d device arrays. The
ones that remain in a training step, each needed by the step's logic and marked where it is:
  * data parallelism only: the global positive count (comm.allreduce_sum below; NCCL on
    GPUs queues it on the stream, MPI on the CPU waits for the other processes) and the
    Ctrl-C flag summed with the gradients (loop.py's reduce_step: every rank must agree to
    stop after the same step);
  * the pinned-buffer reuse in backend.HostToDevice.start (the copy queued a step earlier
    must have read the buffer before the host refills it);
  * loop.py's log_losses, once per log line: the mean losses as numbers, and the NaN check;
  * at a checkpoint, checkpoint.params_finite: one sync for all the parameters.
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
    loc_t, conf_t = match_batch(boxes, labels, priors, variances=config.variances,
                                rule=config.matching)
    # data parallelism: the positives of the global batch (a host sync with MPI on the CPU)
    num_pos = None if comm is None else comm.allreduce_sum((conf_t > 0).sum())
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t, num_pos=num_pos)
    dloc, dconf = multibox_loss_backward(cache)
    # the outputs, the targets and the loss cache are not needed by the model's backward:
    # dropped now, the step's peak (at the start of backward) does not hold them
    del loc, conf, loc_t, conf_t, cache
    model.backward(dloc, dconf, need_dx=False)
    return loss, parts["loc"], parts["conf"]
