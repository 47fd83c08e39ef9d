"""Default boxes: known answers computed by hand, counts, order, the paper formula, clipping."""
import dataclasses
import itertools
import math

import numpy as np
import pytest

from minissd.config import ssd300, ssd512, tiny
from minissd.priors import box_labels, default_boxes


def test_counts_match_the_paper():
    assert default_boxes(ssd300()).shape == (8732, 4)
    assert default_boxes(ssd512()).shape == (24564, 4)
    cfg = tiny()
    assert default_boxes(cfg).shape == (cfg.num_priors(), 4)
    assert default_boxes(ssd300()).dtype == np.float32


def test_first_location_of_ssd300_by_hand():
    p = default_boxes(ssd300())
    # 38x38 map, step 8: f_k = 300 / 8 = 37.5, first centre (0 + 0.5) / 37.5 = 1/75.
    c = 1 / 75
    s = 30 / 300                              # min size 30
    s_prime = math.sqrt(30 * 60) / 300        # sqrt(min * max)
    r = math.sqrt(2)
    expected = np.array([[c, c, s, s],
                         [c, c, s_prime, s_prime],
                         [c, c, s * r, s / r],
                         [c, c, s / r, s * r]])
    np.testing.assert_allclose(p[:4], expected, rtol=1e-6)
    # The next location is column j = 1 of row i = 0: cx moves, cy does not.
    np.testing.assert_allclose(p[4, :2], [1.5 / 37.5, c], rtol=1e-6)
    # Row i = 1 starts after the 38 locations of row 0.
    np.testing.assert_allclose(p[38 * 4, :2], [c, 1.5 / 37.5], rtol=1e-6)


def test_last_map_of_ssd300_by_hand():
    p = default_boxes(ssd300())
    last = p[8732 - 4:]                       # the 1x1 map: 4 boxes at the image centre
    s = 264 / 300
    np.testing.assert_allclose(last[0], [0.5, 0.5, s, s], rtol=1e-6)
    s_prime = math.sqrt(264 * 315) / 300
    np.testing.assert_allclose(last[1], [0.5, 0.5, s_prime, s_prime], rtol=1e-6)
    # s * sqrt(2) = 1.24 is clipped to 1 (ssd.pytorch clamps cx, cy, w, h).
    np.testing.assert_allclose(last[2], [0.5, 0.5, 1.0, s / math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(last[3], [0.5, 0.5, s / math.sqrt(2), 1.0], rtol=1e-6)


def _loop_reference(cfg):
    """ssd.pytorch's PriorBox written as plain loops: map, row, column, box."""
    out = []
    mins, maxs = cfg.scales()
    for k, f in enumerate(cfg.feature_maps):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = cfg.image_size / cfg.steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s = mins[k] / cfg.image_size
            out.append([cx, cy, s, s])
            sp = math.sqrt(s * maxs[k] / cfg.image_size)
            out.append([cx, cy, sp, sp])
            for a in cfg.aspect_ratios[k]:
                out.append([cx, cy, s * math.sqrt(a), s / math.sqrt(a)])
                out.append([cx, cy, s / math.sqrt(a), s * math.sqrt(a)])
    out = np.array(out)
    return np.clip(out, 0, 1) if cfg.clip else out


@pytest.mark.parametrize("make", [ssd300, tiny])
def test_matches_a_plain_loop(make):
    cfg = make()
    np.testing.assert_allclose(default_boxes(cfg), _loop_reference(cfg), rtol=1e-6, atol=1e-7)


def test_paper_formula_option():
    cfg = dataclasses.replace(ssd300(), min_sizes=(), max_sizes=())
    p = default_boxes(cfg)
    assert p.shape == (8732, 4)
    # s_k = 0.2 + 0.7 (k - 1) / 5: first map 0.2, its extra square box sqrt(0.2 * 0.34).
    np.testing.assert_allclose(p[0, 2:], [0.2, 0.2], rtol=1e-6)
    np.testing.assert_allclose(p[1, 2:], [math.sqrt(0.2 * 0.34)] * 2, rtol=1e-6)
    # Second map (19x19) starts after 38 * 38 * 4 boxes, with s_2 = 0.34.
    np.testing.assert_allclose(p[38 * 38 * 4, 2:], [0.34, 0.34], rtol=1e-6)
    np.testing.assert_allclose(p, _loop_reference(cfg), rtol=1e-6, atol=1e-7)


def test_clip_option():
    clipped = default_boxes(ssd300())
    assert clipped.min() >= 0 and clipped.max() <= 1
    raw = default_boxes(dataclasses.replace(ssd300(), clip=False))
    assert raw.max() > 1                      # the wide boxes of the last maps
    np.testing.assert_allclose(np.clip(raw, 0, 1), clipped)


def test_mbox_must_agree_with_ratios():
    cfg = dataclasses.replace(ssd300(), mbox=(4, 6, 6, 6, 6, 4))
    with pytest.raises(ValueError, match=r"mbox\[4\] = 6"):
        default_boxes(cfg)
    cfg = dataclasses.replace(ssd300(), steps=(8, 16, 32))
    with pytest.raises(ValueError, match="steps"):
        default_boxes(cfg)


@pytest.mark.parametrize("make", [ssd300, ssd512, tiny])
def test_box_labels_name_each_boxs_scale_and_ratio(make):
    cfg = dataclasses.replace(make(), clip=False)        # unclipped: w and h as designed
    boxes, labels = default_boxes(cfg), box_labels(cfg)
    assert len(labels) == len(boxes)
    for (_, _, w, h), label in zip(boxes, labels):
        scale, ratio = label.split(", ")
        kind, value = scale.split("=")
        num, _, den = ratio.partition("/")
        assert math.isclose(w / h, float(num) / float(den or 1), rel_tol=1e-4)
        # every box of ratio a has area s_k^2; the extra square has side s'_k
        assert abs(math.sqrt(w * h) - float(value)) <= 0.005 + 1e-6
        assert kind in ("s", "s'") and (kind == "s'") <= (ratio == "1")
    if make is ssd300:
        assert labels[:4] == ["s=0.10, 1", "s'=0.14, 1", "s=0.10, 2", "s=0.10, 1/2"]
