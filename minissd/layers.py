"""Layer classes: thin wrappers that own parameters and gradients and call minissd.ops.

Every layer (and every Container of layers, and the SSD model) has
    forward(x) -> y          keeps what backward needs in its cache
    backward(dy) -> dx       OVERWRITES grads (no accumulation, no zero_grad needed)
    params()                 [(name, array)], PyTorch's names and shapes (conv weight
                             (F, C, KH, KW)); a leaf layer also has each as an attribute
                             (conv.weight, conv.bias)
    grads                    {name: array}, the same names, filled by backward
    buffers()                [(name, array)] saved state that is not trained (BatchNorm's
                             running statistics); saved in state_dict with the params
    leaf_layers()            the leaf layers inside, in order
    train(mode) / eval()     BatchNorm uses batch statistics while training
    to(device)               moves params, buffers (and grads) to "cpu" or "cuda"; returns self

Parameters are created on the current device (backend.set_device) in the chosen dtype
(float32 by default; float64 for gradient checks). Optimisers may update params in place.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .backend import get_array_module
from .ops.activation import relu_backward, relu_forward
from .ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from .ops.conv import conv2d_backward, conv2d_forward
from .ops.eltwise import eltwise_sum_backward, eltwise_sum_forward
from .ops.l2norm import l2norm_backward, l2norm_forward
from .ops.pool import maxpool2d_backward, maxpool2d_forward
from .ops.scale import scale_backward, scale_forward


class Layer:
    """Base class of the leaf layers (Conv2d, MaxPool2d, ReLU, L2Norm, BatchNorm2d, Scale,
    EltwiseSum).

    A leaf layer keeps its trained arrays as attributes named in `param_names` (Conv2d.weight,
    Conv2d.bias) and its untrained saved arrays in `buffer_names` (BatchNorm2d.running_mean).
    """
    param_names = ()
    buffer_names = ()

    def __init__(self):
        self.grads = {}
        self.cache = None
        self.training = True

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # --- the parameter interface (the same for Container and the SSD model) ---------------

    def params(self):
        """[(name, array)]: the parameter arrays themselves (an optimizer updates them in place)."""
        return [(n, getattr(self, n)) for n in self.param_names]

    def buffers(self):
        """[(name, array)]: saved state that is not trained."""
        return [(n, getattr(self, n)) for n in self.buffer_names]

    def leaf_layers(self):
        """[self]: a leaf layer is its own only leaf."""
        return [self]

    def train(self, mode: bool = True):
        """Training mode (True, the default) or inference mode (False); returns self."""
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def clear_cache(self):
        """Forget what forward kept for backward (frees its memory)."""
        self.cache = None

    def to(self, device):
        """Move params, buffers and grads to "cpu" or "cuda" (arrays are replaced, not edited)."""
        for n in self.param_names + self.buffer_names:
            setattr(self, n, backend.to_device(getattr(self, n), device))
        self.grads = {k: backend.to_device(v, device) for k, v in self.grads.items()}
        self.cache = None
        return self


class Container:
    """A layer made of named child layers (Sequential, MultiBoxHeads, the SSD model).

    Subclasses define children() -> [(prefix, layer)]; a child's parameter "weight" is then
    named "<prefix>.weight" (no prefix when it is None). params(), buffers(), grads,
    leaf_layers(), train(), eval(), clear_cache() and to() are those of Layer, gathered over
    the children in order.
    """

    def children(self):
        raise NotImplementedError

    def _named(self, what):
        return [(n if prefix is None else f"{prefix}.{n}", a)
                for prefix, child in self.children() for n, a in what(child)]

    def params(self):
        """[(name, array)]: every child's parameters, prefixed, in order."""
        return self._named(lambda child: child.params())

    def buffers(self):
        """[(name, array)]: every child's buffers, prefixed, in order."""
        return self._named(lambda child: child.buffers())

    @property
    def grads(self):
        """{name: gradient} from the last backward (empty before the first one)."""
        return dict(self._named(lambda child: child.grads.items()))

    def leaf_layers(self):
        """Every leaf layer inside, in order (replicas of a network pair them up by position)."""
        return [leaf for _, child in self.children() for leaf in child.leaf_layers()]

    @property
    def training(self) -> bool:
        return all(layer.training for layer in self.leaf_layers())

    def train(self, mode: bool = True):
        """Training mode (the default): BatchNorm layers use the batch's statistics."""
        for layer in self.leaf_layers():
            layer.train(mode)
        return self

    def eval(self):
        """Inference mode: BatchNorm layers use their running statistics."""
        return self.train(False)

    def clear_cache(self):
        """Forget what forward kept for backward, in every child."""
        for _, child in self.children():
            child.clear_cache()

    def to(self, device):
        """Move every parameter, buffer and gradient to "cpu" or "cuda"; returns self."""
        for _, child in self.children():
            child.to(device)
        self.clear_cache()
        return self


