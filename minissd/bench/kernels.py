"""Kernel benchmarks: python -m minissd.bench kernels [--device cpu|cuda] [--repeat R]

At SSD300 sizes: IoU of G ground-truth boxes x 8732 default boxes, NMS over 8732 boxes
(one class, and 20 classes with batched_nms), hard negative mining over a 32 x 8732 batch.
Every version is first checked against the NumPy reference (minissd.boxes.iou,
kernels/nms_kernel.py nms_reference, kernels/hard_negative_kernel.py
hard_negative_mask_reference) at a smaller size, then timed (best of R runs). torchvision.ops
is timed alongside when importable.

  --device cpu   numba CPU paths vs the NumPy references (and torchvision CPU)
  --device cuda  the CUDA kernels on CuPy arrays vs torchvision CUDA ops, and the radix-select
                 mining vs a two-sort CuPy mining
"""
from __future__ import annotations

import argparse

import numpy as np

from minissd import backend
from minissd.bench import best_time
from minissd.boxes import iou as iou_reference
from minissd.kernels import hard_negative_kernel as mine_k
from minissd.kernels import iou_kernel as iou_k
from minissd.kernels import nms_kernel as nms_k

P = 8732          # SSD300 default boxes
CLASSES = 20      # VOC object classes
BATCH = 32        # SSD training batch


def random_boxes(rng, n):
    """SSD-like corner boxes: centres anywhere, sides 0.02..0.6 (many overlaps)."""
    c = rng.random((n, 2))
    wh = rng.uniform(0.02, 0.6, (n, 2))
    return np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1).astype(np.float32)


def best_ms(fn, repeat, sync_on=None):
    """Best wall time in ms of `repeat` calls of fn() (after one warm-up call); sync_on: an
    array whose device is waited for (None: the current device)."""
    return best_time(fn, repeat, lambda: backend.synchronize(sync_on)) * 1e3


def row(name, size, ms, note=""):
    print(f"  {name:<34} {size:<18} {ms:10.3f} ms  {note}")


def check(name, got, expected):
    got = backend.to_numpy(got)
    if got.dtype.kind == "f":
        ok = got.shape == expected.shape and np.allclose(got, expected, rtol=1e-6, atol=1e-7)
    else:
        ok = np.array_equal(got, expected)
    if not ok:
        raise SystemExit(f"bench/kernels.py: {name} disagrees with the reference; not timing it")


def torchvision_ops():
    try:
        import torch
        import torchvision.ops as ops
        return torch, ops
    except Exception as e:        # not installed here: a note, not an error
        print(f"  (torchvision.ops not importable: {type(e).__name__}: {e}; comparison skipped)")
        return None, None


def mining_two_sort(conf_loss, positive, neg_pos_ratio):
    """The classic two-sort mining on any array module (the baseline the kernel replaces)."""
    xp = backend.get_array_module(conf_loss)
    loss = xp.where(positive, -xp.inf, conf_loss)
    order = xp.argsort(-loss, axis=1)                    # (N, P)
    rank = xp.argsort(order, axis=1)                     # (N, P)
    k = mine_k.num_negatives(positive.sum(axis=1), conf_loss.shape[1], neg_pos_ratio)
    return rank < k[:, None]


def bench_cpu(rng, repeat):
    torch, ops = torchvision_ops()
    G = 64
    a, b = random_boxes(rng, G), random_boxes(rng, P)
    check("iou_matrix_cpu", iou_k.iou_matrix_cpu(a, b), iou_reference(a, b))
    print("IoU matrix")
    row("numpy reference (boxes.iou)", f"{G} x {P}",
        best_ms(lambda: iou_reference(a, b), repeat))
    row("cpu (numba njit)", f"{G} x {P}", best_ms(lambda: iou_k.iou_matrix_cpu(a, b), repeat))
    if ops:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        row("torchvision box_iou (cpu)", f"{G} x {P}",
            best_ms(lambda: ops.box_iou(ta, tb), repeat))

    boxes = random_boxes(rng, P)
    scores = rng.random(P).astype(np.float32)
    labels = rng.integers(1, CLASSES + 1, P)
    small = 1500
    check("nms_cpu", nms_k.nms_cpu(boxes[:small], scores[:small], 0.45),
          nms_k.nms_reference(boxes[:small], scores[:small], 0.45))
    b, s, lab = boxes[:small], scores[:small], labels[:small]
    check("batched_nms_cpu", nms_k.batched_nms_cpu(b, s, lab, 0.45),
          nms_k.nms_reference(b, s, 0.45, lab))
    print("NMS (IoU threshold 0.45)")
    row("python reference (nms_reference)", f"{small} boxes",
        best_ms(lambda: nms_k.nms_reference(boxes[:small], scores[:small], 0.45), 1))
    row("cpu nms (numba njit)", f"{P} boxes",
        best_ms(lambda: nms_k.nms_cpu(boxes, scores, 0.45), repeat))
    row("cpu batched_nms (numba njit)", f"{P} boxes/{CLASSES} cls",
        best_ms(lambda: nms_k.batched_nms_cpu(boxes, scores, labels, 0.45), repeat))
    if ops:
        tbx, tsc, tlb = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels)
        row("torchvision nms (cpu)", f"{P} boxes",
            best_ms(lambda: ops.nms(tbx, tsc, 0.45), repeat))
        row("torchvision batched_nms (cpu)", f"{P} boxes/{CLASSES} cls",
            best_ms(lambda: ops.batched_nms(tbx, tsc, tlb, 0.45), repeat))

    loss = rng.exponential(1.0, (BATCH, P)).astype(np.float32)
    positive = rng.random((BATCH, P)) < 0.01
    check("hard_negative_mask_cpu", mine_k.hard_negative_mask_cpu(loss, positive, 3),
          mine_k.hard_negative_mask_reference(loss, positive, 3))
    print("Hard negative mining (ratio 3, ~1% positives)")
    row("numpy reference (lexsort + argsort)", f"{BATCH} x {P}",
        best_ms(lambda: mine_k.hard_negative_mask_reference(loss, positive, 3), repeat))
    row("numpy two-sort (argsort x2)", f"{BATCH} x {P}",
        best_ms(lambda: mining_two_sort(loss, positive, 3), repeat))
    row("cpu (numba njit, partition)", f"{BATCH} x {P}",
        best_ms(lambda: mine_k.hard_negative_mask_cpu(loss, positive, 3), repeat))


