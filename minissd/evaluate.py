"""Evaluate a checkpoint: python -m minissd.evaluate --checkpoint CKPT [--voc-root DIR] [--json]
(or --weights FILE.pth: torchvision's ssd300_vgg16 or ssd.pytorch's SSD, with --voc-root DIR)

Prints a per-class AP table with both PASCAL metrics (VOC2007 11-point and VOC2010+
all-point), writes PR curves as a PNG, and with --json prints exactly one JSON line on stdout
(everything else goes to stderr then).

Without --voc-root it evaluates on the validation split of the data the checkpoint was
trained on (the synthetic set's parameters are stored in the checkpoint, so the same set is
found in, or regenerated into, the cache; a split made by train is stored as its image ids,
so the same images are used). With --voc-root DIR: a VOCdevkit is evaluated on VOC2007 test,
a VOC-format folder or flat export on its validation split (val.txt, valid/, or the one made
from a hash of the image ids, the same as train made). Classes are the checkpoint's, by name.

Inference (minissd/inference.py): each image is resized to the config's input size (no
augmentation), preprocessed as the weights expect (config.preprocess), run through the network,
and decoded by postprocess.detect (softmax, score > 0.01, NMS 0.45, top 200). Boxes are
normalised, so the network never needs the original image size; the metric compares normalised
boxes.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

from . import backend
from .cli import Parser, add_weights_flags, fail
from .data.choice import data_spec, open_split
from .data.voc import DataError
# load_model, predict and evaluate_model lived here before minissd.inference; the old names stay
from .inference import (CheckpointError, evaluate_model, load_model,  # noqa: F401
                        load_weights, predict)


def _dataset_for(meta, voc_root):
    """The validation dataset: --voc-root's, else the one recorded in the checkpoint."""
    if voc_root is not None:
        spec = data_spec(os.path.abspath(voc_root), meta["config"]["name"])
        # the model's classes, by name; objects of classes it was not trained on are left out
        spec.update(classes=list(meta["config"]["class_names"]), drop_other_classes=True)
    else:
        spec = meta.get("data")
        if spec is None and "format" in meta and "weights" in meta:
            raise DataError(f"--weights: {meta['weights']} ({meta['format']}) does not say "
                            "which data to evaluate on; pass --voc-root DIR")
        if spec is None:
            raise DataError("--checkpoint: the checkpoint does not say which data it was "
                            "trained on; pass --voc-root DIR")
    return open_split(spec, "val", keep_difficult=True), spec


def _nan_to_none(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def build_parser():
    p = Parser("evaluate", description="PASCAL VOC AP / mAP of a minissd checkpoint, per "
               "class by name.")
    add_weights_flags(p)
    p.add_argument("--voc-root", metavar="DIR", help="evaluate on this VOCdevkit (VOC2007 "
                   "test), VOC-format folder or flat export (its validation split: val.txt, "
                   "valid/, or the hash split train makes); default: exactly the validation "
                   "images the checkpoint was trained with")
    p.add_argument("--json", action="store_true", help="print one JSON line with the results "
                   "on stdout (the table goes to stderr)")
    p.add_argument("--out", metavar="DIR", help="folder for pr_curves.png (default: next to "
                   "the checkpoint)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the network")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--limit", type=int, help="evaluate only the first LIMIT images")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        fail("evaluate", "--batch-size/--limit: must be at least 1")
    try:
        return _evaluate(args)
    except (CheckpointError, DataError) as e:
        fail("evaluate", str(e))


def _evaluate(args):
    text_out = sys.stderr if args.json else sys.stdout
    backend.set_device(args.device)
    if args.weights is not None:
        model, config, meta = load_weights(args.weights)
    else:
        model, config, meta = load_model(args.checkpoint)
    dataset, spec = _dataset_for(meta, args.voc_root)
    t = time.perf_counter()
    r = evaluate_model(model, dataset, config, args.batch_size, args.limit,
                       progress=not args.json)
    seconds = time.perf_counter() - t

    names = config.class_names
    width = max(len(n) for n in names + ("class",))
    print(f"{'class':<{width}}  {'AP (VOC07)':>10}  {'AP (VOC10)':>10}  {'objects':>7}",
          file=text_out)
    for c, ap in r["ap"].items():
        print(f"{names[c - 1]:<{width}}  {ap:>10.4f}  {r['ap_voc10'][c]:>10.4f}  "
              f"{r['result']['num_gt'][c]:>7d}", file=text_out)
    print(f"{'mAP':<{width}}  {r['map']:>10.4f}  {r['map_voc10']:>10.4f}", file=text_out)

    from .viz import plot_pr_curves          # imported here: matplotlib is slow to import
    weights_file = os.path.abspath(args.checkpoint or args.weights)
    out = args.out or os.path.dirname(weights_file)
    png = os.path.join(out, "pr_curves.png")
    plot_pr_curves(r["result"], names, png)
    skipped = f" ({r['skipped']} unreadable images skipped)" if r["skipped"] else ""
    print(f"{r['num_images']} images in {seconds:.1f}s{skipped}; PR curves: {png}",
          file=text_out)
    if args.json:
        print(json.dumps({
            "map": _nan_to_none(r["map"]), "map_voc07": _nan_to_none(r["map"]),
            "map_voc10": _nan_to_none(r["map_voc10"]),
            "ap": {names[c - 1]: _nan_to_none(v) for c, v in r["ap"].items()},
            "ap_voc10": {names[c - 1]: _nan_to_none(v) for c, v in r["ap_voc10"].items()},
            "num_images": r["num_images"], "checkpoint": weights_file,
            "step": meta.get("step"), "pr_curves": png, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
