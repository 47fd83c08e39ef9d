"""Detectors trained elsewhere, imported: torchvision's ssd300_vgg16, ssd.pytorch's SSD, Caffe SSDs.

    import_torchvision_ssd300(path) -> (config, state)   also as minissd.weights.<same name>
    torchvision_ssd300(state, path="state dict") -> (config, state)   from a dict already read
    import_detector(path) -> (config, state, format)     either kind, told apart by its keys
    detector_format(state) -> "torchvision-ssd300" | "ssd.pytorch" | "vgg16-base" | None
    import_caffe_ssd(prototxt, caffemodel, preset=None) -> (config, state)   Caffe SSD deploy
                                                         nets (minissd/caffe/, no Caffe)

Every file is read by minissd.torchfile.read_torch_checkpoint (no torch, nothing executed), and
`SSD(config).load_state_dict(state)` then holds the detector. The config carries what makes the
detector compute what its own library computes: preprocessing, default boxes, box decoding and
post-processing (minissd.config.ssd300_torchvision tells torchvision's rules one by one).

torchvision's ssd300_vgg16 state dict
-------------------------------------
SSDFeatureExtractorVGG cuts VGG16's `features` list in two at its fourth max pool:

    backbone.features.<i>        conv1_1 .. conv4_3: convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21
                                 (a ReLU after every conv, a pool where the index jumps by 3;
                                 the third pool in ceil mode, 75 -> 38)
    backbone.scale_weight        L2Norm's per-channel scale of conv4_3 (C4,)
    backbone.extra.0.<j>         pool4 at 0, conv5_1 .. conv5_3 at 1, 3, 5, (pool5 dropped)
    backbone.extra.0.7.<1|3>     pool5 (3x3/1/1) at 7.0, conv6 (3x3, dilation 6) at 7.1, conv7
                                 (1x1) at 7.3: the reduced fc6/fc7
    backbone.extra.<b>.<0|2>     b = 1..4: conv8 .. conv11, a 1x1 then a 3x3 (stride 2 pad 1
                                 for conv8_2 and conv9_2, stride 1 no pad for conv10_2, conv11_2)
    head.regression_head.module_list.<k>       loc head of source k: (A_k * 4, C_k, 3, 3)
    head.classification_head.module_list.<k>   conf head of source k: (A_k * K, C_k, 3, 3)

The heads' channels are anchor-major (channel a * K + c), exactly as ssd.pytorch's and
minissd's, and torchvision flattens them NHWC too, so the heads load unchanged. The layer list
is SSD300's, so each torchvision conv maps, in forward order, onto one of minissd's (minissd.plan
names them vgg.<i>, extras.<j>). The widths and the number of classes K are read from the
weight shapes (so a narrow test network of the same layout loads too); what the shapes cannot
tell (strides, padding, dilation, aspect ratios) is torchvision's fixed SSD300 layout.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from .config import ssd300, ssd512, ssd300_torchvision
from .plan import layer_plan
from .torchfile import CheckpointError, read_torch_checkpoint

_FEATURES = re.compile(r"backbone\.features\.(\d+)\.weight$")
_EXTRA0 = re.compile(r"backbone\.extra\.0\.(\d+)\.weight$")
_FC = re.compile(r"backbone\.extra\.0\.(\d+)\.(\d+)\.weight$")
_EXTRA = re.compile(r"backbone\.extra\.([1-9]\d*)\.(\d+)\.weight$")
_LOC = "head.regression_head.module_list.{}"
_CONF = "head.classification_head.module_list.{}"
_TV_MBOX = (4, 6, 6, 6, 4, 4)               # DefaultBoxGenerator([[2], [2, 3] x 3, [2], [2]])
_TV_EXTRA_LAYOUT = ((1, 1, 0), (3, 2, 1), (1, 1, 0), (3, 2, 1),     # (kernel, stride, pad)
                    (1, 1, 0), (3, 1, 0), (1, 1, 0), (3, 1, 0))

_FIX = ("save the state dict of torchvision.models.detection.ssd300_vgg16 (torch.save("
        "model.state_dict(), path)), or the COCO file ssd300_vgg16_coco-b556d3b4.pth")


def detector_format(state: dict):
    """Which detector a state dict holds, from its keys (None: none minissd knows)."""
    if "backbone.scale_weight" in state and any(k.startswith("head.classification_head.")
                                                for k in state):
        return "torchvision-ssd300"
    if "L2Norm.weight" in state and "conf.0.weight" in state:
        return "ssd.pytorch"
    if "0.weight" in state or "vgg.0.weight" in state or "features.0.weight" in state:
        return "vgg16-base"
    return None


def import_torchvision_ssd300(path):
    """(SSDConfig, state dict) of a torchvision ssd300_vgg16 .pth file, read without torch.

    path: torchvision's COCO file (ssd300_vgg16_coco-b556d3b4.pth) or any saved state dict of
          ssd300_vgg16 (any number of classes; a training checkpoint holding it under
          "model" or "state_dict" works too)
    returns (config, state): config = minissd.config.ssd300_torchvision(K) with the widths
          read from the file (COCO's 91 category names when K = 91), and state = {minissd
          name: float32 array} for SSD(config).load_state_dict(state)
    Raises CheckpointError naming the file and the fix when it is not this architecture.
    """
    return torchvision_ssd300(read_torch_checkpoint(path), str(path))


def torchvision_ssd300(state: dict, path="state dict"):
    """import_torchvision_ssd300 on a state dict already read ({torchvision name: array})."""
    if detector_format(state) != "torchvision-ssd300":
        raise CheckpointError(f"{path}: not a torchvision ssd300_vgg16 state dict (no "
                              "backbone.scale_weight and head.classification_head.* keys; "
                              f"found {_some_keys(state)}); {_FIX}")
    convs, feat, n5 = _torchvision_convs(state, path)      # [(torchvision prefix, weight)]
    config = _config_from_shapes(state, convs, feat, n5, path)
    plan = layer_plan(config)
    ours = [p for p in plan if p.kind == "conv" and p.stage in ("vgg", "extras")]
    out = {"L2Norm.weight": state["backbone.scale_weight"]}
    for p, (prefix, _) in zip(ours, convs):
        out[f"{p.name}.weight"] = _need(state, prefix + ".weight", path)
        out[f"{p.name}.bias"] = _need(state, prefix + ".bias", path)
    for k in range(len(config.mbox)):
        for ours_head, theirs in (("loc", _LOC), ("conf", _CONF)):
            for param in ("weight", "bias"):
                out[f"{ours_head}.{k}.{param}"] = _need(state, f"{theirs.format(k)}.{param}",
                                                        path)
    used = {prefix for prefix, _ in convs} | {_LOC.format(k) for k in range(6)} | \
        {_CONF.format(k) for k in range(6)}
    extra = [k for k in state if k != "backbone.scale_weight" and k.rsplit(".", 1)[0] not in used]
    if extra:
        raise CheckpointError(f"{path}: keys {extra[:4]} are not part of torchvision's "
                              f"ssd300_vgg16 (a different backbone or the SSD512 variant?); "
                              f"{_FIX}")
    out = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    _check_shapes(out, plan, path)
    return config, out


def _torchvision_convs(state, path):
    """The backbone's convs in forward order, checked against SSDFeatureExtractorVGG's layout:
    ([(key prefix, weight array)] for conv1_1 .. conv4_3, conv5_*, conv6, conv7, conv8_1 ..
    11_2; the backbone.features indices of conv1_1 .. conv4_3; how many conv5_* there are)."""
    feat = sorted(int(m.group(1)) for k in state if (m := _FEATURES.match(k)))
    conv5 = sorted(int(m.group(1)) for k in state if (m := _EXTRA0.match(k)))
    fc = sorted((int(m.group(1)), int(m.group(2))) for k in state if (m := _FC.match(k)))
    blocks = {}
    for k in state:
        if m := _EXTRA.match(k):
            blocks.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    if not feat or feat[0] != 0 or any(b - a not in (2, 3) for a, b in zip(feat, feat[1:])) \
            or sum(b - a == 3 for a, b in zip(feat, feat[1:])) != 3:
        raise CheckpointError(f"{path}: backbone.features convs at {feat}: not VGG's layout "
                              "(convs every 2 entries, 3 pools before conv4_3, as 0, 2, 5, 7, "
                              f"10, 12, 14, 17, 19, 21); {_FIX}")
    if not conv5 or conv5 != list(range(1, 2 * len(conv5), 2)):
        raise CheckpointError(f"{path}: backbone.extra.0 convs at {conv5}: not pool4 followed "
                              f"by conv5_1 .. conv5_3 (1, 3, 5); {_FIX}")
    fc_at = conv5[-1] + 2
    if fc != [(fc_at, 1), (fc_at, 3)]:
        raise CheckpointError(f"{path}: backbone.extra.0.{fc_at}.<1|3> (conv6, conv7) not "
                              f"found where torchvision puts them (got {fc}); {_FIX}")
    if sorted(blocks) != [1, 2, 3, 4] or any(sorted(v) != [0, 2] for v in blocks.values()):
        raise CheckpointError(f"{path}: backbone.extra.1 .. 4 (conv8 .. conv11, each a 1x1 at "
                              f".0 and a 3x3 at .2) expected, found blocks {sorted(blocks)} "
                              "(5 blocks: the SSD512 'highres' variant, which minissd does not "
                              f"import); {_FIX}")
    prefixes = ([f"backbone.features.{i}" for i in feat]
                + [f"backbone.extra.0.{j}" for j in conv5]
                + [f"backbone.extra.0.{fc_at}.1", f"backbone.extra.0.{fc_at}.3"]
                + [f"backbone.extra.{b}.{i}" for b in (1, 2, 3, 4) for i in (0, 2)])
    convs = [(p, np.asarray(state[p + ".weight"])) for p in prefixes]
    flat = [p for p, w in convs if w.ndim != 4]
    if flat:
        raise CheckpointError(f"{path}: {flat[0]}.weight is not a conv weight (out, in, kh, kw); "
                              f"{_FIX}")
    return convs, feat, len(conv5)


def _config_from_shapes(state, convs, feat, n5, path):
    """ssd300_torchvision(K) with the base, fc and extra widths of the file; feat and n5 as
    _torchvision_convs returns them."""
    widths = [w.shape[0] for _, w in convs]
    n4 = len(feat)
    base, pools = [widths[0]], 0
    for i, (a, b) in enumerate(zip(feat, feat[1:])):
        if b - a == 3:                       # conv, ReLU, pool, conv
            pools += 1
            base.append("C" if pools == 3 else "M")
        base.append(widths[i + 1])
    base += ["M"] + widths[n4:n4 + n5]       # pool4, conv5_*
    fc = tuple(widths[n4 + n5:n4 + n5 + 2])
    kernels = [w.shape[2] for _, w in convs[n4 + n5 + 2:]]
    if kernels != [k for k, _, _ in _TV_EXTRA_LAYOUT]:
        raise CheckpointError(f"{path}: extra layers with kernels {kernels}, torchvision's "
                              f"SSD300 has 1x1, 3x3 four times; {_FIX}")
    extras = tuple((w, k, s, p) for w, (k, s, p) in zip(widths[n4 + n5 + 2:], _TV_EXTRA_LAYOUT))
    mbox, classes = [], set()
    for k in range(len(_TV_MBOX)):
        loc, conf = state.get(_LOC.format(k) + ".weight"), state.get(_CONF.format(k) + ".weight")
        if loc is None or conf is None:
            raise CheckpointError(f"{path}: no {_LOC.format(k)} / {_CONF.format(k)}: SSD300 has "
                                  f"6 heads of each kind; {_FIX}")
        mbox.append(loc.shape[0] // 4)
        classes.add(conf.shape[0] / max(1, mbox[-1]))
    if tuple(mbox) != _TV_MBOX:
        raise CheckpointError(f"{path}: {tuple(mbox)} default boxes per location; torchvision's "
                              f"ssd300_vgg16 has {_TV_MBOX} (ratios 2 / 2, 3), other ratios "
                              f"cannot be told from the weights; {_FIX}")
    if len(classes) != 1 or not float(next(iter(classes))).is_integer():
        raise CheckpointError(f"{path}: the classification heads disagree on the number of "
                              f"classes ({sorted(classes)}); the file is not one model; {_FIX}")
    num_classes = int(next(iter(classes)))
    return dataclasses.replace(ssd300_torchvision(num_classes), base=tuple(base),
                               l2norm_conv=n4, fc=fc, extras=extras)


def _check_shapes(out, plan, path):
    """Every parameter the plan names, present with the plan's shape (CheckpointError if not)."""
    for p in plan:
        for name, shape in p.params:
            key = f"{p.name}.{name}"
            got = out[key].shape if key in out else None
            if got != tuple(shape):
                raise CheckpointError(f"{path}: {key} would be {got}, the network needs "
                                      f"{tuple(shape)} (widths that do not chain from layer to "
                                      f"layer: not one ssd300_vgg16 model); {_FIX}")


