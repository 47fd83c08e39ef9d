"""Element-wise sum of several arrays of one shape (Caffe's Eltwise SUM, a residual join).

    y = x_0 + x_1 + ... + x_{m-1}          every x_i and y (N, C, H, W), m >= 2

Backward: each input gets dy itself (dy_i = dy, for every i). The SAME array is handed to
every input; a caller that adds into a gradient must not do it in place (model.BodySSD's
backward adds with `+`, which makes a new array).
"""
from __future__ import annotations

from typing import NamedTuple


class EltwiseCache(NamedTuple):
    count: int          # m, the number of inputs


def eltwise_sum_forward(*xs):
    """y = sum of the inputs.

    Inputs:  xs: m >= 2 arrays of the same shape
    Returns: y: that shape, dtype of xs[0]; cache: EltwiseCache
    """
    if len(xs) < 2 or any(x.shape != xs[0].shape for x in xs):
        raise ValueError(f"eltwise_sum_forward: need two or more inputs of one shape, got "
                         f"{[tuple(x.shape) for x in xs]}")
    y = xs[0] + xs[1]
    for x in xs[2:]:
        y += x
    return y, EltwiseCache(len(xs))


def eltwise_sum_backward(dy, cache: EltwiseCache):
    """Gradients of eltwise_sum_forward: a tuple of m arrays, each dy (the same object)."""
    # y = x_0 + x_1 + ...: dy/dx_i = 1 for every input
    return (dy,) * cache.count
