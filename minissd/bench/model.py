"""Benchmark the whole SSD network: python -m minissd.bench model [options]

    --device cpu|cuda   where to run (default cpu)
    --config NAME       ssd300 (default), ssd512 or tiny
    --batch B [B ...]   batch sizes (default: 1 on the CPU, 1 8 32 on CUDA)
    --backward          also time forward+backward on the CPU (always on CUDA)
    --repeat R          timed runs per case, the best is reported (default 3)
    --no-torch          skip the PyTorch comparison
    --compare-float64   make the one-off comparison with torch in float64 (both sides)
    --memory            no timing: the estimated peak memory of a training step, per config
                        and batch, from the layer plan (minissd/bench/memory.py), and the
                        largest batch that fits --fit GIB [GIB ...] (default 12 24 32 80);
                        --config all (the default with --memory) for tiny, ssd300, ssd512;
                        --optimizer sgd|adam; --measure checks it with tracemalloc on the CPU

For each batch: forward time (inference: eval mode, keep_cache=False), forward+backward time
(training mode), images/s, and on CUDA the peak of CuPy's memory pool. When torch is
importable, the same network is built in torch.nn from the same layer plan (minissd.plan) with
OUR weights copied in; its outputs (and, with backward, its input and parameter gradients) are
compared with ours once (a correctness check), then it is timed the same way (torch.no_grad
for the forward). Thread count and cuDNN / TF32 settings are printed, since they change
torch's numbers a lot.
"""
from __future__ import annotations

import argparse

import numpy as np

from .. import backend
from . import best_time, memory
from ..config import get_config
from ..model import SSD
from ..plan import extra_units, l2norm_input, layer_plan, source_units, stage_layers


def _cupy_pool():
    """CuPy's default memory pool (through backend.current_device_xp(): no cupy import)."""
    return backend.current_device_xp().get_default_memory_pool()


def time_ours(model, batch, size, device, repeat, backward):
    """{"fwd": s, "fwdbwd": s or None, "peak_mb": MB or None} for one batch size."""
    xp = backend.current_device_xp()
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
    sync = lambda: backend.synchronize()                            # noqa: E731
    model.eval()                                  # inference: batch norm's running statistics
    out = {"fwd": best_time(lambda: model.forward(x, keep_cache=False), repeat, sync),
           "fwdbwd": None, "peak_mb": None}
    model.train()
    if device == "cuda":
        pool = _cupy_pool()
        pool.free_all_blocks()
    if backward:
        loc, conf = model.forward(x)
        dloc, dconf = xp.ones_like(loc) / loc.size, xp.ones_like(conf) / conf.size

        def step():
            model.forward(x)
            model.backward(dloc, dconf)
        out["fwdbwd"] = best_time(step, repeat, sync)
    if device == "cuda":
        out["peak_mb"] = pool.total_bytes() / 2**20   # the pool keeps what the peak needed
    return out


# --- the same network in torch.nn ---------------------------------------------------------

