"""Train SSD: python -m minissd.train [options]   (python -m minissd.train --help)

With no options it trains the `tiny` config on the synthetic set (generated once, cached), on
the GPU when one answers, and evaluates VOC07 mAP on the synthetic validation split. With
--voc-root and --config ssd300 the defaults are the published recipe: batch 32, lr 1e-3 with
warm-up, x0.1 at 80k and 100k, 120k iterations, VOC07+12 trainval, validated on VOC2007 test.

One training step (`forward_backward`, then the optimizer), in order:
    loc, conf       = model.forward(images)                     model.py
    loc_t, conf_t   = match_batch(gt boxes, gt labels, priors)   matching.py
    loss, parts, c  = multibox_loss_forward(loc, conf, loc_t, conf_t)   loss.py
    dloc, dconf     = multibox_loss_backward(c)
    model.backward(dloc, dconf)                                 fills model.grads
    opt.step(model.params(), model.grads, learning_rate(step))  optim.py

Into --out go: metrics.jsonl (one JSON object per log line and per evaluation), curves.png
(loss and mAP), last.npz and best.npz. A checkpoint holds the parameters, the optimizer's
momentum buffers, the step, the settings, the config and the data description, so
evaluate, detect and --resume need nothing else.

Exact resume: the batch of step s is a pure function of (seed, s) (data/loader.py's
DataLoader.batches(start_step)), the model's init a function of --seed, and the learning rate a function of s. So on the CPU a run stopped
after step k and resumed gives bit-identical parameters to one that never stopped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from . import backend
from .config import SSDConfig, TORCHVISION_PREPROCESS, CAFFE_PREPROCESS, get_config
from .optim import SGD, Adam, learning_rate

# Defaults per setting. TINY_SYNTHETIC is what a plain `python -m minissd.train` runs: sized to
# finish within 10 minutes on two CPU cores (tiny() in config.py says why the network looks the
# way it does); the goal is VOC07 mAP >= 0.9 on the synthetic validation split. VOC_RECIPE is
# the paper's SSD300 schedule.
# Measured on a 2-core machine with an empty cache (the 6300-image synthetic set is generated
# first), 2 threads: `python -m minissd.train` took 7 min 52 s and reached VOC07 mAP 0.909
# (VOC10 0.956) at step 4400. The VOC07 11-point metric caps a class at 10/11 until every one
# of its objects is found, so the last points come from the smallest (5-8 pixel) objects.
# The tiny net trains from scratch: batch norm and Adam are what get it off the plateau where
# plain SGD without batch norm left it (mAP < 0.01 after 1500 steps). Augmentation: see
# make_augmentation.
TINY_SYNTHETIC = dict(batch_size=8, iters=4400, lr=2e-3, warmup=100, milestones=(3300, 4000),
                      optimizer="adam",
                      eval_every=1100, log_every=25, ckpt_every=200, augment="flip",
                      num_train=6000, num_val=300, clip_norm=10.0)
VOC_RECIPE = dict(batch_size=32, iters=120000, lr=1e-3, warmup=500, milestones=(80000, 100000),
                  optimizer="sgd",
                  eval_every=10000, log_every=50, ckpt_every=5000, augment="full",
                  num_train=None, num_val=None, clip_norm=None)
OTHER = dict(VOC_RECIPE, num_train=2000, num_val=300)
SYNTHETIC_DATA_SEED = 0          # the synthetic set is the same whatever --seed is


class NonFiniteLoss(RuntimeError):
    """The loss (or a parameter) became NaN or infinite."""


# ============================================================================ command line
def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m minissd.train",
        description="Train SSD on the synthetic set (default) or on PASCAL VOC (--voc-root). "
                    "Defaults marked 'setting' depend on --config and the data: the tiny "
                    "synthetic run, or the SSD300 VOC recipe.")
    a = p.add_argument
    a("--voc-root", metavar="DIR",
      help="a VOCdevkit folder (trains on 2007+2012 trainval, validates on 2007 test) or one "
           "VOC-format folder (trains on train, validates on val). Without it the synthetic "
           "set is generated once into the cache and used.")
    a("--config", default="tiny", choices=("tiny", "ssd300", "ssd512"),
      help="network configuration from minissd/config.py (default: tiny).")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"),
      help="where to train; auto takes the GPU when CuPy imports and a GPU answers.")
    tiny, voc = TINY_SYNTHETIC, VOC_RECIPE
    a("--batch-size", type=int, help=f"images per step (setting: {tiny['batch_size']} tiny, "
      f"{voc['batch_size']} VOC).")
    a("--iters", type=int, help=f"training steps in total (setting: {tiny['iters']} tiny, "
      f"{voc['iters']} VOC). When only this is given, the warm-up and milestones scale with it.")
    a("--lr", type=float, help=f"base learning rate after warm-up (setting: {tiny['lr']:g} "
      f"tiny, {voc['lr']:g} VOC).")
    a("--warmup", type=int, help="steps of linear learning-rate warm-up (setting).")
    a("--milestones", type=_int_list, metavar="S1,S2",
      help="steps at which the learning rate is multiplied by 0.1 (setting: "
      + ",".join(map(str, tiny["milestones"])) + " tiny, "
      + ",".join(map(str, voc["milestones"])) + " VOC).")
    a("--optimizer", choices=("sgd", "adam"), help="sgd: SGD with momentum, the SSD recipe; "
      "adam: Adam, which trains the tiny config from scratch much faster (setting: adam tiny, "
      "sgd VOC).")
    a("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9).")
    a("--weight-decay", type=float, default=5e-4, help="weight decay, SGD and Adam (default 5e-4).")
    a("--clip-norm", type=float, help="clip the global gradient norm to this value "
      "(setting: 10 tiny, off VOC).")
    a("--out", metavar="DIR", help="output folder (default runs/<config>-<data>-<time>; with "
      "--resume, the checkpoint's folder).")
    a("--resume", metavar="CKPT", help="continue exactly from a last.npz/best.npz written by "
      "this command; its settings are reused (--iters may lengthen the run).")
    a("--pretrained-vgg", metavar="PTH", help="initialise the VGG16 base from torchvision's "
      "vgg16 .pth or ssd.pytorch's vgg16_reducedfc.pth (read without torch; ssd300/ssd512).")
    a("--seed", type=int, default=0, help="seed of the model init, data order and "
      "augmentation (default 0).")
    a("--eval-every", type=int, help="evaluate VOC07 mAP on the validation split every this "
      "many steps, and always at the end; 0 = only at the end (setting).")
    a("--ckpt-every", type=int, help="write last.npz every this many steps (setting).")
    a("--log-every", type=int, help="write a metrics.jsonl line and refresh the progress "
      "bar's loss every this many steps (setting).")
    a("--num-train", type=int, help="synthetic set: number of training images "
      f"({tiny['num_train']} tiny, {OTHER['num_train']} otherwise).")
    a("--num-val", type=int, help="synthetic set: number of validation images "
      f"({tiny['num_val']}).")
    a("--augment", choices=("full", "light", "flip", "none"), help="full: the SSD recipe "
      "(photometric, expand up to 4x, crop, flip); light: expand up to 1.5x, crop, flip; "
      "flip: horizontal flips only; none: resize only (setting: flip tiny, full VOC).")
    a("--val-limit", type=int, help="evaluate on at most this many validation images (all).")
    a("--threads", type=int, help="CPU only: split each batch over this many threads, each "
      "running the network on its slice (minissd/parallel.py); NumPy runs most of a step on "
      "one core, so 2 threads train about 1.4x faster on 2 cores. Batch norm then uses each "
      "slice's statistics (default 2 on the CPU; always 1 on the GPU).")
    a("--workers", type=int, default=2, help="threads preparing batches ahead of the "
      "training step (default 2).")
    a("--no-progress", action="store_true", help="print log lines instead of a progress bar.")
    return p


def _int_list(text):
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated steps like 80000,100000, "
                                         f"got {text!r}") from None


def resolve_settings(args) -> dict:
    """This run's settings: the command line where given, else the setting's defaults."""
    if args.voc_root is None and args.config == "tiny":
        base = TINY_SYNTHETIC
    elif args.voc_root is not None and args.config in ("ssd300", "ssd512"):
        base = VOC_RECIPE
    else:
        base = OTHER
    s = dict(base)
    for key in ("batch_size", "iters", "lr", "optimizer", "warmup", "milestones", "eval_every",
                "log_every",
                "ckpt_every", "num_train", "num_val", "augment", "clip_norm"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.iters is not None and args.iters != base["iters"]:
        f = args.iters / base["iters"]         # keep the schedule's shape when only the length changes
        if args.milestones is None:
            s["milestones"] = tuple(int(round(m * f)) for m in base["milestones"])
        if args.warmup is None:
            s["warmup"] = int(round(base["warmup"] * f))
    s["milestones"] = tuple(s["milestones"])
    s["threads"] = args.threads if args.threads is not None else 2
    if s["threads"] < 1:
        raise SystemExit("minissd.train: --threads must be at least 1")
    s.update(config=args.config, seed=args.seed, momentum=args.momentum,
             weight_decay=args.weight_decay,
             voc_root=None if args.voc_root is None else os.path.abspath(args.voc_root),
             val_limit=args.val_limit, pretrained_vgg=args.pretrained_vgg)
    for key in ("batch_size", "iters"):
        if s[key] < 1:
            raise SystemExit(f"minissd.train: --{key.replace('_', '-')} must be at least 1")
    return s


# ============================================================================ data
def data_spec(settings, config_name) -> dict:
    """Which data a run uses, as JSON (stored in checkpoints so evaluate can find it again)."""
    root = settings["voc_root"]
    if root is None:
        size = get_config(config_name).image_size
        return {"kind": "synthetic", "num_train": settings["num_train"],
                "num_val": settings["num_val"], "image_size": size, "seed": SYNTHETIC_DATA_SEED}
    if os.path.isdir(os.path.join(root, "JPEGImages")):          # one VOC-format folder
        return {"kind": "voc", "root": root, "train": ["train"], "val": ["val"]}
    years = [y for y in ("2007", "2012") if os.path.isdir(os.path.join(root, f"VOC{y}"))]
    if "2007" not in years:
        raise SystemExit(f"minissd.train: {root} has neither JPEGImages/ (a VOC-format folder) "
                         "nor VOC2007/ (a VOCdevkit); point --voc-root at one of them")
    return {"kind": "voc", "root": root, "train": [f"{y}/trainval" for y in years],
            "val": ["2007/test"]}


def open_split(spec, split, keep_difficult=False):
    """The VOCDataset of a data spec's "train" or "val" part (generating the synthetic set)."""
    from .data.voc import VOCDataset
    if spec["kind"] == "synthetic":
        from .data.synthetic import ensure_synthetic
        root = ensure_synthetic(spec["num_train"], spec["num_val"], spec["image_size"],
                                spec["seed"], progress=True)
        return VOCDataset(root, splits=(split,), keep_difficult=keep_difficult)
    return VOCDataset(spec["root"], splits=tuple(spec[split]), keep_difficult=keep_difficult)


