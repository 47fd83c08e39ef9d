"""The SSD network: VGG16 base, extra layers, and the loc/conf heads, with an explicit backward.

Dimension letters: N batch, S image side, P default boxes (sum over sources of f_k^2 * k_k),
C classes including background, H x W the size of one source feature map, k boxes per location.

    x (N, 3, S, S)
      -> vgg: convs 3x3 + ReLU, max pools ("M"; "C" = ceil mode), pool5 3x3/1/1,
              conv6 (3x3, dilated) + ReLU, conv7 (1x1) + ReLU
              source 0 = L2Norm(ReLU output of base conv `l2norm_conv`)       (conv4_3, 38x38)
              source 1 = conv7's ReLU output                                  (19x19)
      -> extras: convs + ReLU; the output of every second one is a source     (10, 5, 3, 1)
      -> heads: per source, a 3x3 pad 1 conv to k*4 (loc) and one to k*C (conf); each output
         (N, k*4, H, W) is permuted to (N, H, W, k*4) and flattened to (N, H*W*k, 4), so box
         order is: source, then row, then column, then box at that location (as priors.py).
    loc (N, P, 4), conf (N, P, C)

Parameter names are ssd.pytorch's, so its checkpoints load unchanged: vgg.<i>.weight/bias with
i the index in ssd.pytorch's layer list (every conv, ReLU and pool counts one: SSD300 convs at
0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, pool5 30, conv6 31, conv7 33), L2Norm.weight,
extras.<j>.*, loc.<k>.*, conf.<k>.*.

Efficiency: the loc and conf convs of one source read the same input, so they run as ONE conv
whose filters are the two stacked (one im2col, one matrix product per source); its output is
split by channel. The heads' outputs are written once into the final (N, P, 4) / (N, P, C).
forward(x, keep_cache=False) drops each layer's cache as soon as it is used (inference).
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_numpy
from .layers import BatchNorm2d, Conv2d, L2Norm, MaxPool2d, ReLU, Sequential
from .ops.conv import conv2d_backward, conv2d_forward, conv_output_size
from .ops.pool import pool_output_size


CONF_INIT_SCALE = 0.1     # confidence heads: Xavier-uniform times this (see SSD.__init__)


class SSD:
    """SSD built from an SSDConfig (minissd.config): ssd300, ssd512, tiny or your own.

    Inputs:
      config: SSDConfig
      rng:    numpy Generator or seed for the Xavier-uniform initialisation (default seed 0)
      dtype:  float32 (training, inference) or float64 (gradient checks)
    Parameters are created on the current device (backend.set_device).
    """

    def __init__(self, config, rng=None, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(0 if rng is None else rng)
        _check_config(config)
        self.vgg, self.l2norm_index, l2_ch = _build_vgg(config, rng, self.dtype)
        self.L2Norm = L2Norm(l2_ch, config.l2norm_scale, dtype=self.dtype)
        self.extras = [_extra_layer(c_in, c_out, k, s, p, rng, self.dtype, config.batch_norm)
                       for c_in, (c_out, k, s, p) in zip(
                           (config.fc[1],) + tuple(e[0] for e in config.extras[:-1]),
                           config.extras)]
        channels = [l2_ch, config.fc[1]] + [e[0] for e in config.extras[1::2]]
        c = config.num_classes
        self.loc = [Conv2d(ch, k * 4, 3, 1, 1, rng=rng, dtype=self.dtype)
                    for ch, k in zip(channels, config.mbox)]
        self.conf = [Conv2d(ch, k * c, 3, 1, 1, rng=rng, dtype=self.dtype)
                     for ch, k in zip(channels, config.mbox)]
        # The confidence heads start at a tenth of Xavier's scale, so an untrained network's
        # class scores are nearly uniform and its confidence loss starts near log(C), even for
        # the hardest negatives (tests/test_loss.py); full-scale logits start it twice as high.
        for conv in self.conf:
            conv.params["weight"] *= CONF_INIT_SCALE
        self.num_priors = config.num_priors()
        self._head_caches = None
        _check_feature_maps(self)

    # --- parameters ----------------------------------------------------------------------

    def _named_layers(self):
        """(prefix, layer) for every layer with parameters, in ssd.pytorch's state_dict order."""
        for i, layer in enumerate(self.vgg):
            if layer.params:
                yield f"vgg.{i}", layer
        yield "L2Norm", self.L2Norm
        for group, layers in (("extras", self.extras), ("loc", self.loc), ("conf", self.conf)):
            for j, layer in enumerate(layers):
                yield f"{group}.{j}", layer

    def params(self):
        """[(name, array)]: the parameter arrays themselves (an optimizer updates them in place)."""
        return [(f"{prefix}.{k}", v) for prefix, layer in self._named_layers()
                for k, v in layer.params.items()]

    @property
    def grads(self):
        """{name: gradient} from the last backward (empty before the first one)."""
        return {f"{prefix}.{k}": v for prefix, layer in self._named_layers()
                for k, v in layer.grads.items()}

    def num_parameters(self) -> int:
        """Total number of scalar parameters (SSD300, 21 classes: 26,285,486)."""
        return int(sum(v.size for _, v in self.params()))

    def buffers(self):
        """[(name, array)]: state that is saved but not trained (BatchNorm's running
        statistics, e.g. "vgg.1.running_mean"); empty for the VOC configs."""
        return [(f"{prefix}.{k}", v) for prefix, layer in self._named_layers()
                for k, v in layer.buffers.items()]

    def state_dict(self) -> dict:
        """{name: NumPy copy}: the parameters (ssd.pytorch's names and shapes) and buffers."""
        return {name: to_numpy(v).copy() for name, v in self.params() + self.buffers()}

    def train(self, mode: bool = True):
        """Training mode (the default): BatchNorm layers use the batch's statistics."""
        for layer in self._leaf_layers():
            layer.training = mode
        return self

    def eval(self):
        """Inference mode: BatchNorm layers use their running statistics."""
        return self.train(False)

    @property
    def training(self) -> bool:
        return all(layer.training for layer in self._leaf_layers())

    def _leaf_layers(self):
        for layer in list(self.vgg) + [self.L2Norm] + self.extras + self.loc + self.conf:
            yield from (layer.layers if isinstance(layer, Sequential) else (layer,))

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

    def to(self, device: str):
        """Move every parameter (and gradient) to "cpu" or "cuda"; returns self."""
        for layer in self._leaf_layers():
            layer.to(device)
        self._head_caches = None
        return self

    # --- forward / backward --------------------------------------------------------------

    def forward(self, x, keep_cache: bool = True):
        """x (N, 3, S, S) -> loc (N, P, 4), conf (N, P, C).

        keep_cache=False frees every layer's cache as soon as possible (inference only: no
        backward afterwards), which keeps peak memory near the largest single activation.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(f"SSD({cfg.name}).forward: expected images (N, 3, {cfg.image_size}, "
                             f"{cfg.image_size}), got {tuple(x.shape)}; resize to the config's "
                             "image_size")
        if x.dtype != self.dtype:
            raise TypeError(f"SSD({cfg.name}).forward: x is {x.dtype}, the model is "
                            f"{self.dtype}; convert the batch with x.astype({self.dtype.name!r})")
        sources = []
        h = x
        for i, layer in enumerate(self.vgg):
            h = layer.forward(h)
            if not keep_cache:
                layer.cache = None
            if i == self.l2norm_index:
                sources.append(self.L2Norm.forward(h))             # (N, C0, H0, W0)
                if not keep_cache:
                    self.L2Norm.cache = None
        sources.append(h)                                          # conv7 (after ReLU)
        for j, conv in enumerate(self.extras):
            h = conv.forward(h)
            if not keep_cache:
                conv.cache = None
            if j % 2 == 1:
                sources.append(h)
        return self._heads_forward(sources, keep_cache)

    def _heads_forward(self, sources, keep_cache):
        """Each source through its stacked loc+conf conv; outputs flattened into (N, P, *)."""
        xp = get_array_module(sources[0])
        n, c = sources[0].shape[0], self.config.num_classes
        loc = xp.empty((n, self.num_priors, 4), dtype=self.dtype)
        conf = xp.empty((n, self.num_priors, c), dtype=self.dtype)
        caches, start = [], 0
        for s, lconv, cconv, k in zip(sources, self.loc, self.conf, self.config.mbox):
            w = xp.concatenate([lconv.params["weight"],
                                cconv.params["weight"]])           # (k(4+C), Cs, 3, 3)
            b = xp.concatenate([lconv.params["bias"], cconv.params["bias"]])   # (k(4+C),)
            y, cache = conv2d_forward(s, w, b, 1, 1)               # (N, k(4+C), H, W)
            caches.append(cache if keep_cache else None)
            hh, ww = y.shape[2:]
            stop = start + hh * ww * k
            y = y.transpose(0, 2, 3, 1)                            # (N, H, W, k(4+C))
            loc[:, start:stop] = y[..., :k * 4].reshape(n, hh * ww * k, 4)
            conf[:, start:stop] = y[..., k * 4:].reshape(n, hh * ww * k, c)
            start = stop
        self._head_caches = caches if keep_cache else None
        return loc, conf

    def backward(self, dloc, dconf, need_dx=True):
        """dloc (N, P, 4), dconf (N, P, C) -> dx (N, 3, S, S); fills self.grads (overwrites).

        need_dx=False skips the gradient of the images (training never uses it) and returns
        None: the first conv, at full resolution, is spared its col2im.
        """
        if self._head_caches is None:
            raise RuntimeError("SSD.backward: no forward cache; call forward(x) (with "
                               "keep_cache=True) right before backward")
        dsources = self._heads_backward(dloc, dconf)
        # extras: the output of every second conv is also a source, so its gradient adds up
        dh = None
        for j in range(len(self.extras) - 1, -1, -1):
            if j % 2 == 1:
                dsrc = dsources.pop()
                dh = dsrc if dh is None else dh + dsrc
            dh = self.extras[j].backward(dh)
        # conv7's output went to source 1 and to the extras
        dh = dsources[1] if dh is None else dh + dsources[1]
        for i in range(len(self.vgg) - 1, -1, -1):
            if i == self.l2norm_index:
                # source 0 = L2Norm(h_i); h_i also feeds layer i + 1
                dh = dh + self.L2Norm.backward(dsources[0])
            dh = self.vgg[i].backward(dh) if i else self.vgg[0].backward(dh, need_dx)
        return dh

    def _heads_backward(self, dloc, dconf):
        """Gradients of the stacked head convs; returns the gradient of each source."""
        xp = get_array_module(dloc)
        n, c = dloc.shape[0], self.config.num_classes
        dsources, start = [], 0
        for cache, lconv, cconv, k in zip(self._head_caches, self.loc, self.conf,
                                          self.config.mbox):
            hh, ww = cache.out_hw
            stop = start + hh * ww * k
            # y = y.transpose(0, 2, 3, 1); loc[:, start:stop] = y[..., :4k].reshape(...); conf too
            dy = xp.concatenate([dloc[:, start:stop].reshape(n, hh, ww, k * 4),
                                 dconf[:, start:stop].reshape(n, hh, ww, k * c)],
                                axis=3)                            # (N, H, W, k(4+C))
            dy = dy.transpose(0, 3, 1, 2)                          # (N, k(4+C), H, W)
            # y, cache = conv2d_forward(s, w, b, 1, 1)
            ds, dw, db = conv2d_backward(dy, cache)
            lconv.grads = {"weight": dw[:k * 4], "bias": db[:k * 4]}
            cconv.grads = {"weight": dw[k * 4:], "bias": db[k * 4:]}
            dsources.append(ds)
            start = stop
        return dsources

    def __repr__(self):
        cfg = self.config
        return (f"SSD({cfg.name}, image {cfg.image_size}, {cfg.num_classes} classes, "
                f"{self.num_priors} default boxes, {self.num_parameters():,} parameters)")


# --- building ------------------------------------------------------------------------------

def _build_vgg(config, rng, dtype):
    """ssd.pytorch's vgg list: Sequential whose indices are the parameter names' indices.

    Returns (Sequential, index of the ReLU after base conv `l2norm_conv`, its channels).
    """
    layers, c_in, n_conv = [], 3, 0
    l2_index, l2_ch = None, None
    for v in config.base:
        if v == "M":
            layers.append(MaxPool2d(2, 2))
        elif v == "C":
            layers.append(MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += _conv_relu(c_in, v, 3, 1, 1, 1, rng, dtype, config.batch_norm)
            c_in, n_conv = v, n_conv + 1
            if n_conv == config.l2norm_conv:
                l2_index, l2_ch = len(layers) - 1, v
    if l2_index is None:
        raise ValueError(f"config {config.name!r}: l2norm_conv={config.l2norm_conv} but the base "
                         f"has only {n_conv} convs; set l2norm_conv to 1..{n_conv}")
    d = config.fc_dilation
    bn = config.batch_norm
    layers += ([MaxPool2d(3, 1, 1)]                                                # pool5
               + _conv_relu(c_in, config.fc[0], 3, 1, d, d, rng, dtype, bn)        # conv6
               + _conv_relu(config.fc[0], config.fc[1], 1, 1, 0, 1, rng, dtype, bn))  # conv7
    return Sequential(*layers), l2_index, l2_ch


def _conv_relu(c_in, c_out, k, stride, pad, dilation, rng, dtype, batch_norm):
    """[Conv2d, ReLU] (ssd.pytorch's two list entries), or [Conv2d, BatchNorm2d, ReLU] when
    the config asks for batch norm (as torchvision's vgg16_bn orders them)."""
    conv = Conv2d(c_in, c_out, k, stride, pad, dilation, rng=rng, dtype=dtype)
    return [conv, BatchNorm2d(c_out, dtype=dtype), ReLU()] if batch_norm else [conv, ReLU()]


def _extra_layer(c_in, c_out, k, stride, pad, rng, dtype, batch_norm):
    """One extra layer: a Conv2d with its ReLU fused, or Sequential(conv, batch norm, ReLU)
    (parameters then named extras.<j>.0.weight, extras.<j>.1.weight, ...)."""
    if batch_norm:
        return Sequential(*_conv_relu(c_in, c_out, k, stride, pad, 1, rng, dtype, True))
    return Conv2d(c_in, c_out, k, stride, pad, rng=rng, dtype=dtype, relu=True)


def _check_config(config):
    n_src = 2 + len(config.extras) // 2
    if len(config.extras) % 2:
        raise ValueError(f"config {config.name!r}: extras must come in pairs (1x1, then the "
                         f"source conv); got {len(config.extras)} convs")
    for field in ("mbox", "feature_maps"):
        if len(getattr(config, field)) != n_src:
            raise ValueError(f"config {config.name!r}: {field} has "
                             f"{len(getattr(config, field))} entries but the network has "
                             f"{n_src} sources (2 + len(extras) / 2); give one per source")


def source_sizes(config):
    """Spatial size of every source feature map, computed from the layer list (no forward)."""
    s = config.image_size
    sizes = []
    n_conv = 0
    for v in config.base:
        if v in ("M", "C"):
            s = pool_output_size(s, 2, 2, 0, ceil_mode=(v == "C"))
        else:
            n_conv += 1
            if n_conv == config.l2norm_conv:
                sizes.append(s)
    s = pool_output_size(s, 3, 1, 1)                                      # pool5
    s = conv_output_size(s, 3, 1, config.fc_dilation, config.fc_dilation)  # conv6
    sizes.append(s)                                                       # conv7 (1x1)
    for j, (_, k, stride, pad) in enumerate(config.extras):
        s = conv_output_size(s, k, stride, pad)
        if s < 1:
            raise ValueError(f"config {config.name!r}: extras[{j}] (kernel {k}, stride "
                             f"{stride}, padding {pad}) shrinks the map below 1x1; use a "
                             "larger image_size or fewer extras")
        if j % 2 == 1:
            sizes.append(s)
    return tuple(sizes)


def _check_feature_maps(model):
    cfg = model.config
    sizes = source_sizes(cfg)
    if sizes != tuple(cfg.feature_maps):
        raise ValueError(f"config {cfg.name!r}: the network's source feature maps are {sizes} "
                         f"for image_size {cfg.image_size}, but config.feature_maps is "
                         f"{tuple(cfg.feature_maps)}; set feature_maps={sizes} (and matching "
                         "steps) or change image_size / extras")
