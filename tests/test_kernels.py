"""minissd.kernels against the NumPy references, on the device under test.

CPU by default (the numba njit paths); with `pytest --device cuda` the same tests hand CuPy
arrays to the dispatchers, which then run the CUDA kernels for real. The CUDA kernel bodies are
also checked on the CPU by test_kernels_cudasim.py (simulator) and test_kernels_ptx.py.
"""
import numpy as np
import pytest

from minissd.backend import to_numpy
from minissd.boxes import iou as iou_reference
from minissd.kernels import batched_nms, hard_negative_mask, iou_matrix, nms
from minissd.kernels.hard_negative_kernel import hard_negative_mask_reference as mining_reference
from minissd.kernels.nms_kernel import nms_reference


def random_boxes(rng, n, dtype=np.float32, degenerate=0.0):
    """n corner boxes in [0, 1.3]; a `degenerate` fraction has zero width or height."""
    xy = rng.random((n, 2))
    wh = rng.random((n, 2)) * 0.3
    wh[rng.random(n) < degenerate, rng.integers(0, 2)] = 0.0
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


# ---------------------------------------------------------------------------------------- IoU

def test_iou_known_answers(to_xp):
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 0, 0]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 1, 1], [0, 0, 0, 0], [5, 5, 6, 6]], np.float32)
    expected = np.array([[1 / 7, 1 / 4, 0, 0],
                         [0, 1, 0, 0],
                         [0, 0, 0, 0]], np.float32)    # zero-area vs zero-area: 0, not NaN
    out = to_numpy(iou_matrix(to_xp(a), to_xp(b)))
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert not np.isnan(out).any()


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1), (7, 13), (64, 300)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_iou_matches_reference(to_xp, rng, shape, dtype):
    a = random_boxes(rng, shape[0], dtype, degenerate=0.2)
    b = random_boxes(rng, shape[1], dtype, degenerate=0.2)
    if len(a) and len(b):
        b[: len(b) // 3] = a[0]                                  # identical boxes
    out = to_numpy(iou_matrix(to_xp(a), to_xp(b)))
    ref = iou_reference(a, b)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)


def test_iou_rejects_bad_shape(to_xp):
    with pytest.raises(ValueError, match="iou_kernel.py"):
        iou_matrix(to_xp(np.zeros((3, 5), np.float32)), to_xp(np.zeros((2, 4), np.float32)))


# ---------------------------------------------------------------------------------------- NMS

def run_nms(to_xp, boxes, scores, thr, labels=None):
    if labels is None:
        keep = nms(to_xp(boxes), to_xp(scores), thr)
    else:
        keep = batched_nms(to_xp(boxes), to_xp(scores), to_xp(labels), thr)
    keep = to_numpy(keep)
    assert keep.dtype == np.int64
    return keep


def test_nms_known_answers(to_xp):
    boxes = np.array([[0, 0, 1, 1],         # 0: score .8
                      [0, 0, 1, 0.9],       # 1: score .9, IoU(0, 1) = .9
                      [2, 2, 3, 3],         # 2: alone
                      [0, 0, 1, 0.5]],      # 3: IoU(1, 3) = .5/.9 = .556
                     np.float32)
    scores = np.array([0.8, 0.9, 0.1, 0.7], np.float32)
    assert run_nms(to_xp, boxes, scores, 0.45).tolist() == [1, 2]
    assert run_nms(to_xp, boxes, scores, 0.6).tolist() == [1, 3, 2]
    assert run_nms(to_xp, boxes, scores, 0.95).tolist() == [1, 0, 3, 2]   # none suppressed


