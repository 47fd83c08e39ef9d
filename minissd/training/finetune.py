"""A run that starts from a trained detector (python -m minissd.train --weights FILE).

    parent(weights, prototxt) -> (config, state)          the detector, as evaluate reads it
    child_config(parent, class_names, config_name, image_size) -> config of the new run
    start_state(parent_state, parent_config, model) -> (state, what was taken)
    describe(...) -> the lines the run prints about it

FILE is anything `evaluate --weights` takes (torchvision's or ssd.pytorch's .pth, a Caffe SSD
.caffemodel with its deploy prototxt, "opencv-face") or a minissd checkpoint. What carries
over, and why:
  * the body and the extra layers: every array of the new network whose name and shape the
    file has (all of them, with the file's own network);
  * the heads only when the classes are the same names in the same order (and the heads
    have the same shapes): a head's channel c means class c, so any other class list gets
    new heads (the random init of --seed), said in one line with both lists;
  * the config's preprocessing (channel order, mean, std, resize rule: what the weights were
    trained to see) and post-processing (thresholds, NMS, box clipping): they belong to the
    weights, so the fine-tuned checkpoint keeps them and evaluate / detect on it compute
    what they should. Without --config the default boxes are the parent's too (recomputed
    for --image-size: a fully convolutional body takes another input side).
  * --config NAME instead builds that minissd network (its default boxes, its extras) around
    the file's base, which must fit it entirely.
It is not --resume: the run has its own schedule (training/settings.py's FINETUNE_RECIPE) and
a new optimizer; its checkpoints resume like any other run's.
"""
from __future__ import annotations

import dataclasses
import os

from ..config import get_config, resized
from ..freeze import part_layers
from ..inference import OPENCV_FACE, CheckpointError, load_weights

# TrainSettings.config of a run on the weights' own network (no --config)
OWN_NETWORK = "weights"

# the config fields that belong to the weights and carry over to a --config network
_POSTPROCESS = ("conf_threshold", "nms_threshold", "top_k", "per_class_top_k", "clip_boxes",
                "wh_clamp")


class FinetuneError(CheckpointError):
    """A fine-tuning flag that does not fit the weights; str(e) is '<flag>: <problem>; <fix>'."""


def parent(weights, prototxt=None):
    """(config, state) of the detector in `weights` (CheckpointError naming the file)."""
    _check_kind(weights)
    model, config, _ = load_weights(weights, prototxt)
    return config, model.state_dict()


def _check_kind(path):
    """CheckpointError when `path` is a file of no kind load_weights reads: every one of them
    is a zip (torch.save's, a minissd .npz), a pickle (torch's legacy .pth: protocol 2+
    starts with byte 0x80) or a .caffemodel (protobuf, known by its name)."""
    path = str(path)
    if path == OPENCV_FACE or path.endswith(".caffemodel") or not os.path.isfile(path):
        return                                  # load_weights says what is wrong
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":
        raise CheckpointError(f"{path}: not a weights file of a kind minissd reads (a .pth "
                              "from torchvision or ssd.pytorch, a Caffe .caffemodel, a minissd "
                              ".npz); pass one of those, or opencv-face")


def child_config(parent_config, class_names, config_name=None, image_size=None):
    """The new run's config: the parent's network (or --config's around its base) with this
    run's classes, at `image_size` when given. FinetuneError when the body does not allow it."""
    names = tuple(class_names)
    if config_name is not None:
        try:
            cfg = get_config(config_name, class_names=names)
            if image_size is not None and image_size != cfg.image_size:
                cfg = resized(cfg, image_size)
        except ValueError as e:
            raise FinetuneError(f"--image-size: {e}") from None
        carried = {k: getattr(parent_config, k) for k in _POSTPROCESS}
        return dataclasses.replace(cfg, preprocess=dict(parent_config.preprocess), **carried)
    cfg = dataclasses.replace(parent_config, class_names=names)
    if image_size is not None and image_size != cfg.image_size:
        try:
            cfg = resized(cfg, image_size)
        except ValueError as e:
            raise FinetuneError(f"--image-size: {e}; the weights' network takes "
                                f"{parent_config.image_size} pixels") from None
    return cfg


