"""Hostile and broken inputs (issue 23): every command, given files it did not write, ends with
exit status 0 or 2, at most one error line and never a traceback, within a time and memory
bound, without reading or writing outside the folders it was given, and leaves the user's
files byte-identical.

The corpus is made by code (tests/hostile_files.py), in a temporary "world":

    world/user/      the user's files: datasets, photos, a checkpoint, an earlier run
    world/outside/   files a path-traversal attack would reach (../outside/...)
    world/out/       where the commands may write; world/cache, home, mpl: the same
    world/work/      the commands' working folder

The commands run in groups, in one subprocess per group (tests/hostile_driver.py: each case
is the module's main(argv) with its own stdout / stderr and alarm, the process under
RLIMIT_AS and RLIMIT_CPU), because starting minissd costs about a second. After each group,
every file under user/ and outside/ hashes as before and nothing new appeared there.
In-process tests cover what needs no command (the readers' own answers).
"""
import dataclasses
import hashlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import hostile_files as h
from minissd.config import get_config
from minissd.data.coco import COCODataset
from minissd.data.folders import hash_fraction
from minissd.data.voc import DataError, VOCDataset, load_image
from minissd.torchfile import CheckpointError, read_torch_checkpoint
from minissd.training.build import build_model, build_optimizer
from minissd.training.checkpoint import save_run_checkpoint
from minissd.training.log import RunLog
from minissd.training.settings import TINY_ON_OWN_DATA
from minissd.untrusted import inside, printable
from minissd.weights import load_checkpoint, save_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "hostile_driver.py")
AS_LIMIT = 3 << 30              # address space of a group (numpy, matplotlib: ~1 GB virtual)
CASE_SECONDS = 60               # a refusal takes well under a second; a 2-step run a few
FAST = ["--iters", "2", "--batch-size", "2", "--workers", "0", "--no-progress", "--device",
        "cpu", "--eval-every", "0", "--log-every", "1", "--procs", "1"]


# ------------------------------------------------------------------ the world
def _image(path, size=(64, 48), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, 120).save(path)


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def _flat(folder, n=6, bad=None):
    """A flat export: n images with same-stem XMLs (classes a, b); bad: {stem: xml bytes}."""
    for i in range(n):
        stem = f"im{i}"
        _image(os.path.join(folder, stem + ".png"))
        xml = (bad or {}).get(stem) or h.voc_xml(objects=((("a", "b")[i % 2], "5", "6", "30",
                                                           "40"),))
        _write(os.path.join(folder, stem + ".xml"), xml)
    return folder


