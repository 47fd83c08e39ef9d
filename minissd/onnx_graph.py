"""An SSD network as an ONNX graph, written from its layer plan with the `onnx` package.

    onnx_model(config, state_dict, nms=False, opset=OPSET) -> onnx.ModelProto

The graph walks minissd.plan.layer_plan(config): each plan entry becomes the ONNX node (or the
few nodes, named "<entry>/<step>") that computes it, its output tensor carries the entry's
name, and its arrays are initializers named as in SSD.state_dict() ("vgg.0.weight", ...).
Around the network sit the steps minissd does in NumPy:

    images (N, 3, S, S) float32 RGB 0..255, already resized to S x S
      -> preprocess: channel order, * scale, - mean, / std (config.preprocess, as
         data.augment.preprocess computes it)
      -> the plan's layers; per source k: loc.k, conf.k convs, transposed to NHWC and
         flattened as layers.MultiBoxHeads does, then concatenated over sources
    loc (N, P, 4), conf (N, P, C)        the network's raw outputs (SSD.forward)
    boxes (N, P, 4)                      decoded (boxes.decode with config.variances and
                                         wh_clamp; clipped to [0, 1] when config.clip_boxes),
                                         normalised corners (xmin, ymin, xmax, ymax)
    scores (N, P, C)                     softmax over the classes (column 0 = background)

The default boxes (priors.default_boxes) are an initializer, "priors" (P, 4) centre form.
With nms=True one more output, "selected" (M, 3) int64 rows of (image, class - 1, box), comes
from ONNX NonMaxSuppression per image and per class > 0, with the config's NMS IoU and score
threshold, keeping at most top_k boxes per class (more could never be among the top_k of the
image). ONNX's NMS suppresses a box when its IoU with a kept one is strictly greater than the
threshold (as minissd.kernels.nms) and removes scores below the threshold (minissd keeps
scores strictly above it). Two differences remain, both for the caller: ONNX has no cap on
the candidates of a class BEFORE NMS (minissd's per_class_top_k, 400), so a class with more
candidates than that can keep boxes minissd would not see; and it does not cut the image's
detections to top_k, so the caller sorts "selected" by score and keeps the first top_k.

Facts relied on (ONNX operator specs, opset 13): Conv pads are [top, left, bottom, right];
MaxPool's ceil_mode rounds the output size up, and padded cells never win (as minissd's -inf
padding); BatchNormalization in inference computes (x - mean) / sqrt(var + eps) * scale + B;
ReduceL2 with axes=[1], keepdims=1 gives the per-position norm over channels; Reshape's 0
copies that input dimension (the batch stays dynamic); NonMaxSuppression takes boxes as any
diagonal pair of corners, so (x1, y1, x2, y2) works as well as (y1, x1, y2, x2).
"""
from __future__ import annotations

import json

import numpy as np

from .plan import layer_plan
from .priors import default_boxes

OPSET = 13
INPUT = "images"
OUTPUTS = ("loc", "conf", "boxes", "scores")


def _onnx():
    try:
        import onnx
        return onnx
    except ImportError:
        raise ImportError("the onnx package is missing; install it with pip install onnx "
                          "(or pip install -e \".[export]\")") from None


