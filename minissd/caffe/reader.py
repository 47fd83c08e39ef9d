"""Read a Caffe deploy .prototxt (protobuf text) and a .caffemodel (protobuf binary), no Caffe.

    read_prototxt(path) -> caffe.NetParameter        the network: layers, their settings
    read_caffemodel(path) -> {layer name: [float32 array, ...]}   the learned blobs

These files come from strangers, so the reader keeps three habits: sizes are bounded before
anything is parsed (MAX_PROTOTXT_BYTES, MAX_CAFFEMODEL_BYTES, MAX_LAYERS, MAX_BLOB_VALUES), the
parsing itself is protobuf's (google.protobuf, which checks every length and nesting depth it
reads), and anything wrong ends as one CheckpointError naming the file. A blob's shape comes
from its `shape` field (or the old num/channels/height/width) and must hold exactly as many
numbers as it says.

The .caffemodel is a whole NetParameter as Caffe saved it, often the TRAIN net (data layers,
Split layers, losses): only its layers' names and blobs are read; the .prototxt says what the
layers are. Caffe's pre-2015 format (V1, a `layers` list with enum types) is not read: such a
file is named with the fix (Caffe's upgrade_net_proto_binary / upgrade_net_proto_text tools).
"""
from __future__ import annotations

import os

import numpy as np
from google.protobuf import message, text_format

from ..torchfile import CheckpointError
from . import proto

MAX_PROTOTXT_BYTES = 16 << 20           # the res10 and VGG SSD deploy nets are 30-60 KB
MAX_CAFFEMODEL_BYTES = 1 << 30          # VGG SSD512 COCO is about 110 MB
MAX_LAYERS = 5000
MAX_BLOB_VALUES = 1 << 28               # numbers in one blob (1 GB of float32)

_V1_FIX = ("it uses Caffe's old V1 layer format ('layers' with enum types); convert it with "
           "Caffe's upgrade_net_proto_text / upgrade_net_proto_binary first")


def _read_bounded(path, limit, what):
    try:
        size = os.path.getsize(path)
    except OSError:
        raise CheckpointError(f"{path}: {what} not found; check the path") from None
    if size > limit:
        raise CheckpointError(f"{path}: {size} bytes, more than the {limit} a {what} may have "
                              "here; is it the right file?")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def read_prototxt(path) -> "proto.NetParameter":
    """The NetParameter of a deploy .prototxt (protobuf text format, caffe.proto's fields)."""
    data = _read_bounded(path, MAX_PROTOTXT_BYTES, "deploy .prototxt")
    try:
        text = data.decode("utf-8")
        net = text_format.Parse(text, proto.NetParameter())
    except (UnicodeDecodeError, text_format.ParseError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a Caffe deploy .prototxt that minissd reads "
                              f"({detail}); pass the deploy net (protobuf text, layer {{ ... }} "
                              "entries) that goes with the .caffemodel") from None
    _check_layer_list(net, path)
    return net


def _check_layer_list(net, path):
    """CheckpointError unless `net` lists its layers the way minissd reads them: in the
    current `layer` field (not V1's `layers`), at most MAX_LAYERS of them."""
    if len(net.layers):
        raise CheckpointError(f"{path}: {_V1_FIX}")
    if len(net.layer) > MAX_LAYERS:
        raise CheckpointError(f"{path}: {len(net.layer)} layers, more than {MAX_LAYERS}")


def read_caffemodel(path) -> dict:
    """{layer name: [blob as a float32 NumPy array in its own shape, ...]} of a .caffemodel;
    layers without blobs are left out."""
    data = _read_bounded(path, MAX_CAFFEMODEL_BYTES, ".caffemodel")
    net = proto.NetParameter()
    try:
        net.ParseFromString(data)
    except (message.DecodeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable .caffemodel (protobuf: "
                              f"{str(e) or type(e).__name__}); pass the binary weights file "
                              "Caffe saved (*.caffemodel)") from None
    _check_layer_list(net, path)
    if not net.layer:
        raise CheckpointError(f"{path}: no layers in the file; not a .caffemodel")
    blobs = {}
    for layer in net.layer:
        if not layer.blobs:
            continue
        if layer.name in blobs:
            raise CheckpointError(f"{path}: two layers named {layer.name!r} hold blobs; "
                                  "the file is not one Caffe net")
        blobs[layer.name] = [_blob_array(b, f"{path}: layer {layer.name!r} blob {i}")
                             for i, b in enumerate(layer.blobs)]
    return blobs


def _blob_array(blob, where):
    """One BlobProto as a float32 array of its declared shape (float or double data)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:                                             # Caffe's old 4-D fields; drop leading 1s
        shape = (blob.num, blob.channels, blob.height, blob.width)
        while len(shape) > 1 and shape[0] == 1:
            shape = shape[1:]
    if any(d < 0 for d in shape) or len(shape) > 8:
        raise CheckpointError(f"{where}: shape {shape} is not a blob shape")
    count = 1
    for d in shape:
        count *= d
        if count > MAX_BLOB_VALUES:
            raise CheckpointError(f"{where}: shape {shape} holds more than {MAX_BLOB_VALUES} "
                                  "numbers")
    values = blob.data if len(blob.data) else blob.double_data
    if len(values) != count:
        raise CheckpointError(f"{where}: shape {shape} needs {count} numbers, the file holds "
                              f"{len(values)}; the file is damaged")
    return np.asarray(values, dtype=np.float32).reshape(shape)
