"""Hard negative mining: per image, pick the background boxes with the largest loss.

    hard_negative_mask(conf_loss (N, P), positive (N, P) bool, neg_pos_ratio) -> (N, P) bool

For image n, with num_pos positives, k = min(floor(neg_pos_ratio * num_pos), P - num_pos)
non-positive boxes are selected: those with the k largest conf_loss. Ties at the k-th value
are broken by position, lower index first, so the result is deterministic. Positives are never
in the mask; an image with no positives selects nothing (k = 0).

The reference (hard_negative_mask_reference) is the classic two-sort mining: sort each row by
(positive, -loss) stably, rank = argsort(order), select rank < k. The fast versions avoid both
sorts: they only need the k-th largest loss, then mark loss > kth plus the first ties.

Versions (llm.c dev/cuda style), each checked against the reference:
  cpu  hard_negative_mask_cpu  numba njit; per image np.partition finds the k-th largest
                               negative loss in O(P), then one pass marks > kth and the first
                               (k - count(> kth)) ties in index order.
  v1   mine_kernel_v1          CUDA, one block per image. The float32 losses are mapped to
                               order-preserving uint32 keys (sign flip), and a radix select
                               (4 passes of 8 bits, most significant first; a 256-bin shared
                               histogram per pass) finds the exact key of the k-th largest.
                               Then loss > kth is marked, and ties are taken in index order
                               with a block-wide prefix sum (Hillis-Steele) per chunk.

Dimension letters: N images, P default boxes.
"""
from __future__ import annotations

import numba
import numpy as np

from . import _launch

cuda = None            # numba.cuda, bound by _launch.bind_cuda() on first use
MAX_THREADS = 1024     # size of the shared scan buffer: the largest block v1 may run with
RADIX_BITS = 8         # bits per radix-select pass: 4 passes over a 32-bit key
RADIX_BINS = 256


def _check(conf_loss, positive):
    if conf_loss.ndim != 2 or positive.shape != conf_loss.shape:
        raise ValueError("kernels/hard_negative_kernel.py hard_negative_mask: conf_loss and "
                         "positive must both be (N, P); got "
                         f"{tuple(conf_loss.shape)} and {tuple(positive.shape)}")


def num_negatives(num_pos, num_boxes, neg_pos_ratio):
    """k = min(floor(ratio * num_pos), num_boxes - num_pos), elementwise on arrays or ints."""
    xp = _launch.get_array_module(num_pos)
    k = xp.floor(neg_pos_ratio * num_pos).astype(np.int64)
    return xp.minimum(k, num_boxes - num_pos)


def hard_negative_mask_reference(conf_loss, positive, neg_pos_ratio=3):
    """The sort-based mining (NumPy), the reference every version is checked against."""
    conf_loss = np.asarray(conf_loss)
    positive = np.asarray(positive, dtype=bool)
    _check(conf_loss, positive)
    N, P = conf_loss.shape
    # order: negatives by descending loss (stable: lower index first on ties), positives last
    order = np.lexsort((-conf_loss, positive), axis=-1)          # (N, P)
    rank = np.argsort(order, axis=-1)                            # (N, P) position in `order`
    k = num_negatives(positive.sum(axis=1), P, neg_pos_ratio)    # (N,)
    return rank < k[:, None]


# ----------------------------------------------------------------------------------------------
# CPU path

@numba.njit(cache=True)
def _mine_cpu(conf_loss, positive, k, mask):
    """Fill mask (N, P) given k (N,) negatives to take per image."""
    N, P = conf_loss.shape
    for n in range(N):
        if k[n] <= 0:
            continue
        neg = np.empty(P, dtype=conf_loss.dtype)
        m = 0
        for p in range(P):
            if not positive[n, p]:
                neg[m] = conf_loss[n, p]
                m += 1
        kth = np.partition(neg[:m], m - k[n])[m - k[n]]    # the k-th largest negative loss
        above = 0
        for p in range(P):
            if not positive[n, p] and conf_loss[n, p] > kth:
                above += 1
        ties = k[n] - above                                 # how many losses == kth to take
        for p in range(P):
            if positive[n, p]:
                continue
            if conf_loss[n, p] > kth:
                mask[n, p] = True
            elif conf_loss[n, p] == kth and ties > 0:
                mask[n, p] = True
                ties -= 1


def hard_negative_mask_cpu(conf_loss, positive, neg_pos_ratio=3):
    """Hard negative mask on the CPU: (N, P) losses, (N, P) bool positives -> (N, P) bool."""
    conf_loss = np.ascontiguousarray(conf_loss)
    positive = np.ascontiguousarray(positive, dtype=bool)
    _check(conf_loss, positive)
    N, P = conf_loss.shape
    k = num_negatives(positive.sum(axis=1), P, neg_pos_ratio)
    mask = np.zeros((N, P), dtype=bool)
    if mask.size:
        # + 0 turns a -0.0 loss into +0.0 (they compare equal anyway)
        _mine_cpu(conf_loss + conf_loss.dtype.type(0), positive, k, mask)
    return mask


# ----------------------------------------------------------------------------------------------
# CUDA kernel (a plain function; jitted by _kernels (LazyKernels), compiled to PTX by the tests)

