"""From a Caffe SSD deploy net (nodes, see net.py) and its blobs to minissd's config fields and
state dict.

    ssd_fields(net, blobs, path) -> (fields for SSDConfig, state {name: float32 array})

What an SSD deploy net looks like (weiliu89's ssd_pascal.py writes it; the res10 face net too):
  body      Convolution, BatchNorm, Scale, ReLU, Pooling, Eltwise, Normalize layers from the
            image to the source feature maps; each becomes one BodyLayer (minissd.config)
  heads     per source k, a loc conv and a conf conv (3x3, pad 1), each followed by Permute
            (0, 2, 3, 1) and Flatten (axis 1): NHWC order, so box p of location (i, j) is
            channel a * 4 + coordinate / a * K + class, exactly minissd's layout
  mbox_loc  Concat (axis 1) of the loc Flattens; mbox_conf the same for conf, then Reshape
            (0, -1, K), Softmax (axis 2), Flatten; mbox_priorbox Concat (axis 2) of PriorBoxes
  DetectionOutput(mbox_loc, mbox_conf_flatten, mbox_priorbox)
The three Concats must list the sources in the same order: that order is minissd's head order.

Caffe facts relied on (weiliu89's layers; OpenCV's DNN module implements the same):
  * BatchNorm keeps mean and variance multiplied by a scale factor, its third blob: the
    statistics are blob / factor (a factor of 0 gives 0); y = (x - mean) / sqrt(var + eps),
    no affine part (the Scale layer after it has that). use_global_stats false at test time
    (batch statistics) is refused.
  * Normalize (across_spatial false): y = x / sqrt(sum_c x^2 + eps) * scale, eps 1e-10.
  * PriorBox: per location, for its min size s (pixels): the square (s, s), the square
    sqrt(s * max), then (s sqrt(a), s / sqrt(a)) for each ratio a of [a1, 1/a1, a2, 1/a2, ...]
    (1/a only with flip); centres ((j + offset) step, (i + offset) step), step = the layer's
    `step` or image / map size; corners divided by the image size; clip clamps the corners
    to [0, 1]. minissd's default boxes are this for offset 0.5, one min and one max size and
    flip true: other settings are refused with the layer named.
  * DetectionOutput: softmax scores, CENTER_SIZE decoding with the prior variances, per
    class (background 0 skipped) the scores > confidence_threshold, at most nms_param.top_k
    of them, NMS at nms_threshold (IoU > threshold suppresses), then keep_top_k over all
    classes by score: minissd.postprocess.detect with per_class_top_k = top_k and top_k =
    keep_top_k. A missing confidence_threshold keeps every score, a missing top_k or a
    keep_top_k of -1 keeps all.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import BodyLayer
from ..torchfile import CheckpointError
from .net import LayerError, fail, net_nodes, prior_ratios

_BODY_KINDS = {"Convolution": "conv", "BatchNorm": "batchnorm", "Scale": "scale",
               "ReLU": "relu", "Pooling": "maxpool", "Eltwise": "eltwise_sum",
               "Normalize": "l2norm"}


def ssd_fields(net, blobs, path, weights_path=None):
    """(fields, state): SSDConfig keyword arguments (without name, class_names, preprocess)
    and the state dict, from a parsed deploy net and read_caffemodel's blobs."""
    weights_path = weights_path or path
    nodes = {n.name: n for n in net_nodes(net, path)}
    det = [n for n in nodes.values() if n.type == "DetectionOutput"]
    if len(det) != 1:
        raise CheckpointError(f"{path}: {len(det)} DetectionOutput layers; an SSD deploy net "
                              "ends in one")
    det = det[0]
    loc_convs = _head_convs(nodes, det.inputs[0], softmax=False, path=path)
    conf_convs = _head_convs(nodes, det.inputs[1], softmax=True, path=path)
    priors = _priorboxes(nodes, det.inputs[2], path)
    sources = [nodes[c].inputs[0] for c in loc_convs]
    for what, convs in (("conf", [nodes[c].inputs[0] for c in conf_convs]),
                        ("PriorBox", [nodes[p].inputs[0] for p in priors])):
        if convs != sources:
            fail(path, det.layer, f"the {what} branches read the sources {convs}, the loc "
                 f"branches {sources}; they must list the same layers in the same order")
    fields = _detection_fields(det.layer, path)
    num_classes = fields.pop("num_classes")
    fields.update(_prior_fields(nodes, priors, sources, path))
    heads = _check_heads(nodes, loc_convs, conf_convs, fields["mbox"], num_classes, path)
    body, state = _body(nodes, sources, blobs, path, weights_path)
    for k, (loc, conf) in enumerate(zip(loc_convs, conf_convs)):
        for ours, name in (("loc", loc), ("conf", conf)):
            w, b = _blobs(blobs, nodes[name], 2, weights_path)
            c = nodes[name].layer.convolution_param.num_output
            state[f"{ours}.{k}.weight"] = _fit(w, (c, nodes[sources[k]].shape[1], heads, heads),
                                               nodes[name], 0, weights_path)
            state[f"{ours}.{k}.bias"] = _fit(b, (c,), nodes[name], 1, weights_path)
    fields.update(body=tuple(body), sources=tuple(sources), head_kernel=heads,
                  image_size=int(nodes["data"].shape[2]))
    return fields, num_classes, state