def make_augmentation(kind, config):
    """The training transform: "full" (SSD recipe), "light", "flip" or "none".

    The tiny synthetic run uses "flip" on 6000 images: the synthetic set already holds every
    size, position and colour. Measured VOC07 mAP after 1100 / 4400 steps: "light" on 2000
    images 0.60 / 0.899; "none" on 2000 0.81 / 0.892 (it learns fast, then overfits); "flip"
    on 6000 0.77 / 0.909; "none" on 6000 0.79 / 0.911."""
    from .data.augment import SSDAugmentation, pixel_mean
    mean = pixel_mean(config.preprocess)
    if kind == "full":
        return SSDAugmentation(config.image_size, mean)
    if kind == "light":
        # A mild zoom-out and the SSD crops, without the colour changes.
        return SSDAugmentation(config.image_size, mean, photometric=False, max_expand=1.5)
    if kind == "flip":
        return SSDAugmentation(config.image_size, mean, photometric=False, expand=False,
                               crop=False, flip=True)
    return SSDAugmentation(config.image_size, mean, photometric=False, expand=False, crop=False,
                           flip=False)


class CachedDataset:
    """A dataset whose decoded samples are kept in memory after the first read (for small
    sets such as the synthetic one: 6000 images of 128x128 are 300 MB)."""

    def __init__(self, dataset):
        self.dataset, self._cache = dataset, {}
        self.class_names = dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        s = self._cache.get(i)
        if s is None:
            s = self._cache[i] = self.dataset[i]
        return s


