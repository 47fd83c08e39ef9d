"""2-D convolution (cross-correlation, as in every deep learning library), forward and backward.

Dimension letters: N batch, C input channels, F output channels (filters), H x W input size,
KH x KW kernel size, Ho x Wo output size, K = C * KH * KW (one column of im2col).

    y[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, i*s + u*d, j*s + v*d]

with s the stride, d the dilation and xpad the input zero-padded by p on each side. Output size:

    Ho = (H + 2p - d (KH - 1) - 1) // s + 1        (the same for Wo)

Fast version (conv2d_forward / conv2d_backward): im2col + one matrix product.
  * im2col is a strided VIEW of the padded input with shape (N, C, KH, KW, Ho, Wo): no Python
    loop, no index arrays. Reshaping it to (N, K, Ho*Wo) copies it once into a contiguous
    buffer, laid out so that the product w (F, K) @ cols (N, K, Ho*Wo) -> (N, F, Ho*Wo) is
    already NCHW: no transpose of the (large) output is needed. The inner axis is Wo, so for
    stride 1 the copy reads whole rows of the input.
  * backward: dw = sum_n dy[n] (F, Ho*Wo) @ cols[n]^T (one product per image),
    dcols = w^T (K, F) @ dy[n], then col2im adds dcols back onto the padded input with KH*KW
    strided slice-adds (one per kernel tap); no np.add.at (scatter-add is slow on both devices).
  * a 1x1 convolution with stride 1 and no padding needs no im2col: x itself, viewed as
    (N, C, H*W), is the column matrix.
Naive version (conv2d_forward_naive): loops over output positions, for reading and testing.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Ho = (H + 2p - d (k - 1) - 1) // s + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class ConvCache(NamedTuple):
    x_shape: tuple          # (N, C, H, W)
    cols: object            # (N, K, Ho*Wo) im2col of the padded input (x itself for 1x1 convs)
    w: object               # (F, C, KH, KW)
    stride: int
    padding: int
    dilation: int
    out_hw: tuple           # (Ho, Wo)


def _check(x, w, b, stride, padding, dilation):
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d: x must be (N, C, H, W) and w (F, C, KH, KW), got x {x.shape}, "
                         f"w {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels but w expects {w.shape[1]} "
                         f"(w is (F, C, KH, KW) = {w.shape}); check the layer's in_channels")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"conv2d: b must have shape ({w.shape[0]},), got {b.shape}")
    if stride < 1 or dilation < 1 or padding < 0:
        raise ValueError(f"conv2d: need stride >= 1, dilation >= 1, padding >= 0; got "
                         f"stride={stride}, dilation={dilation}, padding={padding}")
    ho = conv_output_size(x.shape[2], w.shape[2], stride, padding, dilation)
    wo = conv_output_size(x.shape[3], w.shape[3], stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: input {x.shape[2]}x{x.shape[3]} is too small for kernel "
                         f"{w.shape[2]}x{w.shape[3]} with padding {padding}, dilation {dilation}; "
                         "use a larger input or more padding")
    return ho, wo


def _pad(x, padding):
    """Zero-pad the two spatial axes of (N, C, H, W) by `padding` on each side."""
    xp = get_array_module(x)
    if padding == 0:
        return x
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    out[:, :, padding:padding + h, padding:padding + w] = x
    return out


def im2col(x, kh, kw, stride=1, padding=0, dilation=1):
    """Columns of every receptive field, as a contiguous (N, C*KH*KW, Ho*Wo) array.

    cols[n, (c*KH + u)*KW + v, i*Wo + j] = xpad[n, c, i*s + u*d, j*s + v*d]
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, padding, dilation)
    wo = conv_output_size(w, kw, stride, padding, dilation)
    xpad = xp.ascontiguousarray(_pad(x, padding))
    sn, sc, sh, sw = xpad.strides
    windows = xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, c, kh, kw, ho, wo),
        strides=(sn, sc, sh * dilation, sw * dilation, sh * stride, sw * stride))
    return windows.reshape(n, c * kh * kw, ho * wo)          # (N, K, Ho*Wo), one copy


def col2im(dcols, x_shape, kh, kw, stride=1, padding=0, dilation=1):
    """Adjoint of im2col: add each column entry back where it was read from.

    dcols: (N, C*KH*KW, Ho*Wo) -> dx: (N, C, H, W). One strided slice-add per kernel tap
    (KH*KW of them), each moving N*C*Ho*Wo numbers; overlapping windows accumulate correctly
    because taps are added one after another.
    """
    xp = get_array_module(dcols)
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, padding, dilation)
    wo = conv_output_size(w, kw, stride, padding, dilation)
    dcols = dcols.reshape(n, c, kh, kw, ho, wo)                       # (N, C, KH, KW, Ho, Wo)
    dxpad = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=dcols.dtype)
    for u in range(kh):
        for v in range(kw):
            r0, c0 = u * dilation, v * dilation
            dxpad[:, :, r0:r0 + stride * (ho - 1) + 1:stride,
                  c0:c0 + stride * (wo - 1) + 1:stride] += dcols[:, :, u, v]
    if padding == 0:
        return dxpad
    return dxpad[:, :, padding:padding + h, padding:padding + w]


def _is_pointwise(w, stride, padding):
    return w.shape[2] == 1 and w.shape[3] == 1 and stride == 1 and padding == 0


