"""Weights in and out: VGG16, ssd.pytorch and torchvision SSD import, .npz checkpoints.

PyTorch .pth files are read without torch by minissd/torchfile.py (a restricted unpickler:
nothing in the file is executed); read_torch_checkpoint, CheckpointError and
UnsafeCheckpointError are re-exported here.

VGG16 import
------------
`vgg16_from_torchvision` turns torchvision's VGG16 (ImageNet) into SSD300's base, including
the paper's "reduced fc": fc6/fc7 decimated into conv6 (3x3, dilated) and conv7 (1x1).
`load_ssd_pytorch` takes ssd.pytorch's trained SSD300 or its `vgg16_reducedfc.pth`.
`import_torchvision_ssd300` takes torchvision's ssd300_vgg16 detector (minissd/pretrained.py).

Checkpoints
-----------
`save_checkpoint` / `load_checkpoint`: one .npz with the arrays plus a JSON string of metadata,
written atomically, read with allow_pickle=False (so reading one never runs code).
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .backend import to_numpy
from .pretrained import import_torchvision_ssd300  # noqa: F401  (public name)
from .torchfile import (_LEGACY_MAGIC, _LEGACY_PROTOCOL, MAX_INFLATION,  # noqa: F401
                        CheckpointError, UnsafeCheckpointError, read_torch_checkpoint)
from .untrusted import open_regular, printable


# --------------------------------------------------------------------------------------------
# VGG16 and ssd.pytorch weights -> our SSD300 names
# --------------------------------------------------------------------------------------------

# torchvision's vgg16.features indices of the 13 convs; ssd.pytorch's vgg list has the same
# indices up to conv5_3 (its third pool uses ceil mode but keeps index 16).
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_CONV6, _CONV7 = 31, 33          # after pool5 at 30; ReLUs at 32 and 34


def vgg16_from_torchvision(state: dict) -> dict:
    """torchvision VGG16 (ImageNet) -> SSD300 base weights {"vgg.<i>.weight/bias": array}.

    Inputs (torchvision names and shapes):
      features.<i>.weight (C_out, C_in, 3, 3), features.<i>.bias (C_out,) for the 13 convs
      classifier.0.weight (4096, 25088), classifier.0.bias (4096,)     fc6
      classifier.3.weight (4096, 4096),  classifier.3.bias (4096,)     fc7
    Returns:
      vgg.<i>.* for i in 0, 2, ..., 28 (copied), and the paper's decimated fc layers:
      vgg.31 = conv6: fc6 weight viewed as (4096, 512, 7, 7), then [::4, :, ::3, ::3]
               -> (1024, 512, 3, 3) (output channels 0, 4, ..., 4092; kernel taps 0, 3, 6 in
               each direction); bias [::4] -> (1024,)
      vgg.33 = conv7: fc7 weight [::4, ::4] -> (1024, 1024), then (1024, 1024, 1, 1)
               (output and input channels 0, 4, ..., 4092); bias [::4] -> (1024,)
    The result expects torchvision's preprocessing (RGB / 255, ImageNet mean and std).
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    out = {}
    for i in _VGG16_CONVS:
        for p in ("weight", "bias"):
            out[f"vgg.{i}.{p}"] = _take(state, f"features.{i}.{p}", None)
    fc6_w = _take(state, "classifier.0.weight", (4096, 25088))
    fc6_b = _take(state, "classifier.0.bias", (4096,))
    fc7_w = _take(state, "classifier.3.weight", (4096, 4096))
    fc7_b = _take(state, "classifier.3.bias", (4096,))
    fc6_w = fc6_w.reshape(4096, 512, 7, 7)                                   # (4096, 512, 7, 7)
    out[f"vgg.{_CONV6}.weight"] = np.ascontiguousarray(fc6_w[::4, :, ::3, ::3])  # (1024, 512, 3, 3)
    out[f"vgg.{_CONV6}.bias"] = np.ascontiguousarray(fc6_b[::4])                # (1024,)
    out[f"vgg.{_CONV7}.weight"] = np.ascontiguousarray(
        fc7_w[::4, ::4]).reshape(1024, 1024, 1, 1)                          # (1024, 1024, 1, 1)
    out[f"vgg.{_CONV7}.bias"] = np.ascontiguousarray(fc7_b[::4])               # (1024,)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _take(state, key, shape):
    if key not in state:
        raise KeyError(f"torchvision VGG16 state dict has no {key!r}; pass the state dict of "
                       "torchvision.models.vgg16 (keys features.<i>.*, classifier.0.*, "
                       "classifier.3.*)")
    a = to_numpy(state[key])
    if shape is not None and a.shape != shape:
        raise ValueError(f"torchvision VGG16 {key!r} has shape {a.shape}, expected {shape}")
    return a


_SSD_PREFIXES = ("vgg.", "L2Norm.", "extras.", "loc.", "conf.")


