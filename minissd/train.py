"""Train SSD: python -m minissd.train [options]   (python -m minissd.train --help)

With no options it trains the `tiny` config on the synthetic set (generated once, cached), on
the GPU when one answers, and evaluates VOC07 mAP on the synthetic validation split.
--voc-root DIR trains on your own data: a VOCdevkit, a VOC-format folder or a flat
labelImg/CVAT/Roboflow export (data/folders.py), with the classes found in it;
--coco-root DIR --coco-ann FILE.json COCO-format data (data/coco.py). The recipe
comes from --config (tiny: Adam from scratch; ssd300/ssd512: the published SGD recipe) and
its length is set in epochs of the data in hand (training/settings.py): --config ssd300 on
VOC07+12 trainval is the paper's batch 32, lr 1e-3 with warm-up, x0.1 at 80k and 100k, 120k
iterations, validated on VOC2007 test.

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
(loss and mAP), last.npz and best.npz (RUN_FILES). A new run refuses an --out that already
holds any of them (another run's, or the user's files): --resume continues that run, and
--overwrite replaces it (metrics.jsonl then starts afresh). A checkpoint holds the
parameters, the optimizer's state (SGD's momentum buffers or Adam's moment estimates), the
step, the settings, the config and the data description, so evaluate, detect and --resume
need nothing else.

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
import math
import os
import sys

from . import backend, distributed
from .cli import Parser, fail
from .config import CONFIGS, get_config
from .data.choice import check_spec, coco_spec, data_spec, open_split, yolo_spec
from .data.voc import DataError
from .inference import CheckpointError, config_of
from .matching import RULES
from .training.checkpoint import load_run_checkpoint
from .training.loop import run
from .training.settings import (SSD300_VOC_RECIPE, TINY_ON_OWN_DATA, TINY_ON_SYNTHETIC,
                                VOC_RECIPE_ON_2000_SYNTHETIC, TrainSettings, default_settings,
                                scheduled)
from .training import finetune
from .training.settings import FINETUNE_RECIPE, finetune_settings
from .untrusted import MAX_IMAGE_SIZE, MAX_SYNTHETIC_IMAGES

# What a run writes into --out (besides split_train.txt / split_val.txt of a made split).
RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "curves.png")

# The flags whose default is a setting (it depends on --config and the data): when given,
# they replace that setting of the named defaults.
SETTING_FLAGS = ("batch_size", "lr", "optimizer", "eval_every", "log_every", "ckpt_every",
                 "num_train", "num_val", "augment", "clip_norm")


def build_parser():
    p = Parser(
        "train",
        description="Train SSD on the synthetic set (default) or on your own data (--voc-root). "
                    "Defaults marked 'setting' come from --config (tiny: Adam from scratch; "
                    "ssd300/ssd512: the published SGD recipe), with the run's length in "
                    "epochs of the training images.")
    a = p.add_argument
    a("--voc-root", metavar="DIR",
      help="your data: a VOCdevkit (trains on 2007+2012 trainval, validates on 2007 test), a "
           "VOC-format folder (JPEGImages/, Annotations/, ImageSets/Main/train.txt and val.txt "
           "optional) or a flat labelImg/CVAT/Roboflow export (images and same-stem .xml "
           "files, side by side or in train/, valid/, test/). Without a validation split, "
           "about 10%% of the images are set aside by a hash of their names (written to "
           "<out>/split_val.txt). Without --voc-root the synthetic set is generated once into "
           "the cache and used.")
    a("--coco-root", metavar="DIR",
      help="COCO-format data instead of --voc-root: the folder the --coco-ann file's "
           "file_names are relative to (COCO: train2017/).")
    a("--coco-ann", metavar="FILE.json",
      help="the COCO instances file of --coco-root (COCO: instances_train2017.json); classes "
           "are its categories in id order. Without --coco-val-ann, about 10%% of its images "
           "are set aside for validation by a hash of their file_names.")
    a("--coco-val-ann", metavar="FILE.json",
      help="validate on this COCO instances file (COCO: instances_val2017.json), its images "
           "under --coco-val-root (default: --coco-root).")
    a("--coco-val-root", metavar="DIR", help="the images folder of --coco-val-ann.")
    a("--yolo-root", metavar="DIR",
      help="YOLO-format data instead of --voc-root (Ultralytics' layout, as Roboflow, CVAT and "
           "Label Studio export it): a folder with data.yaml (names, train, val), or with "
           "images/ and labels/ (split in train/ val/ or not) and classes.txt. Without a "
           "validation split, about 10%% of the images are set aside by a hash of their names.")
    a("--classes", type=_name_list, metavar="A,B,C",
      help="train on these classes, in this label order (objects of other classes are "
           "ignored). Default: labels.txt or classes.txt in --voc-root, else the names found "
           "in the annotations (VOC's order when they are VOC names).")
    a("--config", choices=tuple(CONFIGS),
      help="network configuration from minissd/config.py (default: tiny; with --weights, "
           "the weights' own network); ssd300_coco and ssd512_coco are SSD300/SSD512 with "
           "COCO's smaller default boxes.")
    a("--image-size", type=_image_size, metavar="S",
      help="tiny only: the network's input side in pixels (default 128); larger finds smaller "
           "objects and trains slower (about (S/128)^2). auto: picked from the training "
           "objects' sizes (python -m minissd.inspect's advice), printed with its cost.")
    a("--fit-boxes", action="store_true",
      help="fit the default boxes' scales (and aspect ratios, for elongated objects) to the "
           "training objects, maximising the share that has a default box at IoU >= 0.5 "
           "(python -m minissd.inspect shows it); the boxes are stored in the checkpoint's "
           "config, so evaluate and detect use them. Off by default.")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"),
      help="where to train; auto takes the GPU when CuPy imports and a GPU answers.")
    tiny, own, voc = TINY_ON_SYNTHETIC, TINY_ON_OWN_DATA, SSD300_VOC_RECIPE
    a("--batch-size", type=int, help=f"images per step (setting: {tiny.batch_size} tiny, "
      f"{voc.batch_size} ssd300/ssd512).")
    a("--epochs", type=float, help="passes over the training images (setting: tiny "
      f"{own.epochs:.2f}, at least {own.min_iters} and at most {own.max_iters} steps; the "
      f"synthetic run {tiny.iters} steps; ssd300/ssd512 {voc.epochs:.0f} epochs, which is "
      f"{voc.iters} steps on VOC07+12). The warm-up and milestones scale with the length.")
    a("--iters", type=int, help="training steps in total, instead of --epochs (the warm-up "
      "and milestones scale with it).")
    a("--lr", type=float, help=f"base learning rate after warm-up (setting: {tiny.lr:g} "
      f"tiny, {voc.lr:g} ssd300/ssd512).")
    a("--warmup", type=int, help="steps of linear learning-rate warm-up (setting: "
      f"{_pct(tiny.warmup_fraction)} of the steps tiny, {_pct(voc.warmup_fraction)} "
      "ssd300/ssd512).")
    a("--milestones", type=_int_list, metavar="S1,S2",
      help="steps at which the learning rate is multiplied by 0.1 (setting: at "
      + ", ".join(map(_pct, tiny.milestone_fractions)) + " of the steps tiny ("
      + ",".join(map(str, tiny.milestones)) + " on the synthetic set), "
      + ", ".join(map(_pct, voc.milestone_fractions)) + " ssd300/ssd512 ("
      + ",".join(map(str, voc.milestones)) + " on VOC07+12).")
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
    a("--overwrite", action="store_true", help="let a new run write into an --out that "
      "already holds a run (its last.npz, best.npz, metrics.jsonl, curves.png are replaced); "
      "without it such an --out is refused.")
    a("--pretrained-vgg", metavar="PTH", help="initialise the VGG16 base from torchvision's "
      "vgg16 .pth or ssd.pytorch's vgg16_reducedfc.pth (read without torch; ssd300/ssd512).")
    ft = FINETUNE_RECIPE
    a("--weights", metavar="FILE",
      help="fine-tune a trained detector: anything evaluate --weights takes (torchvision's or "
           "ssd.pytorch's .pth, a Caffe SSD .caffemodel with its deploy prototxt, "
           "opencv-face) or a minissd last.npz/best.npz. The body and extra layers start from "
           "FILE; its heads are kept when the classes are the same names in the same order, "
           "else re-initialised (one line lists both). Its preprocessing, default boxes and "
           "post-processing carry into the new checkpoints. A new run with the fine-tuning "
           f"recipe (Adam lr {ft.lr:g}, warm-up {_pct(ft.warmup_fraction)}, "
           f"{ft.epochs:.2f} epochs, at least {ft.min_iters} steps), not --resume. "
           "--config NAME builds that network around FILE's base; --image-size S runs the "
           "weights' (fully convolutional) network at another input side, the default boxes "
           "recomputed.")
    a("--prototxt", metavar="FILE", help="the deploy prototxt of a --weights .caffemodel "
      "(default: the one beside it).")
    a("--freeze", choices=("none", "base", "extras"), default="none",
      help="layers that do not train (no update, no weight decay, batch norm kept in eval "
           "mode, no backward below the lowest layer that trains). base: the base network "
           "(VGG configs: conv1_1..conv7 and L2Norm; an imported body such as res10: the "
           "first source and every layer it is computed from); extras: the base AND the "
           "extras (every other body layer), only the heads train; none (default): all train.")
    a("--body-lr-mult", type=float, default=1.0, metavar="M",
      help="with --weights: the learning rate of the body (base and extras) is lr x M; the "
           "heads train at lr (default 1).")
    a("--matching", choices=RULES, help="the matching rule's bipartite step: ssd.pytorch "
      "(each object claims its best default box, a later object wins a shared one) or caffe "
      "(the paper's: greedy, largest IoU first, no box given twice); default: the config's "
      "(ssd.pytorch). minissd/matching.py.")
    a("--seed", type=int, default=0, help="seed of the model init, data order and "
      "augmentation (default 0).")
    a("--eval-every", type=int, help="evaluate VOC07 mAP on the validation split every this "
      "many steps, and always at the end; 0 = only at the end (setting).")
    a("--coco-metric", action="store_true", help="also compute COCO's AP@[.5:.95] and AP50 "
      "(pycocotools) at each evaluation, logged beside VOC07 in metrics.jsonl and the "
      "printed line; best.npz is still chosen by VOC07 mAP.")
    a("--ckpt-every", type=int, help="write last.npz every this many steps (setting).")
    a("--log-every", type=int, help="write a metrics.jsonl line and refresh the progress "
      "bar's loss every this many steps (setting).")
    a("--num-train", type=int, help="synthetic set: number of training images "
      f"({tiny.num_train} tiny, {VOC_RECIPE_ON_2000_SYNTHETIC.num_train} otherwise).")
    a("--num-val", type=int, help="synthetic set: number of validation images "
      f"({tiny.num_val}).")
    a("--augment", choices=("full", "light", "flip", "none"), help="full: the SSD recipe "
      "(photometric, expand up to 4x, crop, flip); light: expand up to 1.5x, crop, flip; "
      "flip: horizontal flips only; none: resize only (setting: flip tiny on the synthetic "
      f"set, {own.augment} tiny on --voc-root, full ssd300/ssd512).")
    a("--val-limit", type=int, help="evaluate on at most this many validation images (all).")
    a("--procs", type=int, help="train data-parallel in this many processes, each on its "
      "shard of every batch (mpiexec and mpi4py; minissd/distributed.py). Default on the CPU: "
      "one per core; on the GPU: 1 (one process per GPU: mpiexec -n N). With --resume: the "
      "checkpoint's, for an exact continuation.")
    a("--workers", type=int, default=2, help="threads preparing batches ahead of the "
      "training step (default 2).")
    a("--no-progress", action="store_true", help="print log lines instead of a progress bar.")
    return p


def _pct(fraction):
    """A fraction as a percentage in a --help text (argparse needs % doubled)."""
    return f"{100 * fraction:.2g}%%"


def _image_size(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a side in pixels like 256, or auto; got "
                                         f"{text!r}") from None


def _int_list(text):
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated steps like 80000,100000, "
                                         f"got {text!r}") from None


def _name_list(text):
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected different class names separated by "
                                         f"commas, like cat,dog; got {text!r}")
    return names


def resolve_settings(args, num_train=None) -> TrainSettings:
    """This run's settings: the command line where given, else the setting's defaults, with
    the schedule for `num_train` training images (default: the synthetic set's size; on
    --voc-root data without it, the recipe's own step counts)."""
    base = _recipe(args)
    given = {key: getattr(args, key) for key in SETTING_FLAGS if getattr(args, key) is not None}
    s = dataclasses.replace(
        base, **given, procs=_procs(args), config=_config_name(args),
        seed=args.seed, weights=_weights_path(args.weights),
        prototxt=None if args.prototxt is None else os.path.abspath(args.prototxt),
        freeze=args.freeze, body_lr_mult=args.body_lr_mult,
        momentum=args.momentum, weight_decay=args.weight_decay,
        voc_root=None if args.voc_root is None else os.path.abspath(args.voc_root),
        val_limit=args.val_limit, pretrained_vgg=args.pretrained_vgg,
        image_size=args.image_size, classes=args.classes, coco_metric=args.coco_metric,
        fit_boxes=args.fit_boxes, matching=args.matching)
    for key in ("batch_size", "iters"):
        value = getattr(s if key == "batch_size" else args, key)
        if value is not None and value < 1:
            what = "images per step" if key == "batch_size" else "steps"
            fail("train", f"--{key.replace('_', '-')}: {value} {what} is too few; give 1 or "
                          "more")
    if args.epochs is not None and args.epochs <= 0:
        fail("train", f"--epochs: {args.epochs:g} is not positive; give e.g. --epochs 50")
    n = num_train if num_train is not None else s.num_train
    if n is not None or args.iters is not None or args.epochs is not None:
        s = scheduled(s, n or 1, iters=args.iters, epochs=args.epochs)
    if args.warmup is not None:
        s = dataclasses.replace(s, warmup=args.warmup)
    if args.milestones is not None:
        s = dataclasses.replace(s, milestones=args.milestones)
    if s.procs < 1:
        fail("train", f"--procs: {s.procs} is not a process count; give 1 or more")
    if s.pretrained_vgg and not args.resume and s.config == "tiny":
        fail("train", f"--pretrained-vgg: needs a VGG16 config (ssd300, ssd512, ...); "
                      f"{s.config} has another base")
    return s


# (flag, smallest value allowed, whether the smallest itself is allowed): --flag must be a
# finite number above it (or equal to it when allowed). None given = the setting's default.
_FLAG_RANGES = (("lr", 0, False), ("clip_norm", 0, False), ("epochs", 0, False),
                ("momentum", 0, True), ("weight_decay", 0, True), ("val_limit", 1, True),
                ("log_every", 1, True), ("eval_every", 0, True), ("ckpt_every", 0, True),
                ("warmup", 0, True), ("workers", 0, True), ("num_train", 1, True),
                ("num_val", 1, True), ("image_size", 1, True))
_FLAG_MAX = {"momentum": 1.0, "num_train": MAX_SYNTHETIC_IMAGES,
             "num_val": MAX_SYNTHETIC_IMAGES, "image_size": MAX_IMAGE_SIZE}


def check_flags(args):
    """One-line errors for numbers no run can use: --lr -1, --clip-norm -1, --epochs nan,
    --val-limit 0, --log-every 0, --image-size 100000, negative milestones, ..."""
    for key, low, equal_ok in _FLAG_RANGES:
        v = getattr(args, key)
        if v is None or (key == "image_size" and v == "auto"):
            continue
        high = _FLAG_MAX.get(key, math.inf)
        ok = math.isfinite(v) and (v >= low if equal_ok else v > low) and \
            (v < high if key == "momentum" else v <= high)
        if not ok:
            rule = f"{'at least' if equal_ok else 'above'} {low:g}" + \
                (f" and {'below' if key == 'momentum' else 'at most'} {high:g}"
                 if high != math.inf else "")
            fail("train", f"--{key.replace('_', '-')}: {v!r} is not allowed; give a number "
                          f"{rule}")
    if args.milestones is not None and any(m < 0 for m in args.milestones):
        fail("train", f"--milestones: {args.milestones} has a negative step; give steps >= 0")


def check_out(out, overwrite):
    """--out of a new run: a folder (or a path where one can be made) that holds no run
    (RUN_FILES) unless --overwrite, and that this user may write into."""
    if out is None:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        fail("train", f"--out: {out} is a file, not a folder; give a folder for the run")
    if os.path.isdir(out):
        found = [f for f in RUN_FILES if os.path.lexists(os.path.join(out, f))]
        if found and not overwrite:
            fail("train", f"--out: {out} already holds a run ({', '.join(found)}); continue "
                          f"it with --resume {os.path.join(out, 'last.npz')}, replace it with "
                          "--overwrite, or choose another --out")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        fail("train", f"--out: {parent} is not writable; choose an --out you can write to")


def resume_from(args):
    """(arrays, meta) of --resume's checkpoint and the settings it continues with: the
    checkpoint's own, with --iters when given (a run may be lengthened). Everything read is
    checked before it is used (a settings, config or data spec that is not minissd.train's,
    a checkpoint without optimizer state): one-line errors."""
    try:
        checkpoint = load_run_checkpoint(args.resume)
    except CheckpointError as e:
        fail("train", f"--resume: {e}")
    arrays, meta = checkpoint
    if "optim_state" not in meta:
        fail("train", f"--resume: {args.resume} holds no optimizer state (momentum or Adam "
                      "moments), so the run cannot continue exactly; start a new run from it "
                      "instead, or resume from the run's last.npz")
    try:
        settings = TrainSettings.from_dict(meta["settings"])
        _check_settings(settings)
        config_of(meta, arrays, args.resume)
        check_spec(meta.get("data"))
        if not isinstance(meta.get("step"), int) or not 0 <= meta["step"] <= settings.iters:
            raise ValueError(f"step {str(meta.get('step'))[:20]}")
    except CheckpointError as e:
        fail("train", f"--resume: {e}")
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        fail("train", f"--resume: {args.resume}: its training state is malformed "
                      f"({type(e).__name__}: {str(e)[:120]}); it was not written by "
                      "python -m minissd.train")
    if args.iters is not None:
        settings = dataclasses.replace(settings, iters=args.iters)
    return checkpoint, settings


def _check_settings(s):
    """ValueError unless the settings read from a checkpoint are ones a run can use."""
    for key in ("batch_size", "iters", "log_every", "procs"):
        v = getattr(s, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"settings {key} {v!r}")
    for key in ("lr", "momentum", "weight_decay"):
        v = getattr(s, key)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"settings {key} {v!r}")
    if s.optimizer not in ("sgd", "adam") or s.augment not in ("full", "light", "flip", "none"):
        raise ValueError(f"settings optimizer {s.optimizer!r} / augment {s.augment!r}")


