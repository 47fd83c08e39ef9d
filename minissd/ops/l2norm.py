"""L2Norm (ParseNet, used by SSD on conv4_3): per position, normalise over channels, then scale.

    s[n, h, w]    = sqrt(sum_c x[n, c, h, w]^2)
    y[n, c, h, w] = scale[c] * x[n, c, h, w] / (s[n, h, w] + eps)

Shapes: x, y (N, C, H, W); scale (C,). eps = 1e-10 is added to the norm (not under the root),
as in SSD's Caffe layer and ssd.pytorch.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


class L2NormCache(NamedTuple):
    x: object           # (N, C, H, W) input
    xhat: object        # (N, C, H, W) x / norm
    s: object           # (N, 1, H, W) sqrt(sum_c x^2)
    norm: object        # (N, 1, H, W) s + eps
    scale: object       # (C,)


def l2norm_forward(x, scale, eps=1e-10):
    """y = scale[c] * x / (||x||_2 over channels + eps).

    Inputs:  x: (N, C, H, W); scale: (C,); eps: added to the norm
    Returns: y: (N, C, H, W), dtype of x; cache: L2NormCache
    """
    xp = get_array_module(x)
    if x.ndim != 4 or tuple(scale.shape) != (x.shape[1],):
        raise ValueError(f"l2norm_forward: x must be (N, C, H, W) and scale (C,), got x "
                         f"{x.shape}, scale {scale.shape}")
    s = xp.sqrt((x * x).sum(axis=1, keepdims=True))                 # (N, 1, H, W)
    norm = s + x.dtype.type(eps)                                     # (N, 1, H, W)
    xhat = x / norm                                                  # (N, C, H, W)
    y = scale.reshape(1, -1, 1, 1) * xhat                            # (N, C, H, W)
    return y, L2NormCache(x, xhat, s, norm, scale)


def l2norm_backward(dy, cache: L2NormCache):
    """Gradients of l2norm_forward.

    Inputs:  dy: (N, C, H, W); cache: L2NormCache
    Returns: dx: (N, C, H, W); dscale: (C,)
    """
    xp = get_array_module(dy)
    x, xhat, s, norm, scale = cache
    # y = scale * xhat
    dscale = (dy * xhat).sum(axis=(0, 2, 3))                         # (C,)
    dxhat = dy * scale.reshape(1, -1, 1, 1)                          # (N, C, H, W)
    # xhat = x / norm,  norm = s + eps,  s = sqrt(sum_c x^2),  ds/dx = x / s
    # dx = dxhat / norm - x * sum_c(dxhat * x) / (norm^2 * s)
    # Edge case: at an all-zero position s = 0 and ds/dx = x / s is 0/0. There x = 0, so the
    # second term is 0 * (bounded) and we take it as exactly 0 (dividing by 1 instead of s);
    # the first term is dxhat / eps: large but finite. No NaN reaches the weights.
    s_safe = xp.where(s > 0, s, xp.ones((), dtype=s.dtype))         # (N, 1, H, W)
    proj = (dxhat * x).sum(axis=1, keepdims=True)                    # (N, 1, H, W)
    dx = dxhat / norm - x * (proj / (norm * norm * s_safe))          # (N, C, H, W)
    return dx, dscale
