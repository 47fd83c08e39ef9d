"""Train SSD: python -m minissd.train [options]   (python -m minissd.train --help)

With no options it trains the `tiny` config on the synthetic set (generated once, cached), on
the GPU when one answers, and evaluates VOC07 mAP on the synthetic validation split. With
--voc-root and --config ssd300 the defaults are the published recipe: batch 32, lr 1e-3 with
warm-up, x0.1 at 80k and 100k, 120k iterations, VOC07+12 trainval, validated on VOC2007 test.

This file is the command line: the flags, and the settings they resolve to
(training/settings.py's TrainSettings, from its named defaults). The run itself is
minissd/training/: loop.py (set up, then per step: step, log, evaluate, save), step.py (one
step's loss and gradients), checkpoint.py, log.py, build.py.

One training step, in order:
    loc, conf       = model.forward(images)                             model.py
    loc_t, conf_t   = match_batch(gt boxes, gt labels, priors)          matching.py
    loss, parts, c  = multibox_loss_forward(loc, conf, loc_t, conf_t)   loss.py
    dloc, dconf     = multibox_loss_backward(c)
    model.backward(dloc, dconf)                                         fills model.grads
    opt.step(model.params(), model.grads, learning_rate(step))          optim.py (Adam or SGD)

Into --out go: metrics.jsonl (one JSON object per log line and per evaluation), curves.png
(loss and mAP), last.npz and best.npz. A checkpoint holds the parameters, the optimizer's
state (SGD's momentum buffers or Adam's moment estimates), the step, the settings, the config
and the data description, so evaluate, detect and --resume need nothing else.

Exact resume: the batch of step s is a pure function of (seed, s) (data/loader.py's
DataLoader.batches(start_step)), the model's init a function of --seed, and the learning rate
a function of s. So on the CPU a run stopped after step k and resumed gives bit-identical
parameters to one that never stopped.

Processes: `--procs N` (default on the CPU: one per core) runs `mpiexec -n N <this python>
-m minissd.train <the same flags>`; each process trains on its shard of every batch
(minissd/distributed.py). `mpiexec -n N python -m minissd.train ...` does the same directly
(several GPUs, several machines). `--procs 1` is one plain process, without MPI.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import distributed
from .data.voc import DataError
from .inference import CheckpointError
from .training.checkpoint import load_run_checkpoint
from .training.loop import run
from .training.settings import (SSD300_VOC_RECIPE, TINY_ON_SYNTHETIC,
                                VOC_RECIPE_ON_2000_SYNTHETIC, TrainSettings, default_settings)

# The flags whose default is a setting (it depends on --config and the data): when given,
# they replace that setting of the named defaults.
SETTING_FLAGS = ("batch_size", "iters", "lr", "optimizer", "warmup", "milestones", "eval_every",
                 "log_every", "ckpt_every", "num_train", "num_val", "augment", "clip_norm")


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
    tiny, voc = TINY_ON_SYNTHETIC, SSD300_VOC_RECIPE
    a("--batch-size", type=int, help=f"images per step (setting: {tiny.batch_size} tiny, "
      f"{voc.batch_size} VOC).")
    a("--iters", type=int, help=f"training steps in total (setting: {tiny.iters} tiny, "
      f"{voc.iters} VOC). When only this is given, the warm-up and milestones scale with it.")
    a("--lr", type=float, help=f"base learning rate after warm-up (setting: {tiny.lr:g} "
      f"tiny, {voc.lr:g} VOC).")
    a("--warmup", type=int, help="steps of linear learning-rate warm-up (setting).")
    a("--milestones", type=_int_list, metavar="S1,S2",
      help="steps at which the learning rate is multiplied by 0.1 (setting: "
      + ",".join(map(str, tiny.milestones)) + " tiny, "
      + ",".join(map(str, voc.milestones)) + " VOC).")
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
      f"({tiny.num_train} tiny, {VOC_RECIPE_ON_2000_SYNTHETIC.num_train} otherwise).")
    a("--num-val", type=int, help="synthetic set: number of validation images "
      f"({tiny.num_val}).")
    a("--augment", choices=("full", "light", "flip", "none"), help="full: the SSD recipe "
      "(photometric, expand up to 4x, crop, flip); light: expand up to 1.5x, crop, flip; "
      "flip: horizontal flips only; none: resize only (setting: flip tiny, full VOC).")
    a("--val-limit", type=int, help="evaluate on at most this many validation images (all).")
    a("--procs", type=int, help="train data-parallel in this many processes, each on its "
      "shard of every batch (mpiexec and mpi4py; minissd/distributed.py). Default on the CPU: "
      "one per core; on the GPU: 1 (one process per GPU: mpiexec -n N). With --resume: the "
      "checkpoint's, for an exact continuation.")
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


def resolve_settings(args) -> TrainSettings:
    """This run's settings: the command line where given, else the setting's defaults."""
    base = default_settings(args.config, on_voc=args.voc_root is not None)
    given = {key: getattr(args, key) for key in SETTING_FLAGS if getattr(args, key) is not None}
    if args.iters is not None and args.iters != base.iters:
        f = args.iters / base.iters     # keep the schedule's shape when only the length changes
        if args.milestones is None:
            given["milestones"] = tuple(int(round(m * f)) for m in base.milestones)
        if args.warmup is None:
            given["warmup"] = int(round(base.warmup * f))
    s = dataclasses.replace(
        base, **given, procs=_procs(args), config=args.config, seed=args.seed,
        momentum=args.momentum, weight_decay=args.weight_decay,
        voc_root=None if args.voc_root is None else os.path.abspath(args.voc_root),
        val_limit=args.val_limit, pretrained_vgg=args.pretrained_vgg)
    if s.procs < 1:
        raise SystemExit("minissd.train: --procs must be at least 1")
    for key in ("batch_size", "iters"):
        if getattr(s, key) < 1:
            raise SystemExit(f"minissd.train: --{key.replace('_', '-')} must be at least 1")
    if s.pretrained_vgg and not args.resume and s.config not in ("ssd300", "ssd512"):
        raise SystemExit("minissd.train: --pretrained-vgg needs --config ssd300 or ssd512 "
                         f"(the VGG16 base); {s.config} has another base")
    return s


def resume_from(args):
    """(arrays, meta) of --resume's checkpoint and the settings it continues with: the
    checkpoint's own, with --iters when given (a run may be lengthened)."""
    try:
        checkpoint = load_run_checkpoint(args.resume)
    except CheckpointError as e:
        raise SystemExit(f"minissd.train: --resume {e}") from None
    settings = TrainSettings.from_dict(checkpoint[1]["settings"])
    if args.iters is not None:
        settings = dataclasses.replace(settings, iters=args.iters)
    if args.procs is not None:
        settings = dataclasses.replace(settings, procs=args.procs)
    return checkpoint, settings


