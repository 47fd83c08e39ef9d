"""Benchmark the steps around the network: python -m minissd.bench loss [options]

    --device cpu|cuda   where to run (default cpu)
    --batch B           images per batch for matching and the loss (default 32)
    --detect-batch B    images per batch for detection (default 8)
    --repeat R          timed runs per case, the best is reported (default 3)

At SSD300's sizes (8732 default boxes, 21 classes):
  matching      match_batch of B images with 1..20 ground-truth boxes each
  loss          multibox_loss_forward + backward (hard negative mining included)
  detect        detect(): softmax, decode, per-class threshold, batched NMS, top-200, on
                logits that look like a half-trained network's (most boxes background,
                a few confident objects), so NMS has real work
"""
from __future__ import annotations

import argparse

import numpy as np

from .. import backend
from ..config import ssd300
from ..loss import multibox_loss_backward, multibox_loss_forward
from ..matching import match_batch
from ..postprocess import detect
from ..priors import default_boxes
from . import best_time


def random_ground_truth(rng, batch, max_objects=20):
    """Per image (G, 4) corner boxes in [0, 1] and (G,) labels in 1..20, G in 1..max_objects."""
    boxes, labels = [], []
    for _ in range(batch):
        g = int(rng.integers(1, max_objects + 1))
        c = rng.uniform(0.1, 0.9, (g, 2))
        wh = rng.uniform(0.05, 0.6, (g, 2))
        boxes.append(np.clip(np.concatenate([c - wh / 2, c + wh / 2], 1), 0, 1).astype(np.float32))
        labels.append(rng.integers(1, 21, g))
    return boxes, labels


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minissd.bench loss",
                                 description="Time matching, the MultiBox loss and detect().")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--detect-batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    device = backend.set_device(args.device)
    xp = backend.current_device_xp()
    config = ssd300()
    priors = xp.asarray(default_boxes(config))
    P, C, N = priors.shape[0], config.num_classes, args.batch
    rng = np.random.default_rng(0)
    sync = backend.synchronize
    print(f"loss/detect benchmark, device {device}, best of {args.repeat}, "
          f"P = {P}, C = {C}")

    gt_boxes, gt_labels = random_ground_truth(rng, N)
    t = best_time(lambda: match_batch(gt_boxes, gt_labels, priors), args.repeat, sync)
    print(f"  match_batch              {N} images      {t * 1e3:9.2f} ms "
          f"({t * 1e3 / N:.2f} ms per image)")

    loc_t, conf_t = match_batch(gt_boxes, gt_labels, priors)
    loc = xp.asarray(rng.normal(0, 1, (N, P, 4)).astype(np.float32))
    conf = xp.asarray(rng.normal(0, 1, (N, P, C)).astype(np.float32))

    def loss_step():
        _, _, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
        return multibox_loss_backward(cache)
    t = best_time(loss_step, args.repeat, sync)
    print(f"  multibox loss fwd+bwd    {N} images      {t * 1e3:9.2f} ms")

    B = args.detect_batch
    logits = rng.normal(0, 1, (B, P, C)).astype(np.float32)
    logits[..., 0] += 6.0                                       # mostly background
    hot = rng.random((B, P)) < 0.02                             # ~2% confident boxes
    logits[hot, rng.integers(1, C, int(hot.sum()))] += 9.0
    dloc = xp.asarray(rng.normal(0, 0.5, (B, P, 4)).astype(np.float32))
    dconf = xp.asarray(logits)
    n_det = sum(len(d[1]) for d in detect(dloc, dconf, priors))
    t = best_time(lambda: detect(dloc, dconf, priors), args.repeat, sync)
    print(f"  detect (NMS 0.45, top 200) {B} images    {t * 1e3:9.2f} ms "
          f"({B / t:.1f} images/s, {n_det / B:.0f} detections per image)")
    return 0


if __name__ == "__main__":
    main()
