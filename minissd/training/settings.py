"""The settings of one training run (a dataclass), and the named defaults it starts from.

A checkpoint stores them as JSON (`dataclasses.asdict`, in field order) under
meta["settings"], so --resume continues with exactly the settings the run started with.
"""
from __future__ import annotations

import dataclasses
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
        return cls(**kept)


# What training did when a checkpoint's settings lack these (they were added later).
_BEFORE_THE_FIELD_EXISTED = {"optimizer": "sgd", "procs": 1, "val_limit": None}

# What a plain `python -m minissd.train` runs: the tiny config on the synthetic set, sized to
# finish within 10 minutes on two CPU cores (tiny() in config.py says why the network looks the
# way it does); the goal is VOC07 mAP >= 0.9 on the synthetic validation split.
# Measured on a 2-core machine with an empty cache (the 6300-image synthetic set is generated
# first), 2 threads: `python -m minissd.train` took 7 min 52 s and reached VOC07 mAP 0.909
# (VOC10 0.956) at step 4400. The VOC07 11-point metric caps a class at 10/11 until every one
# of its objects is found, so the last points come from the smallest (5-8 pixel) objects.
# The tiny net trains from scratch: batch norm and Adam are what get it off the plateau where
# plain SGD without batch norm left it (mAP < 0.01 after 1500 steps). Augmentation: see
# data/choice.py's make_augmentation.
TINY_ON_SYNTHETIC = TrainSettings(
    batch_size=8, iters=4400, lr=2e-3, warmup=100, milestones=(3300, 4000), optimizer="adam",
    eval_every=1100, log_every=25, ckpt_every=200, augment="flip", num_train=6000,
    num_val=300, clip_norm=10.0, config="tiny")

# The paper's SSD300 schedule on VOC07+12 (also used for ssd512 on VOC).
SSD300_VOC_RECIPE = TrainSettings(
    batch_size=32, iters=120000, lr=1e-3, warmup=500, milestones=(80000, 100000),
    optimizer="sgd", eval_every=10000, log_every=50, ckpt_every=5000, augment="full",
    num_train=None, num_val=None, clip_norm=None, config="ssd300")

# Every other pairing (ssd300/ssd512 on the synthetic set, tiny on VOC): the VOC recipe, with
# a 2000 + 300 image synthetic set when the data is synthetic.
VOC_RECIPE_ON_2000_SYNTHETIC = dataclasses.replace(SSD300_VOC_RECIPE, num_train=2000,
                                                   num_val=300)


def default_settings(config_name: str, on_voc: bool) -> TrainSettings:
    """The named defaults for a config on VOC data (on_voc) or on the synthetic set."""
    if not on_voc and config_name == "tiny":
        return TINY_ON_SYNTHETIC
    if on_voc and config_name in ("ssd300", "ssd512"):
        return SSD300_VOC_RECIPE
    return VOC_RECIPE_ON_2000_SYNTHETIC
