"""The SSD network: VGG16 base, extra layers, and the loc/conf heads, with an explicit backward.

Dimension letters: N batch, S image side, P default boxes (sum over sources of f_k^2 * k_k),
C classes including background, H x W the size of one source feature map, k boxes per location.

    x (N, 3, S, S)
      -> vgg: convs 3x3 + ReLU, max pools ("M"; "C" = ceil mode), pool5 3x3/1/1,
              conv6 (3x3, dilated) + ReLU, conv7 (1x1) + ReLU
              source 0 = L2Norm(ReLU output of base conv `l2norm_conv`)       (conv4_3, 38x38)
              source 1 = conv7's ReLU output                                  (19x19)
      -> extras: convs + ReLU; the output of every second one is a source     (10, 5, 3, 1)
      -> heads (layers.MultiBoxHeads): per source, a 3x3 pad 1 conv to k*4 (loc) and one to
         k*C (conf), flattened to (N, H*W*k, 4) and (N, H*W*k, C) in the order of priors.py
    loc (N, P, 4), conf (N, P, C)

The layers are built from minissd.plan.layer_plan(config), the one description of the network
(shapes, names, which outputs are sources), which the benchmark's torch twin and notebook 03
read too.

Parameter names are ssd.pytorch's, so its checkpoints load unchanged: vgg.<i>.weight/bias with
i the index in ssd.pytorch's layer list (every conv, ReLU and pool counts one: SSD300 convs at
0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, pool5 30, conv6 31, conv7 33), L2Norm.weight,
extras.<j>.*, loc.<k>.*, conf.<k>.*.

forward(x, keep_cache=False) drops each layer's cache as soon as it is used (inference).

A config with a `body` (a flat list of layers naming their inputs: a ResNet, an imported Caffe
net) builds a BodySSD (below), a subclass of SSD: SSD(config) picks it.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_numpy
from .layers import (BatchNorm2d, Container, Conv2d, EltwiseSum, L2Norm, MaxPool2d,
                     MultiBoxHeads, ReLU, Scale, Sequential)
from .plan import CONF_INIT_SCALE, source_sizes   # noqa: F401  (public names)
from .plan import extra_units, l2norm_input, layer_plan, source_units, stage_layers


class SSD(Container):
    """SSD built from an SSDConfig (minissd.config): ssd300, ssd512, tiny or your own.

    Inputs:
      config: SSDConfig
      rng:    numpy Generator or seed for the Xavier-uniform initialisation (default seed 0)
      dtype:  float32 (training, inference) or float64 (gradient checks)
    Parameters are created on the current device (backend.set_device).

    Children (and parameter prefixes): vgg (Sequential), L2Norm, extras (Sequential of
    Conv2d, or of Sequential(conv, batch norm, ReLU) units), heads (MultiBoxHeads; its
    parameters are named loc.<k>.* and conf.<k>.*, without a prefix of their own).
    params(), buffers(), grads, leaf_layers(), train(), eval() and to() come from Container.

    A config with a body gives a BodySSD instead (the same interface; its children are the
    body's layers by name, then the heads).
    """

    def __new__(cls, config=None, *args, **kwargs):
        if cls is SSD and config is not None and getattr(config, "body", ()):
            cls = BodySSD
        return super().__new__(cls)

    def __init__(self, config, rng=None, dtype=np.float32):
        rng = self._start(config, rng, dtype)
        # layers are created in plan order, which fixes the order of the random init draws
        layers = {p.name: _build_layer(p, rng, self.dtype) for p in self.plan}
        self.vgg = Sequential(*(layers[p.name] for p in stage_layers(self.plan, "vgg")))
        self.L2Norm = layers["L2Norm"]
        self.l2norm_index = l2norm_input(self.plan)       # the vgg layer L2Norm reads
        self.extras = Sequential(*(layers[u[0].name] if len(u) == 1 else
                                   Sequential(*(layers[p.name] for p in u))
                                   for u in extra_units(self.plan)))
        self.source_extras = source_units(self.plan)      # conv8_2, conv9_2, ...
        self.heads = MultiBoxHeads([layers[p.name] for p in stage_layers(self.plan, "loc")],
                                   [layers[p.name] for p in stage_layers(self.plan, "conf")],
                                   config.mbox, config.num_classes)
        self.num_priors = config.num_priors()
        self.leaf_by_name = layers                        # plan entry name -> its layer
        self.frozen, self.needed = frozenset(), None      # freeze(): nothing frozen

    def _start(self, config, rng, dtype):
        """What every SSD's constructor does first: keep the config and dtype, plan the
        network (checking its feature maps against the config) and return the init's
        random Generator (seed 0 by default)."""
        self.config = config
        self.dtype = np.dtype(dtype)
        self.plan = layer_plan(config)
        _check_feature_maps(config)
        return np.random.default_rng(0 if rng is None else rng)

    def children(self):
        return [("vgg", self.vgg), ("L2Norm", self.L2Norm), ("extras", self.extras),
                (None, self.heads)]

    # --- frozen layers (fine-tuning: minissd/freeze.py) ----------------------------------

    def freeze(self, names):
        """Leave the plan entries `names` as they are: their batch norm in eval mode from now
        on (train() keeps it there), and backward skips every layer below the lowest one that
        trains (freeze.backward_needed). The optimizer must be given only the parameters that
        train (freeze.frozen_params names the others). An empty `names` undoes it."""
        from .freeze import backward_needed          # freeze.py reads plans only
        self.frozen = frozenset(names)
        self.needed = backward_needed(self.plan, self.frozen) if self.frozen else None
        return self.train(self.training)

    def _needs(self, name) -> bool:
        """Whether backward must run through the plan entry `name` (always, when nothing is
        frozen)."""
        return self.needed is None or name in self.needed

    def train(self, mode: bool = True):
        """Training mode (batch statistics) for every layer but the frozen ones, which stay
        in eval mode (their running statistics); returns self."""
        for name, layer in self.leaf_by_name.items():
            layer.train(mode and name not in self.frozen)
        for layer in self.heads.leaf_layers():
            layer.train(mode)
        return self

    @property
    def training(self) -> bool:
        """True when the layers that train are in training mode (frozen ones never are)."""
        return all(layer.training for name, layer in self.leaf_by_name.items()
                   if name not in self.frozen) and \
            all(layer.training for layer in self.heads.leaf_layers())

    # --- parameters (params(), buffers(), grads from Container) --------------------------

    def num_parameters(self) -> int:
        """Total number of scalar parameters (SSD300, 21 classes: 26,285,486)."""
        return int(sum(v.size for _, v in self.params()))

    def state_dict(self) -> dict:
        """{name: NumPy copy}: the parameters (ssd.pytorch's names and shapes) and buffers."""
        return {name: to_numpy(v).copy() for name, v in self.params() + self.buffers()}

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copy arrays into the parameters (in place, cast to the model's dtype and device).

        strict=True: a missing key, an unexpected key or a shape mismatch raises KeyError /
        ValueError naming the key (and both shapes). strict=False: loads the keys present in
        both with equal shapes, and returns (missing, unexpected) lists of names; shape
        mismatches still raise, since they mean a different network.
        """
        own = dict(self.params() + self.buffers())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing[:10]}"
                           f"{' ...' if len(missing) > 10 else ''}, unexpected keys "
                           f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} "
                           f"(config {self.config.name!r}); check the config and num_classes, "
                           "or pass strict=False to load the common part")
        for name, w in own.items():
            if name in state and tuple(np.shape(state[name])) != tuple(w.shape):
                raise ValueError(f"load_state_dict: {name!r} has shape "
                                 f"{tuple(np.shape(state[name]))} in the state dict but "
                                 f"{tuple(w.shape)} in the model (config {self.config.name!r}, "
                                 f"{self.config.num_classes} classes); build the model with the "
                                 "config the weights were trained with")
        for name, w in own.items():
            if name in state:
                xp = get_array_module(w)
                w[...] = xp.asarray(to_numpy(state[name]) if xp is np else state[name],
                                    dtype=w.dtype)
        return missing, unexpected

    # --- forward / backward --------------------------------------------------------------

    def forward(self, x, keep_cache: bool = True):
        """x (N, 3, S, S) -> loc (N, P, 4), conf (N, P, C).

        keep_cache=False frees every layer's cache as soon as possible (inference only: no
        backward afterwards), which keeps peak memory near the largest single activation.
        """
        self._check_images(x)
        sources = []
        h = x
        for i, layer in enumerate(self.vgg):
            h = layer.forward(h)
            if not keep_cache:
                layer.clear_cache()
            if i == self.l2norm_index:
                sources.append(self.L2Norm.forward(h))             # (N, C0, H0, W0)
                if not keep_cache:
                    self.L2Norm.clear_cache()
        sources.append(h)                                          # conv7 (after ReLU)
        for j, unit in enumerate(self.extras):
            h = unit.forward(h)
            if not keep_cache:
                unit.clear_cache()
            if j in self.source_extras:
                sources.append(h)
        return self.heads.forward(sources, keep_cache)            # (N, P, 4), (N, P, C)

    def _check_images(self, x):
        """ValueError / TypeError with the fix when x is not a batch this model takes."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(f"SSD({cfg.name}).forward: expected images (N, 3, {cfg.image_size}, "
                             f"{cfg.image_size}), got {tuple(x.shape)}; resize to the config's "
                             "image_size")
        if x.dtype != self.dtype:
            raise TypeError(f"SSD({cfg.name}).forward: x is {x.dtype}, the model is "
                            f"{self.dtype}; convert the batch with x.astype({self.dtype.name!r})")

    def backward(self, dloc, dconf, need_dx=True):
        """dloc (N, P, 4), dconf (N, P, C) -> dx (N, 3, S, S); fills self.grads (overwrites).

        need_dx=False skips the gradient of the images (training never uses it) and returns
        None: the first conv, at full resolution, is spared its col2im.

        Each layer's cache is dropped once its backward has used it, so the memory of the
        forward caches shrinks as backward goes down the network (the peak of a step is then
        at the start of backward, with every cache held; minissd/bench/memory.py), and the
        next forward starts with none of them. A second backward needs a new forward.
        """
        if self.needed is not None:
            return self._backward_frozen(dloc, dconf)
        dsources = self.heads.backward(dloc, dconf)
        self.heads.clear_cache()
        # extras: the output of every second conv is also a source, so its gradient adds up
        dh = None
        for j in range(len(self.extras) - 1, -1, -1):
            if j in self.source_extras:
                dsrc = dsources.pop()
                dh = dsrc if dh is None else dh + dsrc
            dh = self.extras[j].backward(dh)
            self.extras[j].clear_cache()
        # conv7's output went to source 1 and to the extras
        dh = dsources[1] if dh is None else dh + dsources[1]
        for i in range(len(self.vgg) - 1, -1, -1):
            if i == self.l2norm_index:
                # source 0 = L2Norm(h_i); h_i also feeds layer i + 1
                dh = dh + self.L2Norm.backward(dsources[0])
                self.L2Norm.clear_cache()
                dsources[0] = None
            dh = self.vgg[i].backward(dh) if i else self.vgg[0].backward(dh, need_dx)
            self.vgg[i].clear_cache()
        return dh

    def _backward_frozen(self, dloc, dconf):
        """backward with frozen layers (freeze()): the same walk, stopped below the lowest
        layer that trains; returns None (no image gradient). A layer whose backward does not
        run keeps the grads it had (none, in a fine-tuning run): the optimizer skips it."""
        entry = {p.name: p for p in self.plan}
        name_of = {id(layer): name for name, layer in self.leaf_by_name.items()}
        try:
            heads_in = [p.inputs[0] for p in stage_layers(self.plan, "loc")]  # head k's source
            dsources = self.heads.backward(dloc, dconf, need_dx=[self._needs(n) for n in heads_in])

            def unit_backward(unit, dh):
                """A layer or a conv-BN-ReLU unit; its first conv is spared its dx when
                nothing it reads trains."""
                leaves = unit.leaf_layers()
                for leaf in reversed(leaves[1:]):
                    dh = leaf.backward(dh)
                first = entry[name_of[id(leaves[0])]]
                if first.kind == "conv":
                    return leaves[0].backward(dh, any(map(self._needs, first.inputs)))
                return leaves[0].backward(dh)

            dh = None
            for j in range(len(self.extras) - 1, -1, -1):
                if j in self.source_extras:
                    dsrc = dsources.pop()
                    dh = dsrc if dh is None else dh + dsrc
                if not self._needs(name_of[id(self.extras[j].leaf_layers()[-1])]):
                    return None             # nothing below trains (freeze.backward_needed)
                dh = unit_backward(self.extras[j], dh)
            dh = dsources[1] if dh is None else dh + dsources[1]
            for i in range(len(self.vgg) - 1, -1, -1):
                if i == self.l2norm_index and self._needs("L2Norm"):
                    dh = dh + self.L2Norm.backward(dsources[0])
                if not self._needs(name_of[id(self.vgg[i])]):
                    return None
                dh = unit_backward(self.vgg[i], dh)
            return None
        finally:
            self.clear_cache()              # the used caches and those of skipped layers

    def __repr__(self):
        cfg = self.config
        return (f"SSD({cfg.name}, image {cfg.image_size}, {cfg.num_classes} classes, "
                f"{self.num_priors} default boxes, {self.num_parameters():,} parameters)")


# --- a body given as a flat list of layers (config.body) ------------------------------------
#
# A Caffe deploy net, an ONNX graph and minissd's SSDConfig.body all describe a network the
# same way: one list, in forward order, each layer naming the blobs it reads. A residual block
# is two chains meeting in an eltwise_sum; nothing is nested. BodySSD runs such a list:
#   forward    walks the list, keeping each layer's output in `blobs` (by layer name; "data"
#              = the images) until the last layer that reads it has run, then hands the
#              outputs named by config.sources to the heads (layers.MultiBoxHeads)
#   backward   walks the list in reverse: the gradient of a layer's output is the SUM of what
#              every layer (and head) that read it sends back, so a blob that fed two layers
#              (a residual input, a source that also feeds the trunk) gets both
# Parameter names: "<layer name>.weight", ".bias", ".running_mean", ".running_var" (the
# plan's, minissd.plan_body), then loc.<k>.* and conf.<k>.* as for every SSD.

class BodySSD(SSD):
    """SSD whose network up to the sources is config.body (built by SSD(config)).

    Attributes: plan (the layer plan), body_plan (its stage "body" entries), layers
    ({name: leaf layer} of the body, in plan order), heads (MultiBoxHeads), num_priors.
    """

    def __init__(self, config, rng=None, dtype=np.float32):
        rng = self._start(config, rng, dtype)
        self.body_plan = stage_layers(self.plan, "body")
        # layers are created in plan order, which fixes the order of the random init draws
        self.layers = {p.name: _body_layer(p, rng, self.dtype) for p in self.body_plan}
        self.heads = MultiBoxHeads(
            [_build_layer(p, rng, self.dtype) for p in stage_layers(self.plan, "loc")],
            [_build_layer(p, rng, self.dtype) for p in stage_layers(self.plan, "conf")],
            config.mbox, config.num_classes)
        self.num_priors = config.num_priors()
        self.leaf_by_name = self.layers                   # SSD.freeze / train read these
        self.frozen, self.needed = frozenset(), None
        # after layer i has run, the blobs it was the last reader of are dropped (the sources
        # are kept for the heads)
        last = {}
        for i, p in enumerate(self.body_plan):
            for name in p.inputs:
                last[name] = i
        self._drop_after = [[] for _ in self.body_plan]
        for name, i in last.items():
            if name not in config.sources:
                self._drop_after[i].append(name)

    def children(self):
        return [(name, layer) for name, layer in self.layers.items()] + [(None, self.heads)]

    def forward(self, x, keep_cache: bool = True):
        """x (N, 3, S, S) -> loc (N, P, 4), conf (N, P, C).

        keep_cache=False frees every layer's cache at once (inference only: no backward
        afterwards); each output is freed after its last reader in either case.
        """
        self._check_images(x)
        blobs = {"data": x}
        for p, drop in zip(self.body_plan, self._drop_after):
            layer = self.layers[p.name]
            blobs[p.name] = layer.forward(*(blobs[name] for name in p.inputs))
            if not keep_cache:
                layer.clear_cache()
            for name in drop:
                del blobs[name]
        sources = [blobs.pop(name) for name in self.config.sources]
        return self.heads.forward(sources, keep_cache)            # (N, P, 4), (N, P, C)

    def backward(self, dloc, dconf, need_dx=True):
        """dloc (N, P, 4), dconf (N, P, C) -> dx (N, 3, S, S); fills self.grads (overwrites).

        need_dx=False returns None and skips the image gradient of the convs that read the
        image. Each layer's cache is dropped once its backward has used it.

        With frozen layers (SSD.freeze) only the layers of freeze.backward_needed run: a
        layer's gradient goes to an input only when that input needs it, and the convs
        whose inputs need none skip their dx; the image gradient is None.
        """
        needed = self.needed
        if needed is not None:
            need_dx = False
        grads = {}

        def add(name, g):
            # a blob read by several layers: the gradients add up (never in place: an
            # eltwise_sum hands the same array to each of its inputs)
            grads[name] = g if name not in grads else grads[name] + g

        def wanted(name):
            """Whether the gradient of blob `name` is needed."""
            return need_dx if name == "data" else needed is None or name in needed

        dsources = self.heads.backward(dloc, dconf,
                                       need_dx=[wanted(n) for n in self.config.sources])
        self.heads.clear_cache()
        for name, dsrc in zip(self.config.sources, dsources):
            if wanted(name):
                add(name, dsrc)
        del dsources
        for p in reversed(self.body_plan):
            layer = self.layers[p.name]
            if p.name not in grads:          # frozen, nothing below trains: no backward
                layer.clear_cache()
                continue
            dy = grads.pop(p.name)           # unfrozen: every layer reaches a source
            if p.kind == "eltwise_sum":
                dins = layer.backward(dy)
            elif p.kind == "conv" and (p.inputs == ("data",) or needed is not None):
                dins = (layer.backward(dy, any(map(wanted, p.inputs))),)
            else:
                dins = (layer.backward(dy),)
            layer.clear_cache()
            for name, g in zip(p.inputs, dins):
                if wanted(name):
                    add(name, g)
        return grads.get("data") if need_dx else None


def _body_layer(p, rng, dtype):
    """The layer object of one body PlannedLayer (minissd.plan_body)."""
    has = {name for name, _ in p.params}
    if p.kind == "conv":
        return Conv2d(p.in_shape[0], p.out_shape[0], p.kernel, p.stride, p.padding, p.dilation,
                      rng=rng, dtype=dtype, bias="bias" in has)
    if p.kind == "batchnorm":
        return BatchNorm2d(p.in_shape[0], eps=p.eps, dtype=dtype, affine="weight" in has)
    if p.kind == "scale":
        return Scale(p.in_shape[0], bias="bias" in has, dtype=dtype)
    if p.kind == "l2norm":
        shared = dict(p.params)["weight"] == (1,)
        return L2Norm(p.in_shape[0], p.init_scale, eps=p.eps, dtype=dtype, eps_inside=True,
                      channel_shared=shared)
    if p.kind == "eltwise_sum":
        return EltwiseSum()
    if p.kind == "relu":
        return ReLU()
    if p.kind == "maxpool":
        return MaxPool2d(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
    raise ValueError(f"plan entry {p.name}: unknown kind {p.kind!r}")


# --- building ------------------------------------------------------------------------------

def _build_layer(p, rng, dtype):
    """The layer object of one PlannedLayer (minissd.plan)."""
    if p.kind == "conv":
        return Conv2d(p.in_shape[0], p.out_shape[0], p.kernel, p.stride, p.padding, p.dilation,
                      rng=rng, dtype=dtype, relu=p.relu, init_scale=p.init_scale)
    if p.kind == "batchnorm":
        return BatchNorm2d(p.in_shape[0], dtype=dtype)
    if p.kind == "relu":
        return ReLU()
    if p.kind == "maxpool":
        return MaxPool2d(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
    if p.kind == "l2norm":
        return L2Norm(p.in_shape[0], p.init_scale, dtype=dtype)
    raise ValueError(f"plan entry {p.name}: unknown kind {p.kind!r}")


def _check_feature_maps(cfg):
    sizes = source_sizes(cfg)
    if sizes != tuple(cfg.feature_maps):
        raise ValueError(f"config {cfg.name!r}: the network's source feature maps are {sizes} "
                         f"for image_size {cfg.image_size}, but config.feature_maps is "
                         f"{tuple(cfg.feature_maps)}; set feature_maps={sizes} (and matching "
                         "steps) or change image_size / extras")