def mine_kernel_v1(keys, positive, k, mask):
    """v1: block n mines image n. keys (N, P) uint32 order-preserving, k (N,) int64,
    mask (N, P) bool, all False on entry."""
    n = cuda.blockIdx.x
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    P = keys.shape[1]
    hist = cuda.shared.array(RADIX_BINS, numba.int32)
    scan = cuda.shared.array(MAX_THREADS, numba.int32)
    found = cuda.shared.array(2, numba.int64)          # (bin chosen, rank left inside it)
    remaining = k[n]                                   # rank of the wanted key among candidates
    if remaining <= 0:
        return                                         # uniform per block: no barrier skipped

    # 1. radix select: the exact key of the k-th largest non-positive, 8 bits per pass
    prefix = 0          # the key bits decided so far (int64 holds any uint32)
    prefix_mask = 0
    for shift in range(32 - RADIX_BITS, -1, -RADIX_BITS):
        for i in range(t, RADIX_BINS, T):
            hist[i] = 0
        cuda.syncthreads()
        for p in range(t, P, T):
            key = keys[n, p]
            if not positive[n, p] and (key & prefix_mask) == prefix:
                cuda.atomic.add(hist, (key >> shift) & (RADIX_BINS - 1), 1)
        cuda.syncthreads()
        if t == 0:
            # walk down from the top bin until it holds the remaining rank
            bin_ = RADIX_BINS - 1
            while bin_ > 0 and hist[bin_] < remaining:
                remaining -= hist[bin_]
                bin_ -= 1
            found[0] = bin_
            found[1] = remaining
        cuda.syncthreads()
        prefix |= found[0] << shift
        prefix_mask |= (RADIX_BINS - 1) << shift
        remaining = found[1]
        cuda.syncthreads()             # everyone has read `found` before thread 0 rewrites it
    kth = prefix                       # keys > kth are all taken; `remaining` ties == kth are

    # 2. mark keys > kth, and the first `remaining` ties in index order (block prefix sum)
    taken = 0
    for base in range(0, P, T):
        p = base + t
        tie = 0
        if p < P and not positive[n, p]:
            if keys[n, p] > kth:
                mask[n, p] = True
            elif keys[n, p] == kth:
                tie = 1
        scan[t] = tie
        cuda.syncthreads()
        step = 1
        while step < T:                # inclusive scan: scan[t] = ties among threads 0..t
            v = scan[t - step] if t >= step else 0
            cuda.syncthreads()
            scan[t] += v
            cuda.syncthreads()
            step *= 2
        if tie == 1 and taken + scan[t] <= remaining:
            mask[n, p] = True
        taken += scan[T - 1]
        cuda.syncthreads()             # scan[] is rewritten by the next chunk


_kernels = _launch.LazyKernels(globals(), v1=mine_kernel_v1)


def ptx_signatures():
    """[(name, python function, numba signature)] of every kernel version, for compile_ptx."""
    _launch.bind_cuda(globals())
    return [("mine_kernel_v1", mine_kernel_v1,
             (numba.uint32[:, ::1], numba.bool_[:, ::1], numba.int64[::1], numba.bool_[:, ::1]))]


def order_preserving_keys(conf_loss):
    """float32 (N, P) -> uint32 (N, P) keys with key(a) < key(b) exactly when a < b.

    Non-negative floats: set the sign bit (they sort above all negatives, in bit order).
    Negative floats: flip every bit (a larger magnitude becomes a smaller key).
    -0.0 is first turned into +0.0 (by adding 0) so the two zeros get one key.
    """
    xp = _launch.get_array_module(conf_loss)
    bits = xp.ascontiguousarray(conf_loss + np.float32(0), dtype=np.float32).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return xp.where(negative, ~bits, bits | np.uint32(0x80000000))


def hard_negative_mask_cuda(conf_loss, positive, neg_pos_ratio=3, threads=256):
    """Hard negative mask with the CUDA radix-select kernel (one block per image).

    CuPy inputs stay on the device (CuPy's current device and stream); when only one of
    conf_loss, positive is a CuPy array, the other is copied to its device first. NumPy inputs
    work in Numba's simulator. Losses are compared in float32 (float64 losses are rounded
    first). threads: block size, a power of two <= 1024.
    """
    conf_loss, positive = _launch.on_one_device(conf_loss, positive)
    xp = _launch.get_array_module(conf_loss, positive)
    _check(conf_loss, positive)
    if threads & (threads - 1) or not 32 <= threads <= MAX_THREADS:
        raise ValueError(f"kernels/hard_negative_kernel.py: threads must be a power of two in "
                         f"32..{MAX_THREADS}, got {threads}")
    N, P = conf_loss.shape
    positive = xp.ascontiguousarray(positive, dtype=bool)
    keys = xp.ascontiguousarray(order_preserving_keys(conf_loss))
    k = xp.ascontiguousarray(num_negatives(positive.sum(axis=1), P, neg_pos_ratio))
    mask = xp.zeros((N, P), dtype=bool)
    if mask.size == 0:
        return mask
    dev = _launch.device_array
    with _launch.launch_on(keys) as stream:
        _kernels["v1"][N, threads, stream](dev(keys), dev(positive), dev(k), dev(mask))
    return mask
