"""minissd.ops: gradient checks (float64), known answers, naive vs fast, dtype, edge cases."""
import numpy as np
import pytest

from minissd.backend import to_numpy as _np
from minissd.gradcheck import check_gradients, rel_error
from minissd.ops.activation import relu_backward, relu_forward
from minissd.ops.conv import (conv2d_backward, conv2d_backward_naive, conv2d_forward,
                              conv2d_forward_naive)
from minissd.ops.l2norm import l2norm_backward, l2norm_forward
from minissd.ops.pool import (maxpool2d_backward, maxpool2d_backward_naive, maxpool2d_forward,
                              maxpool2d_forward_naive, pool_output_size)
from minissd.ops.softmax import (log_softmax, softmax, softmax_cross_entropy_backward,
                                 softmax_cross_entropy_forward)

# (N, C, H, W, F, k, stride, padding, dilation)
CONV_CASES = [
    (2, 3, 7, 6, 4, 3, 1, 1, 1),      # 3x3 pad 1, odd sizes, batch 2
    (1, 2, 9, 8, 3, 3, 2, 1, 1),      # stride 2 (conv8_2 style)
    (2, 2, 13, 13, 3, 3, 1, 6, 6),    # dilation 6 pad 6 (conv6 style)
    (1, 3, 14, 14, 2, 3, 1, 0, 6),    # dilation 6 without padding
    (2, 4, 5, 4, 6, 1, 1, 0, 1),      # 1x1 (conv7 / conv8_1 style): no im2col
    (1, 3, 6, 6, 2, 1, 2, 0, 1),      # 1x1 stride 2 (goes through im2col)
    (2, 2, 3, 3, 3, 3, 1, 0, 1),      # 3x3 kernel on a 3x3 input, no pad (conv11_2): 1x1 out
    (1, 2, 5, 7, 2, 2, 1, 1, 1),      # even kernel (SSD512's 4x4 / tiny's 2x2 style)
]


def _ids(cases):
    return ["x".join(map(str, c)) for c in cases]


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv_gradcheck(xp, rng, case):
    n, c, h, w, f, k, s, p, d = case
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    wt = xp.asarray(rng.standard_normal((f, c, k, k)))
    b = xp.asarray(rng.standard_normal(f))
    y, cache = conv2d_forward(x, wt, b, s, p, d)
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
    assert y.shape == (n, f, ho, wo)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx, dw, db = conv2d_backward(dy, cache)
    errs = check_gradients(lambda: conv2d_forward(x, wt, b, s, p, d)[0],
                           {"x": x, "w": wt, "b": b}, {"x": dx, "w": dw, "b": db}, dy,
                           num_checks=150, rng=rng)
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv_fast_matches_naive(xp, rng, case):
    n, c, h, w, f, k, s, p, d = case
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    wt = xp.asarray(rng.standard_normal((f, c, k, k)))
    b = xp.asarray(rng.standard_normal(f))
    y, cache = conv2d_forward(x, wt, b, s, p, d)
    yn, cache_n = conv2d_forward_naive(x, wt, b, s, p, d)
    assert y.shape == yn.shape
    assert rel_error(y, yn) < 1e-10
    dy = xp.asarray(rng.standard_normal(y.shape))
    for fast, naive in zip(conv2d_backward(dy, cache), conv2d_backward_naive(dy, cache_n)):
        assert fast.shape == naive.shape
        assert rel_error(fast, naive) < 1e-10


