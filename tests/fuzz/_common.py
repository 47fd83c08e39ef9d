"""What the fuzz targets share: a scratch file per process, the seeds, and the rule.

The rule: a reader given any bytes either returns a result or raises its own one-line error
class (CheckpointError, DataError); any other exception, a crash, a hang or a memory blow-up
is a finding (libFuzzer stops and writes the input as crash-<sha1> in the working folder).
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))          # tests/: hostile_files

SCRATCH = tempfile.mkdtemp(prefix="minissd-fuzz-")


def scratch(name, data: bytes) -> str:
    """data written to <scratch>/name (the readers take paths)."""
    path = os.path.join(SCRATCH, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_seeds(folder, seeds: dict):
    """Each seed as a file of `folder` (the corpus libFuzzer starts from and grows)."""
    os.makedirs(folder, exist_ok=True)
    for i, data in enumerate(seeds.values()):
        with open(os.path.join(folder, f"seed-{i:03d}"), "wb") as f:
            f.write(data)


def image_folder(name) -> str:
    """<scratch>/name holding one 64x48 image, a.png, for the annotation readers to find."""
    from PIL import Image
    folder = os.path.join(SCRATCH, name)
    os.makedirs(folder, exist_ok=True)
    Image.new("RGB", (64, 48)).save(os.path.join(folder, "a.png"))
    return folder


def fuzz(name, seeds: dict, one_input):
    """Run one target under atheris from tests/fuzz/corpus/<name>, seeded with `seeds`
    (libFuzzer's flags come from the command line)."""
    import atheris
    corpus = os.path.join(HERE, "corpus", name)
    write_seeds(corpus, seeds)
    atheris.Setup(sys.argv + [corpus], one_input)
    atheris.Fuzz()