def _need(state, key, path):
    if key not in state:
        raise CheckpointError(f"{path}: {key} missing; {_FIX}")
    return state[key]


def _some_keys(state):
    keys = list(state)
    return f"{keys[:3]}{' ...' if len(keys) > 3 else ''}"


def ssd_pytorch_detector(state: dict, path="state dict"):
    """(config, state) of a trained ssd.pytorch SSD300 or SSD512 (keys vgg.*, L2Norm.weight,
    extras.*, loc.*, conf.*): minissd's own names, so only the config is found, from the number
    of heads and the classes in conf.0. Caffe preprocessing, ssd.pytorch's default boxes."""
    odd = [k for k in state if not k.startswith(("vgg.", "L2Norm.", "extras.", "loc.", "conf."))]
    if odd:
        raise CheckpointError(f"{path}: keys {odd[:4]} are not ssd.pytorch's (vgg.*, L2Norm.*, "
                              "extras.*, loc.*, conf.*)")
    state = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    heads = sum(1 for k in state if re.match(r"loc\.\d+\.weight$", k))
    make = {6: ssd300, 7: ssd512}.get(heads)
    if make is None:
        raise CheckpointError(f"{path}: {heads} loc heads; ssd.pytorch's SSD300 has 6, SSD512 7")
    config = make(num_classes=state["conf.0.weight"].shape[0] // 4)
    _check_shapes(state, layer_plan(config), path)
    return config, state


def import_detector(path):
    """(config, state, format) of a detector .pth file: torchvision's or ssd.pytorch's."""
    state = read_torch_checkpoint(path)
    fmt = detector_format(state)
    if fmt == "torchvision-ssd300":
        return (*torchvision_ssd300(state, str(path)), fmt)
    if fmt == "ssd.pytorch":
        return (*ssd_pytorch_detector(state, str(path)), fmt)
    if fmt == "vgg16-base":
        raise CheckpointError(f"{path}: a VGG16 base network (ImageNet weights) without SSD's "
                              "heads: it cannot detect; train with it: python -m minissd.train "
                              "--config ssd300 --pretrained-vgg FILE")
    raise CheckpointError(f"{path}: neither torchvision's ssd300_vgg16 nor ssd.pytorch's SSD "
                          f"(keys {_some_keys(state)}); {_FIX}")


def import_caffe_ssd(prototxt, caffemodel, preset=None):
    """(SSDConfig, state dict) of a Caffe SSD: its deploy .prototxt and its .caffemodel, read
    without Caffe (minissd/caffe/). preset "opencv-face": OpenCV's res10 face detector's mean
    (104, 177, 123) and class name. SSD(config).load_state_dict(state) then holds the net, and
    SSD.forward gives (loc, conf) before softmax in the net's own default-box order."""
    from .caffe import import_caffe_ssd as _import      # protobuf only when a Caffe file comes
    return _import(prototxt, caffemodel, preset=preset)