def test_conv_known_answer(xp):
    x = xp.arange(1, 10, dtype=xp.float64).reshape(1, 1, 3, 3)   # [[1 2 3] [4 5 6] [7 8 9]]
    w = xp.asarray([[[[1.0, 0.0], [0.0, -1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])  # (2, 1, 2, 2)
    b = xp.asarray([0.5, 1.0])
    y, cache = conv2d_forward(x, w, b)
    # filter 0: x[i, j] - x[i+1, j+1] = -4 everywhere; filter 1: 2x2 window sums + 1
    expect = np.array([[[[-3.5, -3.5], [-3.5, -3.5]], [[13.0, 17.0], [25.0, 29.0]]]])
    np.testing.assert_allclose(_np(y), expect)
    # dy = 1 on filter 1 only: dx counts how many windows cover each pixel
    dy = xp.zeros_like(y)
    dy[:, 1] = 1.0
    dx, dw, db = conv2d_backward(dy, cache)
    cover = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    np.testing.assert_allclose(_np(dx)[0, 0], cover)
    np.testing.assert_allclose(_np(db), [0.0, 4.0])
    np.testing.assert_allclose(_np(dw)[1, 0], [[12, 16], [24, 28]])   # sums of x under each tap


def test_conv_stride_padding_known_answer(xp):
    x = xp.ones((1, 1, 4, 4))
    w = xp.ones((1, 1, 3, 3))
    y, _ = conv2d_forward(x, w, None, stride=2, padding=1)
    # windows at rows/cols -1..1 and 1..3: corner sees 4 ones, edge 6, centre 9
    np.testing.assert_allclose(_np(y)[0, 0], [[4, 6], [6, 9]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_dtype_kept_and_parity(xp, rng, dtype):
    x64 = rng.standard_normal((2, 3, 9, 9))
    w64 = rng.standard_normal((4, 3, 3, 3)) * 0.3
    b64 = rng.standard_normal(4)
    x, w, b = (xp.asarray(a, dtype=dtype) for a in (x64, w64, b64))
    y, cache = conv2d_forward(x, w, b, 2, 1, 1)
    dx, dw, db = conv2d_backward(xp.ones_like(y), cache)
    assert {y.dtype, dx.dtype, dw.dtype, db.dtype} == {np.dtype(dtype)}
    y_ref, _ = conv2d_forward(xp.asarray(x64), xp.asarray(w64), xp.asarray(b64), 2, 1, 1)
    np.testing.assert_allclose(_np(y), _np(y_ref), rtol=1e-4, atol=1e-5)


def test_conv_shape_errors_name_the_problem(xp):
    with pytest.raises(ValueError, match="channels"):
        conv2d_forward(xp.ones((1, 3, 5, 5)), xp.ones((2, 4, 3, 3)), None)
    with pytest.raises(ValueError, match="too small"):
        conv2d_forward(xp.ones((1, 1, 2, 2)), xp.ones((1, 1, 3, 3)), None)


# ----------------------------------------------------------------------------- max pooling
# (N, C, H, W, kernel, stride, padding, ceil_mode)
POOL_CASES = [
    (2, 3, 8, 6, 2, 2, 0, False),     # the usual 2x2/2 pool, no padding copy
    (1, 2, 7, 7, 2, 2, 0, True),      # ceil mode: 7 -> 4, last window hangs over the edge
    (2, 2, 7, 9, 3, 1, 1, False),     # pool5: 3x3 stride 1 pad 1
    (1, 2, 8, 7, 3, 2, 1, True),      # padding and ceil mode together
    (1, 1, 5, 5, 3, 2, 0, False),     # overlapping windows without padding
]


@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_pool_gradcheck_and_naive(xp, rng, case):
    n, c, h, w, k, s, p, ceil = case
    # a random permutation: distinct values, so no ties and no argmax flips under +-h
    x = xp.asarray(rng.permutation(n * c * h * w).reshape(n, c, h, w) * 0.1)
    y, cache = maxpool2d_forward(x, k, s, p, ceil)
    assert y.shape == (n, c, pool_output_size(h, k, s, p, ceil), pool_output_size(w, k, s, p, ceil))
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = maxpool2d_backward(dy, cache)
    assert dx.shape == x.shape
    errs = check_gradients(lambda: maxpool2d_forward(x, k, s, p, ceil)[0], {"x": x}, {"x": dx}, dy)
    assert errs["x"] < 1e-6
    yn, cache_n = maxpool2d_forward_naive(x, k, s, p, ceil)
    assert rel_error(y, yn) == 0.0
    assert rel_error(dx, maxpool2d_backward_naive(dy, cache_n)) < 1e-12


def test_pool_output_sizes_match_pytorch_rules():
    assert pool_output_size(75, 2, 2, 0, ceil_mode=True) == 38     # SSD300 pool3
    assert pool_output_size(75, 2, 2, 0, ceil_mode=False) == 37
    assert pool_output_size(19, 3, 1, 1) == 19                    # pool5
    assert pool_output_size(300, 2, 2) == 150
    # the last window would start in the right padding: dropped (5 + 1 = 6 <= (4 - 1) * 2)
    assert pool_output_size(5, 2, 2, 1, ceil_mode=True) == 3


def test_pool_ceil_75_to_38_forward(xp, rng):
    x = xp.asarray(rng.standard_normal((1, 2, 75, 75)).astype(np.float32))
    y, cache = maxpool2d_forward(x, 2, 2, 0, ceil_mode=True)
    assert y.shape == (1, 2, 38, 38) and y.dtype == np.float32
    # the last row/column of windows sees only input row/col 74
    np.testing.assert_array_equal(_np(y)[:, :, -1, :37],
                                  _np(x)[:, :, 74, 0:74].reshape(1, 2, 37, 2).max(-1))
    dx = maxpool2d_backward(xp.ones_like(y), cache)
    assert dx.shape == x.shape and float(dx.sum()) == 38 * 38 * 2


def test_pool_ceil_75_to_38_gradcheck(xp, rng):
    """SSD300's pool3 at its real size, every input coordinate checked numerically: the
    overhanging last row and column of windows (one input row/column each) included."""
    x = xp.asarray(rng.permutation(75 * 75).reshape(1, 1, 75, 75) * 1e-3)  # no ties, gaps >> h
    y, cache = maxpool2d_forward(x, 2, 2, 0, ceil_mode=True)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = maxpool2d_backward(dy, cache)
    errs = check_gradients(lambda: maxpool2d_forward(x, 2, 2, 0, True)[0], {"x": x}, {"x": dx}, dy)
    assert errs["x"] < 1e-6
    assert float(xp.abs(dx[0, 0, 74]).sum()) > 0 and float(xp.abs(dx[0, 0, :, 74]).sum()) > 0


def test_pool_known_answer(xp):
    x = xp.arange(1, 17, dtype=xp.float64).reshape(1, 1, 4, 4)
    y, cache = maxpool2d_forward(x, 2, 2)
    np.testing.assert_array_equal(_np(y)[0, 0], [[6, 8], [14, 16]])
    dx = maxpool2d_backward(xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    expect = np.zeros((4, 4))
    expect[1, 1], expect[1, 3], expect[3, 1], expect[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(_np(dx)[0, 0], expect)


@pytest.mark.parametrize("case", [(2, 2, 0, False), (3, 1, 1, False), (2, 2, 0, True)])
def test_pool_ties_go_to_first_max(xp, case):
    k, s, p, ceil = case
    x = xp.ones((1, 1, 5, 5))                       # every window is one big tie
    y, cache = maxpool2d_forward(x, k, s, p, ceil)
    dx = _np(maxpool2d_backward(xp.ones_like(y), cache))
    yn, cache_n = maxpool2d_forward_naive(x, k, s, p, ceil)
    np.testing.assert_array_equal(dx, _np(maxpool2d_backward_naive(xp.ones_like(yn), cache_n)))
    # each window's gradient lands on its top-left real cell, once per window
    assert dx.sum() == y.size
    if (k, s, p) == (2, 2, 0):
        expect = np.zeros((5, 5))
        last = 5 if ceil else 4
        expect[0:last:2, 0:last:2] = 1
        np.testing.assert_array_equal(dx[0, 0], expect)


def test_pool_padding_is_minus_inf(xp):
    x = -xp.ones((1, 1, 3, 3))                      # all negative: zero padding would win
    y, _ = maxpool2d_forward(x, 3, 1, 1)
    assert float(y.max()) == -1.0


# ----------------------------------------------------------------------------- ReLU
def test_relu_gradcheck_and_values(xp, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5                       # keep away from the kink
    x = xp.asarray(x)
    y, cache = relu_forward(x)
    np.testing.assert_array_equal(_np(y), np.maximum(_np(x), 0))
    dy = xp.asarray(rng.standard_normal(x.shape))
    dx = relu_backward(dy, cache)
    assert check_gradients(lambda: relu_forward(x)[0], {"x": x}, {"x": dx}, dy)["x"] < 1e-6
    x32 = x.astype(xp.float32)
    y32, c32 = relu_forward(x32)
    assert y32.dtype == np.float32 and relu_backward(dy.astype(xp.float32), c32).dtype == np.float32


# ----------------------------------------------------------------------------- L2Norm
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 4, 3, 5)])
def test_l2norm_gradcheck(xp, rng, shape):
    x = xp.asarray(rng.standard_normal(shape))
    scale = xp.asarray(rng.uniform(1, 20, shape[1]))
    y, cache = l2norm_forward(x, scale)
    dy = xp.asarray(rng.standard_normal(shape))
    dx, dscale = l2norm_backward(dy, cache)
    errs = check_gradients(lambda: l2norm_forward(x, scale)[0], {"x": x, "scale": scale},
                           {"x": dx, "scale": dscale}, dy)
    assert max(errs.values()) < 1e-6, errs


def test_l2norm_known_answer(xp):
    x = xp.asarray([3.0, 4.0]).reshape(1, 2, 1, 1)
    y, _ = l2norm_forward(x, xp.asarray([20.0, 10.0]))
    np.testing.assert_allclose(_np(y).ravel(), [20 * 0.6, 10 * 0.8])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_l2norm_all_zero_input_is_finite(xp, dtype):
    x = xp.zeros((2, 4, 3, 3), dtype=dtype)
    x[1, :, 0, 0] = xp.asarray([1.0, 2.0, 2.0, 0.0], dtype=dtype)   # one non-zero position
    scale = xp.full(4, 20.0, dtype=dtype)
    y, cache = l2norm_forward(x, scale)
    dx, dscale = l2norm_backward(xp.ones_like(x), cache)
    for a in (y, dx, dscale):
        assert a.dtype == np.dtype(dtype)
        assert bool(xp.isfinite(a).all())
    assert float(xp.abs(y[0]).max()) == 0.0
    np.testing.assert_allclose(_np(y)[1, :, 0, 0], [20 / 3, 40 / 3, 40 / 3, 0], rtol=1e-5)


# ----------------------------------------------------------------------------- softmax
def test_log_softmax_is_stable_and_correct(xp):
    x = xp.asarray([[1000.0, 1000.0, 0.0], [-1000.0, 0.0, 1000.0]], dtype=xp.float32)
    logp = _np(log_softmax(x))
    assert np.isfinite(logp).all() and logp.dtype == np.float32
    np.testing.assert_allclose(logp[0, :2], [-np.log(2)] * 2, rtol=1e-6)
    np.testing.assert_allclose(_np(softmax(x)).sum(-1), [1, 1], rtol=1e-6)
    small = xp.asarray([[1.0, 2.0, 3.0]])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(_np(softmax(small))[0], e / e.sum())


def test_softmax_cross_entropy_known_answer_and_gradcheck(xp, rng):
    # the MultiBox loss's confidence term (minissd/loss.py) is this pair of functions
    # uniform logits: the loss is log C for every row
    loss, _ = softmax_cross_entropy_forward(xp.zeros((3, 5)), xp.asarray([0, 2, 4]))
    np.testing.assert_allclose(_np(loss), [np.log(5)] * 3)
    logits = xp.asarray(rng.standard_normal((6, 4)))
    labels = xp.asarray(rng.integers(0, 4, 6))
    dloss = xp.asarray(rng.standard_normal(6))
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    assert loss.shape == (6,)
    dlogits = softmax_cross_entropy_backward(dloss, cache)
    err = check_gradients(lambda: softmax_cross_entropy_forward(logits, labels)[0],
                          {"l": logits}, {"l": dlogits}, dloss)["l"]
    assert err < 1e-6


def test_softmax_cross_entropy_leading_dims_and_float32(xp, rng):
    logits = xp.asarray(rng.standard_normal((2, 7, 3)), dtype=xp.float32)
    labels = xp.asarray(rng.integers(0, 3, (2, 7)))
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    flat, _ = softmax_cross_entropy_forward(logits.reshape(14, 3), labels.reshape(14))
    np.testing.assert_allclose(_np(loss).ravel(), _np(flat), rtol=1e-6)
    dl = softmax_cross_entropy_backward(xp.ones((2, 7), dtype=xp.float32), cache)
    assert loss.dtype == np.float32 and dl.dtype == np.float32 and dl.shape == (2, 7, 3)
    np.testing.assert_allclose(_np(dl).sum(-1), 0, atol=1e-6)   # softmax - onehot sums to 0
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy_forward(logits, labels[:, :3])

