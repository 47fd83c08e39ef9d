"""MultiBox loss: value against a plain loop, the gradient against central differences,
the hard negative count, a batch with no positives, and the loss of an untrained net."""
import math

import numpy as np
import pytest

from minissd.backend import to_numpy
from minissd.gradcheck import numerical_gradient, rel_error
from minissd.loss import multibox_loss_backward, multibox_loss_forward


def _batch(rng, N=3, P=40, C=5, num_pos=(4, 0, 15), scale=1.0, dtype=np.float64):
    """Random predictions and targets; image n has num_pos[n] positives."""
    loc = rng.normal(size=(N, P, 4)) * scale
    conf = rng.normal(size=(N, P, C)) * scale
    loc_t = rng.normal(size=(N, P, 4))
    conf_t = np.zeros((N, P), np.int64)
    for n, k in enumerate(num_pos):
        conf_t[n, rng.choice(P, k, replace=False)] = rng.integers(1, C, k)
    # Keep |loc - loc_t| away from the smooth L1 kink at 1, where the derivative jumps.
    d = loc - loc_t
    loc = np.where(np.abs(np.abs(d) - 1) < 0.05, loc + 0.2, loc)
    return [a.astype(dtype) if a.dtype.kind == "f" else a for a in (loc, conf, loc_t, conf_t)]


def _loop_loss(loc, conf, loc_t, conf_t, negative):
    """The loss written box by box, for a given negative set."""
    total_loc = total_conf = 0.0
    num_pos = 0
    for n in range(loc.shape[0]):
        for p in range(loc.shape[1]):
            logits = conf[n, p]
            logp = logits - logits.max() - math.log(np.exp(logits - logits.max()).sum())
            if conf_t[n, p] > 0:
                num_pos += 1
                for d in loc[n, p] - loc_t[n, p]:
                    total_loc += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
                total_conf -= logp[conf_t[n, p]]
            elif negative[n, p]:
                total_conf -= logp[0]
    num_pos = max(num_pos, 1)
    return (total_conf + total_loc) / num_pos, total_loc / num_pos, total_conf / num_pos


def test_value_matches_a_plain_loop(rng, to_xp):
    arrays = _batch(rng)
    loss, parts, cache = multibox_loss_forward(*(to_xp(a) for a in arrays))
    ref, ref_loc, ref_conf = _loop_loss(*arrays, to_numpy(cache.negative))
    assert loss.shape == () and type(loss) is type(to_xp(arrays[0]))    # 0-d array, no sync
    np.testing.assert_allclose([float(loss), float(parts["loc"]), float(parts["conf"])],
                               [ref, ref_loc, ref_conf], rtol=1e-10)


def test_hard_negatives_are_the_hardest_and_counted(rng, to_xp):
    loc, conf, loc_t, conf_t = _batch(rng, N=4, P=40, num_pos=(4, 0, 15, 1))
    _, _, cache = multibox_loss_forward(*(to_xp(a) for a in (loc, conf, loc_t, conf_t)))
    neg, pos = to_numpy(cache.negative), conf_t > 0
    assert not (neg & pos).any()
    num_pos = pos.sum(1)
    # 3 per positive, capped by the number of background boxes: 12, 0, 25 (cap), 3.
    np.testing.assert_array_equal(neg.sum(1), np.minimum(3 * num_pos, 40 - num_pos))
    bg_ce = -(conf[..., 0] - np.log(np.exp(conf).sum(-1)))            # (N, P)
    for n in range(4):
        chosen, left = bg_ce[n][neg[n]], bg_ce[n][~neg[n] & ~pos[n]]
        if chosen.size and left.size:
            assert chosen.min() >= left.max()


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_gradient_matches_central_differences(rng, to_xp, alpha):
    loc, conf, loc_t, conf_t = (to_xp(a) for a in _batch(rng, P=12, C=4, num_pos=(2, 0, 3)))
    _, _, cache = multibox_loss_forward(loc, conf, loc_t, conf_t, alpha=alpha)
    dloc, dconf = multibox_loss_backward(cache, dloss=0.7)
    negatives = cache.negative            # held fixed: the mining is not differentiated

    def f(_):
        return 0.7 * multibox_loss_forward(loc, conf, loc_t, conf_t, alpha=alpha,
                                           negatives=negatives)[0]

    assert rel_error(numerical_gradient(f, loc), dloc) < 1e-6
    assert rel_error(numerical_gradient(f, conf), dconf) < 1e-6
    # Boxes that are neither positive nor mined get no gradient at all.
    unused = ~to_numpy(cache.positive | cache.negative)
    assert not to_numpy(dconf)[unused].any() and not to_numpy(dloc)[~to_numpy(cache.positive)].any()


def test_no_positives_is_finite(rng, to_xp):
    loc, conf, loc_t, conf_t = (to_xp(a) for a in
                                _batch(rng, num_pos=(0, 0, 0), dtype=np.float32))
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    assert np.isfinite(float(loss)) and float(parts["loc"]) == 0.0
    assert float(loss) == 0.0             # 3 * 0 positives: no negatives are mined either
    dloc, dconf = multibox_loss_backward(cache)
    assert np.isfinite(to_numpy(dloc)).all() and np.isfinite(to_numpy(dconf)).all()
    assert dloc.dtype == np.float32 and dconf.dtype == np.float32 and loss.dtype == np.float32


