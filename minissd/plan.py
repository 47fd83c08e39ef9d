"""The layer plan: the ONE description of an SSD network, computed from its SSDConfig.

    layer_plan(config) -> (PlannedLayer, ...)      every layer, in forward order
    source_sizes(config) -> (f_0, f_1, ...)        spatial size of each source feature map
    format_plan(plan) -> str                       the plan as a table (notebook 03 prints it)

Everything that needs the network's structure reads it from here: model.py builds its layers
from the plan, the feature-map sizes come from it, the benchmark's conv shapes and the torch
twin in minissd/bench/model.py are built from it, and notebook 03 prints it. A new layer option
is written once, here, and every reader follows.

The plan of SSD300 (ssd.pytorch's layer list; the index in `vgg` counts every conv, ReLU and
pool, which is why its convs are vgg.0, vgg.2, vgg.5, ...):

    vgg.0 .. vgg.33     conv1_1 .. conv5_3 (3x3 conv, ReLU), 2x2 pools (pool3 in ceil mode),
                        pool5 (3x3/1/1), conv6 (3x3, dilation 6), conv7 (1x1), each with a ReLU;
                        with config.batch_norm every conv is followed by a BatchNorm2d
    L2Norm              a side branch on the ReLU of base conv `config.l2norm_conv` (conv4_3):
                        its output is source 0; the trunk goes on from the ReLU's output
    extras.0 .. 7       conv8_1, conv8_2, ... (conv with its ReLU fused; with batch norm each is
                        extras.<j>.0 conv, .1 BatchNorm2d, .2 ReLU); every second one is a source
    loc.<k>, conf.<k>   3x3 pad 1 convs on source k: boxes*4 offsets and boxes*C class scores

A config with a `body` (a flat list of minissd.config.BodyLayer, e.g. an imported Caffe net:
ResNet blocks, BatchNorm + Scale, Eltwise sums) has the plan of that list instead: one entry per
BodyLayer (stage "body", the same name and kind, shapes computed here), then the heads. Every
entry names the entries it reads in `inputs` ("data" = the image), VGG plans included (there
the chain; L2Norm reads its ReLU, the next trunk layer reads that ReLU too; a head reads its
source), so any plan can be walked as a flat list. A "l2norm" entry of stage "body" is Caffe's
Normalize (eps under the root, eps in `eps`); the VGG plan's one (stage "l2norm") is
ssd.pytorch's L2Norm (eps 1e-10 added to the norm).

Shapes are (C, H, W) of one image: the batch dimension N is left out.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .ops.conv import conv_output_size
from .ops.pool import pool_output_size
from .plan_body import body_entries

# The confidence heads start at a tenth of Xavier's scale, so an untrained network's class
# scores are nearly uniform and its confidence loss starts near log(C), even for the hardest
# negatives (tests/test_loss.py); full-scale logits start it twice as high.
CONF_INIT_SCALE = 0.1

STAGES = ("vgg", "l2norm", "extras", "body", "loc", "conf")


@dataclass(frozen=True)
class PlannedLayer:
    """One layer of the network, with everything needed to build it, run it or print it."""
    name: str                 # its place in the state dict: "vgg.5", "L2Norm", "extras.3",
                              # "extras.3.1" (inside a conv-BN-ReLU unit), "loc.2"
    unit: str                 # the item of its stage it belongs to: "vgg.5", "extras.3", "loc.2"
    stage: str                # one of STAGES
    kind: str                 # "conv", "batchnorm", "relu", "maxpool" or "l2norm"
    label: str                # what the paper calls it: "conv4_3", "pool3", "conv8_2", "relu"
    in_shape: tuple           # (C, H, W) of its input
    out_shape: tuple          # (C, H, W) of its output
    kernel: int = 0           # conv and maxpool: kernel side
    stride: int = 1
    padding: int = 0
    dilation: int = 1         # conv only
    ceil_mode: bool = False   # maxpool only: round the output size up (SSD300's pool3: 75 -> 38)
    relu: bool = False        # conv with its ReLU fused into the same layer (extras, no BN)
    source: int | None = None  # trunk and L2Norm: this output IS source k; heads: reads source k
    init_scale: float = 1.0   # conv: factor on the Xavier-uniform weights (conf heads: 0.1);
                              # l2norm: the initial per-channel scale (SSD: 20)
    params: tuple = ()        # ((name, shape), ...) of its trained arrays, PyTorch's layout
    buffers: tuple = ()       # ((name, shape), ...) of its saved, untrained arrays (BN)
    inputs: tuple = ()        # names of the plan entries it reads, in order; "data" = the image
    eps: float | None = None  # body batchnorm and l2norm: their eps (None: VGG plans, whose
                              # layers use BatchNorm2d's 1e-5 and L2Norm's 1e-10)

    @property
    def num_params(self) -> int:
        """Scalars in this layer's parameters."""
        return sum(math.prod(shape) for _, shape in self.params)


