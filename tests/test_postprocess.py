"""detect(): known answers, and agreement with a loop-over-classes reference."""
import numpy as np
import pytest

from minissd.backend import stable_argsort, to_numpy
from minissd.boxes import center_to_corner, decode
from minissd.kernels.nms_kernel import nms_reference
from minissd.postprocess import _top_per_class, detect


def logits_for(probabilities):
    """Logits whose softmax is `probabilities` (..., C)."""
    return np.log(np.asarray(probabilities, np.float32))


def run_detect(to_xp, loc, conf, priors, **kw):
    out = detect(to_xp(loc), to_xp(conf), to_xp(priors), **kw)
    return [tuple(to_numpy(a) for a in image) for image in out]


PRIORS = np.array([[0.50, 0.50, 0.40, 0.40],
                   [0.52, 0.50, 0.40, 0.40],     # IoU with prior 0 ~ 0.9
                   [0.20, 0.20, 0.10, 0.10]], np.float32)


def test_overlapping_boxes_of_one_class_keep_one(to_xp):
    conf = logits_for([[[0.1, 0.9, 1e-12], [0.2, 0.8, 1e-12], [0.99, 0.01 - 1e-12, 1e-12]]])
    loc = np.zeros((1, 3, 4), np.float32)
    [(boxes, scores, labels)] = run_detect(to_xp, loc, conf, PRIORS)
    assert labels.tolist() == [1] and labels.dtype == np.int64
    np.testing.assert_allclose(scores, [0.9], rtol=1e-5)
    np.testing.assert_allclose(boxes, [[0.3, 0.3, 0.7, 0.7]], atol=1e-6)


def test_same_boxes_different_classes_both_kept(to_xp):
    conf = np.zeros((1, 3, 3), np.float32)
    conf[0, 0, 1], conf[0, 1, 2] = 6.0, 5.0      # prior 0 -> class 1 (.995), 1 -> class 2 (.987)
    conf[0, 2, 0] = 6.0                          # prior 2 -> background
    [(boxes, scores, labels)] = run_detect(to_xp, np.zeros((1, 3, 4), np.float32), conf, PRIORS)
    assert labels.tolist() == [1, 2]
    assert scores[0] > scores[1]
    np.testing.assert_allclose(boxes, to_numpy(center_to_corner(PRIORS[:2])), atol=1e-6)


def test_threshold_and_top_k(to_xp, rng):
    P = 50
    xy = rng.random((P, 2)).astype(np.float32)
    priors = np.concatenate([xy, np.full((P, 2), 0.01, np.float32)], axis=1)  # no overlaps
    probs = np.zeros((2, P, 3), np.float32)
    probs[..., 1] = rng.uniform(0.0, 0.5, (2, P))
    probs[..., 0] = 1 - probs[..., 1]
    conf = logits_for(np.maximum(probs, 1e-12))
    loc = np.zeros((2, P, 4), np.float32)
    out = run_detect(to_xp, loc, conf, priors, conf_threshold=0.25, top_k=7)
    for n, (boxes, scores, labels) in enumerate(out):
        expected = np.sort(probs[n, :, 1][probs[n, :, 1] > 0.25])[::-1][:7]
        np.testing.assert_allclose(scores, expected, rtol=1e-5)
        assert len(boxes) == len(labels) == len(scores) <= 7
        assert (labels == 1).all()
    nothing = run_detect(to_xp, loc, conf, priors, conf_threshold=0.6)
    assert all(len(s) == 0 and b.shape == (0, 4) for b, s, _ in nothing)


