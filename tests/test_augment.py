"""SSD augmentation: geometry keeps boxes on their objects, photometric math, preprocessing."""
import colorsys

import numpy as np
import pytest

from minissd.config import CAFFE_PREPROCESS, TORCHVISION_PREPROCESS
from minissd.data.augment import (Resize, SSDAugmentation, adjust_hue, adjust_saturation,
                                  crop_boxes, crop_satisfies, pixel_mean, preprocess,
                                  sample_crop, snap_crops)
from minissd.boxes import iou

COLOURS = {1: (250, 0, 0), 2: (0, 250, 0), 3: (0, 0, 250)}
BACKGROUND = (128, 128, 128)


def _scene():
    """A 120x90 grey image with three solid rectangles; boxes in the reader's convention."""
    image = np.zeros((90, 120, 3), np.uint8)
    image[...] = BACKGROUND
    pixel_boxes = {1: (10, 10, 50, 40), 2: (60, 5, 110, 80), 3: (15, 55, 45, 85)}
    boxes, labels = [], []
    for label, (x0, y0, x1, y1) in pixel_boxes.items():
        image[y0:y1, x0:x1] = COLOURS[label]
        boxes.append((x0 / 120, y0 / 90, x1 / 120, y1 / 90))
        labels.append(label)
    return image, np.array(boxes, np.float32), np.array(labels, np.int64)


def test_geometric_augmentation_keeps_each_box_on_its_object():
    image, boxes, labels = _scene()
    aug = SSDAugmentation(64, mean=(0, 0, 0), photometric=False)
    checked = 0
    for seed in range(300):
        out, b, l = aug(image, boxes, labels, np.random.default_rng(seed))
        assert out.shape == (64, 64, 3) and out.dtype == np.float32
        for box, label in zip(b * 64, l):
            if min(box[2] - box[0], box[3] - box[1]) < 6:
                continue                        # too small to sample a clean centre
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            centre = out[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3)     # (9, 3)
            np.testing.assert_allclose(centre, np.broadcast_to(COLOURS[label], (9, 3)),
                                       atol=2, err_msg=f"seed {seed} label {label}")
            checked += 1
    assert checked > 300


def test_expand_fills_with_the_mean_around_the_image():
    image = np.full((20, 30, 3), 200, np.uint8)
    whole = np.array([[0, 0, 1, 1]], np.float32)
    aug = SSDAugmentation(60, mean=(10, 20, 30), photometric=False, crop=False, flip=False)
    expanded = 0
    for seed in range(20):
        out, b, l = aug(image, whole, np.array([1]), np.random.default_rng(seed))
        x0, y0, x1, y1 = b[0] * 60
        inside = out[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2]
        assert inside.size and np.abs(inside - 200).max() < 1
        mask = np.ones((60, 60), bool)
        mask[max(int(y0) - 2, 0):int(y1) + 3, max(int(x0) - 2, 0):int(x1) + 3] = False
        if mask.any():
            expanded += 1
            np.testing.assert_allclose(out[mask], np.broadcast_to((10, 20, 30),
                                                                  out[mask].shape), atol=1)
    assert expanded >= 5                        # p 0.5 over 20 seeds


def test_full_augmentation_boxes_valid_and_seeded():
    image, boxes, labels = _scene()
    aug = SSDAugmentation(48, pixel_mean(CAFFE_PREPROCESS))
    for seed in range(100):
        out, b, l = aug(image, boxes, labels, np.random.default_rng(seed))
        assert out.shape == (48, 48, 3) and out.dtype == np.float32
        assert 0 <= out.min() and out.max() <= 255
        assert b.dtype == np.float32 and b.shape == (len(l), 4) and l.dtype == np.int64
        assert ((b >= 0) & (b <= 1)).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
    a = aug(image, boxes, labels, np.random.default_rng(7))
    c = aug(image, boxes, labels, np.random.default_rng(7))
    d = aug(image, boxes, labels, np.random.default_rng(8))
    for x, y in zip(a, c):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], d[0])


def test_no_boxes_is_fine():
    image, _, _ = _scene()
    aug = SSDAugmentation(32, (0, 0, 0))
    for seed in range(20):
        out, b, l = aug(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                        np.random.default_rng(seed))
        assert out.shape == (32, 32, 3) and b.shape == (0, 4) and l.shape == (0,)


def test_crop_constraint_is_any_box_as_caffe():
    boxes = np.array([[0.0, 0.0, 0.5, 0.5],         # IoU 0.5 with crop 0 below
                      [0.6, 0.6, 1.0, 1.0]])        # IoU 0 with crop 0
    crops = np.array([[0.0, 0.0, 0.5, 1.0],         # ANY box >= 0.5: yes (box 0)
                      [0.0, 0.0, 1.0, 1.0],         # IoUs 0.25, 0.16: no
                      [0.7, 0.0, 1.0, 0.3]])        # IoU 0 with both: no
    np.testing.assert_array_equal(crop_satisfies(crops, boxes, 0.5), [True, False, False])
    np.testing.assert_array_equal(crop_satisfies(crops, boxes, 0.1), [True, True, False])
    # A crop overlapping enough but holding no box centre is refused (the centre guard).
    np.testing.assert_array_equal(crop_satisfies(np.array([[0.3, 0.3, 0.6, 0.6]]),
                                                 boxes[:1], 0.1), [False])
    assert not crop_satisfies(crops, np.zeros((0, 4)), 0.1).any()


