"""Batch normalisation over (N, H, W) per channel: forward and backward.

Dimension letters: N batch, C channels, H x W spatial; M = N * H * W values per channel.

    training:  mu = mean(x),  var = mean((x - mu)^2)            over N, H, W, per channel
    eval:      mu = running_mean, var = running_var
               xhat = (x - mu) / sqrt(var + eps)
               y = gamma * xhat + beta

SSD itself has no batch norm (its VGG base comes pretrained). minissd's `tiny` config, which
trains from scratch in minutes, puts one after every base and extra conv: without it a plain
ReLU stack trained from scratch sits on a plateau where it predicts the same boxes for every
image (the observation of DSOD and ScratchDet, and ours on the synthetic set).

Without the affine part (gamma and beta None: Caffe's BatchNorm layer, which a Scale layer
follows, minissd.ops.scale) y = xhat, and backward is the formula below with gamma = 1; the
output is then the array the cache keeps as xhat (no copy), so nobody may write into it.

The running statistics follow PyTorch: new = (1 - momentum) * old + momentum * batch value,
with the unbiased variance (M / (M - 1)) in running_var. They are updated in place.

Synchronized batch norm (data parallelism over processes, minissd/distributed.py): with
`reduce` (a function that sums an array over the processes) the statistics are those of the
GLOBAL batch, all processes together. Forward sums, per channel, the count, sum(x) and
sum(x^2) (accumulated in float64) in one reduce; backward sums dbeta = sum(dy) and
dgamma = sum(dy * xhat) in one reduce, for dx. The dgamma, dbeta returned stay this process's
own sums: the gradient all-reduce of the training step adds them up with the others.
Without `reduce` the code path is the single-process one, unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module


class BatchNormCache(NamedTuple):
    xhat: object        # (N, C, H, W) normalised input
    inv_std: object     # (C,) 1 / sqrt(var + eps)
    gamma: object       # (C,)
    training: bool      # batch statistics (True) or running ones (False)
    count: object = 0   # synchronized: M of the global batch, 0-d (0: unused)


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True,
                        momentum=0.1, eps=1e-5, reduce=None):
    """Batch norm of x (N, C, H, W) with scale gamma (C,) and shift beta (C,), or without
    them (gamma and beta None: y = xhat).

    running_mean, running_var: (C,) arrays, updated in place when training.
    reduce: optional function summing an array over processes (synchronized batch norm).
    Returns y (N, C, H, W) and a BatchNormCache.
    """
    xp = get_array_module(x)
    if training and reduce is not None:
        return _synchronized_forward(x, gamma, beta, running_mean, running_var, momentum, eps,
                                     reduce)
    if training:
        M = x.size // x.shape[1]
        mean = x.mean(axis=(0, 2, 3))                                   # (C,)
        centred = x - mean[None, :, None, None]                         # (N, C, H, W)
        var = (centred * centred).mean(axis=(0, 2, 3))                  # (C,) biased
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (M / max(M - 1, 1))
    else:
        centred = x - running_mean[None, :, None, None]
        var = running_var
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)  # (C,)
    xhat = centred * inv_std[None, :, None, None]                       # (N, C, H, W)
    return _affine(xhat, gamma, beta), BatchNormCache(xhat, inv_std, gamma, training)


def _affine(xhat, gamma, beta):
    """y = xhat * gamma + beta per channel; xhat itself when gamma is None (no affine part)."""
    if gamma is None:
        return xhat
    y = xhat * gamma[None, :, None, None]
    y += beta[None, :, None, None]
    return y


def batchnorm2d_backward(dy, cache: BatchNormCache, reduce=None):
    """dy (N, C, H, W) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,)); without the affine
    part (gamma None in forward) dgamma and dbeta are None.

    reduce: the forward's (synchronized batch norm); dgamma and dbeta stay this process's."""
    if cache.gamma is None:
        return _backward_no_affine(dy, cache, reduce), None, None
    xhat, inv_std, gamma = cache.xhat, cache.inv_std, cache.gamma
    # y = xhat * gamma + beta
    dbeta = dy.sum(axis=(0, 2, 3))                                      # (C,)
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))                            # (C,)
    if cache.training and reduce is not None:
        return _synchronized_dx(dy, cache, dgamma, dbeta, reduce), dgamma, dbeta
    # xhat = ...;  dxhat = dy * gamma
    if not cache.training:
        # xhat = (x - running_mean) * inv_std, the statistics being constants
        return dy * (gamma * inv_std)[None, :, None, None], dgamma, dbeta
    # xhat = (x - mean(x)) * inv_std(x): the mean and the variance depend on every x of the
    # channel, which gives the two correction terms (each a mean over the M = N*H*W values):
    #   dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    # With dxhat = gamma * dy the two means are already known: mean(dxhat) = gamma * dbeta / M
    # and mean(dxhat * xhat) = gamma * dgamma / M, so
    #   dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)
    # (two fewer passes over the activations than computing the means again).
    m = dy.size // dy.shape[1]
    dx = xhat * (-dgamma / m)[None, :, None, None]
    dx += dy
    dx -= (dbeta / m)[None, :, None, None]
    dx *= (gamma * inv_std)[None, :, None, None]
    return dx, dgamma, dbeta


def _backward_no_affine(dy, cache, reduce):
    """dx of batch norm without the affine part: the affine formula with gamma = 1,
    dx = inv_std * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M)."""
    xhat, inv_std = cache.xhat, cache.inv_std
    if not cache.training:
        # y = xhat = (x - running_mean) * inv_std, the statistics being constants
        return dy * inv_std[None, :, None, None]
    # y = xhat: the sums that the affine case calls dbeta and dgamma
    dsum = dy.sum(axis=(0, 2, 3))                                       # (C,)
    dsum_xhat = (dy * xhat).sum(axis=(0, 2, 3))                         # (C,)
    if reduce is not None:
        return _synchronized_dx(dy, cache, dsum_xhat, dsum, reduce)
    m = dy.size // dy.shape[1]
    dx = xhat * (-dsum_xhat / m)[None, :, None, None]
    dx += dy
    dx -= (dsum / m)[None, :, None, None]
    dx *= inv_std[None, :, None, None]
    return dx


def _synchronized_forward(x, gamma, beta, running_mean, running_var, momentum, eps, reduce):
    """batchnorm2d_forward's training branch with the statistics of the global batch:
    mean = sum(x) / M, var = sum(x^2) / M - mean^2, the sums and M over every process."""
    xp = get_array_module(x)
    C = x.shape[1]
    local = xp.concatenate([xp.asarray([x.size // C], dtype=xp.float64),
                            x.sum(axis=(0, 2, 3), dtype=xp.float64),
                            (x * x).sum(axis=(0, 2, 3), dtype=xp.float64)])   # (1 + 2C,)
    total = reduce(local)                                               # summed over processes
    M = total[0]                        # 0-d array, kept on the device (no host sync)
    mean64 = total[1:1 + C] / M                                         # (C,)
    var64 = xp.maximum(total[1 + C:] / M - mean64 * mean64, 0)          # (C,) biased
    mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += (momentum * var64 * (M / xp.maximum(M - 1, 1))).astype(x.dtype)
    centred = x - mean[None, :, None, None]                             # (N, C, H, W)
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)  # (C,)
    xhat = centred * inv_std[None, :, None, None]                       # (N, C, H, W)
    return _affine(xhat, gamma, beta), BatchNormCache(xhat, inv_std, gamma, True, M)


def _synchronized_dx(dy, cache, dgamma, dbeta, reduce):
    """dx of the synchronized forward: batchnorm2d_backward's formula with the global sums,
    dx = gamma * inv_std * (dy - sum(dbeta) / M - xhat * sum(dgamma) / M)."""
    xp = get_array_module(dy)
    C = dy.shape[1]
    sums = reduce(xp.concatenate([dbeta, dgamma]))                      # (2C,) over processes
    m = cache.count                                                     # 0-d, float64
    dx = cache.xhat * (-sums[C:] / m).astype(dy.dtype)[None, :, None, None]
    dx += dy
    dx -= (sums[:C] / m).astype(dy.dtype)[None, :, None, None]
    dx *= (cache.inv_std if cache.gamma is None else
           cache.gamma * cache.inv_std)[None, :, None, None]
    return dx
