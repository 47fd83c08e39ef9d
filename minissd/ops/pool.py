"""2-D max pooling with PyTorch's semantics (padding with -inf, ceil mode), forward and backward.

Dimension letters: N batch, C channels, H x W input, Ho x Wo output, k kernel, s stride, p padding.

Output size (PyTorch's formula):

    Ho = floor((H + 2p - k) / s) + 1               ceil_mode=False
    Ho = ceil((H + 2p - k) / s) + 1                ceil_mode=True, and then
         Ho -= 1 if (Ho - 1) * s >= H + p          (the last window must start inside the input
                                                   or the left padding, never in the right pad)

SSD300's third pool uses ceil mode: 75 -> ceil(73 / 2) + 1 = 38 (floor mode would give 37).
Padding counts as -inf, so a padded cell never wins the max. In ceil mode the last window may
hang over the right edge; the missing cells are -inf too.

Backward: each output's gradient goes to the FIRST maximum of its window (row-major order
inside the window), as PyTorch's CPU kernel does; ties never split the gradient.

How, in two steps:
  1. a VIEW of the windows, W (N, C, Ho, k, Wo, k) with W[n, c, i, u, j, v] = xpad[n, c,
     i*s + u, j*s + v]. Fast path: kernel == stride, no padding, sizes divisible (the usual
     2x2/2 pool): W is a reshape of x itself, no padding copy. Otherwise W is a strided window
     view of the input padded with -inf.
  2. forward walks the k*k taps W[:, :, :, u, :, v] (each (N, C, Ho, Wo)) in row-major order,
     keeping the running max and the index u*k + v of the tap that holds it; a later tap wins
     only when STRICTLY larger, so ties keep the first maximum. Backward adds dy back through
     the same taps of a window view of dx, masked by "this tap won" (no scatter-add).
Every step is an element-wise pass over output-sized arrays: no window copy, no argmax over a
short last axis, no data-dependent branch (masks multiply: np.where on a random mask is
several times slower on the CPU).
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


def pool_output_size(size, kernel, stride, padding=0, ceil_mode=False):
    """PyTorch's max-pool output size (see the module docstring)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class PoolCache(NamedTuple):
    x_shape: tuple          # (N, C, H, W)
    argmax: object          # (N, C, Ho, Wo) uint8/int index of the first max, u * k + v
    kernel: int
    stride: int
    padding: int
    padded_hw: tuple        # (Hp, Wp) size of the -inf padded input (incl. ceil-mode overhang)


def _check(x, kernel, stride, padding):
    if x.ndim != 4:
        raise ValueError(f"maxpool2d: x must be (N, C, H, W), got shape {x.shape}")
    if kernel < 1 or stride < 1:
        raise ValueError(f"maxpool2d: kernel and stride must be >= 1, got {kernel}, {stride}")
    if 2 * padding > kernel:
        raise ValueError(f"maxpool2d: padding {padding} must be at most half the kernel "
                         f"{kernel} (PyTorch's rule); lower the padding")


def _window_view(a, kernel, stride, out_hw, padded_hw, padding=0, fill=None):
    """W (N, C, Ho, k, Wo, k), W[n, c, i, u, j, v] = apad[n, c, i*s + u, j*s + v].

    apad is `a` padded to padded_hw with `fill`, or `a` itself when it already has that size
    (then the kernel == stride case is a plain reshape, and writing through a tap
    W[..., u, :, v] writes into `a`).
    """
    xp = get_array_module(a)
    n, c, h, w = a.shape
    (ho, wo), (hp, wp), k, s = out_hw, padded_hw, kernel, stride
    if (hp, wp) == (h, w) and k == s and h == ho * k and w == wo * k:
        return a.reshape(n, c, ho, k, wo, k)                        # reshape fast path
    apad = a
    if (hp, wp) != (h, w):
        apad = xp.full((n, c, hp, wp), fill, dtype=a.dtype)
        apad[:, :, padding:padding + h, padding:padding + w] = a
    sn, sc, sh, sw = apad.strides
    view = xp.lib.stride_tricks.as_strided(
        apad, shape=(n, c, ho, k, wo, k), strides=(sn, sc, sh * s, sh, sw * s, sw))
    return view


def _padded_hw(h, w, kernel, stride, padding, ho, wo):
    """(Hp, Wp): the input plus padding, with room for the ceil-mode overhang."""
    return (max(h + 2 * padding, (ho - 1) * stride + kernel),
            max(w + 2 * padding, (wo - 1) * stride + kernel))


