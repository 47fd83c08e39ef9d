"""minissd.model.SSD: shapes, parameter names and count, head layout, gradients, state dicts."""
import dataclasses

import numpy as np
import pytest

from minissd import backend
from minissd.config import SSDConfig, ssd300, ssd512, tiny
from minissd.gradcheck import check_gradients
from minissd.model import SSD, source_sizes
from minissd.ops.conv import conv2d_forward


def micro_config(num_classes=3):
    """A very small SSD with the same topology as SSD300 (ceil-mode pool, L2Norm source,
    dilated conv6, 1x1 conv7, extras with a no-padding last conv), for gradient checks.
    30 -> M 15 -> C 8 (ceil) = source 0 -> M 4 -> pool5, conv6, conv7 = source 1 -> 2 -> 1."""
    return SSDConfig(
        name="micro", image_size=30, class_names=tuple(f"c{i}" for i in range(1, num_classes)),
        base=(3, "M", 4, "C", 5, "M", 6), l2norm_conv=3, fc=(7, 6), fc_dilation=2,
        extras=((4, 1, 1, 0), (5, 3, 2, 1), (3, 1, 1, 0), (4, 2, 1, 0)),
        mbox=(4, 6, 4, 4), feature_maps=(8, 4, 2, 1), steps=(4, 8, 15, 30),
        min_sizes=(3, 8, 15, 22), max_sizes=(8, 15, 22, 30),
        aspect_ratios=((2,), (2, 3), (2,), (2,)))


def narrow(config, width=4):
    """The same topology as `config` with every conv `width` channels wide (cheap forward)."""
    base = tuple(v if v in ("M", "C") else width for v in config.base)
    extras = tuple((width, k, s, p) for _, k, s, p in config.extras)
    return dataclasses.replace(config, base=base, fc=(width, width), extras=extras)


def test_ssd300_parameter_count_and_names():
    model = SSD(ssd300())
    assert model.num_parameters() == 26_285_486
    names = [n for n, _ in model.params()]
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)
    want = ([f"vgg.{i}.{p}" for i in convs for p in ("weight", "bias")] + ["L2Norm.weight"]
            + [f"extras.{j}.{p}" for j in range(8) for p in ("weight", "bias")]
            + [f"{h}.{k}.{p}" for h in ("loc", "conf") for k in range(6)
               for p in ("weight", "bias")])
    assert names == want
    shapes = dict((n, tuple(a.shape)) for n, a in model.params())
    assert shapes["vgg.31.weight"] == (1024, 512, 3, 3)
    assert shapes["vgg.33.weight"] == (1024, 1024, 1, 1)
    assert shapes["L2Norm.weight"] == (512,)
    assert shapes["extras.7.weight"] == (256, 128, 3, 3)
    assert shapes["loc.1.weight"] == (24, 1024, 3, 3)
    assert shapes["conf.0.weight"] == (84, 512, 3, 3)
    assert np.all(backend.to_numpy(dict(model.params())["L2Norm.weight"]) == 20.0)


def test_ssd300_forward_shapes(xp):
    model = SSD(ssd300())
    x = xp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 3, 300, 300)).astype(np.float32))
    loc, conf = model.forward(x, keep_cache=False)
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    assert loc.dtype == conf.dtype == np.float32
    assert bool(xp.isfinite(loc).all()) and bool(xp.isfinite(conf).all())


