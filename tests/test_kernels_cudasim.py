"""Each CUDA kernel body run by Numba's CUDA simulator, checked against the NumPy references.

NUMBA_ENABLE_CUDASIM=1 is read when numba is first imported, and this pytest process has
imported numba already, so each check runs this file as a script in a fresh subprocess with
the flag set. The launchers accept NumPy arrays, which the simulator runs on directly. Sizes
are small (the simulator runs one Python thread per CUDA thread) but cross the 64-box NMS
blocks and the 32-thread scan chunks of the mining kernel.

    NUMBA_ENABLE_CUDASIM=1 python tests/test_kernels_cudasim.py iou|nms|mining
"""
import os
import subprocess
import sys

import numpy as np
import pytest


def _random_boxes(rng, n):
    xy = rng.random((n, 2))
    wh = rng.random((n, 2)) * 0.3
    wh[rng.random(n) < 0.1, 1] = 0.0                       # some zero-area boxes
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def check_iou(rng):
    from minissd.boxes import iou as reference
    from minissd.kernels import iou_kernel as K
    a, b = _random_boxes(rng, 9), _random_boxes(rng, 40)
    b[:3] = a[0]                                           # identical boxes
    for version in ("v1", "v2"):
        out = K.iou_matrix_cuda(a, b, version=version)
        np.testing.assert_array_equal(out, reference(a, b), err_msg=version)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_array_equal(K.iou_matrix_cuda(a64, b64, version="v1"),
                                  reference(a64, b64))


def check_nms(rng):
    from minissd.kernels import nms_kernel as K
    for M in (1, 70, 130):
        boxes = _random_boxes(rng, M)
        scores = (rng.integers(0, 10, M) / 10).astype(np.float32)   # ties
        labels = rng.integers(1, 4, M)
        np.testing.assert_array_equal(K.nms_cuda(boxes, scores, 0.3),
                                      K.nms_reference(boxes, scores, 0.3), err_msg=f"M={M}")
        np.testing.assert_array_equal(K.batched_nms_cuda(boxes, scores, labels, 0.3),
                                      K.nms_reference(boxes, scores, 0.3, labels))
    same = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (4, 1))
    assert K.nms_cuda(same, np.ones(4, np.float32), 0.5).tolist() == [0]   # all suppressed


def check_mining(rng):
    from minissd.kernels import hard_negative_kernel as K
    loss = (rng.integers(0, 20, (4, 150)) / 3).astype(np.float32)     # ties
    loss[:, ::4] *= -1                                                # negative losses
    positive = rng.random((4, 150)) < 0.08
    positive[1] = False                                               # no positives
    positive[2, :140] = True                                          # k capped at num_neg
    for threads in (32, 64):
        np.testing.assert_array_equal(K.hard_negative_mask_cuda(loss, positive, 3, threads),
                                      K.hard_negative_mask_reference(loss, positive, 3),
                                      err_msg=f"threads={threads}")


CHECKS = {"iou": check_iou, "nms": check_nms, "mining": check_mining}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_kernel_in_simulator(name):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, __file__, name], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"simulator check {name!r} failed:\n{run.stdout}\n{run.stderr}"
    assert f"ok {name}" in run.stdout


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        sys.exit("set NUMBA_ENABLE_CUDASIM=1 (the simulator flag is read when numba is imported)")
    for name in sys.argv[1:] or sorted(CHECKS):
        CHECKS[name](np.random.default_rng(0))
        print(f"ok {name}")
