"""Real photos for the notebooks, with ground-truth boxes placed by hand.

scikit-image ships a few photographs inside its wheel (`skimage.data`), so the notebooks can
show default boxes, matching and NMS on real images without a download. The boxes below were
placed by eye on a gridded plot of each photo: they are the notebooks' ground truth, not a
dataset's, and a few pixels off here and there.

    >>> p = photo("chelsea")
    >>> p.image.shape, p.boxes.shape, p.labels
    ((300, 451, 3), (4, 4), ('cat', 'eye', 'eye', 'nose'))

Boxes are pixel corners (xmin, ymin, xmax, ymax); `normalised_boxes(p)` divides them by the
image's width and height, the form the rest of minissd uses. Install scikit-image with
`pip install -e ".[notebooks]"`.

Licenses, as stated in scikit-image's docstrings (`help(skimage.data.chelsea)`):
    chelsea            CC0, by the photographer Stefan van der Walt
    coffee             CC0, by the photographer Rachel Michetti
    astronaut          NASA, no known copyright restrictions, public domain
    hubble_deep_field  NASA / HubbleSite, public domain
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Photo(NamedTuple):
    name: str
    image: np.ndarray          # (H, W, 3) uint8, RGB
    boxes: np.ndarray          # (M, 4) float32 pixel corners xmin, ymin, xmax, ymax
    labels: tuple              # M class names, one per box
    license: str


# name -> (license, [(label, (xmin, ymin, xmax, ymax)), ...]); pixels of the original photo.
_BOXES = {
    "chelsea": ("CC0, by the photographer Stefan van der Walt", [
        ("cat", (10, 0, 440, 300)),          # the head fills the frame
        ("eye", (135, 88, 205, 160)),
        ("eye", (288, 107, 341, 168)),
        ("nose", (238, 228, 290, 268)),
    ]),
    "astronaut": ("NASA, no known copyright restrictions, public domain", [
        ("person", (30, 25, 440, 512)),
        ("head", (180, 25, 295, 178)),
        ("patch", (132, 350, 206, 424)),     # the mission patch on her chest
        ("helmet", (345, 378, 512, 512)),
        ("flag", (0, 0, 130, 305)),
        ("shuttle", (398, 3, 512, 305)),
    ]),
    "coffee": ("CC0, by the photographer Rachel Michetti", [
        ("cup", (175, 25, 412, 300)),        # handle included
        ("saucer", (80, 75, 480, 385)),
        ("spoon", (330, 68, 425, 332)),
    ]),
    # A crowd of small galaxies: no boxes by hand (there are hundreds); the notebooks find the
    # bright ones with a blob detector and say so.
    "hubble_deep_field": ("NASA / HubbleSite, public domain", []),
}

PHOTOS = tuple(_BOXES)


def photo(name: str) -> Photo:
    """One of PHOTOS with its hand-placed boxes. ImportError naming the fix without skimage."""
    if name not in _BOXES:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    try:
        import skimage.data
    except ImportError:
        raise ImportError("the notebooks' photos come from scikit-image; install it with "
                          "pip install -e \".[notebooks]\" (or pip install scikit-image)") from None
    image = np.ascontiguousarray(getattr(skimage.data, name)())
    license_, entries = _BOXES[name]
    boxes = np.array([b for _, b in entries], dtype=np.float32).reshape(-1, 4)
    return Photo(name, image, boxes, tuple(lab for lab, _ in entries), license_)


def normalised_boxes(p: Photo) -> np.ndarray:
    """p.boxes divided by (W, H, W, H): corners in 0..1, as matching and the loss use them."""
    h, w = p.image.shape[:2]
    return (p.boxes / np.array([w, h, w, h], dtype=np.float32)).astype(np.float32)