def _checkpoint(path, spec, names=("a", "b"), meta_edit=None, optim=True, arrays_edit=None):
    """A minissd.train-style checkpoint of an untrained tiny model (what train writes)."""
    config = get_config("tiny", class_names=names)
    settings = dataclasses.replace(TINY_ON_OWN_DATA, iters=10, batch_size=2)
    model, opt = build_model(config, 0), build_optimizer(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_run_checkpoint(path, model, opt, 2, settings, config, spec, None)
    if meta_edit or not optim or arrays_edit:
        arrays, meta = load_checkpoint(path)
        optim_state = meta.pop("optim_state", {}) if optim else meta.pop("optim_state", None)
        (meta_edit or (lambda m: None))(meta)
        (arrays_edit or (lambda a: None))(arrays)
        save_checkpoint(path, arrays, meta, optim_state if optim else None)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = str(tmp_path_factory.mktemp("world"))
    user, outside = os.path.join(w, "user"), os.path.join(w, "outside")
    for sub in ("out", "cache", "home", "mpl", "work"):
        os.makedirs(os.path.join(w, sub))
    _image(os.path.join(outside, "outside.png"))
    _image(os.path.join(outside, "outside.jpg"))
    _write(os.path.join(outside, "outside.xml"), h.voc_xml())
    _write(os.path.join(outside, "secret.txt"), "train\n")
    voc = _flat(os.path.join(user, "voc"))
    _image(os.path.join(user, "photo.png"))
    spec = {"kind": "voc", "root": voc, "layout": "flat", "classes": ["a", "b"],
            "drop_other_classes": False, "train_ids": ["im0", "im1", "im2", "im3", "im4"],
            "val_ids": ["im5"]}
    _checkpoint(os.path.join(user, "ckpt", "best.npz"), spec)
    run = os.path.join(user, "run")
    _checkpoint(os.path.join(run, "last.npz"), spec)
    _write(os.path.join(run, "metrics.jsonl"), '{"step": 1, "loss": 3.0}\n')
    return {"root": w, "user": user, "outside": outside, "voc": voc, "spec": spec,
            "ckpt": os.path.join(user, "ckpt", "best.npz"), "run": run,
            "photo": os.path.join(user, "photo.png"), "out": os.path.join(w, "out")}


def _snapshot(*folders):
    """{path: sha256} of every file (and FIFO: its kind) under the folders."""
    out = {}
    for folder in folders:
        for d, _, files in os.walk(folder):
            for name in files:
                p = os.path.join(d, name)
                if not os.path.isfile(p):
                    out[p] = "not a regular file"
                    continue
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_group(world, cases, as_limit=AS_LIMIT):
    """Run the cases ((name, module, argv, expect, extra)) in one driver subprocess; check
    each one's expectation, and that user/ and outside/ are unchanged. Returns the results."""
    w = world["root"]
    before = _snapshot(world["user"], world["outside"], os.path.join(w, "work"))
    spec = [{"name": n, "module": m, "argv": [str(a) for a in argv],
             "timeout": CASE_SECONDS, **(extra or {})} for n, m, argv, _, extra in cases]
    cases_json = _write(os.path.join(w, "cases.json"), json.dumps(spec))
    results_json = os.path.join(w, "results.json")
    env = {**os.environ, "HOME": os.path.join(w, "home"), "MINISSD_CACHE":
           os.path.join(w, "cache"), "MPLCONFIGDIR": os.path.join(w, "mpl"),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "CUDA_VISIBLE_DEVICES": "",          # CUDA reserves more address space than AS_LIMIT
           "HOSTILE_AS_BYTES": str(as_limit), "HOSTILE_CPU_SECONDS": "600",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}
    proc = subprocess.run([sys.executable, DRIVER, cases_json, results_json], cwd=os.path.join(
        w, "work"), env=env, capture_output=True, text=True,
        timeout=CASE_SECONDS * len(cases) + 60)
    assert proc.returncode == 0, f"the driver died ({proc.returncode}): {proc.stderr[-3000:]}"
    with open(results_json) as f:
        results = {r["name"]: r for r in json.load(f)}
    for name, _, _, expect, _ in cases:
        check(results[name], expect)
    assert _snapshot(world["user"], world["outside"], os.path.join(w, "work")) == before, \
        "a command changed, added or removed a file of the user (or outside the data root)"
    return results


def check(r, expect):
    """expect: ("error", text): exit 2, the LAST stderr line is the one error line and holds
    text; ("ok", text): exit 0 and text somewhere in the output. Never a traceback, never a
    raw escape character."""
    kind, text = expect
    where = f"case {r['name']!r}: code {r['code']}, {r['seconds']:.1f}s\n{r['stderr'][-2500:]}"
    assert "Traceback" not in r["stderr"] + r["stdout"], where
    assert "\x1b" not in r["stderr"] + r["stdout"], where
    assert r["seconds"] < CASE_SECONDS, where
    if kind == "error":
        lines = r["stderr"].strip().splitlines()
        assert r["code"] == 2, where
        assert [ln for ln in lines if ": error: " in ln] == lines[-1:], where
        assert text in lines[-1], where
    else:
        assert r["code"] == 0, where
        assert text in r["stdout"] + r["stderr"], where


D, E, T = "minissd.detect", "minissd.evaluate", "minissd.train"


# ------------------------------------------------------------------ items 1, 2: .pth files
def test_pth_corpus_every_reader_command(world):
    """Each hostile .pth through detect --weights, evaluate --weights and (for a few)
    train --pretrained-vgg: one line naming the file, in bounded time and memory. On the code
    before issue 23, "negative stride" crashed detect with a segmentation fault (or read heap
    memory), "zero strides, huge size" and "legacy huge numel" raised MemoryError, "nested
    [x, x] depth 60" never ended, "list containing itself" raised RecursionError, and the
    fuzzer's "memo slot huge" allocated 1.3 GB."""
    folder = os.path.join(world["root"], "pth")
    os.makedirs(folder)
    cases = []
    for i, name in enumerate(h.PTH_CASES):
        path = h.pth_case(name, os.path.join(folder, f"case{i}.pth"))
        cases.append((f"detect {name}", D, ["--weights", path, world["photo"], "--out",
                                             os.path.join(world["out"], "d")],
                      ("error", path), None))
        if i % 3 == 0:
            cases.append((f"evaluate {name}", E, ["--weights", path, "--voc-root",
                                                   world["voc"]], ("error", path), None))
    for name in ("negative stride", "nested [x, x] depth 60"):
        path = h.pth_case(name, os.path.join(folder, "vgg.pth"))
        cases.append((f"train {name}", T, ["--config", "ssd300", "--pretrained-vgg", path,
                                           "--voc-root", world["voc"], "--out",
                                           os.path.join(world["out"], "t-" + name[:4])] + FAST,
                      ("error", path), None))
    fifo = os.path.join(folder, "fifo.pth")
    os.mkfifo(fifo)
    cases.append(("detect FIFO weights", D, ["--weights", fifo, world["photo"], "--out",
                                             os.path.join(world["out"], "d")],
                  ("error", "fifo.pth"), None))
    results = run_group(world, cases, as_limit=2 << 30)
    assert max(r["maxrss_mb"] for r in results.values()) < 1500


@pytest.mark.parametrize("name", list(h.PTH_CASES))
def test_pth_reader_refuses_in_process(tmp_path, name):
    """The same corpus, read directly: a CheckpointError naming the file, in under 2 s."""
    path = h.pth_case(name, str(tmp_path / "x.pth"))
    t = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        read_torch_checkpoint(path)
    assert path in str(e.value) and time.perf_counter() - t < 2


def test_valid_hand_made_pth_still_reads(tmp_path):
    """The pickle writer of the corpus writes what torch writes: a valid file reads back."""
    for layout in ("zip", "legacy"):
        out = read_torch_checkpoint(h.good_pth(str(tmp_path / f"{layout}.pth"), layout))
        np.testing.assert_array_equal(out["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
        np.testing.assert_array_equal(out["b"], out["w"].T)


def test_shared_tensor_read_once_and_stays_shared(tmp_path):
    """[x, x] nested 20 deep is 2^20 paths to one tensor: read in linear time, one array."""
    path = h.zip_pth(str(tmp_path / "s.pth"), {"w": h.tensor("0", (2,), (1,)),
                                               "deep": h._nested_pairs(20, [1])},
                     {"0": h._floats(2)})
    t = time.perf_counter()
    assert list(read_torch_checkpoint(path)) == ["w"]
    assert time.perf_counter() - t < 1


# ------------------------------------------------------------------ items 3, 5, 12: checkpoints
def test_checkpoint_corpus(world):
    """Crafted minissd checkpoints: a synthetic set of millions of images (item 3), a huge
    image size or network, class names with terminal escapes (item 5: printed escaped), and,
    for --resume, no optimizer state, malformed settings / config / spec, arrays that do not
    fit (item 12)."""
    u, spec = world["user"], world["spec"]
    ck = os.path.join(world["root"], "ckpts")
    os.makedirs(ck)
    synthetic = {"kind": "synthetic", "num_train": 10**7, "num_val": 10**6,
                 "image_size": 128, "seed": 0}

    def meta(**kw):
        return lambda m: m.update(kw)

    def cfg(**kw):
        return lambda m: m["config"].update(kw)

    made = {
        "synthetic 10^7 images": _checkpoint(f"{ck}/a.npz", synthetic),
        "synthetic image 10^6 px": _checkpoint(f"{ck}/b.npz", {**synthetic, "num_train": 5,
                                                               "num_val": 2,
                                                               "image_size": 10**6}),
        "synthetic size a string": _checkpoint(f"{ck}/c.npz", {**synthetic, "num_val": "9"}),
        "config image_size 10^6": _checkpoint(f"{ck}/d.npz", spec,
                                              meta_edit=cfg(image_size=10**6)),
        "config huge extras": _checkpoint(f"{ck}/e.npz", spec, meta_edit=cfg(
            extras=[[60000, 3, 1, 1]] * 8)),
        "config a string": _checkpoint(f"{ck}/f.npz", spec, meta_edit=meta(config="x")),
        "data spec path split": _checkpoint(f"{ck}/g.npz", {**spec, "train_ids": None,
                                                            "val_ids": None,
                                                            "val": ["../../outside/secret"]}),
    }
    cases = [(f"evaluate {k}", E, ["--checkpoint", p, "--out", world["out"]],
              ("error", ""), None) for k, p in made.items()]
    cache = os.path.join(world["root"], "cache")
    escape = _checkpoint(f"{ck}/esc.npz", {**spec, "classes": ["\x1b[2J\x1b]0;pwn\x07a", "b"],
                                           "drop_other_classes": True},
                         names=("\x1b[2J\x1b]0;pwn\x07a", "b"))
    cases.append(("evaluate escapes", E, ["--checkpoint", escape, "--metric", "voc07", "--out",
                                          world["out"]], ("ok", "\\x1b[2J"), None))
    resume = {
        "no optimizer state": _checkpoint(f"{ck}/r1/last.npz", spec, optim=False),
        "settings malformed": _checkpoint(f"{ck}/r2/last.npz", spec, meta_edit=lambda m:
                                          m["settings"].update(batch_size="x")),
        "settings missing": _checkpoint(f"{ck}/r3/last.npz", spec,
                                        meta_edit=lambda m: m.pop("settings")),
        "spec malformed": _checkpoint(f"{ck}/r4/last.npz", spec, meta_edit=meta(data=[1])),
        "arrays mismatched": _checkpoint(f"{ck}/r5/last.npz", spec, arrays_edit=lambda a: a.update(
            {k: np.zeros(3, np.float32) for k in list(a)[:2]})),
        "step negative": _checkpoint(f"{ck}/r6/last.npz", spec, meta_edit=meta(step=-5)),
    }
    cases += [(f"resume {k}", T, ["--resume", p] + FAST, ("error", "--resume"), None)
              for k, p in resume.items()]
    results = run_group(world, cases)
    assert not any(n.startswith("synthetic-") for n in os.listdir(cache)), \
        "a crafted checkpoint made evaluate generate a synthetic set"
    assert "optimizer state" in results["resume no optimizer state"]["stderr"]


# ------------------------------------------------------------------ items 4, 10, 12, 13: data
def test_coco_corpus(world):
    """Each hostile COCO file through train (and evaluate for some): one line naming the
    file; file_names leaving the images folder are refused before anything is read."""
    folder = os.path.join(world["root"], "coco")
    images = os.path.join(folder, "images")
    _image(os.path.join(images, "a.png"))
    cases = []
    for i, (name, text) in enumerate(h.COCO_CASES.items()):
        ann = _write(os.path.join(folder, f"case{i}.json"), text)
        cases.append((f"train {name}", T, ["--coco-root", images, "--coco-ann", ann, "--out",
                                            os.path.join(world["out"], f"c{i}")] + FAST,
                      ("error", ann), None))
        if i % 4 == 0:
            cases.append((f"evaluate {name}", E, ["--checkpoint", world["ckpt"], "--coco-root",
                                                   images, "--coco-ann", ann],
                          ("error", ann), None))
    empty = _write(os.path.join(folder, "empty.json"), json.dumps(h.coco(annotations=[])))
    cases.append(("train no annotations", T, ["--coco-root", images, "--coco-ann", empty,
                                              "--out", os.path.join(world["out"], "ce")] + FAST,
                  ("error", "nothing to learn"), None))
    fifo = os.path.join(folder, "fifo.json")
    os.mkfifo(fifo)
    cases.append(("train FIFO annotations", T, ["--coco-root", images, "--coco-ann", fifo,
                                                "--out", os.path.join(world["out"], "cf")]
                  + FAST, ("error", "FIFO"), None))
    run_group(world, cases)


def test_voc_corpus(world):
    """VOC folders: a VOCdevkit split id leaving the folder (item 4), labels.txt and split
    files that are not UTF-8 or are FIFOs (items 12, 13), a FIFO named a.xml (item 13: it
    used to hang), and one annotation per VOC_XML_CASES in a folder that otherwise trains:
    the bad file is skipped with a warning naming it, the run finishes (items 10, 11)."""
    root = os.path.join(world["root"], "voc")
    devkit = os.path.join(root, "devkit")
    year = os.path.join(devkit, "VOC2007")
    _image(os.path.join(year, "JPEGImages", "0001.jpg"))
    _write(os.path.join(year, "Annotations", "0001.xml"), h.voc_xml(objects=(("dog", "5", "6",
                                                                              "30", "40"),)))
    _write(os.path.join(year, "ImageSets", "Main", "trainval.txt"),
           "0001\n../../../../outside/outside\n")
    _write(os.path.join(year, "ImageSets", "Main", "test.txt"), "0001\n")
    cases = [("devkit id leaves the folder", T, ["--voc-root", devkit, "--out",
                                                 os.path.join(world["out"], "v0")] + FAST,
              ("error", "is a path"), None)]
    latin = _flat(os.path.join(root, "latin1"), n=4)
    _write(os.path.join(latin, "labels.txt"), "a\nb\xe9\n".encode("latin-1"))
    cases.append(("labels.txt not UTF-8", T, ["--voc-root", latin, "--out",
                                             os.path.join(world["out"], "v1")] + FAST,
                  ("error", "not UTF-8"), None))
    split = os.path.join(root, "split")
    _flat(os.path.join(split, "JPEGImages"), n=4)
    for f in os.listdir(os.path.join(split, "JPEGImages")):
        if f.endswith(".xml"):
            os.makedirs(os.path.join(split, "Annotations"), exist_ok=True)
            os.rename(os.path.join(split, "JPEGImages", f), os.path.join(split, "Annotations", f))
    _write(os.path.join(split, "ImageSets", "Main", "train.txt"), b"im0\nim1\xff\n")
    _write(os.path.join(split, "ImageSets", "Main", "val.txt"), b"im2\n")
    cases.append(("split file not UTF-8", T, ["--voc-root", split, "--out",
                                             os.path.join(world["out"], "v2")] + FAST,
                  ("error", "not UTF-8"), None))
    fifo_labels = _flat(os.path.join(root, "fifolabels"), n=4)
    os.mkfifo(os.path.join(fifo_labels, "labels.txt"))
    cases.append(("labels.txt a FIFO", T, ["--voc-root", fifo_labels, "--out",
                                          os.path.join(world["out"], "v3")] + FAST,
                  ("error", "FIFO"), None))
    fifo_xml = _flat(os.path.join(root, "fifoxml"), n=4)
    os.remove(os.path.join(fifo_xml, "im3.xml"))
    os.mkfifo(os.path.join(fifo_xml, "im3.xml"))
    os.mkfifo(os.path.join(fifo_xml, "im9.png"))
    cases.append(("a FIFO named a.xml", T, ["--voc-root", fifo_xml, "--out",
                                           os.path.join(world["out"], "v4")] + FAST,
                  ("ok", "VOC07"), None))
    bad = _flat(os.path.join(root, "bad"), n=len(h.VOC_XML_CASES) + 4,
                bad={f"im{i}": x for i, x in enumerate(h.VOC_XML_CASES.values())})
    cases.append(("bad XMLs are skipped", T, ["--voc-root", bad, "--classes", "a,b", "--out",
                                             os.path.join(world["out"], "v5"), "--iters", "6"]
                  + FAST[2:], ("ok", "skipping image"), None))
    cases.append(("evaluate skips bad XMLs", E, ["--checkpoint", world["ckpt"], "--voc-root",
                                                 bad, "--out", world["out"]],
                  ("ok", "mAP"), None))
    results = run_group(world, cases)
    warned = results["bad XMLs are skipped"]["stderr"] + \
        results["evaluate skips bad XMLs"]["stderr"]
    assert "<size/width> is 'inf'" in warned or "is 'inf'" in warned, warned[-2000:]


@pytest.mark.parametrize("name", list(h.VOC_XML_CASES))
def test_voc_xml_reader_refuses_in_process(tmp_path, name):
    """Each hostile annotation is a DataError naming the file (and the field for numbers)."""
    folder = str(tmp_path)
    _image(os.path.join(folder, "x.png"))
    xml = _write(os.path.join(folder, "x.xml"), h.VOC_XML_CASES[name])
    ds = VOCDataset(folder, splits=("all",), classes=("a",))
    with pytest.raises(DataError) as e:
        ds.annotation(0)
    assert xml in str(e.value)
    field = name.split()[0]
    if field in ("width", "height", "xmin", "xmax", "ymax"):
        assert field in str(e.value)


@pytest.mark.parametrize("name", list(h.COCO_CASES))
def test_coco_reader_refuses_in_process(tmp_path, name):
    folder = str(tmp_path)
    _image(os.path.join(folder, "img", "a.png"))
    _image(os.path.join(folder, "outside.png"))
    ann = _write(os.path.join(folder, "ann.json"), h.COCO_CASES[name])
    with pytest.raises(DataError) as e:
        COCODataset(os.path.join(folder, "img"), ann)
    assert ann in str(e.value)


def test_coco_iscrowd_string_and_printable_names(tmp_path):
    """iscrowd "0" is not a crowd (it used to make every object one), "1" is; a category
    name's escape characters are escaped (item 5); a file without annotations warns."""
    folder = str(tmp_path)
    _image(os.path.join(folder, "a.png"))
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 30], "iscrowd": "0"},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8, 5, 20, 30], "iscrowd": "1"}]
    ann = _write(os.path.join(folder, "ann.json"), json.dumps(h.coco(
        annotations=anns, categories=[{"id": 1, "name": "\x1b[31mred\u202e"}])))
    ds = COCODataset(folder, ann, keep_difficult=True)
    assert ds.annotation(0).difficult.tolist() == [False, True]
    assert ds.class_names == ("\\x1b[31mred\\u202e",)
    empty = _write(os.path.join(folder, "empty.json"), json.dumps(h.coco(annotations=[])))
    with pytest.warns(UserWarning, match="no annotations"):
        COCODataset(folder, empty)


