"""Fuzz the VOC XML reader (minissd.data.voc.VOCDataset.annotation, with the class names
found by folders.count_classes) with atheris.

    python tests/fuzz/fuzz_voc.py -max_total_time=600 -rss_limit_mb=2048 -timeout=10

Seeds: valid annotations and tests/hostile_files.py's VOC_XML_CASES.
"""
import os
import sys

import atheris

from _common import HERE, SCRATCH, write_seeds

with atheris.instrument_imports():
    from minissd.data.folders import count_classes
    from minissd.data.voc import DataError, VOCDataset
import hostile_files as h

FOLDER = os.path.join(SCRATCH, "voc")
os.makedirs(FOLDER, exist_ok=True)
from PIL import Image  # noqa: E402

Image.new("RGB", (64, 48)).save(os.path.join(FOLDER, "a.png"))
XML = os.path.join(FOLDER, "a.xml")


def seeds():
    out = dict(h.VOC_XML_CASES)
    out["good"] = h.voc_xml()
    out["two objects"] = h.voc_xml(objects=(("a", "1", "1", "64", "48"),
                                            ("b", "3", "4", "10", "12")))
    out["no size"] = b"<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>2</ymin>" \
                     b"<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    return out


def one_input(data):
    with open(XML, "wb") as f:
        f.write(data)
    count_classes([XML])
    try:
        ds = VOCDataset(FOLDER, splits=("all",), classes=("a", "b"), drop_other_classes=True)
        ds.annotation(0)
        ds[0]
    except DataError:
        pass


if __name__ == "__main__":
    corpus = os.path.join(HERE, "corpus", "voc")
    write_seeds(corpus, seeds())
    atheris.Setup(sys.argv + [corpus], one_input)
    atheris.Fuzz()
