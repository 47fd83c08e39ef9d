"""Matching: hand-made cases (a shared best prior, the threshold, no objects), encode/decode,
the batched matcher against the per-image one, and both rules (ssd.pytorch's and Caffe's)
against their plain-loop reference and on cases worked by hand."""
import numpy as np
import pytest

from minissd import boxes
from minissd.backend import to_numpy
from minissd.config import tiny
from minissd.kernels import iou_matrix
from minissd.matching import RULES, match, match_batch, match_reference
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


# --- the two rules: ssd.pytorch's and Caffe's (the paper's) -------------------------------

def _row_of_boxes():
    """Notebook 04's example: six default boxes in a row (y 0.4..0.6) and two objects A, B
    whose best box is box 2 for both. IoU: A-box1 0.462, A-box2 0.727, B-box2 0.818,
    B-box3 0.429."""
    xs = [(0, .2), (.2, .4), (.3, .5), (.4, .6), (.6, .8), (.8, 1)]
    corners = np.array([[x0, 0.4, x1, 0.6] for x0, x1 in xs], np.float32)       # (6, 4)
    two = np.array([[.28, 0.4, .46, 0.6], [.32, 0.4, .52, 0.6]], np.float32)    # A, B
    return boxes.corner_to_center(corners), two


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_the_rules_differ_on_the_notebook_example(to_xp, order):
    priors, two = _row_of_boxes()
    labels = np.array([1, 2])
    if order == "BA":
        two, labels = two[::-1].copy(), labels[::-1].copy()
    _, torch_rule = match(to_xp(two), to_xp(labels), to_xp(priors), rule="ssd.pytorch")
    _, caffe_rule = match(to_xp(two), to_xp(labels), to_xp(priors), rule="caffe")
    # ssd.pytorch: both claim box 2, the later object wins it and the other has nothing.
    later = int(labels[-1])
    assert to_numpy(torch_rule).tolist() == [0, 0, later, 0, 0, 0]
    # Caffe: B-box2 (0.818) is the largest pair, then A takes its best free box, box 1
    # (0.462, under the threshold): both objects have a positive, in either order.
    assert to_numpy(caffe_rule).tolist() == [0, 1, 2, 0, 0, 0]
    for rule in RULES:
        loc_b, conf_b = match_batch([to_xp(two)], [to_xp(labels)], to_xp(priors), rule=rule)
        ref_loc, ref_conf = match_reference(two, labels, priors, rule=rule)
        assert to_numpy(conf_b)[0].tolist() == ref_conf.tolist()
        np.testing.assert_allclose(to_numpy(loc_b)[0], ref_loc, atol=1e-6)
    assert match_reference(two, labels, priors, rule="caffe")[1].tolist() == [0, 1, 2, 0, 0, 0]


def test_caffe_ties_go_to_the_first_prior_then_the_first_ground_truth(to_xp):
    # Two identical objects and two identical default boxes that both overlap them equally:
    # every pair has the same IoU. Caffe scans priors in order, then GTs in order, and keeps
    # the first strictly larger IoU: round 1 gives prior 0 to GT 0, round 2 prior 1 to GT 1.
    box = [0.3, 0.3, 0.6, 0.6]
    gt = np.array([box, box], np.float32)
    priors = boxes.corner_to_center(np.array([[0.3, 0.3, 0.6, 0.7], [0.3, 0.3, 0.6, 0.7],
                                              [0.0, 0.0, 0.1, 0.1]], np.float32))
    for fn in (match, match_reference):
        _, conf = fn(to_xp(gt) if fn is match else gt, np.array([4, 9]),
                     to_xp(priors) if fn is match else priors, iou_threshold=0.9, rule="caffe")
        assert to_numpy(conf).tolist() == [4, 9, 0]
    # ssd.pytorch: both GTs claim prior 0 (first maximum), GT 1 wins; prior 1 (IoU 0.75 < 0.9)
    # stays background, so GT 0 has no positive.
    _, conf = match(to_xp(gt), to_xp(np.array([4, 9])), to_xp(priors), iou_threshold=0.9)
    assert to_numpy(conf).tolist() == [9, 0, 0]


def test_caffe_with_more_objects_than_default_boxes(to_xp):
    # G = 3 > P = 2: only two objects can have a box of their own; the greedy step gives the
    # two largest IoUs and the third object gets none (Caffe's loop ends when no free prior
    # is left).
    priors = boxes.corner_to_center(np.array([[0.0, 0.0, 0.5, 0.5],
                                              [0.5, 0.5, 1.0, 1.0]], np.float32))
    gt = np.array([[0.0, 0.0, 0.45, 0.5],          # prior 0: IoU 0.9
                   [0.5, 0.5, 1.0, 0.95],          # prior 1: IoU 0.9
                   [0.0, 0.0, 0.5, 0.4]], np.float32)   # prior 0: IoU 0.8, loses it
    labels = np.array([1, 2, 3])
    for rule, expected in (("caffe", [1, 2]), ("ssd.pytorch", [3, 2])):
        _, conf = match(to_xp(gt), to_xp(labels), to_xp(priors), rule=rule)
        assert to_numpy(conf).tolist() == expected
        assert match_reference(gt, labels, priors, rule=rule)[1].tolist() == expected