def conv2d_forward(x, w, b, stride=1, padding=0, dilation=1):
    """Convolution via im2col and one batched matrix product.

    Inputs:
        x: (N, C, H, W)
        w: (F, C, KH, KW)
        b: (F,) or None
        stride, padding, dilation: ints, the same for both spatial axes
    Returns:
        y: (N, F, Ho, Wo), Ho = (H + 2p - d (KH - 1) - 1) // s + 1, dtype of x
        cache: ConvCache
    """
    xp = get_array_module(x)
    ho, wo = _check(x, w, b, stride, padding, dilation)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    if _is_pointwise(w, stride, padding):
        cols = xp.ascontiguousarray(x).reshape(n, c, h * wd)          # (N, K=C, Ho*Wo)
    else:
        cols = im2col(x, kh, kw, stride, padding, dilation)           # (N, K, Ho*Wo)
    w_mat = w.reshape(f, -1)                                          # (F, K)
    y = xp.matmul(w_mat, cols)                                        # (N, F, Ho*Wo)
    if b is not None:
        y += b.reshape(1, f, 1)
    y = y.reshape(n, f, ho, wo)                                       # (N, F, Ho, Wo)
    return y, ConvCache(x.shape, cols, w, stride, padding, dilation, (ho, wo))


def conv2d_backward(dy, cache: ConvCache, need_dx=True):
    """Gradients of conv2d_forward.

    Inputs:
        dy: (N, F, Ho, Wo) upstream gradient
        cache: ConvCache from conv2d_forward
        need_dx: False skips dx (None is returned), e.g. for a network's first layer in
                 training, where nobody uses the gradient of the image
    Returns:
        dx: (N, C, H, W) or None; dw: (F, C, KH, KW); db: (F,)
    """
    xp = get_array_module(dy)
    n, c, h, wd = cache.x_shape
    w, cols = cache.w, cache.cols
    f, _, kh, kw = w.shape
    ho, wo = cache.out_hw
    dy_mat = xp.ascontiguousarray(dy).reshape(n, f, ho * wo)          # (N, F, Ho*Wo)
    # y = w_mat @ cols + b
    db = dy_mat.sum(axis=(0, 2))                                      # (F,)
    # dw = sum_n dy[n] @ cols[n]^T, computed transposed as cols[n] @ dy[n]^T (K, F): OpenBLAS
    # is several times faster in this orientation when Ho*Wo is large (conv1_2: 5x measured).
    # A loop over the batch (not over pixels) keeps the temporary at (K, F) instead of the
    # (N, K, F) a batched matmul would build first.
    dw_t = cols[0] @ dy_mat[0].T                                      # (K, F)
    for i in range(1, n):
        dw_t += cols[i] @ dy_mat[i].T
    dw = dw_t.T                                                       # (F, K)
    if not need_dx:
        return None, xp.ascontiguousarray(dw).reshape(w.shape), db
    dcols = xp.matmul(w.reshape(f, -1).T, dy_mat)                     # (N, K, Ho*Wo)
    # cols = im2col(x)
    if _is_pointwise(w, cache.stride, cache.padding):
        dx = dcols.reshape(n, c, h, wd)                               # (N, C, H, W)
    else:
        dx = col2im(dcols, cache.x_shape, kh, kw, cache.stride, cache.padding, cache.dilation)
    return dx, xp.ascontiguousarray(dw).reshape(w.shape), db


class NaiveConvCache(NamedTuple):
    x: object
    w: object
    b: object
    stride: int
    padding: int
    dilation: int


def conv2d_forward_naive(x, w, b, stride=1, padding=0, dilation=1):
    """Reference convolution: a loop over output positions, one tensordot each (slow).

    Same inputs and outputs as conv2d_forward; the cache is a NaiveConvCache for
    conv2d_backward_naive.
    """
    xp = get_array_module(x)
    ho, wo = _check(x, w, b, stride, padding, dilation)
    n = x.shape[0]
    f, _, kh, kw = w.shape
    xpad = _pad(x, padding)
    y = xp.zeros((n, f, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            r, q = i * stride, j * stride
            patch = xpad[:, :, r:r + dilation * (kh - 1) + 1:dilation,
                         q:q + dilation * (kw - 1) + 1:dilation]      # (N, C, KH, KW)
            y[:, :, i, j] = xp.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    if b is not None:
        y += b.reshape(1, f, 1, 1)
    return y, NaiveConvCache(x, w, b, stride, padding, dilation)


def conv2d_backward_naive(dy, cache: NaiveConvCache):
    """Reference gradients by the same loop as conv2d_forward_naive."""
    xp = get_array_module(dy)
    x, w, b, stride, padding, dilation = cache
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    ho, wo = dy.shape[2:]
    xpad = _pad(x, padding)
    dxpad = xp.zeros_like(xpad)
    dw = xp.zeros_like(w)
    for i in range(ho):
        for j in range(wo):
            r, q = i * stride, j * stride
            rows = slice(r, r + dilation * (kh - 1) + 1, dilation)
            cols = slice(q, q + dilation * (kw - 1) + 1, dilation)
            # y[:, :, i, j] = sum_{c,u,v} patch * w
            dw += xp.tensordot(dy[:, :, i, j], xpad[:, :, rows, cols], axes=([0], [0]))
            dxpad[:, :, rows, cols] += xp.tensordot(dy[:, :, i, j], w, axes=([1], [0]))
    db = dy.sum(axis=(0, 2, 3))
    dx = dxpad[:, :, padding:padding + h, padding:padding + wd]
    return dx, dw, db
