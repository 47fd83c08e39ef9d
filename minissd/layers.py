"""Layer classes: thin wrappers that own parameters and gradients and call minissd.ops.

Every layer has
    forward(x) -> y          keeps what backward needs in self.cache
    backward(dy) -> dx       OVERWRITES self.grads (no accumulation, no zero_grad needed)
    params                   {name: array}, PyTorch's names and shapes (conv weight (F, C, KH, KW))
    grads                    {name: array}, same keys, filled by backward
    buffers                  {name: array} state that is not trained (BatchNorm's running
                             statistics); saved in state_dict with the params
    training                 True while training; BatchNorm uses batch statistics then
    to(device)               moves params, buffers (and grads) to "cpu" or "cuda"; returns self

Parameters are created on the current device (backend.set_device) in the chosen dtype
(float32 by default; float64 for gradient checks). Optimisers may update params in place.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .ops.activation import relu_backward, relu_forward
from .ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from .ops.conv import conv2d_backward, conv2d_forward
from .ops.l2norm import l2norm_backward, l2norm_forward
from .ops.pool import maxpool2d_backward, maxpool2d_forward


class Layer:
    """Base class: no parameters; subclasses fill params in __init__."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.cache = None
        self.training = True

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def to(self, device):
        """Move params, buffers and grads to "cpu" or "cuda" (arrays are replaced, not edited)."""
        self.params = {k: backend.to_device(v, device) for k, v in self.params.items()}
        self.buffers = {k: backend.to_device(v, device) for k, v in self.buffers.items()}
        self.grads = {k: backend.to_device(v, device) for k, v in self.grads.items()}
        self.cache = None
        return self


def _new_param(values, dtype):
    """A NumPy array turned into a parameter of `dtype` on the current device."""
    return backend.to_device(np.ascontiguousarray(values, dtype=dtype))


def _rng(rng):
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    return rng


class Conv2d(Layer):
    """2-D convolution with bias. Weight (out_ch, in_ch, k, k), bias (out_ch,).

    Initialised as SSD does for its new layers: Xavier-uniform weight, i.e. uniform in
    [-a, a] with a = sqrt(6 / (fan_in + fan_out)), fan_in = in_ch*k*k, fan_out = out_ch*k*k;
    zero bias. `rng`: a numpy Generator or a seed. `relu=True` applies a ReLU to the output
    (and its gradient in backward), saving a separate layer.
    """

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, dilation=1, rng=None,
                 dtype=np.float32, relu=False):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.relu = relu
        fan_in, fan_out = in_ch * kernel * kernel, out_ch * kernel * kernel
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = _rng(rng).uniform(-bound, bound, size=(out_ch, in_ch, kernel, kernel))
        self.params = {"weight": _new_param(w, dtype),
                       "bias": _new_param(np.zeros(out_ch), dtype)}

    def forward(self, x):
        """x (N, in_ch, H, W) -> y (N, out_ch, Ho, Wo)."""
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"Conv2d({self.in_ch}->{self.out_ch}): expected x of shape "
                             f"(N, {self.in_ch}, H, W), got {x.shape}; check the previous "
                             "layer's output channels")
        y, conv_cache = conv2d_forward(x, self.params["weight"], self.params["bias"],
                                       self.stride, self.padding, self.dilation)
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
        self.grads = {"weight": dw, "bias": db}
        return dx

    def __repr__(self):
        return (f"Conv2d({self.in_ch}, {self.out_ch}, kernel={self.kernel}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}{', relu' if self.relu else ''})")


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

    params {"weight": (channels,)} filled with `scale` (20 in SSD), as ssd.pytorch's L2Norm.
    """

    def __init__(self, channels, scale=20.0, eps=1e-10, dtype=np.float32):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.params = {"weight": _new_param(np.full(channels, scale), dtype)}

    def forward(self, x):
        y, self.cache = l2norm_forward(x, self.params["weight"], self.eps)
        return y

    def backward(self, dy):
        dx, dscale = l2norm_backward(dy, self.cache)
        self.grads = {"weight": dscale}
        return dx

    def __repr__(self):
        return f"L2Norm({self.channels})"


class BatchNorm2d(Layer):
    """Batch normalisation per channel (ops/batchnorm.py), as torch.nn.BatchNorm2d.

    params {"weight": (C,) ones, "bias": (C,) zeros}; buffers {"running_mean": (C,) zeros,
    "running_var": (C,) ones}. `training` True: batch statistics, running ones updated;
    False: the running statistics (inference).
    """

    def __init__(self, channels, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.channels, self.momentum, self.eps = channels, momentum, eps
        self.params = {"weight": _new_param(np.ones(channels), dtype),
                       "bias": _new_param(np.zeros(channels), dtype)}
        self.buffers = {"running_mean": _new_param(np.zeros(channels), dtype),
                        "running_var": _new_param(np.ones(channels), dtype)}

    def forward(self, x):
        y, self.cache = batchnorm2d_forward(
            x, self.params["weight"], self.params["bias"], self.buffers["running_mean"],
            self.buffers["running_var"], self.training, self.momentum, self.eps)
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = batchnorm2d_backward(dy, self.cache)
        self.grads = {"weight": dgamma, "bias": dbeta}
        return dx

    def __repr__(self):
        return f"BatchNorm2d({self.channels})"


class Sequential(Layer):
    """Layers applied in order. params/grads are named "<index>.<name>" as in PyTorch
    (e.g. "0.weight"); they are views of the layers' own dicts, rebuilt on each access."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)

    @property
    def params(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.params.items()}

    @params.setter
    def params(self, value):
        if value:
            raise AttributeError("Sequential.params is read-only; set a layer's params instead")

    @property
    def grads(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.grads.items()}

    @grads.setter
    def grads(self, value):
        if value:
            raise AttributeError("Sequential.grads is read-only; run backward to fill them")

    @property
    def buffers(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.buffers.items()}

    @buffers.setter
    def buffers(self, value):
        if value:
            raise AttributeError("Sequential.buffers is read-only; set a layer's buffers instead")

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def to(self, device):
        for layer in self.layers:
            layer.to(device)
        return self

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