def bench_cuda(rng, repeat):
    backend.set_device("cuda")
    cp = backend.current_device_xp()
    torch, ops = torchvision_ops()
    G = 64
    a_np, b_np = random_boxes(rng, G), random_boxes(rng, P)
    a, b = cp.asarray(a_np), cp.asarray(b_np)
    ref = iou_reference(a_np, b_np)
    print("IoU matrix")
    for v in ("v1", "v2"):
        check(f"iou {v}", iou_k.iou_matrix_cuda(a, b, v), ref)
        row(f"cuda iou_kernel_{v}", f"{G} x {P}",
            best_ms(lambda: iou_k.iou_matrix_cuda(a, b, v), repeat, a))
    if ops:
        ta, tb = torch.from_numpy(a_np).cuda(), torch.from_numpy(b_np).cuda()
        row("torchvision box_iou (cuda)", f"{G} x {P}",
            best_ms(lambda: (ops.box_iou(ta, tb), torch.cuda.synchronize()), repeat))

    boxes_np = random_boxes(rng, P)
    scores_np = rng.random(P).astype(np.float32)
    labels_np = rng.integers(1, CLASSES + 1, P)
    boxes, scores, labels = cp.asarray(boxes_np), cp.asarray(scores_np), cp.asarray(labels_np)
    check("nms_cuda", nms_k.nms_cuda(boxes, scores, 0.45), nms_k.nms_cpu(boxes_np, scores_np, 0.45))
    check("batched_nms_cuda", nms_k.batched_nms_cuda(boxes, scores, labels, 0.45),
          nms_k.batched_nms_cpu(boxes_np, scores_np, labels_np, 0.45))
    small = 1500
    check("nms_cpu", nms_k.nms_cpu(boxes_np[:small], scores_np[:small], 0.45),
          nms_k.nms_reference(boxes_np[:small], scores_np[:small], 0.45))
    print("NMS (IoU threshold 0.45; checked against the CPU path, itself checked "
          "against nms_reference)")
    row("cuda nms (bitmask)", f"{P} boxes", best_ms(lambda: nms_k.nms_cuda(boxes, scores, 0.45),
                                                      repeat, boxes))
    row("cuda batched_nms (bitmask)", f"{P} boxes/{CLASSES} cls",
        best_ms(lambda: nms_k.batched_nms_cuda(boxes, scores, labels, 0.45), repeat, boxes))
    if ops:
        tbx, tsc = torch.from_numpy(boxes_np).cuda(), torch.from_numpy(scores_np).cuda()
        tlb = torch.from_numpy(labels_np).cuda()
        row("torchvision nms (cuda)", f"{P} boxes",
            best_ms(lambda: (ops.nms(tbx, tsc, 0.45), torch.cuda.synchronize()), repeat))
        row("torchvision batched_nms (cuda)", f"{P} boxes/{CLASSES} cls",
            best_ms(lambda: (ops.batched_nms(tbx, tsc, tlb, 0.45), torch.cuda.synchronize()),
                      repeat))

    loss_np = rng.exponential(1.0, (BATCH, P)).astype(np.float32)
    positive_np = rng.random((BATCH, P)) < 0.01
    loss, positive = cp.asarray(loss_np), cp.asarray(positive_np)
    ref = mine_k.hard_negative_mask_reference(loss_np, positive_np, 3)
    check("mining cuda", mine_k.hard_negative_mask_cuda(loss, positive, 3), ref)
    check("mining two-sort cupy", mining_two_sort(loss, positive, 3), ref)
    print("Hard negative mining (ratio 3, ~1% positives)")
    row("cupy two-sort (argsort x2)", f"{BATCH} x {P}",
        best_ms(lambda: mining_two_sort(loss, positive, 3), repeat, loss))
    row("cuda radix select (mine_kernel_v1)", f"{BATCH} x {P}",
        best_ms(lambda: mine_k.hard_negative_mask_cuda(loss, positive, 3), repeat, loss))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minissd.bench kernels",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs; the best is shown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"kernels benchmark, device {args.device}, best of {args.repeat}")
    if args.device == "cuda":
        bench_cuda(rng, args.repeat)
    else:
        bench_cpu(rng, args.repeat)
    return 0