def _procs(args):
    """--procs, else the default: one process per core on the CPU, one on the GPU."""
    if args.procs is not None:
        return args.procs
    on_gpu = args.device == "cuda" or (args.device == "auto" and _gpu_answers())
    return 1 if on_gpu else os.cpu_count() or 1


def _gpu_answers():
    from . import backend
    return backend.cuda_available()


def _without_procs(argv):
    """The command line without --procs N (what each launched process is given)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--procs":
            skip = True
        elif not a.startswith("--procs="):
            out.append(a)
    return out


def start_processes(args, settings, argv):
    """`--procs N` from a plain command: mpiexec -n N of this command. Returns its exit
    status, or None when this process should train alone (the default number of processes
    without MPI installed: a one-line notice)."""
    missing = distributed.missing_for_processes()
    if missing is None:
        return distributed.launch(settings.procs, _without_procs(argv))
    if args.procs is not None:
        print(f"minissd.train: error: --procs {args.procs}: {missing}; pip install mpi4py "
              f"mpich (or train in one process: --procs 1)", file=sys.stderr)
        return 2
    print(f"minissd.train: training in one process ({missing}; pip install mpi4py mpich "
          f"to use the {settings.procs} cores)", file=sys.stderr)
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    launched = distributed.launched_size()            # started by mpiexec: its size
    if launched is not None and args.procs is None:
        args.procs = launched
    settings, checkpoint, out = resolve_settings(args), None, args.out
    if args.resume:
        checkpoint, settings = resume_from(args)
        out = out or os.path.dirname(os.path.abspath(args.resume))
    if launched is None and settings.procs > 1:
        status = start_processes(args, settings, argv)
        if status is not None:
            return status
        settings = dataclasses.replace(settings, procs=1)
    comm = distributed.world()
    if comm.size != settings.procs:         # mpiexec -n decides; the settings record it
        settings = dataclasses.replace(settings, procs=comm.size)
    if comm.size > 1:
        return distributed.run_as_rank(comm, _train, args, settings, out, checkpoint, comm)
    return _train(args, settings, out, checkpoint, None)


def _train(args, settings, out, checkpoint, comm):
    try:
        return run(settings, device=args.device, out=out, resume=checkpoint,
                   workers=args.workers, progress=not args.no_progress, comm=comm)
    except (CheckpointError, DataError) as e:
        raise SystemExit(f"minissd.train: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
