"""The layer plan of a body config: a flat list of BodyLayer (minissd.config), each naming
its inputs, turned into the fields of PlannedLayer entries (minissd.plan) with their shapes.

    body_entries(config) -> [dict, ...]     one per BodyLayer, in order: the keyword arguments
                                            of its PlannedLayer (stage "body");
                                            minissd.plan.body_plan makes the entries

The shapes are computed layer by layer from the image (3, S, S), each layer from the shapes of
the layers it reads:

    conv          (out_channels, Ho, Wo), Ho = (H + 2p - d (k - 1) - 1) // s + 1
    maxpool       (C, Ho, Wo), Ho = ceil((H + 2p - k) / s) + 1 with ceil_mode (Caffe's
                  rounding; one less when that window would start in the right padding),
                  else floor
    eltwise_sum   the shape of its inputs, which must all be the same
    batchnorm, scale, relu, l2norm    the shape of the input

Facts about Caffe relied on: Caffe's Pooling rounds the output size up and drops a last window
that starts at or beyond H + p only when p > 0; PyTorch's ceil mode (minissd's pool op) drops
it whatever p is. The two differ only when p = 0 and a window would start past the input, which
Caffe then fills with -FLT_MAX: such a pool is refused here. A pad larger than half the kernel
is refused too (the pool op's rule).
"""
from __future__ import annotations

from .ops.conv import conv_output_size
from .ops.pool import pool_output_size


def body_entries(config) -> list:
    """One PlannedLayer's fields (a dict) per config.body entry: shapes, params, buffers,
    inputs.

    Raises ValueError naming the layer and the fix when a shape does not fit (a map shrinking
    below 1x1, inputs of an eltwise_sum that differ, a pool Caffe would size differently).
    """
    shapes = {"data": (3, config.image_size, config.image_size)}
    source_of = {name: k for k, name in enumerate(config.sources)}
    plan = []
    for layer in config.body:
        where = f"config {config.name!r}: body layer {layer.name!r} ({layer.kind})"
        in_shapes = [shapes[n] for n in layer.inputs]
        shape = in_shapes[0]
        entry = _entry(layer, shape, in_shapes, where)
        entry.update(name=layer.name, unit=layer.name, stage="body", kind=layer.kind,
                     label=layer.name, in_shape=shape, out_shape=entry.pop("out"),
                     source=source_of.get(layer.name), inputs=tuple(layer.inputs))
        c, h, w = entry["out_shape"]
        if min(c, h, w) < 1:
            raise ValueError(f"{where}: its output {entry['out_shape']} from input {shape} is "
                             "empty; use a larger image_size or a smaller kernel/stride")
        shapes[layer.name] = entry["out_shape"]
        plan.append(entry)
    return plan


def _entry(layer, shape, in_shapes, where) -> dict:
    """The fields of one body layer's PlannedLayer that depend on its kind."""
    c, h, w = shape
    kind = layer.kind
    if kind == "conv":
        if layer.kernel < 1 or layer.stride < 1 or layer.padding < 0 or layer.dilation < 1:
            raise ValueError(f"{where}: kernel {layer.kernel}, stride {layer.stride}, padding "
                             f"{layer.padding}, dilation {layer.dilation}; use kernel, stride, "
                             "dilation >= 1 and padding >= 0")
        k, s, p, d = layer.kernel, layer.stride, layer.padding, layer.dilation
        out = (layer.out_channels, conv_output_size(h, k, s, p, d),
               conv_output_size(w, k, s, p, d))
        params = (("weight", (layer.out_channels, c, k, k)),)
        if layer.bias:
            params += (("bias", (layer.out_channels,)),)
        return dict(out=out, kernel=k, stride=s, padding=p, dilation=d, params=params)
    if kind == "maxpool":
        k, s, p = layer.kernel, layer.stride, layer.padding
        if k < 1 or s < 1 or p < 0 or 2 * p > k:
            raise ValueError(f"{where}: kernel {k}, stride {s}, padding {p}; use kernel, "
                             "stride >= 1 and 0 <= padding <= kernel / 2")
        sizes = [pool_output_size(n, k, s, p, layer.ceil_mode) for n in (h, w)]
        if layer.ceil_mode and p == 0 and any(-(-(n - k) // s) * s >= n for n in (h, w)):
            raise ValueError(f"{where}: on a {h}x{w} input Caffe would add a last window that "
                             f"starts outside the input (kernel {k} < stride {s}, no padding); "
                             "use kernel >= stride or ceil_mode=False")
        return dict(out=(c, *sizes), kernel=k, stride=s, padding=p, ceil_mode=layer.ceil_mode)
    if kind == "eltwise_sum":
        if any(sh != shape for sh in in_shapes):
            raise ValueError(f"{where}: its inputs {tuple(layer.inputs)} have shapes "
                             f"{in_shapes}; an element-wise sum needs one shape (add a 1x1 "
                             "conv with the right stride and channels on the shortcut)")
        return dict(out=shape)
    if kind == "batchnorm":
        params = (("weight", (c,)), ("bias", (c,))) if layer.affine else ()
        return dict(out=shape, params=params, eps=layer.eps,
                    buffers=(("running_mean", (c,)), ("running_var", (c,))))
    if kind == "scale":
        params = (("weight", (c,)),) + ((("bias", (c,)),) if layer.bias else ())
        return dict(out=shape, params=params)
    if kind == "l2norm":
        return dict(out=shape, init_scale=layer.init_scale, eps=layer.eps,
                    params=(("weight", (1 if layer.channel_shared else c,)),))
    if kind == "relu":
        return dict(out=shape)
    raise ValueError(f"{where}: unknown kind; use one of minissd.config.BODY_KINDS")