def _conv(name, unit, stage, label, shape, out_ch, kernel, stride=1, padding=0, dilation=1,
          relu=False, source=None, init_scale=1.0):
    c, h, w = shape
    ho = conv_output_size(h, kernel, stride, padding, dilation)
    wo = conv_output_size(w, kernel, stride, padding, dilation)
    return PlannedLayer(name, unit, stage, "conv", label, shape, (out_ch, ho, wo), kernel,
                        stride, padding, dilation, relu=relu, source=source,
                        init_scale=init_scale,
                        params=(("weight", (out_ch, c, kernel, kernel)), ("bias", (out_ch,))))


def _pool(name, stage, label, shape, kernel, stride, padding=0, ceil_mode=False):
    c, h, w = shape
    out = (c, pool_output_size(h, kernel, stride, padding, ceil_mode),
           pool_output_size(w, kernel, stride, padding, ceil_mode))
    return PlannedLayer(name, name, stage, "maxpool", label, shape, out, kernel, stride, padding,
                        ceil_mode=ceil_mode)


def _batchnorm(name, unit, stage, label, shape):
    c = shape[0]
    return PlannedLayer(name, unit, stage, "batchnorm", label, shape, shape,
                        params=(("weight", (c,)), ("bias", (c,))),
                        buffers=(("running_mean", (c,)), ("running_var", (c,))))


def _relu(name, unit, stage, shape, source=None):
    return PlannedLayer(name, unit, stage, "relu", "relu", shape, shape, source=source)


def _base_labels(base):
    """VGG names of the base list's entries: conv<block>_<i> for convs, pool<block> for pools."""
    labels, block, i = [], 1, 0
    for v in base:
        if v in ("M", "C"):
            labels.append(f"pool{block}")
            block, i = block + 1, 0
        else:
            i += 1
            labels.append(f"conv{block}_{i}")
    return labels