def _say(text):
    print(f"minissd.train: {text}", file=sys.stderr)


def _num_train(spec):
    """How many training images a data spec has (its folder is listed, not read)."""
    return spec["num_train"] if spec["kind"] == "synthetic" else len(open_split(spec, "train"))


def prepare(args, quiet=False):
    """(settings, data spec, number of training images, checkpoint or None, out) of this run,
    every check done first. quiet: tell nothing (the processes other than rank 0 of a
    data-parallel run)."""
    if args.resume:
        checkpoint, settings = resume_from(args)
        spec = checkpoint[1]["data"]
        return settings, spec, _num_train(spec), checkpoint, \
            args.out or os.path.dirname(os.path.abspath(args.resume))
    check_out(args.out, args.overwrite)
    if args.image_size == "auto":
        args.image_size = _auto_image_size(args, quiet)
    if args.image_size is not None and args.weights is None:
        try:
            get_config(args.config, image_size=args.image_size)
        except ValueError as e:
            fail("train", f"--image-size: {e}")
    base = _recipe(args)
    if args.yolo_root is not None:
        spec = yolo_spec(os.path.abspath(args.yolo_root), classes=args.classes,
                         report=None if quiet else _say)
        n = _num_train(spec)
        return resolve_settings(args, n), spec, n, None, args.out
    if args.coco_root is not None:
        spec = coco_spec(*(None if p is None else os.path.abspath(p) for p in (
            args.coco_root, args.coco_ann, args.coco_val_root, args.coco_val_ann)),
            classes=args.classes, report=None if quiet else _say)
        n = _num_train(spec)
        return resolve_settings(args, n), spec, n, None, args.out
    root = None if args.voc_root is None else os.path.abspath(args.voc_root)
    parent = _check_finetune(args) if args.weights else None     # (config, state)
    spec = data_spec(root, args.config or "tiny", args.num_train or base.num_train,
                     args.num_val or base.num_val, classes=args.classes,
                     image_size=args.image_size or (parent and parent[0].image_size),
                     report=None if quiet else _say)
    if parent is not None:
        _check_finetune(args, parent, open_split(spec, "train").class_names)
    n = _num_train(spec)
    return resolve_settings(args, None if root is None else n), spec, n, None, args.out