@pytest.mark.parametrize("make, boxes", [(ssd300, 8732), (ssd512, 24564), (tiny, 5620)])
def test_full_topology_shapes(make, boxes, xp):
    """The real layer list at the real image size, with narrow channels (cheap on the CPU)."""
    cfg = make()
    assert source_sizes(cfg) == cfg.feature_maps
    model = SSD(narrow(cfg))
    x = xp.zeros((2, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
    loc, conf = model.forward(x)
    assert loc.shape == (2, boxes, 4) and conf.shape == (2, boxes, cfg.num_classes)


def test_tiny_config_builds_with_its_channels(xp):
    model = SSD(tiny(), rng=1)
    x = xp.asarray(np.random.default_rng(1).standard_normal((2, 3, 128, 128)).astype(np.float32))
    loc, conf = model.forward(x)
    # 5620 = 32*32*4 + 16*16*4 + 8*8*6 + 4*4*6 + 2*2*4 + 1*1*4
    assert loc.shape == (2, 5620, 4) and conf.shape == (2, 5620, 7)


def test_head_layout_matches_nhwc_flattening(rng):
    """loc[:, p] for source k, row i, column j, box b is channel b*4 + coord of the head conv at
    (i, j): checked against the head conv applied by hand to sources computed separately."""
    cfg = micro_config()
    model = SSD(cfg, rng=2, dtype=np.float64)
    x = rng.standard_normal((2, 3, 30, 30))
    loc, conf = model.forward(x)
    h = model.vgg.forward(x)                                  # source 1 (conv7)
    src = {1: h}
    for j, conv in enumerate(model.extras):
        h = conv.forward(h)
        if j % 2 == 1:
            src[2 + j // 2] = h
    offsets = np.cumsum([0] + [f * f * k for f, k in zip(cfg.feature_maps, cfg.mbox)])
    for k, s in src.items():
        f, nb = cfg.feature_maps[k], cfg.mbox[k]
        y, _ = conv2d_forward(s, model.heads.loc[k].weight, model.heads.loc[k].bias, 1, 1)
        yc, _ = conv2d_forward(s, model.heads.conf[k].weight, model.heads.conf[k].bias,
                               1, 1)
        got_l = loc[:, offsets[k]:offsets[k + 1]].reshape(2, f, f, nb, 4)
        got_c = conf[:, offsets[k]:offsets[k + 1]].reshape(2, f, f, nb, 3)
        for b in range(nb):
            for c in range(4):
                np.testing.assert_allclose(got_l[:, :, :, b, c], y[:, b * 4 + c], rtol=1e-12)
            for c in range(3):
                np.testing.assert_allclose(got_c[:, :, :, b, c], yc[:, b * 3 + c], rtol=1e-12)


def test_whole_network_gradient_check():
    """Analytic gradients of every parameter tensor and of the input vs central differences,
    in float64, with a random upstream gradient on both outputs."""
    cfg = micro_config()
    model = SSD(cfg, rng=3, dtype=np.float64)
    g = np.random.default_rng(4)
    for _, w in model.params():                               # non-zero biases, L2 scales
        w += 0.1 * g.standard_normal(w.shape)
    x = g.standard_normal((2, 3, 30, 30))
    loc, conf = model.forward(x)
    dloc, dconf = g.standard_normal(loc.shape), g.standard_normal(conf.shape)
    dx = model.backward(dloc, dconf)
    params = dict(model.params())
    grads = dict(model.grads)
    assert sorted(grads) == sorted(params) and len(params) == 37
    params["input"], grads["input"] = x, dx
    # h = 5e-5: through ~20 layers the truncation error (~h^2) and the rounding error of the
    # projected loss (~1e-16 |L| / h) balance here; with 1e-5 small gradients (~1e-4) come
    # within a factor 2 of the 1e-6 bound from rounding alone (12 coordinate draws measured:
    # all below 7e-7 at 5e-5).
    errors = check_gradients(lambda: model.forward(x), params, grads, dout=(dloc, dconf),
                             num_checks=6, h=5e-5, rng=np.random.default_rng(5))
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, f"{worst}: rel error {errors[worst]:.2e}"


def test_backward_overwrites_grads():
    model = SSD(micro_config(), rng=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 3, 30, 30))
    loc, conf = model.forward(x)
    dloc, dconf = np.ones_like(loc), np.ones_like(conf)
    model.backward(dloc, dconf)
    first = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x)
    model.backward(dloc, dconf)
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, first[k], err_msg=k)


def test_keep_cache_false_same_output_and_no_backward(rng):
    model = SSD(micro_config(), rng=0)
    x = rng.standard_normal((2, 3, 30, 30)).astype(np.float32)
    loc1, conf1 = model.forward(x)
    loc2, conf2 = model.forward(x, keep_cache=False)
    np.testing.assert_array_equal(loc1, loc2)
    np.testing.assert_array_equal(conf1, conf2)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(loc2, conf2)


def test_state_dict_round_trip(rng):
    a, b = SSD(micro_config(), rng=0), SSD(micro_config(), rng=1)
    x = rng.standard_normal((1, 3, 30, 30)).astype(np.float32)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["vgg.0.weight"][...] = 0          # a copy: the model is not changed
    assert np.abs(dict(a.params())["vgg.0.weight"]).sum() > 0
    state = a.state_dict()
    ids = {n: id(w) for n, w in b.params()}
    assert not np.allclose(a.forward(x)[1], b.forward(x)[1])
    missing, unexpected = b.load_state_dict(state)
    assert missing == [] and unexpected == []
    assert {n: id(w) for n, w in b.params()} == ids       # loaded in place (optimizer refs hold)
    for (la, lb) in zip(a.forward(x), b.forward(x)):
        np.testing.assert_array_equal(la, lb)
    f64 = SSD(micro_config(), rng=1, dtype=np.float64)
    f64.load_state_dict(state)
    assert dict(f64.params())["vgg.0.weight"].dtype == np.float64


