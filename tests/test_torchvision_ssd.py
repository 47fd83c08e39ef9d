"""torchvision's SSD300 read without torch: minissd computes what torchvision computes.

Two levels:
  * everywhere (no torch needed): fixtures/tv_ssd300_narrow.pth, a torchvision SSD with
    ssd300_vgg16's layout and keys but narrow widths, and fixtures/tv_ssd300_narrow.npz, what
    torchvision computed with it for one image (tests/make_torchvision_fixture.py made both);
  * where torchvision is installed: the real ssd300_vgg16(weights=None, weights_backbone=None)
    with random weights, saved with torch.save, imported and compared the same way.
Goals (issue 15): head outputs to 1e-4 relative, default boxes to 1e-3 px, the top detections'
labels exactly, scores to 1e-4 and boxes to 0.5 px. Run with -s to see the measured figures.
"""
import dataclasses
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import make_torchvision_fixture as fx
from minissd import backend
from minissd import config as configs
from minissd import detect as detect_cmd
from minissd import evaluate as evaluate_cmd
from minissd.boxes import center_to_corner
from minissd.cli import CommandError
from minissd.data.augment import network_input, resize_bilinear_torch
from minissd.inference import load_weights, predict
from minissd.model import SSD
from minissd.pretrained import detector_format, import_detector, torchvision_ssd300
from minissd.priors import clip_priors, default_boxes
from minissd.weights import CheckpointError, import_torchvision_ssd300, read_torch_checkpoint

TOP = 50                      # the "top detections" whose labels must agree exactly


@pytest.fixture(scope="module")
def narrow():
    """(config, state, model, torchvision's outputs) of the narrow fixture."""
    config, state = import_torchvision_ssd300(fx.FIXTURE_PTH)
    model = SSD(config)
    model.load_state_dict(state)
    with np.load(fx.FIXTURE_NPZ) as z:
        want = {k: z[k] for k in z.files}
    return config, state, model, want


def compare(model, config, image, want, preprocessed=None):
    """minissd against torchvision's outputs `want`: the figures (max differences) as a dict.

    preprocessed: torchvision's full network input when known (the full-size test), else the
    comparison uses the fixture's every-7th-pixel sample and channel sums.
    """
    h, w = image.shape[:2]
    xp = backend.current_device_xp()               # numpy, or cupy with pytest --device cuda
    x = network_input([image], config.preprocess, config.image_size, xp)    # (1, 3, 300, 300)
    fig = {}
    if preprocessed is not None:
        fig["preprocess_abs"] = float(np.abs(backend.to_numpy(x) - preprocessed).max())
    else:
        x = backend.to_numpy(x)
        fig["preprocess_abs"] = float(np.abs(x[:, :, ::7, ::7] - want["preprocessed_every7"]).max())
        fig["preprocess_sum_rel"] = float(np.abs(x.astype(np.float64).sum(axis=(0, 2, 3))
                                                 - want["preprocessed_sum"]).max()
                                          / np.abs(want["preprocessed_sum"]).max())
    priors = default_boxes(config)
    corners = center_to_corner(priors.astype(np.float64)) * config.image_size      # (P, 4) px
    assert corners.shape == want["anchors"].shape
    fig["anchors_px"] = float(np.abs(corners - want["anchors"]).max())
    loc, conf = model.forward(x, keep_cache=False)
    for name, got in (("loc", loc[0]), ("conf", conf[0])):
        got = backend.to_numpy(got)
        assert got.shape == want[name].shape, name
        fig[f"{name}_rel"] = float(np.abs(got - want[name]).max() / np.abs(want[name]).max())
    boxes, scores, labels = predict(model, config, [image], xp.asarray(priors))[0]
    fig.update(num=len(scores), num_torchvision=len(want["scores"]))
    n = min(TOP, len(want["scores"]))
    fig["top_labels_equal"] = bool(np.array_equal(labels[:n], want["labels"][:n]))
    k = min(len(scores), len(want["scores"]))
    fig["labels_equal_all"] = int((labels[:k] == want["labels"][:k]).sum())
    fig["scores_abs"] = float(np.abs(scores[:n] - want["scores"][:n]).max())
    pixels = boxes * np.array([w, h, w, h], np.float32)
    fig["boxes_px"] = float(np.abs(pixels[:n] - want["boxes"][:n]).max())
    if fig["labels_equal_all"] == k:              # the same order all the way down
        fig["scores_abs_all"] = float(np.abs(scores[:k] - want["scores"][:k]).max())
        fig["boxes_px_all"] = float(np.abs(pixels[:k] - want["boxes"][:k]).max())
    return fig


