"""Bodies that are not VGG (SSDConfig.body, minissd.model.BodySSD): plan shapes, forward,
full-network gradients, state dicts, config round trips, training, batch norm modes, errors."""
import dataclasses
import json

import numpy as np
import pytest

from body_configs import res10_face, resnetish
from minissd.model import BodySSD
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


def _float64_model(cfg, train=True):
    model = SSD(cfg, rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    # non-trivial scales and shifts, so that a wrong gradient of one of them shows
    for name, w in model.params():
        if name.endswith(("_scale.weight", "_scale.bias", "b2_bn1.weight", "b2_bn1.bias")):
            w[...] = rng.uniform(0.5, 1.5, w.shape) * rng.choice([-1, 1], w.shape)
    for name, b in model.buffers():
        b[...] = rng.uniform(0.5, 1.5, b.shape)            # running stats used in eval mode
    return model.train(train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_full_network_gradients(train):
    """Model forward + backward against central differences (float64) on the image and on a
    few coordinates of every kind of parameter: batch norm (own affine and Caffe's, in
    training mode through the batch statistics), Scale, a bias-free conv, the 7x7/2 conv, the
    projection of the residual block, Normalize, the heads."""
    cfg = resnetish()
    model = _float64_model(cfg, train)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 64, 64))
    loc, conf = model.forward(x)
    dloc, dconf = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    dx = model.backward(dloc, dconf)
    params = dict(model.params())
    names = ["data_scale.weight", "data_scale.bias", "conv1.weight", "conv1.bias",
             "conv1_scale.weight", "b1_conv1.weight", "b1_conv2.weight", "b1_scale.bias",
             "b2_bn1.weight", "b2_bn1.bias", "norm.weight", "b2_conv1.weight",
             "b2_conv2.weight", "b2_expand.weight", "conv6.weight", "loc.0.weight",
             "conf.1.bias", "conf.2.weight"]
    grads = model.grads
    assert set(grads) == set(params)
    if train:
        # a batch norm in training mode right after conv1 removes any per-channel shift: the
        # gradient of conv1's bias is 0 (up to rounding), which a relative error cannot check
        names.remove("conv1.bias")
        assert np.abs(grads["conv1.bias"]).max() < 1e-9 * np.abs(grads["conv1.weight"]).max()
    errors = check_gradients(lambda: model.forward(x), {"x": x, **{n: params[n] for n in names}},
                             {"x": dx, **grads}, dout=(dloc, dconf), num_checks=4,
                             rng=np.random.default_rng(3))
    assert max(errors.values()) < 1e-6, errors


def test_need_dx_false_gives_the_same_parameter_gradients():
    cfg = resnetish()
    model = SSD(cfg, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 64, 64))
    loc, conf = model.forward(x)
    dloc, dconf = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    assert model.backward(dloc, dconf).shape == x.shape
    first = model.grads
    model.forward(x)
    assert model.backward(dloc, dconf, need_dx=False) is None
    for name, g in model.grads.items():
        np.testing.assert_array_equal(g, first[name], err_msg=name)


def test_config_round_trip_through_json():
    for cfg in (resnetish(), res10_face()):
        d = json.loads(json.dumps(cfg.to_dict()))
        back = SSDConfig.from_dict(d)
        assert back == cfg
        assert isinstance(back.body[0], BodyLayer) and back.body[0].inputs == ("data",)
        assert layer_plan(back) == layer_plan(cfg)
    d = resnetish().to_dict()
    d["body"][0]["colour"] = 1
    with pytest.raises(ValueError, match="data_bn.*colour"):
        SSDConfig.from_dict(d)


