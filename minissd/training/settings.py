"""The settings of one training run (a dataclass), and the named defaults it starts from.

A checkpoint stores them as JSON (`dataclasses.asdict`, in field order) under
meta["settings"], so --resume continues with exactly the settings the run started with.

Defaults by model, scaled by data: the recipe comes from the config (tiny: TINY_ON_SYNTHETIC
on the synthetic set and TINY_ON_OWN_DATA elsewhere, both the from-scratch Adam recipe;
ssd300/ssd512: the published SGD recipe), and its length is set in epochs of the data in hand:

    iters      = clamp(ceil(epochs * num_train / batch_size), min_iters, max_iters)
    warmup     = round(warmup_fraction * iters)
    milestones = round(f * iters) for f in milestone_fractions

(`scheduled` below). The fractions are the schedules' own: 150/6600 and 4950/6600, 6000/6600
for tiny (the same shape as its earlier 100, 3300, 4000 of 4400 steps); 500/120000 and
80000/120000, 100000/120000 for SSD300. So the plain `python -m minissd.train` (6000 images,
batch 8) is 6600 steps, and SSD300 on VOC07+12 trainval (16551 images, batch 32) 120000.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    # The schedule and data: these depend on the config and the data (see the defaults below).
    batch_size: int                # images per step
    iters: int                     # training steps in total
    lr: float                      # base learning rate, reached at the end of the warm-up
    warmup: int                    # steps of linear learning-rate warm-up from 0
    milestones: tuple[int, ...]    # steps at which the learning rate is multiplied by 0.1
    optimizer: str                 # "sgd" (SGD with momentum, the SSD recipe) or "adam"
    eval_every: int                # evaluate VOC07 mAP every this many steps (0: at the end)
    log_every: int                 # a metrics.jsonl line every this many steps
    ckpt_every: int                # write last.npz every this many steps (0: at evaluations)
    augment: str                   # "full" (SSD recipe), "light", "flip" or "none"
    num_train: int | None          # synthetic set: training images (None on VOC data)
    num_val: int | None            # synthetic set: validation images (None on VOC data)
    clip_norm: float | None        # clip the global gradient norm to this (None: no clipping)
    # The same whatever the config and data: the command line's defaults.
    procs: int = 1                 # processes training data-parallel (minissd/distributed.py)
    config: str = "tiny"           # network configuration name (minissd/config.py)
    seed: int = 0                  # seed of the model init, data order and augmentation
    momentum: float = 0.9          # SGD momentum (Adam keeps its own betas)
    weight_decay: float = 5e-4     # L2 weight decay, SGD and Adam
    voc_root: str | None = None    # absolute path of the VOC data; None: the synthetic set
    val_limit: int | None = None   # evaluate on at most this many validation images
    pretrained_vgg: str | None = None   # .pth the VGG16 base starts from (ssd300/ssd512)
    image_size: int | None = None  # the network's input side; None: the config's own
    classes: tuple[str, ...] | None = None    # --classes: train on these (None: as found)
    coco_metric: bool = False      # --coco-metric: COCO AP beside VOC07 at each evaluation
    fit_boxes: bool = False        # --fit-boxes: default boxes fitted to the training objects
    matching: str | None = None    # --matching: the matching rule (None: the config's own)
    # The schedule in epochs (see `scheduled`): iters, warmup and milestones above are what it
    # resolved to for this run's data; epochs is then this run's own length in epochs.
    epochs: float | None = None    # passes over the training images
    min_iters: int = 1             # iters from epochs is clamped to [min_iters, max_iters]
    max_iters: int | None = None   # None: no upper bound
    warmup_fraction: float = 0.0   # warm-up as a fraction of iters
    milestone_fractions: tuple[float, ...] = ()    # lr x0.1 at these fractions of iters
    # Fine-tuning (train --weights; training/finetune.py, minissd/freeze.py):
    weights: str | None = None     # the trained detector the run starts from (None: scratch)
    prototxt: str | None = None    # its Caffe deploy net, when weights is a .caffemodel
    freeze: str = "none"           # "base" | "extras" (base and extras) | "none": not trained
    body_lr_mult: float = 1.0      # learning rate of the body (base, extras) = lr * this

    def to_dict(self) -> dict:
        """The settings as JSON-friendly values (milestones as a list once dumped)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        """Settings read back from a checkpoint. A checkpoint written before a field existed
        gets the value training used then (SGD, one process); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {**_BEFORE_THE_FIELD_EXISTED, **{k: v for k, v in d.items() if k in names}}
        kept["milestones"] = tuple(kept["milestones"])
        kept["milestone_fractions"] = tuple(kept.get("milestone_fractions", ()))
        if kept.get("classes") is not None:
            kept["classes"] = tuple(kept["classes"])
        return cls(**kept)


# What training did when a checkpoint's settings lack these (they were added later).
_BEFORE_THE_FIELD_EXISTED = {"optimizer": "sgd", "procs": 1, "val_limit": None}

# What a plain `python -m minissd.train` runs: the tiny config on the synthetic set, sized to
# finish within 10 minutes on two CPU cores (tiny() in config.py says why the network looks the
# way it does); the goal is VOC07 mAP >= 0.9 on the synthetic validation split.
# Measured on a 2-core machine in a fresh venv, 2 processes: 6600 steps reached VOC07 mAP
# 0.913 for --seed 0 and 0.919 for --seed 1, each in 6 min 57 s with the synthetic set already
# cached (generating it first takes 13 s more). 4400 steps (the length before data parallelism
# over processes made steps 1.6x faster) gave 0.901 for seed 0 in 4 min 58 s from an empty
# cache: too thin a margin. The VOC07 11-point metric caps a class at 10/11 until every one of
# its objects is found, so the last points come from the smallest (5-8 pixel) objects.
# The tiny net trains from scratch: batch norm and Adam are what get it off the plateau where
# plain SGD without batch norm left it (mAP < 0.01 after 1500 steps). Augmentation: see
# data/choice.py's make_augmentation. In epochs: 6600 steps of 8 on 6000 images = 8.8 epochs.
TINY_ON_SYNTHETIC = TrainSettings(
    batch_size=8, iters=6600, lr=2e-3, warmup=150, milestones=(4950, 6000), optimizer="adam",
    eval_every=1100, log_every=25, ckpt_every=200, augment="flip", num_train=6000,
    num_val=300, clip_norm=10.0, config="tiny", epochs=6600 * 8 / 6000, min_iters=6600,
    max_iters=6600, warmup_fraction=150 / 6600, milestone_fractions=(4950 / 6600, 6000 / 6600))

# ---------------------------------------------------------------------------------------------
# THE TINY RECIPE ON YOUR OWN DATA (--voc-root with --config tiny): the numbers to tune.
# The same from-scratch recipe (Adam, lr 2e-3, batch 8, gradient clipping, the schedule's
# shape), with a length that suits a few hundred to a few thousand images: at least
# TINY_OWN_MIN_ITERS steps (600 images: 58.7 epochs), TINY_OWN_EPOCHS epochs on larger sets,
# at most TINY_OWN_MAX_ITERS steps. A small set is seen many times, so it gets the light
# augmentation (zoom out up to 1.5x, SSD crops, flips) rather than flips only.
TINY_OWN_EPOCHS = 4400 * 8 / 6000          # 5.87: the synthetic run's length in epochs
TINY_OWN_MIN_ITERS = 4400                   # small sets: about 8 minutes on 2 cores
TINY_OWN_MAX_ITERS = 20000                  # large sets: about 40 minutes on 2 cores
TINY_OWN_AUGMENT = "light"
TINY_ON_OWN_DATA = dataclasses.replace(
    TINY_ON_SYNTHETIC, augment=TINY_OWN_AUGMENT, num_train=None, num_val=None,
    epochs=TINY_OWN_EPOCHS, min_iters=TINY_OWN_MIN_ITERS, max_iters=TINY_OWN_MAX_ITERS)
# ---------------------------------------------------------------------------------------------

# The paper's SSD300 schedule on VOC07+12 (also used for ssd512): 120000 steps of 32 on the
# 16551 trainval images = 232 epochs; on other data the same number of epochs.
SSD300_VOC_RECIPE = TrainSettings(
    batch_size=32, iters=120000, lr=1e-3, warmup=500, milestones=(80000, 100000),
    optimizer="sgd", eval_every=10000, log_every=50, ckpt_every=5000, augment="full",
    num_train=None, num_val=None, clip_norm=None, config="ssd300", epochs=120000 * 32 / 16551,
    min_iters=1, max_iters=None, warmup_fraction=500 / 120000,
    milestone_fractions=(80000 / 120000, 100000 / 120000))

# The COCO schedule of Caffe SSD and ssd.pytorch (configs ssd300_coco, ssd512_coco): 400000
# steps of 32, x0.1 at 280000 and 360000, on COCO trainval35k (117266 images with objects:
# 109 epochs); on other data the same number of epochs.
SSD_COCO_RECIPE = dataclasses.replace(
    SSD300_VOC_RECIPE, iters=400000, milestones=(280000, 360000), config="ssd300_coco",
    epochs=400000 * 32 / 117266, milestone_fractions=(280000 / 400000, 360000 / 400000),
    warmup_fraction=500 / 400000, warmup=500)

# ssd300/ssd512 on the synthetic set: the VOC recipe, on a 2000 + 300 image synthetic set.
VOC_RECIPE_ON_2000_SYNTHETIC = dataclasses.replace(SSD300_VOC_RECIPE, num_train=2000,
                                                   num_val=300)


# ---------------------------------------------------------------------------------------------
# FINE-TUNING (train --weights FILE): a run that starts from a trained detector. Shorter than
# from scratch and at a lower learning rate, with a longer warm-up, so the first steps of the
# new (re-initialised) heads do not wreck the features the body brings: Adam at a quarter of
# the tiny recipe's rate, 5% of the steps of warm-up, x0.1 at 75% and 90%, a third of the
# from-scratch length in epochs (at least FINETUNE_MIN_ITERS steps), the light augmentation.
# The body's learning rate is lr x body_lr_mult (1: the whole network at lr). Measured on a
# shapes folder (README, "Fine-tuning"): see the figures there.
FINETUNE_MIN_ITERS = 1500
FINETUNE_MAX_ITERS = 8000
FINETUNE_RECIPE = dataclasses.replace(
    TINY_ON_OWN_DATA, lr=5e-4, config="finetune", epochs=TINY_OWN_EPOCHS / 3,
    min_iters=FINETUNE_MIN_ITERS, max_iters=FINETUNE_MAX_ITERS, iters=FINETUNE_MIN_ITERS,
    warmup_fraction=0.05, warmup=75, milestone_fractions=(0.75, 0.9), milestones=(1125, 1350),
    eval_every=500)
# on the synthetic set (no --voc-root): its 2000 training images, flips only
FINETUNE_ON_SYNTHETIC = dataclasses.replace(FINETUNE_RECIPE, num_train=2000, num_val=300,
                                            augment="flip")


def finetune_settings(on_voc: bool) -> TrainSettings:
    """The fine-tuning recipe (train --weights) on your data or on the synthetic set."""
    return FINETUNE_RECIPE if on_voc else FINETUNE_ON_SYNTHETIC
# ---------------------------------------------------------------------------------------------


def default_settings(config_name: str, on_voc: bool) -> TrainSettings:
    """The named defaults of a config on your data (on_voc: --voc-root or --coco-root) or on
    the synthetic set: the tiny recipe for tiny whatever the data, the COCO recipe for the
    *_coco configs, the SSD300 VOC recipe for ssd300, ssd512 and the others."""
    if config_name == "tiny":
        return TINY_ON_OWN_DATA if on_voc else TINY_ON_SYNTHETIC
    if config_name.endswith("_coco"):
        return SSD_COCO_RECIPE if on_voc else dataclasses.replace(
            SSD_COCO_RECIPE, num_train=2000, num_val=300)
    return SSD300_VOC_RECIPE if on_voc else VOC_RECIPE_ON_2000_SYNTHETIC


def scheduled(s: TrainSettings, num_train: int, iters=None, epochs=None) -> TrainSettings:
    """`s` with iters, warmup and milestones for `num_train` training images: from s.epochs
    clamped to [s.min_iters, s.max_iters], or exactly `iters` or `epochs` when given (no
    clamping then). The returned settings' epochs is the run's own length in epochs."""
    if iters is None:
        e = s.epochs if epochs is None else epochs
        # (the 1e-6 keeps float rounding of an exact step count from adding a step)
        iters = max(1, math.ceil(e * num_train / s.batch_size - 1e-6))
        if epochs is None:
            iters = max(iters, s.min_iters)
            if s.max_iters is not None:
                iters = min(iters, s.max_iters)
    return dataclasses.replace(
        s, iters=iters, warmup=int(round(s.warmup_fraction * iters)),
        milestones=tuple(int(round(f * iters)) for f in s.milestone_fractions),
        epochs=iters * s.batch_size / max(num_train, 1))
