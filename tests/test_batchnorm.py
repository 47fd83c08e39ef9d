"""BatchNorm (ops/batchnorm.py, layers.BatchNorm2d) and the batch-norm variant of the network."""
import numpy as np
import pytest

from minissd.backend import to_numpy
from minissd.config import tiny
from minissd.gradcheck import check_gradients
from minissd.layers import BatchNorm2d
from minissd.model import SSD
from minissd.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 4, 3, 3), (3, 2, 1, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradcheck(xp, rng, shape, training):
    C = shape[1]
    x = xp.asarray(rng.normal(2.0, 3.0, shape))
    gamma = xp.asarray(rng.normal(size=C))
    beta = xp.asarray(rng.normal(size=C))
    rm, rv = xp.asarray(rng.normal(size=C)), xp.asarray(rng.uniform(0.5, 2, C))

    def f():   # the running statistics are copies, so repeated calls see the same ones
        return batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training)[0]
    y, cache = batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training)
    dy = xp.asarray(rng.normal(size=shape))
    dx, dgamma, dbeta = batchnorm2d_backward(dy, cache)
    errs = check_gradients(f, {"x": x, "gamma": gamma, "beta": beta},
                           {"x": dx, "gamma": dgamma, "beta": dbeta}, dy, rng=rng)
    assert max(errs.values()) < 1e-6, errs


def test_batchnorm_known_answer_and_running_stats(xp):
    # one channel, values 1, 2, 3, 4 (N=1, 2x2): mean 2.5, biased var 1.25, unbiased 5/3
    x = xp.asarray(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2))
    rm, rv = xp.zeros(1), xp.ones(1)
    y, _ = batchnorm2d_forward(x, xp.ones(1), xp.zeros(1), rm, rv, True, momentum=0.1, eps=0)
    np.testing.assert_allclose(to_numpy(y).ravel(), (np.arange(1, 5) - 2.5) / np.sqrt(1.25))
    np.testing.assert_allclose(to_numpy(rm), [0.25])
    np.testing.assert_allclose(to_numpy(rv), [0.9 + 0.1 * 5 / 3])
    # eval mode uses the running statistics and leaves them alone
    y, _ = batchnorm2d_forward(x, xp.ones(1), xp.zeros(1), rm, rv, False, eps=0)
    np.testing.assert_allclose(to_numpy(y).ravel(),
                               (np.arange(1, 5) - 0.25) / np.sqrt(to_numpy(rv)[0]))
    np.testing.assert_allclose(to_numpy(rm), [0.25])


def test_batchnorm_float32_stays_float32(rng):
    layer = BatchNorm2d(3)
    y = layer.forward(rng.normal(size=(2, 3, 4, 4)).astype(np.float32))
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


def _micro_bn_config():
    cfg = tiny(num_classes=3)
    cfg.image_size, cfg.batch_norm = 32, True
    cfg.base, cfg.l2norm_conv = (4, "M", 6, "C", 6), 2
    cfg.fc, cfg.fc_dilation = (8, 8), 1
    cfg.extras, cfg.mbox = ((4, 1, 1, 0), (8, 3, 2, 1)), (4, 6, 4)
    cfg.feature_maps, cfg.steps = (16, 8, 4), (2, 4, 8)
    cfg.min_sizes, cfg.max_sizes = (4, 10, 20), (10, 20, 32)
    cfg.aspect_ratios = ((2,), (2, 3), (2,))
    return cfg


def test_batch_norm_network_gradcheck(rng):
    """The whole batch-norm network in training mode (batch statistics) against numerical
    gradients, on every parameter tensor and the input."""
    model = SSD(_micro_bn_config(), rng=0, dtype=np.float64)
    assert any(isinstance(layer, BatchNorm2d) for layer in model.vgg)
    x = rng.normal(size=(3, 3, 32, 32))
    loc, conf = model.forward(x)
    dloc, dconf = rng.normal(size=loc.shape), rng.normal(size=conf.shape)
    dx = model.backward(dloc, dconf)
    grads = dict(model.grads, x=dx)
    # A conv bias right before a batch norm is removed again with the batch mean: its true
    # gradient is 0, so a relative error means nothing there. Check it is (numerically) 0.
    before_bn = {f"vgg.{i}.bias" for i in range(len(model.vgg) - 1)
                 if isinstance(model.vgg[i + 1], BatchNorm2d)}
    before_bn |= {f"extras.{j}.0.bias" for j in range(len(model.extras))}
    for name in before_bn:
        assert np.abs(grads[name]).max() < 1e-10 * np.abs(grads["conf.0.bias"]).max(), name
    params = {k: v for k, v in model.params() if k not in before_bn}
    # The running statistics move on every forward; in training mode the outputs don't
    # depend on them.
    errs = check_gradients(lambda: model.forward(x, keep_cache=False), dict(params, x=x),
                           grads, (dloc, dconf), num_checks=8, rng=rng)
    assert max(errs.values()) < 1e-6, {k: v for k, v in errs.items() if v >= 1e-6}


def test_train_eval_modes_and_buffers_in_state_dict(rng):
    model = SSD(_micro_bn_config(), rng=0)
    x = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    model.forward(x)                                        # training: stats move
    state = model.state_dict()
    names = [k for k in state if k.endswith("running_mean")]
    assert names and any(abs(state[k]).sum() > 0 for k in names)
    assert "extras.1.1.running_var" in state
    model.eval()
    assert not model.training
    a = model.forward(x[:1], keep_cache=False)[1]
    b = model.forward(x, keep_cache=False)[1][:1]            # eval: per-image, batch-independent
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    other = SSD(_micro_bn_config(), rng=1).eval()
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.forward(x, keep_cache=False)[1],
                                  model.forward(x, keep_cache=False)[1])
    assert model.train().training
