"""Photos with faces for OpenCV's face SSD (minissd.caffe): scikit-image's bundled photos and
a composite made from them, so tests and notebook 09 need no download.

    face_photos() -> {name: (H, W, 3) uint8 RGB}
      "astronaut"  skimage.data.astronaut(): one face, frontal (NASA, public domain)
      "camera"     skimage.data.camera() as RGB: a man behind a camera, grey (public domain)
      "crowd"      skimage.data.rocket() with the astronaut's face pasted four times at
                   widths 150, 90, 60 and 40 pixels (one image, faces of several scales)
"""
from __future__ import annotations

import numpy as np
from PIL import Image

ASTRONAUT_FACE = (165, 25, 290, 200)           # (x0, y0, x1, y1) pixels: head and some hair
CROWD_FACES = ((20, 60, 150), (230, 40, 90), (380, 120, 60), (520, 60, 40))   # (x, y, width)


def face_photos() -> dict:
    """The three photos above (needs scikit-image, part of minissd's test and notebooks
    extras)."""
    import skimage.data            # imported here: only the face photos need it
    astronaut = np.ascontiguousarray(skimage.data.astronaut())
    camera = np.repeat(skimage.data.camera()[:, :, None], 3, axis=2)
    crowd = np.array(skimage.data.rocket())
    x0, y0, x1, y1 = ASTRONAUT_FACE
    face = Image.fromarray(astronaut[y0:y1, x0:x1])
    for x, y, width in CROWD_FACES:
        height = round(width * (y1 - y0) / (x1 - x0))
        crowd[y:y + height, x:x + width] = np.asarray(face.resize((width, height),
                                                                  Image.BILINEAR))
    return {"astronaut": astronaut, "camera": camera, "crowd": crowd}
