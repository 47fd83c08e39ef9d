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

Never trusted
-------------
Everything in the file is checked before it is used, and every limit before any allocation:
- the pickles are read from memory or a stream bounded by the file (a declared length
  cannot make the reader allocate more than the file holds), at most MAX_PICKLE_BYTES;
- a zip entry compressed more than MAX_INFLATION times is refused (a zip bomb), a storage
  must hold the bytes its header announces (legacy: checked against what is left of the file
  before reading);
- the object graph is walked once per object (a memo by id: a pickle of nested [x, x] is
  linear, not 2^depth), at most MAX_DEPTH deep and MAX_OBJECTS objects; a list holding
  itself is refused;
- a tensor's size, strides and offset must be non-negative integers (torch never writes a
  negative stride), every element it reads must lie inside its storage, it may not hold more
  elements than its storage (an expanded stride-0 view of a tiny storage would allocate
  gigabytes), and all tensors together at most OUTPUT_FACTOR times the storages' bytes.
Any violation is a CheckpointError naming the file; nothing is read outside the storage.

minissd.weights re-exports read_torch_checkpoint, CheckpointError and UnsafeCheckpointError;
minissd.weights and minissd.pretrained turn what is read into minissd's names.
"""
from __future__ import annotations

import collections
import io
import lzma
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from .untrusted import NotARegularFile, open_regular


# Limits checked before anything is allocated (module docstring, "Never trusted").
MAX_PICKLE_BYTES = 64 << 20      # data.pkl / the legacy object pickle (a real one: KBs)
MAX_DEPTH = 64                   # nesting of dicts / lists / tuples in the pickle
MAX_OBJECTS = 1_000_000          # containers and tensors walked
MAX_NDIM = 32                    # dimensions of one tensor
MAX_DIM = 1 << 40                # one dimension, one stride, one offset
MAX_INFLATION = 64               # a compressed zip entry may grow at most this much
OUTPUT_FACTOR = 4                # tensors may total this many times their storages' bytes


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
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *unused):
    """Stands in for torch._utils._rebuild_tensor_v3 (the dtype is given separately)."""
    storage = storage._replace(stype=_StorageType(dtype.name, dtype.dtype))
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


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
        stype, key, numel = pid[1], _ascii(pid[2]), pid[4]
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key} has no known element type")
        if not _count(numel):
            raise CheckpointError(f"{self.path}: storage {key} announces {numel!r} elements; "
                                  "the file is corrupted")
        view = pid[5] if len(pid) > 5 else None
        if view is not None and not (isinstance(view, tuple) and len(view) >= 3
                                     and _count(view[1]) and _count(view[2])):
            raise CheckpointError(f"{self.path}: storage {key} has a malformed view {view!r}")
        return _StorageRef(key, stype, numel, view)


def _ascii(s):
    return s.decode("ascii") if isinstance(s, bytes) else str(s)


def _count(v):
    """A non-negative integer within MAX_DIM (not a bool, not a float)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DIM


def _unpickle(data, path):
    """Unpickle bytes already in memory with the restricted unpickler, after _check_opcodes."""
    _check_opcodes(io.BytesIO(data), path)
    return _RestrictedUnpickler(io.BytesIO(data), path).load()


def _load_pickle(f, path):
    """The next pickle of the stream f (a _Bounded file): its bytes are scanned first
    (_check_opcodes finds where it ends), then read into memory and unpickled."""
    start = f.tell()
    _check_opcodes(f, path)
    size = f.tell() - start
    f.f.seek(start)
    return _unpickle(f.read(size), path)


def _check_opcodes(f, path):
    """Walk the pickle's opcodes (pickletools.genops, pure Python: nothing is built) up to its
    STOP: at most MAX_PICKLE_BYTES, and no memo slot above MAX_OBJECTS. The C unpickler grows
    its memo table to the largest slot a PUT names, so LONG_BINPUT 0x7fffffff in a 90-byte
    file would allocate gigabytes (found by tests/fuzz/fuzz_torchfile.py)."""
    start = f.tell()
    for op, arg, pos in pickletools.genops(f):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (
                isinstance(arg, int) and 0 <= arg <= MAX_OBJECTS):
            raise CheckpointError(f"{path}: the pickle stores into memo slot {arg!r}, above "
                                  f"{MAX_OBJECTS}; the file is corrupted or crafted")
        if pos is not None and pos - start > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path}: the pickle is larger than "
                                  f"{MAX_PICKLE_BYTES >> 20} MiB; a state dict's is KBs")


