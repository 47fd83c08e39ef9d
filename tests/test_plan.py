"""minissd.plan: the one description of the network, and every reader of it agreeing with it."""
import dataclasses

import numpy as np
import pytest

from minissd.bench.layers import ssd_conv_shapes
from minissd.config import SSDConfig, ssd300, ssd512, tiny
from minissd.layers import Container, Conv2d, Sequential
from minissd.model import SSD
from minissd.plan import STAGES, format_plan, layer_plan, source_shapes, source_sizes


def micro(batch_norm=False):
    """SSD300's topology at 30 pixels (ceil-mode pool, L2Norm, dilated conv6, 1x1 conv7)."""
    return SSDConfig(
        name="micro", image_size=30, class_names=("a", "b"),
        base=(3, "M", 4, "C", 5, "M", 6), l2norm_conv=3, fc=(7, 6), fc_dilation=2,
        extras=((4, 1, 1, 0), (5, 3, 2, 1), (3, 1, 1, 0), (4, 2, 1, 0)),
        batch_norm=batch_norm, mbox=(4, 6, 4, 4), feature_maps=(8, 4, 2, 1),
        steps=(4, 8, 15, 30), min_sizes=(3, 8, 15, 22), max_sizes=(8, 15, 22, 30),
        aspect_ratios=((2,), (2, 3), (2,), (2,)))


CONFIGS = [ssd300(), ssd512(), tiny(), micro(), micro(batch_norm=True)]
IDS = ["ssd300", "ssd512", "tiny", "micro", "micro-bn"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_model_parameters_are_the_plans(cfg):
    """SSD(config) has exactly the plan's parameters and buffers: names, order and shapes.
    (The plan is in forward order, where L2Norm sits inside the base; the state dict is
    ssd.pytorch's, stage by stage: vgg, L2Norm, extras, loc, conf.)"""
    plan = sorted(layer_plan(cfg), key=lambda p: STAGES.index(p.stage))     # stable
    model = SSD(cfg)
    want = [(f"{p.name}.{n}", shape) for p in plan for n, shape in p.params]
    assert [(n, tuple(a.shape)) for n, a in model.params()] == want
    want_buffers = [(f"{p.name}.{n}", shape) for p in plan for n, shape in p.buffers]
    assert [(n, tuple(a.shape)) for n, a in model.buffers()] == want_buffers
    assert sum(p.num_params for p in plan) == model.num_parameters()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_sources_from_the_plan_match_the_config_and_the_forward(cfg):
    assert source_sizes(cfg) == tuple(cfg.feature_maps)
    if cfg.image_size > 128:
        return                                          # the forward below is for small nets
    model = SSD(cfg, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, cfg.image_size, cfg.image_size))
    loc, conf = model.forward(x)
    shapes = source_shapes(cfg)
    assert loc.shape == (2, sum(h * w * k for (_, h, w), k in zip(shapes, cfg.mbox)), 4)
    assert conf.shape[:2] == loc.shape[:2]
    # every head conv's input shape is its source's shape, as the plan says
    for p in layer_plan(cfg):
        if p.stage in ("loc", "conf"):
            assert p.in_shape == shapes[p.source]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_bench_conv_shapes_are_the_models_convs(cfg):
    """The benchmark's conv list is the model's Conv2d layers (channels, kernel, stride...)."""
    convs = [layer for layer in SSD(cfg).leaf_layers() if isinstance(layer, Conv2d)]
    got = sorted((c, f, k, s, p, d) for _, c, _, _, f, k, s, p, d in ssd_conv_shapes(cfg))
    want = sorted((layer.in_ch, layer.out_ch, layer.kernel, layer.stride, layer.padding,
                   layer.dilation) for layer in convs)
    assert got == want