def maxpool2d_forward(x, kernel, stride, padding=0, ceil_mode=False):
    """Max over k x k windows.

    Inputs:
        x: (N, C, H, W)
        kernel, stride, padding: ints (square windows); padding counts as -inf
        ceil_mode: round the output size up (PyTorch's rule, see the module docstring)
    Returns:
        y: (N, C, Ho, Wo), dtype of x
        cache: PoolCache
    """
    xp = get_array_module(x)
    _check(x, kernel, stride, padding)
    n, c, h, w = x.shape
    k, s = kernel, stride
    ho = pool_output_size(h, k, s, padding, ceil_mode)
    wo = pool_output_size(w, k, s, padding, ceil_mode)
    padded_hw = _padded_hw(h, w, k, s, padding, ho, wo)
    win = _window_view(x, k, s, (ho, wo), padded_hw, padding, -xp.inf)  # (N, C, Ho, k, Wo, k)
    index_type = xp.uint8 if k * k <= 256 else xp.int32
    y = win[:, :, :, 0, :, 0].copy()                                # running max (N, C, Ho, Wo)
    argmax = xp.zeros(y.shape, dtype=index_type)                    # its tap, u*k + v
    for t in range(1, k * k):
        tap = win[:, :, :, t // k, :, t % k]                        # (N, C, Ho, Wo) view
        # argmax = t where tap > y (strictly: a tie keeps the earlier tap), else unchanged
        wins = tap > y
        argmax += wins.astype(index_type) * (t - argmax)            # no branch on the mask
        xp.maximum(y, tap, out=y)
    return y, PoolCache(x.shape, argmax, k, s, padding, padded_hw)


def maxpool2d_backward(dy, cache: PoolCache):
    """Gradient of maxpool2d_forward: dy goes to the first maximum of each window.

    Inputs:  dy: (N, C, Ho, Wo); cache: PoolCache
    Returns: dx: (N, C, H, W)
    """
    xp = get_array_module(dy)
    n, c, h, w = cache.x_shape
    k, s, p = cache.kernel, cache.stride, cache.padding
    ho, wo = dy.shape[2:]
    hp, wp = cache.padded_hw
    dx = xp.zeros((n, c, hp, wp), dtype=dy.dtype)                   # the padded input's size
    dwin = _window_view(dx, k, s, (ho, wo), (hp, wp))               # (N, C, Ho, k, Wo, k) view
    for t in range(k * k):
        # y = tap t where argmax == t: that tap receives dy there, nothing elsewhere
        dwin[:, :, :, t // k, :, t % k] += dy * (cache.argmax == t)
    return dx[:, :, p:p + h, p:p + w]


class NaivePoolCache(NamedTuple):
    x: object
    kernel: int
    stride: int
    padding: int


def maxpool2d_forward_naive(x, kernel, stride, padding=0, ceil_mode=False):
    """Reference max pooling: a loop over output positions (slow). Same signature as the fast
    one; the cache is a NaivePoolCache for maxpool2d_backward_naive."""
    xp = get_array_module(x)
    _check(x, kernel, stride, padding)
    n, c, h, w = x.shape
    ho = pool_output_size(h, kernel, stride, padding, ceil_mode)
    wo = pool_output_size(w, kernel, stride, padding, ceil_mode)
    y = xp.empty((n, c, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * stride - padding, j * stride - padding
            r1, c1 = min(r0 + kernel, h), min(c0 + kernel, w)
            r0, c0 = max(r0, 0), max(c0, 0)
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].max(axis=(2, 3))
    return y, NaivePoolCache(x, kernel, stride, padding)


def maxpool2d_backward_naive(dy, cache: NaivePoolCache):
    """Reference gradient: per output position, dy goes to the first max of its window."""
    xp = get_array_module(dy)
    x, kernel, stride, padding = cache
    n, c, h, w = x.shape
    dx = xp.zeros(x.shape, dtype=dy.dtype)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            r0, c0 = i * stride - padding, j * stride - padding
            r1, c1 = min(r0 + kernel, h), min(c0 + kernel, w)
            r0, c0 = max(r0, 0), max(c0, 0)
            win = x[:, :, r0:r1, c0:c1].reshape(n, c, -1)               # (N, C, window)
            first = win.argmax(axis=-1)                                 # (N, C)
            rows, cols = first // (c1 - c0) + r0, first % (c1 - c0) + c0
            for a in range(n):
                for b in range(c):
                    dx[a, b, rows[a, b], cols[a, b]] += dy[a, b, i, j]
    return dx
