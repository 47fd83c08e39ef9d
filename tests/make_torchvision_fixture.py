"""torchvision's SSD300, run by torchvision, for tests/test_torchvision_ssd.py. Needs torchvision.

    python tests/make_torchvision_fixture.py        (writes the two files below; run it again
                                                     only when the fixture must change)

A CPU-only CI has no torch, so the comparison with torchvision is made once, here, on a narrow
network, and stored:

  fixtures/tv_ssd300_narrow.pth   torch.save of the state dict of a torchvision SSD with
                                  ssd300_vgg16's exact layout and keys but narrow widths
                                  (4..12 channels, 3 classes): built from torchvision's own
                                  DefaultBoxGenerator, SSDHead, SSD class, transform and
                                  post-processing, with NarrowVGGExtractor (below) in place of
                                  SSDFeatureExtractorVGG, whose widths are fixed at VGG16's
  fixtures/tv_ssd300_narrow.npz   what torchvision computed for one fixed image (see
                                  torchvision_outputs; of the preprocessed image every 7th row
                                  and column and the channel sums), and torch's bilinear
                                  resize of a small array (resize_cases)

The full-size test (the real ssd300_vgg16, 35.6 M parameters) imports the same helpers and runs
where torchvision is installed. Every helper takes its torch/torchvision modules when called,
so importing this file without torch works (the tests import IMAGE_SEED and make_image).
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE_PTH = os.path.join(HERE, "fixtures", "tv_ssd300_narrow.pth")
FIXTURE_NPZ = os.path.join(HERE, "fixtures", "tv_ssd300_narrow.npz")

# torchvision.models.detection.ssd300_vgg16's own numbers
ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
STEPS = [8, 16, 32, 64, 100, 300]
IMAGE_MEAN = [0.48235, 0.45882, 0.40784]
IMAGE_STD = [1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0]

# the narrow network: VGG16's list with 4..8 channels, fc6/fc7 12, extras 4 / 8
NARROW_VGG = [4, 4, "M", 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M", 8, 8, 8, "M"]
NARROW_FC = 12
NARROW_EXTRAS = [(4, 8), (4, 8), (4, 8), (4, 8)]
NARROW_CLASSES = 3
IMAGE_SEED = 7


def make_image(height=60, width=100, seed=IMAGE_SEED):
    """A fixed (H, W, 3) uint8 RGB test image: colour ramps, a few blocks, and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255.0 / width, yy * 255.0 / height, 128 + 100 * np.sin(xx / 9.0)], -1)
    for _ in range(6):
        y0, x0 = rng.integers(0, height - 10), rng.integers(0, width - 10)
        img[y0:y0 + rng.integers(8, height // 2), x0:x0 + rng.integers(8, width // 2)] = \
            rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def narrow_extractor():
    """A backbone with SSDFeatureExtractorVGG's structure and state-dict keys, narrow widths.

    Same modules in the same places as torchvision's class (features = VGG's list up to pool4
    with pool3 in ceil mode, scale_weight, extra[0] = pool4, conv5_*, then (pool5 3x3/1/1,
    conv6 3x3 dilation 6, ReLU, conv7 1x1, ReLU), extra[1..4] = 1x1 + 3x3), the same forward.
    """
    import torch
    from torch import nn
    import torch.nn.functional as F
    from torchvision.models.vgg import make_layers

    class NarrowVGGExtractor(nn.Module):
        def __init__(self):
            super().__init__()
            vgg = make_layers(NARROW_VGG)                  # torchvision's VGG list builder
            pools = [i for i, m in enumerate(vgg) if isinstance(m, nn.MaxPool2d)]
            vgg[pools[2]].ceil_mode = True                 # as SSDFeatureExtractorVGG
            c4 = NARROW_VGG[[i for i, v in enumerate(NARROW_VGG) if v == "M"][3] - 1]  # conv4_3
            c5 = NARROW_VGG[-2]
            self.scale_weight = nn.Parameter(torch.ones(c4) * 20)
            self.features = nn.Sequential(*vgg[:pools[3]])
            fc = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                               nn.Conv2d(c5, NARROW_FC, kernel_size=3, padding=6, dilation=6),
                               nn.ReLU(inplace=True),
                               nn.Conv2d(NARROW_FC, NARROW_FC, kernel_size=1),
                               nn.ReLU(inplace=True))
            extra = [nn.Sequential(*vgg[pools[3]:-1], fc)]
            c = NARROW_FC
            for b, (mid, out) in enumerate(NARROW_EXTRAS):
                big = dict(padding=1, stride=2) if b < 2 else {}
                extra.append(nn.Sequential(nn.Conv2d(c, mid, kernel_size=1), nn.ReLU(inplace=True),
                                           nn.Conv2d(mid, out, kernel_size=3, **big),
                                           nn.ReLU(inplace=True)))
                c = out
            self.extra = nn.ModuleList(extra)
            self.out_channels = [c4, NARROW_FC] + [o for _, o in NARROW_EXTRAS]

        def forward(self, x):                              # SSDFeatureExtractorVGG.forward
            x = self.features(x)
            output = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
            for block in self.extra:
                x = block(x)
                output.append(x)
            return {str(i): v for i, v in enumerate(output)}

    return NarrowVGGExtractor()


def narrow_ssd():
    """torchvision's SSD class around the narrow backbone, with ssd300_vgg16's settings."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    anchors = DefaultBoxGenerator(ASPECT_RATIOS, scales=SCALES, steps=STEPS)
    return SSD(narrow_extractor(), anchors, (300, 300), NARROW_CLASSES, image_mean=IMAGE_MEAN,
               image_std=IMAGE_STD)


def randomize(model, seed, loc_gain=1.0):
    """Random weights everywhere: biases N(0, 0.1), scale_weight U(10, 30) (the default init
    leaves biases at 0 and the scale at 20, which would hide a bias or scale mix-up); the
    regression head's weights times loc_gain (> 1 reaches torchvision's exp clamp)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("scale_weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 20 + 10)
            if name.startswith("head.regression_head.") and name.endswith(".weight"):
                p.mul_(loc_gain)
    return model.eval()


def torchvision_outputs(model, image):
    """What torchvision computes for one (H, W, 3) uint8 image, as NumPy:

      preprocessed (1, 3, 300, 300)  model.transform's tensor (normalised, then resized)
      anchors      (P, 4)            anchor_generator's default boxes, corner form, pixels
      loc (P, 4), conf (P, K)        the head outputs (bbox_regression, cls_logits)
      boxes (D, 4), scores (D,), labels (D,)   model([image]) in eval mode: its detections, in
                                     the original image's pixels
    """
    import torch
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        images, _ = model.transform([x])
        features = list(model.backbone(images.tensors).values())
        head = model.head(features)
        anchors = model.anchor_generator(images, features)[0]
        det = model([x])[0]
    return {"preprocessed": images.tensors.numpy(), "anchors": anchors.numpy(),
            "loc": head["bbox_regression"][0].numpy(), "conf": head["cls_logits"][0].numpy(),
            "boxes": det["boxes"].numpy(), "scores": det["scores"].numpy(),
            "labels": det["labels"].numpy()}


def resize_cases(seed=1):
    """torch's bilinear interpolate (align_corners=False) on a small float input, shrunk and
    enlarged: {"resize_in": (1, 2, 41, 37), "resize_to_16": ..., "resize_to_48": ...}."""
    import torch
    x = np.random.default_rng(seed).uniform(-120, 130, (1, 2, 41, 37)).astype(np.float32)
    out = {"resize_in": x}
    for size in (16, 48):
        out[f"resize_to_{size}"] = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=[size, size], mode="bilinear", align_corners=False).numpy()
    return out


def main():
    import torch
    torch.manual_seed(0)
    model = randomize(narrow_ssd(), seed=0, loc_gain=3.0)
    image = make_image()
    out = torchvision_outputs(model, image)
    clamp = np.log(1000.0 / 16)
    print(f"{(out['loc'][:, 2:] / 5 > clamp).sum()} of {out['loc'][:, 2:].size} log-size "
          f"offsets above torchvision's clamp, {len(out['scores'])} detections")
    torch.save(model.state_dict(), FIXTURE_PTH)
    # the full preprocessed image would be 1 MB: every 7th row and column (7 is prime to the
    # resize's periods, so every interpolation phase is sampled) and the per-channel sums
    pre = out.pop("preprocessed")
    out.update(preprocessed_every7=pre[:, :, ::7, ::7],
               preprocessed_sum=pre.astype(np.float64).sum(axis=(0, 2, 3)))
    np.savez_compressed(FIXTURE_NPZ, image=image, **out, **resize_cases())
    for path in (FIXTURE_PTH, FIXTURE_NPZ):
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
