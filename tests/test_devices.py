"""Which device runs what: the test session's scoping (tests/conftest.py), inference on the
model's device, and, on a GPU, every command and module end to end.

The first half runs everywhere: it checks the *decisions* (which device a test, a prediction or
a command uses), with tests/fake_cupy.py standing in for CuPy where a GPU would be needed. The
second half is marked `gpu`: train, evaluate and detect for a few steps on the GPU, a GPU
checkpoint read back on both devices, preprocess and the metric on CuPy arrays, and the
benchmarks' own CPU-vs-GPU checks.
"""
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fake_cupy import FakeCupy, install
from minissd import backend, inference
from minissd.config import tiny
from minissd.model import SSD

TESTS = pathlib.Path(__file__).resolve().parent


# --------------------------------------------------------------- the session's scoping

def _run_pytest(args, cwd, env=None):
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_device_cuda_without_a_gpu_stops_with_one_clear_line(tmp_path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    run = _run_pytest(["--device", "cuda", "test_nothing.py"], tmp_path,
                      {"MINISSD_DISABLE_CUDA": "1"})       # no GPU, even on a GPU machine
    out = run.stdout + run.stderr
    assert run.returncode == 4, out                        # pytest's usage error, not a crash
    assert "--device cuda: asked for, but MINISSD_DISABLE_CUDA is set" in out
    assert "without --device cuda" in out
    assert "Traceback" not in out and "INTERNALERROR" not in out


SCOPE_PLUGIN = """
# A GPU that answers, as far as device *choice* goes: minissd.backend gets a fake CuPy.
from fake_cupy import FakeCupy
from minissd import backend
backend._cupy, backend._cupy_error = FakeCupy(), None
"""

SCOPE_TESTS = """
import numpy as np
from minissd import backend

def test_a_test_without_device_fixtures_runs_on_the_cpu():
    assert backend.get_device() == "cpu" and backend.current_device_xp() is np

def test_the_device_fixture_names_and_selects_the_device_under_test(device, xp):
    assert device == "cuda" and backend.get_device() == "cuda" and xp is not np

def test_the_next_test_is_back_on_the_cpu():
    assert backend.get_device() == "cpu"

def test_a_command_that_selects_cuda_does_not_leak_into_later_tests():
    backend.set_device("cuda")

def test_after_the_command():
    assert backend.get_device() == "cpu"
"""


def test_device_cuda_reaches_only_the_tests_that_ask_for_it(tmp_path):
    """With --device cuda and a GPU (faked), the device fixtures select it and every other
    test runs on the CPU: the cause of `pytest --device cuda` failing in test_model,
    test_batchnorm, test_loss and test_train for reasons unrelated to the GPU."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "fakegpu.py").write_text(SCOPE_PLUGIN)
    (tmp_path / "test_scope.py").write_text(textwrap.dedent(SCOPE_TESTS))
    run = _run_pytest(["-p", "fakegpu", "--device", "cuda", "test_scope.py"], tmp_path)
    assert run.returncode == 0 and "5 passed" in run.stdout, run.stdout + run.stderr


def test_device_cuda_on_a_strict_fake_gpu():
    """The modules the issue named (test_model's gradient check, state dicts and CPU-vs-GPU
    check, test_batchnorm, test_loss) under `--device cuda`, with tests/strict_fake_gpu.py as
    the GPU: an array on the wrong device raises TypeError as it would on CuPy. They failed
    that way before the fixtures scoped the device (11 of the 17 picked here)."""
    root = TESTS.parent
    picked = ("gradient or state_dict or cuda_matches_cpu or keep_cache or overwrites or "
              "known_answer or tiny or float32")
    run = _run_pytest(["-p", "strict_fake_gpu", "--device", "cuda", "-k", picked,
                       "tests/test_batchnorm.py", "tests/test_loss.py", "tests/test_model.py"],
                      root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


# --------------------------------------------------------------- inference on the model's device

def _small_tiny():
    cfg = tiny()
    base = tuple(v if v in ("M", "C") else 4 for v in cfg.base)
    extras = tuple((4, k, s, p) for _, k, s, p in cfg.extras)
    return dataclasses.replace(cfg, base=base, fc=(4, 4), extras=extras)


def _images(rng, n=2):
    return [rng.integers(0, 255, (90 + 7 * i, 120, 3), dtype=np.uint8) for i in range(n)]


def test_predict_runs_on_the_models_device_not_the_setting(rng, monkeypatch):
    """A NumPy model predicts on NumPy while the setting says "cuda" (here a fake GPU): images
    and default boxes follow the model's parameters, and backend's current device is never
    consulted."""
    cfg = _small_tiny()
    model = SSD(cfg, rng=0)
    images = _images(rng)
    want = inference.predict(model, cfg, images, inference.priors_for(model, cfg))

    install(monkeypatch, FakeCupy())
    monkeypatch.setattr(backend, "_device", "cuda")

    def no_setting():
        raise AssertionError("inference took the device from the setting, not the model")
    monkeypatch.setattr(backend, "current_device_xp", no_setting)
    monkeypatch.setattr(backend, "xp", no_setting)
    assert inference.model_device(model) == "cpu"
    priors = inference.priors_for(model, cfg)
    assert type(priors) is np.ndarray
    got = inference.predict(model, cfg, images, priors)
    for (bw, sw, lw), (bg, sg, lg) in zip(want, got):
        assert all(type(a) is np.ndarray for a in (bg, sg, lg))
        np.testing.assert_array_equal(bg, bw)
        np.testing.assert_array_equal(sg, sw)
        np.testing.assert_array_equal(lg, lw)


def test_predict_moves_priors_to_the_model(rng, monkeypatch):
    """Priors made on another device are moved to the model's (here: fake-GPU priors for a
    NumPy model come back as NumPy before the network sees them)."""
    cfg = _small_tiny()
    model = SSD(cfg, rng=0)
    images = _images(rng, 1)
    want = inference.predict(model, cfg, images, inference.priors_for(model, cfg))
    fake = FakeCupy()
    install(monkeypatch, fake)
    seen = []
    real_detect = inference.detect
    monkeypatch.setattr(inference, "detect",
                        lambda loc, conf, priors, **kw: seen.append(type(priors))
                        or real_detect(loc, conf, priors, **kw))
    got = inference.predict(model, cfg, images, fake.asarray(inference.priors_for(model, cfg)))
    assert seen == [np.ndarray]
    np.testing.assert_array_equal(got[0][1], want[0][1])


# --------------------------------------------------------------- on a GPU

SMALL = ["--num-train", "12", "--num-val", "6", "--batch-size", "4", "--workers", "1",
         "--no-progress", "--warmup", "2", "--milestones", "5", "--lr", "0.01",
         "--eval-every", "0", "--log-every", "1", "--procs", "1"]


@pytest.fixture
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINISSD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.gpu
def test_train_evaluate_detect_on_the_gpu(tmp_path, capsys, _cache, rng):
    """A few training steps on the GPU; the checkpoint it writes evaluates to the same mAP on
    the GPU and on the CPU, loads into the same network on both, and detect runs on it."""
    from minissd import detect, evaluate, train
    from minissd.data.synthetic import ensure_synthetic
    out = tmp_path / "run"
    assert train.main(SMALL + ["--device", "cuda", "--iters", "3", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    capsys.readouterr()

    results = {}
    for device in ("cuda", "cpu"):
        assert evaluate.main(["--checkpoint", str(out / "last.npz"), "--json",
                              "--device", device]) == 0
        results[device] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["cuda"]["num_images"] == results["cpu"]["num_images"] == 6
    assert abs(results["cuda"]["map"] - results["cpu"]["map"]) < 0.02, results

    backend.set_device("cuda")
    gpu_model, cfg, _ = inference.load_model(str(out / "last.npz"))
    backend.set_device("cpu")
    cpu_model, _, _ = inference.load_model(str(out / "last.npz"))
    assert inference.model_device(gpu_model) == "cuda"
    assert inference.model_device(cpu_model) == "cpu"
    x = rng.uniform(-1, 1, (2, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    gpu_model.eval(), cpu_model.eval()
    lg, cg = gpu_model.forward(backend.to_device(x, "cuda"), keep_cache=False)
    lc, cc = cpu_model.forward(x, keep_cache=False)
    np.testing.assert_allclose(backend.to_numpy(lg), lc, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(backend.to_numpy(cg), cc, rtol=1e-3, atol=1e-4)

    root = ensure_synthetic(12, 6, 128, 0)
    image = sorted((pathlib.Path(root) / "JPEGImages").glob("*.jpg"))[0]
    assert detect.main(["--checkpoint", str(out / "last.npz"), str(image), "--out",
                        str(tmp_path / "det"), "--threshold", "0.0", "--device", "cuda"]) == 0
    assert (tmp_path / "det" / (image.stem + ".png")).is_file()


@pytest.mark.gpu
def test_resume_on_the_gpu_continues_from_the_checkpoint(tmp_path, _cache):
    """--resume on the GPU reads the parameters and the optimizer state back onto the GPU and
    carries on to the asked step (exactness is checked on the CPU, test_train.py)."""
    from minissd import train
    from minissd.weights import load_checkpoint
    run = tmp_path / "run"
    assert train.main(SMALL + ["--device", "cuda", "--iters", "2", "--out", str(run)]) == 0
    first, _ = load_checkpoint(run / "last.npz")
    assert train.main(["--resume", str(run / "last.npz"), "--iters", "4", "--no-progress",
                       "--workers", "1", "--device", "cuda", "--procs", "1"]) == 0
    second, meta = load_checkpoint(run / "last.npz")
    assert meta["step"] == 4 and set(meta["optim_state"]) and first.keys() == second.keys()
    assert any(not np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.gpu
def test_preprocess_and_metrics_on_cupy_arrays(rng):
    from minissd.config import CAFFE_PREPROCESS, TORCHVISION_PREPROCESS
    from minissd.data.augment import preprocess
    from minissd.metrics import evaluate_detections
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    for pp in (CAFFE_PREPROCESS, TORCHVISION_PREPROCESS):
        gpu = preprocess(backend.to_device(images, "cuda"), pp)
        assert backend.is_cupy(gpu) and gpu.dtype == np.float32
        np.testing.assert_allclose(backend.to_numpy(gpu), preprocess(images, pp), rtol=1e-6)

    truths = [{"boxes": np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32),
               "labels": np.array([1, 2]), "difficult": np.array([False, False])}]
    dets = [(np.array([[0.1, 0.1, 0.4, 0.41], [0.5, 0.5, 0.9, 0.9], [0, 0, 0.2, 0.2]],
                      np.float32), np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 2, 2]))]
    on_gpu = [tuple(backend.to_device(a, "cuda") for a in d) for d in dets]
    assert (evaluate_detections(on_gpu, truths, 3)["ap"] == evaluate_detections(dets, truths, 3)
            ["ap"])


@pytest.mark.gpu
@pytest.mark.parametrize("topic, args", [
    ("kernels", ["--repeat", "1"]),
    ("loss", ["--batch", "2", "--detect-batch", "1", "--repeat", "1"]),
    ("layers", ["--config", "tiny", "--batch", "1", "--repeat", "1", "--no-torch"]),
])
def test_bench_on_the_gpu(topic, args, capsys):
    """Each benchmark checks its GPU results against the CPU/reference before timing them
    (and exits non-zero when they disagree)."""
    import importlib
    bench = importlib.import_module(f"minissd.bench.{topic}")
    assert bench.main(args + ["--device", "cuda"]) in (0, None)
    out = capsys.readouterr().out.lower()
    assert "cuda" in out or "cupy" in out               # it says it ran on the GPU


def test_commands_with_device_cuda_and_no_gpu_end_in_one_line(tmp_path):
    """train, evaluate and detect --device cuda where no GPU answers: one error line naming
    --device and the fix, exit status 2, no traceback (each was a RuntimeError traceback)."""
    env = dict(os.environ, MINISSD_DISABLE_CUDA="1")
    photo = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (32, 24)).save(photo)
    ckpt = tmp_path / "none.npz"
    for argv in (["minissd.train", "--device", "cuda", "--iters", "1", "--out",
                  str(tmp_path / "run")],
                 ["minissd.evaluate", "--device", "cuda", "--weights", "opencv-face"],
                 ["minissd.detect", "--device", "cuda", "--checkpoint", str(ckpt), str(photo),
                  "--out", str(tmp_path / "det")]):
        run = subprocess.run([sys.executable, "-m", *argv], env=env, capture_output=True,
                             text=True, timeout=300)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2, (argv, run.stderr)
        assert "Traceback" not in run.stderr, run.stderr
        assert [ln for ln in lines if ": error: " in ln] == lines[-1:], run.stderr
        assert lines[-1].startswith(f"{argv[0]}: error: --device cuda: asked for, but "), \
            lines[-1]
        assert "--device cpu" in lines[-1]
