"""Data parallelism over processes: the communicator, and the few collective steps of training.

    mpiexec -n N python -m minissd.train ...      (or python -m minissd.train --procs N)

Each of the N processes (ranks) holds a full model and trains on its shard of the global
batch (data/loader.py's DataLoader.set_shard). Per step:

    rank r:  loc, conf = model.forward(x_r)           BN: batch statistics summed over ranks
             N_pos = allreduce_sum(positives_r)        the loss is normalised by the GLOBAL count
             model.backward(...)                       grads_r = d(loss_r) / d(params)
    all:     g = allreduce_sum(flat [grads_r, loss_r]) ONE all-reduce of one flat buffer
             opt.step(params, g)                       the same update on every rank

loss_r = (the rank's sums of L_conf and L_loc) / N_pos, so the sum over ranks of loss_r is the
whole batch's loss and the summed gradient is the whole batch's gradient: an N-process step is
one process's step on the whole batch, up to the order of float additions.

The communicator (SingleProcess or MPIComm) has size, rank, allreduce_sum(array), barrier()
and bcast(obj). mpi4py is imported only when more than one process was launched, so a plain
`python -m minissd.train --procs 1` never touches MPI. On the CPU, allreduce_sum is MPI's
Allreduce on NumPy buffers; on GPUs (one per rank) it is NCCL on CuPy's current stream, with
no copy through the host (backend.py holds the CuPy-specific calls).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np

from . import backend

# Environment variables by which MPI launchers tell a process the size of its job: MPICH and
# Intel MPI (hydra), Open MPI; Slurm's srun sets SLURM_NTASKS (with SLURM_PROCID per task).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def launched_size() -> int | None:
    """The number of processes an MPI launcher started this one with (None: not launched by
    one). Read from the environment, without importing mpi4py."""
    for name in _SIZE_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return None


_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")


def launched_rank() -> int:
    """This process's rank as its MPI launcher set it (0 when not launched by one), read from
    the environment before mpi4py is imported: only rank 0 tells the user about the data."""
    for name in _RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


class SingleProcess:
    """The communicator of a plain one-process run: every collective is the identity."""
    size = 1
    rank = 0

    def allreduce_sum(self, a):
        return a

    def barrier(self):
        pass

    def bcast(self, obj):
        return obj

    def on_root(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def abort(self, code=1):
        raise SystemExit(code)


class MPIComm:
    """MPI's COMM_WORLD through mpi4py. allreduce_sum takes a NumPy or CuPy array and returns
    the sum over the ranks as a new array of the same shape and dtype (the same bits on every
    rank); CuPy arrays go through NCCL (use_nccl, once the rank's GPU is chosen)."""

    def __init__(self):
        from mpi4py import MPI          # imported here: only a multi-process run needs it
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.nccl = None

    def use_nccl(self):
        """Set up NCCL among the ranks (each on its own GPU): rank 0 makes the unique id,
        MPI broadcasts it."""
        uid = backend.nccl_unique_id() if self.rank == 0 else None
        self.nccl = backend.nccl_communicator(self.size, self.comm.bcast(uid, root=0), self.rank)

    def allreduce_sum(self, a):
        if backend.is_cupy(a):
            if self.nccl is None:
                raise RuntimeError("minissd.distributed: a CuPy array to all-reduce, but NCCL "
                                   "is not set up (MPIComm.use_nccl)")
            return backend.nccl_allreduce_sum(self.nccl, a)
        send = np.ascontiguousarray(a).reshape(-1)
        out = np.empty_like(send)
        self.comm.Allreduce(send, out, op=self.MPI.SUM)
        return out.reshape(np.shape(a))

    def barrier(self):
        """Wait for every rank, sleeping rather than spinning: a rank waiting here (for rank 0's
        evaluation, say) leaves its core to the others."""
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(0.002)

    def bcast(self, obj):
        """Rank 0's obj on every rank (pickled)."""
        return self.comm.bcast(obj, root=0)

    def on_root(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on rank 0 alone (the other ranks sleep meanwhile); its result on
        every rank. Rank 0 keeps its BLAS limit: raising it to every core made evaluation 3-10x
        SLOWER on a loaded 2-core machine (BLAS threads spinning for a busy core)."""
        result = fn(*args, **kwargs) if self.rank == 0 else None
        self.barrier()
        return self.bcast(result)

    def abort(self, code=1):
        """End every rank of the job now (mpiexec kills the others)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def world():
    """The communicator of this process: MPIComm when an MPI launcher started more than one
    process, else SingleProcess (mpi4py not imported)."""
    size = launched_size()
    if size is None or size <= 1:
        return SingleProcess()
    try:
        comm = MPIComm()
    except ImportError:
        raise SystemExit("minissd.train: error: started by mpiexec with several processes, "
                         "but mpi4py is not installed; pip install mpi4py mpich") from None
    if comm.size != size:
        raise SystemExit(f"minissd.train: error: the launcher announced {size} processes but "
                         f"MPI sees {comm.size}; mpi4py may be built against another MPI than "
                         f"this mpiexec's (pip install mpi4py mpich, and use the mpiexec next "
                         f"to that python)")
    return comm


@contextlib.contextmanager
def rank0_first(comm):
    """Rank 0 runs the block first (it may create a shared file: the synthetic set), then the
    others."""
    if comm.rank != 0:
        comm.barrier()
    yield
    if comm.rank == 0:
        comm.barrier()


def sync_batch_norm(model, comm):
    """Synchronized batch norm: every BatchNorm2d of `model` sums its batch statistics (and
    their gradients) over the ranks, so it normalises with the statistics of the global batch
    and its running statistics are the same on every rank."""
    from .layers import BatchNorm2d
    for layer in model.leaf_layers():
        if isinstance(layer, BatchNorm2d):
            layer.reduce = comm.allreduce_sum


def allreduce_gradients(comm, grads, extras):
    """The gradients (and a few 0-d values: the loss, ...) summed over the ranks with ONE
    all-reduce of one flat buffer.

    grads:  {name: array} of this rank (its shard's part of the whole batch's gradient)
    extras: 0-d arrays or numbers to sum along (loss parts, a stop flag)
    returns ({name: summed array, views into the buffer}, [summed extras as 0-d arrays])
    """
    names = list(grads)
    xp = backend.get_array_module(grads[names[0]])
    dtype = grads[names[0]].dtype
    extra = xp.stack([xp.asarray(e, dtype=dtype).reshape(()) for e in extras])    # (E,)
    flat = xp.concatenate([grads[n].reshape(-1) for n in names] + [extra])        # (T + E,)
    total = comm.allreduce_sum(flat)
    out, at = {}, 0
    for n in names:
        g = grads[n]
        out[n] = total[at:at + g.size].reshape(g.shape)
        at += g.size
    return out, [total[at + i] for i in range(len(extras))]


def limit_blas_threads(comm):
    """N ranks sharing the cores: give each rank cores // N BLAS threads (at least 1), so that
    they do not each start a pool of every core. Returns the threadpoolctl limiter (keep it)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=max(1, (os.cpu_count() or 1) // comm.size),
                             user_api="blas")


def select_gpu(comm):
    """One GPU per rank: rank r of a node takes GPU (local rank % GPUs), then NCCL is set up."""
    local = int(os.environ.get("MPI_LOCALRANKID", os.environ.get(
        "OMPI_COMM_WORLD_LOCAL_RANK", os.environ.get("SLURM_LOCALID", comm.rank))))
    backend.use_gpu(local)
    if isinstance(comm, MPIComm):
        comm.use_nccl()


# --- python -m minissd.train --procs N: starting the processes --------------------------------

def find_mpiexec():
    """The mpiexec next to this Python (a virtual environment's, from the mpich wheel), else
    the one on PATH, else None."""
    import shutil
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec")


def missing_for_processes():
    """What `--procs N` (N > 1) lacks on this machine: None, or a short reason."""
    import importlib.util
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed"
    if find_mpiexec() is None:
        return "no mpiexec next to this python or on PATH"
    return None


def launch(procs, args, module="minissd.train"):
    """Run `mpiexec -n procs <this python> -m module args` and return its exit status. Ctrl-C
    goes to mpiexec, which passes it on to every process (each saves and stops as one run);
    this process only waits."""
    import signal
    import subprocess
    command = [find_mpiexec(), "-n", str(procs), sys.executable, "-m", module, *args]
    old = signal.signal(signal.SIGINT, lambda *_: None)     # a handler, not SIG_IGN, which
    try:                                                     # the child would inherit
        return subprocess.Popen(command).wait()
    finally:
        signal.signal(signal.SIGINT, old)


def run_as_rank(comm, fn, *args, **kwargs):
    """fn(*args, **kwargs) on one rank of a data-parallel job. A failure (an exception, an
    error exit) prints `minissd.train: rank R failed: ...` and aborts the whole job, so the
    other ranks never wait for this one forever."""
    import traceback
    try:
        with limit_blas_threads(comm):
            return fn(*args, **kwargs)
    except SystemExit as e:
        if e.code in (None, 0):
            raise
        why = e.code if isinstance(e.code, str) else f"exit status {e.code}"
    except BaseException as e:          # noqa: BLE001 (KeyboardInterrupt too: never hang)
        traceback.print_exc()
        why = f"{type(e).__name__}: {e}"
    print(f"minissd.train: rank {comm.rank} failed: {why}", file=sys.stderr)
    comm.abort(1)
