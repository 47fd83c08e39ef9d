"""Know your data before training: python -m minissd.inspect --voc-root DIR | --coco-root DIR
--coco-ann FILE.json | --yolo-root DIR [--config tiny] [--image-size S] [--out DIR]

Reads the annotations (train and validation splits, exactly as train would open them) and
prints, then writes to --out (report.txt, report.json, sizes.png, worst_covered.png):
  1. problems of the annotations (analysis/dataset.py): unreadable files, boxes outside the
     image, duplicates, images without objects, classes with few objects;
  2. objects per class and split;
  3. object sizes and aspect ratios at the network's input (text histograms; sizes.png);
  4. the recall ceiling (analysis/coverage.py): for every object its best IoU with any default
     box, and the share of objects that reach the matching threshold, overall, by size and by
     class; the worst-covered objects drawn (worst_covered.png);
  5. advice with numbers (analysis/advice.py): the input size, fitted default boxes
     (train --fit-boxes), tiling of large images.
Only the worst-covered objects' images are decoded; everything else comes from annotations.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from .analysis import advice as advice_mod
from .analysis.coverage import best_prior_iou, recall_ceiling
from .analysis.dataset import class_problems, collect
from .analysis.plots import ASPECT_EDGES, SIDE_EDGES, aspect_label, text_histogram
from .cli import Parser, fail
from .config import CONFIGS, get_config
from .data.choice import coco_spec, data_spec, open_split, yolo_spec
from .data.voc import DataError
from .priors import default_boxes

SHOWN_PROBLEMS = 5          # problems of one kind printed; report.json holds them all


def build_parser():
    p = Parser("inspect", description="A report on a dataset for SSD: annotation problems, "
               "counts, object sizes at the input, the recall ceiling of the default boxes, "
               "and advice (input size, fitted default boxes, tiling).")
    a = p.add_argument
    a("--voc-root", metavar="DIR", help="a VOCdevkit, VOC-format folder or flat "
      "labelImg/CVAT/Roboflow export, as for train")
    a("--coco-root", metavar="DIR", help="COCO-format data: the folder of --coco-ann's images")
    a("--coco-ann", metavar="FILE.json", help="the COCO instances file of --coco-root")
    a("--coco-val-root", metavar="DIR", help="the images folder of --coco-val-ann")
    a("--coco-val-ann", metavar="FILE.json", help="a COCO validation file (else a hash split)")
    a("--yolo-root", metavar="DIR", help="an Ultralytics YOLO folder (data.yaml), as for train")
    a("--classes", metavar="A,B,C", help="only these classes, in this order (as train)")
    a("--config", default="tiny", choices=tuple(CONFIGS),
      help="the network whose default boxes are measured (default: tiny)")
    a("--image-size", type=int, metavar="S", help="tiny only: the network's input side")
    a("--threshold", type=float, default=0.5, help="the matching IoU threshold (default 0.5)")
    a("--limit", type=int, help="read at most this many images per split")
    a("--worst", type=int, default=8, help="worst-covered objects drawn (default 8)")
    a("--no-fit", action="store_true", help="skip the default-box fit (faster)")
    a("--out", metavar="DIR", help="folder for the report and pictures (default "
      "inspect-<data folder name>)")
    return p


def _say(text):
    print(f"minissd.inspect: {text}", file=sys.stderr)


def open_data(args):
    """(spec, train dataset, val dataset or None), opened as train opens them."""
    classes = None if args.classes is None else tuple(
        x.strip() for x in args.classes.split(",") if x.strip())
    given = [f for f in ("voc_root", "coco_root", "yolo_root") if getattr(args, f) is not None]
    if len(given) > 1:
        fail("inspect", f"--{given[1].replace('_', '-')}: give one of --voc-root, --coco-root "
                        "and --yolo-root, not several")
    if args.yolo_root is not None:
        spec = yolo_spec(os.path.abspath(args.yolo_root), classes=classes, report=_say)
    elif args.coco_root is not None or args.coco_ann is not None:
        if args.coco_root is None or args.coco_ann is None:
            fail("inspect", "--coco-root: COCO-format data needs both --coco-root DIR and "
                            "--coco-ann FILE.json")
        spec = coco_spec(*(None if p is None else os.path.abspath(p) for p in (
            args.coco_root, args.coco_ann, args.coco_val_root, args.coco_val_ann)),
            classes=classes, report=_say)
    elif args.voc_root is not None:
        spec = data_spec(os.path.abspath(args.voc_root), args.config, classes=classes,
                         report=_say)
    else:
        fail("inspect", "--voc-root: no data given; pass --voc-root DIR, --coco-root DIR "
                        "--coco-ann FILE.json or --yolo-root DIR")
    train = open_split(spec, "train")
    try:
        val = open_split(spec, "val")
    except DataError:
        val = None
    return spec, train, val


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        fail("inspect", f"--limit: {args.limit} images is too few; give 1 or more")
    if not 0 < args.threshold < 1:
        fail("inspect", f"--threshold: {args.threshold:g} is not an IoU; give one in (0, 1)")
    try:
        spec, train, val = open_data(args)
        try:
            config = get_config(args.config, class_names=train.class_names,
                                image_size=args.image_size)
        except ValueError as e:
            fail("inspect", f"--image-size: {e}")
        return report(args, spec, train, val, config)
    except DataError as e:
        fail("inspect", str(e))


def report(args, spec, train, val, config):
    name = os.path.basename(os.path.normpath(spec.get("root") or "data"))
    out = args.out or f"inspect-{name}"
    os.makedirs(out, exist_ok=True)
    lines = []
    say = lines.append
    objs = {"train": collect(train, "train", args.limit)}
    if val is not None:
        objs["val"] = collect(val, "val", args.limit)
    names = config.class_names
    problems = sum((o.problems for o in objs.values()), []) + \
        class_problems(objs["train"], objs.get("val"), names)

    say(f"data: {spec.get('root')} ({spec['kind']}"
        + (f", {spec.get('layout')}" if spec.get("layout") else "") + f"); {len(names)} classes")
    for part, o in objs.items():
        say(f"  {part}: {len(o.ids)} images, {len(o.labels)} objects, "
            f"{len(set(o.image.tolist()))} images with objects")
    say("")
    say(f"problems: {len(problems)}" + ("" if problems else " (none found)"))
    for kind in ("unreadable", "outside", "duplicate", "empty", "few"):
        found = [p for p in problems if p.kind == kind]
        if found:
            say(f"  {kind}: {len(found)}")
            for p in found[:SHOWN_PROBLEMS]:
                say(f"    {p.where}: {p.detail}")
            if len(found) > SHOWN_PROBLEMS:
                say(f"    ... {len(found) - SHOWN_PROBLEMS} more in report.json")
    say("")
    width = max(len(n) for n in names + ("class",))
    say(f"objects per class: {'class':<{width}}" + "".join(f"  {p:>7}" for p in objs))
    for c, n in enumerate(names, start=1):
        say(f"                   {n:<{width}}"
            + "".join(f"  {int((o.labels == c).sum()):>7d}" for o in objs.values()))

    everything = np.concatenate([o.boxes for o in objs.values()])
    labels = np.concatenate([o.labels for o in objs.values()])
    s = config.image_size
    w, h = (everything[:, 2] - everything[:, 0]) * s, (everything[:, 3] - everything[:, 1]) * s
    say("")
    say(f"object side sqrt(w h) in pixels of the {s}x{s} input (all splits):")
    lines += text_histogram(np.sqrt(w * h), SIDE_EDGES, lambda v: f"{v:g}")
    say("aspect ratio w / h at the input:")
    lines += text_histogram(np.maximum(w, 1e-9) / np.maximum(h, 1e-9), ASPECT_EDGES,
                            aspect_label)

    priors = default_boxes(config)
    best = best_prior_iou(everything, priors)
    ceiling = recall_ceiling(everything, labels, priors, s, args.threshold, best=best)
    say("")
    say(f"recall ceiling: {_pct(ceiling.overall)} of {len(labels)} objects have a default box "
        f"at IoU >= {args.threshold:g} ({config.name} at {s} px, {len(priors)} default boxes; "
        f"mean best IoU {np.mean(best[0]) if len(labels) else float('nan'):.3f})")
    say("  by size (side at the input):")
    for label, n, c in ceiling.by_size:
        say(f"    {label:>12}  {n:>7d} objects  {_pct(c)}")
    say("  by class:")
    for c, (n, v) in ceiling.by_class.items():
        say(f"    {names[c - 1]:<{width}}  {n:>7d} objects  {_pct(v)}")

    from .analysis.plots import plot_sizes, plot_worst      # matplotlib: slow to import
    pictures = {"sizes": plot_sizes(everything, config, os.path.join(out, "sizes.png"))}
    if len(labels) and args.worst > 0:
        # the worst of the training objects, drawn on their images
        o = objs["train"]
        b, idx = best[0][:len(o.labels)], best[1][:len(o.labels)]
        if len(o.labels):
            pictures["worst"] = plot_worst(train, o, b, idx, priors, names,
                                           os.path.join(out, "worst_covered.png"), args.worst)

    say("")
    say("advice (from the training objects):")
    adv = advice_mod.advise(args.config, config, objs["train"], args.threshold,
                            fit_ratios=True) if not args.no_fit else _no_fit(config, objs)
    for line in adv["lines"]:
        say(f"  {line}")
    if adv.get("sizes"):
        say("  ceiling by input size: " + ", ".join(
            f"{sz}: {_pct(c)}" for sz, c, _, _ in adv["sizes"]))
        say(f"  objects under {advice_mod.MIN_LEARNABLE} px by input size: " + ", ".join(
            f"{sz}: {_pct(sm)} ({cost:.1f}x time)" for sz, _, sm, cost in adv["sizes"]))
    if adv.get("tiles"):
        say("  ceiling with tiles: " + ", ".join(
            f"{t}px ({n:.1f}/image): {_pct(c)}" for t, n, c in adv["tiles"]))
    say("")
    say("pictures: " + ", ".join(pictures.values()))

    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    fit = adv.get("fit")
    summary = {
        "config": config.name, "image_size": s, "threshold": args.threshold,
        "objects": {p: int(len(o.labels)) for p, o in objs.items()},
        "images": {p: len(o.ids) for p, o in objs.items()},
        "counts": {p: {n: int((o.labels == c).sum()) for c, n in enumerate(names, start=1)}
                   for p, o in objs.items()},
        "problems": [p._asdict() for p in problems],
        "ceiling": ceiling.overall,
        "ceiling_by_size": [{"size": a, "objects": n, "ceiling": c}
                            for a, n, c in ceiling.by_size],
        "ceiling_by_class": {names[c - 1]: {"objects": n, "ceiling": v}
                             for c, (n, v) in ceiling.by_class.items()},
        "advice": adv["lines"],
        "sizes": [{"image_size": a, "ceiling": c, "under_min_side": sm, "cost": k}
                  for a, c, sm, k in adv.get("sizes", [])],
        "tiles": [{"tile": t, "per_image": n, "ceiling": c} for t, n, c in adv.get("tiles", [])],
        "fit": None if fit is None else {"before": fit.before, "after": fit.after,
                                         "min_sizes": list(fit.config.scales()[0]),
                                         "aspect_ratios": [list(r) for r in
                                                           fit.config.aspect_ratios]},
        "pictures": pictures,
    }
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    sys.stdout.write(text)
    print(f"report: {os.path.join(out, 'report.txt')}, report.json", file=sys.stderr)
    return 0


def _no_fit(config, objs):
    return {"lines": ["(--no-fit: advice skipped)"], "sizes": [], "tiles": [], "fit": None}


def _pct(v):
    return "n/a" if v != v else f"{100 * v:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
