"""PyTorch .pth files read without torch: read_torch_checkpoint(path) -> {name: array}.

Reading a .pth file
-------------------
A .pth file is a pickle, and a pickle is a small program: it can name any Python callable
(`os.system`, `builtins.eval`) and call it while loading. So we never use plain `pickle.load`.
`_RestrictedUnpickler.find_class` maps the handful of globals that a PyTorch state dict needs
onto our own harmless functions (table `_SAFE_GLOBALS`) and refuses everything else with
`UnsafeCheckpointError`, before anything is called.

Two on-disk layouts exist:
    zip (torch >= 1.6)   <prefix>/data.pkl       the object pickle; a tensor's storage is a
                                                 persistent id ("storage", type, key,
                                                 location, numel)
                         <prefix>/data/<key>     raw bytes of each storage
                         <prefix>/byteorder      "little" or "big" (absent in old files: little)
    legacy (< 1.6)       five pickles in a row: magic number, protocol version, sys_info
                         (endianness), the object pickle, the sorted list of storage keys;
                         then for each key: int64 numel, then numel * itemsize raw bytes.

A tensor is stored as `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: offset and
strides count elements, so a transposed or sliced tensor is a strided view of its storage.
Since legacy storages come *after* the pickle, tensors are first built as `_TensorRef`s and
turned into NumPy arrays once every storage has been read (the same path for both layouts).

minissd.weights re-exports read_torch_checkpoint, CheckpointError and UnsafeCheckpointError;
minissd.weights and minissd.pretrained turn what is read into minissd's names.
"""
from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import NamedTuple

import numpy as np


class CheckpointError(ValueError):
    """A weights file that cannot be read: missing, truncated, corrupted, or not what was
    expected (a .pth here, a minissd checkpoint in inference.py). The message names the file
    and the fix; the commands print it as their one-line error."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that names a global outside the allowed list (it could run code)."""


# --------------------------------------------------------------------------------------------
# Safe stand-ins for the globals a PyTorch pickle names
# --------------------------------------------------------------------------------------------

class _StorageType(NamedTuple):
    """What `torch.FloatStorage` & co. become: just the element dtype."""
    name: str
    dtype: str            # NumPy dtype string, little-endian ("<f4"); "bf16" is special


# torch storage class -> NumPy element type. bfloat16 has no NumPy dtype: read as uint16,
# then widened to float32 (its 16 bits are the top half of a float32).
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "BFloat16Storage": "bf16", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
}
# torch dtypes (named by _rebuild_tensor_v3) -> the storage they are stored as
_TORCH_DTYPES = {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage",
    "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
}


class _StorageRef(NamedTuple):
    """A storage named by a persistent id; its bytes are read later."""
    key: str
    stype: _StorageType
    numel: int
    view: tuple | None    # legacy files: (view_key, offset, numel) for a storage view


class _TensorRef(NamedTuple):
    """A tensor waiting for its storage: element offset, shape and strides."""
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stands in for torch._utils._rebuild_tensor / _rebuild_tensor_v2."""
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *unused):
    """Stands in for torch._utils._rebuild_tensor_v3 (the dtype is given separately)."""
    storage = storage._replace(stype=_StorageType(dtype.name, dtype.dtype))
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
    """Stands in for torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor."""
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


def _safe_globals():
    """(module, name) -> harmless object, for every global a state dict may name."""
    table = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    }
    for name, dt in _STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(name, dt)
    for name, storage in _TORCH_DTYPES.items():
        table[("torch", name)] = _StorageType(storage, _STORAGE_DTYPES[storage])
    return table


_SAFE_GLOBALS = _safe_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in _SAFE_GLOBALS; storages become _StorageRef."""

    def __init__(self, file, path):
        super().__init__(file, encoding="utf-8")
        self.path = path

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self.path}: the pickle names the global {module}.{name}, which is not on the "
                "list a PyTorch state dict needs (tensors, storages, OrderedDict); refusing to "
                "load it. Nothing was executed. If you trust this file, load it with torch and "
                "re-save only model.state_dict().") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and _ascii(pid[0]) == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r} in the pickle "
                                  "(only tensor storages are supported)")
        stype, key, numel = pid[1], _ascii(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key} has no known element type")
        view = pid[5] if len(pid) > 5 else None
        return _StorageRef(key, stype, numel, view)


def _ascii(s):
    return s.decode("ascii") if isinstance(s, bytes) else str(s)


