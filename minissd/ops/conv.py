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

Memory (what the cache keeps for backward; `keep=`, or set_conv_memory for every conv):
  * keep="input" (the default): the cache keeps x, and backward rebuilds the columns from it.
    A 3x3 conv's columns are 9x larger than its input (K = 9C numbers per output position
    against C per input position), and a training step holds every layer's cache at the end
    of forward: SSD300 at batch 32 holds 20.4 GiB of columns, against 2.4 GiB of inputs.
    The price is a second im2col per conv in backward (a copy, no arithmetic); the values are
    the same copies, so the gradients are bit-identical to keep="cols".
  * keep="cols": the cache keeps the columns (no second im2col; the memory of every column
    matrix until backward).
  * the workspace: the columns that are built only for a moment (forward with keep="input",
    the rebuilt ones and dcols in backward) are made for a chunk of images at a time, as many
    as fit in `workspace_bytes` (at least one). Every image's matrix product is the same
    product whatever the chunk, so chunking changes no bit either; it bounds the transient
    memory (SSD300's conv1_2: 207 MB of columns per image, 6.6 GB at batch 32).
Naive version (conv2d_forward_naive): loops over output positions, for reading and testing.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


KEEP_MODES = ("input", "cols")
DEFAULT_WORKSPACE_BYTES = 256 * 2**20      # columns built for a moment: at most this per array
_memory = {"keep": "input", "workspace_bytes": DEFAULT_WORKSPACE_BYTES}


def set_conv_memory(keep=None, workspace_bytes=None):
    """Set what every conv keeps for backward ("input" or "cols", see the module docstring)
    and the size of one transient column matrix (bytes, >= 1; a chunk holds at least one
    image). None leaves a setting as it is. Returns the previous settings as a dict, which
    set_conv_memory(**old) puts back."""
    old = dict(_memory)
    if keep is not None:
        if keep not in KEEP_MODES:
            raise ValueError(f"conv keep must be one of {KEEP_MODES}, got {keep!r}")
        _memory["keep"] = keep
    if workspace_bytes is not None:
        if int(workspace_bytes) < 1:
            raise ValueError(f"conv workspace_bytes must be >= 1, got {workspace_bytes}")
        _memory["workspace_bytes"] = int(workspace_bytes)
    return old


def conv_memory() -> dict:
    """The current settings: {"keep": "input" | "cols", "workspace_bytes": int}."""
    return dict(_memory)


def chunk_images(n, per_image_bytes, workspace_bytes=None):
    """Images per chunk: as many as fit in the workspace, at least 1, at most n."""
    budget = _memory["workspace_bytes"] if workspace_bytes is None else workspace_bytes
    return max(1, min(n, budget // max(per_image_bytes, 1)))


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Ho = (H + 2p - d (k - 1) - 1) // s + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class ConvCache(NamedTuple):
    x_shape: tuple          # (N, C, H, W)
    cols: object            # (N, K, Ho*Wo) im2col of the padded input (x itself for 1x1
                            # convs); None with keep="input"
    x: object               # (N, C, H, W) the input, with keep="input" (else None)
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


def _col2im_add(dcols, dxpad, kh, kw, stride, dilation):
    """col2im, the adjoint of im2col: add each column entry of dcols (N, C*KH*KW, Ho*Wo) back
    where it was read from, into the zero-padded gradient dxpad (N, C, Hp, Wp), in place.

    One strided slice-add per kernel tap (KH*KW of them), each moving N*C*Ho*Wo numbers;
    overlapping windows accumulate correctly because taps are added one after another."""
    n, c, hp, wp = dxpad.shape
    ho = (hp - dilation * (kh - 1) - 1) // stride + 1
    wo = (wp - dilation * (kw - 1) - 1) // stride + 1
    dcols = dcols.reshape(n, c, kh, kw, ho, wo)                       # (N, C, KH, KW, Ho, Wo)
    for u in range(kh):
        for v in range(kw):
            r0, c0 = u * dilation, v * dilation
            dxpad[:, :, r0:r0 + stride * (ho - 1) + 1:stride,
                  c0:c0 + stride * (wo - 1) + 1:stride] += dcols[:, :, u, v]


def _is_pointwise(w, stride, padding):
    return w.shape[2] == 1 and w.shape[3] == 1 and stride == 1 and padding == 0


def _columns(x, w, stride, padding, dilation):
    """The column matrix (N, K, Ho*Wo) of x for the kernel of w: x itself, viewed, for a
    pointwise conv; else im2col (a copy)."""
    xp = get_array_module(x)
    n, c, h, wd = x.shape
    if _is_pointwise(w, stride, padding):
        return xp.ascontiguousarray(x).reshape(n, c, h * wd)           # (N, K=C, Ho*Wo)
    return im2col(x, w.shape[2], w.shape[3], stride, padding, dilation)   # (N, K, Ho*Wo)


def _chunks(n, per_image_bytes):
    """[(lo, hi)]: the batch in chunks whose column matrix fits the workspace."""
    step = chunk_images(n, per_image_bytes)
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def conv2d_forward(x, w, b, stride=1, padding=0, dilation=1, keep=None):
    """Convolution via im2col and one batched matrix product.

    Inputs:
        x: (N, C, H, W)
        w: (F, C, KH, KW)
        b: (F,) or None
        stride, padding, dilation: ints, the same for both spatial axes
        keep: "input" or "cols", what the cache keeps for backward (module docstring);
              None: the setting of set_conv_memory (default "input")
    Returns:
        y: (N, F, Ho, Wo), Ho = (H + 2p - d (KH - 1) - 1) // s + 1, dtype of x
        cache: ConvCache
    """
    xp = get_array_module(x)
    ho, wo = _check(x, w, b, stride, padding, dilation)
    keep = _memory["keep"] if keep is None else keep
    if keep not in KEEP_MODES:
        raise ValueError(f"conv2d_forward: keep must be one of {KEEP_MODES}, got {keep!r}")
    n = x.shape[0]
    f = w.shape[0]
    w_mat = w.reshape(f, -1)                                          # (F, K)
    if keep == "cols" or _is_pointwise(w, stride, padding):
        cols = _columns(x, w, stride, padding, dilation)              # (N, K, Ho*Wo)
        y = xp.matmul(w_mat, cols)                                    # (N, F, Ho*Wo)
    else:
        # keep="input": the columns of a chunk of images at a time, dropped after its product
        cols = None
        y = xp.empty((n, f, ho * wo), dtype=x.dtype)                  # (N, F, Ho*Wo)
        for lo, hi in _chunks(n, w_mat.shape[1] * ho * wo * x.dtype.itemsize):
            xp.matmul(w_mat, _columns(x[lo:hi], w, stride, padding, dilation), out=y[lo:hi])
    if b is not None:
        y += b.reshape(1, f, 1)
    y = y.reshape(n, f, ho, wo)                                       # (N, F, Ho, Wo)
    kept_x = x if keep == "input" and cols is None else None
    return y, ConvCache(x.shape, cols, kept_x, w, stride, padding, dilation, (ho, wo))


def conv2d_backward(dy, cache: ConvCache, need_dx=True):
    """Gradients of conv2d_forward.

    Inputs:
        dy: (N, F, Ho, Wo) upstream gradient
        cache: ConvCache from conv2d_forward
        need_dx: False skips dx (None is returned), e.g. for a network's first layer in
                 training, where nobody uses the gradient of the image
    Returns:
        dx: (N, C, H, W) or None; dw: (F, C, KH, KW); db: (F,)

    The batch goes through in chunks of images (the workspace, module docstring): per chunk,
    its columns (kept, or rebuilt from the kept input), its share of dw, and its dcols, which
    col2im adds into dx at once.
    """
    xp = get_array_module(dy)
    n, c, h, wd = cache.x_shape
    w = cache.w
    f, _, kh, kw = w.shape
    ho, wo = cache.out_hw
    s, p, d = cache.stride, cache.padding, cache.dilation
    pointwise = _is_pointwise(w, s, p)
    dy_mat = xp.ascontiguousarray(dy).reshape(n, f, ho * wo)          # (N, F, Ho*Wo)
    # y = w_mat @ cols + b
    db = dy_mat.sum(axis=(0, 2))                                      # (F,)
    w_t = w.reshape(f, -1).T                                          # (K, F)
    if need_dx:
        # dx of a pointwise conv is dcols itself; otherwise col2im adds into the padded dx
        dx_buf = (xp.empty((n, c, h * wd), dtype=dy.dtype) if pointwise else
                  xp.zeros((n, c, h + 2 * p, wd + 2 * p), dtype=dy.dtype))
    dw_t = None
    for lo, hi in _chunks(n, w_t.shape[0] * ho * wo * dy.dtype.itemsize):
        if cache.cols is not None:
            cols = cache.cols[lo:hi]                                  # (n_c, K, Ho*Wo)
        else:
            # cols = im2col(x), rebuilt from the kept input: the same copies as in forward
            cols = _columns(cache.x[lo:hi], w, s, p, d)               # (n_c, K, Ho*Wo)
        # dw = sum_n dy[n] @ cols[n]^T, computed transposed as cols[n] @ dy[n]^T (K, F):
        # OpenBLAS is several times faster in this orientation when Ho*Wo is large (conv1_2:
        # 5x measured). A loop over the batch (not over pixels) keeps the temporary at (K, F)
        # instead of the (N, K, F) a batched matmul would build first.
        for i in range(hi - lo):
            prod = cols[i] @ dy_mat[lo + i].T                         # (K, F)
            if dw_t is None:
                dw_t = prod
            else:
                dw_t += prod
        del cols
        if need_dx:
            # y = w_mat @ cols: dcols = w_mat^T @ dy, (n_c, K, Ho*Wo)
            if pointwise:                                             # cols = x: dx = dcols
                xp.matmul(w_t, dy_mat[lo:hi], out=dx_buf[lo:hi])
            else:                                                     # cols = im2col(x)
                _col2im_add(xp.matmul(w_t, dy_mat[lo:hi]), dx_buf[lo:hi], kh, kw, s, d)
    dw = xp.ascontiguousarray(dw_t.T).reshape(w.shape)                # (F, C, KH, KW)
    if not need_dx:
        return None, dw, db
    if pointwise:
        return dx_buf.reshape(n, c, h, wd), dw, db                    # (N, C, H, W)
    return dx_buf[:, :, p:p + h, p:p + wd], dw, db                   # (N, C, H, W)


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
