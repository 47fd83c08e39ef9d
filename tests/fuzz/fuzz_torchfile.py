"""Fuzz minissd.torchfile.read_torch_checkpoint (the .pth reader) with atheris.

    python tests/fuzz/fuzz_torchfile.py -max_total_time=600 -rss_limit_mb=2048 -timeout=10

(README, "Untrusted files", says how to run all three.) Seeds: a valid zip and legacy state
dict and every hostile case of tests/hostile_files.py's PTH_CASES, written to
tests/fuzz/corpus/torchfile/ (not committed; regenerated on each run).
"""

import atheris

from _common import fuzz, scratch

with atheris.instrument_imports():
    from minissd.torchfile import CheckpointError, read_torch_checkpoint
import hostile_files as h


def seeds():
    out = {}
    for name in ("good zip", "good legacy"):
        path = h.good_pth(scratch("seed.pth", b""), name.split()[1])
        out[name] = open(path, "rb").read()
    for name in h.PTH_CASES:
        if name != "zip bomb storage":          # 64 MB: libFuzzer's -max_len is smaller
            out[name] = open(h.pth_case(name, scratch("seed.pth", b"")), "rb").read()
    return out


def one_input(data):
    path = scratch("x.pth", data)
    try:
        read_torch_checkpoint(path)
    except CheckpointError:
        pass


if __name__ == "__main__":
    fuzz("torchfile", seeds(), one_input)
