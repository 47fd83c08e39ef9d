"""The paper's VGG16 SSD300 and SSD512 deploy nets, written as Caffe prototxt text.

    vgg_ssd_prototxt(size, num_classes, min_sizes, max_sizes) -> str
    SHIPPED: {file name in minissd/caffe_nets/: (size, num_classes, config maker)}

The layers are those of weiliu89's ssd_pascal.py / ssd_coco.py deploy nets (the published
architecture, minissd/config.py's ssd300/ssd512 and ../shared/DESIGN.md): VGG16 conv1_1 ..
conv5_3 with in-place ReLUs and 2x2 max pools (Caffe rounds pool3 up: 75 -> 38), pool5 3x3
stride 1 pad 1, fc6 as a 3x3 conv with dilation 6, fc7 1x1, conv4_3 through Normalize (scale
20, per channel), extra layers conv6_1 .. (1x1 then 3x3; SSD512's last one a 4x4 with pad 1),
and per source a loc and a conf 3x3 head with Permute/Flatten, a PriorBox (clip false,
variance 0.1 0.1 0.2 0.2), the three Concats and DetectionOutput (NMS 0.45, top_k 400,
keep_top_k 200, confidence 0.01). Layer names are Caffe SSD's (conv6_1 there is DESIGN.md's
conv8_1), so the released .caffemodel files load by name.
"""
from __future__ import annotations

from ..config import ssd300, ssd300_coco, ssd512, ssd512_coco

# (name, out channels, kernel, stride, pad) of the extra layers after fc7
_EXTRAS = {
    300: [("conv6_1", 256, 1, 1, 0), ("conv6_2", 512, 3, 2, 1), ("conv7_1", 128, 1, 1, 0),
          ("conv7_2", 256, 3, 2, 1), ("conv8_1", 128, 1, 1, 0), ("conv8_2", 256, 3, 1, 0),
          ("conv9_1", 128, 1, 1, 0), ("conv9_2", 256, 3, 1, 0)],
    512: [("conv6_1", 256, 1, 1, 0), ("conv6_2", 512, 3, 2, 1), ("conv7_1", 128, 1, 1, 0),
          ("conv7_2", 256, 3, 2, 1), ("conv8_1", 128, 1, 1, 0), ("conv8_2", 256, 3, 2, 1),
          ("conv9_1", 128, 1, 1, 0), ("conv9_2", 256, 3, 2, 1), ("conv10_1", 128, 1, 1, 0),
          ("conv10_2", 256, 4, 1, 1)],
}
SHIPPED = {
    "VGG_VOC0712_SSD_300x300_deploy.prototxt": (300, 21, ssd300),
    "VGG_VOC0712_SSD_512x512_deploy.prototxt": (512, 21, ssd512),
    "VGG_coco_SSD_300x300_deploy.prototxt": (300, 81, ssd300_coco),
    "VGG_coco_SSD_512x512_deploy.prototxt": (512, 81, ssd512_coco),
}


def _conv(name, bottom, out, kernel, stride=1, pad=0, dilation=1, relu=True):
    lines = [f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"',
             f"  convolution_param {{ num_output: {out} pad: {pad} kernel_size: {kernel} "
             f"stride: {stride}" + (f" dilation: {dilation}" if dilation != 1 else "") + " }",
             "}"]
    if relu:
        relu_name = "relu" + name[4:] if name.startswith("conv") else "relu" + name[2:]
        lines.append(f'layer {{ name: "{relu_name}" type: "ReLU" bottom: "{name}" '
                     f'top: "{name}" }}')
    return lines


def _pool(name, bottom, kernel, stride, pad=0):
    return [f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"',
            f"  pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad} }}",
            "}"]


def _fmt(x):
    return f"{x:g}"


