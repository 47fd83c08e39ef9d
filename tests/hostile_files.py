"""Hostile and broken input files, made by code (no binary blobs in the repository).

`pth_*` build PyTorch .pth files without torch: a pickle is written opcode by opcode (the
protocol-2 subset torch.save uses), so a test can put any header in it, such as a negative
stride or a list that contains itself, that torch itself would never write.

    tensor(storage_key, size, stride, offset=0, dtype="FloatStorage", numel=None)
    zip_pth(path, obj, storages)        torch >= 1.6 layout
    legacy_pth(path, obj, storages)     the legacy layout (numel + raw bytes per storage)

The corpus (PTH_CASES, VOC_XML_CASES, COCO_CASES) lists each hostile case by name with the
bytes or object that make it; tests/test_hostile.py runs the commands on them, and the fuzz
targets (tests/fuzz/) start from them.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np


# ------------------------------------------------------------------ a tiny pickle writer
class Global:
    """A global named in the pickle (GLOBAL opcode)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """fn(*args) (REDUCE)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args


class PersId:
    """A persistent id (BINPERSID) from a tuple."""

    def __init__(self, *items):
        self.items = items


class Put:
    """obj, remembered in memo slot idx (BINPUT)."""

    def __init__(self, idx, obj):
        self.idx, self.obj = idx, obj


class Get:
    """The object in memo slot idx (BINGET)."""

    def __init__(self, idx):
        self.idx = idx


class SelfList:
    """A list that contains itself: [<itself>]."""


class Raw:
    """Bytes put into the pickle as they are."""

    def __init__(self, data):
        self.data = data


def _emit(o, out):
    if isinstance(o, Raw):
        out += o.data
    elif o is None:
        out += b"N"
    elif o is True or o is False:
        out += b"\x88" if o else b"\x89"
    elif isinstance(o, int):
        if -2**31 <= o < 2**31:
            out += b"J" + struct.pack("<i", o)
        else:
            n = (o.bit_length() + 8) // 8
            out += b"\x8a" + bytes([n]) + o.to_bytes(n, "little", signed=True)
    elif isinstance(o, float):
        out += b"G" + struct.pack(">d", o)
    elif isinstance(o, str):
        data = o.encode("utf-8", "surrogatepass")
        out += b"X" + struct.pack("<I", len(data)) + data
    elif isinstance(o, bytes):
        out += b"C" + bytes([len(o)]) + o if len(o) < 256 else b"B" + struct.pack("<I", len(o)) + o
    elif isinstance(o, tuple):
        out += b"("
        for v in o:
            _emit(v, out)
        out += b"t"
    elif isinstance(o, list):
        out += b"]("
        for v in o:
            _emit(v, out)
        out += b"e"
    elif isinstance(o, dict):
        out += b"}("
        for k, v in o.items():
            _emit(k, out)
            _emit(v, out)
        out += b"u"
    elif isinstance(o, Global):
        out += f"c{o.module}\n{o.name}\n".encode()
    elif isinstance(o, Call):
        _emit(o.fn, out)
        _emit(tuple(o.args), out)
        out += b"R"
    elif isinstance(o, PersId):
        _emit(tuple(o.items), out)
        out += b"Q"
    elif isinstance(o, Put):
        _emit(o.obj, out)
        out += b"q" + bytes([o.idx])
    elif isinstance(o, Get):
        out += b"h" + bytes([o.idx])
    elif isinstance(o, SelfList):
        out += b"]q\x00h\x00a"          # EMPTY_LIST, BINPUT 0, BINGET 0, APPEND
    else:
        raise TypeError(type(o))


def dumps(obj) -> bytes:
    """Protocol-2 pickle bytes of obj (plain values plus the classes above)."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


# ------------------------------------------------------------------ .pth files
def storage(key, numel, dtype="FloatStorage"):
    return PersId("storage", Global("torch", dtype), key, "cpu", numel)


def tensor(key, size, stride, offset=0, dtype="FloatStorage", numel=None):
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    if numel is None:
        numel = int(np.prod(size)) if size else 1
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), storage(key, numel, dtype),
                offset, tuple(size), tuple(stride), False,
                Call(Global("collections", "OrderedDict")))


