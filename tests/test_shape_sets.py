"""tests/shape_sets.py (the "your own data" generators) writes sets minissd reads as they are:
classes found in the annotations, boxes inside the image, both layouts."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import shape_sets  # noqa: E402

from minissd.data.choice import data_spec, open_split  # noqa: E402


@pytest.mark.parametrize("kind", sorted(shape_sets.KINDS))
@pytest.mark.parametrize("flat", [False, True])
def test_generated_sets_open_with_their_classes(tmp_path, kind, flat):
    root = shape_sets.generate(str(tmp_path / kind), kind, num_train=8, num_val=3, size=96,
                               seed=1, flat=flat)
    spec = data_spec(root, "tiny")
    train, val = open_split(spec, "train"), open_split(spec, "val", keep_difficult=True)
    if kind == "rare":              # its third class is 0.5% of the objects: absent here
        assert set(train.class_names) <= set(shape_sets.KINDS[kind])
    else:
        assert tuple(train.class_names) == tuple(sorted(shape_sets.KINDS[kind]))
    assert len(train) + len(val) == 11 and len(val) >= 1
    if not flat:
        assert len(train) == 8                              # the ImageSets split files
    sample = train[0]
    assert sample.image.shape == (96, 96, 3)
    assert len(sample.boxes) >= 1 and np.all((sample.boxes >= 0) & (sample.boxes <= 1))
    assert np.all(sample.boxes[:, 2:] > sample.boxes[:, :2])


def test_the_harder_sets_are_dense_elongated_and_rare():
    rng = np.random.default_rng(0)
    image, objects = shape_sets.render(rng, "dense", 400)
    sides = [np.sqrt((x1 - x0) * (y1 - y0)) for _, (x0, y0, x1, y1) in objects]
    assert image.shape == (400, 400, 3) and len(objects) >= 15 and max(sides) <= 42
    aspects = []
    for _ in range(5):
        for _, (x0, y0, x1, y1) in shape_sets.render(rng, "elongated", 300)[1]:
            aspects.append(max(x1 - x0, y1 - y0) / min(x1 - x0, y1 - y0))
    assert np.median(aspects) > 2.5
    names = [n for _ in range(60) for n, _ in shape_sets.render(rng, "rare", 96)[1]]
    assert names.count("arrow") < 0.05 * len(names)