def _recipe(args):
    """The named defaults this run starts from: the fine-tuning recipe with --weights, else
    the config's (training/settings.py)."""
    if args.weights is not None:
        return finetune_settings(_own_data(args))
    return default_settings(_config_name(args), on_voc=_own_data(args))


def _config_name(args):
    """--config, else tiny; with --weights and no --config, the weights' own network."""
    if args.config is not None:
        return args.config
    return finetune.OWN_NETWORK if args.weights is not None else "tiny"


def _weights_path(weights):
    """--weights as the settings keep it: a file's absolute path, or a name (opencv-face)."""
    if weights is None or weights == finetune.OPENCV_FACE or not os.path.exists(weights):
        return weights
    return os.path.abspath(weights)


def _check_finetune(args, parent=None, class_names=None):
    """--weights and the flags that go with it, checked before anything starts (one-line
    errors). Without `parent`: reads the weights and returns their config; with it and the
    data's class names: checks the network the run will train (--config, --image-size,
    --freeze)."""
    try:
        if parent is None:
            return finetune.parent(args.weights, args.prototxt)
        finetune.checked_against(*parent, class_names, args.config, args.image_size,
                                 args.freeze)
    except finetune.FinetuneError as e:
        fail("train", str(e))
    except CheckpointError as e:
        fail("train", f"--weights: {e}")
    return parent


