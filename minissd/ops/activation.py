"""ReLU: y = max(x, 0).

Shapes: any; y and dx have the shape and dtype of x.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


class ReLUCache(NamedTuple):
    positive: object        # bool array, x > 0 (where the gradient passes)


def relu_forward(x):
    """y = max(x, 0) elementwise.

    Inputs:  x: array of any shape
    Returns: y: same shape and dtype as x; cache: ReLUCache
    """
    xp = get_array_module(x)
    positive = x > 0
    y = xp.where(positive, x, xp.zeros((), dtype=x.dtype))
    return y, ReLUCache(positive)


def relu_backward(dy, cache: ReLUCache):
    """dx = dy where x > 0, else 0 (the subgradient at x == 0 is taken as 0, as PyTorch does).

    Inputs:  dy: upstream gradient, shape of x; cache: from relu_forward
    Returns: dx: shape and dtype of dy
    """
    xp = get_array_module(dy)
    # y = max(x, 0)
    dx = xp.where(cache.positive, dy, xp.zeros((), dtype=dy.dtype))
    return dx
