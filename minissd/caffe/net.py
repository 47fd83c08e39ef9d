"""A Caffe deploy net as a flat list of nodes, each naming its inputs, with every blob's shape.

    net_nodes(net, path) -> [Node]   in the prototxt's order; Node(name, type, layer, inputs, shape)

Caffe writes a layer's output into a named blob (`top`), and a layer may write into the blob it
reads (an "in-place" layer: top == bottom, as every BatchNorm, Scale and ReLU of the res10 face
net does). Here every layer becomes its own node named after the layer, and a bottom names the
node that last wrote that blob before the layer (Caffe runs the layers in file order), so an
in-place chain conv -> BatchNorm -> Scale -> ReLU becomes four nodes, each reading the one
before. The image is the node "data". Split layers (train nets) only pass their input on.

Shapes follow Caffe's rules, written here because the feature-map sizes (and so the default
boxes) depend on them:
  Convolution  out = floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1
  Pooling      out = ceil((in + 2 pad - k) / stride) + 1, minus 1 when pad > 0 and the last
               window would start in the padding ((out - 1) stride >= in + pad); Caffe always
               rounds up (SSD300's pool3: 75 -> 38)
  PriorBox     (1, 2, H W B 4): the boxes' corners, then their variances
Only what SSD deploy nets use is accepted (SUPPORTED); anything else ends with one line naming
the layer.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..torchfile import CheckpointError

SUPPORTED = ("Input", "Convolution", "ReLU", "Pooling", "BatchNorm", "Scale", "Eltwise",
             "Normalize", "PriorBox", "Permute", "Flatten", "Reshape", "Softmax", "Concat",
             "DetectionOutput", "Split")


class Node(NamedTuple):
    name: str          # the layer's name ("data" for the image)
    type: str          # Caffe's layer type
    layer: object      # its LayerParameter (None for "data")
    inputs: tuple      # names of the nodes it reads, in bottom order
    shape: tuple       # its output shape (N, C, H, W) or what the layer makes


class LayerError(CheckpointError):
    """One line naming the prototxt, the layer and what is wrong with it."""


def fail(path, layer, problem):
    raise LayerError(f"{path}: layer {layer.name!r} ({layer.type}): {problem}")


def _square(layer, path, what, values, h, w, default):
    """One number for both axes from Caffe's `what: v` / `what_h, what_w` pair."""
    values = list(values)
    if h is not None or w is not None:
        if h != w:
            fail(path, layer, f"{what}_h {h} != {what}_w {w}; minissd takes square "
                 f"{what}s only")
        return int(h)
    if not values:
        return default
    if len(values) > 2 or len(set(values)) != 1:
        fail(path, layer, f"{what} {values}; minissd takes one {what} for both axes")
    return int(values[0])


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


def _in_test_phase(layer):
    """Caffe's include/exclude rules for phase TEST (a deploy net runs in TEST)."""
    if layer.include:
        return any(not r.HasField("phase") or r.phase == 1 for r in layer.include)
    return not any(r.HasField("phase") and r.phase == 1 for r in layer.exclude)


def prior_ratios(p):
    """Caffe PriorBox's aspect ratios in its box order: 1 first, then each given ratio a not
    already listed (within 1e-6), followed by 1/a when flip is set."""
    ratios = [1.0]
    for a in p.aspect_ratio:
        if all(abs(a - r) >= 1e-6 for r in ratios):
            ratios.append(float(a))
            if p.flip:
                ratios.append(1.0 / float(a))
    return ratios


def input_shape(net, path):
    """The image blob's name and shape: an Input layer or the net's input/input_shape."""
    inputs = [l for l in net.layer if l.type == "Input"]
    if len(inputs) + len(net.input) != 1:
        raise CheckpointError(f"{path}: {len(inputs) + len(net.input)} network inputs; an SSD "
                              "deploy net has one, the image (an Input layer or input: \"data\")")
    if inputs:
        layer = inputs[0]
        if len(layer.top) != 1 or len(layer.input_param.shape) != 1:
            fail(path, layer, "an SSD deploy net's Input layer has one top and one shape")
        return layer.top[0], tuple(layer.input_param.shape[0].dim)
    if net.input_shape:
        return net.input[0], tuple(net.input_shape[0].dim)
    return net.input[0], tuple(net.input_dim)


def net_nodes(net, path):
    """The deploy net as nodes (see the module docstring); LayerError on what minissd cannot
    run or what does not fit together."""
    data_blob, shape = input_shape(net, path)
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] < 1:
        raise CheckpointError(f"{path}: input shape {shape}; minissd reads SSD nets with a "
                              "(N, 3, S, S) image input")
    shape = (1,) + shape[1:]
    nodes = {"data": Node("data", "Input", None, (), shape)}
    blob = {data_blob: "data"}          # Caffe blob name -> node that last wrote it
    order = []
    for layer in net.layer:
        if layer.type == "Input" or not _in_test_phase(layer):
            continue
        if layer.type not in SUPPORTED:
            fail(path, layer, f"layer type {layer.type!r} is not one minissd runs; it reads "
                 f"SSD deploy nets made of {', '.join(SUPPORTED)}")
        missing = [b for b in layer.bottom if b not in blob]
        if missing:
            fail(path, layer, f"reads blob {missing[0]!r}, which no earlier layer writes")
        inputs = tuple(blob[b] for b in layer.bottom)
        if layer.type == "Split":
            for t in layer.top:
                blob[t] = inputs[0]
            continue
        name = layer.name
        if not name or name in nodes:
            fail(path, layer, "every layer needs a name of its own")
        if len(layer.top) != 1:
            fail(path, layer, f"{len(layer.top)} tops; minissd reads layers with one output")
        out = _shape(layer, [nodes[i].shape for i in inputs], path)
        nodes[name] = Node(name, layer.type, layer, inputs, out)
        blob[layer.top[0]] = name
        order.append(name)
    return [nodes["data"]] + [nodes[n] for n in order]


