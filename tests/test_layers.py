"""minissd.layers: parameter names/shapes/initialisation, overwritten grads, gradient checks."""
import math

import numpy as np
import pytest

from minissd import backend
from minissd.backend import to_numpy
from minissd.gradcheck import check_gradients, rel_error
from minissd.layers import L2Norm, Conv2d, MaxPool2d, ReLU, Sequential


def test_conv2d_params_match_pytorch_names_shapes_and_xavier_init():
    layer = Conv2d(64, 128, 3, padding=1, rng=0)
    assert [n for n, _ in layer.params()] == ["weight", "bias"]
    w, b = to_numpy(layer.weight), to_numpy(layer.bias)
    assert w.shape == (128, 64, 3, 3) and b.shape == (128,)
    assert w.dtype == np.float32 and b.dtype == np.float32
    bound = math.sqrt(6.0 / (64 * 9 + 128 * 9))
    assert np.abs(w).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound      # std of U(-a, a): a/sqrt(3)
    assert not b.any()
    again = Conv2d(64, 128, 3, padding=1, rng=0)
    np.testing.assert_array_equal(to_numpy(again.weight), w)   # seeded


def test_l2norm_layer_weight_is_20():
    layer = L2Norm(512)
    assert [n for n, _ in layer.params()] == ["weight"]
    np.testing.assert_array_equal(to_numpy(layer.weight), np.full(512, 20, np.float32))


def test_backward_overwrites_grads(xp, rng):
    layer = Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64)
    x = xp.asarray(rng.standard_normal((2, 2, 5, 5)))
    dy = xp.asarray(rng.standard_normal((2, 3, 5, 5)))
    layer.forward(x)
    layer.backward(dy)
    first = {k: to_numpy(v).copy() for k, v in layer.grads.items()}
    layer.forward(x)
    layer.backward(dy)
    for k in first:
        np.testing.assert_array_equal(to_numpy(layer.grads[k]), first[k])   # not doubled


@pytest.mark.parametrize("stride,padding,dilation,kernel", [(1, 1, 1, 3), (2, 1, 1, 3),
                                                            (1, 6, 6, 3), (1, 0, 1, 1)])
def test_conv2d_layer_gradcheck(xp, rng, stride, padding, dilation, kernel):
    layer = Conv2d(3, 4, kernel, stride, padding, dilation, rng=1, dtype=np.float64)
    layer.bias[:] = xp.asarray(rng.standard_normal(4))
    x = xp.asarray(rng.standard_normal((2, 3, 8, 7)))
    y = layer.forward(x)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = layer.backward(dy)
    grads = dict(layer.grads, x=dx)
    errs = check_gradients(lambda: layer.forward(x), dict(layer.params(), x=x), grads, dy,
                           num_checks=60, rng=rng)
    assert max(errs.values()) < 1e-6, errs


def test_fused_relu_equals_conv_then_relu(xp, rng):
    fused = Conv2d(3, 5, 3, padding=1, rng=2, relu=True, dtype=np.float64)
    plain = Conv2d(3, 5, 3, padding=1, rng=2, dtype=np.float64)
    net = Sequential(plain, ReLU())
    x = xp.asarray(rng.standard_normal((1, 3, 6, 6)))
    dy = xp.asarray(rng.standard_normal((1, 5, 6, 6)))
    assert rel_error(fused.forward(x), net.forward(x)) == 0.0
    assert rel_error(fused.backward(dy), net.backward(dy)) == 0.0
    assert rel_error(fused.grads["weight"], net.grads["0.weight"]) == 0.0


@pytest.mark.parametrize("make", [lambda: MaxPool2d(2, 2, ceil_mode=True),
                                  lambda: MaxPool2d(3, 1, padding=1),
                                  lambda: ReLU(),
                                  lambda: L2Norm(4, dtype=np.float64)],
                         ids=["pool-ceil", "pool5", "relu", "l2norm"])
