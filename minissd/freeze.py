"""Which layers a fine-tuning run leaves as they are (--freeze), read from the layer plan.

    part_layers(plan, part) -> (names, ...)       the plan entries of "base" or "extras"
    frozen_layers(plan, freeze) -> frozenset      the entries --freeze base|extras|none keeps
    frozen_params(plan, frozen) -> frozenset      their parameter names ("vgg.0.weight", ...)
    backward_needed(plan, frozen) -> frozenset    the entries whose backward must run

The two parts of an SSD body, as a fine-tuning run names them:
  VGG configs (ssd300, ssd512, tiny, ...): base = the `vgg` stage and L2Norm (conv1_1 .. conv7,
      the network SSD starts from), extras = the `extras` stage (conv8_1 ..).
  body configs (an imported Caffe net such as OpenCV's res10 face SSD): base = the first
      source and every body layer it is computed from (res10: the stem and the ResNet blocks up
      to its stride-8 feature map, and conv4_3_norm), extras = every other body layer (the
      deeper blocks, fc7 and the extra convs). The same split as VGG SSD's conv4_3 source:
      the low-level features every source is built on.
--freeze is cumulative, as it is in SSD fine-tuning recipes: "base" freezes the base (extras
and heads train), "extras" freezes the base AND the extras (only the heads train), "none"
freezes nothing. The heads always train.

A frozen layer is left out of the optimizer (no update, no weight decay), its batch norm
stays in eval mode (running statistics, never updated), and backward skips it when nothing
below it trains: a layer's backward runs only when it has parameters that train or reads,
directly or not, a layer that trains (`backward_needed`). Since a frozen part is closed
under "is computed from" (a part holds everything below it), backward stops at the lowest
trainable layer: no gradient of the frozen layers' parameters nor of their inputs is
computed, so a frozen step is cheaper.
"""
from __future__ import annotations

FREEZE_CHOICES = ("none", "base", "extras")


def part_layers(plan, part) -> tuple:
    """Names of the plan entries of `part` ("base" or "extras"), in plan order."""
    if part not in ("base", "extras"):
        raise ValueError(f"unknown part {part!r}; use base or extras")
    body = [p for p in plan if p.stage == "body"]
    if not body:
        stages = ("vgg", "l2norm") if part == "base" else ("extras",)
        return tuple(p.name for p in plan if p.stage in stages)
    first = next(p.name for p in plan if p.stage in ("loc", "conf"))
    source = next(p for p in plan if p.name == first).inputs[0]   # head 0 reads source 0
    below = _computed_from(body, source)
    return tuple(p.name for p in body if (p.name in below) == (part == "base"))


def _computed_from(body, name) -> set:
    """`name` and every body entry it is computed from (its ancestors through `inputs`)."""
    by_name = {p.name: p for p in body}
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in by_name:          # "data" is no layer
            continue
        seen.add(n)
        todo.extend(by_name[n].inputs)
    return seen


def frozen_layers(plan, freeze) -> frozenset:
    """The plan entries that --freeze `freeze` ("none", "base", "extras") leaves as they are."""
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"unknown --freeze {freeze!r}; use one of {', '.join(FREEZE_CHOICES)}")
    if freeze == "none":
        return frozenset()
    parts = ("base",) if freeze == "base" else ("base", "extras")
    return frozenset(name for part in parts for name in part_layers(plan, part))


def frozen_params(plan, frozen) -> frozenset:
    """Parameter names ("<entry>.<param>") of the frozen plan entries."""
    return frozenset(f"{p.name}.{k}" for p in plan if p.name in frozen for k, _ in p.params)


def backward_needed(plan, frozen) -> frozenset:
    """The plan entries whose backward must run when the entries `frozen` do not train: those
    with parameters that train, and those that read (through `inputs`, at any depth) one that
    does. Nothing frozen: every entry from the first parameter layer on."""
    need = set()
    for p in plan:                                  # forward order: inputs come first
        trains = bool(p.params) and p.name not in frozen
        if trains or any(name in need for name in p.inputs):
            need.add(p.name)
    return frozenset(need)