def test_a_training_step_lowers_the_loss():
    """minissd's training step (forward, matching, loss, backward) on a body config: a few
    Adam steps on one batch lower its loss."""
    from minissd.optim import Adam
    from minissd.training.step import forward_backward
    cfg = resnetish()
    model = SSD(cfg, rng=0)
    priors = default_boxes(cfg)
    boxes = [np.array([[0.1, 0.1, 0.5, 0.6]], np.float32),
             np.array([[0.5, 0.4, 0.9, 0.9], [0.05, 0.1, 0.3, 0.3]], np.float32)]
    labels = [np.array([1]), np.array([2, 1])]
    x = 0.1 * np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    for n, (bs, ls) in enumerate(zip(boxes, labels)):
        for (x0, y0, x1, y1), label in zip((bs * 64).astype(int), ls):
            x[n, label, y0:y1, x0:x1] += 1.0
    opt = Adam(weight_decay=0.0)
    losses = []
    for _ in range(15):
        loss, _, _ = forward_backward(model, priors, (x, boxes, labels), cfg)
        opt.step(model.params(), model.grads, 1e-2)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_batch_norm_train_and_eval():
    """Training mode: batch statistics (an image's output depends on the others) and the
    running statistics move; eval mode: the running statistics (each image on its own) and
    nothing moves."""
    cfg = resnetish()
    model = SSD(cfg, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items() if "running" in k}
    alone = model.forward(x[:1])[1]
    together = model.forward(x)[1][:1]
    assert not np.allclose(alone, together)
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(not np.array_equal(before[k], after[k]) for k in before)
    model.eval()
    alone = model.forward(x[:1])[1]
    together = model.forward(x)[1][:1]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(after[k], v) for k, v in model.state_dict().items()
               if "running" in k)


def test_res10_layout_shapes():
    """OpenCV's res10 face detector's layout: sources 38, 19, 10, 5, 5, 5 and 8892 boxes."""
    cfg = res10_face()
    assert source_sizes(cfg) == (38, 19, 10, 5, 5, 5)
    shapes = source_shapes(cfg)
    assert [s[0] for s in shapes] == [128, 256, 256, 128, 128, 128]
    assert default_boxes(cfg).shape == (8892, 4) and cfg.num_priors() == 8892
    plan = {p.name: p for p in layer_plan(cfg)}
    assert plan["conv1_h"].out_shape == (32, 150, 150)
    assert plan["conv1_pool"].out_shape == (32, 75, 75)                # Caffe rounds up
    assert plan["layer_512_1_conv2_h"].dilation == 2
    assert plan["loc.0"].out_shape == (16, 38, 38) and plan["conf.1"].out_shape == (12, 19, 19)


def _with(cfg, **changes):
    return dataclasses.replace(cfg, **changes)


def _replace_layer(cfg, name, **changes):
    body = tuple(dataclasses.replace(layer, **changes) if layer.name == name else layer
                 for layer in cfg.body)
    return _with(cfg, body=body)


@pytest.mark.parametrize("make, match", [
    (lambda c: _replace_layer(c, "pool1", kind="avgpool"),
     "'pool1': unknown kind 'avgpool'; use one of conv"),
    (lambda c: _replace_layer(c, "b1_conv1", inputs=("b2_sum",)),
     "'b1_conv1' reads 'b2_sum', which is not an earlier body layer"),
    (lambda c: _replace_layer(c, "b1_sum", inputs=("b1_conv2",)),
     "'b1_sum' \\(eltwise_sum\\) has 1 inputs.*two or more"),
    (lambda c: _with(c, sources=("norm", "nope", "conv6_relu")),
     "source 'nope' is not a body layer"),
    (lambda c: _with(c, sources=("norm", "last_relu")),
     "'conv6_relu' is read by no layer and is not a source"),
    (lambda c: _with(c, body=c.body + (BodyLayer("data", "relu", ("conv6_relu",)),)),
     "'data'.*rename it"),
    (lambda c: _with(c, body=(), sources=("a",)), "without a body"),
])
def test_config_errors_name_the_layer_and_the_fix(make, match):
    with pytest.raises(ValueError, match=match):
        make(resnetish())


