"""SSD data augmentation (Caffe SSD's recipe) and the preprocessing that feeds the network.

Dimension letters: H, W image height and width, S output side, G boxes, N batch.
Boxes are normalised corners (xmin, ymin, xmax, ymax) in [0, 1] throughout.

SSDAugmentation, in Caffe SSD's order (ssd_pascal.py + its data layer):
 1. photometric distortion, each step with p 0.5: brightness (+-32), then either
    contrast, saturation, hue  or  saturation, hue, contrast  (a coin decides, as Caffe's
    DistortImage); contrast and saturation scale by 0.5..1.5, hue shifts by +-36 degrees
    (Caffe's +-18 in OpenCV's 0..180 hue units). Caffe saturates a shifted hue at the end of
    its range; here it wraps around the colour circle, as a hue should.
 2. expand (zoom out), p 0.5: the image is placed at a random spot of a canvas 1..4 times
    its size, filled with the pixel mean;
 3. crop: 7 samplers, each trying up to 50 random crops, keep their first success, and one
    success is picked at random:
        whole image | min IoU 0.1, 0.3, 0.5, 0.7, 0.9 | no constraint
    A crop has side 0.3..1 of the (expanded) image and aspect 0.5..2 (clamped to
    [side^2, 1/side^2] as Caffe). Constraint semantics are Caffe's SatisfySampleConstraint:
    a crop satisfies "min IoU t" when ANY ground-truth box has IoU >= t with it. (ssd.pytorch
    meant "every box", but its test `min < t and max_iou < max` is never true, so it accepts
    every crop: that is the bug the DESIGN refers to.) We follow Caffe because the published
    77.2 mAP was trained with it, and add one guard from ssd.pytorch: a constrained crop must
    keep at least one box centre, so a training image never loses all its objects to a crop.
    Boxes whose centre lies inside the crop are kept and clipped to it;
 4. horizontal flip, p 0.5;
 5. resize to S x S (bilinear; Caffe also draws the interpolation at random, we do not).
At inference, network_input resizes and preprocesses by the rule of the weights: Pillow's
bilinear on uint8 (minissd, ssd.pytorch), or torch's on the normalised floats (torchvision).

Every random number comes from the numpy Generator passed in, so a (seed, sample) pair
always gives the same output. Geometry works on uint8 with a "virtual" expanded canvas:
only the final crop window is ever materialised, so a 4x expand costs nothing extra.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..backend import get_array_module
from .resize_opencv import resize_linear_opencv

CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)      # the constrained samplers
CROP_TRIALS = 50


# ----------------------------------------------------------------------------- preprocessing
def pixel_mean(preprocess: dict) -> tuple:
    """The RGB 0..255 pixel mean of a preprocess dict (what expand fills the canvas with).

    The dict's mean is in its channel order and after its scale: Caffe's BGR (104, 117, 123)
    gives RGB (123, 117, 104); torchvision's RGB (0.485, ...) with scale 1/255 gives
    (123.675, 116.28, 103.53).
    """
    mean = np.asarray(preprocess["mean"], np.float64) / preprocess["scale"]
    if preprocess["channel_order"] == "BGR":
        mean = mean[::-1]
    return tuple(float(v) for v in mean)


def preprocess(images, pp: dict):
    """Network input from RGB images: channel order, scale, mean, std, then NCHW.

    images: (N, H, W, 3) float32 RGB in 0..255 (NumPy or CuPy)
    pp:     {"channel_order": "RGB"|"BGR", "scale": s, "mean": (3,), "std": (3,)}, the mean and
            std in the channel order and after scaling (minissd.config CAFFE_PREPROCESS,
            TORCHVISION_PREPROCESS)
    returns (N, 3, H, W) float32:  ((x[..., order] * scale) - mean) / std
    """
    xp = get_array_module(images)
    order = pp["channel_order"]
    if order not in ("RGB", "BGR"):
        raise ValueError(f"preprocess channel_order is {order!r}; use 'RGB' or 'BGR'")
    x = images[..., ::-1] if order == "BGR" else images                     # (N, H, W, 3)
    mean = xp.asarray(pp["mean"], xp.float32)
    std = xp.asarray(pp["std"], xp.float32)
    x = (x * xp.float32(pp["scale"]) - mean) / std
    return xp.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=xp.float32)  # (N, 3, H, W)


def resize(image, size):
    """(H, W, 3) uint8 -> (size, size, 3) uint8, bilinear (Pillow; releases the GIL)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