def zip_pth(path, obj, storages, compress=False):
    """torch's zip layout: archive/data.pkl, archive/data/<key>, archive/byteorder."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("archive/data.pkl", obj if isinstance(obj, bytes) else dumps(obj))
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return path


def legacy_pth(path, obj, storages, numels=None):
    """The legacy layout; numels overrides the element count written before each storage."""
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001,
                                                  "little_endian": True}):
        buf.write(dumps(header))
    buf.write(obj if isinstance(obj, bytes) else dumps(obj))
    buf.write(dumps(list(storages)))
    for key, data in storages.items():
        n = (numels or {}).get(key, len(data) // 4)
        buf.write(struct.pack("<q", n) + data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def _floats(n):
    return np.arange(n, dtype="<f4").tobytes()


def _nested_pairs(depth, leaf):
    """[x, x] nested `depth` times, each level one memo slot: 2^depth paths, linear bytes."""
    obj = Put(0, leaf)
    for d in range(1, depth + 1):
        obj = Put(d % 250, [obj, Get((d - 1) % 250)])      # the first emits, the second refers
    return obj


def _deep(depth):
    return Raw(b"]" * depth + b"a" * (depth - 1))      # [[[...]]]: depth nested lists


# name -> (layout, pickled object, storages, extra): each one is refused with one line
PTH_CASES = {
    "negative stride": ("zip", {"w": tensor("0", (4,), (-1,), offset=0)}, {"0": _floats(4)}),
    "negative stride, big": ("zip", {"w": tensor("0", (100, 100), (-200, 1))},
                             {"0": _floats(10000)}),
    "negative stride, far": ("zip", {"w": tensor("0", (2,), (-(2**40),))}, {"0": _floats(2)}),
    "negative offset": ("zip", {"w": tensor("0", (4,), (1,), offset=-100)}, {"0": _floats(4)}),
    "offset past the end": ("legacy", {"w": tensor("0", (4,), (1,), offset=2**40)},
                            {"0": _floats(4)}),
    "zero strides, huge size": ("zip", {"w": tensor("0", (10**6, 10**6), (0, 0), numel=1)},
                                {"0": _floats(1)}),
    "zero stride legacy": ("legacy", {"w": tensor("0", (2**20, 2**20), (0, 0), numel=1)},
                           {"0": _floats(1)}),
    "size overflows int64": ("zip", {"w": tensor("0", (2**62, 2**62), (1, 1), numel=4)},
                             {"0": _floats(4)}),
    "float size": ("zip", {"w": tensor("0", (float("inf"),), (1,), numel=4)}, {"0": _floats(4)}),
    "1000 dimensions": ("zip", {"w": tensor("0", (1,) * 1000, (1,) * 1000, numel=1)},
                        {"0": _floats(1)}),
    "legacy huge numel": ("legacy", {"w": tensor("0", (4,), (1,))}, {"0": _floats(4)},
                          {"numels": {"0": 2**60}}),
    "legacy negative numel": ("legacy", {"w": tensor("0", (4,), (1,))}, {"0": _floats(4)},
                              {"numels": {"0": -7}}),
    "announced numel huge": ("zip", {"w": tensor("0", (4,), (1,), numel=2**62)},
                             {"0": _floats(4)}),
    "numel infinite": ("zip", {"w": Call(Global("torch._utils", "_rebuild_tensor_v2"),
                                          PersId("storage", Global("torch", "FloatStorage"),
                                                 "0", "cpu", float("inf")),
                                          0, (4,), (1,), False)}, {"0": _floats(4)}),
    "nested [x, x] depth 60": ("zip", {"w": _nested_pairs(60, tensor("0", (4,), (1,)))},
                               {"0": _floats(4)}),
    "nested [x, x] legacy": ("legacy", {"w": _nested_pairs(40, [1, 2])}, {}),
    "list containing itself": ("zip", {"w": SelfList()}, {}),
    "deep nesting": ("zip", {"w": _deep(50000)}, {}),
    "zip bomb storage": ("zip", {"w": tensor("0", (2**24,), (1,))},
                         {"0": b"\0" * (2**26)}, {"compress": True}),
    "storage missing": ("zip", {"w": tensor("7", (4,), (1,))}, {}),
    # found by tests/fuzz/fuzz_torchfile.py: LONG_BINPUT to slot 0x0a656761 made the C
    # unpickler grow its memo table past 1.3 GB from a 97-byte legacy file
    "memo slot huge (fuzz)": ("legacy", Raw(b"\x80\x02}r\x61\x67\x65\x0a."), {}),
    "memo slot huge, zip": ("zip", Raw(b"\x80\x02}r\xff\xff\xff\x7f."), {}),
    # found by tests/fuzz/fuzz_torchfile.py: an entry flagged encrypted made zipfile raise
    # RuntimeError past the reader's error handling
    "encrypted entry (fuzz)": ("zip", {"w": tensor("0", (4,), (1,))}, {"0": _floats(4)},
                               {"encrypted": True}),
    "unicode length lies": ("zip", Raw(b"\x80\x02X\xff\xff\xff\x7fabc."), {}),
    "many views of one storage": ("zip", {f"w{i}": tensor("0", (2**16,), (1,), offset=0,
                                                           numel=2**16)
                                          for i in range(200)}
                                  | {f"v{i}": tensor("0", (2**16 - i,), (1,), offset=i,
                                                     numel=2**16) for i in range(1, 200)},
                                  {"0": _floats(2**16)}),
}


def _encrypted(path):
    """Mark every entry of a zip as encrypted (flag bit 0, local and central headers)."""
    data = bytearray(open(path, "rb").read())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = data.find(sig)
        while i >= 0:
            data[i + at] |= 1
            i = data.find(sig, i + 4)
    with open(path, "wb") as f:
        f.write(data)
    return path


def pth_case(name, path):
    """Write PTH_CASES[name] to path; returns path."""
    layout, obj, storages, *extra = PTH_CASES[name]
    extra = extra[0] if extra else {}
    if isinstance(obj, Raw):
        obj = obj.data
    if layout == "zip":
        zip_pth(path, obj, storages, compress=extra.get("compress", False))
        return _encrypted(path) if extra.get("encrypted") else path
    return legacy_pth(path, obj, storages, numels=extra.get("numels"))


def good_pth(path, layout="zip"):
    """A valid little state dict ({"w": 2x3 float32, "b": a transposed 3x2 view})."""
    obj = {"w": tensor("0", (2, 3), (3, 1)), "b": tensor("0", (3, 2), (1, 3))}
    write = zip_pth if layout == "zip" else legacy_pth
    return write(path, obj, {"0": _floats(6)})


# ------------------------------------------------------------------ VOC XML
def voc_xml(width="64", height="48", objects=(("a", "5", "6", "30", "40"),), extra=""):
    """One VOC annotation; each object (name, xmin, ymin, xmax, ymax) as text."""
    objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
                   f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                   for n, x0, y0, x1, y1 in objects)
    return (f"<annotation><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objs}{extra}</annotation>").encode()


VOC_XML_CASES = {
    "width inf": voc_xml(width="inf"),
    "width 1e999": voc_xml(width="1e999"),
    "height nan": voc_xml(height="nan"),
    "xmin nan": voc_xml(objects=(("a", "nan", "6", "30", "40"),)),
    "xmax inf": voc_xml(objects=(("a", "5", "6", "inf", "40"),)),
    "ymax -inf": voc_xml(objects=(("a", "5", "6", "30", "-inf"),)),
    "coordinate 1e400": voc_xml(objects=(("a", "5", "6", "1e400", "40"),)),
    "width huge int": voc_xml(width="9" * 400),
    "billion laughs": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                      b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><annotation>&b;'
                      b'</annotation>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM '
                       b'"file:///etc/passwd">]><annotation>&x;</annotation>',
    "not xml": b"\x00\xff\xfe garbage",
}


# ------------------------------------------------------------------ COCO
def coco(images=None, annotations=None, categories=None):
    """A COCO instances dict with one 64x48 image a.png and one category "a"."""
    return {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
            if images is None else images,
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "bbox": [4, 5, 20, 30], "iscrowd": 0}]
            if annotations is None else annotations,
            "categories": [{"id": 1, "name": "a"}] if categories is None else categories}


def _ann(**kw):
    return [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 30], **kw}]


def _deep_json(depth):
    return '{"images": ' + "[" * depth + "]" * depth + "}"


# name -> the file's text; each is refused with one line naming the file
COCO_CASES = {
    "bbox NaN": json.dumps(coco(annotations=_ann(bbox=[4, float("nan"), 20, 30]))),
    "bbox Infinity": json.dumps(coco(annotations=_ann(bbox=[4, 5, float("inf"), 30]))),
    "width Infinity": json.dumps(coco(images=[{"id": 1, "file_name": "a.png",
                                               "width": float("inf"), "height": 48}])),
    "width NaN": json.dumps(coco(images=[{"id": 1, "file_name": "a.png",
                                          "width": float("nan"), "height": 48}])),
    "area not a number": json.dumps(coco(annotations=_ann(area="big"))),
    "area NaN": json.dumps(coco(annotations=_ann(area=float("nan")))),
    "image id a list": json.dumps(coco(images=[{"id": [1], "file_name": "a.png"}])),
    "annotation image_id a dict": json.dumps(coco(annotations=_ann(image_id={"a": 1}))),
    "category id a list": json.dumps(coco(annotations=_ann(category_id=[1]))),
    "iscrowd a word": json.dumps(coco(annotations=_ann(iscrowd="yes"))),
    "file_name ..": json.dumps(coco(images=[{"id": 1, "file_name": "../outside.png"}])),
    "file_name absolute": json.dumps(coco(images=[{"id": 1, "file_name": "/etc/passwd"}])),
    "file_name ../ inside": json.dumps(coco(images=[{"id": 1,
                                                     "file_name": "x/../../outside.png"}])),
    "deep nesting": _deep_json(100000),
    "not json": "\x00{",
    "a list": "[1, 2]",
}
