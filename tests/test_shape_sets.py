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
    assert tuple(train.class_names) == tuple(sorted(shape_sets.KINDS[kind]))
    assert len(train) + len(val) == 11 and len(val) >= 1
    if not flat:
        assert len(train) == 8                              # the ImageSets split files
    sample = train[0]
    assert sample.image.shape == (96, 96, 3)
    assert len(sample.boxes) >= 1 and np.all((sample.boxes >= 0) & (sample.boxes <= 1))
    assert np.all(sample.boxes[:, 2:] > sample.boxes[:, :2])