RESIZE_RULES = ("pillow-bilinear", "torch-bilinear", "opencv-linear")


def network_input(images, pp: dict, size: int, xp=np):
    """The network's input batch from RGB images of any sizes, by the weights' resize rule.

    images: list of (H, W, 3) uint8 RGB arrays (sizes may differ)
    pp:     a preprocess dict (config.preprocess); its optional "resize" entry picks the rule:
              "pillow-bilinear" (the default, and every minissd checkpoint): resize the uint8
                  image with Pillow's bilinear filter, then preprocess;
              "torch-bilinear" (torchvision's detectors, GeneralizedRCNNTransform): preprocess
                  at the original size, then resize the float image with torch's bilinear
                  interpolate (resize_bilinear_torch). Pillow widens its filter when it
                  shrinks (antialiasing) and rounds to uint8; torch does neither, so the two
                  differ by a few grey levels;
              "opencv-linear" (Caffe SSD models, minissd.caffe): resize the uint8 image as
                  cv2.resize(..., INTER_LINEAR) does (data/resize_opencv.py), then preprocess.
    xp:     numpy or cupy: where the batch is made
    returns (N, 3, size, size) float32
    """
    rule = pp.get("resize", "pillow-bilinear")
    if rule == "pillow-bilinear":
        batch = np.stack([resize(im, size) for im in images]).astype(np.float32)
        return preprocess(xp.asarray(batch), pp)                      # (N, 3, S, S)
    if rule == "opencv-linear":
        batch = np.stack([resize_linear_opencv(im, size) for im in images]).astype(np.float32)
        return preprocess(xp.asarray(batch), pp)                      # (N, 3, S, S)
    if rule == "torch-bilinear":
        return xp.concatenate([
            resize_bilinear_torch(preprocess(xp.asarray(im[None], dtype=xp.float32), pp), size)
            for im in images])                                         # (N, 3, S, S)
    raise ValueError(f"preprocess resize rule {rule!r}; use one of {', '.join(RESIZE_RULES)}")


def resize_bilinear_torch(x, size: int):
    """torch.nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False).

    x: (N, C, H, W) float32 (NumPy or CuPy) -> (N, C, size, size) float32
    Output pixel o samples the input at src = (o + 0.5) * (in / out) - 0.5, floored at 0
    (pixel centres line up; no antialiasing, however much it shrinks), between the two
    nearest input pixels i0 = floor(src) and i1 = min(i0 + 1, in - 1) with weight
    lam = src - i0 on i1. Rounded as torch's CPU kernel rounds (float32 weights).
    """
    xp = get_array_module(x)
    y0, y1, ly = _source_pixels(x.shape[2], size, xp)                  # (S,) each
    x0, x1, lx = _source_pixels(x.shape[3], size, xp)
    ly, lx = ly[:, None], lx[None, :]                                  # (S, 1), (1, S)
    one = xp.float32(1)
    top = x[:, :, y0][:, :, :, x0] * (one - lx) + x[:, :, y0][:, :, :, x1] * lx   # (N, C, S, S)
    bottom = x[:, :, y1][:, :, :, x0] * (one - lx) + x[:, :, y1][:, :, :, x1] * lx
    return xp.ascontiguousarray(top * (one - ly) + bottom * ly, dtype=xp.float32)