def test_paths_kept_inside():
    assert inside("/r", "a/b.png") == "/r/a/b.png"
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "..", "a\\..\\x"):
        assert inside("/r", bad) is None
    assert printable("ok é 日本") == "ok é 日本"
    assert printable("a\x1b[2Jb\x07\u202e") == "a\\x1b[2Jb\\x07\\u202e"


# ------------------------------------------------------------------ item 9: 16-bit PNG
def test_16_bit_grayscale_png_scaled_to_8_bits(tmp_path):
    """A 16-bit grayscale PNG (mode I;16) used to load as solid white (Pillow clips it)."""
    values = np.array([[0, 257, 32896], [65535, 25700, 1000]], np.uint16)
    path = str(tmp_path / "g16.png")
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    got = load_image(path)
    assert got.shape == (2, 3, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[:, :, 0], np.round(values / 257).astype(np.uint8))
    np.testing.assert_array_equal(got[:, :, 0], got[:, :, 2])


# ------------------------------------------------------------------ items 7, 8, 12: outputs
def test_outputs_never_replace_user_files(world):
    """A new run into an existing run (item 7) or a folder of the user's curves.png is
    refused without --overwrite; the synthetic writer refuses a folder it did not write;
    --out that is a file is refused; evaluate whose pr_curves.png cannot be written still
    prints its results (and --json its line), with a warning (item 12); a full disk (a
    file-size limit) ends train with one line (item 12)."""
    run, out = world["run"], world["out"]
    mine = os.path.join(world["user"], "mine")
    _write(os.path.join(mine, "curves.png"), b"my own picture")
    a_file = _write(os.path.join(world["user"], "afile.txt"), "x")
    cases = [
        ("new run into a run", T, ["--voc-root", world["voc"], "--out", run] + FAST,
         ("error", "already holds a run"), None),
        ("new run over curves.png", T, ["--voc-root", world["voc"], "--out", mine] + FAST,
         ("error", "--overwrite"), None),
        ("--out a file", T, ["--voc-root", world["voc"], "--out", a_file] + FAST,
         ("error", "is a file"), None),
        ("synthetic into the user's folder", "minissd.data.synthetic",
         ["--out", world["voc"], "--num-train", "2", "--num-val", "1"],
         ("error", "not empty"), None),
        ("evaluate, pr_curves unwritable", E, ["--checkpoint", world["ckpt"], "--out", a_file,
                                               "--json", "--metric", "voc07"],
         ("ok", '"map"'), None),
        ("full disk", T, ["--voc-root", world["voc"], "--out", os.path.join(out, "full")] + FAST,
         ("error", "cannot write"), {"fsize": 200_000}),
    ]
    results = run_group(world, cases)
    r = results["evaluate, pr_curves unwritable"]
    assert "warning: could not write" in r["stderr"]
    assert json.loads(r["stdout"].strip().splitlines()[-1])["pr_curves"] is None