def layer_plan(config) -> tuple:
    """Every layer of SSD(config) in forward order, with its shapes and parameter names.

    Raises ValueError naming the config field when the config does not describe a network
    (extras not in pairs, l2norm_conv out of range, mbox/feature_maps of the wrong length, a
    map shrinking below 1x1; for a body: a layer whose shapes do not fit, minissd.plan_body).
    """
    if config.body:
        body = body_plan(config)
        if len(config.mbox) != len(config.sources):
            raise ValueError(f"config {config.name!r}: mbox has {len(config.mbox)} entries but "
                             f"the body has {len(config.sources)} sources; give one per source")
        return body + _heads(config, body)
    _check_counts(config)
    plan = []
    shape = (3, config.image_size, config.image_size)
    bn = config.batch_norm

    def next_vgg():
        """The name of the next entry of ssd.pytorch's vgg list: vgg.<its index>."""
        return f"vgg.{sum(p.stage == 'vgg' for p in plan)}"

    def conv_block(label, out_ch, kernel, stride, padding, dilation=1, source=None):
        """conv (+ BN) + ReLU in the vgg list: each its own entry, named by list index."""
        nonlocal shape
        name = next_vgg()
        plan.append(_conv(name, name, "vgg", label, shape, out_ch, kernel, stride, padding,
                          dilation))
        shape = plan[-1].out_shape
        if bn:
            name = next_vgg()
            plan.append(_batchnorm(name, name, "vgg", label + " bn", shape))
        name = next_vgg()
        plan.append(_relu(name, name, "vgg", shape, source))

    # --- the VGG base: the config's list, then pool5, conv6, conv7 ---
    n_conv, l2_found = 0, False
    for v, label in zip(config.base, _base_labels(config.base)):
        if v in ("M", "C"):
            plan.append(_pool(next_vgg(), "vgg", label + (" (ceil)" if v == "C" else ""),
                              shape, 2, 2, ceil_mode=(v == "C")))
            shape = plan[-1].out_shape
            continue
        conv_block(label, v, 3, 1, 1)
        n_conv += 1
        if n_conv == config.l2norm_conv:
            # side branch: L2Norm of this ReLU's output is source 0
            plan.append(PlannedLayer("L2Norm", "L2Norm", "l2norm", "l2norm", f"L2Norm({label})",
                                     shape, shape, source=0, init_scale=config.l2norm_scale,
                                     params=(("weight", (shape[0],)),)))
            l2_found = True
    if not l2_found:
        raise ValueError(f"config {config.name!r}: l2norm_conv={config.l2norm_conv} but the base "
                         f"has only {n_conv} convs; set l2norm_conv to 1..{n_conv}")
    plan.append(_pool(next_vgg(), "vgg", "pool5", shape, 3, 1, 1))
    shape = plan[-1].out_shape
    d = config.fc_dilation
    conv_block("conv6 (fc6)", config.fc[0], 3, 1, d, d)
    conv_block("conv7 (fc7)", config.fc[1], 1, 1, 0, source=1)

    # --- extra layers: pairs of (1x1, then a source conv) ---
    for j, (out_ch, k, stride, pad) in enumerate(config.extras):
        label = f"conv{8 + j // 2}_{1 + j % 2}"
        source = 2 + j // 2 if j % 2 == 1 else None
        unit = f"extras.{j}"
        if bn:
            plan.append(_conv(f"{unit}.0", unit, "extras", label, shape, out_ch, k, stride, pad))
            shape = plan[-1].out_shape
            plan.append(_batchnorm(f"{unit}.1", unit, "extras", label + " bn", shape))
            plan.append(_relu(f"{unit}.2", unit, "extras", shape, source))
        else:
            plan.append(_conv(unit, unit, "extras", label, shape, out_ch, k, stride, pad,
                              relu=True, source=source))
            shape = plan[-1].out_shape
        if shape[1] < 1:
            raise ValueError(f"config {config.name!r}: extras[{j}] (kernel {k}, stride "
                             f"{stride}, padding {pad}) shrinks the map below 1x1; use a "
                             "larger image_size or fewer extras")

    plan = _chain_inputs(plan)
    return tuple(plan) + _heads(config, plan)


def body_plan(config) -> tuple:
    """The body entries of a body config's plan (stage "body"), without the heads: one
    PlannedLayer per config.body entry, shapes computed by minissd.plan_body."""
    return tuple(PlannedLayer(**fields) for fields in body_entries(config))


def _chain_inputs(trunk):
    """The VGG trunk with `inputs` filled in: each layer reads the one before it, except that
    L2Norm is a side branch: it reads the ReLU before it, and so does the layer after it."""
    out, previous = [], "data"
    for p in trunk:
        out.append(dataclasses.replace(p, inputs=(previous,)))
        if p.stage != "l2norm":
            previous = p.name
    return out