def detect_reference(loc, conf, priors, conf_threshold, nms_threshold, top_k):
    """Loop over images and classes; plain-Python NMS per class; top_k by score."""
    e = np.exp(conf - conf.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    boxes = decode(loc, priors)
    out = []
    for n in range(loc.shape[0]):
        found = []
        for c in range(1, conf.shape[-1]):
            idx = np.nonzero(probs[n, :, c] > conf_threshold)[0]
            keep = idx[nms_reference(boxes[n, idx], probs[n, idx, c], nms_threshold)]
            found += [(probs[n, i, c], boxes[n, i], c) for i in keep]
        found.sort(key=lambda d: -d[0])
        found = found[:top_k]
        out.append((np.array([d[1] for d in found]).reshape(-1, 4),
                    np.array([d[0] for d in found]), np.array([d[2] for d in found])))
    return out


def test_matches_loop_over_classes_reference(to_xp, rng):
    N, P, C = 2, 300, 5
    xy = rng.random((P, 2))
    priors = np.concatenate([xy, rng.uniform(0.05, 0.4, (P, 2))], axis=1).astype(np.float32)
    loc = rng.normal(0, 1, (N, P, 4)).astype(np.float32)
    conf = rng.normal(0, 2, (N, P, C)).astype(np.float32)
    got = run_detect(to_xp, loc, conf, priors, conf_threshold=0.2, nms_threshold=0.45,
                     top_k=40)
    ref = detect_reference(loc, conf, priors, 0.2, 0.45, 40)
    for (b, s, l), (rb, rs, rl) in zip(got, ref):
        assert len(s) == 40                       # enough candidates to hit top_k
        np.testing.assert_allclose(s, rs, rtol=1e-6)
        np.testing.assert_array_equal(l, rl)
        np.testing.assert_allclose(b, rb, rtol=1e-6, atol=1e-7)


def test_per_class_top_k_caps_candidates_before_nms():
    """With per_class_top_k = 2, only the two best boxes of each class can survive."""
    from minissd.postprocess import detect
    P = 6
    priors = np.tile(np.array([[0.5, 0.5, 0.2, 0.2]], np.float32), (P, 1))
    priors[:, 0] = np.linspace(0.1, 0.9, P)          # disjoint boxes: NMS keeps them all
    loc = np.zeros((1, P, 4), np.float32)
    conf = np.full((1, P, 3), -5.0, np.float32)
    conf[0, :, 1] = np.arange(P)                     # class 1 scores rise with the index
    conf[0, :, 2] = np.arange(P)[::-1]               # class 2 scores fall with the index
    boxes, scores, labels = detect(loc, conf, priors, per_class_top_k=2)[0]
    got = sorted(zip(labels.tolist(), np.round(boxes[:, 0].astype(np.float64) + 0.1, 4).tolist()))
    want = sorted([(1, round(float(priors[P - 1, 0]), 4)), (1, round(float(priors[P - 2, 0]), 4)),
                   (2, round(float(priors[0, 0]), 4)), (2, round(float(priors[1, 0]), 4))])
    assert got == want
    everything = detect(loc, conf, priors, per_class_top_k=None)[0]
    assert len(everything[0]) > len(boxes)


def _top_per_class_loop(scores, labels, k):
    """_top_per_class written as a loop: per label, candidates by (-score, index), first k."""
    keep = []
    for label in np.unique(labels):
        idx = [i for i in range(len(scores)) if labels[i] == label]
        keep += sorted(idx, key=lambda i: (-scores[i], i))[:k]
    return np.sort(np.array(keep, np.int64))


@pytest.mark.parametrize("M", [50, 500, 5000])
def test_top_per_class_breaks_ties_by_index(to_xp, rng, M):
    """Few distinct scores, so the k-th place is tied: the lower candidate indices are kept,
    the same rule on NumPy and CuPy (NumPy's default quicksort picked others from M = 500)."""
    scores = (rng.integers(0, 4, M) / 4 + 0.1).astype(np.float32)
    labels = rng.integers(1, 4, M)
    got = np.sort(to_numpy(_top_per_class(to_xp(scores), to_xp(labels), 40)))
    np.testing.assert_array_equal(got, _top_per_class_loop(scores, labels, 40))


def test_stable_argsort_keeps_ties_in_index_order(to_xp, rng):
    a = rng.integers(0, 5, 3000)
    order = to_numpy(stable_argsort(to_xp(a)))
    np.testing.assert_array_equal(order, np.lexsort((np.arange(3000), a)))


@pytest.mark.gpu
def test_detect_on_cupy_equals_detect_on_numpy(rng):
    """Detections of an untrained-looking output (every pair a candidate, many ties) are the
    same on both devices: the same sort rule, and IoUs without FMA."""
    from minissd import backend
    P, C = 3000, 5
    priors = np.concatenate([rng.random((P, 2)), rng.uniform(0.05, 0.3, (P, 2))], 1)
    priors = priors.astype(np.float32)
    loc = (rng.standard_normal((2, P, 4)) * 0.5).astype(np.float32)
    conf = np.round(rng.standard_normal((2, P, C)), 1).astype(np.float32)    # ties
    cpu = detect(loc, conf, priors)
    gpu = detect(*(backend.to_device(a, "cuda") for a in (loc, conf, priors)))
    for (bc, sc, lc), (bg, sg, lg) in zip(cpu, gpu):
        assert backend.is_cupy(bg)
        np.testing.assert_array_equal(to_numpy(lg), lc)
        np.testing.assert_allclose(to_numpy(sg), sc, rtol=1e-6)
        np.testing.assert_allclose(to_numpy(bg), bc, rtol=1e-5, atol=1e-6)
