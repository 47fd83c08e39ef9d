"""Training: overfitting one batch, the three commands end to end, exact resume, NaN stop,
Ctrl-C saving. All on a tiny synthetic set in a temporary cache, a few steps each."""
import dataclasses
import json
import os

import numpy as np
import pytest

from minissd import backend, train
from minissd.training import loop
from minissd.training.step import forward_backward
from minissd.config import SSDConfig
from minissd.model import SSD
from minissd.optim import SGD
from minissd.priors import default_boxes
from minissd.training.settings import TINY_ON_SYNTHETIC, TrainSettings
from minissd.weights import load_checkpoint

SMALL = ["--num-train", "12", "--num-val", "6", "--batch-size", "4", "--workers", "1",
         "--no-progress", "--device", "cpu", "--warmup", "2", "--milestones", "5",
         "--lr", "0.01", "--eval-every", "0", "--log-every", "1", "--procs", "1"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one synthetic set for the whole module, outside the user's cache
    monkeypatch.setenv("MINISSD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _params(path):
    arrays, meta = load_checkpoint(path)
    return arrays, meta


def test_overfits_one_small_batch(rng):
    cfg = SSDConfig(name="micro", image_size=32, class_names=("a", "b"),
                    base=(16, "M", 32, "M", 32), l2norm_conv=2, l2norm_scale=1.0, fc=(32, 32),
                    fc_dilation=1, extras=((16, 1, 1, 0), (32, 3, 2, 1)), mbox=(4, 4, 4),
                    feature_maps=(16, 8, 4), steps=(2, 4, 8), min_sizes=(4, 10, 18),
                    max_sizes=(10, 18, 28), aspect_ratios=((2,), (2,), (2,)))
    model = SSD(cfg, rng=0)
    priors = default_boxes(cfg)
    boxes = [np.array([[0.1, 0.1, 0.5, 0.6]], np.float32),
             np.array([[0.5, 0.4, 0.9, 0.9], [0.05, 0.1, 0.3, 0.3]], np.float32)]
    labels = [np.array([1]), np.array([2, 1])]
    # two images: noise with each object painted into the channel of its class
    x = 0.1 * rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    for n, (bs, ls) in enumerate(zip(boxes, labels)):
        for (x0, y0, x1, y1), l in zip((bs * 32).astype(int), ls):
            x[n, l, y0:y1, x0:x1] += 1.0
    opt = SGD(momentum=0.9, weight_decay=0.0)
    losses = []
    for step in range(80):
        loss, _, _ = forward_backward(model, priors, (x, boxes, labels), cfg)
        opt.step(model.params(), model.grads, 3e-2)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    # hard negatives are re-mined every step, so the curve is noisy: compare the ends
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) / 5, losses


def test_train_evaluate_detect_end_to_end(tmp_path, capsys, device):
    """The three commands on the device under test (the GPU with pytest --device cuda)."""
    out = tmp_path / "run"
    at = SMALL.index("--device") + 1
    small = SMALL[:at] + [device] + SMALL[at + 1:]           # SMALL with --device <device>
    assert train.main(small + ["--iters", "3", "--out", str(out)]) == 0
    for name in ("last.npz", "best.npz", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "map" in r] == [3]
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["step"] == 3 and meta["config"]["name"] == "tiny"
    assert meta["data"]["kind"] == "synthetic" and meta["data"]["num_val"] == 6
    assert "m.vgg.0.weight" in meta["optim_state"]          # the tiny setting trains with Adam
    assert "v.vgg.0.weight" in meta["optim_state"]
    capsys.readouterr()

    from minissd import detect, evaluate
    assert evaluate.main(["--checkpoint", str(out / "last.npz"), "--json", "--device",
                          device]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert 0.0 <= result["map"] <= 1.0 and set(result["ap"]) >= {"circle", "ring"}
    assert result["num_images"] == 6 and (out / "pr_curves.png").is_file()

    from minissd.data.synthetic import ensure_synthetic
    root = ensure_synthetic(12, 6, 128, 0)
    image = sorted((__import__("pathlib").Path(root) / "JPEGImages").glob("*.jpg"))[0]
    assert detect.main(["--checkpoint", str(out / "last.npz"), str(image), "--out",
                        str(tmp_path / "det"), "--threshold", "0.0", "--device", device]) == 0
    printed = capsys.readouterr().out
    assert "detection(s)" in printed and (tmp_path / "det" / (image.stem + ".png")).is_file()
    with pytest.raises(SystemExit, match="nothere.jpg"):
        detect.main(["--checkpoint", str(out / "last.npz"), "nothere.jpg", "--out", str(tmp_path)])
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="bad.npz"):
        detect.main(["--checkpoint", str(tmp_path / "bad.npz"), str(image), "--out", str(tmp_path)])


def test_resume_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train.main(SMALL + ["--iters", "4", "--out", str(full)]) == 0
    assert train.main(SMALL + ["--iters", "2", "--out", str(part)]) == 0
    assert train.main(["--resume", str(part / "last.npz"), "--iters", "4", "--no-progress",
                       "--workers", "1", "--device", "cpu"]) == 0
    a, meta_a = _params(full / "last.npz")
    b, meta_b = _params(part / "last.npz")
    assert meta_a["step"] == meta_b["step"] == 4
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in meta_a["optim_state"]:
        np.testing.assert_array_equal(meta_a["optim_state"][k], meta_b["optim_state"][k])
    # the parameters did move between the two halves
    _, meta_best = _params(part / "best.npz")
    assert meta_best["step"] in (2, 4)


def test_matching_flag_reaches_the_config_and_the_checkpoint(tmp_path):
    """--matching caffe trains with Caffe's rule: the run's config (stored in the checkpoint,
    so evaluate and --resume see it) says so, and the default run keeps ssd.pytorch's."""
    assert train.main(SMALL + ["--iters", "1", "--matching", "caffe", "--out",
                               str(tmp_path / "caffe")]) == 0
    _, meta = _params(tmp_path / "caffe" / "last.npz")
    assert meta["config"]["matching"] == "caffe" and meta["settings"]["matching"] == "caffe"
    assert SSDConfig.from_dict(meta["config"]).matching == "caffe"
    p = train.build_parser()
    assert train.resolve_settings(p.parse_args([])).matching is None
    with pytest.raises(SystemExit):
        p.parse_args(["--matching", "hungarian"])


def test_ctrl_c_saves_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert train.main(SMALL + ["--iters", "3", "--out", str(full)]) == 0
    real = loop.forward_backward
    calls = []

    def interrupted(*a, **k):          # Ctrl-C arrives while step 3 computes its gradients
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "forward_backward", interrupted)
    assert train.main(SMALL + ["--iters", "3", "--out", str(cut)]) == 130
    err = capsys.readouterr().err
    assert "saved the state after step 2" in err and "--resume" in err
    _, meta = _params(cut / "last.npz")
    assert meta["step"] == 2
    monkeypatch.setattr(loop, "forward_backward", real)
    assert train.main(["--resume", str(cut / "last.npz"), "--no-progress", "--workers", "1",
                       "--device", "cpu"]) == 0
    a, _ = _params(full / "last.npz")
    b, _ = _params(cut / "last.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    real = loop.forward_backward
    calls = []

    def poisoned(model, *a, **k):      # step 3 sees a NaN weight, as after a blow-up
        calls.append(1)
        if len(calls) == 3:
            dict(model.params())["vgg.0.weight"][0, 0, 0, 0] = np.nan
        return real(model, *a, **k)

    monkeypatch.setattr(loop, "forward_backward", poisoned)
    code = train.main(SMALL + ["--iters", "4", "--ckpt-every", "2", "--out", str(out)])
    assert code == 3
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "step 3" in err and "last.npz" in err
    arrays, meta = _params(out / "last.npz")
    assert meta["step"] == 2
    assert all(np.isfinite(v).all() for v in arrays.values())


def test_settings_follow_the_setting():
    p = train.build_parser()
    tiny = train.resolve_settings(p.parse_args([]))
    # the one setting of the command line's own: one process per core on the CPU
    assert tiny.procs == (1 if backend.cuda_available() else os.cpu_count())
    assert tiny == dataclasses.replace(TINY_ON_SYNTHETIC, procs=tiny.procs)
    assert train.resolve_settings(p.parse_args(["--procs", "1"])) == TINY_ON_SYNTHETIC
    assert tiny.config == "tiny" and tiny.voc_root is None and tiny.clip_norm == 10.0
    assert train.resolve_settings(p.parse_args(["--clip-norm", "3"])).clip_norm == 3.0
    voc = train.resolve_settings(p.parse_args(["--voc-root", "/x", "--config", "ssd300"]))
    assert (voc.batch_size, voc.lr, voc.iters, voc.milestones, voc.clip_norm) == \
        (32, 1e-3, 120000, (80000, 100000), None)
    assert voc.voc_root == "/x" and voc.optimizer == "sgd"
    short = train.resolve_settings(p.parse_args(["--voc-root", "/x", "--config", "ssd300",
                                                 "--iters", "1200"]))
    assert short.milestones == (800, 1000) and short.warmup == 5
    assert "--pretrained-vgg" in p.format_help() and "--resume" in p.format_help()


def test_settings_round_trip_through_a_checkpoint():
    stored = json.loads(json.dumps(TINY_ON_SYNTHETIC.to_dict()))    # as meta["settings"] holds it
    assert TrainSettings.from_dict(stored) == TINY_ON_SYNTHETIC
    # written before --optimizer, --procs and --val-limit existed: what training did then
    # (a checkpoint of the thread era holds "threads", which is ignored)
    older = {k: v for k, v in stored.items() if k not in ("optimizer", "procs", "val_limit")}
    old = TrainSettings.from_dict({**older, "threads": 2})
    assert (old.optimizer, old.procs, old.val_limit, old.milestones) == \
        ("sgd", 1, None, TINY_ON_SYNTHETIC.milestones)