def _producer(nodes, name, caffe_type, path, reader):
    node = nodes[name]
    if node.type != caffe_type:
        fail(path, reader.layer, f"reads {name!r}, a {node.type} layer, where SSD has a "
             f"{caffe_type}")
    return node


def _head_convs(nodes, top, softmax, path):
    """The head convs behind mbox_loc (softmax False) or mbox_conf_flatten, in Concat order."""
    node = nodes[top]
    if softmax:        # Flatten <- Softmax(axis 2) <- Reshape(0, -1, K) <- Concat
        flat = _producer(nodes, top, "Flatten", path, node)
        soft = _producer(nodes, flat.inputs[0], "Softmax", path, flat)
        if soft.layer.softmax_param.axis != 2:
            fail(path, soft.layer, "SSD's confidence Softmax runs over axis 2 (the classes)")
        reshape = _producer(nodes, soft.inputs[0], "Reshape", path, soft)
        node = _producer(nodes, reshape.inputs[0], "Concat", path, reshape)
    else:
        node = _producer(nodes, top, "Concat", path, node)
    if node.layer.concat_param.axis != 1:
        fail(path, node.layer, "the heads' Concat joins along axis 1")
    convs = []
    for f in node.inputs:
        flat = _producer(nodes, f, "Flatten", path, node)
        perm = _producer(nodes, flat.inputs[0], "Permute", path, flat)
        if tuple(perm.layer.permute_param.order) != (0, 2, 3, 1):
            fail(path, perm.layer, f"order {tuple(perm.layer.permute_param.order)}; SSD's "
                 "heads permute to NHWC, order 0, 2, 3, 1")
        convs.append(_producer(nodes, perm.inputs[0], "Convolution", path, perm).name)
    return convs


def _priorboxes(nodes, top, path):
    concat = _producer(nodes, top, "Concat", path, nodes[top])
    if concat.layer.concat_param.axis != 2:
        fail(path, concat.layer, "the PriorBox Concat joins along axis 2")
    boxes = [_producer(nodes, p, "PriorBox", path, concat).name for p in concat.inputs]
    for p in boxes:
        if nodes[nodes[p].inputs[1]].shape[2:] != nodes["data"].shape[2:]:
            fail(path, nodes[p].layer, "its second bottom must be the image (its size)")
    return boxes


def _detection_fields(layer, path):
    p = layer.detection_output_param
    nms = p.nms_param
    checks = [(p.share_location, "share_location false (one box per class)"),
              (p.background_label_id == 0, f"background_label_id {p.background_label_id}"),
              (p.code_type == 2, "a code_type other than CENTER_SIZE"),
              (not p.variance_encoded_in_target, "variance_encoded_in_target true"),
              (nms.eta == 1.0, f"adaptive NMS (eta {nms.eta})"),
              (p.num_classes >= 2, f"num_classes {p.num_classes}")]
    for ok, what in checks:
        if not ok:
            fail(path, layer, f"{what} is not supported; minissd decodes SSD's CENTER_SIZE "
                 "boxes shared by all classes, background 0, plain NMS")
    return {"num_classes": int(p.num_classes),
            "conf_threshold": _dec(p.confidence_threshold) if p.HasField(
                "confidence_threshold") else -math.inf,
            "nms_threshold": _dec(nms.nms_threshold),
            "per_class_top_k": int(nms.top_k) if nms.HasField("top_k") and nms.top_k >= 0
            else None,
            "top_k": int(p.keep_top_k) if p.keep_top_k >= 0 else None,
            "clip_boxes": False, "wh_clamp": None}