def _source_pixels(n_in, n_out, xp):
    """(i0, i1, lam) for torch's align_corners=False rule along one axis of n_in -> n_out."""
    # torch's scale is a float32; scale * (o + 0.5) - 0.5 is one fused multiply-add in its
    # compiled kernel (rounded once), which float64 arithmetic rounded to float32 reproduces.
    scale = float(np.float32(n_in) / np.float32(n_out))
    src = ((xp.arange(n_out, dtype=xp.float64) + 0.5) * scale - 0.5).astype(xp.float32)
    src = xp.maximum(src, xp.float32(0))                               # (n_out,)
    i0 = xp.minimum(xp.floor(src).astype(xp.int64), n_in - 1)
    i1 = xp.minimum(i0 + 1, n_in - 1)
    lam = xp.clip(src - i0.astype(xp.float32), 0, 1).astype(xp.float32)
    return i0, i1, lam


class Resize:
    """The evaluation transform: resize only. Boxes are normalised, so they do not change."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image, boxes, labels, rng=None):
        return (resize(np.ascontiguousarray(image), self.size).astype(np.float32),
                boxes, labels)


# ----------------------------------------------------------------------------- photometric
# The image is held as three planes (3, H, W) float32 while distorted: numpy is much faster
# on contiguous planes than on the interleaved (H, W, 3) layout.
def _mod6(k):
    """k mod 6 for floats (floor form: np.mod on floats is several times slower)."""
    return k - 6 * np.floor(k * np.float32(1 / 6))


def rgb_hue(rgb):
    """HSV hue of (3, H, W) RGB planes, in sixths of the colour circle [0, 6), with the
    max channel V and the chroma C = V - min: (hue, v, c), each (H, W)."""
    r, g, b = rgb
    v = np.maximum(np.maximum(r, g), b)
    c = v - np.minimum(np.minimum(r, g), b)
    safe = np.maximum(c, np.float32(1e-6))     # grey pixels (c = 0) have hue 0
    hue = np.where(v == r, (g - b) / safe,
                   np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return _mod6(hue), v, c


def hue_to_rgb(hue, v, c):
    """Inverse of rgb_hue: channel n = V - C clip(min(k, 4 - k), 0, 1),
    k = (n + hue) mod 6 with n = 5, 3, 1 for R, G, B. Returns (3, H, W)."""
    k = _mod6(hue + np.array([5, 3, 1], np.float32)[:, None, None])        # (3, H, W)
    return v - c * np.clip(np.minimum(k, 4 - k), 0, 1)


def adjust_saturation(rgb, factor):
    """Scale HSV saturation S = C / V by `factor` (capped at 1), keeping hue and V.
    With hue and V fixed every channel moves along (V - x): x' = V - (V - x) S'/S."""
    v = np.maximum(np.maximum(rgb[0], rgb[1]), rgb[2])
    c = v - np.minimum(np.minimum(rgb[0], rgb[1]), rgb[2])
    ratio = np.minimum(np.float32(factor), v / np.maximum(c, np.float32(1e-6)))  # S'/S
    return v - (v - rgb) * ratio


def adjust_hue(rgb, degrees):
    """Rotate the HSV hue by `degrees`, wrapping around the colour circle."""
    hue, v, c = rgb_hue(rgb)
    return hue_to_rgb(hue + np.float32(degrees / 60), v, c)


def photometric_distort(image, rng):
    """Caffe's DistortImage on (H, W, 3) uint8 RGB; returns uint8. Each step has p 0.5."""
    x = image.transpose(2, 0, 1).astype(np.float32)                        # (3, H, W)
    if rng.random() < 0.5:                              # brightness
        x = np.clip(x + np.float32(rng.uniform(-32, 32)), 0, 255)
    contrast_first = rng.random() < 0.5
    if contrast_first:
        x = _contrast(x, rng)
    if rng.random() < 0.5:
        x = np.clip(adjust_saturation(x, rng.uniform(0.5, 1.5)), 0, 255)
    if rng.random() < 0.5:
        x = np.clip(adjust_hue(x, rng.uniform(-36, 36)), 0, 255)
    if not contrast_first:
        x = _contrast(x, rng)
    return np.ascontiguousarray(np.round(x).astype(np.uint8).transpose(1, 2, 0))


