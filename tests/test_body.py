"""Bodies that are not VGG (SSDConfig.body, minissd.body.BodySSD): plan shapes, forward,
full-network gradients, state dicts, config round trips, training, batch norm modes, errors."""
import dataclasses
import json

import numpy as np
import pytest

from body_configs import res10_face, resnetish
from minissd.body import BodySSD
from minissd.config import BodyLayer, SSDConfig
from minissd.gradcheck import check_gradients
from minissd.model import SSD
from minissd.plan import format_plan, layer_plan, source_shapes, source_sizes
from minissd.priors import default_boxes


def test_plan_shapes_inputs_and_arrays():
    cfg = resnetish()
    plan = {p.name: p for p in layer_plan(cfg)}
    assert plan["conv1"].out_shape == (8, 32, 32)            # 7x7/2 pad 3: 64 -> 32
    assert plan["pool1"].out_shape == (8, 16, 16)            # 3x3/2 ceil: 15.5 -> 16
    assert plan["b2_conv2"].out_shape == (12, 8, 8)          # dilation 2, pad 2 keeps 8
    assert plan["b2_sum"].inputs == ("b2_conv2", "b2_expand")
    assert plan["b1_sum"].inputs == ("b1_conv2", "pool1")
    assert plan["data_bn"].inputs == ("data",)
    assert plan["norm"].source == 0 and plan["norm"].eps == 1e-10
    assert plan["loc.0"].inputs == ("norm",) and plan["conf.1"].inputs == ("last_relu",)
    assert plan["b1_conv1"].params == (("weight", (8, 8, 3, 3)),)                 # no bias
    assert plan["conv1"].params == (("weight", (8, 3, 7, 7)), ("bias", (8,)))
    assert plan["conv1_bn"].params == () and plan["conv1_bn"].buffers == (
        ("running_mean", (8,)), ("running_var", (8,)))
    assert plan["b2_bn1"].params == (("weight", (8,)), ("bias", (8,)))           # affine
    assert plan["norm"].params == (("weight", (8,)),)
    assert {p.stage for p in plan.values()} == {"body", "loc", "conf"}
    assert source_sizes(cfg) == (16, 8, 4)
    assert source_shapes(dataclasses.replace(cfg, mbox=(), feature_maps=())) == (
        (8, 16, 16), (12, 8, 8), (8, 4, 4))                  # sizes need no mbox
    table = format_plan(layer_plan(cfg))
    assert "b2_sum" in table and "<- b2_conv2, b2_expand" in table and "b1_relu" in table


def test_forward_shapes_match_default_boxes():
    cfg = resnetish()
    model = SSD(cfg)
    assert isinstance(model, BodySSD) and isinstance(model, SSD)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    loc, conf = model.forward(x, keep_cache=False)
    p = default_boxes(cfg).shape[0]
    assert p == cfg.num_priors() == 16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 4
    assert loc.shape == (2, p, 4) and conf.shape == (2, p, 3)
    assert loc.dtype == conf.dtype == np.float32 and np.isfinite(loc).all()


def test_state_dict_names_are_the_plans_and_round_trip():
    cfg = resnetish()
    model = SSD(cfg, rng=0)
    plan = layer_plan(cfg)
    want = ([f"{p.name}.{n}" for p in plan for n, _ in p.params]
            + [f"{p.name}.{n}" for p in plan for n, _ in p.buffers])
    state = model.state_dict()
    assert list(state) == want
    assert {k: v.shape for k, v in state.items()} == {
        f"{p.name}.{n}": s for p in plan for n, s in p.params + p.buffers}
    other = SSD(cfg, rng=1).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert not np.array_equal(other.forward(x)[0], model.eval().forward(x)[0])
    other.load_state_dict(state)
    for a, b in zip(other.forward(x), model.forward(x)):
        np.testing.assert_array_equal(a, b)
