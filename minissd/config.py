"""SSD configurations as plain dataclasses: ssd300, ssd512 (VOC and COCO), a CPU-sized `tiny`,
and ssd300_torchvision (torchvision's ssd300_vgg16: SSD300's layers with torchvision's
preprocessing, default boxes and post-processing; minissd.weights.import_torchvision_ssd300).

A config says everything needed to build the network (model.py), its default boxes
(priors.py) and its preprocessing (data/augment.py); checkpoints store it as JSON
(`to_dict` / `from_dict`), so a checkpoint always rebuilds the network that made it.

The base network is described the way ssd.pytorch does it, as a list:
    an int c     a 3x3 conv with c output channels, padding 1, then a ReLU
    "M"          a 2x2 max pool, stride 2
    "C"          a 2x2 max pool, stride 2, ceil mode (SSD300: 75 -> 38)
followed by pool5 (3x3, stride 1, pad 1), conv6 (3x3, dilation `fc_dilation`, pad = dilation)
and conv7 (1x1), each conv with a ReLU. This is VGG16 with fc6/fc7 turned into convolutions.

The first source feature map is the ReLU output of base conv number `l2norm_conv` (1-based;
10 is conv4_3), passed through L2Norm. The second is conv7. The others come from the extra
layers: `extras` is a list of (out_channels, kernel, stride, padding) convs, each followed by a
ReLU, and every second one (conv8_2, conv9_2, ...) is a source.

A body that is not VGG (a ResNet, an imported Caffe net) is given instead as `body`, a flat list
of BodyLayer that each name their inputs, as a Caffe deploy net does; `sources` then names the
layers whose outputs feed the heads, and base, fc, extras, l2norm_conv, l2norm_scale and
batch_norm are ignored (minissd.plan.layer_plan, minissd.model.BodySSD).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# Preprocessing (channel order, scale, mean, std) belongs to the weights, not to the code: it
# is stored in the config and so in every checkpoint. ssd.pytorch/Caffe weights expect BGR
# 0..255 minus the mean; torchvision's VGG16 weights expect RGB / 255 with ImageNet mean/std.
CAFFE_PREPROCESS = {"channel_order": "BGR", "scale": 1.0,
                    "mean": (104.0, 117.0, 123.0), "std": (1.0, 1.0, 1.0)}
TORCHVISION_PREPROCESS = {"channel_order": "RGB", "scale": 1.0 / 255.0,
                          "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

# torchvision's ssd300_vgg16: its VGG16 (trained on ImageNet as torchvision's "features" weights,
# then with SSD on COCO) expects RGB in 0..255 minus the mean: torchvision writes this as
# 0..1 minus (0.48235, 0.45882, 0.40784), divided by std 1/255. GeneralizedRCNNTransform
# normalises first and then resizes the float image with torch's bilinear interpolate
# (align_corners=False, no antialiasing): the "resize" entry names that rule
# (minissd.data.augment.network_input). Without a "resize" entry: Pillow's bilinear on uint8.
TORCHVISION_SSD_PREPROCESS = {"channel_order": "RGB", "scale": 1.0 / 255.0,
                              "mean": (0.48235, 0.45882, 0.40784),
                              "std": (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0),
                              "resize": "torch-bilinear"}

# The 91 labels of torchvision's COCO detectors (torchvision.models._meta._COCO_CATEGORIES):
# COCO's category ids 1..90 with "N/A" where COCO left an id unused, 0 = background. Label i of
# a torchvision COCO model is COCO_91_CATEGORIES[i].
COCO_91_CATEGORIES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

BODY_KINDS = ("conv", "batchnorm", "scale", "relu", "maxpool", "eltwise_sum", "l2norm")


@dataclass(frozen=True)
class BodyLayer:
    """One layer of a body given as a flat list (Caffe's deploy net): it names its inputs.

    Its arrays are "<name>.weight", "<name>.bias", "<name>.running_mean", ... (minissd.plan
    lists them with their shapes). kind:
      conv         out_channels, kernel (square), stride, padding, dilation, bias
      batchnorm    eps; affine: own weight/bias (False = Caffe's BatchNorm, a Scale follows)
      scale        y = x * weight[c] + bias[c] (bias: has a bias)
      relu         y = max(x, 0)
      maxpool      kernel, stride, padding, ceil_mode (Caffe always rounds up: True);
                   padded cells count as -inf
      eltwise_sum  y = the sum of two or more inputs of one shape (a residual join)
      l2norm       Caffe's Normalize (across_spatial false): y = x / sqrt(sum_c x^2 + eps) * w,
                   w (C,), or (1,) with channel_shared; init_scale its initial value (SSD: 20)
    """
    name: str                  # unique; its arrays are "<name>.weight", "<name>.bias", ...
    kind: str                  # one of BODY_KINDS
    inputs: tuple = ()         # names of EARLIER BodyLayers it reads; "data" = the image
    out_channels: int = 0      # conv
    kernel: int = 1            # conv, maxpool (square)
    stride: int = 1            # conv, maxpool
    padding: int = 0           # conv, maxpool
    dilation: int = 1          # conv
    bias: bool = True          # conv, scale: has a bias term ("<name>.bias")
    ceil_mode: bool = False    # maxpool: round the output size up (Caffe always does: True)
    affine: bool = True        # batchnorm: own weight/bias; False = Caffe's (a Scale follows)
    eps: float = 1e-5          # batchnorm eps; l2norm eps (Caffe Normalize: 1e-10)
    channel_shared: bool = False   # l2norm: one scale for all channels ("<name>.weight" shape (1,))
    init_scale: float = 1.0    # l2norm: initial scale (SSD: 20)

    def __post_init__(self):
        # inputs as a tuple of names: a list is copied, one name alone ("data") is wrapped
        names = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        object.__setattr__(self, "inputs", names)


_VGG16_BASE = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)


@dataclass
class SSDConfig:
    """Everything that defines one SSD network. Sizes in pixels of the input image."""
    name: str
    image_size: int
    class_names: tuple                      # object classes; label i (1..K) is class_names[i-1]
    # --- network ---
    base: tuple = _VGG16_BASE
    l2norm_conv: int = 10                   # 1-based base conv whose ReLU output is source 0
    l2norm_scale: float = 20.0
    fc: tuple = (1024, 1024)                # conv6, conv7 output channels
    fc_dilation: int = 6
    extras: tuple = ()                      # (out_channels, kernel, stride, padding) per conv
    batch_norm: bool = False                # BatchNorm after every base/extra conv (tiny)
    mbox: tuple = ()                        # default boxes per location, per source
    # --- default boxes ---
    feature_maps: tuple = ()                # spatial size of each source (checked by the model)
    steps: tuple = ()                       # pixels per feature-map cell
    min_sizes: tuple = ()                   # pixels; empty -> the paper's s_min/s_max formula
    max_sizes: tuple = ()
    aspect_ratios: tuple = ()               # per source, ratios besides 1 (each adds a and 1/a)
    s_min: float = 0.2                      # the paper's scales, used when min_sizes is empty
    s_max: float = 0.9
    clip: bool = True
    variances: tuple = (0.1, 0.2)
    # --- preprocessing (of the weights) ---
    preprocess: dict = field(default_factory=lambda: dict(CAFFE_PREPROCESS))
    # --- what makes torchvision's SSD300 torchvision's (defaults: ssd.pytorch's behaviour, so
    # every older config and checkpoint means exactly what it meant) ---
    prior_clip: str = "ssd.pytorch"         # with clip: "ssd.pytorch" clamps cx, cy, w, h to
                                            # [0, 1]; "torchvision" only w, h (priors.py)
    conf_threshold: float = 0.01            # detection (inference.predict, postprocess.detect):
    nms_threshold: float = 0.45             #   score > conf_threshold, per class at most
    top_k: int = 200                        #   per_class_top_k candidates, NMS at IoU >
    per_class_top_k: int = 400              #   nms_threshold, top_k per image
    clip_boxes: bool = False                # clip decoded boxes to the image before NMS
    wh_clamp: float | None = None           # cap on the log size change of a decoded box
    matching: str = "ssd.pytorch"           # the bipartite step of training's matching:
                                            # "ssd.pytorch" or "caffe" (the paper's; matching.py)
    # --- a body that is not VGG (empty: the VGG network above; see the module docstring) ---
    body: tuple = ()                        # BodyLayer, in forward order
    sources: tuple = ()                     # names of the body layers feeding head 0, 1, ...
    head_kernel: int = 3                    # loc/conf convs: kernel, padding kernel // 2

    def __post_init__(self):
        if self.body or self.sources:
            self.body, self.sources = tuple(self.body), tuple(self.sources)
            check_body(self)

    @property
    def num_classes(self) -> int:
        """Classes including background (label 0): K + 1."""
        return len(self.class_names) + 1

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SSDConfig":
        """Inverse of to_dict; lists become tuples again, body entries BodyLayers again."""
        def tup(v):
            if isinstance(v, (list, tuple)):
                return tuple(tup(x) for x in v)
            if isinstance(v, dict):
                return {k: tup(x) for k, x in v.items()}
            return v
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SSDConfig fields {sorted(unknown)} (a checkpoint from "
                             "a newer minissd?)")
        d = {k: tup(v) for k, v in d.items()}
        if d.get("body"):
            d["body"] = tuple(_body_layer(entry, d.get("name")) for entry in d["body"])
        return cls(**d)

    def scales(self):
        """(min_sizes, max_sizes) in pixels: the explicit ones, or the paper's formula.

        Paper (Sec. 2.2): s_k = s_min + (s_max - s_min) (k - 1) / (m - 1), k = 1..m, and the
        extra box of aspect ratio 1 uses s'_k = sqrt(s_k s_{k+1}) with s_{m+1} taken as 1.0 here.
        """
        if self.min_sizes:
            return tuple(self.min_sizes), tuple(self.max_sizes)
        m = len(self.feature_maps)
        s = [self.s_min + (self.s_max - self.s_min) * k / (m - 1) for k in range(m)] + [1.0]
        mins = tuple(self.image_size * s[k] for k in range(m))
        maxs = tuple(self.image_size * s[k + 1] for k in range(m))
        return mins, maxs

    def num_priors(self) -> int:
        """Total default boxes: sum over sources of f_k^2 * boxes per location."""
        return sum(f * f * k for f, k in zip(self.feature_maps, self.mbox))


def _body_layer(entry, config_name) -> BodyLayer:
    """A BodyLayer from its to_dict form (a dict), or the BodyLayer itself."""
    if isinstance(entry, BodyLayer):
        return entry
    known = {f.name for f in dataclasses.fields(BodyLayer)}
    unknown = set(entry) - known
    if unknown or "name" not in entry or "kind" not in entry:
        raise ValueError(f"config {config_name!r}: body entry {entry.get('name', entry)!r} has "
                         f"unknown fields {sorted(unknown)} or lacks name/kind; a body entry "
                         f"takes {sorted(known)}")
    return BodyLayer(**entry)


def check_body(config):
    """Raise ValueError naming the layer and the fix when config.body / config.sources do not
    describe a network: an unknown kind, a repeated name, an input that is not an earlier
    layer, the wrong number of inputs, a conv without out_channels, a layer nobody reads, a
    source that is not a body layer. (Shapes are checked by minissd.plan.layer_plan.)"""
    where = f"config {config.name!r}"
    if not config.body:
        raise ValueError(f"{where}: sources {tuple(config.sources)} are given without a body; "
                         "sources name body layers, so give body too or leave sources empty")
    seen = {}
    for i, layer in enumerate(config.body):
        if not isinstance(layer, BodyLayer):
            raise ValueError(f"{where}: body[{i}] is a {type(layer).__name__}, not a BodyLayer; "
                             "build the body from minissd.config.BodyLayer entries")
        what = f"{where}: body layer {layer.name!r}"
        if not layer.name or layer.name == "data" or layer.name in seen or \
                layer.name.startswith(("loc.", "conf.")):
            raise ValueError(f"{what} (body[{i}]): names must be unique, not empty, not 'data' "
                             "and not start with 'loc.' or 'conf.' (the heads' names); rename it")
        if layer.kind not in BODY_KINDS:
            raise ValueError(f"{what}: unknown kind {layer.kind!r}; use one of "
                             f"{', '.join(BODY_KINDS)}")
        for name in layer.inputs:
            if name != "data" and name not in seen:
                raise ValueError(f"{what} reads {name!r}, which is not an earlier body layer "
                                 "(or 'data', the image); list the layers in forward order and "
                                 "name existing ones")
        n_in = len(layer.inputs)
        if (layer.kind == "eltwise_sum" and n_in < 2) or (layer.kind != "eltwise_sum" and
                                                          n_in != 1):
            want = "two or more inputs" if layer.kind == "eltwise_sum" else "exactly one input"
            raise ValueError(f"{what} ({layer.kind}) has {n_in} inputs {tuple(layer.inputs)}; "
                             f"it takes {want}")
        if layer.kind == "conv" and layer.out_channels < 1:
            raise ValueError(f"{what}: a conv needs out_channels >= 1, got "
                             f"{layer.out_channels}; set out_channels")
        seen[layer.name] = i
    if not config.sources:
        raise ValueError(f"{where}: a body needs sources, the names of the body layers whose "
                         "outputs feed the heads; set sources")
    for name in config.sources:
        if name not in seen:
            raise ValueError(f"{where}: source {name!r} is not a body layer; name one of the "
                             f"body's layers (e.g. {config.body[-1].name!r})")
    if len(set(config.sources)) != len(config.sources):
        raise ValueError(f"{where}: sources {tuple(config.sources)} name a layer twice; give "
                         "each source feature map once")
    read = {name for layer in config.body for name in layer.inputs} | set(config.sources)
    for layer in config.body:
        if layer.name not in read:
            raise ValueError(f"{where}: body layer {layer.name!r} is read by no layer and is "
                             "not a source; remove it or add it to sources")


def ssd300(num_classes: int = 21, class_names=None) -> SSDConfig:
    """SSD300 for VOC, as in the paper / Caffe SSD / ssd.pytorch: 8732 default boxes."""
    names = _names(num_classes, class_names)
    return SSDConfig(
        name="ssd300", image_size=300, class_names=names,
        extras=((256, 1, 1, 0), (512, 3, 2, 1),      # conv8_1, conv8_2: 19 -> 10
                (128, 1, 1, 0), (256, 3, 2, 1),      # conv9:  10 -> 5
                (128, 1, 1, 0), (256, 3, 1, 0),      # conv10: 5 -> 3
                (128, 1, 1, 0), (256, 3, 1, 0)),     # conv11: 3 -> 1
        mbox=(4, 6, 6, 6, 4, 4),
        feature_maps=(38, 19, 10, 5, 3, 1),
        steps=(8, 16, 32, 64, 100, 300),
        min_sizes=(30, 60, 111, 162, 213, 264),
        max_sizes=(60, 111, 162, 213, 264, 315),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    )


def ssd512(num_classes: int = 21, class_names=None) -> SSDConfig:
    """SSD512 as in Caffe SSD (conv12_2 is a 4x4 conv, pad 1): 24564 default boxes."""
    names = _names(num_classes, class_names)
    return SSDConfig(
        name="ssd512", image_size=512, class_names=names,
        extras=((256, 1, 1, 0), (512, 3, 2, 1),      # conv8:  32 -> 16
                (128, 1, 1, 0), (256, 3, 2, 1),      # conv9:  16 -> 8
                (128, 1, 1, 0), (256, 3, 2, 1),      # conv10: 8 -> 4
                (128, 1, 1, 0), (256, 3, 2, 1),      # conv11: 4 -> 2
                (128, 1, 1, 0), (256, 4, 1, 1)),     # conv12: 2 -> 1
        mbox=(4, 6, 6, 6, 6, 4, 4),
        feature_maps=(64, 32, 16, 8, 4, 2, 1),
        steps=(8, 16, 32, 64, 128, 256, 512),
        min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
        max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    )


def ssd300_torchvision(num_classes: int = 91, class_names=None) -> SSDConfig:
    """torchvision's ssd300_vgg16 (COCO: 91 labels): SSD300's network, torchvision's rules.

    The layers are SSD300's (minissd.weights.import_torchvision_ssd300 maps its state dict onto
    them); what differs from ssd300() is everything around the network, as torchvision's
    models/detection/ssd.py, anchor_utils.py, transform.py and _utils.py do it:
      * preprocessing: RGB 0..255 minus (123.0, 117.0, 104.0) (written 0..1 minus (0.48235,
        0.45882, 0.40784), over 1/255), normalised first, then resized to 300x300 with torch's
        bilinear interpolation on floats (TORCHVISION_SSD_PREPROCESS);
      * default boxes: scales 0.07, 0.15, 0.33, 0.51, 0.69, 0.87 and 1.05 for s'_6, i.e. min
        sizes 21..261 and max sizes 45..315 pixels, SSD300's steps and ratios, and only w, h
        clipped to [0, 1] (prior_clip "torchvision");
      * box coder weights (10, 10, 5, 5) = variances (0.1, 0.2), with the log size change
        capped at log(1000 / 16) before exp (wh_clamp);
      * detection: score > 0.01, at most 400 candidates per class, boxes clipped to the image,
        per-class NMS at IoU 0.45, the best 200 per image.
    L2Norm: torchvision divides by max(|x|, 1e-12), minissd by |x| + 1e-10; the two agree to
    float32 precision wherever the norm is not (almost) zero, and both give 0 where it is.
    """
    if class_names is None and num_classes == len(COCO_91_CATEGORIES):
        class_names = COCO_91_CATEGORIES[1:]
    config = ssd300(num_classes, class_names)
    return dataclasses.replace(
        config, name="ssd300_torchvision",
        min_sizes=(21.0, 45.0, 99.0, 153.0, 207.0, 261.0),
        max_sizes=(45.0, 99.0, 153.0, 207.0, 261.0, 315.0),
        prior_clip="torchvision", clip_boxes=True, wh_clamp=math.log(1000.0 / 16),
        preprocess=dict(TORCHVISION_SSD_PREPROCESS))


TINY_IMAGE_SIZE = 128              # the input side tiny() was designed and measured at


def tiny(num_classes: int = 7, class_names=None, image_size: int = TINY_IMAGE_SIZE) -> SSDConfig:
    """A narrow SSD for the synthetic set, sized to train from scratch in minutes on 2 CPU cores.

    Same topology as SSD300 (VGG-style base with a ceil-mode pool, an L2Norm source, pool5,
    dilated conv6, 1x1 conv7, extra layers of a 1x1 then a strided 3x3 conv, 3x3 heads), six
    sources (32, 16, 8, 4, 2, 1 at a 128-pixel input) and 5620 default boxes. Why:
      * widths 8..64: a NumPy training step costs what the high-resolution convs cost, so the
        early layers are narrow (8 and 16 channels at 128 and 64 pixels).
      * 128 pixels rather than 96: a 96-pixel net steps twice as fast but learned the small
        objects so much more slowly that it was behind per second of training (VOC07 mAP 0.44
        after 800 steps of 16 images, against 0.60 after 500 at 128 pixels).
      * a stride-4 first source (32x32, after conv3_2 here rather than after a third pool as
        in SSD300) with 10- and 12.6-pixel boxes: a quarter of the synthetic objects are under
        10% of the side. With a stride-8 first source 59% of those had no default box at
        IoU >= 0.5 and got a single positive from the bipartite step; with stride 4, 9%.
      * batch_norm=True (conv-BN-ReLU, as ScratchDet): SSD's VGG base comes pretrained; trained
        from scratch without batch norm, the network sat for thousands of steps on a plateau
        where it predicts the same boxes for every image (VOC07 mAP < 0.01 after 1500 steps).
      * l2norm_scale 6 (about sqrt(32)) instead of 20: after batch norm the conv features have
        unit scale, and L2Norm with scale sqrt(C) keeps source 0 at that scale too; 20 made the
        first steps' loss blow up.
    The command line trains it with Adam (minissd.train's tiny setting), not SGD.

    image_size S other than 128 (--image-size): the same layers; the feature-map sizes come
    from the layer plan (minissd.plan.source_sizes), each step is S / f_k, and the box sizes
    scale with S / 128, so every default box covers the same share of the image.
    """
    names = _names(num_classes, class_names)
    config = SSDConfig(
        name="tiny", image_size=128, class_names=names,
        base=(8, "M", 16, "M", 32, 32, "C", 48, 48),
        l2norm_conv=4,                               # 32x32 source (stride 4): small objects
        l2norm_scale=6.0,                            # about sqrt(32): see above
        batch_norm=True,                             # conv-BN-ReLU: see above
        fc=(64, 64), fc_dilation=2,                  # conv6, conv7 at 16x16
        extras=((32, 1, 1, 0), (64, 3, 2, 1),        # 16 -> 8
                (32, 1, 1, 0), (64, 3, 2, 1),        # 8 -> 4
                (32, 1, 1, 0), (64, 3, 2, 1),        # 4 -> 2
                (32, 1, 1, 0), (64, 2, 1, 0)),       # 2 -> 1
        mbox=(4, 4, 6, 6, 4, 4),
        feature_maps=(32, 16, 8, 4, 2, 1),
        steps=(4, 8, 16, 32, 64, 128),
        min_sizes=(10, 18, 34, 58, 86, 108),
        max_sizes=(16, 34, 58, 86, 108, 128),
        aspect_ratios=((2,), (2,), (2, 3), (2, 3), (2,), (2,)),
        # Trained from scratch, so inputs are normalised to about unit scale (RGB / 255,
        # ImageNet mean and std) rather than Caffe's BGR 0..255 minus mean.
        preprocess=dict(TORCHVISION_PREPROCESS),
    )
    return config if image_size == TINY_IMAGE_SIZE else resized(config, image_size)


def resized(config: SSDConfig, image_size: int) -> SSDConfig:
    """`config` at another input side: feature maps from the layer plan, steps S / f_k, box
    sizes scaled by S / config.image_size. ValueError when the network does not fit S."""
    from .plan import source_sizes          # plan.py reads configs; imported where needed
    if image_size < 16:
        raise ValueError(f"image size {image_size} is too small; use 64 or more")
    f = image_size / config.image_size
    out = dataclasses.replace(config, image_size=int(image_size))
    try:
        maps = source_sizes(out)
    except ValueError as e:
        raise ValueError(f"the {config.name} network does not fit a {image_size}-pixel "
                         f"input ({e})") from None
    if len(maps) != len(config.feature_maps) or min(maps) < 1:
        raise ValueError(f"the {config.name} network does not fit a {image_size}-pixel "
                         f"input (feature maps {maps})")
    return dataclasses.replace(
        out, feature_maps=tuple(maps), steps=tuple(image_size / m for m in maps),
        min_sizes=tuple(m * f for m in config.min_sizes),
        max_sizes=tuple(m * f for m in config.max_sizes))


# COCO's 80 object classes in category-id order (the ids run 1..90 with gaps; label i of a
# minissd COCO config is the i-th name here, as the COCO reader numbers a file's categories).
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


def ssd300_coco(num_classes: int = 81, class_names=None) -> SSDConfig:
    """SSD300 for COCO: the VOC network with smaller default boxes, as Caffe SSD's
    ssd_coco.py and ssd.pytorch's `coco` config. COCO has more small objects, so the scales
    start at 7% of the side on conv4_3 (21 px) and then run from 15% to 87% in steps of 18%
    (min 21, 45, 99, 153, 207, 261; max 45, 99, ..., 315) instead of VOC's 10% and 20..88%."""
    names = class_names if class_names is not None else (
        COCO_CLASS_NAMES if num_classes == 81 else None)
    return dataclasses.replace(
        ssd300(num_classes, names), name="ssd300_coco",
        min_sizes=(21, 45, 99, 153, 207, 261), max_sizes=(45, 99, 153, 207, 261, 315))


def ssd512_coco(num_classes: int = 81, class_names=None) -> SSDConfig:
    """SSD512 for COCO, as Caffe SSD's COCO 512 model: conv4_3 at 4% of the side (20.48 px),
    then 10% to 90% in steps of 16% of 512 (min 20.48, 51.2, 133.12, ..., 460.8; the last max
    542.72 is 106%) instead of VOC512's 7% and 15..90%."""
    names = class_names if class_names is not None else (
        COCO_CLASS_NAMES if num_classes == 81 else None)
    return dataclasses.replace(
        ssd512(num_classes, names), name="ssd512_coco",
        min_sizes=(20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8),
        max_sizes=(51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72))


CONFIGS = {"ssd300": ssd300, "ssd512": ssd512, "tiny": tiny,
           "ssd300_coco": ssd300_coco, "ssd512_coco": ssd512_coco}
CONFIGS["ssd300_torchvision"] = ssd300_torchvision


def get_config(name: str, num_classes: int | None = None, class_names=None,
               image_size: int | None = None) -> SSDConfig:
    """A named config (CONFIGS: "ssd300", "ssd512", "tiny", "ssd300_coco", "ssd512_coco",
    "ssd300_torchvision"), optionally with other classes and (tiny only) another input side."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    kw = {"class_names": class_names}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    config = CONFIGS[name](**kw)
    if image_size is not None and image_size != config.image_size:
        if name != "tiny":
            raise ValueError(f"{name} has a fixed {config.image_size}-pixel input; only "
                             "tiny takes another --image-size")
        config = resized(config, image_size)
    return config


def _names(num_classes, class_names):
    """class_names when given (it wins over num_classes), else VOC's 20 for 21 classes,
    else placeholders class1..classK."""
    if class_names is not None:
        return tuple(class_names)
    if num_classes == 21:
        return VOC_CLASS_NAMES
    return tuple(f"class{i}" for i in range(1, num_classes))