def _shape(layer, ins, path):
    t = layer.type
    need = {"Eltwise": None, "Concat": None, "PriorBox": 2, "DetectionOutput": 3}.get(t, 1)
    least = 2 if t == "Eltwise" else 1
    if (need is not None and len(ins) != need) or len(ins) < least:
        fail(path, layer, f"{len(ins)} bottoms; a {t} layer here takes "
             f"{need if need else f'{least} or more'}")
    x = ins[0]
    if t in ("Convolution", "Pooling") and len(x) != 4:
        fail(path, layer, f"input of shape {x}, not (N, C, H, W)")
    if t == "Convolution":
        p = layer.convolution_param
        k = _square(layer, path, "kernel", p.kernel_size, _opt(p, "kernel_h"),
                    _opt(p, "kernel_w"), 0)
        s = _square(layer, path, "stride", p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1)
        pad = _square(layer, path, "pad", p.pad, _opt(p, "pad_h"), _opt(p, "pad_w"), 0)
        d = _square(layer, path, "dilation", p.dilation, None, None, 1)
        if k < 1 or s < 1 or d < 1 or p.num_output < 1:
            fail(path, layer, "kernel, stride, dilation and num_output must be positive")
        if p.group != 1 or p.axis != 1:
            fail(path, layer, f"group {p.group}, axis {p.axis}; minissd runs group 1 axis 1 "
                 "convolutions")
        side = (x[2] + 2 * pad - d * (k - 1) - 1) // s + 1
        if side < 1:
            fail(path, layer, f"a {k}x{k} kernel does not fit its {x[2]}x{x[3]} input")
        return (x[0], int(p.num_output), side, side)
    if t == "Pooling":
        p = layer.pooling_param
        if p.pool != 0 or p.global_pooling:
            fail(path, layer, "only MAX pooling with a kernel (not global) is supported")
        k = _square(layer, path, "kernel", [p.kernel_size] if p.HasField("kernel_size") else [],
                    _opt(p, "kernel_h"), _opt(p, "kernel_w"), 0)
        s = _square(layer, path, "stride", [p.stride], _opt(p, "stride_h"), _opt(p, "stride_w"), 1)
        pad = _square(layer, path, "pad", [p.pad], _opt(p, "pad_h") or None,
                      _opt(p, "pad_w") or None, 0)
        if k < 1 or s < 1 or pad >= k:
            fail(path, layer, f"kernel {k}, stride {s}, pad {pad}: not a pooling window")
        side = int(math.ceil((x[2] + 2 * pad - k) / s)) + 1
        if pad > 0 and (side - 1) * s >= x[2] + pad:
            side -= 1
        return (x[0], x[1], side, side)
    if t == "Eltwise":
        if any(i != x for i in ins):
            fail(path, layer, f"inputs of shapes {ins}; Eltwise adds equal shapes")
        return x
    if t == "Permute":
        order = tuple(layer.permute_param.order)
        if sorted(order) != list(range(len(x))):
            fail(path, layer, f"order {order} is not a permutation of the {len(x)} axes")
        return tuple(x[i] for i in order)
    if t == "Flatten":
        p = layer.flatten_param
        if p.axis != 1 or p.end_axis != -1:
            fail(path, layer, f"axis {p.axis}, end_axis {p.end_axis}; SSD flattens from axis 1")
        return (x[0], math.prod(x[1:]))
    if t == "Concat":
        axis = layer.concat_param.axis
        if axis < 0 or any(len(i) != len(x) or i[:axis] + i[axis + 1:] != x[:axis] + x[axis + 1:]
                           for i in ins):
            fail(path, layer, f"inputs of shapes {ins} do not join along axis {axis}")
        return x[:axis] + (sum(i[axis] for i in ins),) + x[axis + 1:]
    if t == "Reshape":
        p = layer.reshape_param
        if p.axis != 0 or p.num_axes != -1:
            fail(path, layer, "only a whole-shape Reshape (axis 0, num_axes -1) is supported")
        dims = [x[i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
        if dims.count(-1) > 1 or any(d < -1 for d in dims):
            fail(path, layer, f"shape {list(p.shape.dim)} is not a Caffe reshape")
        known = math.prod(d for d in dims if d != -1)
        total = math.prod(x)
        if -1 in dims:
            if known == 0 or total % known:
                fail(path, layer, f"cannot reshape {x} to {list(p.shape.dim)}")
            dims[dims.index(-1)] = total // known
        if math.prod(dims) != total:
            fail(path, layer, f"cannot reshape {x} to {list(p.shape.dim)}")
        return tuple(dims)
    if t == "PriorBox":
        p = layer.prior_box_param
        per_location = len(prior_ratios(p)) * len(p.min_size) + len(p.max_size)
        return (1, 2, x[2] * x[3] * per_location * 4)
    if t == "DetectionOutput":
        return (1, 1, None, 7)
    return x                            # ReLU, BatchNorm, Scale, Normalize, Softmax
