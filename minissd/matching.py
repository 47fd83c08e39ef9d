"""Matching: which default box is responsible for which ground-truth object.

Dimension letters: N images, P default boxes (priors), G ground-truth boxes of one image,
M the largest G in a batch (images are padded to it).

Two rules, `rule="ssd.pytorch"` (the default, SSDConfig.matching) and `rule="caffe"`. Both:
  1. IoU matrix between the G ground-truth boxes and the P default boxes (both in corner form).
  2. Bipartite step: every ground truth gets one prior of its own, so an object has a positive
     even when no prior reaches the threshold. The rules differ here:
       ssd.pytorch (its `match`; torchvision's SSDMatcher does the same): every ground truth
       claims the prior it overlaps most, in annotation order. When two ground truths claim the
       same prior, the later one (higher index) wins and the earlier one gets no second
       choice: it keeps only the priors step 3 gives it, possibly none (notebook 04 works such
       a case by hand). A ground truth that overlaps no prior at all still claims prior 0
       (argmax of zeros).
       caffe (the paper's "as in MultiBox", Caffe SSD's MatchBBox in bbox_util.cpp with
       match_type PER_PREDICTION): greedy, repeatedly the largest IoU among the pairs whose
       ground truth and prior are both still free; that prior goes to that ground truth and
       both leave the pool. No prior is given twice and the annotation order does not matter
       (except for exact ties: Caffe scans priors in order, then ground truths in order, and
       keeps the first strictly larger IoU, i.e. the first maximum in prior-major order). Caffe
       keeps only overlaps > 1e-6, so a ground truth that overlaps no free prior gets none.
  3. Every other prior takes the ground truth it overlaps most (the first one on a tie) if that
     IoU >= iou_threshold, else it is background (label 0). The same in both rules.
The targets are then the labels (1..K, as given) and the encoded offsets of the matched
ground truth (boxes.encode). Background priors get zero offsets (the loss never reads them).

No host sync: every step is a fixed-shape array operation (max, argmax, where, a gather),
never `nonzero`, whose output size the host must wait for. The greedy step runs M rounds
(M is known on the host) whether or not a round still finds a pair. Every prior is encoded
against the box it matched (a few microseconds of arithmetic more than encoding the positives
only) and `where` keeps the positives' offsets, so on CuPy the whole matching is queued on the
GPU while the host goes on. On NumPy the result is bit-identical to encoding the positives.
Matching has no kernel of its own: the IoU matrix is kernels.iou_matrix (a CUDA kernel on
CuPy arrays), the rest is array code that runs on NumPy and CuPy alike.

`match` does one image the plain way; `match_batch` does a whole batch at once on padded
arrays, with one IoU call for all images. Both run on NumPy and CuPy (the priors' module).
`match_reference` is both rules written as plain loops over priors and ground truths, the
way the two codebases write them (NumPy only, slow): the tests hold the others to it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .backend import get_array_module
from .boxes import center_to_corner, encode, encode_planes, iou
from .kernels import iou_matrix

RULES = ("ssd.pytorch", "caffe")       # SSDConfig.matching; see the module docstring
CAFFE_MIN_OVERLAP = 1e-6               # MatchBBox keeps only overlaps above this


def match(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=(0.1, 0.2),
          rule="ssd.pytorch"):
    """Match one image's ground truth to the default boxes.

    Inputs:
        gt_boxes:  (G, 4) corner form (xmin, ymin, xmax, ymax), normalised; G may be 0
        gt_labels: (G,) int, classes 1..K
        priors:    (P, 4) center form default boxes (priors.default_boxes)
        iou_threshold: a prior with IoU >= this with some ground truth is positive
        variances: the encoding's (center, size) variances
        rule: "ssd.pytorch" or "caffe", the bipartite step (module docstring)
    Returns:
        loc_t:  (P, 4) float (priors' dtype) encoded offsets; 0 on background priors
        conf_t: (P,) int64 label per prior, 0 = background
    """
    _check_rule(rule, "match")
    xp = get_array_module(priors)
    gt_boxes = xp.asarray(gt_boxes, dtype=priors.dtype).reshape(-1, 4)    # (G, 4)
    gt_labels = xp.asarray(gt_labels, dtype=xp.int64).reshape(-1)         # (G,)
    _check_image(gt_boxes, gt_labels, "match")
    P, G = priors.shape[0], gt_boxes.shape[0]
    if G == 0:
        return xp.zeros((P, 4), dtype=priors.dtype), xp.zeros(P, dtype=xp.int64)

    corners = center_to_corner(priors)                                 # (P, 4)
    overlaps = iou_matrix(gt_boxes, corners)                           # (G, P)
    best_gt = overlaps.argmax(axis=0)                                  # (P,) best GT per prior
    best_gt_iou = overlaps.max(axis=0)                                 # (P,)
    if rule == "caffe":
        claimed = _greedy_bipartite(overlaps[None])[0]                 # (P,) GT or -1
        best_gt = xp.where(claimed >= 0, claimed, best_gt)
        best_gt_iou = xp.where(claimed >= 0, 2.0, best_gt_iou).astype(overlaps.dtype)
    else:
        best_prior = overlaps.argmax(axis=1)                           # (G,) best prior per GT
        # Bipartite step. The loop is over ground truths (a handful), never over priors;
        # running it in GT order makes the later GT win a prior that two GTs claim.
        for g in range(G):
            best_gt[best_prior[g]] = g
        best_gt_iou[best_prior] = 2.0      # above any threshold: claimed priors stay positive

    positive = best_gt_iou >= iou_threshold                            # (P,)
    conf_t = xp.where(positive, gt_labels[best_gt], 0)                 # (P,)
    matched = gt_boxes.T[:, best_gt]                                   # (4, P) corner form
    loc_t = _encode_positives(matched, positive, priors, variances)
    return loc_t, conf_t.astype(xp.int64)


def match_batch(gt_boxes_list: Sequence, gt_labels_list: Sequence, priors, iou_threshold=0.5,
                variances=(0.1, 0.2), rule="ssd.pytorch"):
    """Match a batch of images at once; the same result as calling `match` per image.

    Inputs:
        gt_boxes_list:  N arrays (G_n, 4) corner form, one per image (G_n may be 0)
        gt_labels_list: N arrays (G_n,) int labels 1..K
        priors, iou_threshold, variances, rule: as in `match`
    Returns:
        loc_t:  (N, P, 4) float (priors' dtype)
        conf_t: (N, P) int64

    How: all ground truths go through ONE IoU call, (sum G_n, P); the rows are then scattered
    into an (N, M, P) array padded with IoU -1 (a padded row never wins an argmax and never
    reaches the threshold), and every step of `match` runs on the batch axis at once.
    The ground truth is moved to the priors' module: NumPy boxes with CuPy priors are fine.
    """
    _check_rule(rule, "match_batch")
    xp = get_array_module(priors)
    if len(gt_boxes_list) != len(gt_labels_list):
        raise ValueError(f"minissd/matching.py match_batch: {len(gt_boxes_list)} box arrays but "
                         f"{len(gt_labels_list)} label arrays; pass one of each per image")
    N, P = len(gt_boxes_list), priors.shape[0]
    if N == 0:
        return xp.zeros((0, P, 4), dtype=priors.dtype), xp.zeros((0, P), dtype=xp.int64)
    # The ground truth is gathered where it lies (the loader's NumPy arrays: on the host) and
    # goes to the priors' device in two copies, all boxes (sum G, 4) and one int64 array
    # (3, sum G) of image, slot and label per box, rather than two small copies per image.
    gm = get_array_module(*gt_boxes_list, *gt_labels_list)
    boxes = [gm.asarray(b, dtype=priors.dtype).reshape(-1, 4) for b in gt_boxes_list]
    labels = [gm.asarray(l, dtype=gm.int64).reshape(-1) for l in gt_labels_list]
    for n, (b, l) in enumerate(zip(boxes, labels)):
        _check_image(b, l, f"match_batch (image {n})")
    counts = [b.shape[0] for b in boxes]                  # shapes: known on the host
    M = max(counts + [1])                 # at least one (padded) row keeps argmax defined
    # Where each ground truth goes in the padded (N, M) layout.
    img = np.repeat(np.arange(N), counts)                              # (sum G,)
    slot = np.concatenate([np.arange(c) for c in counts])              # (sum G,)
    gt_all = xp.asarray(gm.concatenate(boxes))                         # (sum G, 4): copy 1
    if gm is np:
        index = xp.asarray(np.stack([img, slot, np.concatenate(labels)]))   # (3, sum G): copy 2
        img, slot, lab_all = index[0], index[1], index[2]
    else:
        index = xp.asarray(np.stack([img, slot]))                      # (2, sum G): copy 2
        img, slot, lab_all = index[0], index[1], xp.concatenate(labels)
    valid = xp.zeros((N, M), dtype=bool)
    valid[img, slot] = True
    gt_pad = xp.zeros((N, M, 4), dtype=priors.dtype)
    lab_pad = xp.zeros((N, M), dtype=xp.int64)
    overlaps = xp.full((N, M, P), -1.0, dtype=priors.dtype)
    corners = center_to_corner(priors)                                 # (P, 4)
    if sum(counts):
        gt_pad[img, slot] = gt_all
        lab_pad[img, slot] = lab_all
        overlaps[img, slot] = iou_matrix(gt_all, corners)              # (sum G, P)

    best_gt_iou = overlaps.max(axis=1)                                 # (N, P)
    # best_gt = overlaps.argmax(axis=1), written as a loop over the M slots because NumPy's
    # argmax along a middle axis is ~10x slower than max. Going from the last slot to the
    # first leaves the FIRST maximal GT, as argmax (and `match`) would.
    best_gt = xp.zeros((N, P), dtype=xp.int64)
    for m in range(M - 1, -1, -1):
        best_gt = xp.where(overlaps[:, m] == best_gt_iou, m, best_gt)
    rows = xp.arange(N)                                                # (N,)
    if rule == "caffe":
        claimed = _greedy_bipartite(overlaps)                          # (N, P) slot or -1
        best_gt = xp.where(claimed >= 0, claimed, best_gt)
        best_gt_iou = xp.where(claimed >= 0, 2.0, best_gt_iou).astype(overlaps.dtype)
    else:
        best_prior = overlaps.argmax(axis=2)                           # (N, M)
        # Bipartite step, one GT slot at a time over the whole batch (a loop over M, never
        # over priors). Within one slot the N writes go to N different images, so no index
        # repeats; later slots overwrite earlier ones, so the later GT wins a shared prior.
        for m in range(M):
            p = best_prior[:, m]                                       # (N,)
            best_gt[rows, p] = xp.where(valid[:, m], m, best_gt[rows, p])
            best_gt_iou[rows, p] = xp.where(valid[:, m], 2.0, best_gt_iou[rows, p])

    positive = best_gt_iou >= iou_threshold                            # (N, P)
    conf_t = xp.where(positive, lab_pad[rows[:, None], best_gt], 0)    # (N, P)
    # the box each prior matched, coordinate first: (4, N, P), each plane contiguous
    matched = xp.moveaxis(gt_pad, -1, 0)[:, rows[:, None], best_gt]
    loc_t = _encode_positives(matched, positive, priors, variances)
    return loc_t, conf_t.astype(xp.int64)


def _greedy_bipartite(overlaps):
    """Caffe's bipartite step on a batch: (N, M, P) overlaps -> (N, P) int64, the GT slot
    each prior was given, -1 for none. Padded GT rows hold IoU -1 and are never chosen.

    Round r takes, in every image at once, the largest IoU among the free (prior, GT) pairs,
    the first maximum in prior-major order (Caffe's scan order), if it is > 1e-6, and then
    takes that prior's row and that GT's column out of the pool (sets them to -1). M rounds,
    each an argmax over P*M pairs per image: O(N M^2 P), no data-dependent shape."""
    xp = get_array_module(overlaps)
    N, M, P = overlaps.shape
    pool = xp.ascontiguousarray(xp.moveaxis(overlaps, 1, 2))           # (N, P, M) prior-major
    flat = pool.reshape(N, P * M)                                      # a view of `pool`
    claimed = xp.full((N, P), -1, dtype=xp.int64)
    rows = xp.arange(N)                                                # (N,)
    gone = xp.asarray(-1.0, dtype=overlaps.dtype)
    for _ in range(M):
        k = flat.argmax(axis=1)                                        # (N,) first maximum
        found = flat[rows, k] > CAFFE_MIN_OVERLAP                      # (N,) a pair is left
        p, m = k // M, k % M                                           # (N,), (N,)
        claimed[rows, p] = xp.where(found, m, claimed[rows, p])
        pool[rows, p, :] = xp.where(found[:, None], gone, pool[rows, p, :])   # prior taken
        pool[rows, :, m] = xp.where(found[:, None], gone, pool[rows, :, m])   # GT taken
    return claimed


def match_reference(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=(0.1, 0.2),
                    rule="ssd.pytorch"):
    """`match` written as plain loops over ground truths and priors (NumPy, slow): the
    reference the array versions are tested against, in the two codebases' own order.

    ssd.pytorch: for each GT in order, its best prior (first maximum) is given to it,
    overwriting an earlier GT. caffe: MatchBBox's loop, while GTs are left, scan the free
    priors in order and, for each, the free GTs in order, keeping the first strictly larger
    IoU above 1e-6; stop when none is left. Then every prior not given takes its best GT
    (first maximum) if the IoU >= iou_threshold. Same inputs and outputs as `match`."""
    _check_rule(rule, "match_reference")
    priors = np.asarray(priors)
    gt = np.asarray(gt_boxes, dtype=priors.dtype).reshape(-1, 4)             # (G, 4)
    labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)             # (G,)
    _check_image(gt, labels, "match_reference")
    P, G = priors.shape[0], gt.shape[0]
    loc_t, conf_t = np.zeros((P, 4), priors.dtype), np.zeros(P, np.int64)
    if G == 0:
        return loc_t, conf_t
    overlaps = iou(gt, center_to_corner(priors))                           # (G, P)
    owner = [-1] * P                                 # the GT each prior is given, -1: none
    if rule == "ssd.pytorch":
        for g in range(G):
            best = 0
            for p in range(1, P):
                if overlaps[g, p] > overlaps[g, best]:
                    best = p
            owner[best] = g
    else:
        pool = list(range(G))
        while pool:
            best_p, best_g, best_iou = -1, -1, -1.0
            for p in range(P):
                if owner[p] != -1:
                    continue
                for g in pool:
                    if overlaps[g, p] > CAFFE_MIN_OVERLAP and overlaps[g, p] > best_iou:
                        best_p, best_g, best_iou = p, g, overlaps[g, p]
            if best_p == -1:
                break
            owner[best_p] = best_g
            pool.remove(best_g)
    for p in range(P):
        if owner[p] == -1:
            best = 0
            for g in range(1, G):
                if overlaps[g, p] > overlaps[best, p]:
                    best = g
            if overlaps[best, p] >= iou_threshold:
                owner[p] = best
    for p in range(P):
        if owner[p] != -1:
            conf_t[p] = labels[owner[p]]
            loc_t[p] = encode(gt[owner[p]][None], priors[p][None], variances)[0]
    return loc_t, conf_t


def _encode_positives(matched, positive, priors, variances):
    """(..., P, 4) offsets: encode(matched) where positive, 0 elsewhere; no host sync.

    matched (4, ..., P) corner form, coordinate first: the box each prior matched; positive
    (..., P) bool. A background prior may have matched a padded all-zero box: encode_planes
    floors its zero width and height (finite offsets, no log(0) warning), and `where` then
    writes its 0."""
    xp = get_array_module(matched)
    zero = xp.zeros((), dtype=priors.dtype)
    t = encode_planes(matched, xp.moveaxis(priors, -1, 0), variances)  # 4 x (..., P)
    return xp.stack([xp.where(positive, c, zero) for c in t], axis=-1)   # (..., P, 4)


def _check_rule(rule, where):
    if rule not in RULES:
        raise ValueError(f"minissd/matching.py {where}: unknown matching rule {rule!r}; "
                         f"use one of {', '.join(map(repr, RULES))}")


def _check_image(gt_boxes, gt_labels, where):
    """Shape checks with a message that says what to pass instead."""
    if gt_boxes.shape[0] != gt_labels.shape[0]:
        raise ValueError(f"minissd/matching.py {where}: {gt_boxes.shape[0]} boxes but "
                         f"{gt_labels.shape[0]} labels; pass one label (1..K) per box")
