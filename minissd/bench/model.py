"""Benchmark the whole SSD network: python -m minissd.bench model [options]

    --device cpu|cuda   where to run (default cpu)
    --config NAME       ssd300 (default), ssd512 or tiny
    --batch B [B ...]   batch sizes (default: 1 on the CPU, 1 8 32 on CUDA)
    --backward          also time forward+backward on the CPU (always on CUDA)
    --repeat R          timed runs per case, the best is reported (default 3)
    --no-torch          skip the PyTorch comparison
    --compare-float64   make the one-off comparison with torch in float64 (both sides)

For each batch: forward time (inference: keep_cache=False), forward+backward time, images/s,
and on CUDA the peak of CuPy's memory pool. When torch is importable, the same network is
built in torch.nn with OUR weights copied in; its outputs (and, with backward, its input and
parameter gradients) are compared with ours once (a correctness check), then it is timed the same way (torch.no_grad for the forward). Thread
count and cuDNN / TF32 settings are printed, since they change torch's numbers a lot.
"""
from __future__ import annotations

import argparse

import numpy as np

from .. import backend
from . import best_time
from ..config import get_config
from ..model import SSD


def _cupy_pool():
    """CuPy's default memory pool (reached through backend.xp(), the only cupy import)."""
    return backend.xp().get_default_memory_pool()


def time_ours(model, batch, size, device, repeat, backward):
    """{"fwd": s, "fwdbwd": s or None, "peak_mb": MB or None} for one batch size."""
    xp = backend.xp()
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
    sync = lambda: backend.synchronize()                            # noqa: E731
    out = {"fwd": best_time(lambda: model.forward(x, keep_cache=False), repeat, sync),
           "fwdbwd": None, "peak_mb": None}
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
    """SSD in torch.nn with ssd.pytorch's module names, built from the same SSDConfig."""
    nn, F = torch.nn, torch.nn.functional

    class L2Norm(nn.Module):
        def __init__(self, channels, scale):
            super().__init__()
            self.weight = nn.Parameter(torch.full((channels,), float(scale)))

        def forward(self, x):
            norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
            return self.weight.view(1, -1, 1, 1) * x / norm

    class TorchSSD(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in, n_conv = [], 3, 0
            for v in config.base:
                if v in ("M", "C"):
                    layers.append(nn.MaxPool2d(2, 2, ceil_mode=(v == "C")))
                else:
                    layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
                    c_in, n_conv = v, n_conv + 1
                    if n_conv == config.l2norm_conv:
                        self.l2_index, l2_ch = len(layers) - 1, v
            d = config.fc_dilation
            layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(c_in, config.fc[0], 3, padding=d,
                                                        dilation=d), nn.ReLU(inplace=True),
                       nn.Conv2d(config.fc[0], config.fc[1], 1), nn.ReLU(inplace=True)]
            self.vgg = nn.ModuleList(layers)
            self.L2Norm = L2Norm(l2_ch, config.l2norm_scale)
            ins = (config.fc[1],) + tuple(e[0] for e in config.extras[:-1])
            self.extras = nn.ModuleList(nn.Conv2d(i, o, k, s, p)
                                        for i, (o, k, s, p) in zip(ins, config.extras))
            chans = [l2_ch, config.fc[1]] + [e[0] for e in config.extras[1::2]]
            self.loc = nn.ModuleList(nn.Conv2d(c, k * 4, 3, padding=1)
                                     for c, k in zip(chans, config.mbox))
            self.conf = nn.ModuleList(nn.Conv2d(c, k * config.num_classes, 3, padding=1)
                                      for c, k in zip(chans, config.mbox))

        def forward(self, x):
            sources = []
            for i, layer in enumerate(self.vgg):
                x = layer(x)
                if i == self.l2_index:
                    sources.append(self.L2Norm(x))
            sources.append(x)
            for j, conv in enumerate(self.extras):
                x = F.relu(conv(x), inplace=True)
                if j % 2 == 1:
                    sources.append(x)
            n = x.shape[0]
            loc = torch.cat([l(s).permute(0, 2, 3, 1).reshape(n, -1) for s, l in
                             zip(sources, self.loc)], 1).view(n, -1, 4)
            conf = torch.cat([c(s).permute(0, 2, 3, 1).reshape(n, -1) for s, c in
                              zip(sources, self.conf)], 1).view(n, -1, config.num_classes)
            return loc, conf

    return TorchSSD()


def time_torch(torch, tmodel, batch, size, device, repeat, backward):
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size))
                         .astype(np.float32)).to(device)
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            tmodel(x)
    out = {"fwd": best_time(fwd, repeat, sync), "fwdbwd": None, "peak_mb": None}
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
    and the worst parameter gradient, on one random image and a random upstream gradient.

    In float32 the gradients of a deep randomly initialised net can differ by ~1e-2 of their
    maximum: a few ReLU inputs lie within rounding of 0 and flip sign between the libraries,
    which reroutes a few gradient entries. --compare-float64 checks both in float64, where
    they agree to rounding (SSD300: ~1e-14)."""
    dtype = model.dtype
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 3, size, size)).astype(dtype)
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
        tgrads = {n: p.grad for n, p in tmodel.named_parameters()}
        worst = max(((err(g, tgrads[n]), n) for n, g in model.grads.items()))
        errs[f"worst param grad ({worst[1]})"] = worst[0]
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
    ap.add_argument("--config", default="ssd300")
    ap.add_argument("--batch", type=int, nargs="+", default=None)
    ap.add_argument("--backward", action="store_true", help="also forward+backward on the CPU")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--compare-float64", action="store_true",
                    help="run the one-off comparison with torch in float64 (both sides)")
    args = ap.parse_args(argv)

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
        tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
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
            rt = time_torch(torch, tmodel, b, size, device, args.repeat, backward)
            print(f"{'torch':8}{b:6d} {_fmt(rt, b)}   ours/torch fwd {r['fwd'] / rt['fwd']:.2f}x"
                  + (f", fwd+bwd {r['fwdbwd'] / rt['fwdbwd']:.2f}x" if backward else ""))
    return 0
