"""The ops that bodies other than VGG need (Caffe's Scale, Eltwise SUM, BatchNorm without
its affine part, Normalize with eps under the root and a shared scale, convs without bias):
float64 gradient checks, known answers, exact zeros, and the layers around them."""
import numpy as np
import pytest

from minissd.backend import to_numpy as _np
from minissd.gradcheck import check_gradients
from minissd.layers import BatchNorm2d, Conv2d, EltwiseSum, L2Norm, Scale
from minissd.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from minissd.ops.eltwise import eltwise_sum_backward, eltwise_sum_forward
from minissd.ops.l2norm import l2norm_backward, l2norm_forward
from minissd.ops.scale import scale_backward, scale_forward


# ----------------------------------------------------------------------------- Scale
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1)])
def test_scale_gradcheck(xp, rng, shape, bias):
    x = xp.asarray(rng.standard_normal(shape))
    w = xp.asarray(rng.standard_normal(shape[1]))
    b = xp.asarray(rng.standard_normal(shape[1])) if bias else None
    y, cache = scale_forward(x, w, b)
    dy = xp.asarray(rng.standard_normal(shape))
    dx, dw, db = scale_backward(dy, cache)
    assert (db is None) == (not bias)
    tensors, grads = {"x": x, "w": w}, {"x": dx, "w": dw}
    if bias:
        tensors["b"], grads["b"] = b, db
    errs = check_gradients(lambda: scale_forward(x, w, b)[0], tensors, grads, dy)
    assert max(errs.values()) < 1e-6, errs


def test_scale_known_answer_and_errors(xp):
    x = xp.asarray(np.arange(4.0).reshape(1, 2, 1, 2))          # channel 0: 0, 1; 1: 2, 3
    y, _ = scale_forward(x, xp.asarray([2.0, -1.0]), xp.asarray([0.5, 0.0]))
    np.testing.assert_array_equal(_np(y).ravel(), [0.5, 2.5, -2.0, -3.0])
    with pytest.raises(ValueError, match="w, b \\(C,\\)"):
        scale_forward(x, xp.asarray([1.0, 2.0, 3.0]))


# ----------------------------------------------------------------------------- Eltwise SUM
@pytest.mark.parametrize("m", [2, 3])
def test_eltwise_sum_gradcheck(xp, rng, m):
    xs = [xp.asarray(rng.standard_normal((2, 3, 4, 4))) for _ in range(m)]
    y, cache = eltwise_sum_forward(*xs)
    np.testing.assert_allclose(_np(y), sum(_np(x) for x in xs))
    dy = xp.asarray(rng.standard_normal(y.shape))
    dxs = eltwise_sum_backward(dy, cache)
    assert len(dxs) == m
    errs = check_gradients(lambda: eltwise_sum_forward(*xs)[0],
                           {f"x{i}": x for i, x in enumerate(xs)},
                           {f"x{i}": d for i, d in enumerate(dxs)}, dy)
    assert max(errs.values()) < 1e-6, errs


def test_eltwise_sum_needs_two_inputs_of_one_shape(xp):
    a = xp.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match="two or more inputs of one shape"):
        eltwise_sum_forward(a)
    with pytest.raises(ValueError, match="two or more inputs of one shape"):
        eltwise_sum_forward(a, xp.zeros((1, 2, 2, 2)))
    assert EltwiseSum().forward(a, a, a).shape == a.shape


# ----------------------------------------------------------------------------- BatchNorm, no affine
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (3, 2, 1, 1)])
def test_batchnorm_without_affine_gradcheck(xp, rng, shape, training):
    x = xp.asarray(rng.normal(2.0, 3.0, shape))
    rm, rv = xp.asarray(rng.normal(size=shape[1])), xp.asarray(rng.uniform(0.5, 2, shape[1]))

    def f():
        return batchnorm2d_forward(x, None, None, rm.copy(), rv.copy(), training)[0]
    y, cache = batchnorm2d_forward(x, None, None, rm.copy(), rv.copy(), training)
    dy = xp.asarray(rng.normal(size=shape))
    dx, dgamma, dbeta = batchnorm2d_backward(dy, cache)
    assert dgamma is None and dbeta is None
    err = check_gradients(f, {"x": x}, {"x": dx}, dy, rng=rng)["x"]
    assert err < 1e-6, err


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_without_affine_is_gamma_one_beta_zero(xp, rng, training):
    """Exactly the affine op with gamma = 1, beta = 0: the same y (x * 1 + 0 = x in floats)
    and the same dx up to rounding, the running statistics moved the same way."""
    x = xp.asarray(rng.normal(1.0, 2.0, (2, 3, 4, 4)))
    dy = xp.asarray(rng.normal(size=x.shape))
    stats = [(xp.zeros(3), xp.ones(3)) for _ in range(2)]
    y0, c0 = batchnorm2d_forward(x, None, None, *stats[0], training)
    y1, c1 = batchnorm2d_forward(x, xp.ones(3), xp.zeros(3), *stats[1], training)
    np.testing.assert_array_equal(_np(y0), _np(y1))
    np.testing.assert_array_equal(_np(stats[0][0]), _np(stats[1][0]))
    np.testing.assert_array_equal(_np(stats[0][1]), _np(stats[1][1]))
    np.testing.assert_allclose(_np(batchnorm2d_backward(dy, c0)[0]),
                               _np(batchnorm2d_backward(dy, c1)[0]), rtol=1e-12, atol=1e-12)