def make_loader(dataset, config, settings, workers):
    """The training DataLoader (data/loader.py): batch of step s is a function of (seed, s),
    so `loader.batches(start_step)` resumes exactly."""
    from .data.loader import DataLoader
    return DataLoader(dataset, settings["batch_size"], make_augmentation(settings["augment"], config),
                      config, seed=settings["seed"], num_workers=workers)


# ============================================================================ model
def build_model(config, seed):
    """SSD(config) with its random init drawn from `seed`, on the current device."""
    from .model import SSD
    return SSD(config, rng=np.random.default_rng([seed, 0])).to(backend.get_device())


def load_pretrained_vgg(model, config, path):
    """Copy VGG16 base weights from a torchvision or vgg16_reducedfc .pth into the model.
    Returns the preprocessing those weights expect."""
    from .weights import read_torch_checkpoint, vgg16_from_torchvision, load_ssd_pytorch
    if config.name not in ("ssd300", "ssd512"):
        raise SystemExit("minissd.train: --pretrained-vgg needs --config ssd300 or ssd512 "
                         f"(the VGG16 base); {config.name} has another base")
    state = read_torch_checkpoint(path)
    if any(k.split(".", 1)[-1].startswith("features.") or k.startswith("features.")
           for k in state):
        vgg, pp = vgg16_from_torchvision(state), dict(TORCHVISION_PREPROCESS)
    else:
        vgg = {k: v for k, v in load_ssd_pytorch(state).items() if k.startswith("vgg.")}
        pp = dict(CAFFE_PREPROCESS)
    own = model.state_dict()
    for k, v in vgg.items():
        if k not in own or tuple(own[k].shape) != tuple(v.shape):
            raise SystemExit(f"minissd.train: {path}: {k} {tuple(v.shape)} does not fit the "
                             f"model ({tuple(own[k].shape) if k in own else 'missing'})")
    own.update(vgg)
    model.load_state_dict(own)
    return pp