def load_ssd_pytorch(state: dict) -> dict:
    """ssd.pytorch weights -> our names (float32 arrays).

    Accepts either
      a trained ssd.pytorch SSD300 state dict (keys vgg.*, L2Norm.weight, extras.*, loc.*,
      conf.*: already ours, "module." prefixes removed), or
      vgg16_reducedfc.pth, its ImageNet base: keys "0.weight" ... "33.bias" -> "vgg.0.weight" ...
    Both expect Caffe preprocessing (BGR, 0..255, minus mean (104, 117, 123)).
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    out = {}
    for k, v in state.items():
        if k.split(".", 1)[0].isdigit():
            name = "vgg." + k
        elif k.startswith(_SSD_PREFIXES):
            name = k
        else:
            raise KeyError(f"unexpected key {k!r}: not an ssd.pytorch SSD key (vgg.*, L2Norm.*, "
                           "extras.*, loc.*, conf.*) nor a vgg16_reducedfc key (<i>.weight)")
        a = to_numpy(v)
        out[name] = a.astype(np.float32) if a.dtype.kind == "f" else a
    return out


# --------------------------------------------------------------------------------------------
# Our checkpoints: .npz + JSON metadata
# --------------------------------------------------------------------------------------------

_META_KEY = "__meta__"
_OPTIM_PREFIX = "optim/"


def save_checkpoint(path, arrays: dict, meta: dict, optim_state: dict | None = None) -> None:
    """Write arrays + metadata to one .npz file, atomically.

    Inputs:
      path:        destination (kept as given; ".npz" is not appended)
      arrays:      {name: array} (NumPy or CuPy), e.g. model.state_dict()
      meta:        JSON-serializable dict: config dict, class names, preprocessing, step, RNG
                   state (rng.bit_generator.state is a JSON-friendly dict) ...
      optim_state: optional {name: array} of optimizer buffers, stored as "optim/<name>"
    The file is written to a temporary file in the same folder, flushed and fsync'ed, then
    renamed over `path` (os.replace), so a crash never leaves a half-written checkpoint.
    """
    path = os.fspath(path)
    try:
        meta_json = json.dumps(meta, default=_json_default)
    except TypeError as e:
        raise TypeError(f"{path}: checkpoint metadata is not JSON-serializable ({e}); store "
                        "plain numbers, strings, lists and dicts") from None
    payload = {}
    for name, a in arrays.items():
        if name == _META_KEY or name.startswith(_OPTIM_PREFIX):
            raise ValueError(f"{path}: array name {name!r} is reserved; rename it")
        payload[name] = to_numpy(a)
    for name, a in (optim_state or {}).items():
        payload[_OPTIM_PREFIX + name] = to_numpy(a)
    payload[_META_KEY] = np.array(meta_json)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path):
    """Read a checkpoint written by save_checkpoint.

    Returns:
      (arrays {name: numpy array}, meta dict); when optimizer buffers were saved they come
      back in meta["optim_state"] as {name: numpy array}.
    """
    path = os.fspath(path)
    try:
        with open_regular(path) as f:
            _check_inflation(f, path)
            f.seek(0)
            z = np.load(f, allow_pickle=False)
            if _META_KEY not in z.files:
                raise CheckpointError(f"{path}: not a minissd checkpoint (no {_META_KEY} entry); "
                                      "for PyTorch .pth files use read_torch_checkpoint")
            meta = _printable_names(json.loads(str(z[_META_KEY])))
            arrays, optim = {}, {}
            for name in z.files:
                if name == _META_KEY:
                    continue
                if name.startswith(_OPTIM_PREFIX):
                    optim[name[len(_OPTIM_PREFIX):]] = z[name]
                else:
                    arrays[name] = z[name]
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path}: its metadata nests deeper than Python can read; it "
                              "was not written by minissd.train") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{path}: cannot read this checkpoint, it looks truncated or "
                              f"corrupted ({type(e).__name__}: {e})") from e
    if optim:
        meta["optim_state"] = optim
    return arrays, meta


def _check_inflation(f, path):
    """CheckpointError when an entry of the .npz (a zip) would inflate more than
    torchfile.MAX_INFLATION times: np.savez does not compress, a zip bomb does."""
    if not zipfile.is_zipfile(f):
        return                                   # np.load says what it is
    with zipfile.ZipFile(f) as z:
        for info in z.infolist():
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{path}: {info.filename} is encrypted; a minissd "
                                      "checkpoint never is")
            if info.compress_type != zipfile.ZIP_STORED and \
                    info.file_size > MAX_INFLATION * max(info.compress_size, 1) + 4096:
                raise CheckpointError(f"{path}: {info.filename} inflates {info.compress_size} "
                                      f"bytes to {info.file_size} (a zip bomb?); a minissd "
                                      "checkpoint is not compressed")


def _printable_names(meta):
    """meta with the class names it holds (config, data spec, settings) passed through
    untrusted.printable: a checkpoint from anywhere cannot put terminal escapes on screen."""
    if not isinstance(meta, dict):
        raise ValueError("the metadata is not a JSON object")
    for part, key in (("config", "class_names"), ("data", "classes"), ("settings", "classes")):
        names = meta.get(part, {}).get(key) if isinstance(meta.get(part), dict) else None
        if isinstance(names, list):
            meta[part][key] = [printable(n) for n in names]
    return meta


def _json_default(o):
    """numpy scalars and arrays inside metadata -> plain Python."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON-serializable")