def assert_goals(fig):
    print("\nminissd vs torchvision:", {k: (f"{v:.3g}" if isinstance(v, float) else v)
                                        for k, v in fig.items()})
    assert fig["preprocess_abs"] < 1e-3           # on values of about -123..152
    assert fig["anchors_px"] < 1e-3
    assert fig["loc_rel"] < 1e-4 and fig["conf_rel"] < 1e-4
    assert fig["num"] == fig["num_torchvision"]
    assert fig["top_labels_equal"]
    assert fig["scores_abs"] < 1e-4
    assert fig["boxes_px"] < 0.5


# --- the narrow fixture: runs everywhere ----------------------------------------------------

def test_import_reads_the_layout_and_widths(narrow):
    config, state, _, want = narrow
    assert config.name == "ssd300_torchvision"
    assert config.num_classes == fx.NARROW_CLASSES == want["conf"].shape[1]
    convs = [v for v in fx.NARROW_VGG[:-1]]
    pools = [i for i, v in enumerate(convs) if v == "M"]
    convs[pools[2]] = "C"                          # SSDFeatureExtractorVGG's ceil-mode pool3
    assert config.base == tuple(convs)
    assert config.fc == (fx.NARROW_FC, fx.NARROW_FC)
    assert [e[0] for e in config.extras] == [c for pair in fx.NARROW_EXTRAS for c in pair]
    assert config.l2norm_conv == 10
    theirs = read_torch_checkpoint(fx.FIXTURE_PTH)
    np.testing.assert_array_equal(state["L2Norm.weight"], theirs["backbone.scale_weight"])
    np.testing.assert_array_equal(state["vgg.31.weight"], theirs["backbone.extra.0.7.1.weight"])
    np.testing.assert_array_equal(state["vgg.28.bias"], theirs["backbone.extra.0.5.bias"])
    np.testing.assert_array_equal(state["extras.7.weight"], theirs["backbone.extra.4.2.weight"])
    np.testing.assert_array_equal(state["conf.5.bias"],
                                  theirs["head.classification_head.module_list.5.bias"])
    assert len(state) == len(theirs)               # every tensor used, none invented


def test_narrow_equals_torchvision(narrow):
    config, _, model, want = narrow
    assert_goals(compare(model, config, want["image"], want))


def test_resize_rule_is_torchs(narrow):
    want = narrow[3]
    for size in (16, 48):
        got = resize_bilinear_torch(want["resize_in"], size)
        np.testing.assert_allclose(got, want[f"resize_to_{size}"], rtol=0, atol=1e-4)


def test_the_fixture_exercises_the_clip_and_the_clamp(narrow):
    """The fixture's boxes reach past the image, so torchvision's clip before NMS changes its
    detections; its offsets pass log(1000 / 16), which changes the unclipped boxes (clipped,
    a box 62.5 times its default box covers the image either way)."""
    config, _, model, want = narrow
    assert (want["loc"][:, 2:] * config.variances[1] > config.wh_clamp).any()
    priors = backend.current_device_xp().asarray(default_boxes(config))

    def run(**change):
        return predict(model, dataclasses.replace(config, **change), [want["image"]], priors)[0]

    def same(a, b):
        return len(a[1]) == len(b[1]) and np.allclose(a[0], b[0], atol=1e-4)

    unclipped = run(clip_boxes=False)
    assert not same(run(), unclipped)
    assert not same(unclipped, run(clip_boxes=False, wh_clamp=None))


def test_decode_clamp_by_hand():
    from minissd.boxes import decode
    priors = np.array([[0.5, 0.5, 0.1, 0.2]], np.float32)
    loc = np.array([[[0.0, 0.0, 100.0, -3.0]]], np.float32)         # t_w * 0.2 = 20 > 4.135
    got = decode(loc, priors, (0.1, 0.2), wh_clamp=math.log(1000 / 16))[0, 0]
    w, h = 0.1 * 62.5, 0.2 * math.exp(-0.6)                         # capped; untouched
    np.testing.assert_allclose(got, [0.5 - w / 2, 0.5 - h / 2, 0.5 + w / 2, 0.5 + h / 2],
                               rtol=1e-5)