def build_torch_ssd(config, torch):
    """SSD in torch.nn with ssd.pytorch's module names, built from the same layer plan
    (minissd.plan) as minissd's SSD, so the two cannot drift apart: every config works,
    batch norm included (state dict keys equal minissd's, plus torch's num_batches_tracked)."""
    if config.body:
        raise ValueError(f"minissd.bench.model: config {config.name!r} has a body (a flat "
                         "layer list, SSDConfig.body); the torch twin is built only for the VGG "
                         "plans (vgg, L2Norm, extras)")
    nn, F = torch.nn, torch.nn.functional
    plan = layer_plan(config)

    class L2Norm(nn.Module):
        def __init__(self, channels, scale):
            super().__init__()
            self.weight = nn.Parameter(torch.full((channels,), float(scale)))

        def forward(self, x):
            norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
            return self.weight.view(1, -1, 1, 1) * x / norm

    class ConvReLU(nn.Conv2d):
        """A conv with its ReLU fused (minissd's Conv2d(relu=True)): keys stay <name>.weight."""
        def forward(self, x):
            return F.relu(super().forward(x))

    def module(p):
        if p.kind == "conv":
            cls = ConvReLU if p.relu else nn.Conv2d
            return cls(p.in_shape[0], p.out_shape[0], p.kernel, p.stride, p.padding, p.dilation)
        if p.kind == "batchnorm":
            return nn.BatchNorm2d(p.in_shape[0])
        if p.kind == "relu":
            return nn.ReLU()
        if p.kind == "maxpool":
            return nn.MaxPool2d(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
        if p.kind == "l2norm":
            return L2Norm(p.in_shape[0], p.init_scale)
        raise ValueError(f"plan entry {p.name}: unknown kind {p.kind!r}")

    class TorchSSD(nn.Module):
        def __init__(self):
            super().__init__()
            self.vgg = nn.ModuleList(module(p) for p in stage_layers(plan, "vgg"))
            self.l2_index = l2norm_input(plan)
            self.L2Norm = module(next(p for p in plan if p.kind == "l2norm"))
            self.extras = nn.ModuleList(module(u[0]) if len(u) == 1 else
                                        nn.Sequential(*(module(p) for p in u))
                                        for u in extra_units(plan))
            self.source_extras = source_units(plan)
            self.loc = nn.ModuleList(module(p) for p in stage_layers(plan, "loc"))
            self.conf = nn.ModuleList(module(p) for p in stage_layers(plan, "conf"))

        def forward(self, x):
            sources = []
            for i, layer in enumerate(self.vgg):
                x = layer(x)
                if i == self.l2_index:
                    sources.append(self.L2Norm(x))
            sources.append(x)
            for j, unit in enumerate(self.extras):
                x = unit(x)
                if j in self.source_extras:
                    sources.append(x)
            n = x.shape[0]
            loc = torch.cat([l(s).permute(0, 2, 3, 1).reshape(n, -1) for s, l in
                             zip(sources, self.loc)], 1).view(n, -1, 4)
            conf = torch.cat([c(s).permute(0, 2, 3, 1).reshape(n, -1) for s, c in
                              zip(sources, self.conf)], 1).view(n, -1, config.num_classes)
            return loc, conf

    return TorchSSD()


def torch_state_dict(model, tmodel, torch):
    """minissd's state dict as torch tensors for `tmodel` (adds BN's num_batches_tracked)."""
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    for k, v in tmodel.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v
    return state


def time_torch(torch, tmodel, batch, size, device, repeat, backward):
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size))
                         .astype(np.float32)).to(device)
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            tmodel(x)
    tmodel.eval()
    out = {"fwd": best_time(fwd, repeat, sync), "fwdbwd": None, "peak_mb": None}
    tmodel.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if backward:
        def step():
            loc, conf = tmodel(x)
            (loc.mean() + conf.mean()).backward()
        out["fwdbwd"] = best_time(step, repeat, sync)
    if device == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def compare_with_torch(model, tmodel, torch, size, device, backward):
    """Max |ours - torch| / max |torch| for loc, conf and (with backward) the input gradient
    and the worst parameter gradient, on two random images and a random upstream gradient,
    both models in training mode (batch norm then uses the batch's statistics; torch refuses
    that for one image, whose 1x1 maps have a single value per channel).

    In float32 the gradients of a deep randomly initialised net can differ by ~1e-2 of their
    maximum: a few ReLU inputs lie within rounding of 0 and flip sign between the libraries,
    which reroutes a few gradient entries. --compare-float64 checks both in float64, where
    they agree to rounding (SSD300: ~3e-11, measured with two images)."""
    dtype = model.dtype
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 3, size, size)).astype(dtype)
    tx = torch.from_numpy(x).to(device).requires_grad_(backward)
    loc, conf = model.forward(backend.to_device(x, device), keep_cache=backward)
    tl, tc = tmodel(tx)

    def err(ours, theirs):
        theirs = theirs.detach().cpu().numpy()
        return float(np.abs(backend.to_numpy(ours) - theirs).max() / np.abs(theirs).max())
    errs = {"loc": err(loc, tl), "conf": err(conf, tc)}
    if backward:
        dloc = rng.standard_normal(loc.shape).astype(dtype)
        dconf = rng.standard_normal(conf.shape).astype(dtype)
        dx = model.backward(backend.to_device(dloc, device), backend.to_device(dconf, device))
        torch.autograd.backward([tl, tc], [torch.from_numpy(dloc).to(device),
                                           torch.from_numpy(dconf).to(device)])
        errs["dx"] = err(dx, tx.grad)
        tgrads = {n: p.grad.detach().cpu().numpy() for n, p in tmodel.named_parameters()}
        # A conv bias followed by batch norm has a zero gradient (BN subtracts the mean), so
        # both sides hold rounding noise there: measure those against the largest gradient.
        plan = layer_plan(model.config)
        zero = {f"{p.name}.bias" for p, q in zip(plan, plan[1:]) if q.kind == "batchnorm"}
        scale = max(float(np.abs(g).max()) for g in tgrads.values())
        worst = max((err(g, torch.from_numpy(tgrads[n])), n) for n, g in model.grads.items()
                    if n not in zero)
        errs[f"worst param grad ({worst[1]})"] = worst[0]
        if zero:
            errs[f"{len(zero)} zero grads (bias before BN), vs largest"] = max(
                float(np.abs(backend.to_numpy(model.grads[n]) - tgrads[n]).max()) / scale
                for n in zero)
        tmodel.zero_grad(set_to_none=True)
    return errs