def _contrast(x, rng):
    # Caffe's AdjustContrast is a plain scale (convertTo with alpha = factor, beta = 0).
    if rng.random() < 0.5:
        x = np.clip(x * np.float32(rng.uniform(0.5, 1.5)), 0, 255)
    return x


# ----------------------------------------------------------------------------- geometry
def _iou_one_to_many(crops, boxes):
    """IoU of crops (T, 4) with boxes (G, 4) -> (T, G)."""
    lt = np.maximum(crops[:, None, :2], boxes[None, :, :2])                 # (T, G, 2)
    rb = np.minimum(crops[:, None, 2:], boxes[None, :, 2:])                 # (T, G, 2)
    inter = np.prod(np.clip(rb - lt, 0, None), -1)                          # (T, G)
    area_c = np.prod(crops[:, 2:] - crops[:, :2], -1)                       # (T,)
    area_b = np.prod(boxes[:, 2:] - boxes[:, :2], -1)                       # (G,)
    return inter / np.maximum(area_c[:, None] + area_b[None, :] - inter, 1e-12)


def snap_crops(crops, canvas_wh):
    """Crops (T, 4) snapped down to whole pixels of a (cw, ch) canvas, at least one pixel
    wide and high: the windows that are really cut out. canvas_wh None: unchanged."""
    if canvas_wh is None:
        return crops
    scale = np.array([canvas_wh[0], canvas_wh[1]] * 2, np.float64)
    px = np.floor(crops * scale)                                            # (T, 4) pixels
    px[:, 2:] = np.maximum(px[:, 2:], px[:, :2] + 1)
    return px / scale


def sample_crop(boxes, rng, canvas_wh=None):
    """Caffe's batch sampler: one crop (4,) in normalised coordinates of the image.

    boxes: (G, 4) normalised corners of the (expanded) image
    canvas_wh: (width, height) in pixels; the crops are snapped to whole pixels BEFORE the
               IoU test, so the window actually cut out meets the constraint
    Each constrained sampler draws CROP_TRIALS crops at once and keeps its first success.
    """
    found = [np.array([0.0, 0.0, 1.0, 1.0])]           # the "whole image" sampler
    for min_iou in CROP_MIN_IOUS + (None,):
        side = rng.uniform(0.3, 1.0, CROP_TRIALS)
        aspect = np.clip(rng.uniform(0.5, 2.0, CROP_TRIALS), side ** 2, 1 / side ** 2)
        w = np.minimum(side * np.sqrt(aspect), 1.0)     # <= 1 but for rounding
        h = np.minimum(side / np.sqrt(aspect), 1.0)
        x0, y0 = rng.random(CROP_TRIALS) * (1 - w), rng.random(CROP_TRIALS) * (1 - h)
        crops = snap_crops(np.stack([x0, y0, x0 + w, y0 + h], 1), canvas_wh)  # (T, 4)
        if min_iou is None:                             # no constraint: the first trial
            found.append(crops[0])
            continue
        hits = np.flatnonzero(crop_satisfies(crops, boxes, min_iou))
        if len(hits):
            found.append(crops[hits[0]])
    return found[rng.integers(len(found))]


def crop_satisfies(crops, boxes, min_iou):
    """(T,) bool: crops (T, 4) meeting "min IoU" against boxes (G, 4).

    Caffe's rule: ANY box with IoU >= min_iou satisfies it (no boxes: never). Our guard: the
    crop must also hold at least one box centre, or the image would lose every object.
    """
    if len(boxes) == 0:
        return np.zeros(len(crops), bool)
    ok = (_iou_one_to_many(crops, boxes) >= min_iou).any(1)                 # (T,)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2                             # (G, 2)
    inside = ((centres[None] > crops[:, None, :2]) &
              (centres[None] < crops[:, None, 2:])).all(-1).any(1)         # (T,)
    return ok & inside


