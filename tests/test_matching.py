"""Matching: hand-made cases (a shared best prior, the threshold, no objects), encode/decode,
and the batched matcher against the per-image one."""
import numpy as np
import pytest

from minissd import boxes
from minissd.backend import to_numpy
from minissd.config import tiny
from minissd.kernels import iou_matrix
from minissd.matching import match, match_batch
from minissd.priors import default_boxes


def _random_gt(rng, g):
    """g random corner-form boxes inside the unit square."""
    centre = rng.uniform(0.1, 0.9, (g, 2))
    wh = rng.uniform(0.05, 0.7, (g, 2))
    return np.clip(np.concatenate([centre - wh / 2, centre + wh / 2], 1), 0, 1).astype(np.float32)


def test_iou_of_two_boxes_by_hand(to_xp):
    a = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
    b = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
    # Intersection 0.25 x 0.25 = 1/16; union 1/4 + 1/4 - 1/16 = 7/16; IoU = 1/7.
    np.testing.assert_allclose(to_numpy(iou_matrix(to_xp(a), to_xp(b))), [[1 / 7]], rtol=1e-6)
    np.testing.assert_allclose(boxes.iou(a, b), [[1 / 7]], rtol=1e-6)


def test_later_ground_truth_wins_a_shared_prior(to_xp):
    priors = to_xp(np.array([[0.5, 0.5, 0.2, 0.2],      # both GTs overlap this one most
                             [0.1, 0.1, 0.2, 0.2],
                             [0.9, 0.9, 0.2, 0.2]], np.float32))
    gt = np.array([[0.42, 0.42, 0.60, 0.60],              # GT 0, label 3
                   [0.40, 0.40, 0.58, 0.58]], np.float32)  # GT 1, label 5
    loc_t, conf_t = match(to_xp(gt), to_xp(np.array([3, 5])), priors)
    assert to_numpy(conf_t).tolist() == [5, 0, 0]      # GT 1 wrote last; no +1 label shift
    assert conf_t.dtype == np.int64 and loc_t.shape == (3, 4)
    decoded = boxes.decode(to_numpy(loc_t)[:1], to_numpy(priors)[:1])
    np.testing.assert_allclose(decoded[0], gt[1], atol=1e-6)
    np.testing.assert_array_equal(to_numpy(loc_t)[1:], 0)   # background offsets are zero


@pytest.mark.parametrize("threshold", [0.5, 0.6])
def test_threshold(to_xp, threshold):
    gt = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
    # Priors in center form, all cornered at (0, 0), width 0.5, heights chosen so the IoU with
    # the GT is exactly h / 0.5 (binary fractions: no rounding in float32).
    heights = [0.5, 0.25, 0.3125, 0.1875]              # IoU 1, 0.5, 0.625, 0.375
    priors = np.array([[0.25, h / 2, 0.5, h] for h in heights], np.float32)
    loc_t, conf_t = match(to_xp(gt), to_xp(np.array([7])), to_xp(priors), iou_threshold=threshold)
    expected = [7, 7 if threshold <= 0.5 else 0, 7, 0]    # prior 0 claimed; >= threshold keeps
    assert to_numpy(conf_t).tolist() == expected


def test_a_ground_truth_below_threshold_still_gets_its_best_prior(to_xp):
    priors = to_xp(np.array([[0.5, 0.5, 0.8, 0.8], [0.1, 0.1, 0.1, 0.1]], np.float32))
    gt = to_xp(np.array([[0.45, 0.45, 0.55, 0.55]], np.float32))   # IoU with prior 0: 0.016
    _, conf_t = match(gt, to_xp(np.array([2])), priors)
    assert to_numpy(conf_t).tolist() == [2, 0]


def test_no_objects(to_xp):
    priors = to_xp(default_boxes(tiny()))
    P = priors.shape[0]
    loc_t, conf_t = match(to_xp(np.zeros((0, 4), np.float32)), to_xp(np.zeros(0, np.int64)), priors)
    assert loc_t.shape == (P, 4) and conf_t.shape == (P,)
    assert not to_numpy(conf_t).any() and not to_numpy(loc_t).any()
    loc_t, conf_t = match_batch([np.zeros((0, 4))] * 2, [np.zeros(0)] * 2, priors)
    assert loc_t.shape == (2, P, 4) and conf_t.shape == (2, P)
    assert not to_numpy(conf_t).any() and not to_numpy(loc_t).any()


def test_encode_decode_round_trip(rng):
    priors = default_boxes(tiny()).astype(np.float64)
    idx = rng.choice(len(priors), 50, replace=False)
    p = priors[idx]
    gt = _random_gt(rng, 50).astype(np.float64)
    t = boxes.encode(gt, p, (0.1, 0.2))
    np.testing.assert_allclose(boxes.decode(t, p, (0.1, 0.2)), gt, atol=1e-12)
    # And the other way: any offsets decode to boxes that encode back to them.
    t = rng.normal(size=(50, 4))
    np.testing.assert_allclose(boxes.encode(boxes.decode(t, p), p), t, atol=1e-9)


def test_positives_decode_to_their_ground_truth(rng, to_xp):
    priors = default_boxes(tiny())
    gt = _random_gt(rng, 6)
    labels = np.arange(1, 7)
    loc_t, conf_t = (to_numpy(a) for a in match(to_xp(gt), to_xp(labels), to_xp(priors)))
    pos = conf_t > 0
    assert set(conf_t[pos]) == set(labels)              # every object got a prior
    decoded = boxes.decode(loc_t[pos], priors[pos])
    np.testing.assert_allclose(decoded, gt[conf_t[pos] - 1], atol=1e-5)
    # Positives other than claimed ones really overlap their GT by >= 0.5.
    ious = boxes.iou(gt, boxes.center_to_corner(priors))[conf_t[pos] - 1, np.nonzero(pos)[0]]
    assert (ious >= 0.5).sum() >= pos.sum() - len(gt)


