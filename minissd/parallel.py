"""Data parallelism over CPU threads: one training step of SSD on several cores.

A NumPy training step runs mostly in element-wise operations, copies (im2col) and reductions
(batch norm), which NumPy performs on ONE core; only the matrix products can use more (through
BLAS). On a 2-core machine one training process therefore leaves most of the second core idle.
NumPy releases Python's GIL inside its array operations, so two Python threads working on two
halves of the batch do run at the same time. That is all this module does:

    images (N, 3, S, S) --split--> [x_0, x_1, ...]           one slice of the batch per thread
    thread r:   loc_r, conf_r = replica_r.forward(x_r)        every replica shares the weights
    main:       loc, conf = concatenate(loc_r), concatenate(conf_r)
                loss on the WHOLE batch (matching, mining, normalisation by all positives)
    thread r:   replica_r.backward(dloc_r, dconf_r)           each its own slice of the gradient
    main:       grads = sum over r of replica_r.grads         the gradient of the whole batch

Because the loss is computed on the concatenated predictions, the gradient is exactly the
whole-batch gradient for every layer without batch statistics. The one difference from a
single-threaded step is batch norm: each replica normalises with the statistics of its own
slice ("ghost batch norm", as in data-parallel training on several GPUs without synchronised
batch norm), and the running statistics are averaged over the replicas after each step.

Replicas are full SSD objects (each layer keeps its own forward cache) whose layers hold the
SAME parameter arrays as the model: an optimizer updating the model's parameters in place
updates every replica. Results are deterministic: each slice is computed by a fixed replica,
and the gradients are added in replica order.

While the threads run, BLAS is limited to one thread per call (threadpoolctl), so the two
threads do not each start a BLAS thread pool on the same two cores.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .backend import get_array_module
from .model import SSD


class ThreadedSSD:
    """Runs model.forward / model.backward split over `num_threads` replicas (CPU only).

    par = ThreadedSSD(model, 2)
    loc, conf = par.forward(images)              # as model.forward, for the whole batch
    par.backward(dloc, dconf)                     # fills par.grads (the whole batch's gradient)
    par.sync_buffers()                            # average BatchNorm running statistics
    par.close()

    The model itself is replica 0; the others are built from its config and then given its
    parameter arrays. Batches smaller than num_threads use fewer threads.
    """

    def __init__(self, model, num_threads=2):
        if num_threads < 1:
            raise ValueError(f"ThreadedSSD: num_threads must be at least 1, got {num_threads}")
        self.model = model
        self.replicas = [model]
        for _ in range(num_threads - 1):
            replica = SSD(model.config, rng=0, dtype=model.dtype)
            replica.load_state_dict(model.state_dict())         # its own copy of the buffers
            for mine, theirs in zip(replica.leaf_layers(), model.leaf_layers()):
                mine.tie_params(theirs)                         # the same arrays: shared weights
            self.replicas.append(replica)
        self._pool = ThreadPoolExecutor(num_threads) if num_threads > 1 else None
        self.threads_used = 1
        self.grads = {}

    def params(self):
        """The model's parameters (shared by every replica)."""
        return self.model.params()

    @property
    def config(self):
        return self.model.config

    @property
    def num_threads(self):
        return len(self.replicas)

    def _map(self, fn, *args):
        """fn(replica, *slices) in a thread per replica, results in replica order."""
        work = list(zip(self.replicas[:self.threads_used], *args))
        if self._pool is None or len(work) == 1:
            return [fn(*w) for w in work]
        with threadpool_limits(limits=1, user_api="blas"):
            futures = [self._pool.submit(fn, *w) for w in work]
            return [f.result() for f in futures]

    def forward(self, x):
        """x (N, 3, S, S) -> loc (N, P, 4), conf (N, P, C), as SSD.forward.

        The replicas take the model's train/eval mode first (the model may have been
        switched since the last call)."""
        for replica in self.replicas[1:]:
            replica.train(self.model.training)
        self.threads_used = min(self.num_threads, x.shape[0])
        chunks = np.array_split(np.arange(x.shape[0]), self.threads_used)
        self._bounds = [(int(c[0]), int(c[-1]) + 1) for c in chunks]
        xs = [x[a:b] for a, b in self._bounds]
        outs = self._map(lambda m, xi: m.forward(xi), xs)
        xp = get_array_module(x)
        if len(outs) == 1:
            return outs[0]
        return (xp.concatenate([o[0] for o in outs]), xp.concatenate([o[1] for o in outs]))

    def backward(self, dloc, dconf, need_dx=True):
        """As SSD.backward: the whole batch's gradient into self.grads; returns dx (N, 3, S, S),
        or None with need_dx=False (training never needs the image gradient)."""
        dl = [dloc[a:b] for a, b in self._bounds]
        dc = [dconf[a:b] for a, b in self._bounds]
        dxs = self._map(lambda m, a, b: m.backward(a, b, need_dx=need_dx), dl, dc)
        grads = dict(self.replicas[0].grads)
        for replica in self.replicas[1:self.threads_used]:
            for name, g in replica.grads.items():
                grads[name] = grads[name] + g
        self.grads = grads
        if not need_dx:
            return None
        return dxs[0] if len(dxs) == 1 else get_array_module(dxs[0]).concatenate(dxs)

    def sync_buffers(self):
        """Average the replicas' BatchNorm running statistics into every replica."""
        if self.threads_used == 1:
            return
        used = self.threads_used                 # replicas that saw a slice this step
        per_replica = [r.buffers() for r in self.replicas]         # [(name, array)] each
        for i, (_, main) in enumerate(per_replica[0]):
            mean = sum(per_replica[r][i][1] for r in range(used)) / used
            for buffers in per_replica:
                buffers[i][1][...] = mean

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