def check_finetune_flags(args):
    """The fine-tuning flags that need --weights (or --pretrained-vgg, for --freeze)."""
    if args.weights is None:
        if args.prototxt is not None:
            fail("train", "--prototxt: goes with --weights FILE.caffemodel; give --weights")
        if args.freeze != "none" and not args.pretrained_vgg:
            fail("train", f"--freeze {args.freeze}: freezes pretrained layers; give --weights "
                          "FILE (or --pretrained-vgg PTH)")
        if args.body_lr_mult != 1.0:
            fail("train", "--body-lr-mult: sets the learning rate of pretrained layers; give "
                          "--weights FILE")
    elif args.pretrained_vgg:
        fail("train", "--pretrained-vgg: --weights already gives the whole network; leave "
                      "one of them out")
    if not args.body_lr_mult >= 0:
        fail("train", f"--body-lr-mult: {args.body_lr_mult:g} is negative; give 0 (a fixed "
                      "body) or more")


def _auto_image_size(args, quiet):
    """--image-size auto: the side analysis/run_boxes.auto_image_size picks for the
    training objects of the data flags (tiny on your own data only)."""
    if args.config != "tiny" or not _own_data(args):
        fail("train", "--image-size: auto needs --config tiny and your own data (--voc-root, "
                      "--coco-root or --yolo-root); give a side in pixels instead")
    from .analysis.run_boxes import auto_image_size
    if args.yolo_root is not None:
        spec = yolo_spec(os.path.abspath(args.yolo_root), classes=args.classes)
    elif args.coco_root is not None:
        spec = coco_spec(*(None if p is None else os.path.abspath(p) for p in (
            args.coco_root, args.coco_ann, args.coco_val_root, args.coco_val_ann)),
            classes=args.classes)
    else:
        spec = data_spec(os.path.abspath(args.voc_root), args.config, classes=args.classes)
    size, line = auto_image_size(args.config, open_split(spec, "train"))
    if not quiet:
        _say(line)
    return size


