"""Files minissd did not write: the checks every reader of them shares.

A weights file, a checkpoint or a dataset may come from anywhere: a download, a labelling
tool, a colleague, an attacker. The readers follow three habits (those of PyTorch's
weights_only unpickler, Pillow's decompression-bomb guard and defusedxml): an allowlist of
what may appear, hard limits on sizes, counts and depth checked BEFORE anything is allocated,
and one error that names the file. This module holds what they share:

    open_regular(path)      open a file only when it is a regular file (a FIFO, a device or a
                            socket is refused without blocking on it)
    read_text(path, what)   a small UTF-8 text file (labels.txt, a split file), or ValueError
    inside(root, name)      root/name when name stays inside root, else None
    printable(text)         control characters escaped, so a name cannot drive the terminal
    atomic_write(path)      write to a temporary file beside path, then os.replace it
    the LIMITS              what a checkpoint or a dataset may ask for

What is promised (README, "Untrusted files"): opening such a file never runs code from it,
never reads or writes outside the folders named on the command line, never hangs, never
needs memory out of proportion to the file, and ends the command with one line naming the
file when the file is bad.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import unicodedata

# --- limits: what a file may ask for (all far above any real SSD, far below a machine) ------
MAX_SYNTHETIC_IMAGES = 200_000       # synthetic images a checkpoint's data spec may ask for
MAX_IMAGE_SIZE = 2048                # the network's input side (--image-size, a config)
MIN_SYNTHETIC_SIZE = 32              # data/synthetic.py's smallest image side
MAX_CLASSES = 10_000                 # class names in a config
MAX_TEXT_BYTES = 64 << 20            # labels.txt, a split file: 64 MiB is millions of lines


class NotARegularFile(OSError):
    """A path that is a FIFO, a device, a socket or a folder where a file was expected."""


def open_regular(path, mode="rb", encoding=None, errors=None):
    """open(path, mode) for reading, refusing anything but a regular file BEFORE reading it.

    The file is opened with O_NONBLOCK, so opening a FIFO returns at once instead of
    waiting for a writer; fstat on the open descriptor (not on the name, which could be
    swapped in between) then says what it is. FileNotFoundError passes through;
    NotARegularFile (an OSError) names the path otherwise."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else \
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
            raise NotARegularFile(f"{path}: is {kind}; give a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return open(fd, mode, encoding=encoding, errors=errors)
    except BaseException:
        os.close(fd)
        raise


def is_regular_file(path) -> bool:
    """True for a regular file (following symlinks); False for a FIFO, device, folder, none."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_text(path, what="file"):
    """The text of a small UTF-8 file; ValueError with a one-line reason (not UTF-8, too
    big, not a regular file); FileNotFoundError passes through."""
    try:
        with open_regular(path) as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except NotARegularFile as e:
        raise ValueError(str(e)) from None
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"{path}: the {what} is over {MAX_TEXT_BYTES >> 20} MiB; is it the "
                         "right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the {what} is not UTF-8 text (byte {e.start}); save it as "
                         "UTF-8") from None


def inside(root, name):
    """os.path.join(root, name) when `name` is a relative path that stays inside `root`
    (after normalising "." and ".."), else None: an absolute name, "../x", "a/../../x".

    The check is on the names, not on where symbolic links lead: a dataset may keep its
    images as links into a shared store, which is the user's own doing."""
    name = os.fspath(name)
    if not name or os.path.isabs(name) or "\\" in name or "\x00" in name:
        return None
    parts = os.path.normpath(name).split(os.sep)
    if parts[0] in ("..", "") or any(p == ".." for p in parts):
        return None
    return os.path.join(root, name)


# Bidirectional overrides and isolates reorder what a terminal shows (CVE-2021-42574).
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def printable(text) -> str:
    """str(text) with control characters (C0, C1, DEL) and bidirectional overrides written
    as escapes (\\x1b, \\u202e): a class name from a file can then be printed without
    driving the terminal. Printable text, accents and other scripts are unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if (unicodedata.category(c) == "Cc" or c in _BIDI) else c for c in text)


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """with atomic_write(path) as f: ... writes a temporary file in path's folder and renames
    it over path (os.replace) only when the block ends without an error: a reader sees the old
    file or the new one, never half of one, and a failed write leaves the old file alone."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_path(path):
    """A context manager giving a temporary path beside `path`, renamed over it on success
    (for writers that want a file name, such as matplotlib's savefig): see atomic_write."""
    return _AtomicPath(os.fspath(path))


class _AtomicPath:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        base, ext = os.path.splitext(os.path.basename(self.path))
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=f".tmp{ext}")
        os.close(fd)
        return self.tmp

    def __exit__(self, kind, value, tb):
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(OSError):
                os.remove(self.tmp)
        return False