# --------------------------------------------------------------------------------------------
# Reading the two layouts
# --------------------------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def read_torch_checkpoint(path) -> dict:
    """Read a PyTorch .pth file into {name: numpy array}, without importing torch.

    Inputs:
      path: a file written by torch.save, zip (torch >= 1.6) or legacy (older, or
            _use_new_zipfile_serialization=False) layout.
    Returns:
      {name: numpy array}, each array C-contiguous with the tensor's dtype (bfloat16 becomes
      float32). When the saved object is a dict holding "state_dict" or "model", that inner
      dict is taken; "module." prefixes (DataParallel) are removed; non-tensor entries dropped.
    Raises:
      UnsafeCheckpointError when the pickle names any global besides tensor/storage rebuilders
      and OrderedDict (nothing is executed); CheckpointError for truncated/corrupted files.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            obj = _read_zip(path)
        else:
            obj = _read_legacy(path)
    except CheckpointError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, struct.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(f"{path}: cannot read this PyTorch checkpoint, it looks truncated "
                              f"or corrupted ({type(e).__name__}: {e})") from e
    return _state_dict_of(obj, path)


def _read_zip(path):
    """The zip layout: data.pkl plus one raw file per storage."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
            raise CheckpointError(f"{path}: a zip file without data.pkl is not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = z.read(prefix + "byteorder").decode("ascii").strip()
        with z.open(pkl[0]) as f:
            obj = _RestrictedUnpickler(f, path).load()
        refs = _collect_tensor_refs(obj)
        storages = {}
        for ref in refs:
            key = ref.storage.key
            if key not in storages:
                raw = z.read(f"{prefix}data/{key}")
                storages[key] = _storage_array(raw, ref.storage, byteorder, path)
    return _materialize(obj, storages, path)


def _read_legacy(path):
    """The legacy layout: magic, protocol, sys_info, object, storage keys, raw storages."""
    with open(path, "rb") as f:
        magic = _RestrictedUnpickler(f, path).load()
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor "
                                  "the legacy layout's magic number)")
        protocol = _RestrictedUnpickler(f, path).load()
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol}")
        sys_info = _RestrictedUnpickler(f, path).load()
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        obj = _RestrictedUnpickler(f, path).load()
        keys = [_ascii(k) for k in _RestrictedUnpickler(f, path).load()]
        refs = {r.storage.key: r.storage for r in _collect_tensor_refs(obj)}
        storages = {}
        for key in keys:
            (numel,) = struct.unpack("<q", _read_exact(f, 8, path))
            if key not in refs:
                raise CheckpointError(f"{path}: storage {key} is not used by any tensor; only "
                                      "tensors (state dicts) are supported, not bare storages")
            stype = refs[key].stype
            itemsize = 2 if stype.dtype == "bf16" else np.dtype(stype.dtype).itemsize
            raw = _read_exact(f, numel * itemsize, path)
            storages[key] = _storage_array(raw, _StorageRef(key, stype, numel, None),
                                           byteorder, path)
    return _materialize(obj, storages, path)


def _read_exact(f, n, path):
    data = f.read(n)
    if len(data) != n:
        raise CheckpointError(f"{path}: file ends early (wanted {n} bytes, got {len(data)}); "
                              "it is truncated, download or copy it again")
    return data


def _storage_array(raw, ref, byteorder, path):
    """Raw bytes -> 1-D NumPy array of the storage's element type, native byte order."""
    code = "<u2" if ref.stype.dtype == "bf16" else ref.stype.dtype
    dtype = np.dtype(code)
    if byteorder == "big":
        dtype = dtype.newbyteorder(">")
    if len(raw) < ref.numel * dtype.itemsize:
        raise CheckpointError(f"{path}: storage {ref.key} holds {len(raw)} bytes, its tensor "
                              f"needs {ref.numel * dtype.itemsize}; the file is truncated")
    arr = np.frombuffer(raw, dtype=dtype, count=ref.numel).astype(dtype.newbyteorder("="))
    if ref.stype.dtype == "bf16":
        # bfloat16 is the top 16 bits of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _collect_tensor_refs(obj):
    """Every _TensorRef inside nested dicts / lists / tuples."""
    if isinstance(obj, _TensorRef):
        return [obj]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _collect_tensor_refs(v)]
    if isinstance(obj, (list, tuple)) and not isinstance(obj, (_StorageRef, _StorageType)):
        return [r for v in obj for r in _collect_tensor_refs(v)]
    return []


def _materialize(obj, storages, path):
    """Replace every _TensorRef by a NumPy array cut out of its storage."""
    if isinstance(obj, _TensorRef):
        return _tensor_array(obj, storages, path)
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v, storages, path)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not isinstance(obj, (_StorageRef, _StorageType)):
        return type(obj)(_materialize(v, storages, path) for v in obj)
    return obj


def _tensor_array(t, storages, path):
    """The strided view (element offset + element strides) of its storage, copied contiguous."""
    base = storages[t.storage.key]
    offset = t.offset
    if t.storage.view is not None:           # legacy storage view: shift by the view's offset
        offset += int(t.storage.view[1])
    if any(s == 0 for s in t.size):
        return np.zeros(t.size, dtype=base.dtype)
    if t.size == ():                         # a 0-d tensor (as_strided reads shape () as "same")
        return np.array(base[offset])
    last = offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if offset < 0 or last >= base.size:
        raise CheckpointError(f"{path}: a tensor of shape {t.size} reaches element {last} of "
                              f"storage {t.storage.key}, which has {base.size}; file corrupted")
    strides = tuple(s * base.itemsize for s in t.stride)
    view = np.lib.stride_tricks.as_strided(base[offset:], shape=t.size, strides=strides)
    return np.ascontiguousarray(view)


def _state_dict_of(obj, path):
    """The {name: array} inside what torch.save wrote (a state dict or a training checkpoint)."""
    if isinstance(obj, dict):
        for inner in ("state_dict", "model", "model_state_dict", "net"):
            if isinstance(obj.get(inner), dict):
                obj = obj[inner]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict; "
                              "save model.state_dict() instead of the model")
    out = {}
    for name, value in obj.items():
        if isinstance(value, np.ndarray):
            name = str(name)
            while name.startswith("module."):      # nn.DataParallel / DistributedDataParallel
                name = name[len("module."):]
            out[name] = value
    if not out:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint (keys: "
                              f"{list(obj)[:8]})")
    return out