@pytest.mark.parametrize("make, match", [
    (lambda c: _replace_layer(c, "b2_expand", stride=1),
     "'b2_sum' \\(eltwise_sum\\): its inputs \\('b2_conv2', 'b2_expand'\\) have shapes "
     "\\[\\(12, 8, 8\\), \\(12, 16, 16\\)\\].*1x1 conv"),
    (lambda c: _replace_layer(c, "conv6", kernel=9, padding=0),
     "'conv6' \\(conv\\): its output \\(8, 0, 0\\) from input \\(12, 8, 8\\) is empty"),
    (lambda c: _with(c, mbox=(4, 6)), "mbox has 2 entries but the body has 3 sources"),
    (lambda c: _replace_layer(c, "pool1", kernel=1, stride=2),
     "'pool1' \\(maxpool\\): on a 32x32 input Caffe would add a last window"),
])
def test_shape_errors_name_the_layer(make, match):
    with pytest.raises(ValueError, match=match):
        layer_plan(make(resnetish()))


def test_feature_maps_that_disagree_name_the_fix():
    cfg = _with(resnetish(), feature_maps=(16, 8, 5))
    with pytest.raises(ValueError, match=r"feature maps are \(16, 8, 4\).*set feature_maps"):
        SSD(cfg)


def test_vgg_plans_are_chains_with_inputs():
    """Every plan entry names what it reads: in a VGG plan the previous trunk layer, except
    L2Norm and the layer after it, which both read the ReLU before L2Norm; a head its source."""
    from minissd.config import ssd300, tiny
    for cfg in (ssd300(), tiny()):
        plan = layer_plan(cfg)
        names = ["data"] + [p.name for p in plan]
        for i, p in enumerate(plan):
            assert len(p.inputs) == 1 and p.inputs[0] in names[:i + 1], p
        l2 = next(i for i, p in enumerate(plan) if p.stage == "l2norm")
        assert plan[l2].inputs == plan[l2 + 1].inputs == (plan[l2 - 1].name,)
        src = {p.source: p.name for p in plan if p.source is not None
               and p.stage not in ("loc", "conf")}
        for p in plan:
            if p.stage in ("loc", "conf"):
                assert p.inputs == (src[p.source],)


@pytest.mark.parametrize("make", [resnetish, res10_face])
def test_plan_readers_draw_or_refuse_body_configs(make):
    """viz.draw_plan draws a body plan (every source, its boxes, the total); the memory
    estimate and the torch twin, written for the VGG plans, refuse it in one line naming it."""
    from minissd import viz
    from minissd.bench.layers import ssd_conv_shapes
    from minissd.bench.memory import step_memory
    from minissd.bench.model import build_torch_ssd
    cfg = make()
    ax = viz.draw_plan(layer_plan(cfg), title=cfg.name)
    texts = [t.get_text() for t in ax.texts]
    sources = [t for t in texts if t.startswith("source ")]
    assert len(sources) == len(cfg.sources)
    for k, (name, f, b) in enumerate(zip(cfg.sources, cfg.feature_maps, cfg.mbox)):
        assert sources[k].startswith(f"source {k}\n{name}\n{f}x{f}x")
        assert any(f"{f}x{f}x{b}\n= {f * f * b} boxes" in t for t in texts), (k, f, b)
    assert any(t.startswith(f"sum: {cfg.num_priors()} boxes") for t in texts)
    assert len(ssd_conv_shapes(cfg)) == sum(p.kind == "conv" for p in layer_plan(cfg))
    with pytest.raises(ValueError, match=f"config '{cfg.name}' has a body"):
        step_memory(cfg, 2)
    with pytest.raises(ValueError, match=f"config '{cfg.name}' has a body"):
        build_torch_ssd(cfg, torch=None)


def test_checkpoint_round_trip_and_predict(tmp_path):
    """A body model saved as a minissd checkpoint comes back as the same network (config from
    the metadata, arrays by name), and inference.predict runs it."""
    from minissd.inference import load_model, predict
    from minissd.weights import save_checkpoint
    cfg = resnetish()
    model = SSD(cfg, rng=3).eval()
    save_checkpoint(tmp_path / "body.npz", model.state_dict(), {"config": cfg.to_dict()})
    back, back_cfg, _ = load_model(str(tmp_path / "body.npz"))
    assert back_cfg == cfg and isinstance(back, BodySSD)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    for a, b in zip(back.eval().forward(x), model.forward(x)):
        np.testing.assert_array_equal(a, b)
    images = [np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)]
    dets = predict(back, back_cfg, images, default_boxes(back_cfg))
    assert len(dets) == 1
