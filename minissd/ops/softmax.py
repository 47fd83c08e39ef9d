"""Softmax, log-softmax and softmax cross-entropy (the MultiBox confidence loss, minissd/loss.py,
is softmax_cross_entropy_forward/backward; detection uses softmax).

Dimension letters: M rows (e.g. N * P default boxes), C classes (background included).
The functions accept any leading shape (..., C) with the classes on the last axis.

Numerical stability: exp(x) overflows float32 above x ~ 88, so the row maximum is subtracted
first; log_softmax(x) = (x - m) - log(sum(exp(x - m))) is exact for any shift m and the largest
term is exp(0) = 1, so the sum is in [1, C] and its log never sees 0.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


def log_softmax(x, axis=-1):
    """log(softmax(x)) along `axis`, computed stably. Same shape and dtype as x."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, computed stably. Same shape and dtype as x."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class SoftmaxCECache(NamedTuple):
    probs: object           # (..., C) softmax of the logits
    labels: object          # (...,) integer class of each row


def softmax_cross_entropy_forward(logits, labels):
    """Per-row cross-entropy loss[m] = -log softmax(logits[m])[labels[m]].

    Inputs:
        logits: (M, C) float (any leading shape (..., C) works)
        labels: (M,) integers in 0..C-1 (shape (...,) matching logits' leading shape)
    Returns:
        loss:  (M,) same dtype as logits, one value per row (not reduced)
        cache: SoftmaxCECache
    """
    xp = get_array_module(logits)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"softmax_cross_entropy_forward: labels has shape {labels.shape} but "
                         f"logits {logits.shape} needs labels of shape {logits.shape[:-1]}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy_forward: labels must be integers, got "
                        f"{labels.dtype}; pass labels.astype('int64')")
    logp = log_softmax(logits, axis=-1)                                       # (M, C)
    loss = -xp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]      # (M,)
    return loss, SoftmaxCECache(xp.exp(logp), labels)


def softmax_cross_entropy_backward(dloss, cache: SoftmaxCECache):
    """Gradient of the per-row losses: dlogits = (softmax(logits) - onehot(labels)) * dloss.

    Inputs:
        dloss: (M,) upstream gradient of each row's loss (e.g. 1/N for kept rows, 0 otherwise)
        cache: from softmax_cross_entropy_forward
    Returns:
        dlogits: (M, C), dtype of the logits
    """
    xp = get_array_module(cache.probs)
    probs, labels = cache.probs, cache.labels
    C = probs.shape[-1]
    # loss = -logp[label], logp = log_softmax(logits)  ->  d/dlogits = softmax(logits) - onehot
    onehot = labels[..., None] == xp.arange(C)                                # (M, C) bool
    return (probs - onehot) * dloss[..., None].astype(probs.dtype, copy=False)  # (M, C)