def test_float32_stays_float32_and_agrees_with_float64(rng, to_xp):
    arrays = _batch(rng, scale=20.0)      # large logits: the log-softmax must stay stable
    out64 = multibox_loss_forward(*(to_xp(a) for a in arrays))
    out32 = multibox_loss_forward(*(to_xp(a.astype(np.float32) if a.dtype.kind == "f" else a)
                                    for a in arrays))
    assert out32[0].dtype == np.float32 and np.isfinite(float(out32[0]))
    np.testing.assert_allclose(float(out32[0]), float(out64[0]), rtol=1e-5)
    g64, g32 = multibox_loss_backward(out64[2]), multibox_loss_backward(out32[2])
    for a, b in zip(g64, g32):
        assert b.dtype == np.float32
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), atol=1e-6)


def test_initial_confidence_loss_is_near_log_num_classes(rng, to_xp):
    # An untrained net's logits are small, so every box's cross-entropy is about log(C).
    # Here with small random logits; the next test does it with the real untrained network.
    C = 21
    loc, _, loc_t, conf_t = _batch(rng, N=2, P=2000, C=C, num_pos=(30, 50), dtype=np.float32)
    conf = (0.01 * rng.normal(size=(2, 2000, C))).astype(np.float32)
    _, parts, cache = multibox_loss_forward(*(to_xp(a) for a in (loc, conf, loc_t, conf_t)))
    selected = int(to_numpy(cache.positive | cache.negative).sum())
    assert selected == 4 * 80                                     # positives + 3x negatives
    per_box = float(parts["conf"]) * 80 / selected
    assert abs(per_box - math.log(C)) < 0.01 * math.log(C)


def test_untrained_tiny_network_starts_near_log_num_classes(rng):
    """The untrained tiny SSD's confidence loss, per selected box, is close to log(K + 1):
    its initial class scores are nearly uniform, so training starts from a sane loss."""
    from minissd.config import tiny
    from minissd.matching import match_batch
    from minissd.model import SSD
    from minissd.priors import default_boxes

    cfg = tiny()
    x = rng.normal(size=(2, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    loc, conf = SSD(cfg, rng=1).forward(x, keep_cache=False)
    gt = [np.array([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]], np.float32),
          np.array([[0.2, 0.5, 0.4, 0.9]], np.float32)]
    loc_t, conf_t = match_batch(gt, [np.array([1, 3]), np.array([6])], default_boxes(cfg))
    _, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    num_pos = int(cache.positive.sum())
    selected = int((cache.positive | cache.negative).sum())
    assert num_pos > 0 and selected == 4 * num_pos
    log_c = math.log(cfg.num_classes)
    # Over all boxes, the cross-entropy against the background is log(C) to within a few %.
    logp = conf - np.log(np.exp(conf).sum(-1, keepdims=True))
    assert abs(float(-logp[..., 0].mean()) - log_c) < 0.05 * log_c
    # The loss averages over positives and the HARDEST negatives, so it sits a little above.
    per_box = float(parts["conf"]) * num_pos / selected
    assert log_c * 0.95 < per_box < log_c * 1.25, (per_box, log_c)


def test_bad_shapes_are_reported(rng):
    loc, conf, loc_t, conf_t = _batch(rng)
    with pytest.raises(ValueError, match="conf_t has shape"):
        multibox_loss_forward(loc, conf, loc_t, conf_t[:, :-1])
    with pytest.raises(TypeError, match="integer labels"):
        multibox_loss_forward(loc, conf, loc_t, conf_t.astype(np.float32))


def test_with_the_tiny_model_one_step_downhill(rng):
    """End to end on the real network: match -> loss -> backward -> model.backward, and a small
    step against the gradient lowers the loss (mined set held fixed)."""
    from minissd.config import tiny
    from minissd.matching import match_batch
    from minissd.model import SSD
    from minissd.priors import default_boxes

    cfg = tiny()
    model = SSD(cfg, rng=0)
    priors = default_boxes(cfg)
    x = rng.normal(size=(2, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    gt = [np.array([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]], np.float32),
          np.array([[0.2, 0.5, 0.4, 0.9]], np.float32)]
    loc_t, conf_t = match_batch(gt, [np.array([1, 3]), np.array([6])], priors)
    loc, conf = model.forward(x)
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    dloc, dconf = multibox_loss_backward(cache)
    dx = model.backward(dloc, dconf)
    assert np.isfinite(float(loss)) and float(parts["loc"]) > 0 and float(parts["conf"]) > 0
    assert dx.shape == x.shape and np.isfinite(dx).all()

    lr = 1e-4
    for name, p in model.params():
        p -= lr * model.grads[name]
    loc, conf = model.forward(x, keep_cache=False)
    loss_after = multibox_loss_forward(loc, conf, loc_t, conf_t, negatives=cache.negative)[0]
    assert float(loss_after) < float(loss)