def _new_param(values, dtype):
    """A NumPy array turned into a parameter of `dtype` on the current device."""
    return backend.to_device(np.ascontiguousarray(values, dtype=dtype))


def _rng(rng):
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    return rng


class Conv2d(Layer):
    """2-D convolution with bias. weight (out_ch, in_ch, k, k), bias (out_ch,); bias=False:
    no bias (param_names ("weight",), as Caffe's bias_term: false).

    Initialised as SSD does for its new layers: Xavier-uniform weight, i.e. uniform in
    [-a, a] with a = sqrt(6 / (fan_in + fan_out)), fan_in = in_ch*k*k, fan_out = out_ch*k*k,
    times `init_scale`; zero bias. `rng`: a numpy Generator or a seed. `relu=True` applies a
    ReLU to the output (and its gradient in backward), saving a separate layer.
    """
    param_names = ("weight", "bias")

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, dilation=1, rng=None,
                 dtype=np.float32, relu=False, init_scale=1.0, bias=True):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.relu = relu
        fan_in, fan_out = in_ch * kernel * kernel, out_ch * kernel * kernel
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = _rng(rng).uniform(-bound, bound, size=(out_ch, in_ch, kernel, kernel))
        self.weight = _new_param(w, dtype)
        if init_scale != 1.0:
            self.weight *= init_scale                    # in the parameter's dtype
        if bias:
            self.bias = _new_param(np.zeros(out_ch), dtype)
        else:
            self.param_names = ("weight",)
            self.bias = None

    def forward(self, x):
        """x (N, in_ch, H, W) -> y (N, out_ch, Ho, Wo)."""
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"Conv2d({self.in_ch}->{self.out_ch}): expected x of shape "
                             f"(N, {self.in_ch}, H, W), got {x.shape}; check the previous "
                             "layer's output channels")
        y, conv_cache = conv2d_forward(x, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation)
        relu_cache = None
        if self.relu:
            y, relu_cache = relu_forward(y)
        self.cache = (conv_cache, relu_cache)
        return y

    def backward(self, dy, need_dx=True):
        """dy (N, out_ch, Ho, Wo) -> dx (N, in_ch, H, W) (None when need_dx is False);
        sets grads weight, bias."""
        conv_cache, relu_cache = self.cache
        if self.relu:
            dy = relu_backward(dy, relu_cache)
        dx, dw, db = conv2d_backward(dy, conv_cache, need_dx)
        self.grads = {"weight": dw, "bias": db} if self.bias is not None else {"weight": dw}
        return dx

    def __repr__(self):
        return (f"Conv2d({self.in_ch}, {self.out_ch}, kernel={self.kernel}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}{', relu' if self.relu else ''}"
                f"{'' if self.bias is not None else ', bias=False'})")