def crop_boxes(boxes, labels, crop):
    """Boxes (G, 4) whose centre lies in crop (4,), clipped and renormalised to the crop;
    degenerate boxes (zero width or height after clipping) dropped."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2                             # (G, 2)
    keep = ((centres > crop[:2]) & (centres < crop[2:])).all(1)
    wh = crop[2:] - crop[:2]
    b = (boxes[keep] - np.tile(crop[:2], 2)) / np.tile(wh, 2)               # (G', 4)
    b = np.clip(b, 0.0, 1.0)
    labels = labels[keep]
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[ok], labels[ok]


def _render_window(image, canvas_hw, offset, window, fill):
    """Crop `window` (x0, y0, x1, y1 pixels of the canvas) from a virtual canvas of size
    canvas_hw filled with `fill`, with `image` pasted at offset (left, top)."""
    x0, y0, x1, y1 = window
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    out[...] = fill
    h, w = image.shape[:2]
    left, top = offset
    # Intersection of the window with the pasted image, in canvas pixels.
    ix0, iy0 = max(x0, left), max(y0, top)
    ix1, iy1 = min(x1, left + w), min(y1, top + h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0 - top:iy1 - top,
                                                          ix0 - left:ix1 - left]
    return out


class SSDAugmentation:
    """The SSD training transform (module docstring).

    size:   output side S
    mean:   RGB 0..255 pixel mean, the expand fill (pixel_mean(config.preprocess))
    call:   (image (H, W, 3) uint8 RGB, boxes (G, 4) normalised corners, labels (G,), rng)
            -> (image (S, S, 3) float32 RGB 0..255, boxes (G', 4) float32 in [0, 1],
                labels (G',) int64)
    """

    def __init__(self, size, mean, photometric=True, expand=True, crop=True, flip=True,
                 max_expand=4.0):
        self.size = size
        self.mean = np.asarray(mean, np.float64)
        self.fill = np.round(self.mean).clip(0, 255).astype(np.uint8)
        self.photometric, self.expand, self.crop, self.flip = photometric, expand, crop, flip
        self.max_expand = max_expand

    def __call__(self, image, boxes, labels, rng):
        image = np.ascontiguousarray(image)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)                # (G, 4)
        labels = np.asarray(labels, np.int64)
        if self.photometric:
            image = photometric_distort(image, rng)
        h, w = image.shape[:2]

        # Expand: a virtual canvas (ch, cw) with the image at (left, top).
        ch, cw, left, top = h, w, 0, 0
        if self.expand and rng.random() < 0.5:
            ratio = rng.uniform(1.0, self.max_expand)
            ch, cw = int(h * ratio), int(w * ratio)
            left, top = int(rng.uniform(0, cw - w)), int(rng.uniform(0, ch - h))
            scale = np.array([w, h, w, h]) / np.array([cw, ch, cw, ch])
            boxes = boxes * scale + np.array([left, top, left, top]) / np.array([cw, ch, cw, ch])

        # Crop, snapped to whole canvas pixels (at least one pixel).
        window = (0, 0, cw, ch)
        if self.crop:
            crop = sample_crop(boxes, rng, (cw, ch))                        # pixel-aligned
            window = tuple(int(v) for v in np.round(crop * np.array([cw, ch, cw, ch])))
            boxes, labels = crop_boxes(boxes, labels, crop)
        image = _render_window(image, (ch, cw), (left, top), window, self.fill)

        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)

        image = resize(np.ascontiguousarray(image), self.size).astype(np.float32)
        boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32).reshape(-1, 4)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return image, boxes[ok], labels[ok]