def test_prior_clip_rules_differ_on_the_centres_off_the_image():
    """SSD300's 10x10 map has step 32 (9.375 cells per image): its last row and column are
    centred at 9.5 / 9.375 = 1.0133, which ssd.pytorch's rule clamps to 1 and torchvision's
    keeps. Those 120 numbers are the only difference between the two rules."""
    c = configs.ssd300_torchvision()
    tv = default_boxes(c)
    sp = default_boxes(dataclasses.replace(c, prior_clip="ssd.pytorch"))
    start = 38 * 38 * 4 + 19 * 19 * 6                      # where the 10x10 map begins
    grid = tv[start:start + 600].reshape(10, 10, 6, 4)     # (row i, column j, box, cxcywh)
    np.testing.assert_allclose(grid[:, 9, :, 0], 9.5 / 9.375, rtol=1e-6)
    np.testing.assert_allclose(grid[9, :, :, 1], 9.5 / 9.375, rtol=1e-6)
    differ = np.argwhere(tv != sp)
    assert len(differ) == 120 and np.all(sp[tv != sp] == 1.0)
    assert set(differ[:, 1]) == {0, 1}                     # only cx and cy
    p = np.array([[1.2, 0.5, 1.5, 0.3], [0.5, -0.1, 0.2, 1.1]])
    np.testing.assert_array_equal(clip_priors(p, "torchvision"),
                                  [[1.2, 0.5, 1.0, 0.3], [0.5, -0.1, 0.2, 1.0]])
    np.testing.assert_array_equal(clip_priors(p, "ssd.pytorch"),
                                  [[1.0, 0.5, 1.0, 0.3], [0.5, 0.0, 0.2, 1.0]])
    with pytest.raises(ValueError, match="prior_clip"):
        clip_priors(p, "corners")          # "caffe" is a rule now (tests/test_caffe.py)


def test_config_is_torchvisions():
    c = configs.get_config("ssd300_torchvision")
    assert c.num_classes == 91 and len(c.class_names) == 90
    assert c.class_names[0] == "person" and c.class_names[11] == "N/A"   # COCO id 12 unused
    assert c.class_names[89] == "toothbrush"
    mins, maxs = c.scales()
    np.testing.assert_allclose(np.array(mins) / 300, fx.SCALES[:-1])
    np.testing.assert_allclose(np.array(maxs) / 300, fx.SCALES[1:])
    assert c.wh_clamp == pytest.approx(math.log(1000 / 16))
    assert (c.conf_threshold, c.nms_threshold, c.top_k, c.per_class_top_k, c.clip_boxes) == \
        (0.01, 0.45, 200, 400, True)
    assert c.preprocess["resize"] == "torch-bilinear"
    np.testing.assert_allclose(c.preprocess["mean"], fx.IMAGE_MEAN)


def test_config_json_round_trip():
    c = configs.ssd300_torchvision()
    assert configs.SSDConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_old_checkpoints_keep_their_meaning():
    """A config dict written before these fields existed loads with ssd.pytorch's behaviour."""
    old = configs.ssd300().to_dict()
    for name in ("prior_clip", "conf_threshold", "nms_threshold", "top_k", "per_class_top_k",
                 "clip_boxes", "wh_clamp"):
        old.pop(name)
    c = configs.SSDConfig.from_dict(old)
    assert c == configs.ssd300()
    assert (c.prior_clip, c.clip_boxes, c.wh_clamp, c.per_class_top_k) == \
        ("ssd.pytorch", False, None, 400)
    assert "resize" not in c.preprocess          # Pillow's bilinear, as before


# --- wrong files: one clear error naming the file --------------------------------------------

