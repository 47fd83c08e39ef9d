"""Evaluate a checkpoint: python -m minissd.evaluate --checkpoint CKPT [--voc-root DIR]
                       [--coco-root DIR --coco-ann FILE.json] [--metric voc07|voc10|coco|all]
                       [--json] [--errors]
(or --weights FILE.pth: torchvision's ssd300_vgg16 or ssd.pytorch's SSD, with --voc-root DIR or
--coco-root DIR --coco-ann FILE.json)

Prints a per-class AP table with the PASCAL metrics (VOC2007 11-point and VOC2010+ all-point)
and a table of COCO's twelve numbers (AP@[.5:.95], AP50, AP75, AP and AR by object size,
computed by pycocotools: metrics.coco_eval), writes PR curves as a PNG, and with --json prints
exactly one JSON line on stdout (everything else goes to stderr then). --metric picks what is
computed and printed; the default, all, costs little more than VOC alone (COCOeval took 0.3 s
next to 2.3 s for the network on the 300 synthetic validation images, 2 CPU cores).

Without --voc-root it evaluates on the validation split of the data the checkpoint was
trained on (the synthetic set's parameters are stored in the checkpoint, so the same set is
found in, or regenerated into, the cache; a split made by train is stored as its image ids,
so the same images are used). With --voc-root DIR: a VOCdevkit is evaluated on VOC2007 test,
a VOC-format folder or flat export on its validation split (val.txt, valid/, or the one made
from a hash of the image ids, the same as train made). With --coco-root DIR --coco-ann FILE:
every image of that COCO file. Classes are the checkpoint's, by name (objects of other
classes are left out).

--errors adds the error breakdown (minissd/analysis/error_report.py): TIDE's error types
(classification, localisation, both, duplicate, background, missed) with the mAP a fix of
each would add, the precision/recall at each class's best-F1 threshold and the confusion
matrix at those thresholds; errors.png and errors.json go into --out.

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
from .coco_metrics import COCO_KEYS, format_coco_table
from .data.choice import data_spec, open_split, yolo_spec
from .data.voc import DataError
# load_model, predict and evaluate_model lived here before minissd.inference; the old names stay
from .inference import (CheckpointError, evaluate_model, load_chosen,  # noqa: F401
                        load_model, predict)


METRICS = ("voc07", "voc10", "coco", "all")


def _dataset_for(meta, voc_root, coco_root=None, coco_ann=None, yolo_root=None):
    """The validation dataset: --voc-root's, --coco-root's or --yolo-root's, else the one
    recorded in the checkpoint."""
    if yolo_root is not None:
        spec = yolo_spec(os.path.abspath(yolo_root))
        spec.update(classes=list(meta["config"]["class_names"]), drop_other_classes=True)
    elif coco_root is not None:
        root, ann = os.path.abspath(coco_root), os.path.abspath(coco_ann)
        spec = {"kind": "coco", "root": root, "ann": ann, "val_root": root, "val_ann": ann,
                "classes": list(meta["config"]["class_names"]), "drop_other_classes": True}
    elif voc_root is not None:
        spec = data_spec(os.path.abspath(voc_root), meta["config"]["name"])
        # the model's classes, by name; objects of classes it was not trained on are left out
        spec.update(classes=list(meta["config"]["class_names"]), drop_other_classes=True)
    else:
        spec = meta.get("data")
        if spec is None and "format" in meta and "weights" in meta:
            raise DataError(f"--weights: {meta['weights']} ({meta['format']}) does not say "
                            "which data to evaluate on; pass --voc-root DIR or --coco-root DIR "
                            "--coco-ann FILE.json")
        if spec is None:
            raise DataError("--checkpoint: the checkpoint does not say which data it was "
                            "trained on; pass --voc-root DIR or --coco-root DIR --coco-ann "
                            "FILE.json")
    return open_split(spec, "val", keep_difficult=True), spec


def _nan_to_none(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def build_parser():
    p = Parser("evaluate", description="PASCAL VOC AP / mAP and COCO's AP / AR of a minissd "
               "checkpoint or a torchvision / ssd.pytorch detector, per class by name.")
    add_weights_flags(p)
    p.add_argument("--voc-root", metavar="DIR", help="evaluate on this VOCdevkit (VOC2007 "
                   "test), VOC-format folder or flat export (its validation split: val.txt, "
                   "valid/, or the hash split train makes); default: exactly the validation "
                   "images the checkpoint was trained with")
    p.add_argument("--coco-root", metavar="DIR", help="evaluate on COCO-format data instead: "
                   "the folder the --coco-ann file's file_names are relative to (COCO: "
                   "val2017/)")
    p.add_argument("--coco-ann", metavar="FILE.json", help="the COCO instances file of "
                   "--coco-root (COCO: instances_val2017.json); every image in it is evaluated")
    p.add_argument("--yolo-root", metavar="DIR", help="evaluate on YOLO-format data instead "
                   "(data.yaml or images/ + labels/): its val split, or the hash split train "
                   "makes")
    p.add_argument("--metric", default="all", choices=METRICS, help="voc07: VOC2007 11-point "
                   "AP; voc10: VOC2010+ all-point AP; coco: COCO's AP@[.5:.95], AP50, AP75, AP "
                   "and AR by object size (pycocotools); all (default): the three")
    p.add_argument("--json", action="store_true", help="print one JSON line with the results "
                   "on stdout (the table goes to stderr)")
    p.add_argument("--out", metavar="DIR", help="folder for pr_curves.png (default: next to "
                   "the checkpoint)")
    p.add_argument("--errors", action="store_true", help="also break the mistakes down: "
                   "TIDE's error types with the mAP each would add if fixed, precision/recall "
                   "at each class's best-F1 threshold, a confusion matrix (errors.png and "
                   "errors.json in --out)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the network")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--limit", type=int, help="evaluate only the first LIMIT images")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        fail("evaluate", "--batch-size/--limit: must be at least 1")
    if (args.coco_root is None) != (args.coco_ann is None):
        given = "--coco-root" if args.coco_ann is None else "--coco-ann"
        fail("evaluate", f"{given}: COCO-format data needs both --coco-root DIR (the images) "
                         "and --coco-ann FILE.json (the annotations)")
    if args.coco_root is not None and args.voc_root is not None:
        fail("evaluate", "--voc-root: give either --voc-root or --coco-root, not both")
    if args.yolo_root is not None and (args.voc_root or args.coco_root) is not None:
        fail("evaluate", "--yolo-root: give one of --voc-root, --coco-root, --yolo-root")
    try:
        return _evaluate(args)
    except (CheckpointError, DataError, backend.DeviceError) as e:
        fail("evaluate", str(e))


def _evaluate(args):
    text_out = sys.stderr if args.json else sys.stdout
    backend.set_device(args.device)
    model, config, meta = load_chosen(args.checkpoint, args.weights, args.prototxt)
    dataset, spec = _dataset_for(meta, args.voc_root, args.coco_root, args.coco_ann,
                                 args.yolo_root)
    want_coco = args.metric in ("coco", "all")
    t = time.perf_counter()
    r = evaluate_model(model, dataset, config, args.batch_size, args.limit,
                       progress=not args.json, coco=want_coco)
    seconds = time.perf_counter() - t

    names = config.class_names
    _print_tables(r, names, args.metric, text_out)

    from .viz import plot_pr_curves          # imported here: matplotlib is slow to import
    weights_file = os.path.abspath(args.checkpoint or args.weights)
    out = args.out or os.path.dirname(weights_file)
    png = os.path.join(out, "pr_curves.png")
    try:
        plot_pr_curves(r["result"], names, png)
        where = f"PR curves: {png}"
    except OSError as e:            # a read-only folder, a full disk: the results stand
        where = f"PR curves not written ({png}: {e.strerror or e}; pass --out DIR)"
        print(f"minissd.evaluate: warning: could not write {png} ({e.strerror or e}); the "
              "results above stand; pass --out DIR to save the curves", file=sys.stderr)
        png = None
    skipped = f" ({r['skipped']} unreadable images skipped)" if r["skipped"] else ""
    print(f"{r['num_images']} images in {seconds:.1f}s{skipped}; {where}", file=text_out)
    errors = _errors(r, names, out, text_out) if args.errors else None
    if args.json:
        out = {
            "map": _nan_to_none(r["map"]), "map_voc07": _nan_to_none(r["map"]),
            "map_voc10": _nan_to_none(r["map_voc10"]),
            "ap": {names[c - 1]: _nan_to_none(v) for c, v in r["ap"].items()},
            "ap_voc10": {names[c - 1]: _nan_to_none(v) for c, v in r["ap_voc10"].items()},
            "num_images": r["num_images"], "checkpoint": weights_file,
            "step": meta.get("step"), "pr_curves": png, "seconds": seconds}
        if errors is not None:
            out["errors"] = _no_nan(errors)
        if want_coco:
            out["coco"] = {k: _nan_to_none(r["coco"][k]) for k in COCO_KEYS}
            out["coco"]["ap"] = {names[c - 1]: _nan_to_none(v)
                                 for c, v in r["coco"]["ap"].items()}
        print(json.dumps(out))
    return 0


def _errors(r, names, out, text_out):
    """Print the error breakdown, write errors.png and errors.json into `out`; returns it."""
    from .analysis.error_report import error_report
    lines, summary, pictures = error_report(r["detections"], r["truths"], names, out)
    print("\n" + "\n".join(lines), file=text_out)
    path = os.path.join(out, "errors.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_no_nan(summary), f, indent=1)
    print(f"error pictures: {', '.join(pictures.values())}; numbers: {path}", file=text_out)
    return summary


def _no_nan(v):
    """v with every NaN float (a class without a threshold) as None, for strict JSON."""
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_no_nan(x) for x in v]
    return _nan_to_none(v)


def _print_tables(r, names, metric, out):
    """The per-class table (the VOC columns --metric asks for, and COCO's AP@[.5:.95] per
    class with coco), then the COCO table."""
    cols = [("AP (VOC07)", r["ap"], r["map"]), ("AP (VOC10)", r["ap_voc10"], r["map_voc10"])]
    cols = {"voc07": cols[:1], "voc10": cols[1:], "coco": [], "all": cols}[metric]
    if metric in ("coco", "all"):
        cols.append(("AP (COCO)", r["coco"]["ap"], r["coco"]["map"]))
    width = max(len(n) for n in names + ("class",))
    print(f"{'class':<{width}}" + "".join(f"  {h:>10}" for h, _, _ in cols)
          + f"  {'objects':>7}", file=out)
    for c in r["ap"]:
        if names[c - 1] == "N/A" and r["result"]["num_gt"][c] == 0:
            continue                   # the gaps of COCO's 91 category ids (torchvision's model)
        print(f"{names[c - 1]:<{width}}" + "".join(f"  {ap[c]:>10.4f}" for _, ap, _ in cols)
              + f"  {r['result']['num_gt'][c]:>7d}", file=out)
    print(f"{'mAP':<{width}}" + "".join(f"  {m:>10.4f}" for _, _, m in cols), file=out)
    if metric in ("coco", "all"):
        print("\n" + format_coco_table(r["coco"]), file=out)


if __name__ == "__main__":
    sys.exit(main())