def test_single_layer_gradcheck(xp, rng, make):
    """Each parameter-free or scale-only layer on its own, to the 1e-6 of the ops tests."""
    layer = make()
    # distinct values away from 0: no pooling ties, no ReLU kinks under the +-1e-5 steps
    x = xp.asarray((rng.permutation(2 * 4 * 7 * 7).reshape(2, 4, 7, 7) - 97.5) * 0.01)
    if layer.params():
        layer.weight[:] = xp.asarray(rng.uniform(0.5, 2.0, 4))
    y = layer.forward(x)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = layer.backward(dy)
    grads = dict(layer.grads, x=dx)
    errs = check_gradients(lambda: layer.forward(x), dict(layer.params(), x=x), grads, dy)
    assert max(errs.values()) < 1e-6, errs


def test_sequential_vgg_like_stack_gradcheck(xp, rng):
    f64 = np.float64
    net = Sequential(
        Conv2d(3, 4, 3, padding=1, rng=0, dtype=f64), ReLU(),
        MaxPool2d(2, 2, ceil_mode=True),                       # 7 -> 4, as 75 -> 38
        L2Norm(4, dtype=f64),
        MaxPool2d(3, 1, padding=1),                            # pool5
        Conv2d(4, 6, 3, padding=2, dilation=2, rng=1, dtype=f64), ReLU(),   # conv6 style
        Conv2d(6, 5, 1, rng=2, dtype=f64, relu=True),                       # conv7 style
        Conv2d(5, 3, 3, stride=2, padding=1, rng=3, dtype=f64),             # conv8_2 style
    )
    assert [n for n, _ in net.params()] == ["0.weight", "0.bias", "3.weight", "5.weight",
                                            "5.bias", "7.weight", "7.bias", "8.weight", "8.bias"]
    for _, p in net.params():                                  # non-zero biases, scale != 20
        if p.ndim == 1:
            p[:] = xp.asarray(rng.uniform(0.5, 2.0, p.shape))
    x = xp.asarray(rng.standard_normal((2, 3, 7, 7)))
    y = net.forward(x)
    assert y.shape == (2, 3, 2, 2)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = net.backward(dy)
    grads = dict(net.grads, x=dx)
    errs = check_gradients(lambda: net.forward(x), dict(net.params(), x=x), grads, dy,
                           num_checks=40, rng=rng)
    # Single layers pass 1e-6 (tests above). Through nine layers some input gradients are
    # small (~5e-5, L2Norm removes the radial direction), and central differences carry an
    # absolute rounding error of ~1e-10 at this loss size, so the ratio can reach ~2e-6.
    assert max(errs.values()) < 1e-5, errs


def test_float32_forward_matches_float64(xp, rng):
    x64 = rng.standard_normal((2, 3, 9, 9))
    nets = []
    for dtype in (np.float32, np.float64):
        nets.append(Sequential(Conv2d(3, 8, 3, padding=1, rng=0, dtype=dtype), ReLU(),
                               MaxPool2d(2, 2, ceil_mode=True), L2Norm(8, dtype=dtype),
                               Conv2d(8, 4, 3, stride=2, padding=1, rng=1, dtype=dtype)))
    y32 = nets[0].forward(xp.asarray(x64, dtype=xp.float32))
    y64 = nets[1].forward(xp.asarray(x64))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(to_numpy(y32), to_numpy(y64), rtol=1e-4, atol=1e-4)
    dx32 = nets[0].backward(xp.ones_like(y32))
    assert dx32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in nets[0].grads.values())


def test_wrong_channels_error_names_the_layer(xp):
    with pytest.raises(ValueError, match=r"Conv2d\(3->8\)"):
        Conv2d(3, 8, 3).forward(xp.ones((1, 4, 5, 5), dtype=xp.float32))


def test_to_cpu_returns_numpy_params():
    layer = Sequential(Conv2d(2, 3, 3), L2Norm(3)).to("cpu")
    assert all(isinstance(p, np.ndarray) for _, p in layer.params())


@pytest.mark.gpu
def test_to_cuda_and_back(rng):
    layer = Conv2d(2, 3, 3, padding=1, rng=0).to("cuda")
    assert all(backend.is_cupy(p) for _, p in layer.params())
    import_xp = backend.get_array_module(layer.weight)
    y = layer.forward(import_xp.asarray(rng.standard_normal((1, 2, 4, 4)), dtype=import_xp.float32))
    assert backend.is_cupy(y)
    layer.to("cpu")
    assert isinstance(layer.weight, np.ndarray)