def test_load_state_dict_errors():
    model = SSD(micro_config(), rng=0)
    state = model.state_dict()
    missing = dict(state)
    del missing["conf.2.bias"]
    with pytest.raises(KeyError, match="conf.2.bias"):
        model.load_state_dict(missing)
    extra = dict(state, **{"extras.9.weight": np.zeros(3, np.float32)})
    with pytest.raises(KeyError, match="extras.9.weight"):
        model.load_state_dict(extra)
    other = SSD(micro_config(num_classes=5), rng=0).state_dict()    # conf heads differ
    with pytest.raises(ValueError, match=r"conf.0.weight.*\(20, 5, 3, 3\).*\(12, 5, 3, 3\)"):
        model.load_state_dict(other)
    before = model.state_dict()
    partial = {k: v + 1 for k, v in state.items() if k.startswith("vgg.")}
    partial["head.weight"] = np.zeros(1)
    got_missing, got_unexpected = model.load_state_dict(partial, strict=False)
    assert got_unexpected == ["head.weight"]
    assert sorted(got_missing) == sorted(k for k in state if not k.startswith("vgg."))
    after = model.state_dict()
    np.testing.assert_array_equal(after["vgg.0.weight"], before["vgg.0.weight"] + 1)
    np.testing.assert_array_equal(after["conf.0.weight"], before["conf.0.weight"])


def test_config_mismatch_errors():
    bad = dataclasses.replace(micro_config(), feature_maps=(8, 4, 2, 2))
    with pytest.raises(ValueError, match=r"feature_maps.*\(8, 4, 2, 1\)"):
        SSD(bad)
    with pytest.raises(ValueError, match="mbox"):
        SSD(dataclasses.replace(micro_config(), mbox=(4, 6, 4)))
    with pytest.raises(ValueError, match="l2norm_conv"):
        SSD(dataclasses.replace(micro_config(), l2norm_conv=9))


def test_forward_input_errors():
    model = SSD(micro_config())
    with pytest.raises(ValueError, match="image_size"):
        model.forward(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="astype"):
        model.forward(np.zeros((1, 3, 30, 30), np.float64))


def test_imported_vgg_loads_into_ssd300():
    """vgg16_from_torchvision's output fits SSD300's base exactly (names and shapes)."""
    from minissd.weights import load_ssd_pytorch
    model = SSD(narrow(ssd300(), 8))
    reduced = {n[len("vgg."):]: v + 0.5 for n, v in model.state_dict().items()
               if n.startswith("vgg.")}                   # vgg16_reducedfc.pth-style keys
    missing, unexpected = model.load_state_dict(load_ssd_pytorch(reduced), strict=False)
    assert unexpected == [] and all(not m.startswith("vgg.") for m in missing)
    assert "L2Norm.weight" in missing
    np.testing.assert_array_equal(model.state_dict()["vgg.33.bias"], reduced["33.bias"])


@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    cpu = SSD(micro_config(), rng=0)
    gpu = SSD(micro_config(), rng=0).to("cuda")
    x = rng.standard_normal((2, 3, 30, 30)).astype(np.float32)
    loc_c, conf_c = cpu.forward(x)
    loc_g, conf_g = gpu.forward(backend.to_device(x, "cuda"))
    np.testing.assert_allclose(backend.to_numpy(loc_g), loc_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(conf_g), conf_c, rtol=1e-4, atol=1e-5)
    dx_c = cpu.backward(loc_c, conf_c)
    dx_g = gpu.backward(loc_g, conf_g)
    np.testing.assert_allclose(backend.to_numpy(dx_g), dx_c, rtol=1e-3, atol=1e-4)


def test_backward_without_input_gradient_gives_the_same_parameter_gradients(rng):
    from minissd.config import tiny
    model = SSD(tiny(), rng=0)
    x = rng.normal(size=(2, 3, 128, 128)).astype(np.float32)
    loc, conf = model.forward(x)
    dloc = rng.normal(size=loc.shape).astype(np.float32)
    dconf = rng.normal(size=conf.shape).astype(np.float32)
    assert model.backward(dloc, dconf).shape == x.shape
    full = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x)
    assert model.backward(dloc, dconf, need_dx=False) is None
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, full[k])
