"""L2Norm (ParseNet, used by SSD on conv4_3): per position, normalise over channels, then scale.

Two ways of adding eps, both used by SSD implementations:

    ssd.pytorch (the default, minissd's VGG configs):
        s[n, h, w]    = sqrt(sum_c x[n, c, h, w]^2),       norm = s + eps
    Caffe SSD's Normalize layer (eps_inside=True; minissd's body configs, eps 1e-10 there):
        s[n, h, w]    = sqrt(sum_c x[n, c, h, w]^2 + eps), norm = s
    then in both
        y[n, c, h, w] = scale[c] * x[n, c, h, w] / norm[n, h, w]

Shapes: x, y (N, C, H, W); scale (C,), or (1,) for one scale shared by every channel
(Normalize's channel_shared: true). Normalize's across_spatial: false is this op (one norm per
position); across_spatial: true (one norm per image) is not implemented.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


class L2NormCache(NamedTuple):
    x: object           # (N, C, H, W) input
    xhat: object        # (N, C, H, W) x / norm
    s: object           # (N, 1, H, W) the root: sqrt(sum_c x^2) (+ eps under it if eps_inside)
    norm: object        # (N, 1, H, W) s + eps, or s itself if eps_inside
    scale: object       # (C,) or (1,)


def l2norm_forward(x, scale, eps=1e-10, eps_inside=False):
    """y = scale[c] * x / (||x||_2 over channels + eps), or, with eps_inside,
    y = scale[c] * x / sqrt(||x||_2^2 + eps).

    Inputs:  x: (N, C, H, W); scale: (C,) or (1,) (shared); eps: added to the norm, or under
             the root with eps_inside
    Returns: y: (N, C, H, W), dtype of x; cache: L2NormCache
    """
    xp = get_array_module(x)
    if x.ndim != 4 or tuple(scale.shape) not in ((x.shape[1],), (1,)):
        raise ValueError(f"l2norm_forward: x must be (N, C, H, W) and scale (C,) or (1,), got "
                         f"x {x.shape}, scale {scale.shape}")
    if eps_inside:
        s = xp.sqrt((x * x).sum(axis=1, keepdims=True) + x.dtype.type(eps))   # (N, 1, H, W)
        norm = s                                                         # (N, 1, H, W)
    else:
        s = xp.sqrt((x * x).sum(axis=1, keepdims=True))                 # (N, 1, H, W)
        norm = s + x.dtype.type(eps)                                     # (N, 1, H, W)
    xhat = x / norm                                                  # (N, C, H, W)
    y = scale.reshape(1, -1, 1, 1) * xhat                            # (N, C, H, W)
    return y, L2NormCache(x, xhat, s, norm, scale)


def l2norm_backward(dy, cache: L2NormCache):
    """Gradients of l2norm_forward (either eps).

    Inputs:  dy: (N, C, H, W); cache: L2NormCache
    Returns: dx: (N, C, H, W); dscale: shape of scale, (C,) or (1,)
    """
    xp = get_array_module(dy)
    x, xhat, s, norm, scale = cache
    # y = scale * xhat
    dscale = (dy * xhat).sum(axis=(0, 2, 3))                         # (C,)
    if scale.shape[0] != dscale.shape[0]:
        # one shared scale (1,): it multiplies every channel, so its gradient is their sum
        dscale = dscale.sum(keepdims=True)                           # (1,)
    dxhat = dy * scale.reshape(1, -1, 1, 1)                          # (N, C, H, W)
    # xhat = x / norm,  norm = s + eps (or s),  s = sqrt(sum_c x^2 (+ eps)),  ds/dx = x / s
    # dx = dxhat / norm - x * sum_c(dxhat * x) / (norm^2 * s)
    # Edge case: at an all-zero position with eps outside the root (or eps = 0), s = 0 and
    # ds/dx = x / s is 0/0. There x = 0, so the second term is 0 * (bounded) and we take it as
    # exactly 0 (dividing by 1 instead of s); the first term is dxhat / norm: large but
    # finite when eps > 0. No NaN reaches the weights. With eps inside the root, s >= sqrt(eps).
    s_safe = xp.where(s > 0, s, xp.ones((), dtype=s.dtype))         # (N, 1, H, W)
    proj = (dxhat * x).sum(axis=1, keepdims=True)                    # (N, 1, H, W)
    dx = dxhat / norm - x * (proj / (norm * norm * s_safe))          # (N, C, H, W)
    return dx, dscale
