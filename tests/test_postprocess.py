"""detect(): known answers, and agreement with a loop-over-classes reference."""
import numpy as np

from minissd.backend import to_numpy
from minissd.boxes import center_to_corner, decode
from minissd.kernels.nms_kernel import nms_reference
from minissd.postprocess import detect


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