def _own_data(args):
    """Training on the user's data (--voc-root, --coco-root or --yolo-root), not the
    synthetic set."""
    return args.voc_root is not None or args.coco_root is not None or \
        args.yolo_root is not None


def check_data_flags(args):
    """--voc-root or the --coco-* flags, complete and not both (one-line errors)."""
    coco = {f: getattr(args, f.replace("-", "_")) for f in
            ("coco-root", "coco-ann", "coco-val-root", "coco-val-ann")}
    given = [f"--{f}" for f, v in coco.items() if v is not None]
    if args.yolo_root is not None and (given or args.voc_root is not None):
        other = given[0] if given else "--voc-root"
        fail("train", f"--yolo-root: give either --yolo-root or {other}, not both")
    if given and args.voc_root is not None:
        fail("train", f"--voc-root: give either --voc-root or {given[0]}, not both")
    if given and (coco["coco-root"] is None or coco["coco-ann"] is None):
        fail("train", f"{given[0]}: COCO-format data needs both --coco-root DIR (the images) "
                      "and --coco-ann FILE.json (the annotations)")
    if coco["coco-val-root"] is not None and coco["coco-val-ann"] is None:
        fail("train", "--coco-val-root: give --coco-val-ann FILE.json with it")


def _procs(args):
    """--procs, else the default: one process per core on the CPU, one on the GPU."""
    if args.procs is not None:
        return args.procs
    on_gpu = args.device == "cuda" or (args.device == "auto" and _gpu_answers())
    return 1 if on_gpu else os.cpu_count() or 1


