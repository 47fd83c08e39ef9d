"""OpenCV's cv2.resize(image, (S, S), interpolation=INTER_LINEAR) on uint8 images, in NumPy.

Caffe SSD's data layer and OpenCV's cv2.dnn.blobFromImage resize with it, so a network
trained in Caffe saw images made this way. Pillow's bilinear (minissd's default rule) widens
its filter when it shrinks; OpenCV's does not, and works in fixed point. The rule, per axis
(OpenCV's resize.cpp, resizeGeneric with HResizeLinear / VResizeLinear for 8-bit images):

    src = (o + 0.5) * (in / out) - 0.5 (float32), i0 = floor(src), f = src - i0
    i0 < 0: i0 = 0, f = 0;   i0 >= in - 1: i0 = in - 1, f = 0
    weights (1 - f, f) scaled by 2048 and rounded to integers (they sum to 2048)

Rows are first blended along x in integers (up to 255 * 2048), then along y as OpenCV's 8-bit
vertical pass does it: ((w0 * (r0 >> 4)) >> 16) + ((w1 * (r1 >> 4)) >> 16) + 2) >> 2. When
the image shrinks along both axes (any photo larger than the network input) the result equals
cv2.resize bit for bit; when it grows, OpenCV's vectorised code rounds some pixels differently
and the two differ by at most 1 grey level (tests/test_caffe_opencv.py checks both).
"""
from __future__ import annotations

import numpy as np

_BITS = 11                    # OpenCV's INTER_RESIZE_COEF_BITS
_ONE = 1 << _BITS


def _taps(n_in, n_out):
    """(i0, i1, w0, w1) for one axis: source indices and integer weights summing to 2048."""
    scale = 1.0 / (n_out / n_in)          # OpenCV: 1 / inv_scale, in double
    src = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(src).astype(np.int64)
    f = src - i0.astype(np.float32)
    low, high = i0 < 0, i0 >= n_in - 1
    f[low | high] = 0
    i0 = np.where(low, 0, np.where(high, n_in - 1, i0))
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.rint((f * np.float32(_ONE)).astype(np.float32)).astype(np.int64)
    w0 = np.rint(((np.float32(1) - f) * np.float32(_ONE)).astype(np.float32)).astype(np.int64)
    return i0, i1, w0, w1


def resize_linear_opencv(image, size):
    """(H, W, C) uint8 -> (size, size, C) uint8, as cv2.resize(..., INTER_LINEAR)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    x0, x1, a0, a1 = _taps(w, size)
    y0, y1, b0, b1 = _taps(h, size)
    img = image.astype(np.int64)
    rows = img[:, x0] * a0[None, :, None] + img[:, x1] * a1[None, :, None]    # (H, S, C)
    r0, r1 = rows[y0] >> 4, rows[y1] >> 4                                      # (S, S, C)
    out = (((b0[:, None, None] * r0) >> 16) + ((b1[:, None, None] * r1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)
