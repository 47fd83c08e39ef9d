"""The memory of one training step, estimated from the layer plan (no arrays are made).

    estimate = step_memory(config, batch, optimizer="sgd")     # -> StepMemory
    estimate.peak                                              # bytes at the step's peak
    largest_batch(config, memory_bytes)                        # the largest batch that fits

What a training step holds (minissd/training/step.py: forward, matching, loss, backward, the
optimizer's update), in bytes of the model's dtype:
  * parameters, their gradients (every layer keeps the last backward's), and the optimizer's
    state: SGD's momentum (one array per parameter) or Adam's two moments (two);
  * the images of the batch;
  * the caches: what each layer's forward keeps for backward. A conv keeps its input
    (minissd/ops/conv.py, keep="input"; keep="cols" keeps its im2col columns instead, 9x
    larger for a 3x3 conv), a ReLU its bool mask, a max pool its uint8 argmax, batch norm its
    normalised input, L2Norm its input and output; an activation that two layers keep (a
    source, which the heads and the next extra layer both read) is counted once;
  * the workspace: what lives only inside one layer's forward or backward: the output being
    made, the columns of a chunk of images (ops/conv.py's workspace), the zero-padded dx of
    col2im, the upstream gradient and its copies.

The walk follows the order of SSD.forward and SSD.backward: the live bytes go up by each
layer's cache and output in forward, and down again in backward, where each layer's cache is
dropped once used (model.py). The peak is the largest live total at any moment, usually at
the start of backward (every cache held, plus the heads' gradients) or inside the
full-resolution layers' backward.

How exact: the walk counts every array of the size of an activation; a few small ones (per
channel statistics, the IoU matrix of matching, Python objects) are left out. Measured on
the CPU with tracemalloc (which NumPy reports its arrays to), tests/test_memory.py: within
2% for tiny at batch 1, 2 and 8 and ssd300 at batch 1 and 2, with either conv cache.
On a GPU, CuPy's memory pool rounds every block up to 512 bytes and may keep blocks that a
later, larger array cannot use; leave some room above the estimate.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from ..config import CONFIGS, get_config
from ..ops.conv import chunk_images, conv_memory, set_conv_memory
from ..plan import layer_plan

GIB, MIB = 2 ** 30, 2 ** 20
LIMIT = 4096              # largest_batch looks no further


@dataclass
class StepMemory:
    """The estimate of one training step, in bytes."""
    config: str
    batch: int
    keep: str                 # what convs keep for backward: "input" or "cols"
    params: int
    grads: int
    optimizer: int            # SGD momentum or Adam's two moments
    images: int
    caches: int               # everything forward keeps for backward, at the end of forward
    peak: int                 # the largest live total of the step
    peak_at: str              # where it happens
    per_layer: list = field(default_factory=list)   # [(name, cache bytes)] in forward order

    @property
    def persistent(self) -> int:
        """Parameters, gradients and optimizer state: what a step holds whatever the batch."""
        return self.params + self.grads + self.optimizer

    @property
    def workspace(self) -> int:
        """The peak minus what is held throughout (persistent, images, caches)."""
        return self.peak - self.persistent - self.images - self.caches


class _Live:
    """The running total of live bytes and its maximum."""

    def __init__(self, start):
        self.now, self.peak, self.at = start, start, "start"

    def add(self, nbytes):
        self.now += nbytes

    def spike(self, extra, where):
        """A moment with `extra` bytes of workspace on top of what is live."""
        if self.now + extra > self.peak:
            self.peak, self.at = self.now + extra, where


def _size(shape, n=1):
    return n * math.prod(shape)


def step_memory(config, batch, optimizer="sgd", keep=None, workspace_bytes=None,
                dtype=np.float32, max_objects=10) -> StepMemory:
    """The estimate of one training step of SSD(config) at `batch` images (see the module
    docstring). optimizer "sgd" or "adam"; keep "input" or "cols" (None: ops/conv.py's
    current setting); workspace_bytes: the conv workspace (None: the current setting);
    max_objects: ground-truth boxes of the most crowded image (matching's arrays)."""
    if isinstance(config, str):
        config = get_config(config)
    settings = conv_memory()
    keep = keep or settings["keep"]
    work = workspace_bytes or settings["workspace_bytes"]
    f = np.dtype(dtype).itemsize
    if config.body:
        raise ValueError(f"minissd.bench.memory: config {config.name!r} has a body (a flat "
                         "layer list, SSDConfig.body); the estimate walks only the VGG plans "
                         "(vgg, L2Norm, extras); measure it with measured_peak instead")
    N, P, C = batch, config.num_priors(), config.num_classes
    plan = layer_plan(config)
    n_params = sum(p.num_params for p in plan)
    params = n_params * f
    opt = params * (2 if optimizer == "adam" else 1)
    images = _size((3, config.image_size, config.image_size), N) * f
    # steady state: the previous step's gradients are held through this step's forward
    live = _Live(params + params + opt + images)

    def a(shape):                                   # an activation of the batch, float
        return _size(shape, N) * f

    def m(shape):                                   # a mask of the batch, one byte
        return _size(shape, N)

    def conv_cols(p):                               # (K, Ho*Wo) of one image, bytes
        return p.in_shape[0] * p.kernel ** 2 * p.out_shape[1] * p.out_shape[2] * f

    def pointwise(p):
        return p.kernel == 1 and p.stride == 1 and p.padding == 0

    def padded(p):                                  # one image's zero-padded input, bytes
        c, h, w = p.in_shape
        return c * (h + 2 * p.padding) * (w + 2 * p.padding) * f

    def conv_workspace_fwd(p):
        """Columns (and padded input) of one chunk while the conv's forward runs."""
        if pointwise(p):
            return 0
        n_c = N if keep == "cols" else chunk_images(N, conv_cols(p), work)
        return n_c * (conv_cols(p) + (padded(p) if p.padding else 0))

    def conv_workspace_bwd(p):
        """col2im's padded dx of the batch, and per chunk the rebuilt columns (with the padded
        input im2col makes them from), dropped before its dcols are made."""
        if pointwise(p):
            return a(p.in_shape)                    # dx, the dcols themselves
        n_c = chunk_images(N, conv_cols(p), work)
        rebuilt = 0 if keep == "cols" else n_c * (padded(p) if p.padding else 0)
        return n_c * conv_cols(p) + rebuilt + N * padded(p)

    def conv_cache(p):
        """Bytes the conv's cache adds beyond keeping its input (the input counted apart)."""
        return N * conv_cols(p) if keep == "cols" and not pointwise(p) else 0

    def keeps_input(p):
        return p.kind == "l2norm" or (p.kind == "conv" and (keep == "input" or pointwise(p)))

    # --- forward: the trunk (vgg with the L2Norm branch, then extras) ---------------------
    trunk = [p for p in plan if p.stage in ("vgg", "l2norm", "extras")]
    heads = [p for p in plan if p.stage == "loc"]
    conf_heads = {p.source: p for p in plan if p.stage == "conf"}
    per_layer, caches = [], 0
    kept = set()                     # activations held by a cache or as a source
    current = ("images", images)     # the activation the next trunk layer reads
    for p in trunk:
        name, nbytes = current
        out = a(p.out_shape)
        own = {"conv": conv_cache(p), "relu": m(p.out_shape), "maxpool": m(p.out_shape),
               "batchnorm": a(p.out_shape), "l2norm": 0}[p.kind]
        if p.kind == "conv" and p.relu:
            own += m(p.out_shape)                   # the fused ReLU's mask
        fwd = {"conv": conv_workspace_fwd(p) + (2 * out if p.relu else out),
               "relu": out, "batchnorm": 3 * out, "l2norm": 3 * out,
               "maxpool": out + 3 * m(p.out_shape) + (a(p.in_shape) if p.padding or
                                                      p.ceil_mode else 0)}[p.kind]
        live.spike(fwd, f"forward {p.name} ({p.label})")
        live.add(own + out)
        held = own
        if keeps_input(p) and name not in kept:
            kept.add(name)
            held += nbytes
        elif name not in kept and p.kind != "l2norm":
            live.add(-nbytes)                       # the input is dropped
        caches += held
        per_layer.append((p.name, held))
        if p.kind == "l2norm":
            kept.add(p.name)                        # source 0, held by the sources list
            caches += out
            per_layer[-1] = (p.name, held + out)
            continue                                # a side branch: the trunk goes on from h
        if p.source is not None:
            kept.add(p.name)
        current = (p.name, out)
    if current[0] not in kept:                      # the last source: held by the heads
        caches += current[1]
        per_layer[-1] = (per_layer[-1][0], per_layer[-1][1] + current[1])

    # --- forward: the heads, one fused loc+conf conv per source ---------------------------
    outputs = N * P * (4 + C) * f                   # loc (N, P, 4) and conf (N, P, C)
    live.add(outputs)
    head_w = sum(p.num_params + conf_heads[p.source].num_params for p in heads) * f
    live.add(head_w)                                # the stacked weights, in the caches
    caches += head_w
    for p in heads:
        q = conf_heads[p.source]
        fused = p.out_shape[0] + q.out_shape[0]
        y = a((fused,) + p.out_shape[1:])
        live.spike(conv_workspace_fwd(p) + y, f"forward heads (source {p.source})")
        if keep == "cols":
            live.add(N * conv_cols(p))
            caches += N * conv_cols(p)
    per_layer.append(("heads", head_w))

    # --- matching and the loss ----------------------------------------------------------
    targets = N * P * (4 * f + 8)                   # loc_t (N, P, 4), conf_t (N, P) int64
    live.spike(N * max_objects * P * f * 2 + targets, "matching")
    live.add(targets)
    ce = N * P * C * f
    loss_cache = N * P * 4 * f + ce + 2 * N * P     # diff, softmax, positive, negative
    live.spike(loss_cache + 3 * ce, "loss forward")
    live.add(loss_cache)
    live.spike(N * P * (4 + C) * f + 2 * ce, "loss backward")
    # forward_backward drops the outputs, the targets and the loss cache before the model's
    # backward: then dloc and dconf are held
    live.add(-(loss_cache + targets + outputs) + N * P * (4 + C) * f)
    end_of_forward = caches

    # --- backward: heads, then the trunk in reverse, each cache dropped once used --------
    live.spike(0, "start of backward")
    dsources = 0
    for p in heads:
        q = conf_heads[p.source]
        y = a((p.out_shape[0] + q.out_shape[0],) + p.out_shape[1:])
        live.spike(2 * y + conv_workspace_bwd(p), f"backward heads (source {p.source})")
        live.add(a(p.in_shape))                     # dsource
        dsources += a(p.in_shape)
    live.add(-N * P * (4 + C) * f - head_w)         # dloc, dconf and the heads' caches
    for p in heads:
        if keep == "cols":
            live.add(-N * conv_cols(p))
    for (name, held), p in zip(reversed(per_layer[:-1]), reversed(trunk)):
        dy = a(p.out_shape)                         # the upstream gradient, live meanwhile
        dx = a(p.in_shape) if p.name != trunk[0].name else 0
        bwd = {"conv": conv_workspace_bwd(p) + (dy if p.relu else 0),
               "relu": dx, "batchnorm": 3 * dx, "l2norm": 4 * dx,
               "maxpool": dx + 2 * dy}[p.kind]
        if p.name == trunk[0].name:                 # the first conv: no dx (need_dx=False)
            bwd -= N * padded(p) if not pointwise(p) else 0
        live.spike(dy + bwd, f"backward {p.name} ({p.label})")
        live.add(-held)                             # its cache (and kept input) dropped
        if p.source is not None:
            live.add(-dy)                           # its source's gradient, now added in
    return StepMemory(config.name, N, keep, params, params, opt, images, end_of_forward,
                      live.peak, live.at, per_layer)


def measured_peak(config, batch, optimizer="sgd", steps=2, max_objects=10, seed=0):
    """The peak bytes NumPy allocated during the last of `steps` training steps on the CPU
    (tracemalloc, which NumPy reports its arrays to), counting everything alive then: the
    model, its gradients, the optimizer's state, the batch, and the step's own arrays."""
    import tracemalloc

    from ..matching import match_batch  # noqa: F401  (imported before tracing starts)
    from ..model import SSD
    from ..optim import SGD, Adam
    from ..priors import default_boxes
    from ..training.step import forward_backward
    if isinstance(config, str):
        config = get_config(config)
    rng = np.random.default_rng(seed)
    priors = default_boxes(config)
    centre = rng.uniform(0.2, 0.8, (batch, max_objects, 2))
    wh = rng.uniform(0.05, 0.4, (batch, max_objects, 2))
    gt = np.concatenate([centre - wh / 2, centre + wh / 2], -1).astype(np.float32)
    labels = rng.integers(1, config.num_classes, (batch, max_objects))
    x = rng.uniform(-1, 1, (batch, 3, config.image_size, config.image_size)).astype(np.float32)
    b = (x, list(gt), list(labels))
    warm = SSD(config, rng=0)           # compiles the CPU kernels before tracing starts
    forward_backward(warm, priors, (x[:1], list(gt[:1]), list(labels[:1])), config)
    del warm
    tracemalloc.start()
    try:
        model = SSD(config, rng=0)
        opt = Adam() if optimizer == "adam" else SGD()
        for _ in range(steps):
            tracemalloc.reset_peak()
            forward_backward(model, priors, b, config)
            opt.step(model.params(), model.grads, 1e-4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


def largest_batch(config, memory_bytes, optimizer="sgd", keep=None, limit=LIMIT):
    """The largest batch whose estimated peak fits in memory_bytes (0 when none does)."""
    lo, hi = 0, 1
    while hi <= limit and step_memory(config, hi, optimizer, keep).peak <= memory_bytes:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)                         # counted as not fitting
    while hi - lo > 1:                              # peak(lo) fits, peak(hi) does not
        mid = (lo + hi) // 2
        if step_memory(config, mid, optimizer, keep).peak <= memory_bytes:
            lo = mid
        else:
            hi = mid
    return lo


def memory_table(configs, batches, optimizer="sgd", keeps=("input", "cols"),
                 fit_gib=(12, 24, 32, 80), measure=False) -> str:
    """The estimate as a text table: per config and batch, the peak with each conv cache
    choice and its parts (and, with measure, the peak tracemalloc measures on the CPU); then
    the largest batch that fits each memory size."""
    rows = [f"{'config':<8}{'batch':>6} {'keep':>6} {'peak MiB':>9} {'caches':>8} "
            f"{'workspace':>10} {'params+grads+opt':>17}"
            + (f" {'measured':>9} {'est/meas':>8}" if measure else "") + "  peak at"]
    for name in configs:
        for b in batches:
            for keep in keeps:
                e = step_memory(name, b, optimizer, keep)
                row = (f"{name:<8}{b:6d} {keep:>6} {e.peak / MIB:9.1f} {e.caches / MIB:8.1f} "
                       f"{e.workspace / MIB:10.1f} {e.persistent / MIB:17.1f}")
                if measure:
                    old = set_conv_memory(keep=keep)
                    try:
                        got = measured_peak(name, b, optimizer)
                    finally:
                        set_conv_memory(**old)
                    row += f" {got / MIB:9.1f} {e.peak / got:8.3f}"
                rows.append(row + f"  {e.peak_at}")
    rows += ["", f"largest batch that fits ({optimizer}, float32):",
             f"{'config':<8} {'keep':>6} "
             + " ".join(f"{format(g, 'g') + ' GiB':>8}" for g in fit_gib)]
    for name in configs:
        for keep in keeps:
            fits = [largest_batch(name, g * GIB, optimizer, keep, LIMIT) for g in fit_gib]
            rows.append(f"{name:<8} {keep:>6} " + " ".join(
                f"{b:8d}" if b < LIMIT else f"{str(LIMIT) + '+':>8}" for b in fits))
    return "\n".join(rows)


def add_arguments(ap):
    """The memory options (bench model's parser has them too)."""
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                    help="--memory: the optimizer whose state is counted (default sgd)")
    ap.add_argument("--fit", type=float, nargs="+", default=[12, 24, 32, 80],
                    help="--memory: memory sizes in GiB to find the largest batch for")
    ap.add_argument("--measure", action="store_true",
                    help="--memory: also measure the peak on the CPU with tracemalloc "
                         "(small batches: it runs two training steps per row)")


def run(args):
    configs = (["tiny", "ssd300", "ssd512"] if getattr(args, "config", None) in (None, "all")
               else [args.config])
    batches = getattr(args, "batch", None) or [1, 8, 32]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        print(f"minissd.bench model: error: --config {bad[0]}: unknown config; choose "
              f"{', '.join(CONFIGS)} or all", file=sys.stderr)
        return 2
    if min(batches) < 1:
        print("minissd.bench model: error: --batch: batch sizes must be 1 or more",
              file=sys.stderr)
        return 2
    print(f"training step memory estimated from the layer plan (minissd/bench/memory.py): "
          f"float32, {args.optimizer}, conv workspace {conv_memory()['workspace_bytes'] // 2**20}"
          f" MiB; keep = what each conv keeps for backward (input: the default; cols: im2col)")
    print(memory_table(configs, batches, args.optimizer, fit_gib=args.fit,
                       measure=args.measure))
    return 0
