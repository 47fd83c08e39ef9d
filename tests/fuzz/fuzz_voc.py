"""Fuzz the VOC XML reader (minissd.data.voc.VOCDataset.annotation, with the class names
found by folders.count_classes) with atheris.

    python tests/fuzz/fuzz_voc.py -max_total_time=600 -rss_limit_mb=2048 -timeout=10

Seeds: valid annotations and tests/hostile_files.py's VOC_XML_CASES.
"""
import os

import atheris

from _common import fuzz, image_folder, scratch

with atheris.instrument_imports():
    from minissd.data.folders import count_classes
    from minissd.data.voc import DataError, VOCDataset
import hostile_files as h

FOLDER = image_folder("voc")


def seeds():
    out = dict(h.VOC_XML_CASES)
    out["good"] = h.voc_xml()
    out["two objects"] = h.voc_xml(objects=(("a", "1", "1", "64", "48"),
                                            ("b", "3", "4", "10", "12")))
    out["no size"] = b"<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>2</ymin>" \
                     b"<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    return out


def one_input(data):
    xml = scratch(os.path.join("voc", "a.xml"), data)
    count_classes([xml])
    try:
        ds = VOCDataset(FOLDER, splits=("all",), classes=("a", "b"), drop_other_classes=True)
        ds.annotation(0)
        ds[0]
    except DataError:
        pass


if __name__ == "__main__":
    fuzz("voc", seeds(), one_input)
