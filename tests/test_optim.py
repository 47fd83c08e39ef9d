"""SGD (momentum, weight decay) and Adam against hand-computed steps, gradient clipping, the LR
schedule, state round trips."""
import numpy as np
import pytest

from minissd.optim import SGD, learning_rate


def test_sgd_known_answer_two_steps(xp):
    # w0 = 1, g = 0.5 both steps, mu 0.9, wd 0.1, lr 0.1:
    # step 1: g' = 0.5 + 0.1*1 = 0.6;      v = 0.6;               w = 1 - 0.06 = 0.94
    # step 2: g' = 0.5 + 0.1*0.94 = 0.594; v = 0.9*0.6 + 0.594 = 1.134; w = 0.94 - 0.1134 = 0.8266
    w = xp.asarray([1.0, -2.0])
    opt = SGD(momentum=0.9, weight_decay=0.1)
    g = {"w": xp.asarray([0.5, 0.0])}
    opt.step([("w", w)], g, lr=0.1)
    np.testing.assert_allclose(float(w[0]), 0.94, rtol=1e-12)
    opt.step([("w", w)], g, lr=0.1)
    np.testing.assert_allclose(float(w[0]), 0.8266, rtol=1e-12)
    # second entry: pure weight decay: g' = -0.2 -> v = -0.2, w = -1.98; g' = -0.198,
    # v = -0.18 - 0.198 = -0.378, w = -1.98 + 0.0378 = -1.9422
    np.testing.assert_allclose(float(w[1]), -1.9422, rtol=1e-12)
    # the gradient dict is not modified by the step
    np.testing.assert_array_equal(np.asarray(g["w"].tolist()), [0.5, 0.0])


def test_sgd_updates_in_place_and_keeps_dtype(xp):
    w = xp.ones((3, 2), dtype=xp.float32)
    view = w[0]
    SGD().step([("w", w)], {"w": xp.ones((3, 2), dtype=xp.float32)}, lr=1.0)
    assert w.dtype == xp.float32
    assert float(view[0]) == pytest.approx(-5e-4, abs=1e-7)


def test_sgd_missing_gradient_names_the_parameter(xp):
    with pytest.raises(KeyError, match="conv.weight"):
        SGD().step([("conv.weight", xp.ones(2))], {}, lr=0.1)


def test_gradient_clipping_rescales_global_norm(xp):
    a, b = xp.zeros(1), xp.zeros(1)
    opt = SGD(momentum=0.0, weight_decay=0.0, clip_norm=1.0)
    opt.step([("a", a), ("b", b)], {"a": xp.asarray([3.0]), "b": xp.asarray([4.0])}, lr=1.0)
    # global norm 5 -> gradients scaled by 1/5
    np.testing.assert_allclose([float(a[0]), float(b[0])], [-0.6, -0.8], rtol=1e-9)
    opt.step([("a", a)], {"a": xp.asarray([0.5])}, lr=1.0)   # under the limit: untouched
    np.testing.assert_allclose(float(a[0]), -1.1, rtol=1e-9)


def test_learning_rate_schedule():
    base, warm, steps = 1e-3, 100, (800, 1000)
    assert learning_rate(0, base, warm, steps) == pytest.approx(1e-6)
    assert learning_rate(50, base, warm, steps) == pytest.approx(1e-3 * (0.5 + 0.5e-3))
    assert learning_rate(100, base, warm, steps) == pytest.approx(1e-3)
    assert learning_rate(799, base, warm, steps) == pytest.approx(1e-3)
    assert learning_rate(800, base, warm, steps) == pytest.approx(1e-4)
    assert learning_rate(999, base, warm, steps) == pytest.approx(1e-4)
    assert learning_rate(1000, base, warm, steps) == pytest.approx(1e-5)
    assert learning_rate(5, base) == base                 # no warm-up, no milestones
    rates = [learning_rate(s, base, warm, steps) for s in range(0, 1200, 7)]
    assert max(rates) == pytest.approx(base)
    increasing = [b > a for a, b in zip(rates, rates[1:])]
    assert all(increasing[:14]) and not any(increasing[15:])   # rises during warm-up only


def test_state_dict_round_trip_continues_identically(xp, rng, tmp_path):
    w_a = xp.asarray(rng.standard_normal(5))
    w_b = w_a.copy()
    grads = [xp.asarray(rng.standard_normal(5)) for _ in range(4)]
    a = SGD(momentum=0.9, weight_decay=5e-4)
    for g in grads[:2]:
        a.step([("w", w_a)], {"w": g}, lr=0.01)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.savez(tmp_path / "opt.npz", **state)                  # as a checkpoint holds it
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        state = dict(f)
    b = SGD(momentum=0.0, weight_decay=0.0)
    b.load_state_dict(state, like={"w": w_b})
    assert b.momentum == 0.9 and b.weight_decay == 5e-4
    w_b[...] = w_a
    for g in grads[2:]:
        a.step([("w", w_a)], {"w": g}, lr=0.01)
        b.step([("w", w_b)], {"w": g}, lr=0.01)
    np.testing.assert_array_equal(np.asarray(w_a.tolist()), np.asarray(w_b.tolist()))


def test_load_state_dict_checks_shapes():
    state = SGD().state_dict()
    state["velocity.w"] = np.zeros(3)
    with pytest.raises(ValueError, match="velocity 'w'"):
        SGD().load_state_dict(state, like={"w": np.zeros(4)})
    with pytest.raises(KeyError, match="other config"):
        SGD().load_state_dict(state, like={"v": np.zeros(3)})


def test_adam_known_answer_and_state_round_trip(xp):
    from minissd.optim import Adam
    w = xp.asarray(np.array([1.0, -2.0, 0.5]))
    g = {"w": xp.asarray(np.array([0.1, -3.0, 0.0]))}
    opt = Adam(weight_decay=0.0)
    opt.step([("w", w)], g, lr=0.01)
    # first step: mhat = g, vhat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g)
    np.testing.assert_allclose(np.asarray(w.tolist()), [0.99, -1.99, 0.5], atol=1e-6)
    opt.step([("w", w)], g, lr=0.01)                      # a constant gradient: same step again
    np.testing.assert_allclose(np.asarray(w.tolist()), [0.98, -1.98, 0.5], atol=1e-6)
    state = opt.state_dict()
    again = Adam()
    again.load_state_dict(state, like={"w": w})
    assert again.t == 2 and again.weight_decay == 0.0
    w2 = w.copy()
    opt.step([("w", w)], g, lr=0.01)
    again.step([("w", w2)], g, lr=0.01)
    np.testing.assert_array_equal(np.asarray(w.tolist()), np.asarray(w2.tolist()))
