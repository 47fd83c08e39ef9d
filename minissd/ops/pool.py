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

Fast paths:
  * kernel == stride, no padding, sizes divisible (the usual 2x2/2 pool): the windows are a
    reshape (N, C, Ho, k, Wo, k) of the input itself; no padding copy.
  * otherwise: a strided window view (N, C, Ho, Wo, k, k) of the -inf padded input.
Both then take one argmax over the k*k window (argmax returns the first maximum) and the
backward adds dy back with k*k strided slice-adds (no scatter-add).
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


def _windows(x, kernel, stride, padding, ho, wo):
    """(N, C, Ho, Wo, k*k) copy of every pooling window, and the padded size (Hp, Wp)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    k = kernel
    if k == stride and padding == 0 and h == ho * k and w == wo * k:
        win = x.reshape(n, c, ho, k, wo, k).transpose(0, 1, 2, 4, 3, 5)   # (N, C, Ho, Wo, k, k)
        return win.reshape(n, c, ho, wo, k * k), (h, w)                   # (N, C, Ho, Wo, k*k)
    hp = max(h + 2 * padding, (ho - 1) * stride + k)       # room for the ceil-mode overhang
    wp = max(w + 2 * padding, (wo - 1) * stride + k)
    xpad = xp.full((n, c, hp, wp), -xp.inf, dtype=x.dtype)
    xpad[:, :, padding:padding + h, padding:padding + w] = x
    sn, sc, sh, sw = xpad.strides
    win = xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, c, ho, wo, k, k),
        strides=(sn, sc, sh * stride, sw * stride, sh, sw))               # (N, C, Ho, Wo, k, k)
    return win.reshape(n, c, ho, wo, k * k), (hp, wp)                     # (N, C, Ho, Wo, k*k)


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
    ho = pool_output_size(h, kernel, stride, padding, ceil_mode)
    wo = pool_output_size(w, kernel, stride, padding, ceil_mode)
    win, padded_hw = _windows(x, kernel, stride, padding, ho, wo)      # (N, C, Ho, Wo, k*k)
    argmax = win.argmax(axis=-1)                                        # (N, C, Ho, Wo) first max
    y = xp.take_along_axis(win, argmax[..., None], axis=-1)[..., 0]     # (N, C, Ho, Wo)
    if kernel * kernel <= 256:
        argmax = argmax.astype(xp.uint8)                                # small cache
    return y, PoolCache(x.shape, argmax, kernel, stride, padding, padded_hw)


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
    zero = xp.zeros((), dtype=dy.dtype)
    dxpad = xp.zeros((n, c, hp, wp), dtype=dy.dtype)
    for u in range(k):
        for v in range(k):
            # y = win[..., argmax]: the tap u*k+v receives dy where it was the max
            dxpad[:, :, u:u + s * (ho - 1) + 1:s,
                  v:v + s * (wo - 1) + 1:s] += xp.where(cache.argmax == u * k + v, dy, zero)
    return dxpad[:, :, p:p + h, p:p + w]


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
