"""Fuzz the COCO reader (minissd.data.coco: read_coco_file, then COCODataset's annotations)
with atheris.

    python tests/fuzz/fuzz_coco.py -max_total_time=600 -rss_limit_mb=2048 -timeout=10

Seeds: valid files and tests/hostile_files.py's COCO_CASES.
"""
import json

import atheris

from _common import fuzz, image_folder, scratch

with atheris.instrument_imports():
    from minissd.data import coco
    from minissd.data.voc import DataError
import hostile_files as h

FOLDER = image_folder("coco")


def seeds():
    out = {k: v.encode("utf-8", "surrogatepass") for k, v in h.COCO_CASES.items()
           if len(v) < 4096}
    out["good"] = json.dumps(h.coco()).encode()
    out["crowd"] = json.dumps(h.coco(annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 1,
         "area": 7.5}, {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 64, 48]}],
        categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])).encode()
    return out


def one_input(data):
    ann = scratch("ann.json", data)
    coco._CACHE.clear()
    try:
        ds = coco.COCODataset(FOLDER, ann)
        for i in range(len(ds)):
            ds.annotation(i)
            ds[i]
    except DataError:
        pass


if __name__ == "__main__":
    fuzz("coco", seeds(), one_input)