def test_errors_name_the_file_and_the_fix(tmp_path):
    theirs = read_torch_checkpoint(fx.FIXTURE_PTH)
    cases = {
        "no head": {k: v for k, v in theirs.items() if "classification_head" not in k},
        "SSD512 layout": {**theirs, "backbone.extra.5.0.weight": np.zeros((4, 8, 1, 1)),
                          "backbone.extra.5.2.weight": np.zeros((8, 4, 4, 4))},
        "a head missing": {k: v for k, v in theirs.items()
                           if not k.startswith("head.regression_head.module_list.5")},
        "other ratios": {**theirs, "head.regression_head.module_list.0.weight":
                         np.zeros((24, 8, 3, 3), np.float32)},
        "widths do not chain": {**theirs, "backbone.extra.1.0.weight":
                                np.zeros((4, 7, 1, 1), np.float32)},
        "unknown key": {**theirs, "backbone.fpn.weight": np.zeros(3)},
        "not a conv": {**theirs, "backbone.features.2.weight": np.zeros((4, 36), np.float32)},
    }
    for what, state in cases.items():
        with pytest.raises(CheckpointError, match="my.pth: .*ssd300_vgg16") as e:
            torchvision_ssd300(state, "my.pth")
        assert "\n" not in str(e.value), what
    with pytest.raises(CheckpointError, match="SSD512"):
        torchvision_ssd300(cases["SSD512 layout"], "my.pth")
    # a VGG16 base and a truncated file, through the command-line path
    base = os.path.join(os.path.dirname(fx.FIXTURE_PTH), "reducedfc_like.pth")
    with pytest.raises(CheckpointError, match="VGG16 base.*--pretrained-vgg"):
        import_detector(base)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(fx.FIXTURE_PTH, "rb").read()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        import_torchvision_ssd300(cut)


def test_detector_format_by_keys(narrow):
    assert detector_format(read_torch_checkpoint(fx.FIXTURE_PTH)) == "torchvision-ssd300"
    assert detector_format({"vgg.0.weight": 0, "L2Norm.weight": 0, "conf.0.weight": 0}) == \
        "ssd.pytorch"
    assert detector_format({"features.0.weight": 0}) == "vgg16-base"
    assert detector_format({"fc.weight": 0}) is None


def test_ssd_pytorch_detector_from_its_names():
    """ssd.pytorch's names are minissd's: the config is found from the heads (SSD300, the
    classes from conf.0); a network of other shapes or names is refused."""
    from minissd.pretrained import ssd_pytorch_detector
    state = SSD(configs.ssd300(num_classes=5)).state_dict()
    config, out = ssd_pytorch_detector(state, "s.pth")
    assert config.name == "ssd300" and config.num_classes == 5
    assert sorted(out) == sorted(state)
    assert config.preprocess["channel_order"] == "BGR"           # Caffe's, as ssd.pytorch
    small = SSD(configs.tiny(num_classes=5)).state_dict()
    with pytest.raises(CheckpointError, match="t.pth: .*needs"):
        ssd_pytorch_detector({k: v for k, v in small.items() if "running" not in k}, "t.pth")
    with pytest.raises(CheckpointError, match="u.pth: keys .*head.x"):
        ssd_pytorch_detector({**state, "head.x": np.zeros(1)}, "u.pth")


# --- the commands ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixture_image(tmp_path_factory, narrow):
    from PIL import Image
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(narrow[3]["image"]).save(path)
    return str(path)


def test_detect_takes_weights(tmp_path, fixture_image, narrow, capsys):
    config, _, _, want = narrow
    detect_cmd.main(["--weights", fx.FIXTURE_PTH, fixture_image, "--out", str(tmp_path),
                     "--threshold", str(float(want["scores"][4:6].mean()))])
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  class")]
    assert len(lines) == 5                        # the five best, as torchvision ranks them
    for (name, score, *box), label, s, b in zip(lines, want["labels"], want["scores"],
                                                 want["boxes"]):
        assert name == config.class_names[label - 1]
        assert abs(float(score) - s) < 1e-3
        np.testing.assert_allclose([float(v) for v in box], b, atol=0.06)   # printed to .1
    assert (tmp_path / "photo.png").exists()


@pytest.mark.parametrize("flags, message", [
    ([], "one of the arguments --checkpoint --weights is required"),
    (["--checkpoint", "a.npz", "--weights", "b.pth"], "not allowed with"),
])
def test_checkpoint_or_weights_exactly_one(flags, message, capsys, fixture_image):
    for cmd in (detect_cmd, evaluate_cmd):
        extra = [fixture_image, "--out", "x"] if cmd is detect_cmd else []
        with pytest.raises(CommandError) as e:
            cmd.main(flags + extra)
        assert e.value.code == 2 and message in str(e.value)
        assert "\n" not in str(e.value)
    capsys.readouterr()


