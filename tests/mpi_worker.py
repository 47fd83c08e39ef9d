"""Run by tests/test_distributed.py under `mpiexec -n 2` (and imported by it for the
one-process reference): one data-parallel training step of a float64 micro SSD.

    mpiexec -n 2 python tests/mpi_worker.py step OUT.npz [bn|ghost]
        every rank: the step on its shard of the batch; writes OUT.npz.<rank> (parameters
        and buffers after the step). bn: synchronized batch norm; ghost: batch norm on each
        rank's own shard (NOT synchronized: what the test shows is different).
    mpiexec -n 2 python tests/mpi_worker.py fail RANK ARGS...
        python -m minissd.train ARGS with Trainer.step raising on rank RANK at its 2nd step.
"""
import dataclasses
import sys

import numpy as np

from minissd import distributed
from minissd.data.loader import shard_bounds
from minissd.model import SSD
from minissd.optim import SGD
from minissd.priors import default_boxes
from minissd.training.step import forward_backward
from test_model import micro_config

N = 5                         # the global batch: 3 + 2 images over two ranks


def config(batch_norm):
    return dataclasses.replace(micro_config(), batch_norm=batch_norm)


def global_batch():
    """The same 5 images, boxes and labels on every rank."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 3, 30, 30))
    boxes, labels = [], []
    for _ in range(N):
        g = int(rng.integers(1, 3))
        lo = rng.uniform(0, 0.5, size=(g, 2))
        boxes.append(np.concatenate([lo, lo + rng.uniform(0.2, 0.5, size=(g, 2))], 1))
        labels.append(rng.integers(1, 3, size=g))
    return x, boxes, labels


def state(model, loss):
    return {**{k: np.asarray(v) for k, v in model.state_dict().items()}, "loss": loss}


def main(argv):
    comm = distributed.world()
    if argv[0] == "step":
        out, mode = argv[1], (argv[2] if len(argv) > 2 else "")
        x, boxes, labels = global_batch()
        lo, hi = shard_bounds(N, comm.rank, comm.size)
        cfg = config(batch_norm=mode in ("bn", "ghost"))
        model = SSD(cfg, rng=0, dtype=np.float64)
        if mode != "ghost":
            distributed.sync_batch_norm(model, comm)       # as the Trainer does
        model, loss = _step_on(model, cfg, (x[lo:hi], boxes[lo:hi], labels[lo:hi]), comm)
        np.savez(f"{out}.{comm.rank}", **state(model, loss))
        return 0
    if argv[0] == "fail":
        from minissd import train
        from minissd.training import loop
        rank, real = int(argv[1]), loop.Trainer.step

        def step(self, s, *a):
            if comm.rank == rank and s == self.start + 1:
                raise RuntimeError(f"boom on rank {rank}")
            return real(self, s, *a)

        loop.Trainer.step = step
        return train.main(argv[2:])
    raise SystemExit(f"unknown mode {argv[0]}")


def _step_on(model, cfg, batch, comm):
    priors = default_boxes(cfg).astype(np.float64)
    loss, _, _ = forward_backward(model, priors, batch, cfg, comm)
    grads = model.grads
    if comm.size > 1:
        grads, (loss,) = distributed.allreduce_gradients(comm, grads, [loss])
    SGD(momentum=0.9, weight_decay=5e-4).step(model.params(), grads, 0.1)
    return model, float(loss)


def reference(batch_norm):
    """One process on the whole batch: the state the two ranks must both reach."""
    cfg = config(batch_norm)
    return state(*_step_on(SSD(cfg, rng=0, dtype=np.float64), cfg, global_batch(),
                           distributed.SingleProcess()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