def test_batch_equals_a_loop_of_match(rng, to_xp):
    priors = to_xp(default_boxes(tiny()))
    counts = [3, 0, 12, 1, 7, 20]
    gts = [_random_gt(rng, g) for g in counts]
    # Image 5: many near-duplicate boxes, so best priors are shared between GTs.
    gts[5] = np.clip(gts[5][:1] + rng.uniform(-0.01, 0.01, (20, 4)), 0, 1).astype(np.float32)
    labels = [rng.integers(1, 7, g) for g in counts]
    loc_b, conf_b = match_batch([to_xp(g) for g in gts], [to_xp(l) for l in labels], priors)
    assert loc_b.shape == (len(counts), priors.shape[0], 4) and conf_b.dtype == np.int64
    for n in range(len(counts)):
        loc_t, conf_t = match(to_xp(gts[n]), to_xp(labels[n]), priors)
        np.testing.assert_array_equal(to_numpy(conf_b[n]), to_numpy(conf_t))
        np.testing.assert_allclose(to_numpy(loc_b[n]), to_numpy(loc_t), rtol=1e-6, atol=1e-6)


def test_mismatched_labels_are_reported():
    with pytest.raises(ValueError, match="one label"):
        match(np.zeros((2, 4), np.float32), np.array([1]), default_boxes(tiny()))


def _match_with_nonzero(gt, labels, priors):
    """The matching rule written the plain way, encoding only the positives it finds with
    nonzero (a host sync on a GPU): the reference the sync-free match_batch must equal."""
    P = priors.shape[0]
    loc_t, conf_t = np.zeros((P, 4), priors.dtype), np.zeros(P, np.int64)
    if len(gt) == 0:
        return loc_t, conf_t
    overlaps = iou_matrix(gt, boxes.center_to_corner(priors))         # (G, P)
    best_gt, best_iou = overlaps.argmax(0), overlaps.max(0)
    for g, p in enumerate(overlaps.argmax(1)):
        best_gt[p], best_iou[p] = g, 2.0
    pos = np.nonzero(best_iou >= 0.5)[0]
    conf_t[pos] = labels[best_gt[pos]]
    loc_t[pos] = boxes.encode(gt[best_gt[pos]], priors[pos])
    return loc_t, conf_t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_is_bit_identical_to_encoding_the_positives_only(seed):
    rng = np.random.default_rng(seed)
    priors = default_boxes(tiny())
    counts = rng.integers(0, 15, 6).tolist()
    gts = [_random_gt(rng, g) for g in counts]
    labels = [rng.integers(1, 7, g) for g in counts]
    loc_b, conf_b = match_batch(gts, labels, priors)
    for n in range(len(counts)):
        loc_t, conf_t = _match_with_nonzero(gts[n], labels[n], priors)
        np.testing.assert_array_equal(conf_b[n], conf_t)
        np.testing.assert_array_equal(loc_b[n], loc_t)           # bit for bit, not allclose
        lone_t, cone_t = match(gts[n], labels[n], priors)
        np.testing.assert_array_equal(lone_t, loc_t)
        np.testing.assert_array_equal(cone_t, conf_t)


def test_matching_never_calls_nonzero(monkeypatch, rng):
    # nonzero's output size is data-dependent: on a GPU the host must wait for it
    def refuse(*args, **kwargs):
        raise AssertionError("nonzero called: a host sync on the GPU")
    monkeypatch.setattr(np, "nonzero", refuse)
    priors = default_boxes(tiny())
    gts = [_random_gt(rng, 4), _random_gt(rng, 0)]
    loc_t, conf_t = match_batch(gts, [np.array([1, 2, 3, 4]), np.array([], np.int64)], priors)
    assert (conf_t[0] > 0).any() and not (conf_t[1] > 0).any()
    match(gts[0], np.array([1, 2, 3, 4]), priors)


def test_encode_planes_is_encode(rng):
    gt = _random_gt(rng, 50)
    priors = default_boxes(tiny())[:50]
    t = boxes.encode_planes(gt.T, priors.T)
    np.testing.assert_array_equal(np.stack(t, axis=-1), boxes.encode(gt, priors))


def test_the_batch_ground_truth_goes_to_the_device_in_two_copies(monkeypatch, rng):
    from minissd import matching
    priors = default_boxes(tiny())
    sent = []

    class Device:
        """NumPy standing in for the priors' device module: records what is sent to it."""
        def __getattr__(self, name):
            return getattr(np, name)

        def asarray(self, a, *args, **kwargs):
            if isinstance(a, np.ndarray):
                sent.append(a.shape)
            return np.asarray(a, *args, **kwargs)

    device, real = Device(), matching.get_array_module
    monkeypatch.setattr(matching, "get_array_module",
                        lambda *arrays: device if arrays and arrays[0] is priors
                        else real(*arrays))
    counts = [3, 0, 5, 1, 2, 4, 1, 6]
    gts = [_random_gt(rng, g) for g in counts]
    labels = [rng.integers(1, 7, g) for g in counts]
    loc_t, conf_t = match_batch(gts, labels, priors)
    assert sent == [(sum(counts), 4), (3, sum(counts))]   # not two small copies per image
    monkeypatch.undo()
    ref_loc, ref_conf = match_batch(gts, labels, priors)
    np.testing.assert_array_equal(loc_t, ref_loc)
    np.testing.assert_array_equal(conf_t, ref_conf)
