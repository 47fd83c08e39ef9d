"""The notebooks' real photos: each loads, and every hand-placed box lies inside its image."""
import numpy as np
import pytest

from minissd.data import photos

pytest.importorskip("skimage")


@pytest.mark.parametrize("name", photos.PHOTOS)
def test_boxes_inside_image(name):
    p = photos.photo(name)
    h, w = p.image.shape[:2]
    assert p.image.dtype == np.uint8 and p.image.shape[2] == 3
    assert len(p.labels) == len(p.boxes)
    b = photos.normalised_boxes(p)
    assert np.all(b >= 0) and np.all(b <= 1)
    assert np.all(p.boxes[:, 2] > p.boxes[:, 0]) and np.all(p.boxes[:, 3] > p.boxes[:, 1])
    assert np.all(p.boxes[:, 2] <= w) and np.all(p.boxes[:, 3] <= h)


def test_unknown_photo_names_the_choices():
    with pytest.raises(ValueError, match="chelsea"):
        photos.photo("dog")