def test_batchnorm_without_affine_synchronized(xp, rng):
    """The synchronized path (distributed.sync_batch_norm) with one process (reduce = the
    identity) gives what the plain path gives, without the affine part too."""
    x = xp.asarray(rng.normal(1.0, 2.0, (2, 3, 4, 4)))
    dy = xp.asarray(rng.normal(size=x.shape))
    plain = batchnorm2d_forward(x, None, None, xp.zeros(3), xp.ones(3), True)
    synced = batchnorm2d_forward(x, None, None, xp.zeros(3), xp.ones(3), True,
                                 reduce=lambda a: a)
    np.testing.assert_allclose(_np(synced[0]), _np(plain[0]), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(_np(batchnorm2d_backward(dy, synced[1], reduce=lambda a: a)[0]),
                               _np(batchnorm2d_backward(dy, plain[1])[0]),
                               rtol=1e-9, atol=1e-9)


def test_batchnorm_layer_without_affine_has_only_buffers(xp):
    bn = BatchNorm2d(4, affine=False, dtype=np.float64)
    assert bn.params() == [] and [n for n, _ in bn.buffers()] == ["running_mean", "running_var"]
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 4, 3, 3)))
    bn.backward(bn.forward(x))
    assert bn.grads == {}


# ----------------------------------------------------------------------------- Normalize
@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "channel_shared"])
@pytest.mark.parametrize("eps_inside", [True, False], ids=["caffe", "ssd.pytorch"])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 4, 3, 5)])
def test_l2norm_variants_gradcheck(xp, rng, shape, eps_inside, shared):
    x = xp.asarray(rng.standard_normal(shape))
    scale = xp.asarray(rng.uniform(1, 20, 1 if shared else shape[1]))
    eps = 1e-3                               # large enough that its place shows in the values
    y, cache = l2norm_forward(x, scale, eps, eps_inside)
    dy = xp.asarray(rng.standard_normal(shape))
    dx, dscale = l2norm_backward(dy, cache)
    assert dscale.shape == scale.shape
    errs = check_gradients(lambda: l2norm_forward(x, scale, eps, eps_inside)[0],
                           {"x": x, "scale": scale}, {"x": dx, "scale": dscale}, dy)
    assert max(errs.values()) < 1e-6, errs


def test_caffe_normalize_known_answer(xp):
    """Caffe's Normalize: y = w x / sqrt(sum x^2 + eps); ssd.pytorch: w x / (|x| + eps)."""
    x = xp.asarray([3.0, 4.0]).reshape(1, 2, 1, 1)
    w = xp.asarray([20.0, 10.0])
    y, _ = l2norm_forward(x, w, eps=11.0, eps_inside=True)            # sqrt(25 + 11) = 6
    np.testing.assert_allclose(_np(y).ravel(), [20 * 3 / 6, 10 * 4 / 6])
    y, _ = l2norm_forward(x, w, eps=1.0)                                # 5 + 1 = 6 too
    np.testing.assert_allclose(_np(y).ravel(), [20 * 3 / 6, 10 * 4 / 6])
    y, _ = l2norm_forward(x, xp.asarray([2.0]), eps=0.0, eps_inside=True)   # shared scale
    np.testing.assert_allclose(_np(y).ravel(), [1.2, 1.6])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_caffe_normalize_all_zero_input(xp, dtype):
    """An all-zero position gives exactly 0 and a finite gradient: the root is at least
    sqrt(eps) = 1e-5 there (also in float32)."""
    eps = 1e-10
    x = xp.zeros((2, 4, 3, 3), dtype=dtype)
    x[1, :, 0, 0] = xp.asarray([1.0, 2.0, 2.0, 0.0], dtype=dtype)
    scale = xp.full(4, 20.0, dtype=dtype)
    y, cache = l2norm_forward(x, scale, eps, eps_inside=True)
    dx, dscale = l2norm_backward(xp.ones_like(x), cache)
    for a in (y, dx, dscale):
        assert a.dtype == np.dtype(dtype) and bool(xp.isfinite(a).all())
    assert float(xp.abs(y[0]).max()) == 0.0
    np.testing.assert_allclose(_np(y)[1, :, 0, 0], [20 / 3, 40 / 3, 40 / 3, 0], rtol=1e-5)


def test_l2norm_layer_channel_shared():
    layer = L2Norm(5, 20.0, eps=1e-10, dtype=np.float64, eps_inside=True, channel_shared=True)
    assert layer.weight.shape == (1,) and float(layer.weight[0]) == 20.0
    x = np.random.default_rng(0).standard_normal((2, 5, 2, 2))
    layer.backward(layer.forward(x))
    assert layer.grads["weight"].shape == (1,)


# ----------------------------------------------------------------------------- bias-free layers
def test_conv_and_scale_without_bias_have_no_bias_param(rng):
    conv = Conv2d(3, 4, 3, padding=1, rng=0, dtype=np.float64, bias=False)
    scale = Scale(4, bias=False, dtype=np.float64)
    assert [n for n, _ in conv.params()] == ["weight"] and conv.bias is None
    assert [n for n, _ in scale.params()] == ["weight"]
    x = rng.standard_normal((2, 3, 5, 5))
    y = scale.forward(conv.forward(x))
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(scale.backward(dy))
    assert set(conv.grads) == {"weight"} and set(scale.grads) == {"weight"}

    def f():
        return scale.forward(conv.forward(x))
    errs = check_gradients(f, {"x": x, "w": conv.weight, "s": scale.weight},
                           {"x": dx, "w": conv.grads["weight"], "s": scale.grads["weight"]}, dy,
                           num_checks=20, rng=rng)
    assert max(errs.values()) < 1e-6, errs