def _gpu_answers():
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
    without MPI installed: a one-line notice); --procs N without MPI is a one-line error."""
    missing = distributed.missing_for_processes()
    if missing is None:
        return distributed.launch(settings.procs, _without_procs(argv))
    if args.procs is not None:
        fail("train", f"--procs {args.procs}: {missing}; pip install mpi4py mpich (or train "
                      "in one process: --procs 1)")
    print(f"minissd.train: training in one process ({missing}; pip install mpi4py mpich "
          f"to use the {settings.procs} cores)", file=sys.stderr)
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    launched = distributed.launched_size()            # started by mpiexec: its size
    if launched is not None and args.procs is None:
        args.procs = launched
    check_data_flags(args)
    check_flags(args)
    if not args.resume:
        check_finetune_flags(args)
    if args.weights is None and args.config is None:
        args.config = "tiny"
    try:
        # the data report is made once: by rank 0, not also by the process that launches them
        will_launch = launched is None and _procs(args) > 1 \
            and distributed.missing_for_processes() is None
        quiet = will_launch or distributed.launched_rank() > 0
        settings, spec, n, checkpoint, out = prepare(args, quiet=quiet)
        if settings.batch_size > n:
            where = "the synthetic set" if spec["kind"] == "synthetic" else spec["root"]
            fail("train", f"--batch-size: {settings.batch_size} is larger than the training "
                          f"set ({n} images in {where}); use --batch-size {n} or less, or add "
                          "images")
    except (CheckpointError, DataError, backend.DeviceError) as e:
        fail("train", str(e))
    if launched is None and settings.procs > 1:
        status = start_processes(args, settings, argv)
        if status is not None:
            return status
        settings = dataclasses.replace(settings, procs=1)
    comm = distributed.world()
    if comm.size != settings.procs:         # mpiexec -n decides; the settings record it
        settings = dataclasses.replace(settings, procs=comm.size)
    if comm.size > 1:
        return distributed.run_as_rank(comm, _train, args, settings, spec, out, checkpoint,
                                       comm)
    return _train(args, settings, spec, out, checkpoint, None)


def _train(args, settings, spec, out, checkpoint, comm):
    try:
        return run(settings, device=args.device, out=out, resume=checkpoint,
                   workers=args.workers, progress=not args.no_progress, spec=spec, comm=comm)
    except (CheckpointError, DataError, backend.DeviceError) as e:
        fail("train", str(e))
    except OSError as e:                    # --out read-only, a full disk, ...
        where = e.filename or out or "--out"
        fail("train", f"{where}: cannot write ({e.strerror or e}); free some space or "
                      "choose another --out (a run stopped here resumes from its last.npz)")


if __name__ == "__main__":
    sys.exit(main())
