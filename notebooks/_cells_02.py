"""Cells of 02_layers_and_gradient_checks.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 02 · Layers and gradient checks

minissd's networks are built from five operations: convolution, max pooling, ReLU, L2Norm and
batch norm. The paper's SSD300 uses the first four; batch norm is the fifth, used by minissd's
`tiny` config, which trains from scratch (SSD300's VGG base comes pretrained and has none).
Each lives in `minissd.ops` as a pair `x_forward(...) -> (out, cache)` /
`x_backward(dout, cache)`, with no autograd. This notebook shows how the fast versions work,
derives each backward pass, and checks every one against central differences
(`minissd.gradcheck`) in float64. Batch norm's derivation is longer and only `tiny` needs it: it
is an optional appendix at the end.
"""),
("code", r"""
import timeit

import matplotlib.pyplot as plt
import numpy as np

from minissd.gradcheck import check_gradients, rel_error
from minissd.config import ssd300, tiny
from minissd.ops.activation import relu_backward, relu_forward
from minissd.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from minissd.ops.conv import (conv2d_backward, conv2d_backward_naive, conv2d_forward,
                              conv2d_forward_naive, conv_output_size, im2col)
from minissd.ops.l2norm import l2norm_backward, l2norm_forward
from minissd.ops.pool import (maxpool2d_backward, maxpool2d_backward_naive, maxpool2d_forward,
                              maxpool2d_forward_naive, pool_output_size)
from minissd.plan import layer_plan

rng = np.random.default_rng(0)
"""),
("md", r"""
## Convolution as one matrix product (im2col)

$$y[n, f, i, j] = b_f + \sum_{c,u,v} w[f, c, u, v]\; x_{pad}[n, c,\; i s + u d,\; j s + v d],
\qquad H_o = \left\lfloor \frac{H + 2p - d(K-1) - 1}{s} \right\rfloor + 1$$

im2col copies every receptive field into one **column**: row $(c, u, v)$, column $(i, j)$. The
convolution is then $Y = W_{mat}\,\text{cols}$ with $W_{mat}$ of shape $(F, C K_H K_W)$. A tiny
input (2 channels, 4x4, numbered 0..31) and a 3x3 kernel give a $18 \times 4$ column matrix:
each column is one 3x3 window of both channels.
"""),
("code", r"""
x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)     # (N, C, H, W)
cols = im2col(x, 3, 3)                                              # (N, C*3*3, Ho*Wo) = (1, 18, 4)
print("cols", cols.shape, " Ho = Wo =", conv_output_size(4, 3))

fig, axes = plt.subplots(1, 3, figsize=(11, 5), gridspec_kw={"width_ratios": [1, 1, 1.1]})
for c in range(2):
    axes[c].imshow(x[0, c], cmap="Blues", vmin=-10, vmax=40)
    for (r, q), v in np.ndenumerate(x[0, c]):
        axes[c].text(q, r, int(v), ha="center", va="center")
    axes[c].set_title(f"input channel {c}")
    axes[c].set_xticks([]), axes[c].set_yticks([])
axes[2].imshow(cols[0], cmap="Blues", vmin=-10, vmax=40, aspect=0.35)
for (r, q), v in np.ndenumerate(cols[0]):
    axes[2].text(q, r, int(v), ha="center", va="center", fontsize=7)
axes[2].set_title("im2col: one column per output position")
axes[2].set_xlabel("output position i*Wo + j"), axes[2].set_ylabel("(c, u, v)")
fig.tight_layout()
plt.show()

w = rng.standard_normal((3, 2, 3, 3))                               # (F, C, KH, KW)
y_mat = (w.reshape(3, -1) @ cols[0]).reshape(1, 3, 2, 2)            # (N, F, Ho, Wo)
y_naive, _ = conv2d_forward_naive(x, w, None)
assert np.allclose(y_mat, y_naive)
assert np.array_equal(cols[0][:, 0],
                      np.concatenate([x[0, 0, :3, :3].ravel(), x[0, 1, :3, :3].ravel()]))
# Dilation 2 spreads the 3x3 taps over a 5x5 span: no window fits the 4x4 input without
# padding (exercise 1); with padding 1 there are 2x2 = 4 windows again.
assert conv_output_size(4, 3, dilation=2) == 0
assert conv_output_size(4, 3, padding=1, dilation=2) == 2
assert im2col(x, 3, 3, padding=1, dilation=2).shape == (1, 18, 4)
"""),
("md", r"""
**Backward.** With $Y = W_{mat}\,\text{cols} + b$ (per image):

$$dW_{mat} = \sum_n dY_n\, \text{cols}_n^\top, \qquad db = \sum_{n,i,j} dY, \qquad
d\text{cols}_n = W_{mat}^\top dY_n,$$

and `col2im` adds every entry of $d\text{cols}$ back onto the input pixel it was copied from
(overlapping windows add up). Dilation and stride only change which pixel that is.
"""),
("code", r"""
x = rng.standard_normal((2, 3, 7, 7))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
for stride, padding, dilation in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)]:
    y, cache = conv2d_forward(x, w, b, stride, padding, dilation)
    dy = rng.standard_normal(y.shape)                               # random upstream gradient
    dx, dw, db = conv2d_backward(dy, cache)
    errors = check_gradients(lambda: conv2d_forward(x, w, b, stride, padding, dilation)[0],
                             {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, dout=dy)
    print(f"stride {stride} pad {padding} dil {dilation}: y {y.shape}, rel errors",
          {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-7
"""),
("md", r"""
## Max pooling and ceil mode (75 → 38)

$$H_o = \left\lceil \frac{H + 2p - k}{s} \right\rceil + 1 \quad(\text{ceil mode}), \qquad
H_o = \left\lfloor \frac{H + 2p - k}{s} \right\rfloor + 1 \quad(\text{floor}).$$

In SSD300, conv3_3 is 75x75. A 2x2/2 pool in floor mode gives $\lfloor 73/2 \rfloor + 1 = 37$;
ceil mode gives $\lceil 36.5 \rceil + 1 = 38$, which is why conv4_3 is 38x38. The last window
hangs over the edge; the missing cells count as $-\infty$ so they never win.
"""),
("code", r"""
print("75 -> floor", pool_output_size(75, 2, 2),
      " ceil", pool_output_size(75, 2, 2, ceil_mode=True))
assert pool_output_size(75, 2, 2, ceil_mode=True) == 38 and pool_output_size(75, 2, 2) == 37

x5 = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
y_floor, _ = maxpool2d_forward(x5, 2, 2)
y_ceil, _ = maxpool2d_forward(x5, 2, 2, ceil_mode=True)
print("5x5 input:\n", x5[0, 0])
print("floor mode (2x2):\n", y_floor[0, 0])
print("ceil mode (3x3), the last row/column come from 1-wide windows:\n", y_ceil[0, 0])
assert np.array_equal(y_ceil[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
"""),
("md", r"""
**Backward.** $y = \max$ of a window, so the gradient goes to the position of the maximum
(the first one when there are ties, as PyTorch does) and nowhere else:
$dx[\arg\max] \mathrel{+}= dy$.
"""),
("code", r"""
x = rng.standard_normal((2, 3, 7, 7))                               # no ties: max is unique
for kernel, stride, padding, ceil_mode in [(2, 2, 0, True), (2, 2, 0, False), (3, 1, 1, False)]:
    y, cache = maxpool2d_forward(x, kernel, stride, padding, ceil_mode)
    dy = rng.standard_normal(y.shape)
    dx = maxpool2d_backward(dy, cache)
    errors = check_gradients(lambda: maxpool2d_forward(x, kernel, stride, padding, ceil_mode)[0],
                             {"x": x}, {"x": dx}, dout=dy)
    print(f"pool {kernel}/{stride} pad {padding} ceil {ceil_mode}: y {y.shape}, "
          f"rel error {errors['x']:.1e}")
    assert errors["x"] < 1e-7
"""),
("md", r"""
## ReLU and L2Norm

ReLU: $y = \max(x, 0)$, so $dx = dy \cdot [x > 0]$.

L2Norm (ParseNet; SSD uses it on conv4_3, whose activations are much larger than those of the
later maps): per position, normalise over channels and rescale by a learned $\gamma_c$
(initialised to 20):

$$s = \sqrt{\textstyle\sum_c x_c^2}, \qquad y_c = \gamma_c \frac{x_c}{s + \epsilon}.$$

With $g_c = \gamma_c\, dy_c$ and $\partial s / \partial x_c = x_c / s$:

$$d\gamma_c = \sum_{n,h,w} dy_c\, \frac{x_c}{s + \epsilon}, \qquad
dx_c = \frac{g_c}{s + \epsilon} - x_c\, \frac{\sum_{c'} g_{c'} x_{c'}}{(s + \epsilon)^2\, s}.$$

At an all-zero position the second term is $0 \cdot (\text{bounded})$; the code takes it as 0,
so no NaN appears.
"""),
("code", r"""
x = rng.standard_normal((2, 5, 3, 3))
scale = np.full(5, 20.0)
y, cache = l2norm_forward(x, scale)
print("channel norm after L2Norm (should be 20):", np.sqrt((y ** 2).sum(axis=1)).ravel()[:5])
assert np.allclose(np.sqrt((y ** 2).sum(axis=1)), 20.0)

scale = rng.uniform(1, 3, 5)
y, cache = l2norm_forward(x, scale)
dy = rng.standard_normal(y.shape)
dx, dscale = l2norm_backward(dy, cache)
errors = check_gradients(lambda: l2norm_forward(x, scale)[0], {"x": x, "scale": scale},
                         {"x": dx, "scale": dscale}, dout=dy)
print("L2Norm rel errors", {k: f"{v:.1e}" for k, v in errors.items()})
assert max(errors.values()) < 1e-7

y, cache = relu_forward(x)
dy = rng.standard_normal(y.shape)
errors = check_gradients(lambda: relu_forward(x)[0], {"x": x}, {"x": relu_backward(dy, cache)},
                         dout=dy)
print("ReLU rel error", f"{errors['x']:.1e}")
assert errors["x"] < 1e-7

zeros = np.zeros((1, 4, 2, 2))
yz, cz = l2norm_forward(zeros, np.full(4, 20.0))
dxz, _ = l2norm_backward(np.ones_like(zeros), cz)
print("all-zero input: y finite", np.isfinite(yz).all(), " dx finite", np.isfinite(dxz).all())
assert np.isfinite(yz).all() and np.isfinite(dxz).all()
"""),
("md", r"""
## Naive next to fast

`conv2d_forward_naive` loops over output positions (one `tensordot` each); the fast version does
one im2col copy and one matrix product. Same results, very different speed (small shapes, best
of three runs; numbers vary with the machine's load).
"""),
("code", r"""
x = rng.standard_normal((4, 16, 24, 24))                            # float64 to compare
w = rng.standard_normal((32, 16, 3, 3))
b = rng.standard_normal(32)
y_fast, c_fast = conv2d_forward(x, w, b, 1, 1)
y_slow, c_slow = conv2d_forward_naive(x, w, b, 1, 1)
dy = rng.standard_normal(y_fast.shape)
grads_fast, grads_slow = conv2d_backward(dy, c_fast), conv2d_backward_naive(dy, c_slow)
print(f"y  rel error {rel_error(y_fast, y_slow):.1e}")
for name, gf, gs in zip(("dx", "dw", "db"), grads_fast, grads_slow):
    print(f"{name} rel error {rel_error(gf, gs):.1e}")
    assert rel_error(gf, gs) < 1e-9
assert rel_error(y_fast, y_slow) < 1e-9

# timings in float32, as in training
x, w, b, dy = (a.astype(np.float32) for a in (x, w, b, dy))
_, c_fast = conv2d_forward(x, w, b, 1, 1)
_, c_slow = conv2d_forward_naive(x, w, b, 1, 1)
t_fast = min(timeit.repeat(lambda: conv2d_forward(x, w, b, 1, 1), number=1, repeat=5))
t_slow = min(timeit.repeat(lambda: conv2d_forward_naive(x, w, b, 1, 1), number=1, repeat=5))
tb_fast = min(timeit.repeat(lambda: conv2d_backward(dy, c_fast), number=1, repeat=5))
tb_slow = min(timeit.repeat(lambda: conv2d_backward_naive(dy, c_slow), number=1, repeat=5))
xp_ = rng.standard_normal((4, 16, 24, 24)).astype(np.float32)
tp_fast = min(timeit.repeat(lambda: maxpool2d_forward(xp_, 2, 2), number=1, repeat=5))
tp_slow = min(timeit.repeat(lambda: maxpool2d_forward_naive(xp_, 2, 2), number=1, repeat=5))
print(f"conv forward  naive {t_slow * 1e3:7.1f} ms   im2col {t_fast * 1e3:6.1f} ms   "
      f"x{t_slow / t_fast:.0f}")
print(f"conv backward naive {tb_slow * 1e3:7.1f} ms   col2im {tb_fast * 1e3:6.1f} ms   "
      f"x{tb_slow / tb_fast:.0f}")
print(f"pool forward  naive {tp_slow * 1e3:7.1f} ms   windows {tp_fast * 1e3:5.1f} ms   "
      f"x{tp_slow / tp_fast:.0f}")
"""),
("md", r"""
## Exercises

1. A 3x3 kernel with `dilation=2` spans 5x5 pixels, so on the 4x4 input above `im2col` gives
   no column at all ($H_o = \lfloor (4 - 2 \cdot 2 - 1)/1 \rfloor + 1 = 0$). With `padding=1`
   it gives 4. Work out by hand which pixels (or zeros of the padding) each of the 4 columns
   reads, then check with `im2col(x, 3, 3, padding=1, dilation=2)`.
2. Pooling backward sends the gradient to the *first* maximum. Build a window with a tie and
   compare `maxpool2d_backward` with the gradient you would get by splitting it equally. Why do
   both pass a gradient check only away from ties?
3. Derive the L2Norm backward with $\epsilon$ under the square root instead
   ($s = \sqrt{\sum x^2 + \epsilon}$) and compare the two at an all-zero position.
4. Why does `gradcheck` use float64 and a random `dout`? Rerun a check in float32 and with
   `dout = np.ones(...)`, and explain what each change hides. (For batch norm, an all-ones
   `dout` gives $dx = 0$ exactly: why?)
5. Batch norm's output for one image depends on the other images of the batch. Run the forward
   on a batch of one 1x1 image: what comes out, and what does that mean for `--batch-size 1`?
"""),
("md", r"""
## Appendix (optional): batch norm, derived and checked

The fifth operation, used only by the `tiny` config; the SSD300 of the paper has none.

SSD300 starts from a VGG16 trained on ImageNet. minissd's `tiny` config is trained from
scratch in minutes, and a plain conv-ReLU stack trained from scratch sits for thousands of
steps on a plateau where it predicts the same boxes for every image (see `minissd.config.tiny`;
DSOD and ScratchDet made the same observation). Batch norm after every conv (conv, BN, ReLU)
takes it off the plateau.

**Forward** (training mode). Per channel, over the $M = N H W$ values $x_i$ of the batch:

$$\mu = \frac1M \sum_i x_i, \qquad \sigma^2 = \frac1M \sum_i (x_i - \mu)^2, \qquad
\hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y_i = \gamma \hat x_i + \beta.$$

At inference (`eval()`), $\mu$ and $\sigma^2$ are replaced by running averages collected during
training, so an image's output does not depend on the other images of its batch.

**Backward.** $d\beta = \sum_i dy_i$, $d\gamma = \sum_i dy_i\, \hat x_i$ and
$d\hat x_i = \gamma\, dy_i$. Every $\hat x_j$ depends on $x_i$ three ways: directly, through
$\mu$ ($\partial \mu / \partial x_i = 1/M$) and through $\sigma^2$
($\partial \sigma^2 / \partial x_i = 2 (x_i - \mu) / M$). With $r = 1/\sqrt{\sigma^2 + \epsilon}$:

$$d\sigma^2 = -\frac{r^3}{2} \sum_j d\hat x_j (x_j - \mu), \qquad
d\mu = -r \sum_j d\hat x_j \quad (\text{the path through } \sigma^2 \text{ adds }
\textstyle\sum_j (x_j - \mu) = 0),$$

$$dx_i = r\, d\hat x_i + d\sigma^2 \frac{2 (x_i - \mu)}{M} + \frac{d\mu}{M}
       = r \Big( d\hat x_i - \overline{d\hat x} - \hat x_i\, \overline{d\hat x\, \hat x} \Big),$$

bars being means over the channel's $M$ values. Since $\overline{d\hat x} = \gamma\, d\beta / M$
and $\overline{d\hat x\, \hat x} = \gamma\, d\gamma / M$, the code
(`minissd.ops.batchnorm.batchnorm2d_backward`) writes it as

$$dx = \gamma\, r \Big(dy - \frac{d\beta}{M} - \hat x\, \frac{d\gamma}{M}\Big).$$

In eval mode $\mu$ and $\sigma^2$ are constants and $dx = \gamma\, r\, dy$.

A worked example, one channel of four values $x = (1, 2, 3, 6)$: $\mu = 3$,
$\sigma^2 = (4 + 1 + 0 + 9)/4 = 3.5$, $\hat x = (-2, -1, 0, 3)/\sqrt{3.5} =
(-1.069, -0.535, 0, 1.604)$ (with $\epsilon = 10^{-5}$ the last digits move a little).
"""),
("code", r"""
# The operations each network is made of, read from its layer plan (notebook 03).
ops_300 = sorted({p.kind for p in layer_plan(ssd300())})
ops_tiny = sorted({p.kind for p in layer_plan(tiny())})
print("ssd300:", ops_300)
print("tiny:  ", ops_tiny)
assert len(ops_300) == 4 and len(ops_tiny) == 5
assert set(ops_tiny) - set(ops_300) == {"batchnorm"}

x1 = np.array([1.0, 2.0, 3.0, 6.0]).reshape(1, 1, 2, 2)              # (N, C, H, W), M = 4
y1, _ = batchnorm2d_forward(x1, np.ones(1), np.zeros(1), np.zeros(1), np.ones(1))
print("x_hat of (1, 2, 3, 6):", y1.ravel().round(3))
assert np.allclose(y1.ravel(), (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5 + 1e-5))

# Channels of very different means and scales, as a conv's output can be.
C = 4
x = rng.standard_normal((8, C, 5, 5)) * np.array([0.5, 1, 4, 10])[None, :, None, None] \
    + np.array([-3, 0, 5, 20])[None, :, None, None]
gamma, beta = rng.uniform(0.5, 2, C), rng.standard_normal(C)
running_mean, running_var = np.zeros(C), np.ones(C)
y, cache = batchnorm2d_forward(x, np.ones(C), np.zeros(C), running_mean, running_var)
print("per channel mean after BN:", y.mean(axis=(0, 2, 3)).round(6))
print("per channel std after BN: ", y.std(axis=(0, 2, 3)).round(4))
assert np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-9)
assert np.allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-4)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for c in range(C):
    axes[0].hist(x[:, c].ravel(), bins=30, alpha=0.6, label=f"channel {c}")
    axes[1].hist(y[:, c].ravel(), bins=20, histtype="step", linewidth=2)
axes[0].set_title("a conv's output: each channel its own mean and scale")
axes[1].set_title("after batch norm (gamma 1, beta 0): mean 0, std 1")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
"""),
("md", r"""
The gradient check, on a small corner of that batch, in training mode (the batch statistics
depend on $x$, the hard case) and in eval mode. One more check follows from the derivation:
$\hat x$ does not change when a channel's inputs are all shifted by a constant or all scaled
by a factor, so the gradient $dx$ has no component along those directions: per channel
$\sum_i dx_i = 0$ and
$\sum_i dx_i\, \hat x_i = 0$. The second holds exactly only for $\epsilon = 0$; with
$\epsilon$, $\sum_i \hat x_i^2 = M \sigma^2 r^2$ instead of $M$, and the formula above gives
$\sum_i dx_i\, \hat x_i = \gamma\, r\, d\gamma\; \epsilon r^2$, visible for the channel of
small variance.
"""),
("code", r"""
xs = np.ascontiguousarray(x[:2, :, :3, :3])                          # (2, 4, 3, 3), M = 18
running_mean, running_var = rng.standard_normal(C), rng.uniform(0.5, 2, C)
for training in (True, False):
    # the running statistics are copies, so every call of the forward sees the same ones
    y, cache = batchnorm2d_forward(xs, gamma, beta, running_mean.copy(), running_var.copy(),
                                   training=training)
    dy = rng.standard_normal(y.shape)
    dx, dgamma, dbeta = batchnorm2d_backward(dy, cache)
    errors = check_gradients(lambda: batchnorm2d_forward(xs, gamma, beta, running_mean.copy(),
                                                         running_var.copy(), training)[0],
                             {"x": xs, "gamma": gamma, "beta": beta},
                             {"x": dx, "gamma": dgamma, "beta": dbeta}, dout=dy)
    print(f"training={training}: rel errors", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-6
    if training:
        print("sum of dx per channel:      ", dx.sum(axis=(0, 2, 3)).round(8))
        print("sum of dx * x_hat per channel:", (dx * cache.xhat).sum(axis=(0, 2, 3)).round(8))
        r = cache.inv_std                                            # 1 / sqrt(var + eps)
        assert np.all(np.abs(dx.sum(axis=(0, 2, 3))) < 1e-9 * np.abs(dx).sum(axis=(0, 2, 3)))
        # with eps, sum(x_hat^2) = M var / (var + eps), a little under M:
        assert np.allclose((dx * cache.xhat).sum(axis=(0, 2, 3)),
                           gamma * r * dgamma * 1e-5 * r ** 2)
"""),
]