def test_weights_errors_are_one_line(tmp_path, fixture_image, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CommandError, match="bad.pth: .*"):
        detect_cmd.main(["--weights", str(bad), fixture_image, "--out", str(tmp_path)])
    with pytest.raises(CommandError, match="--weights: .*pass --voc-root"):
        evaluate_cmd.main(["--weights", fx.FIXTURE_PTH])
    with pytest.raises(CommandError, match="not a readable minissd checkpoint.*goes to --weights"):
        detect_cmd.main(["--checkpoint", fx.FIXTURE_PTH, fixture_image, "--out", str(tmp_path)])
    capsys.readouterr()


def test_evaluate_takes_weights(tmp_path, narrow, capsys):
    """evaluate --weights FILE.pth --voc-root DIR: the detector's classes, by name (here the
    fixture's class1, class2: the synthetic set's circles and rings renamed to them)."""
    from minissd.data.synthetic import generate
    root = Path(generate(tmp_path / "voc", num_train=2, num_val=6, image_size=96, seed=0))
    for xml in (root / "Annotations").glob("*.xml"):
        text = xml.read_text().replace("<name>circle</name>", "<name>class1</name>")
        xml.write_text(text.replace("<name>ring</name>", "<name>class2</name>"))
    (root / "labels.txt").unlink()
    evaluate_cmd.main(["--weights", fx.FIXTURE_PTH, "--voc-root", str(root), "--json",
                       "--out", str(tmp_path)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_images"] == 6 and set(result["ap"]) == {"class1", "class2"}
    assert 0 <= result["map"] <= 1                 # scored: the classes were found by name


def test_load_weights_opens_both_kinds(tmp_path, narrow):
    from minissd.weights import save_checkpoint
    model, config, meta = load_weights(fx.FIXTURE_PTH)
    assert meta["format"] == "torchvision-ssd300" and config == narrow[0]
    npz = tmp_path / "m.npz"
    save_checkpoint(npz, model.state_dict(), {"config": config.to_dict()})
    assert zipfile.is_zipfile(npz)
    again, config2, _ = load_weights(str(npz))
    assert config2 == config
    np.testing.assert_array_equal(again.state_dict()["conf.0.weight"],
                                  model.state_dict()["conf.0.weight"])


# --- the real ssd300_vgg16, where torchvision is installed -------------------------------------

def test_full_size_ssd300_vgg16_equals_torchvision(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models.detection import ssd300_vgg16
    torch.manual_seed(0)
    tv = fx.randomize(ssd300_vgg16(weights=None, weights_backbone=None), seed=1)
    path = tmp_path / "ssd300_vgg16_random.pth"
    torch.save(tv.state_dict(), path)
    model, config, meta = load_weights(str(path))           # what detect --weights runs
    assert config.num_classes == 91 and meta["format"] == "torchvision-ssd300"
    assert model.num_parameters() == sum(p.numel() for p in tv.parameters())
    # the 300x300 image (no resize), then a photo-sized one (shrunk: no antialiasing)
    for h, w in ((300, 300), (480, 640)):
        image = fx.make_image(h, w, seed=3)
        want = fx.torchvision_outputs(tv, image)
        fig = compare(model, config, image, want, preprocessed=want["preprocessed"])
        with capsys.disabled():
            print(f"\n{h}x{w} image:", end="")
            assert_goals(fig)
    # detect prints COCO's names for torchvision's labels
    from PIL import Image
    Image.fromarray(image).save(tmp_path / "photo.png")
    labels, scores = want["labels"], want["scores"]
    n = next(n for n in range(5, len(scores)) if len(set(labels[:n])) > 1
             and scores[n - 1] - scores[n] > 1e-5)     # the best n, two classes at least
    detect_cmd.main(["--weights", str(path), str(tmp_path / "photo.png"), "--out",
                     str(tmp_path), "--threshold", str(float(scores[n - 1:n + 1].mean()))])
    names = [" ".join(ln.split()[:-5]) for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("  ") and "->" not in ln]    # name (may hold spaces), 5 numbers
    assert names == [configs.COCO_91_CATEGORIES[i] for i in labels[:n]]
