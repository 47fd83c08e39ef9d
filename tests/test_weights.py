"""minissd.weights: .pth reading without torch, VGG16 / ssd.pytorch import, .npz checkpoints.

The .pth fixtures and their expected values (expected.npz) come from
tests/fixtures/make_fixtures.py, run once with torch; these tests never import torch.
"""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from minissd import weights
from minissd.weights import (CheckpointError, UnsafeCheckpointError, load_checkpoint,
                             load_ssd_pytorch, read_torch_checkpoint, save_checkpoint,
                             vgg16_from_torchvision)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
STATE_KEYS = ("conv.weight", "conv.bias", "transposed", "sliced", "half", "bf16", "int64",
              "int32", "uint8", "bool", "double", "scalar", "empty")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURES, "expected.npz")) as z:
        return {k: z[k] for k in z.files}


def assert_same(got, want, name):
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    np.testing.assert_array_equal(got, want, err_msg=name)


# --- reading .pth files ------------------------------------------------------------------

@pytest.mark.parametrize("fname", ["state_zip.pth", "state_legacy.pth"])
def test_read_state_dict_both_layouts(fname, expected):
    state = read_torch_checkpoint(os.path.join(FIXTURES, fname))
    assert list(state) == list(STATE_KEYS)          # order of the OrderedDict kept
    for k in STATE_KEYS:
        assert_same(state[k], expected[k], f"{fname}:{k}")
        assert state[k].flags.c_contiguous


def test_read_torch03_rebuild_tensor(expected):
    """torch 0.3's legacy files (ssd.pytorch's vgg16_reducedfc.pth era) use _rebuild_tensor."""
    state = read_torch_checkpoint(os.path.join(FIXTURES, "old_v1.pth"))
    assert list(state) == ["conv.weight", "transposed", "sliced", "half", "int64"]
    for k, v in state.items():
        assert_same(v, expected[k], k)


def test_noncontiguous_fixture_really_is_strided(expected):
    # "transposed" is big.t() and "sliced" is big[2:5, 1::3]: both cut from one (6, 8) storage.
    big = expected["transposed"].T
    assert_same(expected["sliced"], big[2:5, 1::3], "sliced")


def test_training_checkpoint_with_ddp_prefix(expected):
    state = read_torch_checkpoint(os.path.join(FIXTURES, "ddp_checkpoint.pth"))
    assert sorted(state) == ["extras.1.bias", "vgg.0.weight"]
    for k in state:
        assert_same(state[k], expected["ddp/" + k], k)


def test_reducedfc_keys_mapped(expected):
    raw = read_torch_checkpoint(os.path.join(FIXTURES, "reducedfc_like.pth"))
    state = load_ssd_pytorch(raw)
    assert sorted(state) == sorted(f"vgg.{i}.{p}" for i in (0, 2, 31, 33)
                                   for p in ("weight", "bias"))
    for i in (0, 2, 31, 33):
        assert_same(state[f"vgg.{i}.weight"], expected[f"reducedfc/{i}.weight"], str(i))


def test_load_ssd_pytorch_keeps_ssd_names_and_refuses_others():
    a = np.ones((2, 2), np.float64)
    out = load_ssd_pytorch({"module.vgg.0.weight": a, "L2Norm.weight": a, "conf.5.bias": a})
    assert sorted(out) == ["L2Norm.weight", "conf.5.bias", "vgg.0.weight"]
    assert out["vgg.0.weight"].dtype == np.float32
    with pytest.raises(KeyError, match="head.weight"):
        load_ssd_pytorch({"head.weight": a})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")