class _Bounded:
    """A read-only view of a binary file that never hands out (or asks the OS for) more than
    what is left of it: pickle.load asks read(n) with the n the pickle declares, and a
    buffered file would allocate n bytes first."""

    def __init__(self, f, size):
        self.f, self.size = f, size

    def read(self, n=-1):
        left = max(0, self.size - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit=-1):
        return self.f.readline(MAX_PICKLE_BYTES if limit is None or limit < 0 else limit)

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def tell(self):
        return self.f.tell()

    def seek(self, pos):
        return self.f.seek(pos)


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
        with open_regular(path) as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            obj = _read_zip(path)
        else:
            obj = _read_legacy(path)
    except CheckpointError:
        raise
    except NotARegularFile as e:
        raise CheckpointError(str(e)) from None
    except RecursionError:
        raise CheckpointError(f"{path}: the pickle nests deeper than Python can follow; the "
                              "file is corrupted or crafted") from None
    except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, struct.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            MemoryError, UnicodeError, zlib.error, lzma.LZMAError, NotImplementedError) as e:
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
            byteorder = _zip_read(z, prefix + "byteorder", 16, path).decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path}: byteorder is {byteorder[:16]!r}, neither "
                                      "little nor big; the file is corrupted")
        obj = _unpickle(_zip_read(z, pkl[0], MAX_PICKLE_BYTES, path), path)
        refs = _collect_tensor_refs(obj, path)
        storages = {}
        for ref in refs:
            key = ref.storage.key
            if key not in storages:
                itemsize = _itemsize(ref.storage.stype)
                raw = _zip_read(z, f"{prefix}data/{key}", ref.storage.numel * itemsize, path,
                                exact=True)
                storages[key] = _storage_array(raw, ref.storage, byteorder, path)
    return _materialize(obj, storages, path)


def _zip_read(z, name, limit, path, exact=False):
    """The bytes of one zip entry, refusing before reading one that is larger than `limit`
    (exact: smaller than it, too) or that inflates more than MAX_INFLATION times."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: the archive has no {name}; the file is truncated or "
                              "corrupted") from None
    if info.flag_bits & 0x1:                # zipfile raises RuntimeError for these
        raise CheckpointError(f"{path}: {name} is encrypted; torch.save never encrypts "
                              "(found by tests/fuzz/fuzz_torchfile.py)")
    if info.file_size > limit or (exact and info.file_size < limit):
        raise CheckpointError(f"{path}: {name} holds {info.file_size} bytes where "
                              f"{'exactly' if exact else 'at most'} {limit} are expected; the "
                              "file is corrupted")
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > MAX_INFLATION * max(info.compress_size, 1) + 4096:
        raise CheckpointError(f"{path}: {name} inflates {info.compress_size} bytes to "
                              f"{info.file_size} (a zip bomb?); torch.save does not compress")
    return z.read(info)


def _itemsize(stype):
    return 2 if stype.dtype == "bf16" else np.dtype(stype.dtype).itemsize


def _read_legacy(path):
    """The legacy layout: magic, protocol, sys_info, object, storage keys, raw storages."""
    with open_regular(path) as raw_file:
        f = _Bounded(raw_file, os.fstat(raw_file.fileno()).st_size)
        magic = _load_pickle(f, path)
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor "
                                  "the legacy layout's magic number)")
        protocol = _load_pickle(f, path)
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol}")
        sys_info = _load_pickle(f, path)
        if not isinstance(sys_info, dict):
            raise CheckpointError(f"{path}: the legacy header's sys_info is not a dict; the "
                                  "file is corrupted")
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        obj = _load_pickle(f, path)
        keys = _load_pickle(f, path)
        if not isinstance(keys, (list, tuple)) or len(keys) > MAX_OBJECTS:
            raise CheckpointError(f"{path}: the legacy list of storage keys is malformed")
        keys = [_ascii(k) for k in keys]
        refs = {r.storage.key: r.storage for r in _collect_tensor_refs(obj, path)}
        storages = {}
        for key in keys:
            (numel,) = struct.unpack("<q", _read_exact(f, 8, path))
            if key not in refs:
                raise CheckpointError(f"{path}: storage {key} is not used by any tensor; only "
                                      "tensors (state dicts) are supported, not bare storages")
            stype = refs[key].stype
            left = f.size - f.tell()
            if numel < 0 or numel * _itemsize(stype) > left:
                raise CheckpointError(f"{path}: storage {key} announces {numel} elements but "
                                      f"only {left} bytes are left in the file; it is "
                                      "truncated or corrupted")
            raw = _read_exact(f, numel * _itemsize(stype), path)
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


def _walk(obj, path, leaf):
    """obj with every _TensorRef t replaced by leaf(t), through nested dicts / lists / tuples.

    Each object is visited once (a memo by id: shared references are not walked again, and
    come out shared), at most MAX_DEPTH deep and MAX_OBJECTS objects in all; an object that
    contains itself is a CheckpointError."""
    memo, busy, count = {}, set(), [0]

    def visit(o, depth):
        if isinstance(o, (_StorageRef, _StorageType)) or not isinstance(o, (dict, list, tuple)):
            return o
        key = id(o)
        if key in memo:
            return memo[key]
        if key in busy:
            raise CheckpointError(f"{path}: the pickle holds a container that contains "
                                  "itself; a state dict never does (file corrupted or crafted)")
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_OBJECTS:
            raise CheckpointError(f"{path}: the pickle nests more than {MAX_DEPTH} levels or "
                                  f"holds more than {MAX_OBJECTS} objects; a state dict is a "
                                  "flat dict of tensors (file corrupted or crafted)")
        busy.add(key)
        if isinstance(o, _TensorRef):
            out = leaf(o)
        elif isinstance(o, dict):
            out = type(o)((k, visit(v, depth + 1)) for k, v in o.items()) \
                if isinstance(o, collections.OrderedDict) else \
                {k: visit(v, depth + 1) for k, v in o.items()}
        else:
            items = [visit(v, depth + 1) for v in o]
            out = items if isinstance(o, list) else tuple(items)
        busy.discard(key)
        memo[key] = out
        return out

    return visit(obj, 0)


def _collect_tensor_refs(obj, path="the checkpoint"):
    """Every _TensorRef inside nested dicts / lists / tuples (each object walked once)."""
    refs = []
    _walk(obj, path, lambda t: refs.append(t) or t)
    return refs


def _materialize(obj, storages, path):
    """Replace every _TensorRef by a NumPy array cut out of its storage; the arrays together
    may hold at most OUTPUT_FACTOR times the storages' bytes (plus 1 MiB)."""
    budget = [OUTPUT_FACTOR * sum(a.nbytes for a in storages.values()) + (1 << 20)]
    made = {}

    def leaf(t):
        key = (t.storage.key, t.storage.view, t.offset, t.size, t.stride)
        if key not in made:
            made[key] = _tensor_array(t, storages, path, budget)
        return made[key]

    return _walk(obj, path, leaf)