def _prior_fields(nodes, priors, sources, path):
    """feature_maps, steps, min/max sizes, ratios, mbox, clip, variances of the PriorBoxes."""
    image = nodes["data"].shape[2]
    out = {k: [] for k in ("feature_maps", "steps", "min_sizes", "max_sizes", "aspect_ratios",
                           "mbox")}
    clips, variances = set(), set()
    for name, source in zip(priors, sources):
        layer = nodes[name].layer
        p = layer.prior_box_param
        _, _, h, w = nodes[source].shape
        if h != w:
            fail(path, layer, f"a {h}x{w} feature map; minissd's default boxes need square maps")
        if len(p.min_size) != 1 or len(p.max_size) != 1:
            fail(path, layer, f"{len(p.min_size)} min_size and {len(p.max_size)} max_size; "
                 "minissd's default boxes take one of each per feature map")
        if p.max_size[0] <= p.min_size[0] or p.min_size[0] <= 0:
            fail(path, layer, "max_size must be larger than min_size > 0")
        ratios = prior_ratios(p)[1:]
        given = ratios[0::2]
        if not p.flip or any(abs(b - 1.0 / a) > 1e-6 for a, b in zip(given, ratios[1::2])):
            fail(path, layer, "minissd's default boxes pair every ratio a with 1/a (flip true)")
        if abs(p.offset - 0.5) > 1e-6:
            fail(path, layer, f"offset {p.offset}; minissd centres default boxes in their cell "
                 "(offset 0.5)")
        for what, value in (("img_size", _opt(p, "img_size")), ("img_h", _opt(p, "img_h")),
                            ("img_w", _opt(p, "img_w"))):
            if value is not None and value != image:
                fail(path, layer, f"{what} {value} differs from the {image}-pixel input")
        if p.HasField("step_h") or p.HasField("step_w"):
            if p.step_h != p.step_w:
                fail(path, layer, "step_h != step_w; minissd takes one step for both axes")
            step = _dec(p.step_h)
        else:
            step = _dec(p.step) if p.HasField("step") else image / h
        var = tuple(_dec(v) for v in p.variance) or (0.1,)
        if len(var) == 1:
            var = var * 4
        if len(var) != 4 or var[0] != var[1] or var[2] != var[3]:
            fail(path, layer, f"variance {var}; minissd takes (v_xy, v_xy, v_wh, v_wh)")
        clips.add(bool(p.clip))
        variances.add((var[0], var[2]))
        out["feature_maps"].append(int(h))
        out["steps"].append(step)
        out["min_sizes"].append(_dec(p.min_size[0]))
        out["max_sizes"].append(_dec(p.max_size[0]))
        out["aspect_ratios"].append(tuple(_dec(a) for a in given))
        out["mbox"].append(2 + 2 * len(given))
    if len(clips) != 1 or len(variances) != 1:
        fail(path, nodes[priors[0]].layer, "the PriorBox layers disagree on clip or variance; "
             "minissd has one of each per network")
    fields = {k: tuple(v) for k, v in out.items()}
    clip = clips.pop()
    fields.update(clip=clip, prior_clip="caffe" if clip else "ssd.pytorch",
                  variances=variances.pop())
    return fields


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


def _dec(x):
    """A float32 field as the decimal written in the prototxt (0.1, not 0.10000000149)."""
    return float(str(np.float32(x)))


def _check_heads(nodes, loc_convs, conf_convs, mbox, num_classes, path):
    """The heads' common kernel; each is k x k, pad k // 2, stride 1, with a bias, and its
    width is boxes per location x 4 (loc) or x num_classes (conf)."""
    kernels = set()
    for k, (loc, conf) in enumerate(zip(loc_convs, conf_convs)):
        for name, per_box in ((loc, 4), (conf, num_classes)):
            node = nodes[name]
            p = node.layer.convolution_param
            kernel = list(p.kernel_size) or [p.kernel_h]
            stride, pad = (list(p.stride) or [1])[0], (list(p.pad) or [p.pad_h])[0]
            dil = (list(p.dilation) or [1])[0]
            if stride != 1 or pad != kernel[0] // 2 or dil != 1 or not p.bias_term \
                    or kernel[0] % 2 == 0:
                fail(path, node.layer, "an SSD head is an odd k x k conv with pad k // 2, "
                     "stride 1, dilation 1 and a bias")
            if p.num_output != mbox[k] * per_box:
                fail(path, node.layer, f"{p.num_output} outputs; its PriorBox gives {mbox[k]} "
                     f"boxes per location, so {mbox[k] * per_box} ({mbox[k]} x {per_box})")
            kernels.add(kernel[0])
    if len(kernels) != 1:
        raise CheckpointError(f"{path}: head kernels {sorted(kernels)}; minissd's heads share "
                              "one kernel size")
    return kernels.pop()