@pytest.mark.parametrize("layout", ["zip", "legacy", "raw"])
def test_malicious_pickle_refused_and_not_executed(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Evil(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        _zip_with_pickle(path, payload)
    elif layout == "legacy":
        buf = io.BytesIO()
        for obj in (weights._LEGACY_MAGIC, weights._LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, buf, protocol=2)
        path.write_bytes(buf.getvalue() + payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError) as e:
        read_torch_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "system" in msg
    assert not marker.exists()


def test_eval_global_refused(tmp_path):
    path = tmp_path / "eval.pth"
    _zip_with_pickle(path, pickle.dumps(_EvilEval(), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins?_*\.eval"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize("fname", ["state_zip.pth", "state_legacy.pth"])
def test_truncated_file_names_the_file(tmp_path, fname):
    data = open(os.path.join(FIXTURES, fname), "rb").read()
    for cut in (len(data) // 3, len(data) - 5):
        path = tmp_path / f"cut{cut}_{fname}"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(path.name)):
            read_torch_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello, this is text")
    with pytest.raises(CheckpointError, match="notes.pth"):
        read_torch_checkpoint(path)


# --- torchvision VGG16 -> SSD300 base ----------------------------------------------------

def _synthetic_vgg16(rng, fc_values="column"):
    """torchvision vgg16 names and shapes. The fc weights (400 MB as real arrays) are
    zero-copy broadcast views whose value is the column index (fc_values="column") or the row
    index ("row"), so the decimation can be checked by position."""
    widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    state, c_in = {}, 3
    for i, c in zip(weights._VGG16_CONVS, widths):
        state[f"features.{i}.weight"] = rng.standard_normal((c, c_in, 3, 3)).astype(np.float32)
        state[f"features.{i}.bias"] = rng.standard_normal(c).astype(np.float32)
        c_in = c
    for key, (rows, cols) in (("classifier.0", (4096, 25088)), ("classifier.3", (4096, 4096))):
        if fc_values == "column":
            w = np.broadcast_to(np.arange(cols, dtype=np.float32), (rows, cols))
        else:
            w = np.broadcast_to(np.arange(rows, dtype=np.float32)[:, None], (rows, cols))
        state[key + ".weight"] = w
    state["classifier.0.bias"] = np.arange(4096, dtype=np.float32)
    state["classifier.3.bias"] = np.arange(4096, dtype=np.float32) + 0.5
    return state


def test_vgg16_from_torchvision(rng):
    tv = _synthetic_vgg16(rng, "column")
    out = vgg16_from_torchvision(tv)
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert sorted(out) == sorted(f"vgg.{i}.{p}" for i in convs + (31, 33)
                                 for p in ("weight", "bias"))
    for i in convs:
        np.testing.assert_array_equal(out[f"vgg.{i}.weight"], tv[f"features.{i}.weight"])
        np.testing.assert_array_equal(out[f"vgg.{i}.bias"], tv[f"features.{i}.bias"])
    w6, b6 = out["vgg.31.weight"], out["vgg.31.bias"]
    w7, b7 = out["vgg.33.weight"], out["vgg.33.bias"]
    assert w6.shape == (1024, 512, 3, 3) and w7.shape == (1024, 1024, 1, 1)
    assert b6.shape == b7.shape == (1024,)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in out.values())
    # fc6 input column of conv6[o, c, ky, kx] is c*49 + 7*(3 ky) + 3 kx  (taps 0, 3, 6)
    c, ky, kx = np.meshgrid(np.arange(512), np.arange(3), np.arange(3), indexing="ij")
    np.testing.assert_array_equal(w6[7], (c * 49 + 21 * ky + 3 * kx).astype(np.float32))
    # fc7 input column of conv7[o, c] is 4 c
    np.testing.assert_array_equal(w7[5, :, 0, 0], np.arange(0, 4096, 4, dtype=np.float32))
    np.testing.assert_array_equal(b6, np.arange(0, 4096, 4, dtype=np.float32))
    np.testing.assert_array_equal(b7, np.arange(0, 4096, 4, dtype=np.float32) + 0.5)
    # output rows: 4 o for both
    out = vgg16_from_torchvision(_synthetic_vgg16(rng, "row"))
    rows = np.arange(0, 4096, 4, dtype=np.float32)
    np.testing.assert_array_equal(out["vgg.31.weight"][:, 3, 1, 2], rows)
    np.testing.assert_array_equal(out["vgg.33.weight"][:, 9, 0, 0], rows)


def test_vgg16_from_torchvision_missing_key(rng):
    tv = _synthetic_vgg16(rng)
    del tv["classifier.3.weight"]
    with pytest.raises(KeyError, match="classifier.3.weight"):
        vgg16_from_torchvision(tv)


# --- .npz checkpoints --------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path, rng):
    arrays = {"vgg.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "conf.0.bias": np.arange(6, dtype=np.float32)}
    optim = {"vgg.0.weight": rng.standard_normal((4, 3, 3, 3))}
    gen = np.random.default_rng(123)
    meta = {"config": {"name": "tiny", "image_size": 128}, "class_names": ["a", "b"],
            "step": np.int64(42), "rng": gen.bit_generator.state}
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, arrays, meta, optim_state=optim)
    got, got_meta = load_checkpoint(path)
    assert sorted(got) == sorted(arrays)
    for k in arrays:
        assert_same(got[k], arrays[k], k)
    assert_same(got_meta["optim_state"]["vgg.0.weight"], optim["vgg.0.weight"], "optim")
    assert got_meta["step"] == 42 and got_meta["class_names"] == ["a", "b"]
    assert got_meta["config"] == meta["config"]
    restored = np.random.default_rng()
    restored.bit_generator.state = got_meta["rng"]
    assert restored.random() == gen.random()
    assert os.listdir(tmp_path) == ["ckpt.npz"]          # no temp file left behind


def test_checkpoint_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.ones(3, np.float32)}, {"step": 1})
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(weights.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"a": np.zeros(3, np.float32)}, {"step": 2})
    assert path.read_bytes() == before                   # old checkpoint untouched
    assert os.listdir(tmp_path) == ["ckpt.npz"]          # temp file removed
    monkeypatch.undo()
    arrays, meta = load_checkpoint(path)
    assert meta["step"] == 1 and np.all(arrays["a"] == 1)


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="bad.npz"):
        load_checkpoint(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2))
    with pytest.raises(CheckpointError, match="plain.npz"):
        load_checkpoint(plain)
    with pytest.raises(TypeError, match="meta.npz"):
        save_checkpoint(tmp_path / "meta.npz", {}, {"x": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "r.npz", {"optim/x": np.ones(1)}, {})