def _tensor_array(t, storages, path, budget=None):
    """The strided view (element offset + element strides) of its storage, copied contiguous.

    Every index the header can produce is checked first: sizes, strides and offset are
    non-negative integers, the first and last element read lie inside the storage, and the
    tensor holds no more elements than its storage (budget: bytes still allowed in all)."""
    if t.storage.key not in storages:
        raise CheckpointError(f"{path}: a tensor uses storage {t.storage.key}, which the file "
                              "does not hold; it is truncated or corrupted")
    base = storages[t.storage.key]
    offset = t.offset
    if t.storage.view is not None:           # legacy storage view: shift by the view's offset
        offset += t.storage.view[1]
    what = f"{path}: a tensor of storage {t.storage.key}"
    if not (len(t.size) == len(t.stride) <= MAX_NDIM and _count(offset)
            and all(_count(n) for n in t.size) and all(_count(s) for s in t.stride)):
        raise CheckpointError(f"{what} has size {t.size[:8]}, stride {t.stride[:8]}, offset "
                              f"{t.offset!r}: each must be a non-negative integer, one stride "
                              f"per dimension (at most {MAX_NDIM}); the file is corrupted")
    numel = 1
    for n in t.size:
        numel *= n
    if numel == 0:
        return np.zeros(t.size, dtype=base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= base.size or numel > base.size:
        raise CheckpointError(f"{what} of shape {t.size} reaches element {last} (and holds "
                              f"{numel}) of a storage of {base.size}; the file is corrupted")
    if budget is not None:
        budget[0] -= numel * base.itemsize
        if budget[0] < 0:
            raise CheckpointError(f"{path}: its tensors hold more than {OUTPUT_FACTOR} times "
                                  "the bytes of their storages; the file is corrupted or crafted")
    if t.size == ():                         # a 0-d tensor (as_strided reads shape () as "same")
        return np.array(base[offset])
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