def vgg_ssd_prototxt(size, num_classes, config):
    """The deploy prototxt text of VGG16 SSD<size> with num_classes (background included);
    config is the matching minissd config (its box sizes, steps and ratios)."""
    out = [f'name: "VGG_SSD_{size}x{size}_deploy"',
           f'layer {{ name: "input" type: "Input" top: "data"',
           f"  input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }}", "}"]
    bottom = "data"
    blocks = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]
    for b, width, n in blocks:
        for i in range(1, n + 1):
            out += _conv(f"conv{b}_{i}", bottom, width, 3, pad=1)
            bottom = f"conv{b}_{i}"
        if b < 5:
            out += _pool(f"pool{b}", bottom, 2, 2)
            bottom = f"pool{b}"
    out += _pool("pool5", bottom, 3, 1, 1)
    out += _conv("fc6", "pool5", 1024, 3, pad=6, dilation=6)
    out += _conv("fc7", "fc6", 1024, 1)
    bottom = "fc7"
    for name, width, k, s, p in _EXTRAS[size]:
        out += _conv(name, bottom, width, k, stride=s, pad=p)
        bottom = name
    out += ['layer { name: "conv4_3_norm" type: "Normalize" bottom: "conv4_3" '
            'top: "conv4_3_norm"',
            '  norm_param { across_spatial: false scale_filler { type: "constant" value: 20 } '
            "channel_shared: false }", "}"]
    sources = ["conv4_3_norm", "fc7"] + [n for n, *_ in _EXTRAS[size][1::2]]
    parts = {"loc": [], "conf": [], "priorbox": []}
    for k, src in enumerate(sources):
        boxes = config.mbox[k]
        for head, width in (("loc", boxes * 4), ("conf", boxes * num_classes)):
            name = f"{src}_mbox_{head}"
            out += _conv(name, src, width, 3, pad=1, relu=False)
            out += [f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" '
                    f'top: "{name}_perm"', "  permute_param { order: 0 order: 2 order: 3 "
                    "order: 1 }", "}",
                    f'layer {{ name: "{name}_flat" type: "Flatten" bottom: "{name}_perm" '
                    f'top: "{name}_flat" flatten_param {{ axis: 1 }} }}']
            parts[head].append(f"{name}_flat")
        ratios = "".join(f" aspect_ratio: {_fmt(a)}" for a in config.aspect_ratios[k])
        out += [f'layer {{ name: "{src}_mbox_priorbox" type: "PriorBox" bottom: "{src}" '
                f'bottom: "data" top: "{src}_mbox_priorbox"',
                f"  prior_box_param {{ min_size: {_fmt(config.min_sizes[k])} max_size: "
                f"{_fmt(config.max_sizes[k])}{ratios} flip: true clip: false variance: 0.1 "
                f"variance: 0.1 variance: 0.2 variance: 0.2 step: {_fmt(config.steps[k])} "
                "offset: 0.5 }", "}"]
        parts["priorbox"].append(f"{src}_mbox_priorbox")
    for head, axis in (("loc", 1), ("conf", 1), ("priorbox", 2)):
        bottoms = " ".join(f'bottom: "{b}"' for b in parts[head])
        out += [f'layer {{ name: "mbox_{head}" type: "Concat" {bottoms} top: "mbox_{head}"',
                f"  concat_param {{ axis: {axis} }}", "}"]
    out += ['layer { name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf" '
            'top: "mbox_conf_reshape"',
            f"  reshape_param {{ shape {{ dim: 0 dim: -1 dim: {num_classes} }} }}", "}",
            'layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape" '
            'top: "mbox_conf_softmax" softmax_param { axis: 2 } }',
            'layer { name: "mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax" '
            'top: "mbox_conf_flatten" flatten_param { axis: 1 } }',
            'layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" '
            'bottom: "mbox_conf_flatten" bottom: "mbox_priorbox" top: "detection_out"',
            "  include { phase: TEST }",
            f"  detection_output_param {{ num_classes: {num_classes} share_location: true "
            "background_label_id: 0",
            "    nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE "
            "keep_top_k: 200 confidence_threshold: 0.01 }", "}"]
    return "\n".join(out) + "\n"


def shipped_text(file_name):
    """The text minissd/caffe_nets/<file_name> holds (tests compare the two)."""
    size, num_classes, make = SHIPPED[file_name]
    return vgg_ssd_prototxt(size, num_classes, make(num_classes))