def start_state(parent_state, parent_config, model):
    """(state for model.load_state_dict, report): the model's own init with every body and
    extras array the parent has (same name and shape) and the parent's heads when the classes
    are the same. report: {"taken": names, "new": body names left at init, "heads_kept": bool}.
    FinetuneError when --config's base does not fit the parent (a name missing or another
    shape)."""
    config, own = model.config, model.state_dict()
    heads = {n for n in own if n.startswith(("loc.", "conf."))}
    check_base_fits(model.plan, config, parent_state, parent_config)
    fits = {n for n in own if n in parent_state
            and tuple(parent_state[n].shape) == tuple(own[n].shape)}
    heads_kept = (tuple(parent_config.class_names) == tuple(config.class_names)
                  and heads <= fits)
    taken = sorted(n for n in fits if n not in heads or heads_kept)
    state = dict(own)
    state.update({n: parent_state[n] for n in taken})
    new = sorted(n for n in own if n not in heads and n not in fits)
    return state, {"taken": taken, "new": new, "heads_kept": heads_kept}


def check_base_fits(plan, config, parent_state, parent_config):
    """FinetuneError unless every base array of `plan` is in the parent's state with the
    same shape (always so for the parent's own network; --config NAME may not fit)."""
    base = set(part_layers(plan, "base"))
    for p in plan:
        if p.name not in base:
            continue
        for k, shape in p.params + p.buffers:
            name, theirs = f"{p.name}.{k}", parent_state.get(f"{p.name}.{k}")
            if theirs is None or tuple(theirs.shape) != tuple(shape):
                got = "missing" if theirs is None else f"{tuple(theirs.shape)}"
                raise FinetuneError(
                    f"--config: the {config.name} network's base does not fit the weights' "
                    f"({parent_config.name}): {name} is {tuple(shape)} there, {got} in the "
                    "weights; leave --config out to fine-tune the weights' own network")


def describe(weights, parent_config, config, report, freeze, body_lr_mult):
    """The lines the run prints about where it starts (one for the heads)."""
    def classes(names):
        return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    new = report["new"]
    lines = [f"fine-tuning from {weights} ({parent_config.name}, {parent_config.image_size} px): "
             f"{len(report['taken'])} arrays taken"
             + (f", {len(new)} new ({', '.join(new[:4])}{' ...' if len(new) > 4 else ''})"
                if new else "")
             + f"; frozen: {freeze}; body lr x{body_lr_mult:g}"]
    if report["heads_kept"]:
        lines.append(f"heads kept: the same {len(config.class_names)} classes "
                     f"({classes(config.class_names)})")
    elif tuple(parent_config.class_names) == tuple(config.class_names):
        lines.append("heads re-initialised: the same classes, but the weights' heads do not "
                     f"fit the {config.name} network (other default boxes per location)")
    else:
        theirs, ours = classes(parent_config.class_names), classes(config.class_names)
        lines.append(f"heads re-initialised: the weights' classes ({theirs}) are not this "
                     f"run's ({ours})")
    return lines


def check_freeze(plan, freeze, config_name):
    """FinetuneError when --freeze names a part the network does not have."""
    if freeze == "none":
        return
    for part in ("base",) if freeze == "base" else ("base", "extras"):
        if not part_layers(plan, part):
            raise FinetuneError(f"--freeze {freeze}: the {config_name} network has no {part} "
                                "layers; use --freeze base or none")


def plan_of(config):
    """layer_plan(config), a shape that does not fit being a FinetuneError on --image-size."""
    from ..plan import layer_plan
    try:
        return layer_plan(config)
    except ValueError as e:
        raise FinetuneError(f"--image-size: {e}") from None


def checked(weights, prototxt, class_names, config_name=None, image_size=None, freeze="none"):
    """(parent config, parent state, config) after every check; CheckpointError or
    FinetuneError (one line) otherwise. What train does before its first step."""
    pconfig, pstate = parent(weights, prototxt)
    config = checked_against(pconfig, pstate, class_names, config_name, image_size, freeze)
    return pconfig, pstate, config


def checked_against(pconfig, pstate, class_names, config_name=None, image_size=None,
                    freeze="none"):
    """The new run's config from the parent's (config, state), every flag checked."""
    config = child_config(pconfig, class_names, config_name, image_size)
    plan = plan_of(config)
    check_base_fits(plan, config, pstate, pconfig)
    check_freeze(plan, freeze, config.name)
    return config


__all__ = ["OPENCV_FACE", "CheckpointError", "FinetuneError", "checked", "child_config", "describe",
           "parent", "start_state"]
