"""Detect objects: python -m minissd.detect --checkpoint CKPT | --weights FILE [--prototxt F]
                  IMAGE... --out DIR [--threshold T]

For each image: run the network at the config's input size, decode and NMS
(postprocess.detect), keep detections scoring at least --threshold, print them as
"class score xmin ymin xmax ymax" in the image's pixel coordinates, and write
<out>/<image name>.png with the boxes, class names and scores drawn.

--weights takes a detector trained elsewhere as it is: torchvision's ssd300_vgg16 .pth (its
COCO file ssd300_vgg16_coco-b556d3b4.pth prints COCO's class names) or ssd.pytorch's SSD300,
read without torch (minissd/pretrained.py), with that library's preprocessing, default boxes
and post-processing. A Caffe SSD (--weights FILE.caffemodel, its deploy prototxt beside it
or given with --prototxt) and OpenCV's face detector (--weights opencv-face) are read without
Caffe (minissd/caffe/).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from . import backend
from .cli import Parser, add_weights_flags, fail
from .data.voc import DataError, load_image
from .inference import CheckpointError, load_chosen, predict, priors_for


def build_parser():
    p = Parser("detect", description="Draw and print SSD detections for images, labelled "
               "with the checkpoint's class names.")
    add_weights_flags(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the images with boxes drawn (created if needed)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="show detections scoring at least this (default 0.5)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the network")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .viz import draw_boxes, new_axes, save_figure   # imported here: matplotlib is slow

    backend.set_device(args.device)
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        fail("detect", f"{', '.join(missing)}: image not found; check the path")
    try:
        model, config, _ = load_chosen(args.checkpoint, args.weights, args.prototxt)
    except CheckpointError as e:
        fail("detect", str(e))
    priors = priors_for(model, config)                  # on the model's device
    os.makedirs(args.out, exist_ok=True)
    names = config.class_names
    for path in args.images:                   # one image at a time: sizes differ
        try:
            image = load_image(path)
        except DataError as e:
            fail("detect", str(e))
        boxes, scores, labels = predict(model, config, [image], priors)[0]
        keep = scores >= args.threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        h, w = image.shape[:2]
        pixels = np.clip(boxes, 0, 1) * np.array([w, h, w, h])             # (K, 4)
        print(f"{path}: {len(scores)} detection(s)")
        for b, s, l in zip(pixels, scores, labels):
            print(f"  {names[int(l) - 1]:<12s} {float(s):.3f}  "
                  f"{b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}")
        scale = max(4.0, 6.0 * max(w, h) / 400)
        ax = new_axes(figsize=(scale * w / max(w, h), scale * h / max(w, h)))
        draw_boxes(image, boxes, labels, scores, names, ax=ax)
        dest = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        save_figure(ax.figure, dest)
        print(f"  -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