# --- what a checkpoint's config may ask for ----------------------------------------------------
MAX_PRIORS = 1_000_000               # default boxes (SSD512: 24564)


def config_weights(d) -> int:
    """The number of weights the network of a config dict (SSDConfig.to_dict()) has, counted
    from its numbers alone, before anything is built: base convs (3x3), conv6 (3x3) and conv7
    (1x1), the extra layers, and the 3x3 loc + conf heads on the sources (source 0 is base
    conv number l2norm_conv, then conv7, then every second extra layer). Biases and batch norm
    are left out: this is a size check, not an exact count. ValueError for a malformed dict."""
    def n(v, lo=0, hi=1 << 16):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{v!r} is not an integer from {lo} to {hi}")
        return v
    if d.get("body"):
        return _body_weights(d, n)
    total, ch, convs = 0, 3, []
    for v in d["base"]:
        if v in ("M", "C"):
            continue
        total += ch * n(v, 1) * 9
        ch = v
        convs.append(v)
    fc = [n(v, 1) for v in d["fc"]]
    total += ch * fc[0] * 9 + fc[0] * fc[1]
    ch, extras = fc[1], []
    for out, k, *_ in d["extras"]:
        total += ch * n(out, 1) * n(k, 1, 64) ** 2
        ch = out
        extras.append(out)
    sources = [convs[n(d["l2norm_conv"], 1, len(convs)) - 1], fc[1]] + extras[1::2]
    classes = n(len(d["class_names"]), 1, MAX_CLASSES) + 1
    for c, m in zip(sources, d["mbox"]):
        total += c * n(m, 1, 1024) * (4 + classes) * 9
    return total


MAX_BODY_LAYERS = 10_000


def _body_weights(d, n) -> int:
    """config_weights for a body given as a flat layer list (SSDConfig.body): the convs'
    weights, from the channels each layer passes on, and the heads on the named sources."""
    body = d["body"]
    if not isinstance(body, (list, tuple)) or len(body) > MAX_BODY_LAYERS:
        raise ValueError(f"body is not a list of at most {MAX_BODY_LAYERS} layers")
    channels, total = {"data": 3}, 0
    for layer in body:
        inputs = layer.get("inputs") or ()
        inputs = (inputs,) if isinstance(inputs, str) else inputs
        ch = channels[inputs[0]] if inputs else 3
        if layer["kind"] == "conv":
            out = n(layer["out_channels"], 1)
            total += ch * out * n(layer.get("kernel", 1), 1, 64) ** 2
            ch = out
        channels[layer["name"]] = ch
    classes = n(len(d["class_names"]), 1, MAX_CLASSES) + 1
    k = n(d.get("head_kernel", 3), 1, 64)
    for name, m in zip(d["sources"], d["mbox"]):
        total += channels[name] * n(m, 1, 1024) * (4 + classes) * k * k
    return total


def check_config(d, weights_in_file, path):
    """ValueError naming `path` unless the config dict `d` asks for a network that the file's
    `weights_in_file` numbers can fill (at most twice as many weights, plus a million), an
    input side of at most MAX_IMAGE_SIZE and at most MAX_PRIORS default boxes: a crafted
    config cannot make the reader allocate gigabytes before its arrays are compared."""
    try:
        size = d["image_size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size {str(size)[:20]} is not from 1 to {MAX_IMAGE_SIZE}")
        priors = sum(int(f) ** 2 * int(m) for f, m in zip(d["feature_maps"], d["mbox"])
                     if 0 <= int(f) <= MAX_IMAGE_SIZE and 0 <= int(m) <= 1024)
        if priors > MAX_PRIORS:
            raise ValueError(f"{priors} default boxes (at most {MAX_PRIORS})")
        need = config_weights(d)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        raise ValueError(f"{path}: the checkpoint's config is malformed or too large ({e}); "
                         "it was not written by minissd.train") from None
    if need > 2 * weights_in_file + 1_000_000:
        raise ValueError(f"{path}: the checkpoint's config describes a network of about {need} "
                         f"weights, but the file holds {weights_in_file}; it was not written "
                         "by minissd.train")