def _heads(config, trunk) -> tuple:
    """The loc and conf convs: every loc conv, then every conf conv (ssd.pytorch's order), each
    reading its source (kernel config.head_kernel, padding head_kernel // 2, stride 1)."""
    k_head = config.head_kernel
    if k_head < 1 or k_head % 2 == 0:
        raise ValueError(f"config {config.name!r}: head_kernel={k_head}; use an odd kernel "
                         "(1, 3, ...), so that the heads keep the source's size")
    found = {p.source: p for p in trunk if p.source is not None}
    sources = [found[k] for k in sorted(found)]
    heads = []
    for stage, per_box, scale in (("loc", 4, 1.0), ("conf", config.num_classes,
                                                    CONF_INIT_SCALE)):
        for k, (src, boxes) in enumerate(zip(sources, config.mbox)):
            heads.append(dataclasses.replace(
                _conv(f"{stage}.{k}", f"{stage}.{k}", stage, f"{stage} head {k}", src.out_shape,
                      boxes * per_box, k_head, 1, k_head // 2, source=k, init_scale=scale),
                inputs=(src.name,)))
    return tuple(heads)


def _check_counts(config):
    n_src = 2 + len(config.extras) // 2
    if len(config.extras) % 2:
        raise ValueError(f"config {config.name!r}: extras must come in pairs (1x1, then the "
                         f"source conv); got {len(config.extras)} convs")
    for field in ("mbox", "feature_maps"):
        if len(getattr(config, field)) != n_src:
            raise ValueError(f"config {config.name!r}: {field} has "
                             f"{len(getattr(config, field))} entries but the network has "
                             f"{n_src} sources (2 + len(extras) / 2); give one per source")


def _source_shapes(plan):
    """(C, H, W) of every source, in source order (from the trunk and L2Norm entries)."""
    found = {p.source: p.out_shape for p in plan
             if p.source is not None and p.stage in ("vgg", "l2norm", "extras", "body")}
    return [found[k] for k in sorted(found)]


def stage_layers(plan, stage) -> list:
    """The plan's entries of one stage ("vgg", "extras", "loc", ...), in order."""
    return [p for p in plan if p.stage == stage]


def l2norm_input(plan) -> int:
    """The index, in the vgg stage, of the layer whose output L2Norm reads (the ReLU of base
    conv `l2norm_conv`): the entry just before L2Norm in forward order."""
    names = [p.name for p in plan]
    before = plan[names.index("L2Norm") - 1]
    return [p.name for p in stage_layers(plan, "vgg")].index(before.name)


def extra_units(plan) -> list:
    """The extra layers grouped into units: [[PlannedLayer, ...] per extras.<j>], one entry
    (a conv with its ReLU fused) or three (conv, batch norm, ReLU) each."""
    units = {}
    for p in stage_layers(plan, "extras"):
        units.setdefault(p.unit, []).append(p)
    return list(units.values())


def source_units(plan) -> frozenset:
    """The indices j of the extra units whose output is a source (conv8_2, conv9_2, ...)."""
    return frozenset(j for j, unit in enumerate(extra_units(plan))
                     if any(p.source is not None for p in unit))


def source_shapes(config) -> tuple:
    """(C, H, W) of every source feature map (SSD300: (512, 38, 38), (1024, 19, 19), ...).
    For a body config only the body is planned (mbox may still be empty)."""
    if config.body:
        return tuple(_source_shapes(body_plan(config)))
    return tuple(_source_shapes(layer_plan(config)))


def source_sizes(config) -> tuple:
    """Spatial size of every source feature map, from the plan (no forward pass)."""
    return tuple(s[1] for s in source_shapes(config))


def format_plan(plan, show_relu=False) -> str:
    """The plan as a table: name, label, what the layer does, output shape, parameters.
    Body entries (stage "body") show the entries they read in the label column, and all of
    their ReLUs; the VGG plans hide the ReLUs that are not sources unless show_relu."""
    def what(p):
        if p.kind == "conv":
            extra = (f" s{p.stride}" if p.stride != 1 else "") + \
                    (f" d{p.dilation}" if p.dilation != 1 else "") + (" +relu" if p.relu else "")
            return f"conv {p.in_shape[0]}->{p.out_shape[0]} {p.kernel}x{p.kernel} p{p.padding}" \
                + extra
        if p.kind == "maxpool":
            return f"maxpool {p.kernel}x{p.kernel} s{p.stride} p{p.padding}" + \
                (" ceil" if p.ceil_mode else "")
        return p.kind
    def label(p):
        # a body entry's label is its name: show what it reads instead (the graph's edges)
        return "<- " + ", ".join(p.inputs) if p.stage == "body" else p.label
    shown = [p for p in plan if p.kind != "relu" or show_relu or p.source is not None
             or p.stage == "body"]                   # body ReLUs are read by name: kept
    wn = max([12] + [len(p.name) for p in shown])
    wl = max([16] + [len(label(p)) for p in shown])
    rows = [f"{'name':<{wn}} {'label':<{wl}} {'layer':<30} {'output (C, H, W)':<18} "
            f"{'params':>10}  source"]
    for p in shown:
        src = "" if p.source is None else (f"reads {p.source}" if p.stage in ("loc", "conf")
                                           else f"= {p.source}")
        rows.append(f"{p.name:<{wn}} {label(p):<{wl}} {what(p):<30} {str(p.out_shape):<18} "
                    f"{p.num_params:>10,}  {src}")
    return "\n".join(rows)
