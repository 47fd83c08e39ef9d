"""Benchmark: forward + backward of every SSD convolution, minissd vs PyTorch.

    python -m minissd.bench layers [--device cpu|cuda] [--batch 2] [--repeat 3] [--config ssd300]

The conv shapes come from the layer plan (minissd.plan, which model.py builds from): the VGG base
convs (incl. the dilated conv6 and the 1x1 conv7), the extra layers, and the loc/conf heads.
Each row times conv2d_forward + conv2d_backward on random float32 data (best of --repeat runs,
after one warm-up), and, when torch is importable, torch.nn.functional.conv2d forward +
backward (grads for x, w and b) at the same shape and thread count. Then a naive-vs-fast
comparison on a small shape. Timings on a shared machine are noisy: take the best of a few runs.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from .. import backend
from . import best_time
from ..config import get_config
from ..ops.conv import (conv2d_backward, conv2d_backward_naive, conv2d_forward,
                        conv2d_forward_naive, conv_output_size)
from ..plan import layer_plan


def ssd_conv_shapes(config):
    """Every conv of an SSD network as (name, C, H, W, F, k, stride, padding, dilation), read
    from the layer plan (minissd.plan): the base convs, the extra layers, the loc/conf heads."""
    return [(p.label.split(" (")[0].replace(" head ", ""), p.in_shape[0], p.in_shape[1],
             p.in_shape[2], p.out_shape[0], p.kernel, p.stride, p.padding, p.dilation)
            for p in layer_plan(config) if p.kind == "conv"]


def _minissd_step(xp, n, shape, rng):
    _, c, h, w, f, k, s, p, d = shape
    x = xp.asarray(rng.standard_normal((n, c, h, w), dtype=np.float32))
    wt = xp.asarray(rng.standard_normal((f, c, k, k), dtype=np.float32) * 0.01)
    b = xp.zeros(f, dtype=xp.float32)
    ho, wo = conv_output_size(h, k, s, p, d), conv_output_size(w, k, s, p, d)
    dy = xp.asarray(rng.standard_normal((n, f, ho, wo), dtype=np.float32))

    def step():
        y, cache = conv2d_forward(x, wt, b, s, p, d)
        return conv2d_backward(dy, cache)
    return step


def _torch_step(torch, dev, n, shape):
    _, c, h, w, f, k, s, p, d = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g).to(dev).requires_grad_()
    wt = (torch.randn(f, c, k, k, generator=g) * 0.01).to(dev).requires_grad_()
    b = torch.zeros(f, device=dev, requires_grad=True)
    ho, wo = conv_output_size(h, k, s, p, d), conv_output_size(w, k, s, p, d)
    dy = torch.randn(n, f, ho, wo, generator=g).to(dev)

    def step():
        y = torch.nn.functional.conv2d(x, wt, b, s, p, d)
        return torch.autograd.grad(y, (x, wt, b), dy)
    return step


def _threads():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return os.cpu_count() or 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minissd.bench layers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row; the best is kept")
    ap.add_argument("--config", default="ssd300", help="ssd300, ssd512 or tiny")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = ap.parse_args(argv)

    backend.set_device(args.device)
    xp = backend.current_device_xp()
    rng = np.random.default_rng(0)
    sync = backend.synchronize

    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811  (optional: only for the comparison)
        except ImportError:
            print("torch is not importable: timing minissd only")
    tdev = "cuda" if args.device == "cuda" else "cpu"
    if torch is not None:
        if tdev == "cpu":
            torch.set_num_threads(_threads())
            print(f"torch {torch.__version__} CPU, threads {torch.get_num_threads()}, "
                  f"mkldnn {torch.backends.mkldnn.is_available()}")
        else:
            torch.backends.cudnn.benchmark = True
            print(f"torch {torch.__version__} CUDA, cudnn {torch.backends.cudnn.version()}, "
                  f"cudnn.benchmark True, cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
                  f"matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}")
            torch_sync = torch.cuda.synchronize
    if args.device == "cuda":
        print(f"minissd on CuPy; CUPY_TF32={os.environ.get('CUPY_TF32', '0')}")
    else:
        print(f"minissd on NumPy {np.__version__}; BLAS threads (env) {_threads()}")

    config = get_config(args.config)
    shapes = ssd_conv_shapes(config)
    print(f"\n{config.name}: {len(shapes)} convs, batch {args.batch}, float32, forward+backward, "
          f"best of {args.repeat}")
    head = (f"{'layer':<10}{'C':>6}{'HxW':>9}{'F':>6}{'k':>3}{'s':>3}{'p':>3}{'d':>3}"
            f"{'minissd ms':>12}")
    print(head + (f"{'torch ms':>10}{'ratio':>7}" if torch else ""))
    total_ours = total_torch = 0.0
    for shape in shapes:
        name, c, h, w, f, k, s, p, d = shape
        t_ours = best_time(_minissd_step(xp, args.batch, shape, rng), args.repeat, sync)
        total_ours += t_ours
        line = (f"{name:<10}{c:>6}{f'{h}x{w}':>9}{f:>6}{k:>3}{s:>3}{p:>3}{d:>3}"
                f"{t_ours * 1e3:>12.1f}")
        if torch is not None:
            t_torch = best_time(_torch_step(torch, tdev, args.batch, shape), args.repeat,
                                 torch_sync if tdev == "cuda" else (lambda: None))
            total_torch += t_torch
            line += f"{t_torch * 1e3:>10.1f}{t_ours / t_torch:>7.2f}"
        print(line)
    print(f"{'total':<40}{total_ours * 1e3:>12.1f}"
          + (f"{total_torch * 1e3:>10.1f}{total_ours / total_torch:>7.2f}" if torch else ""))

    # naive vs fast on a small shape, checked equal before being timed
    small = ("small", 16, 12, 12, 16, 3, 1, 1, 1)
    _, c, h, w, f, k, s, p, d = small
    x = xp.asarray(rng.standard_normal((2, c, h, w)))
    wt = xp.asarray(rng.standard_normal((f, c, k, k)))
    b = xp.asarray(rng.standard_normal(f))
    dy = xp.asarray(rng.standard_normal((2, f, h, w)))
    fast = conv2d_backward(dy, conv2d_forward(x, wt, b, s, p, d)[1])
    naive = conv2d_backward_naive(dy, conv2d_forward_naive(x, wt, b, s, p, d)[1])
    err = max(float(abs(a - b_).max()) for a, b_ in zip(fast, naive))
    t_fast = best_time(lambda: conv2d_backward(dy, conv2d_forward(x, wt, b, s, p, d)[1]),
                        args.repeat, sync)
    t_naive = best_time(lambda: conv2d_backward_naive(dy, conv2d_forward_naive(x, wt, b, s, p,
                                                                                d)[1]),
                         args.repeat, sync)
    print(f"\nnaive vs fast, x (2, {c}, {h}, {w}), w ({f}, {c}, {k}, {k}), float64, fwd+bwd: "
          f"naive {t_naive * 1e3:.1f} ms, fast {t_fast * 1e3:.2f} ms "
          f"({t_naive / t_fast:.0f}x), max |difference| {err:.1e}")
    return 0
