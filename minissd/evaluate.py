"""Evaluate a checkpoint: python -m minissd.evaluate --checkpoint CKPT [--voc-root DIR] [--json]

Prints a per-class AP table with both PASCAL metrics (VOC2007 11-point and VOC2010+
all-point), writes PR curves as a PNG, and with --json prints exactly one JSON line on stdout
(everything else goes to stderr then).

Without --voc-root it evaluates on the validation split of the data the checkpoint was
trained on (the synthetic set's parameters are stored in the checkpoint, so the same set is
found in, or regenerated into, the cache). With --voc-root DIR: a VOCdevkit is evaluated on
VOC2007 test, one VOC-format folder on its "val" split.

Inference: each image is resized to the config's input size (no augmentation), preprocessed as
the weights expect (config.preprocess), run through the network, and decoded by
postprocess.detect (softmax, score > 0.01, NMS 0.45, top 200). Boxes are normalised, so the
network never needs the original image size; the metric compares normalised boxes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from . import backend


def load_model(path):
    """(model, config, meta) from a checkpoint written by minissd.train (on the current device).
    Errors name the file and say what is wrong with it."""
    from .config import SSDConfig
    from .model import SSD
    from .weights import load_checkpoint
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: checkpoint not found; pass the last.npz or best.npz that "
                         "python -m minissd.train wrote")
    try:
        arrays, meta = load_checkpoint(path)
    except Exception as e:
        raise SystemExit(f"{path}: not a readable minissd checkpoint ({e})") from None
    if "config" not in meta:
        raise SystemExit(f"{path}: the checkpoint has no config in its metadata; it was not "
                         "written by python -m minissd.train")
    config = SSDConfig.from_dict(meta["config"])
    model = SSD(config).to(backend.get_device())
    try:
        model.load_state_dict(arrays)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"{path}: parameters do not fit the config stored with them ({e})") \
            from None
    return model, config, meta


def predict(model, config, images, priors, conf_threshold=0.01, nms_threshold=0.45, top_k=200):
    """Detections for a list of (H, W, 3) uint8 RGB images of any size.

    returns per image (boxes (K, 4) normalised corners, scores (K,), labels (K,)) as NumPy
    """
    from .data.augment import preprocess, resize
    from .postprocess import detect
    xp = backend.xp()
    batch = np.stack([resize(im, config.image_size) for im in images]).astype(np.float32)
    x = preprocess(xp.asarray(batch), config.preprocess)                   # (N, 3, S, S)
    was_training = model.training
    model.eval()                       # batch norm (tiny) uses its running statistics
    try:
        loc, conf = model.forward(x, keep_cache=False)                     # (N, P, 4), (N, P, C)
    finally:
        model.train(was_training)
    dets = detect(loc, conf, priors, conf_threshold=conf_threshold,
                  nms_threshold=nms_threshold, top_k=top_k, variances=config.variances)
    return [tuple(backend.to_numpy(a) for a in d) for d in dets]


def evaluate_model(model, dataset, config, batch_size=32, limit=None, progress=False):
    """VOC07 and VOC10 AP of `model` on `dataset` (a VOCDataset opened with keep_difficult=True).

    returns {"map": VOC07 mAP, "map_voc10": ..., "ap": {c: VOC07 AP}, "ap_voc10": {c: ...},
             "result": evaluate_detections' full VOC07 result (precision/recall per class),
             "num_images": n}
    """
    from .metrics import evaluate_detections, voc_ap
    from .priors import default_boxes
    n = len(dataset) if limit is None else min(limit, len(dataset))
    priors = backend.xp().asarray(default_boxes(config))
    detections, truths = [], []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="evaluate", unit="batch", file=sys.stderr)
    for s in starts:                                   # batches of images
        samples = [dataset[i] for i in range(s, min(s + batch_size, n))]
        detections += predict(model, config, [smp.image for smp in samples], priors)
        truths += [{"boxes": smp.boxes, "labels": smp.labels, "difficult": smp.difficult}
                   for smp in samples]
    r07 = evaluate_detections(detections, truths, config.num_classes, use_07_metric=True)
    ap10 = {c: (voc_ap(r07["recall"][c], r07["precision"][c], use_07_metric=False)
                if c not in r07["ignored"] else float("nan")) for c in r07["ap"]}
    scored = [v for c, v in ap10.items() if c not in r07["ignored"]]
    return {"map": r07["map"], "map_voc10": float(np.mean(scored)) if scored else float("nan"),
            "ap": r07["ap"], "ap_voc10": ap10, "result": r07, "num_images": n}


def _dataset_for(meta, voc_root):
    """The validation dataset: --voc-root's, else the one recorded in the checkpoint."""
    from .train import data_spec, open_split
    if voc_root is not None:
        spec = data_spec({"voc_root": os.path.abspath(voc_root)}, meta["config"]["name"])
    else:
        spec = meta.get("data")
        if spec is None:
            raise SystemExit("the checkpoint does not say which data it was trained on; "
                             "pass --voc-root DIR")
    return open_split(spec, "val", keep_difficult=True), spec


def _nan_to_none(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minissd.evaluate",
                                description="PASCAL VOC AP / mAP of a minissd checkpoint.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="a last.npz or best.npz written by python -m minissd.train")
    p.add_argument("--voc-root", metavar="DIR", help="evaluate on this VOCdevkit (VOC2007 "
                   "test) or VOC-format folder (val); default: the checkpoint's own "
                   "validation split")
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
    text_out = sys.stderr if args.json else sys.stdout
    backend.set_device(args.device)
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

    from .viz import plot_pr_curves
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    png = os.path.join(out, "pr_curves.png")
    plot_pr_curves(r["result"], names, png)
    print(f"{r['num_images']} images in {seconds:.1f}s; PR curves: {png}", file=text_out)
    if args.json:
        print(json.dumps({
            "map": _nan_to_none(r["map"]), "map_voc07": _nan_to_none(r["map"]),
            "map_voc10": _nan_to_none(r["map_voc10"]),
            "ap": {names[c - 1]: _nan_to_none(v) for c, v in r["ap"].items()},
            "ap_voc10": {names[c - 1]: _nan_to_none(v) for c, v in r["ap_voc10"].items()},
            "num_images": r["num_images"], "checkpoint": os.path.abspath(args.checkpoint),
            "step": meta.get("step"), "pr_curves": png, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
