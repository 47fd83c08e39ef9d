"""Configs round-trip through JSON; the box helpers on hand-computed cases."""
import json

import numpy as np
import pytest

from minissd import boxes, config


@pytest.mark.parametrize("make", [config.ssd300, config.ssd512, config.tiny])
def test_config_json_round_trip(make):
    c = make()
    assert config.SSDConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_config_counts():
    assert config.ssd300().num_priors() == 8732
    assert config.ssd512().num_priors() == 24564
    assert config.ssd300().num_classes == 21
    assert config.get_config("tiny", class_names=["a", "b"]).num_classes == 3
    with pytest.raises(ValueError, match="unknown config"):
        config.get_config("ssd999")


def test_paper_scales():
    c = config.ssd300()
    c.min_sizes, c.max_sizes = (), ()
    mins, maxs = c.scales()
    np.testing.assert_allclose(np.array(mins) / 300, [0.2, 0.34, 0.48, 0.62, 0.76, 0.9])
    np.testing.assert_allclose(np.array(maxs) / 300, [0.34, 0.48, 0.62, 0.76, 0.9, 1.0])


def test_corner_center_round_trip(xp):
    b = xp.asarray([[0.1, 0.2, 0.5, 0.6]], dtype=xp.float32)
    c = boxes.corner_to_center(b)
    np.testing.assert_allclose(np.asarray(c.tolist()), [[0.3, 0.4, 0.4, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(boxes.center_to_corner(c).tolist()), b.tolist(),
                               rtol=1e-6)


def test_iou_by_hand(xp):
    a = xp.asarray([[0.0, 0.0, 2.0, 2.0]])
    b = xp.asarray([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5, 5, 6, 6], [1, 1, 1, 1]])
    got = np.asarray(boxes.iou(a, b).tolist())
    # overlap 1x1 = 1, union 4 + 4 - 1 = 7; identical; disjoint; zero-area -> 0 not NaN
    np.testing.assert_allclose(got, [[1 / 7, 1.0, 0.0, 0.0]])
    z = xp.asarray([[1.0, 1.0, 1.0, 1.0]])
    assert float(boxes.iou(z, z)[0, 0]) == 0.0
