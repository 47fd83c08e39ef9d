"""A .caffemodel of random weights for a deploy prototxt, written with minissd's caffe.proto.

    write_caffemodel(prototxt, path, seed=0, conf_gain=1.0) -> path

It is how minissd checks itself against OpenCV on the paper's VGG SSD nets without their
trained files: both read the same random weights. The numbers keep activations at a
steady scale through deep stacks (He's normal init: std sqrt(2 / fan_in); biases and
BatchNorm/Scale parameters near their identity values, Normalize's scale 20), and conf_gain
multiplies the conf heads' weights, so that an untrained net already gives some confident
scores for the detection comparison to look at.
"""
from __future__ import annotations

import math

import numpy as np

from . import proto
from .net import net_nodes
from .reader import read_prototxt


def _blob(array):
    """A BlobProto of the array. The data field (5, packed float) is written as its wire bytes,
    tag 0x2A, a varint byte count, then little-endian float32s (what protobuf would write, but
    without a Python float object per number) and parsed back into the message."""
    b = proto.BlobProto()
    b.shape.dim.extend(int(d) for d in array.shape)
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    n, size = len(data), bytearray()
    while True:
        size.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    b.MergeFromString(b"\x2a" + bytes(size) + data)
    return b


def random_blobs(node, c_in, rng, conf_gain=1.0):
    """The blobs Caffe stores for one layer, random, in Caffe's shapes."""
    layer = node.layer
    if node.type == "Convolution":
        p = layer.convolution_param
        k = (list(p.kernel_size) or [p.kernel_h])[0]
        fan_in = c_in * k * k
        w = rng.standard_normal((p.num_output, c_in, k, k), dtype=np.float32)
        w *= math.sqrt(2.0 / fan_in)
        if node.inputs[0] == "data":
            w /= 64                             # the image is 0..255 minus a mean
        if node.name.endswith("_mbox_loc"):
            w *= 0.1                            # offsets of order 0.1..1
        if node.name.endswith("_mbox_conf"):
            w *= conf_gain
        out = [w]
        if p.bias_term:
            out.append(rng.standard_normal(p.num_output) * 0.05)
        return out
    if node.type == "BatchNorm":
        factor = rng.uniform(0.5, 2.0)          # Caffe stores the statistics times a factor
        mean = rng.standard_normal(c_in) * 0.1 * factor
        var = rng.uniform(0.5, 2.0, c_in) * factor
        return [mean, var, np.array([factor])]
    if node.type == "Scale":
        out = [rng.uniform(0.8, 1.2, c_in)]
        if layer.scale_param.bias_term:
            out.append(rng.standard_normal(c_in) * 0.05)
        return out
    if node.type == "Normalize":
        n = 1 if layer.norm_param.channel_shared else c_in
        return [20.0 + rng.standard_normal(n)]
    return []


def write_caffemodel(prototxt, path, seed=0, conf_gain=1.0):
    """Write random weights for every layer of `prototxt` that has some; returns path."""
    rng = np.random.default_rng(seed)
    nodes = net_nodes(read_prototxt(prototxt), str(prototxt))
    shapes = {n.name: n.shape for n in nodes}
    net = proto.NetParameter(name="random weights")
    for node in nodes[1:]:
        blobs = random_blobs(node, shapes[node.inputs[0]][1], rng, conf_gain)
        if blobs:
            layer = net.layer.add(name=node.name, type=node.type)
            layer.blobs.extend(_blob(b) for b in blobs)
    with open(path, "wb") as f:
        f.write(net.SerializeToString())
    return path