def test_nms_edge_cases(to_xp):
    empty = run_nms(to_xp, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert empty.shape == (0,)
    one = run_nms(to_xp, np.array([[0, 0, 1, 1]], np.float32), np.array([0.3], np.float32), 0.5)
    assert one.tolist() == [0]
    # identical boxes with equal scores: the lower index survives (stable order)
    same = np.tile(np.array([[0.1, 0.1, 0.4, 0.5]], np.float32), (5, 1))
    assert run_nms(to_xp, same, np.full(5, 0.5, np.float32), 0.5).tolist() == [0]
    # all suppressed by the best one
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.4], np.float32)
    assert run_nms(to_xp, same, scores, 0.0).tolist() == [2]
    # zero-area boxes have IoU 0 with everything: never suppressed, never suppress
    flat = np.array([[0.2, 0.2, 0.2, 0.6], [0.2, 0.2, 0.2, 0.6]], np.float32)
    assert run_nms(to_xp, flat, np.array([0.5, 0.6], np.float32), 0.0).tolist() == [1, 0]
    # IoU exactly at the threshold is not suppressed (strict >)
    half = np.array([[0, 0, 1, 1], [0, 0, 1, 0.5]], np.float32)
    assert run_nms(to_xp, half, np.array([0.9, 0.8], np.float32), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("M", [2, 63, 64, 65, 500])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_reference(to_xp, rng, M, thr):
    boxes = random_boxes(rng, M, degenerate=0.05)
    scores = rng.integers(0, 20, M).astype(np.float32) / 20     # many ties
    np.testing.assert_array_equal(run_nms(to_xp, boxes, scores, thr),
                                  nms_reference(boxes, scores, thr))


def test_batched_nms_never_crosses_labels(to_xp):
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0.95]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert run_nms(to_xp, boxes, scores, 0.5, np.array([1, 2, 1])).tolist() == [0, 1]
    assert run_nms(to_xp, boxes, scores, 0.5, np.array([1, 2, 3])).tolist() == [0, 1, 2]


@pytest.mark.parametrize("M", [0, 1, 100, 700])
def test_batched_nms_matches_reference(to_xp, rng, M):
    boxes = random_boxes(rng, M, degenerate=0.05)
    scores = rng.integers(0, 30, M).astype(np.float32) / 30
    labels = rng.integers(1, 5, M)
    np.testing.assert_array_equal(run_nms(to_xp, boxes, scores, 0.45, labels),
                                  nms_reference(boxes, scores, 0.45, labels))


# ------------------------------------------------------------------------------------- mining

def run_mining(to_xp, loss, positive, ratio):
    mask = to_numpy(hard_negative_mask(to_xp(loss), to_xp(positive), ratio))
    assert mask.dtype == bool and mask.shape == loss.shape
    assert not (mask & positive).any(), "a positive box was selected as a hard negative"
    return mask


def test_mining_known_answers(to_xp):
    loss = np.array([[1, 5, 3, 5, 2],
                     [4, 4, 4, 4, 4],       # all tied: lower index first
                     [9, 8, 7, 6, 5]], np.float32)
    positive = np.array([[0, 0, 1, 0, 0],
                         [0, 1, 0, 0, 0],
                         [0, 0, 0, 0, 0]], bool)   # image 2: no positives -> no negatives
    mask = run_mining(to_xp, loss, positive, 2)
    assert mask.tolist() == [[False, True, False, True, False],
                             [True, False, True, False, False],
                             [False] * 5]
    # the ratio is capped by the number of negatives; a fractional ratio is floored
    assert run_mining(to_xp, loss, positive, 10)[:2].sum(axis=1).tolist() == [4, 4]
    assert run_mining(to_xp, loss, positive, 2.5)[:2].sum(axis=1).tolist() == [2, 2]


def test_mining_all_positive_and_empty(to_xp):
    loss = np.ones((2, 6), np.float32)
    assert not run_mining(to_xp, loss, np.ones((2, 6), bool), 3).any()
    assert run_mining(to_xp, np.zeros((3, 0), np.float32), np.zeros((3, 0), bool), 3).shape \
        == (3, 0)


@pytest.mark.parametrize("N,P", [(1, 1), (4, 97), (8, 2000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mining_matches_reference(to_xp, rng, N, P, dtype):
    loss = (rng.integers(0, 50, (N, P)) / 7).astype(dtype)       # ties on purpose
    loss[:, ::5] = -loss[:, ::5]                                 # and negative values
    loss[0, :3] = [0.0, -0.0, 0.0][:min(3, P)]                   # signed zeros compare equal
    positive = rng.random((N, P)) < 0.05
    if N > 1:
        positive[1] = False
    np.testing.assert_array_equal(run_mining(to_xp, loss, positive, 3),
                                  mining_reference(loss, positive, 3))