def _settings(torch, device):
    s = f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    if device == "cuda":
        s += (f", cudnn {torch.backends.cudnn.version()} benchmark="
              f"{torch.backends.cudnn.benchmark}, TF32 matmul="
              f"{torch.backends.cuda.matmul.allow_tf32} conv={torch.backends.cudnn.allow_tf32}")
    return s


def _fmt(r, batch):
    ms = lambda t: f"{1e3 * t:10.1f}" if t is not None else f"{'-':>10}"   # noqa: E731
    ips = f"{batch / r['fwd']:8.1f}"
    mem = f"{r['peak_mb']:9.0f}" if r["peak_mb"] is not None else f"{'-':>9}"
    return f"{ms(r['fwd'])} {ms(r['fwdbwd'])} {ips} {mem}"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minissd.bench model",
                                 description="Time the SSD network (ours and torch.nn).")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--config", default=None,
                    help="ssd300 (the default), ssd512 or tiny; with --memory also 'all'")
    ap.add_argument("--batch", type=int, nargs="+", default=None)
    ap.add_argument("--backward", action="store_true", help="also forward+backward on the CPU")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--compare-float64", action="store_true",
                    help="run the one-off comparison with torch in float64 (both sides)")
    ap.add_argument("--memory", action="store_true",
                    help="print the estimated memory of a training step instead of timing")
    memory.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.memory:
        return memory.run(args)
    args.config = args.config or "ssd300"

    device = backend.set_device(args.device)
    batches = args.batch or ([1, 8, 32] if device == "cuda" else [1])
    backward = args.backward or device == "cuda"
    config = get_config(args.config)
    size = config.image_size
    model = SSD(config, rng=0)
    print(f"{model} on {device}; best of {args.repeat} runs after one warm-up")

    torch = tmodel = None
    if not args.no_torch:
        try:
            import torch                                             # noqa: F811
        except ImportError:
            print("torch not importable: no comparison")
    if torch is not None:
        if device == "cuda" and not torch.cuda.is_available():
            print("torch has no CUDA here: no comparison")
            torch = None
    if torch is not None:
        tmodel = build_torch_ssd(config, torch).to(device)
        tmodel.load_state_dict(torch_state_dict(model, tmodel, torch))
        print(_settings(torch, device))
        if args.compare_float64:
            m64 = SSD(config, rng=0, dtype=np.float64)
            m64.load_state_dict(model.state_dict())         # the same (float32-rounded) values
            errs = compare_with_torch(m64, tmodel.double(), torch, size, device, backward)
            tmodel.float()
            del m64
        else:
            errs = compare_with_torch(model, tmodel, torch, size, device, backward)
        print(f"vs torch ({'float64' if args.compare_float64 else 'float32'}), "
              "max |diff| / max |torch|: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))

    head = f"{'':8}{'batch':>6} {'fwd ms':>10} {'fwd+bwd ms':>10} {'img/s':>8} {'peak MB':>9}"
    print(head)
    for b in batches:
        r = time_ours(model, b, size, device, args.repeat, backward)
        print(f"{'minissd':8}{b:6d} {_fmt(r, b)}")
        if tmodel is not None:
            # torch's batch norm refuses one value per channel in training (1x1 maps, batch 1)
            torch_bwd = backward and not (config.batch_norm and b == 1)
            rt = time_torch(torch, tmodel, b, size, device, args.repeat, torch_bwd)
            print(f"{'torch':8}{b:6d} {_fmt(rt, b)}   ours/torch fwd {r['fwd'] / rt['fwd']:.2f}x"
                  + (f", fwd+bwd {r['fwdbwd'] / rt['fwdbwd']:.2f}x" if torch_bwd else ""))
            if backward and not torch_bwd:
                print(f"{'':8}(no torch fwd+bwd at batch 1: its batch norm needs more than one "
                      "value per channel in training)")
    return 0