class _Graph:
    """Nodes and initializers being collected, with a helper per ONNX operator used."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.inits = onnx, [], []

    def const(self, name, array):
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        """One node whose single output tensor is called `name`."""
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [name], name=name,
                                                     **attrs))
        return name


def plan_inputs(plan) -> dict:
    """{entry name: (names of the entries it reads, ...)}; "images" is the network input.

    A plan whose entries carry `inputs` (a body given as a flat list) is taken as it is. A
    VGG plan is a chain with one side branch: L2Norm reads the entry before it, the trunk
    goes on from that same entry, and head k reads the entry whose output is source k."""
    if all(getattr(p, "inputs", ()) for p in plan):
        return {p.name: tuple("images" if i == "data" else i for i in p.inputs) for p in plan}
    reads, last, sources = {}, "images", {}
    for p in plan:
        if p.stage in ("loc", "conf"):
            reads[p.name] = (sources[p.source],)
            continue
        reads[p.name] = (last,)
        if p.source is not None:
            sources[p.source] = p.name
        if p.kind != "l2norm":                       # the side branch does not move the trunk
            last = p.name
    return reads


def _layer(g, p, x, state):
    """The node(s) of one plan entry reading tensor(s) x; returns its output tensor name."""
    name, kind = p.name, p.kind
    if kind == "conv":
        ins = [x[0], g.const(f"{name}.weight", state[f"{name}.weight"])]
        if f"{name}.bias" in state:
            ins.append(g.const(f"{name}.bias", state[f"{name}.bias"]))
        pad = p.padding
        out = g.node("Conv", ins, name + ("/conv" if p.relu else ""),
                     kernel_shape=[p.kernel, p.kernel], strides=[p.stride, p.stride],
                     pads=[pad] * 4, dilations=[p.dilation, p.dilation])
        return g.node("Relu", [out], name) if p.relu else out
    if kind == "relu":
        return g.node("Relu", x, name)
    if kind == "maxpool":
        return g.node("MaxPool", x, name, kernel_shape=[p.kernel, p.kernel],
                      strides=[p.stride, p.stride], pads=[p.padding] * 4,
                      ceil_mode=int(p.ceil_mode))
    if kind == "batchnorm":
        c = p.in_shape[0]
        weight = state.get(f"{name}.weight", np.ones(c, np.float32))     # no affine: 1, 0
        bias = state.get(f"{name}.bias", np.zeros(c, np.float32))
        return g.node("BatchNormalization",
                      [x[0], g.const(f"{name}.weight", weight), g.const(f"{name}.bias", bias),
                       g.const(f"{name}.running_mean", state[f"{name}.running_mean"]),
                       g.const(f"{name}.running_var", state[f"{name}.running_var"])],
                      name, epsilon=float(getattr(p, "eps", 1e-5)))
    if kind == "l2norm":
        return _l2norm(g, p, x[0], state)
    if kind == "scale":
        c = p.in_shape[0]
        out = g.node("Mul", [x[0], g.const(f"{name}.weight",
                                           state[f"{name}.weight"].reshape(1, c, 1, 1))],
                     name + ("/mul" if f"{name}.bias" in state else ""))
        if f"{name}.bias" in state:
            out = g.node("Add", [out, g.const(f"{name}.bias",
                                              state[f"{name}.bias"].reshape(1, c, 1, 1))], name)
        return out
    if kind == "eltwise_sum":
        return g.node("Sum", x, name)
    raise ValueError(f"plan entry {name}: kind {kind!r} has no ONNX form in "
                     "minissd/onnx_graph.py; add it to _layer")


def _l2norm(g, p, x, state):
    """minissd's L2Norm: y = w * x / (sqrt(sum_c x^2) + eps) (eps outside the root, as
    ops/l2norm.py); a body's Caffe Normalize (caffe=True on the entry) puts eps inside:
    y = w * x / sqrt(sum_c x^2 + eps). w is (C,) or (1,) (channel_shared)."""
    name, eps = p.name, np.float32(getattr(p, "eps", 1e-10))
    w = np.asarray(state[f"{name}.weight"], np.float32)
    if getattr(p, "caffe", False):
        sq = g.node("ReduceSumSquare", [x], f"{name}/sumsq", axes=[1], keepdims=1)
        norm = g.node("Sqrt", [g.node("Add", [sq, g.const(f"{name}/eps", eps)],
                                      f"{name}/plus_eps")], f"{name}/norm")
    else:
        norm = g.node("Add", [g.node("ReduceL2", [x], f"{name}/l2", axes=[1], keepdims=1),
                              g.const(f"{name}/eps", eps)], f"{name}/norm")
    xhat = g.node("Div", [x, norm], f"{name}/xhat")
    return g.node("Mul", [g.const(f"{name}.weight", w.reshape(1, -1, 1, 1)), xhat], name)


def _preprocess(g, pp):
    """((x[:, order] * scale) - mean) / std, as data.augment.preprocess (float32)."""
    x = INPUT
    if pp["channel_order"] == "BGR":
        x = g.node("Gather", [x, g.const("preprocess/bgr", np.array([2, 1, 0], np.int64))],
                   "preprocess/bgr_image", axis=1)
    elif pp["channel_order"] != "RGB":
        raise ValueError(f"preprocess channel_order {pp['channel_order']!r}; use RGB or BGR")
    x = g.node("Mul", [x, g.const("preprocess/scale", np.float32(pp["scale"]))],
               "preprocess/scaled")
    x = g.node("Sub", [x, g.const("preprocess/mean",
                                  np.asarray(pp["mean"], np.float32).reshape(1, 3, 1, 1))],
               "preprocess/centred")
    return g.node("Div", [x, g.const("preprocess/std",
                                     np.asarray(pp["std"], np.float32).reshape(1, 3, 1, 1))],
                  "preprocess")


def _slice(g, x, start, stop, name):
    """x[..., start:stop] on the last axis."""
    return g.node("Slice", [x, g.const(f"{name}/start", np.array([start], np.int64)),
                            g.const(f"{name}/stop", np.array([stop], np.int64)),
                            g.const(f"{name}/axis", np.array([-1], np.int64))], name)


def _decode(g, config, loc):
    """boxes.decode in ONNX: loc (N, P, 4), priors (P, 4) -> corners (N, P, 4), in its order
    of float32 operations: cxcy = p_xy + loc_xy * v0 * p_wh; wh = p_wh * exp(loc_wh * v1)."""
    priors = default_boxes(config).astype(np.float32)                      # (P, 4)
    g.const("priors", priors)
    p_xy, p_wh = _slice(g, "priors", 0, 2, "priors/xy"), _slice(g, "priors", 2, 4, "priors/wh")
    v0, v1 = (np.float32(v) for v in config.variances)
    t_xy, t_wh = _slice(g, loc, 0, 2, "decode/t_xy"), _slice(g, loc, 2, 4, "decode/t_wh")
    step = g.node("Mul", [g.node("Mul", [t_xy, g.const("decode/v0", v0)], "decode/t_xy_v"),
                          p_wh], "decode/shift")
    cxcy = g.node("Add", [p_xy, step], "decode/cxcy")                     # (N, P, 2)
    log_wh = g.node("Mul", [t_wh, g.const("decode/v1", v1)], "decode/log_wh")
    if config.wh_clamp is not None:
        log_wh = g.node("Min", [log_wh, g.const("decode/wh_clamp",
                                                np.float32(config.wh_clamp))],
                        "decode/log_wh_capped")
    wh = g.node("Mul", [p_wh, g.node("Exp", [log_wh], "decode/exp")], "decode/wh")
    half = g.node("Div", [wh, g.const("decode/two", np.float32(2))], "decode/half_wh")
    corners = g.node("Concat", [g.node("Sub", [cxcy, half], "decode/min"),
                                g.node("Add", [cxcy, half], "decode/max")],
                     "boxes" if not config.clip_boxes else "decode/corners", axis=-1)
    if config.clip_boxes:
        corners = g.node("Clip", [corners, g.const("decode/zero", np.float32(0)),
                                  g.const("decode/one", np.float32(1))], "boxes")
    return corners


def _nms(g, config):
    """selected (M, 3) = NonMaxSuppression over the object classes (column 0 dropped)."""
    c = config.num_classes
    objects = _slice(g, "scores", 1, c, "nms/object_scores")               # (N, P, C-1)
    per_class = g.node("Transpose", [objects], "nms/scores_by_class", perm=[0, 2, 1])
    return g.node("NonMaxSuppression",
                  ["boxes", per_class,
                   g.const("nms/max_per_class", np.array([config.top_k], np.int64)),
                   g.const("nms/iou", np.array([config.nms_threshold], np.float32)),
                   g.const("nms/score", np.array([config.conf_threshold], np.float32))],
                  "selected")


def onnx_model(config, state, nms=False, opset=OPSET, producer="minissd"):
    """The ONNX ModelProto of SSD(config) with the arrays of `state` (SSD.state_dict()).

    Inputs "images" (N, 3, S, S); outputs loc, conf, boxes, scores (and selected with
    nms=True), as the module docstring says. Checked with onnx.checker before it is returned.
    """
    onnx = _onnx()
    helper, TP = onnx.helper, onnx.TensorProto
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    plan = layer_plan(config)
    reads = plan_inputs(plan)
    g = _Graph(onnx)
    out_of = {"images": _preprocess(g, config.preprocess)}
    for p in plan:
        out_of[p.name] = _layer(g, p, [out_of[i] for i in reads[p.name]], state)
    # heads: NHWC, then (N, H*W*k, 4) / (N, H*W*k, C), then all sources in order
    for stage, per_box in (("loc", 4), ("conf", config.num_classes)):
        flat = []
        for p in (q for q in plan if q.stage == stage):
            nhwc = g.node("Transpose", [out_of[p.name]], f"{p.name}/nhwc", perm=[0, 2, 3, 1])
            flat.append(g.node("Reshape", [nhwc, g.const(f"{p.name}/shape", np.array(
                [0, -1, per_box], np.int64))], f"{p.name}/flat"))
        g.node("Concat", flat, stage, axis=1)
    _decode(g, config, "loc")
    g.node("Softmax", ["conf"], "scores", axis=-1)
    if nms:
        _nms(g, config)
    s, p_, c = config.image_size, config.num_priors(), config.num_classes
    outputs = [helper.make_tensor_value_info("loc", TP.FLOAT, ["N", p_, 4]),
               helper.make_tensor_value_info("conf", TP.FLOAT, ["N", p_, c]),
               helper.make_tensor_value_info("boxes", TP.FLOAT, ["N", p_, 4]),
               helper.make_tensor_value_info("scores", TP.FLOAT, ["N", p_, c])]
    if nms:
        outputs.append(helper.make_tensor_value_info("selected", TP.INT64, ["M", 3]))
    graph = helper.make_graph(
        g.nodes, f"minissd_{config.name}",
        [helper.make_tensor_value_info(INPUT, TP.FLOAT, ["N", 3, s, s])], outputs, g.inits)
    model = helper.make_model(graph, producer_name=producer,
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)      # readable by older runtimes (opset 13)
    model.doc_string = (f"minissd {config.name}: input images (N, 3, {s}, {s}) float32 RGB "
                        "0..255 resized to the input size; outputs loc, conf (raw), boxes "
                        "(normalised corners), scores (softmax, column 0 = background)")
    for key, value in (("class_names", json.dumps(list(config.class_names))),
                       ("image_size", str(s))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model
