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
    # max(x, 0) rather than where(positive, x, 0): the same values, and on the CPU several
    # times faster (np.where branches on every element of a random mask)
    y = xp.maximum(x, xp.zeros((), dtype=x.dtype))
    return y, ReLUCache(positive)


def relu_backward(dy, cache: ReLUCache):
    """dx = dy where x > 0, else 0 (the subgradient at x == 0 is taken as 0, as PyTorch does).

    Inputs:  dy: upstream gradient, shape of x; cache: from relu_forward
    Returns: dx: shape and dtype of dy
    """
    # y = max(x, 0): dy passes where x > 0. Multiplying by the mask (True = 1, False = 0) is
    # the branch-free form of where(positive, dy, 0).
    dx = dy * cache.positive
    return dx