def test_ssd300_plan_known_answers():
    plan = {p.name: p for p in layer_plan(ssd300())}
    assert plan["vgg.16"].kind == "maxpool" and plan["vgg.16"].ceil_mode
    assert plan["vgg.16"].out_shape == (256, 38, 38)                    # 75 -> 38
    assert plan["vgg.31"].dilation == 6 and plan["vgg.31"].padding == 6   # conv6
    assert plan["L2Norm"].in_shape == (512, 38, 38) and plan["L2Norm"].source == 0
    assert plan["L2Norm"].init_scale == 20.0
    assert [plan[f"extras.{j}"].source for j in range(8)] == [None, 2, None, 3, None, 4, None, 5]
    assert plan["conf.0"].init_scale == pytest.approx(0.1) and plan["loc.0"].init_scale == 1.0
    assert source_shapes(ssd300()) == ((512, 38, 38), (1024, 19, 19), (512, 10, 10),
                                       (256, 5, 5), (256, 3, 3), (256, 1, 1))
    table = format_plan(layer_plan(ssd300()))
    assert "conv4_3" in table and "pool3 (ceil)" in table and "conv 512->1024 3x3 p6 d6" in table


def test_batch_norm_plan_names_units():
    plan = layer_plan(micro(batch_norm=True))
    kinds = [(p.name, p.kind) for p in plan if p.stage == "extras"][:3]
    assert kinds == [("extras.0.0", "conv"), ("extras.0.1", "batchnorm"), ("extras.0.2", "relu")]
    assert [p.kind for p in plan[:3]] == ["conv", "batchnorm", "relu"]


@pytest.mark.parametrize("change, field", [
    (dict(l2norm_conv=9), "l2norm_conv"),
    (dict(extras=((4, 1, 1, 0),)), "extras must come in pairs"),
    (dict(mbox=(4, 6, 4)), "mbox"),
    (dict(extras=((4, 1, 1, 0), (5, 3, 2, 1), (3, 1, 1, 0), (4, 5, 1, 0))), "extras[3]"),
])
def test_bad_configs_name_the_field(change, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        layer_plan(dataclasses.replace(micro(), **change))


def test_one_spelling_of_parameters_across_layer_container_and_model():
    """Layer, Sequential, MultiBoxHeads and SSD: params()/buffers() -> [(name, array)],
    grads -> {name: array}, leaf_layers() -> [leaf]."""
    model = SSD(micro(batch_norm=True), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, 30, 30))
    loc, conf = model.forward(x)
    model.backward(np.ones_like(loc), np.ones_like(conf))
    conv = model.vgg[0]
    for thing in (conv, model.vgg, model.extras, model.heads, model):
        pairs = thing.params()
        assert isinstance(pairs, list) and all(isinstance(n, str) for n, _ in pairs)
        assert isinstance(thing.buffers(), list)
        assert set(thing.grads) == {n for n, _ in pairs}
        assert all(leaf.leaf_layers() == [leaf] for leaf in thing.leaf_layers())
    assert isinstance(model, Container) and isinstance(model.vgg, Sequential)
    assert conv.params() == [("weight", conv.weight), ("bias", conv.bias)]
    assert dict(model.params())["vgg.0.weight"] is conv.weight
    assert [n for n, _ in model.heads.params()][:2] == ["loc.0.weight", "loc.0.bias"]


def test_torch_twin_is_built_from_the_plan_and_agrees():
    """The bench's torch.nn twin of a batch-norm config: same state-dict keys and, in float64,
    the same outputs and gradients (torch only where installed)."""
    torch = pytest.importorskip("torch")
    from minissd.bench.model import build_torch_ssd, compare_with_torch, torch_state_dict
    cfg = micro(batch_norm=True)
    model = SSD(cfg, rng=3, dtype=np.float64)
    tmodel = build_torch_ssd(cfg, torch).double()
    own = set(model.state_dict())
    theirs = {k for k in tmodel.state_dict() if not k.endswith("num_batches_tracked")}
    assert own == theirs
    tmodel.load_state_dict(torch_state_dict(model, tmodel, torch))
    errs = compare_with_torch(model, tmodel, torch, cfg.image_size, "cpu", backward=True)
    assert max(errs.values()) < 1e-9, errs