def test_overwrite_replaces_a_run(world):
    """--overwrite lets a new run replace the earlier one; metrics.jsonl starts afresh."""
    run = os.path.join(world["out"], "overwritten")
    _write(os.path.join(run, "metrics.jsonl"), '{"step": 99, "loss": 1.0}\n')
    run_group(world, [("overwrite", T, ["--voc-root", world["voc"], "--out", run,
                                        "--overwrite"] + FAST, ("ok", "VOC07"), None)])
    with open(os.path.join(run, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if "loss" in line]
    assert 99 not in steps and steps


def test_metrics_cut_short_is_dropped_before_appending(tmp_path, capsys):
    """An interrupted write leaves half a line; --resume used to fail on it (item 8)."""
    out = str(tmp_path)
    _write(os.path.join(out, "metrics.jsonl"), '{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    log = RunLog(out, 2, 4, progress=False)
    assert [r["step"] for r in log.history] == [1]
    log.write({"step": 3, "loss": 1.0})
    log.close()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 3]
    assert "cut short" in capsys.readouterr().err


def test_resume_with_cut_short_metrics(world):
    """The whole --resume path on a run whose metrics.jsonl ends in half a line."""
    run = os.path.join(world["out"], "resumed")
    results = run_group(world, [("first", T, ["--voc-root", world["voc"], "--out", run] + FAST,
                                 ("ok", "VOC07"), None)])
    assert results
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write('{"step": 2, "lo')
    run_group(world, [("resume", T, ["--resume", os.path.join(run, "last.npz"), "--iters",
                                     "3", "--no-progress", "--workers", "0"],
                       ("ok", "VOC07"), None)])


# ------------------------------------------------------------------ items 10, 12: flags
def test_flags_validated(world):
    bad = [("--lr", "-1"), ("--lr", "nan"), ("--clip-norm", "-1"), ("--val-limit", "0"),
           ("--log-every", "0"), ("--epochs", "nan"), ("--epochs", "inf"),
           ("--image-size", "100000"), ("--momentum", "1.5"), ("--num-train", "1000000000")]
    cases = [(f"{flag} {v}", T, ["--voc-root", world["voc"], "--out",
                                 os.path.join(world["out"], "flags")] + FAST + [flag, v],
              ("error", flag), None) for flag, v in bad]
    run_group(world, cases)


# ------------------------------------------------------------------ item 12: file names
def test_non_utf8_file_names(world):
    """A flat export whose image names are not UTF-8: the run trains and writes its made
    split (the names' own bytes); the hash of such a name is the hash of its bytes."""
    folder = os.fsencode(os.path.join(world["root"], "latin"))
    os.makedirs(folder, exist_ok=True)
    for i in range(6):
        stem = b"caf\xe9%d" % i
        Image.new("RGB", (64, 48), 90).save(os.path.join(folder, stem + b".png"))
        with open(os.path.join(folder, stem + b".xml"), "wb") as f:
            f.write(h.voc_xml(objects=(("a", "5", "6", "30", "40"),)))
    run = os.path.join(world["out"], "latin")
    run_group(world, [("non-UTF-8 names", T, ["--voc-root", os.fsdecode(folder), "--out", run]
                       + FAST, ("ok", "VOC07"), None)])
    with open(os.path.join(run, "split_val.txt"), "rb") as f:
        assert b"caf\xe9" in f.read()
    assert 0 <= hash_fraction(os.fsdecode(b"caf\xe90")) < 1


# ------------------------------------------------------------------ one real command
def test_real_command_segfault_case(world):
    """A negative-stride tensor through the real command line, python -m minissd.detect, under
    RLIMIT_AS / RLIMIT_CPU: exit 2 and one line (the old reader died of SIGSEGV, exit -11)."""
    path = h.pth_case("negative stride, far", os.path.join(world["root"], "neg.pth"))

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))

    proc = subprocess.run([sys.executable, "-m", "minissd.detect", "--weights", path,
                           world["photo"], "--out", os.path.join(world["out"], "real"),
                           "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, preexec_fn=limits,
                          cwd=os.path.join(world["root"], "work"),
                          env={**os.environ, "MPLCONFIGDIR": os.path.join(world["root"], "mpl"),
                               "OPENBLAS_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert [ln for ln in lines if ": error: " in ln] == lines[-1:] and path in lines[-1]


# ------------------------------------------------------------------ items 11, 13 in process
def test_fifo_annotation_in_a_devkit_is_refused_without_blocking(tmp_path):
    """A VOCdevkit lists its annotations by id, so a FIFO Annotations/<id>.xml is opened:
    refused at once (O_NONBLOCK + fstat), where the old reader waited for a writer forever."""
    year = tmp_path / "VOC2007"
    _image(str(year / "JPEGImages" / "0001.jpg"))
    _write(str(year / "ImageSets" / "Main" / "test.txt"), "0001\n")
    os.makedirs(year / "Annotations")
    os.mkfifo(year / "Annotations" / "0001.xml")
    ds = VOCDataset(str(tmp_path), splits=("2007/test",))
    t = time.perf_counter()
    with pytest.raises(DataError, match="FIFO"):
        ds.annotation(0)
    assert time.perf_counter() - t < 1


class _Flaky:
    """A dataset whose listed images raise what a bad file raises inside the readers."""
    class_names = ("a",)

    def __init__(self, n, bad):
        self.n, self.bad = n, bad

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.bad:
            raise self.bad[i]
        from minissd.data.voc import Sample
        return Sample(np.zeros((8, 8, 3), np.uint8), np.array([[0.1, 0.1, 0.6, 0.6]],
                      np.float32), np.array([1]), np.zeros(1, bool), str(i))


def test_loader_skips_overflow_and_stops_on_an_unreadable_epoch():
    """OverflowError (an XML <width>inf</width> on the old reader) used to pass the loader's
    skip logic and stop a long run; a dataset whose every file fails used to loop forever."""
    from minissd.config import CAFFE_PREPROCESS
    from minissd.data.loader import DataLoader

    def identity(image, boxes, labels, rng):
        return image.astype(np.float32), boxes, labels

    loader = DataLoader(_Flaky(4, {1: OverflowError("inf"), 2: ZeroDivisionError("0")}), 2,
                        identity, CAFFE_PREPROCESS, shuffle=False, num_workers=0)
    with pytest.warns(UserWarning, match="skipping image"):
        batches = [b for _, b in zip(range(4), loader.batches(0))]
    assert [len(t) for _, t in batches] == [1, 1, 1, 1] and loader.skipped == 4
    broken = DataLoader(_Flaky(4, {i: OverflowError("inf") for i in range(4)}), 2, identity,
                        CAFFE_PREPROCESS, shuffle=False, num_workers=0)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="could be read"):
        next(iter(broken))


# ------------------------------------------------------------------ items 7, 12: small checks
def test_pictures_are_written_atomically(tmp_path):
    """A picture whose write fails half-way leaves the old file, and no temporary file."""
    from minissd.viz import new_axes, save_figure
    path = _write(str(tmp_path / "curves.png"), b"the old picture")
    ax = new_axes()

    def broken(target, **kw):
        with open(target, "wb") as f:
            f.write(b"half a pic")
        raise OSError(28, "No space left on device")

    ax.figure.savefig = broken
    with pytest.raises(OSError):
        save_figure(ax.figure, path)
    assert open(path, "rb").read() == b"the old picture" and os.listdir(tmp_path) == [
        "curves.png"]


def test_synthetic_out_accepts_only_its_own_output(tmp_path):
    from minissd.data import synthetic
    assert synthetic._not_ours(str(tmp_path / "new")) is None
    assert synthetic._not_ours(str(tmp_path)) is None                     # empty
    synthetic.generate(str(tmp_path / "set"), num_train=1, num_val=1, image_size=32)
    assert synthetic._not_ours(str(tmp_path / "set")) is None             # its own output
    _write(str(tmp_path / "set" / "labels.txt"), "cat\n")
    assert "did not write" in synthetic._not_ours(str(tmp_path / "set"))
    _write(str(tmp_path / "mine" / "notes.txt"), "mine")
    assert "not empty" in synthetic._not_ours(str(tmp_path / "mine"))


def test_out_read_only_is_one_line(tmp_path, capsys, monkeypatch):
    """--out inside a read-only folder: one line before any work (root, who may write
    anywhere, is shown the folder as read-only through os.access)."""
    from cli_checks import fails
    from minissd import train
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(
            ro) and mode & os.W_OK else real(p, mode, **kw))
    try:
        line = fails(["--out", str(ro / "run")] + FAST, capsys, module=train)
    finally:
        ro.chmod(0o700)
    assert "not writable" in line


@pytest.mark.parametrize("target", ["fuzz_torchfile.py", "fuzz_voc.py", "fuzz_coco.py"])
def test_fuzz_targets_run(target, tmp_path):
    """Each fuzz target runs its seeds (the corpus above) without a finding (a few runs only:
    the real fuzzing is the bounded command of README's "Untrusted files")."""
    pytest.importorskip("atheris", reason="the fuzz targets need it: pip install atheris")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "fuzz", target), "-runs=30",
                           "-rss_limit_mb=2048", "-timeout=20",
                           f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path),
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0 and "Done" in proc.stderr, proc.stderr[-3000:]
