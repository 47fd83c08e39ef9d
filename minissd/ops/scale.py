"""Per-channel scale and shift (Caffe's Scale layer, axis 1), forward and backward.

Dimension letters: N batch, C channels, H x W spatial.

    y[n, c, h, w] = x[n, c, h, w] * w[c] + b[c]        (b only when the layer has a bias)

Caffe's BatchNorm layer only normalises; the Scale layer right after it holds the learned
gamma (its first blob) and beta (its second, with bias_term true). The pair is batch norm with
an affine part written as two layers (minissd.ops.batchnorm with gamma=None, then this op).
"""
from __future__ import annotations

from typing import NamedTuple


class ScaleCache(NamedTuple):
    x: object           # (N, C, H, W) input
    w: object           # (C,) scale
    has_bias: bool      # whether a shift b was added (its gradient is then returned)


def scale_forward(x, w, b=None):
    """y = x * w[c] + b[c] per channel.

    Inputs:  x: (N, C, H, W); w: (C,); b: (C,) or None (no shift)
    Returns: y: (N, C, H, W), dtype of x; cache: ScaleCache
    """
    if x.ndim != 4 or tuple(w.shape) != (x.shape[1],) or (
            b is not None and tuple(b.shape) != (x.shape[1],)):
        raise ValueError(f"scale_forward: x must be (N, C, H, W) and w, b (C,), got x "
                         f"{x.shape}, w {w.shape}, b {None if b is None else b.shape}")
    y = x * w[None, :, None, None]                                   # (N, C, H, W)
    if b is not None:
        y += b[None, :, None, None]
    return y, ScaleCache(x, w, b is not None)


def scale_backward(dy, cache: ScaleCache):
    """Gradients of scale_forward.

    Inputs:  dy: (N, C, H, W); cache: ScaleCache
    Returns: dx: (N, C, H, W); dw: (C,); db: (C,) or None when there was no shift
    """
    x, w, has_bias = cache
    # y = x * w + b
    dx = dy * w[None, :, None, None]                                 # (N, C, H, W)
    dw = (dy * x).sum(axis=(0, 2, 3))                                # (C,)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None                # (C,)
    return dx, dw, db
