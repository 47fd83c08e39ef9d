"""The part of caffe.proto that SSD deploy nets use, declared here and built at import time.

No protoc step and no generated _pb2 file: the messages below are written as tables, turned
into a google.protobuf FileDescriptorProto (package "caffe") and made into Python classes with
message_factory. Field numbers and types are caffe.proto's (BVLC Caffe, plus weiliu89's SSD
branch for PermuteParameter, PriorBoxParameter, DetectionOutputParameter, NormalizeParameter:
LayerParameter fields 202, 203, 204, 206), so a .caffemodel written by Caffe parses with these
classes and one written here opens in Caffe and OpenCV.

What is left out is left out on purpose: a text-format .prototxt that uses a field missing here
fails to parse, with the field named (minissd.caffe.reader turns that into one line), rather
than being silently ignored. A binary .caffemodel keeps unknown fields aside (protobuf's rule),
which is harmless: only names, types, bottoms, tops and blobs are read from it.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "int32": _F.TYPE_INT32,
            "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "bool": _F.TYPE_BOOL,
            "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES}

# message name -> [(label, type, field name, number, default or None)]; a type that is not a
# scalar is a message or an enum of this file ("Message.Enum" for a nested enum).
_ENUMS = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "FillerParameter.VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)],
    "PoolingParameter.PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "EltwiseParameter.EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)],
    "PriorBoxParameter.CodeType": [("CORNER", 1), ("CENTER_SIZE", 2), ("CORNER_SIZE", 3)],
    "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
}
_MESSAGES = {
    "BlobShape": [("repeated", "int64", "dim", 1, None)],
    "BlobProto": [("optional", "BlobShape", "shape", 7, None),
                  ("repeated", "float", "data", 5, None),
                  ("repeated", "float", "diff", 6, None),
                  ("repeated", "double", "double_data", 8, None),
                  ("repeated", "double", "double_diff", 9, None),
                  ("optional", "int32", "num", 1, None),
                  ("optional", "int32", "channels", 2, None),
                  ("optional", "int32", "height", 3, None),
                  ("optional", "int32", "width", 4, None)],
    "FillerParameter": [("optional", "string", "type", 1, "constant"),
                        ("optional", "float", "value", 2, None),
                        ("optional", "float", "min", 3, None),
                        ("optional", "float", "max", 4, None),
                        ("optional", "float", "mean", 5, None),
                        ("optional", "float", "std", 6, None),
                        ("optional", "int32", "sparse", 7, None),
                        ("optional", "FillerParameter.VarianceNorm", "variance_norm", 8, None)],
    "NetStateRule": [("optional", "Phase", "phase", 1, None),
                     ("optional", "int32", "min_level", 2, None),
                     ("optional", "int32", "max_level", 3, None),
                     ("repeated", "string", "stage", 4, None),
                     ("repeated", "string", "not_stage", 5, None)],
    "ParamSpec": [("optional", "string", "name", 1, None),
                  ("optional", "float", "lr_mult", 3, None),
                  ("optional", "float", "decay_mult", 4, None)],
    "NetParameter": [("optional", "string", "name", 1, None),
                     ("repeated", "string", "input", 3, None),
                     ("repeated", "BlobShape", "input_shape", 8, None),
                     ("repeated", "int32", "input_dim", 4, None),
                     ("repeated", "LayerParameter", "layer", 100, None),
                     ("repeated", "V1LayerParameter", "layers", 2, None)],
    # Caffe's pre-2015 layer list ("layers", type an enum): read only to say it was met.
    "V1LayerParameter": [("repeated", "string", "bottom", 2, None),
                         ("repeated", "string", "top", 3, None),
                         ("optional", "string", "name", 4, None),
                         ("optional", "int32", "type", 5, None),
                         ("repeated", "BlobProto", "blobs", 6, None)],
    "LayerParameter": [
        ("optional", "string", "name", 1, None), ("optional", "string", "type", 2, None),
        ("repeated", "string", "bottom", 3, None), ("repeated", "string", "top", 4, None),
        ("optional", "Phase", "phase", 10, None), ("repeated", "float", "loss_weight", 5, None),
        ("repeated", "ParamSpec", "param", 6, None), ("repeated", "BlobProto", "blobs", 7, None),
        ("repeated", "bool", "propagate_down", 11, None),
        ("repeated", "NetStateRule", "include", 8, None),
        ("repeated", "NetStateRule", "exclude", 9, None),
        ("optional", "BatchNormParameter", "batch_norm_param", 139, None),
        ("optional", "ConcatParameter", "concat_param", 104, None),
        ("optional", "ConvolutionParameter", "convolution_param", 106, None),
        ("optional", "EltwiseParameter", "eltwise_param", 110, None),
        ("optional", "FlattenParameter", "flatten_param", 135, None),
        ("optional", "InputParameter", "input_param", 143, None),
        ("optional", "PoolingParameter", "pooling_param", 121, None),
        ("optional", "ReLUParameter", "relu_param", 123, None),
        ("optional", "ReshapeParameter", "reshape_param", 133, None),
        ("optional", "ScaleParameter", "scale_param", 142, None),
        ("optional", "SoftmaxParameter", "softmax_param", 125, None),
        ("optional", "PermuteParameter", "permute_param", 202, None),
        ("optional", "PriorBoxParameter", "prior_box_param", 203, None),
        ("optional", "DetectionOutputParameter", "detection_output_param", 204, None),
        ("optional", "NormalizeParameter", "norm_param", 206, None),
        ("optional", "TransformationParameter", "transform_param", 100, None)],
    "TransformationParameter": [("optional", "float", "scale", 1, 1.0),
                                ("optional", "bool", "mirror", 2, False),
                                ("optional", "uint32", "crop_size", 3, 0),
                                ("optional", "string", "mean_file", 4, None),
                                ("repeated", "float", "mean_value", 5, None),
                                ("optional", "bool", "force_color", 6, False),
                                ("optional", "bool", "force_gray", 7, False)],
    "BatchNormParameter": [("optional", "bool", "use_global_stats", 1, None),
                           ("optional", "float", "moving_average_fraction", 2, 0.999),
                           ("optional", "float", "eps", 3, 1e-5)],
    "ConcatParameter": [("optional", "int32", "axis", 2, 1),
                        ("optional", "uint32", "concat_dim", 1, 1)],
    "ConvolutionParameter": [
        ("optional", "uint32", "num_output", 1, None), ("optional", "bool", "bias_term", 2, True),
        ("repeated", "uint32", "pad", 3, None), ("repeated", "uint32", "kernel_size", 4, None),
        ("repeated", "uint32", "stride", 6, None), ("repeated", "uint32", "dilation", 18, None),
        ("optional", "uint32", "pad_h", 9, None), ("optional", "uint32", "pad_w", 10, None),
        ("optional", "uint32", "kernel_h", 11, None), ("optional", "uint32", "kernel_w", 12, None),
        ("optional", "uint32", "stride_h", 13, None), ("optional", "uint32", "stride_w", 14, None),
        ("optional", "uint32", "group", 5, 1),
        ("optional", "FillerParameter", "weight_filler", 7, None),
        ("optional", "FillerParameter", "bias_filler", 8, None),
        ("optional", "Engine", "engine", 15, None), ("optional", "int32", "axis", 16, 1)],
    "EltwiseParameter": [("optional", "EltwiseParameter.EltwiseOp", "operation", 1, "SUM"),
                         ("repeated", "float", "coeff", 2, None)],
    "FlattenParameter": [("optional", "int32", "axis", 1, 1),
                         ("optional", "int32", "end_axis", 2, -1)],
    "InputParameter": [("repeated", "BlobShape", "shape", 1, None)],
    "PoolingParameter": [
        ("optional", "PoolingParameter.PoolMethod", "pool", 1, "MAX"),
        ("optional", "uint32", "pad", 4, 0), ("optional", "uint32", "pad_h", 9, 0),
        ("optional", "uint32", "pad_w", 10, 0), ("optional", "uint32", "kernel_size", 2, None),
        ("optional", "uint32", "kernel_h", 5, None), ("optional", "uint32", "kernel_w", 6, None),
        ("optional", "uint32", "stride", 3, 1), ("optional", "uint32", "stride_h", 7, None),
        ("optional", "uint32", "stride_w", 8, None), ("optional", "Engine", "engine", 11, None),
        ("optional", "bool", "global_pooling", 12, False)],
    "ReLUParameter": [("optional", "float", "negative_slope", 1, 0.0),
                      ("optional", "Engine", "engine", 2, None)],
    "ReshapeParameter": [("optional", "BlobShape", "shape", 1, None),
                         ("optional", "int32", "axis", 2, 0),
                         ("optional", "int32", "num_axes", 3, -1)],
    "ScaleParameter": [("optional", "int32", "axis", 1, 1), ("optional", "int32", "num_axes", 2, 1),
                       ("optional", "FillerParameter", "filler", 3, None),
                       ("optional", "bool", "bias_term", 4, False),
                       ("optional", "FillerParameter", "bias_filler", 5, None)],
    "SoftmaxParameter": [("optional", "Engine", "engine", 1, None),
                         ("optional", "int32", "axis", 2, 1)],
    "PermuteParameter": [("repeated", "uint32", "order", 1, None)],
    "NormalizeParameter": [("optional", "bool", "across_spatial", 1, True),
                           ("optional", "FillerParameter", "scale_filler", 2, None),
                           ("optional", "bool", "channel_shared", 3, True),
                           ("optional", "float", "eps", 4, 1e-10)],
    "PriorBoxParameter": [
        ("repeated", "float", "min_size", 1, None), ("repeated", "float", "max_size", 2, None),
        ("repeated", "float", "aspect_ratio", 3, None), ("optional", "bool", "flip", 4, True),
        ("optional", "bool", "clip", 5, False),        # weiliu89's default (OpenCV's is true)
        ("repeated", "float", "variance", 6, None),
        ("optional", "uint32", "img_size", 7, None), ("optional", "uint32", "img_h", 8, None),
        ("optional", "uint32", "img_w", 9, None), ("optional", "float", "step", 10, None),
        ("optional", "float", "step_h", 11, None), ("optional", "float", "step_w", 12, None),
        ("optional", "float", "offset", 13, 0.5)],
    "NonMaximumSuppressionParameter": [("optional", "float", "nms_threshold", 1, 0.3),
                                       ("optional", "int32", "top_k", 2, None),
                                       ("optional", "float", "eta", 3, 1.0)],
    "SaveOutputParameter": [("optional", "string", "output_directory", 1, None),
                            ("optional", "string", "output_name_prefix", 2, None),
                            ("optional", "string", "output_format", 3, None),
                            ("optional", "string", "label_map_file", 4, None),
                            ("optional", "string", "name_size_file", 5, None),
                            ("optional", "uint32", "num_test_image", 6, None)],
    "DetectionOutputParameter": [
        ("optional", "uint32", "num_classes", 1, None),
        ("optional", "bool", "share_location", 2, True),
        ("optional", "int32", "background_label_id", 3, 0),
        ("optional", "NonMaximumSuppressionParameter", "nms_param", 4, None),
        ("optional", "SaveOutputParameter", "save_output_param", 5, None),
        ("optional", "PriorBoxParameter.CodeType", "code_type", 6, "CORNER"),
        ("optional", "bool", "variance_encoded_in_target", 8, False),
        ("optional", "int32", "keep_top_k", 7, -1),
        ("optional", "float", "confidence_threshold", 9, None),
        ("optional", "bool", "visualize", 10, False),
        ("optional", "float", "visualize_threshold", 11, None),
        ("optional", "string", "save_file", 12, None)],
}


def _file_descriptor():
    """The tables above as one FileDescriptorProto (proto2, package caffe)."""
    fd = descriptor_pb2.FileDescriptorProto(name="minissd_caffe_subset.proto", package="caffe",
                                            syntax="proto2")
    nested = {}
    for full, values in _ENUMS.items():
        owner, _, name = full.rpartition(".")
        enum = descriptor_pb2.EnumDescriptorProto(name=name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
        nested.setdefault(owner, []).append(enum)
    fd.enum_type.extend(nested.get("", []))
    for msg_name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=msg_name)
        msg.enum_type.extend(nested.get(msg_name, []))
        for label, type_name, name, number, default in fields:
            f = msg.field.add(name=name, number=number, label=getattr(_F, "LABEL_" + label.upper()))
            if type_name in _SCALARS:
                f.type = _SCALARS[type_name]
                if label == "repeated" and type_name not in ("string", "bytes"):
                    f.options.packed = type_name in ("int64", "float", "double") and \
                        msg_name in ("BlobShape", "BlobProto")     # caffe.proto's [packed = true]
            elif type_name in _ENUMS:
                f.type = _F.TYPE_ENUM
                f.type_name = ".caffe." + type_name
            else:
                f.type = _F.TYPE_MESSAGE
                f.type_name = ".caffe." + type_name
            if default is not None:
                f.default_value = (("true" if default else "false") if isinstance(default, bool)
                                   else str(default))
    return fd


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message(name):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName("caffe." + name))


NetParameter = _message("NetParameter")
LayerParameter = _message("LayerParameter")
BlobProto = _message("BlobProto")
BlobShape = _message("BlobShape")