def test_crop_sampler_shapes():
    boxes = np.array([[0.40, 0.40, 0.55, 0.60]])
    for seed in range(100):
        crop = sample_crop(boxes, np.random.default_rng(seed))
        w, h = crop[2] - crop[0], crop[3] - crop[1]
        assert 0 <= crop[0] and crop[2] <= 1 + 1e-9 and 0 <= crop[1] and crop[3] <= 1 + 1e-9
        assert w >= 0.09 - 1e-9 and h >= 0.09 - 1e-9 and 0.25 - 1e-9 <= w / h <= 4 + 1e-9


def test_crops_are_tested_as_cut_whole_pixels():
    """On a coarse canvas the crop that is cut is the pixel-snapped one, so that is the crop
    the IoU constraint is checked on (an unsnapped crop could pass and its window fail)."""
    np.testing.assert_allclose(snap_crops(np.array([[0.05, 0.34, 0.26, 0.35]]), (10, 5)),
                               [[0.0, 0.2, 0.2, 0.4]])        # floor; at least one pixel high
    boxes = np.array([[0.40, 0.40, 0.55, 0.60]])
    for seed in range(100):
        crop = sample_crop(boxes, np.random.default_rng(seed), (9, 7))
        px = crop * np.array([9, 7, 9, 7])
        np.testing.assert_allclose(px, np.round(px), atol=1e-9)
        assert px[2] > px[0] and px[3] > px[1]


def test_crop_boxes_keeps_centres_inside_and_clips():
    boxes = np.array([[0.0, 0.0, 0.4, 0.4],        # centre (0.2, 0.2): outside the crop
                      [0.2, 0.2, 0.8, 0.6],        # centre (0.5, 0.4): inside, clipped
                      [0.6, 0.6, 0.7, 0.7]])       # inside, unchanged apart from scaling
    crop = np.array([0.3, 0.3, 0.8, 0.8])
    b, l = crop_boxes(boxes, np.array([1, 2, 3]), crop)
    np.testing.assert_array_equal(l, [2, 3])
    np.testing.assert_allclose(b, [[0, 0, 1.0, 0.6], [0.6, 0.6, 0.8, 0.8]], atol=1e-12)


def test_hue_and_saturation_match_colorsys():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 255, (3, 1, 50)).astype(np.float32)
    hue = adjust_hue(rgb, 50.0)
    sat = adjust_saturation(rgb, 1.4)
    for j in range(50):
        h, s, v = colorsys.rgb_to_hsv(*(rgb[:, 0, j] / 255.0))
        np.testing.assert_allclose(hue[:, 0, j] / 255, colorsys.hsv_to_rgb((h + 50 / 360) % 1,
                                                                        s, v), atol=1e-5)
        np.testing.assert_allclose(sat[:, 0, j] / 255, colorsys.hsv_to_rgb(h, min(1, s * 1.4),
                                                                        v), atol=1e-5)
    np.testing.assert_allclose(adjust_hue(rgb, 360.0), rgb, atol=1e-3)


def test_preprocess_caffe_and_torchvision():
    rgb = np.array([[[[123, 117, 104], [10, 20, 30]]]], np.float32)              # (1, 1, 2, 3)
    out = preprocess(rgb, CAFFE_PREPROCESS)
    assert out.shape == (1, 3, 1, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], 0)
    np.testing.assert_allclose(out[0, :, 0, 1], [30 - 104, 20 - 117, 10 - 123])  # BGR
    out = preprocess(rgb, TORCHVISION_PREPROCESS)
    m, s = np.array(TORCHVISION_PREPROCESS["mean"]), np.array(TORCHVISION_PREPROCESS["std"])
    np.testing.assert_allclose(out[0, :, 0, 1], (np.array([10, 20, 30]) / 255 - m) / s,
                               rtol=1e-5)
    assert pixel_mean(CAFFE_PREPROCESS) == (123.0, 117.0, 104.0)
    np.testing.assert_allclose(pixel_mean(TORCHVISION_PREPROCESS), m * 255)
    with pytest.raises(ValueError, match="channel_order"):
        preprocess(rgb, dict(CAFFE_PREPROCESS, channel_order="RBG"))


def test_resize_keeps_boxes():
    image, boxes, labels = _scene()
    out, b, l = Resize(32)(image, boxes, labels)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(b, boxes)
    assert iou(b, boxes).diagonal().min() == 1
