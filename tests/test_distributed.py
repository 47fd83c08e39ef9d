"""Data parallelism over processes (minissd/distributed.py): two MPI processes on the CPU,
started with `mpiexec -n 2` in a subprocess (skipped, with the reason, where mpi4py or mpiexec
is missing).

- one step of two processes gives the parameters of one process on the whole batch, without
  batch norm and with synchronized batch norm (its statistics are the global batch's, so the
  running statistics match too); per-shard ("ghost") statistics would not, which shows the
  comparison can fail;
- a 2-process run resumed from its checkpoint equals the uninterrupted 2-process run, bit
  for bit (the launcher `--procs 2` starts one of them);
- a rank that raises ends the whole run, with its message and a non-zero exit, in time.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minissd import distributed
from minissd.data.loader import shard_bounds
from minissd.weights import load_checkpoint

HERE = Path(__file__).resolve().parent
MPIEXEC = distributed.find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and an mpiexec (pip install mpi4py mpich)")

SMALL = ["--num-train", "12", "--num-val", "6", "--batch-size", "4", "--workers", "1",
         "--no-progress", "--device", "cpu", "--warmup", "2", "--milestones", "5",
         "--lr", "0.01", "--eval-every", "0", "--log-every", "1", "--ckpt-every", "2"]


def _env(tmp_path):
    env = dict(os.environ, MINISSD_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(HERE))
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE"):   # not inside a job
        env.pop(name, None)
    return env


def _mpiexec(args, tmp_path, timeout=120):
    return subprocess.run([MPIEXEC, "-n", "2", sys.executable, *args], cwd=HERE,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def test_shards_cover_the_batch_in_order():
    for n in range(1, 9):
        for size in range(1, n + 1):
            parts = [shard_bounds(n, r, size) for r in range(size)]
            expect = [(int(p[0]), int(p[-1]) + 1) for p in np.array_split(np.arange(n), size)]
            assert parts == expect, (n, size)


@needs_mpi
@pytest.mark.parametrize("mode", ["", "bn", "ghost"])
def test_two_processes_make_the_one_process_step(tmp_path, mode):
    import mpi_worker
    out = tmp_path / "state"
    r = _mpiexec([str(HERE / "mpi_worker.py"), "step", str(out), mode], tmp_path)
    assert r.returncode == 0, r.stderr
    ranks = [np.load(f"{out}.{rank}.npz") for rank in (0, 1)]
    reference = mpi_worker.reference(batch_norm=mode != "")
    if mode == "ghost":
        # each rank normalising with its own shard's statistics is NOT the whole batch's step
        worst = max(float(np.max(np.abs(ranks[0][k] - reference[k]))) for k in reference)
        assert worst > 1e-3
        return
    assert set(ranks[0].files) == set(reference)
    for k, want in reference.items():
        # float64: the same step up to the order of additions (the all-reduce's sums)
        np.testing.assert_allclose(ranks[0][k], want, rtol=1e-10, atol=1e-12, err_msg=k)
        # every rank holds the same parameters and running statistics, bit for bit
        np.testing.assert_array_equal(ranks[1][k], ranks[0][k], err_msg=k)
    if mode == "bn":
        assert any(k.endswith("running_mean") for k in reference)


@needs_mpi
def test_two_process_resume_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    run = [sys.executable, "-m", "minissd.train"]
    r = subprocess.run(run + SMALL + ["--iters", "4", "--procs", "2", "--out", str(full)],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "2 processes" in r.stderr
    r = _mpiexec(["-m", "minissd.train"] + SMALL + ["--iters", "2", "--out", str(part)],
                 tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(run + ["--resume", str(part / "last.npz"), "--iters", "4", "--workers",
                              "1", "--no-progress", "--device", "cpu"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr         # resumed with the checkpoint's 2 processes
    a, meta_a = load_checkpoint(full / "last.npz")
    b, meta_b = load_checkpoint(part / "last.npz")
    assert meta_a["step"] == meta_b["step"] == 4
    assert meta_a["settings"]["procs"] == meta_b["settings"]["procs"] == 2
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in meta_a["optim_state"]:
        np.testing.assert_array_equal(meta_a["optim_state"][k], meta_b["optim_state"][k])
    lines = (full / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"loss"' in line]) == 4   # rank 0 alone writes


@needs_mpi
def test_a_failing_rank_ends_every_rank(tmp_path):
    args = [str(HERE / "mpi_worker.py"), "fail", "1"] + SMALL + ["--iters", "50", "--out",
                                                                 str(tmp_path / "run")]
    r = _mpiexec(args, tmp_path, timeout=120)      # a hang would raise TimeoutExpired
    assert r.returncode != 0
    assert "minissd.train: rank 1 failed: RuntimeError: boom on rank 1" in r.stderr


def test_without_mpi_the_default_trains_in_one_process(tmp_path, monkeypatch, capsys):
    from minissd import train
    monkeypatch.setenv("MINISSD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(distributed, "missing_for_processes", lambda: "mpi4py is not installed")
    monkeypatch.setattr(train.os, "cpu_count", lambda: 2)
    small = SMALL
    # asked for: a one-line error naming what to install
    with pytest.raises(SystemExit) as e:
        train.main(small + ["--iters", "1", "--procs", "2", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minissd.train: error: --procs 2: mpi4py is not installed; pip install "
                   "mpi4py mpich (or train in one process: --procs 1)"]
    # the default (one process per core): a notice, then one process
    assert train.main(small + ["--iters", "1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "training in one process (mpi4py is not installed; pip install mpi4py mpich" in err
    _, meta = load_checkpoint(tmp_path / "run" / "last.npz")
    assert meta["settings"]["procs"] == 1


def test_the_launched_processes_get_the_command_line_without_procs():
    from minissd.train import _without_procs
    assert _without_procs(["--iters", "3", "--procs", "2", "--lr", "1"]) == \
        ["--iters", "3", "--lr", "1"]
    assert _without_procs(["--procs=4", "--no-progress"]) == ["--no-progress"]