def _body(nodes, sources, blobs, path, weights_path):
    """BodyLayers for every node the sources depend on (file order) and their arrays."""
    needed, stack = set(), list(sources)
    while stack:
        name = stack.pop()
        if name in needed or name == "data":
            continue
        needed.add(name)
        stack.extend(nodes[name].inputs)
    body, state = [], {}
    for node in nodes.values():
        if node.name not in needed:
            continue
        kind = _BODY_KINDS.get(node.type)
        if kind is None:
            fail(path, node.layer, f"a {node.type} layer inside the network body; the body is "
                 f"made of {', '.join(_BODY_KINDS)}")
        layer, c_in = node.layer, nodes[node.inputs[0]].shape[1]
        kw = {}
        if kind == "conv":
            p = layer.convolution_param
            k = (list(p.kernel_size) or [p.kernel_h])[0]
            kw = dict(out_channels=int(p.num_output), kernel=int(k),
                      stride=int((list(p.stride) or [p.stride_h or 1])[0]),
                      padding=int((list(p.pad) or [p.pad_h])[0]),
                      dilation=int((list(p.dilation) or [1])[0]), bias=bool(p.bias_term))
            arrays = _blobs(blobs, node, 2 if p.bias_term else 1, weights_path)
            state[f"{node.name}.weight"] = _fit(arrays[0], (kw["out_channels"], c_in, k, k),
                                                node, 0, weights_path)
            if p.bias_term:
                state[f"{node.name}.bias"] = _fit(arrays[1], (kw["out_channels"],), node, 1,
                                                  weights_path)
        elif kind == "batchnorm":
            p = layer.batch_norm_param
            if p.HasField("use_global_stats") and not p.use_global_stats:
                fail(path, layer, "use_global_stats false: batch statistics at test time; "
                     "a deploy net uses the stored ones")
            mean, var, factor = _blobs(blobs, node, 3, weights_path)
            f = float(_fit(factor, (1,), node, 2, weights_path)[0])
            f = 0.0 if f == 0 else 1.0 / f
            state[f"{node.name}.running_mean"] = _fit(mean, (c_in,), node, 0, weights_path) * \
                np.float32(f)
            state[f"{node.name}.running_var"] = _fit(var, (c_in,), node, 1, weights_path) * \
                np.float32(f)
            kw = dict(affine=False, eps=_dec(p.eps))
        elif kind == "scale":
            p = layer.scale_param
            if p.axis != 1 or p.num_axes != 1:
                fail(path, layer, "only a per-channel Scale (axis 1, num_axes 1) is supported")
            arrays = _blobs(blobs, node, 2 if p.bias_term else 1, weights_path)
            state[f"{node.name}.weight"] = _fit(arrays[0], (c_in,), node, 0, weights_path)
            if p.bias_term:
                state[f"{node.name}.bias"] = _fit(arrays[1], (c_in,), node, 1, weights_path)
            kw = dict(bias=bool(p.bias_term))
        elif kind == "relu":
            if layer.relu_param.negative_slope != 0:
                fail(path, layer, "a leaky ReLU (negative_slope != 0) is not supported")
        elif kind == "maxpool":
            p = layer.pooling_param
            kw = dict(kernel=int(p.kernel_size or p.kernel_h), stride=int(p.stride_h or p.stride),
                      padding=int(p.pad_h or p.pad), ceil_mode=True)
        elif kind == "eltwise_sum":
            p = layer.eltwise_param
            if p.operation != 1 or any(c != 1 for c in p.coeff):
                fail(path, layer, "only a plain Eltwise SUM (no coefficients) is supported")
        elif kind == "l2norm":
            p = layer.norm_param
            if p.across_spatial:
                fail(path, layer, "across_spatial true; SSD normalizes each position "
                     "(across_spatial false)")
            shape = (1,) if p.channel_shared else (c_in,)
            (scale,) = _blobs(blobs, node, 1, weights_path)
            state[f"{node.name}.weight"] = _fit(scale, shape, node, 0, weights_path)
            init = p.scale_filler.value if p.HasField("scale_filler") else 1.0
            kw = dict(eps=_dec(p.eps), channel_shared=bool(p.channel_shared),
                      init_scale=_dec(init))
        body.append(BodyLayer(name=node.name, kind=kind, inputs=tuple(node.inputs), **kw))
    return body, state


def _blobs(blobs, node, count, weights_path):
    got = blobs.get(node.name)
    if got is None or len(got) != count:
        raise LayerError(f"{weights_path}: layer {node.name!r} ({node.type}): "
                         f"{'no blobs' if got is None else f'{len(got)} blobs'} in the "
                         f".caffemodel, the prototxt needs {count}; the two files are not "
                         "one model")
    return got


def _fit(array, shape, node, index, weights_path):
    """The blob in the shape the prototxt gives it (Caffe's old 4-D blobs carry extra 1s)."""
    shape = tuple(int(s) for s in shape)
    if array.shape != shape:
        if array.size != math.prod(shape) or \
                [d for d in array.shape if d != 1] != [d for d in shape if d != 1]:
            raise LayerError(f"{weights_path}: layer {node.name!r} ({node.type}): blob {index} "
                             f"has shape {array.shape}, the prototxt needs {shape}; the two "
                             "files are not one model")
        array = array.reshape(shape)
    return np.ascontiguousarray(array, dtype=np.float32)
