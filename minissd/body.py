"""The SSD of a body config: a network given as a flat list of layers that name their inputs.

A Caffe deploy net, an ONNX graph and minissd's SSDConfig.body all describe a network the same
way: one list, in forward order, each layer naming the blobs it reads. A residual block is two
chains meeting in an eltwise_sum; nothing is nested. BodySSD runs such a list:

    forward    walks the list, keeping each layer's output in `blobs` (by layer name; "data"
               = the images) until the last layer that reads it has run, then hands the
               outputs named by config.sources to the heads (layers.MultiBoxHeads)
    backward   walks the list in reverse: the gradient of a layer's output is the SUM of what
               every layer (and head) that read it sends back, so a blob that fed two layers
               (a residual input, a source that also feeds the trunk) gets both

Parameter names: "<layer name>.weight", ".bias", ".running_mean", ".running_var" (the plan's,
minissd.plan_body), then loc.<k>.* and conf.<k>.* as for every SSD. SSD(config) builds a
BodySSD when config.body is not empty; everything else (state_dict, load_state_dict, params,
buffers, grads, train/eval, to) is SSD's and Container's.

Dimension letters: N batch, S image side, P default boxes, C classes including background.
"""
from __future__ import annotations

import numpy as np

from .layers import (BatchNorm2d, Conv2d, EltwiseSum, L2Norm, MaxPool2d, MultiBoxHeads, ReLU,
                     Scale)
from .model import SSD, _build_layer, _check_feature_maps
from .plan import layer_plan, stage_layers


class BodySSD(SSD):
    """SSD whose network up to the sources is config.body (built by SSD(config)).

    Attributes: plan (the layer plan), body_plan (its stage "body" entries), layers
    ({name: leaf layer} of the body, in plan order), heads (MultiBoxHeads), num_priors.
    """

    def __init__(self, config, rng=None, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(0 if rng is None else rng)
        self.plan = layer_plan(config)
        _check_feature_maps(config)
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

        sources_wanted = any(map(wanted, self.config.sources))
        dsources = self.heads.backward(dloc, dconf, need_dx=sources_wanted)
        self.heads.clear_cache()
        if sources_wanted:
            for name, dsrc in zip(self.config.sources, dsources):
                if wanted(name):
                    add(name, dsrc)
        del dsources
        for p in reversed(self.body_plan):
            layer = self.layers[p.name]
            if p.name not in grads:          # frozen, nothing below trains: no backward
                layer.clear_cache()
                continue
            dy = grads.pop(p.name)
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
