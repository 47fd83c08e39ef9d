"""Data pipeline throughput: decode + SSD augmentation + batching, images per second.

    python -m minissd.bench data [--size 300] [--batch-size 32] [--batches 8]
                                 [--workers 0 2] [--image-size 160] [--root DIR]

Runs on the synthetic set (generated once into the cache) unless --root names a VOC-format
folder or VOCdevkit. Each row times `--batches` batches from one loader, three times after a
warm-up run of as many batches (best_time), and reports the best as images per second: with
0 workers everything runs in the calling thread, which is the per-core figure; with N workers
the thread pool overlaps decoding and resizing (Pillow releases the GIL), so the gain over 0
workers is what prefetching buys.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from ..config import CAFFE_PREPROCESS
from . import best_time
from ..data.augment import SSDAugmentation, photometric_distort, pixel_mean
from ..data.loader import DataLoader
from ..data.synthetic import ensure_synthetic
from ..data.voc import VOCDataset


def _time_loader(ds, args, workers, transform):
    """Images per second of the loader: the best of 3 runs of args.batches batches."""
    loader = DataLoader(ds, args.batch_size, transform, CAFFE_PREPROCESS, seed=0,
                        num_workers=workers, prefetch=2)
    it = iter(loader)                               # never ends: training iteration
    try:
        best = best_time(lambda: [next(it) for _ in range(args.batches)], repeat=3)
    finally:
        it.close()
    return args.batches * args.batch_size / best


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minissd.bench data", description=__doc__.split(
        "\n")[0])
    p.add_argument("--size", type=int, default=300, help="network input side (300)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=8, help="timed batches per run (8)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="thread counts to time (0 = the calling thread)")
    p.add_argument("--image-size", type=int, default=160, help="synthetic image side (160)")
    p.add_argument("--root", default=None, help="a VOC folder instead of the synthetic set")
    p.add_argument("--split", default=None, help="split of --root ('train' or '2007/trainval')")
    p.add_argument("--device", default="cpu", help="ignored: the data pipeline is CPU-only")
    args = p.parse_args(argv)

    if args.root:
        layout_split = "train" if os.path.isdir(os.path.join(args.root, "JPEGImages")) \
            else "2007/trainval"
        ds = VOCDataset(args.root, splits=(args.split or layout_split,))
        where = args.root
    else:
        n = max(400, (args.batches + 1) * args.batch_size)
        root = ensure_synthetic(n, 50, args.image_size, seed=0)
        ds = VOCDataset(root, splits=("train",))
        where = f"synthetic {args.image_size}x{args.image_size} ({root})"
    print(f"data: {len(ds)} images from {where}; input {args.size}x{args.size}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'pipeline':<44}{'workers':>8}{'images/s':>12}")
    full = SSDAugmentation(args.size, pixel_mean(CAFFE_PREPROCESS))
    geometric = SSDAugmentation(args.size, pixel_mean(CAFFE_PREPROCESS), photometric=False)
    for name, transform in (("decode + full SSD augmentation + batch", full),
                            ("decode + geometric only + batch", geometric)):
        for w in args.workers:
            print(f"{name:<44}{w:>8}{_time_loader(ds, args, w, transform):>12.1f}")
    # The photometric step alone, on one decoded image, in the calling thread.
    image = ds[0].image
    rng = np.random.default_rng(0)
    best = best_time(lambda: [photometric_distort(image, rng) for _ in range(50)], repeat=3) / 50
    print(f"photometric distortion alone, {image.shape[1]}x{image.shape[0]}: "
          f"{best * 1e3:.2f} ms per image")
    return 0