class MaxPool2d(Layer):
    """Max pooling with PyTorch semantics (see minissd/ops/pool.py)."""

    def __init__(self, kernel, stride, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel, self.stride, self.padding, self.ceil_mode = kernel, stride, padding, ceil_mode

    def forward(self, x):
        y, self.cache = maxpool2d_forward(x, self.kernel, self.stride, self.padding, self.ceil_mode)
        return y

    def backward(self, dy):
        return maxpool2d_backward(dy, self.cache)

    def __repr__(self):
        return (f"MaxPool2d(kernel={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode})")


class ReLU(Layer):
    """y = max(x, 0)."""

    def forward(self, x):
        y, self.cache = relu_forward(x)
        return y

    def backward(self, dy):
        return relu_backward(dy, self.cache)

    def __repr__(self):
        return "ReLU()"


class L2Norm(Layer):
    """Per-position L2 normalisation over channels with a learnable per-channel scale.

    weight (channels,) filled with `scale` (20 in SSD), as ssd.pytorch's L2Norm (eps added to
    the norm). eps_inside=True: Caffe's Normalize (eps under the square root, ops/l2norm.py);
    channel_shared=True: one scale for every channel, weight (1,).
    """
    param_names = ("weight",)

    def __init__(self, channels, scale=20.0, eps=1e-10, dtype=np.float32, eps_inside=False,
                 channel_shared=False):
        super().__init__()
        self.channels, self.eps, self.eps_inside = channels, eps, eps_inside
        self.weight = _new_param(np.full(1 if channel_shared else channels, scale), dtype)

    def forward(self, x):
        y, self.cache = l2norm_forward(x, self.weight, self.eps, self.eps_inside)
        return y

    def backward(self, dy):
        dx, dscale = l2norm_backward(dy, self.cache)
        self.grads = {"weight": dscale}
        return dx

    def __repr__(self):
        return f"L2Norm({self.channels})"


class BatchNorm2d(Layer):
    """Batch normalisation per channel (ops/batchnorm.py), as torch.nn.BatchNorm2d.

    weight (C,) ones, bias (C,) zeros; buffers running_mean (C,) zeros, running_var (C,) ones.
    affine=False: no weight and bias (y = xhat; Caffe's BatchNorm, which a Scale follows).
    `training` True: batch statistics, running ones updated; False: the running statistics
    (inference). `reduce`: None, or a function summing an array over processes, which makes
    it synchronized batch norm (minissd/distributed.py's sync_batch_norm sets it).
    """
    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var")
    reduce = None

    def __init__(self, channels, momentum=0.1, eps=1e-5, dtype=np.float32, affine=True):
        super().__init__()
        self.channels, self.momentum, self.eps = channels, momentum, eps
        if affine:
            self.weight = _new_param(np.ones(channels), dtype)
            self.bias = _new_param(np.zeros(channels), dtype)
        else:
            self.param_names = ()
            self.weight = self.bias = None
        self.running_mean = _new_param(np.zeros(channels), dtype)
        self.running_var = _new_param(np.ones(channels), dtype)

    def forward(self, x):
        y, self.cache = batchnorm2d_forward(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
            self.momentum, self.eps, reduce=self.reduce)
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = batchnorm2d_backward(dy, self.cache, reduce=self.reduce)
        self.grads = {"weight": dgamma, "bias": dbeta} if self.weight is not None else {}
        return dx

    def __repr__(self):
        return f"BatchNorm2d({self.channels}{'' if self.weight is not None else ', affine=False'})"


class Scale(Layer):
    """y = x * weight[c] + bias[c] per channel (Caffe's Scale layer; ops/scale.py).

    weight (C,) ones, bias (C,) zeros; bias=False: no bias (param_names ("weight",)).
    """

    def __init__(self, channels, bias=True, dtype=np.float32):
        super().__init__()
        self.channels = channels
        self.param_names = ("weight", "bias") if bias else ("weight",)
        self.weight = _new_param(np.ones(channels), dtype)
        self.bias = _new_param(np.zeros(channels), dtype) if bias else None

    def forward(self, x):
        y, self.cache = scale_forward(x, self.weight, self.bias)
        return y

    def backward(self, dy):
        dx, dw, db = scale_backward(dy, self.cache)
        self.grads = {"weight": dw} if db is None else {"weight": dw, "bias": db}
        return dx

    def __repr__(self):
        return f"Scale({self.channels}{'' if self.bias is not None else ', bias=False'})"


class EltwiseSum(Layer):
    """y = x_0 + x_1 + ... (two or more inputs of one shape; ops/eltwise.py): a residual join.

    forward(*xs) -> y;  backward(dy) -> (dx_0, dx_1, ...), every one the same array dy.
    """

    def forward(self, *xs):
        y, self.cache = eltwise_sum_forward(*xs)
        return y

    def backward(self, dy):
        return eltwise_sum_backward(dy, self.cache)

    def __call__(self, *xs):
        return self.forward(*xs)

    def __repr__(self):
        return "EltwiseSum()"


class Sequential(Container):
    """Layers applied in order. params/grads are named "<index>.<name>" as in PyTorch
    (e.g. "0.weight")."""

    def __init__(self, *layers):
        self.layers = list(layers)

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def __call__(self, x):
        return self.forward(x)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class MultiBoxHeads(Container):
    """SSD's heads: per source k, a loc conv (k boxes * 4 offsets) and a conf conv (k boxes * C
    class scores), both 3x3 pad 1 (or any kernel with its padding, stride 1: config.head_kernel);
    parameters loc.<k>.weight/bias, conf.<k>.weight/bias.

        forward(sources [(N, C_k, H_k, W_k)]) -> loc (N, P, 4), conf (N, P, C)
        backward(dloc (N, P, 4), dconf (N, P, C)) -> [dsource_k (N, C_k, H_k, W_k)]

    Each output (N, boxes*4, H, W) is permuted to (N, H, W, boxes*4) and flattened to
    (N, H*W*boxes, 4), so box order is: source, then row, then column, then box at that
    location (as priors.py). P = sum over sources of H_k * W_k * boxes_k.

    Efficiency: the loc and conf convs of one source read the same input, so they run as ONE
    conv whose filters are the two stacked (one im2col and one matrix product per source); its
    output is split by channel, and its weight gradient split back into the two convs' grads.
    The outputs are written once into the final (N, P, 4) / (N, P, C) arrays.
    """

    def __init__(self, loc_convs, conf_convs, boxes, num_classes):
        self.loc, self.conf = list(loc_convs), list(conf_convs)
        self.boxes, self.num_classes = tuple(boxes), num_classes
        self._caches = None

    def children(self):
        return ([(f"loc.{k}", c) for k, c in enumerate(self.loc)]
                + [(f"conf.{k}", c) for k, c in enumerate(self.conf)])

    def clear_cache(self):
        self._caches = None

    def forward(self, sources, keep_cache=True):
        """sources [(N, C_k, H_k, W_k)] -> loc (N, P, 4), conf (N, P, C).
        keep_cache=False keeps nothing for backward (inference)."""
        xp = get_array_module(sources[0])
        n, c = sources[0].shape[0], self.num_classes
        p = sum(s.shape[2] * s.shape[3] * k for s, k in zip(sources, self.boxes))
        dtype = self.loc[0].weight.dtype
        loc = xp.empty((n, p, 4), dtype=dtype)
        conf = xp.empty((n, p, c), dtype=dtype)
        caches, start = [], 0
        for s, lconv, cconv, k in zip(sources, self.loc, self.conf, self.boxes):
            w = xp.concatenate([lconv.weight, cconv.weight])             # (k(4+C), Cs, 3, 3)
            b = xp.concatenate([lconv.bias, cconv.bias])                 # (k(4+C),)
            y, cache = conv2d_forward(s, w, b, 1, lconv.padding)         # (N, k(4+C), H, W)
            caches.append(cache if keep_cache else None)
            hh, ww = y.shape[2:]
            stop = start + hh * ww * k
            y = y.transpose(0, 2, 3, 1)                                  # (N, H, W, k(4+C))
            loc[:, start:stop] = y[..., :k * 4].reshape(n, hh * ww * k, 4)
            conf[:, start:stop] = y[..., k * 4:].reshape(n, hh * ww * k, c)
            start = stop
        self._caches = caches if keep_cache else None
        return loc, conf

    def backward(self, dloc, dconf):
        """Gradients of the stacked convs into each conv's grads; returns each source's."""
        if self._caches is None:
            raise RuntimeError("MultiBoxHeads.backward: no forward cache; call forward "
                               "(with keep_cache=True) right before backward")
        xp = get_array_module(dloc)
        n, c = dloc.shape[0], self.num_classes
        dsources, start = [], 0
        for cache, lconv, cconv, k in zip(self._caches, self.loc, self.conf, self.boxes):
            hh, ww = cache.out_hw
            stop = start + hh * ww * k
            # y = y.transpose(0, 2, 3, 1); loc[:, start:stop] = y[..., :4k].reshape(...); conf too
            dy = xp.concatenate([dloc[:, start:stop].reshape(n, hh, ww, k * 4),
                                 dconf[:, start:stop].reshape(n, hh, ww, k * c)],
                                axis=3)                                  # (N, H, W, k(4+C))
            dy = dy.transpose(0, 3, 1, 2)                                # (N, k(4+C), H, W)
            # y, cache = conv2d_forward(s, w, b, 1, lconv.padding)
            ds, dw, db = conv2d_backward(dy, cache)
            # w = concatenate([lconv.weight, cconv.weight]): the gradient splits the same way
            lconv.grads = {"weight": dw[:k * 4], "bias": db[:k * 4]}
            cconv.grads = {"weight": dw[k * 4:], "bias": db[k * 4:]}
            dsources.append(ds)
            start = stop
        return dsources

    def __repr__(self):
        return (f"MultiBoxHeads({len(self.loc)} sources, boxes {self.boxes}, "
                f"{self.num_classes} classes)")