def test_caffe_gives_no_box_to_an_object_that_overlaps_none(to_xp):
    # Caffe keeps only overlaps > 1e-6: an object that touches no default box gets nothing,
    # where ssd.pytorch's argmax over zeros claims prior 0.
    priors = boxes.corner_to_center(np.array([[0.0, 0.0, 0.2, 0.2], [0.2, 0.0, 0.4, 0.2]],
                                             np.float32))
    gt = np.array([[0.7, 0.7, 0.9, 0.9]], np.float32)
    _, caffe_conf = match(to_xp(gt), to_xp(np.array([5])), to_xp(priors), rule="caffe")
    _, torch_conf = match(to_xp(gt), to_xp(np.array([5])), to_xp(priors))
    assert to_numpy(caffe_conf).tolist() == [0, 0]
    assert to_numpy(torch_conf).tolist() == [5, 0]
    assert match_reference(gt, np.array([5]), priors, rule="caffe")[1].tolist() == [0, 0]


@pytest.mark.parametrize("rule", RULES)
def test_no_objects_either_rule(to_xp, rule):
    priors = to_xp(default_boxes(tiny()))
    P = priors.shape[0]
    loc_t, conf_t = match(to_xp(np.zeros((0, 4), np.float32)), to_xp(np.zeros(0, np.int64)),
                          priors, rule=rule)
    assert conf_t.shape == (P,) and not to_numpy(conf_t).any() and not to_numpy(loc_t).any()
    loc_t, conf_t = match_batch([np.zeros((0, 4))] * 3, [np.zeros(0)] * 3, priors, rule=rule)
    assert conf_t.shape == (3, P) and not to_numpy(conf_t).any() and not to_numpy(loc_t).any()


@pytest.mark.parametrize("rule", RULES)
def test_both_rules_against_the_loop_reference(rule, to_xp):
    """match and match_batch (padded ground truth: images of 0..9 objects in one batch) equal
    the plain loops, on crowds of near-duplicate boxes where best priors are shared."""
    rng = np.random.default_rng(7)
    priors = default_boxes(tiny())[::7].copy()          # 803 priors: the loops stay quick
    counts = [4, 0, 9, 1, 6]
    gts = [_random_gt(rng, g) for g in counts]
    gts[4] = np.clip(gts[4][:1] + rng.uniform(-0.02, 0.02, (6, 4)), 0, 1).astype(np.float32)
    labels = [rng.integers(1, 7, g) for g in counts]
    loc_b, conf_b = match_batch([to_xp(g) for g in gts], [to_xp(l) for l in labels],
                                to_xp(priors), rule=rule)
    for n in range(len(counts)):
        ref_loc, ref_conf = match_reference(gts[n], labels[n], priors, rule=rule)
        loc_t, conf_t = match(to_xp(gts[n]), to_xp(labels[n]), to_xp(priors), rule=rule)
        np.testing.assert_array_equal(to_numpy(conf_t), ref_conf)
        np.testing.assert_array_equal(to_numpy(conf_b[n]), ref_conf)
        np.testing.assert_allclose(to_numpy(loc_t), ref_loc, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(to_numpy(loc_b[n]), ref_loc, rtol=1e-6, atol=1e-6)


def test_caffe_rule_ignores_the_order_of_the_annotations(rng):
    priors = default_boxes(tiny())
    gt = np.clip(_random_gt(rng, 1) + rng.uniform(-0.01, 0.01, (8, 4)), 0, 1).astype(np.float32)
    labels = np.arange(1, 9)
    _, conf = match(gt, labels, priors, rule="caffe")
    perm = rng.permutation(8)
    _, conf_perm = match(gt[perm], labels[perm], priors, rule="caffe")
    np.testing.assert_array_equal(conf, conf_perm)
    # every one of the 8 near-duplicates has its own positive, no box given twice
    assert set(conf[conf > 0].tolist()) == set(labels.tolist())
    _, torch_conf = match(gt, labels, priors)
    assert len(set(torch_conf[torch_conf > 0].tolist())) < 8      # here ssd.pytorch loses some


def test_caffe_matching_never_calls_nonzero(monkeypatch, rng):
    def refuse(*args, **kwargs):
        raise AssertionError("nonzero called: a host sync on the GPU")
    monkeypatch.setattr(np, "nonzero", refuse)
    priors = default_boxes(tiny())
    gts = [_random_gt(rng, 4), _random_gt(rng, 0)]
    _, conf_t = match_batch(gts, [np.array([1, 2, 3, 4]), np.array([], np.int64)], priors,
                            rule="caffe")
    assert (conf_t[0] > 0).any() and not (conf_t[1] > 0).any()


def test_an_unknown_rule_is_reported():
    for fn in (match, match_reference):
        with pytest.raises(ValueError, match="unknown matching rule 'yolo'"):
            fn(np.zeros((1, 4), np.float32), np.array([1]), default_boxes(tiny()), rule="yolo")
    with pytest.raises(ValueError, match="unknown matching rule"):
        match_batch([np.zeros((1, 4))], [np.array([1])], default_boxes(tiny()), rule="bipartite")


def test_the_config_field_defaults_to_ssd_pytorch_and_old_checkpoints_keep_it():
    from minissd.config import CONFIGS, SSDConfig
    for name, make in CONFIGS.items():
        assert make().matching == "ssd.pytorch", name
    d = tiny().to_dict()
    del d["matching"]                                   # a checkpoint from before the field
    assert SSDConfig.from_dict(d).matching == "ssd.pytorch"
    d["matching"] = "caffe"
    assert SSDConfig.from_dict(d).matching == "caffe"