def forward_backward(model, priors, batch, config):
    """Loss and gradients of one batch: fills model.grads. Returns (loss, loc part, conf part)
    as 0-d device arrays (no host sync here)."""
    from .loss import multibox_loss_backward, multibox_loss_forward
    from .matching import match_batch
    x, boxes, labels = batch
    loc, conf = model.forward(x)                                          # (N, P, 4), (N, P, C)
    loc_t, conf_t = match_batch(boxes, labels, priors, variances=config.variances)
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    dloc, dconf = multibox_loss_backward(cache)
    model.backward(dloc, dconf, need_dx=False)
    return loss, parts["loc"], parts["conf"]


class _StopFlag:
    """Ctrl-C during training sets a flag; the loop finishes its step, saves and exits.
    A second Ctrl-C interrupts at once (Python's default behaviour is put back)."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        import signal
        self.stop = True
        signal.signal(signal.SIGINT, self._old)

    def __exit__(self, *exc):
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ============================================================================ checkpoints
def save_run_checkpoint(path, model, opt, step, settings, config, spec, best_map):
    """Parameters + optimizer + everything needed to rebuild and resume (atomic write)."""
    from .weights import save_checkpoint
    meta = {"format": "minissd-train-1", "step": int(step), "config": config.to_dict(),
            "settings": _jsonable(settings), "data": spec,
            "loader": {"seed": settings["seed"], "next_step": int(step)},
            "best_map": best_map}
    save_checkpoint(path, model.state_dict(), meta, opt.state_dict())


def _jsonable(d):
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def params_finite(model):
    """True when every parameter is finite (one host sync per parameter array)."""
    for _, w in model.params():
        xp = backend.get_array_module(w)
        if not bool(xp.isfinite(w).all()):
            return False
    return True


# ============================================================================ the run
def run(args, settings):
    """Train as the command line says. Returns the exit status."""
    device = backend.set_device(args.device)
    start, best_map, resume_meta = 0, None, None
    if args.resume:
        arrays, resume_meta = _load_resume(args.resume)
        kept = resume_meta["settings"]
        if args.iters is not None:
            kept["iters"] = args.iters
        kept["milestones"] = tuple(kept["milestones"])
        settings = kept
        start, best_map = resume_meta["step"], resume_meta.get("best_map")
    s = settings
    spec = resume_meta["data"] if resume_meta else data_spec(s, s["config"])
    train_ds = open_split(spec, "train")
    val_ds = open_split(spec, "val", keep_difficult=True)
    if resume_meta:
        config = SSDConfig.from_dict(resume_meta["config"])
    else:
        config = get_config(s["config"], class_names=train_ds.class_names)
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume else
                       os.path.join("runs", f"{config.name}-{spec['kind']}-"
                                            f"{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(out, exist_ok=True)

    model = build_model(config, s["seed"])
    if s.get("optimizer", "sgd") == "adam":
        opt = Adam(weight_decay=s["weight_decay"], clip_norm=s["clip_norm"])
    else:
        opt = SGD(s["momentum"], s["weight_decay"], s["clip_norm"])
    if resume_meta:
        model.load_state_dict(arrays)
        if "optim_state" in resume_meta:
            opt.load_state_dict(resume_meta["optim_state"], like=dict(model.params()))
    elif s["pretrained_vgg"]:
        config.preprocess = load_pretrained_vgg(model, config, s["pretrained_vgg"])
    net = model
    if device == "cpu" and s.get("threads", 1) > 1:
        from .parallel import ThreadedSSD
        net = ThreadedSSD(model, s["threads"])      # replicas share the model's parameters
    from .priors import default_boxes
    priors = backend.xp().asarray(default_boxes(config))
    loader = make_loader(CachedDataset(train_ds) if spec["kind"] == "synthetic" else train_ds,
                         config, s, args.workers)

    log = open(os.path.join(out, "metrics.jsonl"), "a", encoding="utf-8")
    history = _read_history(os.path.join(out, "metrics.jsonl"))
    last_path, best_path = os.path.join(out, "last.npz"), os.path.join(out, "best.npz")
    save = lambda path, step: save_run_checkpoint(path, model, opt, step, s, config, spec,
                                                  best_map)
    print(f"minissd.train: {config.name} on {spec['kind']} ({len(train_ds)} train / "
          f"{len(val_ds)} val images), {device}, steps {start}..{s['iters']}, batch "
          f"{s['batch_size']}, lr {s['lr']} -> {out}", file=sys.stderr)

    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=s["iters"], initial=start, unit="it", dynamic_ncols=True,
                   file=sys.stderr)
    acc, acc_n, t_log, good_step = None, 0, time.perf_counter(), start
    completed, updating = start, False     # steps whose update is fully applied; in an update?
    on_gpu = device == "cuda"
    try:
        with _StopFlag() as flag:
            for step, (images, targets) in zip(range(start, s["iters"]),
                                               loader.batches(start)):
                lr = learning_rate(step, s["lr"], s["warmup"], s["milestones"])
                x = backend.to_device(images) if on_gpu else images
                batch = (x, [b for b, _ in targets], [l for _, l in targets])
                loss, loc_l, conf_l = forward_backward(net, priors, batch, config)
                updating = True
                opt.step(model.params(), net.grads, lr)
                if net is not model:
                    net.sync_buffers()              # average the replicas' batch-norm stats
                updating, completed = False, step + 1
                done = completed
                parts = backend.get_array_module(loss).stack([loss, loc_l, conf_l])
                acc, acc_n = (parts if acc is None else acc + parts), acc_n + 1
                if not on_gpu and not math.isfinite(float(loss)):
                    raise NonFiniteLoss(f"step {step + 1}")
                at_log = done % s["log_every"] == 0 or done == s["iters"]
                at_ckpt = bool(s["ckpt_every"]) and done % s["ckpt_every"] == 0
                at_eval = (bool(s["eval_every"]) and done % s["eval_every"] == 0) \
                    or done == s["iters"]
                if at_log or at_ckpt or at_eval:
                    mean = backend.to_numpy(acc) / acc_n             # the one host sync
                    if not np.isfinite(mean).all():
                        raise NonFiniteLoss(f"a step between {good_step + 1} and {step + 1}")
                    now = time.perf_counter()
                    rec = {"step": done, "loss": float(mean[0]), "loc": float(mean[1]),
                           "conf": float(mean[2]), "lr": lr,
                           "img_per_s": acc_n * s["batch_size"] / max(now - t_log, 1e-9)}
                    _write(log, rec, history)
                    if bar is not None:
                        bar.set_postfix({"loss": f"{rec['loss']:.3f}",
                                         "loc": f"{rec['loc']:.3f}",
                                         "conf": f"{rec['conf']:.3f}", "lr": f"{lr:.2g}",
                                         "img/s": f"{rec['img_per_s']:.0f}"})
                    else:
                        print(f"step {done}: loss {rec['loss']:.4f} (loc {rec['loc']:.4f}, "
                              f"conf {rec['conf']:.4f}) lr {lr:.3g} "
                              f"{rec['img_per_s']:.1f} img/s", file=sys.stderr)
                    acc, acc_n, t_log, good_step = None, 0, time.perf_counter(), done
                if bar is not None:
                    bar.update(1)
                if at_eval:
                    r = _evaluate(model, val_ds, config, s, done)
                    _write(log, r, history)
                    _plot(history, out)
                    msg = (f"step {done}: VOC07 mAP {r['map']:.4f} "
                           f"(VOC10 {r['map_voc10']:.4f}) in {r['eval_s']:.1f}s")
                    (bar.write(msg, file=sys.stderr) if bar is not None
                     else print(msg, file=sys.stderr))
                    if best_map is None or r["map"] > best_map:
                        best_map = r["map"]
                        _checked_save(model, save, best_path, done)
                    t_log = time.perf_counter()
                if at_ckpt or at_eval:
                    _checked_save(model, save, last_path, done)
                if flag.stop and done < s["iters"]:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        log.close()
        print(_save_on_interrupt(model, save, last_path, completed, updating), file=sys.stderr)
        return 130
    except NonFiniteLoss as e:
        if bar is not None:
            bar.close()
        log.close()
        kept = last_path if os.path.exists(last_path) else "(none written yet)"
        print(f"minissd.train: the loss became NaN or infinite at {e}; training stopped and "
              f"nothing was saved after it. The last good checkpoint is {kept}. Lower --lr "
              f"(now {s['lr']}), lengthen --warmup or set --clip-norm, then start again or "
              f"--resume that checkpoint.", file=sys.stderr)
        return 3
    finally:
        if net is not model:
            net.close()
    if bar is not None:
        bar.close()
    log.close()
    _plot(history, out)
    print(f"minissd.train: done, {s['iters']} steps. Best VOC07 mAP {best_map:.4f}\n"
          f"  checkpoints: {last_path}\n"
          f"               {best_path}\n"
          f"  metrics:     {os.path.join(out, 'metrics.jsonl')}\n"
          f"  curves:      {os.path.join(out, 'curves.png')}\n"
          f"  evaluate:    python -m minissd.evaluate --checkpoint {best_path}")
    return 0


def _load_resume(path):
    from .weights import load_checkpoint
    if not os.path.isfile(path):
        raise SystemExit(f"minissd.train: --resume {path}: no such file")
    arrays, meta = load_checkpoint(path)
    if meta.get("format") != "minissd-train-1":
        raise SystemExit(f"minissd.train: --resume {path}: not a checkpoint written by "
                         "python -m minissd.train (no training state inside)")
    return arrays, meta


def _checked_save(model, save, path, step):
    if not params_finite(model):
        raise NonFiniteLoss(f"step {step} (a parameter is not finite)")
    save(path, step)


def _save_on_interrupt(model, save, last_path, completed, updating):
    """Ctrl-C: save the state after the last completed step, when it is sound."""
    hint = f"python -m minissd.train --resume {last_path}"
    if updating or not params_finite(model):
        # interrupted in the middle of a parameter update: this state belongs to no step
        return (f"\nminissd.train: interrupted during an update; nothing saved. Resume from "
                f"the last checkpoint: {hint}")
    save(last_path, completed)
    return (f"\nminissd.train: interrupted; saved the state after step {completed} to "
            f"{last_path}.\n  resume with: {hint}")


def _evaluate(model, val_ds, config, settings, step):
    from .evaluate import evaluate_model
    t = time.perf_counter()
    r = evaluate_model(model, val_ds, config, batch_size=settings["batch_size"],
                       limit=settings.get("val_limit"))
    return {"step": step, "map": r["map"], "map_voc10": r["map_voc10"],
            "ap": {config.class_names[c - 1]: v for c, v in r["ap"].items()},
            "eval_s": time.perf_counter() - t}


def _write(log, rec, history):
    log.write(json.dumps(rec, allow_nan=True) + "\n")
    log.flush()
    history.append(rec)


def _read_history(path):
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plot(history, out):
    from .viz import plot_training_curves
    try:
        plot_training_curves(history, os.path.join(out, "curves.png"))
    except Exception as e:          # a plot must never stop training
        print(f"minissd.train: could not draw curves.png ({e})", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run(args, resolve_settings(args))


if __name__ == "__main__":
    sys.exit(main())
