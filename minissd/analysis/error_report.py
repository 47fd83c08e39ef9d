"""evaluate --errors: TIDE's error breakdown (errors.py), the precision/recall at each class's
best-F1 threshold and the confusion matrix (confusion.py), as text, a JSON-friendly dict and
a picture (errors.png: the mAP each error type costs, and the row-normalised confusion
matrix)."""
from __future__ import annotations

import os

import numpy as np

from .confusion import best_f1, confusion_matrix
from .errors import NAMES, TYPES, tide_errors

MAX_PRINTED_CLASSES = 20        # a larger confusion matrix goes to the files only


def error_report(detections, ground_truths, class_names, out=None):
    """(lines of text, dict, pictures {name: path}) for one evaluation's detections and
    ground truths (evaluate_model's "detections" and "truths"); pictures go into `out`."""
    r = tide_errors(detections, ground_truths)
    f1 = best_f1(r.points, r.num_gt)
    num_classes = len(class_names) + 1
    C = confusion_matrix(detections, ground_truths, num_classes,
                         {c: v[0] for c, v in f1.items()})
    lines = [f"error types (TIDE, IoU >= 0.5; mAP {100 * r.map:.2f} as TIDE computes it, "
             "101-point): the mAP points a fix of each type would add",
             f"  {'type':<24} {'errors':>7} {'dAP':>7}"]
    for kind in TYPES + ("FP", "FN"):
        count = f"{r.counts[kind]:>7d}" if kind in r.counts else f"{'':>7}"
        lines.append(f"  {NAMES[kind]:<24} {count} {100 * r.dap[kind]:>7.2f}")
    width = max(len(n) for n in tuple(class_names) + ("class",))
    lines += ["", "precision / recall at each class's best-F1 score threshold:",
              f"  {'class':<{width}} {'threshold':>9} {'precision':>9} {'recall':>7} "
              f"{'F1':>6} {'objects':>7}"]
    for c, (t, p, rec, f) in f1.items():
        name = class_names[c - 1] if 0 < c <= len(class_names) else str(c)
        lines.append(f"  {name:<{width}} {t:>9.3f} {p:>9.3f} {rec:>7.3f} {f:>6.3f} "
                     f"{r.num_gt.get(c, 0):>7d}")
    names = ("background",) + tuple(class_names)
    short = [n[:10] for n in names]
    width = max(width, len("background"))
    lines += ["", "confusion matrix at those thresholds (rows: true class, columns: detected; "
              "background row: false alarms, column: missed):"]
    if len(names) > MAX_PRINTED_CLASSES + 1:
        lines.append(f"  ({len(class_names)} classes: see errors.json and errors.png)")
    else:
        lines.append("  " + f"{'':<{width}}" + "".join(f" {n:>10}" for n in short))
        for i, n in enumerate(names):
            lines.append(f"  {n[:width]:<{width}}" + "".join(f" {v:>10d}" for v in C[i]))
    pictures = {}
    if out is not None:
        pictures["errors"] = plot_errors(r, C, names, os.path.join(out, "errors.png"))
    summary = {
        "tide_map": r.map, "dap": dict(r.dap), "counts": dict(r.counts),
        "best_f1": {class_names[c - 1]: {"threshold": t, "precision": p, "recall": rec,
                                         "f1": f}
                    for c, (t, p, rec, f) in f1.items() if 0 < c <= len(class_names)},
        "confusion": C.tolist(), "confusion_labels": list(names), "pictures": pictures}
    return lines, summary, pictures


def plot_errors(r, C, names, path):
    """errors.png: dAP per error type (bars) and the confusion matrix normalised by row."""
    from ..viz import new_axes, save_figure
    axes = new_axes(figsize=(13, 5), ncols=2)
    fig = axes[0].figure
    kinds = TYPES + ("FP", "FN")
    ax = axes[0]
    ax.bar(range(len(kinds)), [100 * r.dap[k] for k in kinds],
           color=["tab:red"] * len(TYPES) + ["tab:gray"] * 2)
    ax.set_xticks(range(len(kinds)), [NAMES[k].split(" ")[0] for k in kinds], rotation=30)
    ax.set(ylabel="mAP points gained by the fix", title=f"error types (TIDE), mAP "
           f"{100 * r.map:.1f}")
    ax = axes[1]
    rows = np.maximum(C.sum(axis=1, keepdims=True), 1)
    ax.imshow(C / rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(C):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if C[i, j] / rows[i, 0] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="detected", ylabel="true", title="confusion matrix (row-normalised)")
    return save_figure(fig, path)
