"""Pictures of SSD: boxes on images, default boxes, matches, training curves, PR curves.

Every helper draws on a matplotlib Axes: pass `ax=` to draw into your own figure (a notebook's
plt.subplots), or leave it out and a new Figure is made with the Agg canvas, which needs no
display (servers, CI). Nothing here imports pyplot, so importing minissd.viz never changes the
matplotlib backend. Save with `save_figure(ax.figure, path)`.

Boxes are corner form (xmin, ymin, xmax, ymax), normalised to [0, 1] unless normalized=False;
default boxes are center form (cx, cy, w, h), normalised. Arrays may be NumPy or CuPy.
"""
from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .backend import to_numpy
from .boxes import center_to_corner
from .untrusted import atomic_path

_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown",
           "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def new_axes(figsize=(6, 6), ncols=1):
    """A new Figure on the Agg canvas and its Axes (a list when ncols > 1)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return axes if ncols > 1 else axes[0]


def save_figure(fig, path, dpi=100):
    """Write a figure to `path` (PNG by its extension), creating the folder; returns path.
    The picture is written beside it under a temporary name and renamed over it when
    complete (untrusted.atomic_path): an interrupted or failed write leaves no half PNG."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=_format_of(path))
    return path


def _format_of(path):
    """The picture format savefig would take from path's extension (png by default)."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    return ext or "png"


def class_color(label):
    """A fixed colour per class label."""
    return _COLORS[int(label) % len(_COLORS)]


def show_image(image, ax=None):
    """Draw an (H, W, 3) image (uint8, or float in [0, 1]) with pixel axes; returns ax."""
    ax = ax if ax is not None else new_axes()
    image = to_numpy(image)
    ax.imshow(image if image.dtype == np.uint8 else np.clip(image, 0, 1))
    ax.set_axis_off()
    return ax


def draw_boxes(image, boxes, labels=None, scores=None, class_names=None, ax=None, color=None,
               normalized=True, linewidth=2, linestyle="-"):
    """Draw corner boxes on an image, each with "name score" above it.

    image:       (H, W, 3) uint8 or float image, or None to draw on ax as it is
    boxes:       (B, 4) corner boxes (normalised unless normalized=False)
    labels:      (B,) class labels 1..K (colour and name), optional
    scores:      (B,) confidences, optional
    class_names: names of classes 1..K (class_names[label - 1]), optional
    returns      ax
    """
    ax = ax if ax is not None else new_axes()
    if image is not None:
        show_image(image, ax)
        h, w = to_numpy(image).shape[:2]
    else:
        h = w = 1.0
    boxes = to_numpy(boxes).reshape(-1, 4).astype(np.float64)
    if normalized:
        boxes = boxes * np.array([w, h, w, h])                        # (B, 4) pixels
    labels = None if labels is None else to_numpy(labels).reshape(-1)
    scores = None if scores is None else to_numpy(scores).reshape(-1)
    for i, (x0, y0, x1, y1) in enumerate(boxes):      # drawing, not a hot path
        c = color or (class_color(labels[i]) if labels is not None else "tab:red")
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c,
                               linewidth=linewidth, linestyle=linestyle))
        text = []
        if labels is not None:
            lab = int(labels[i])
            text.append(class_names[lab - 1] if class_names and 0 < lab <= len(class_names)
                        else str(lab))
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            ax.text(x0, y0, " ".join(text), color="white", fontsize=8, va="bottom",
                    bbox=dict(facecolor=c, edgecolor="none", pad=1, alpha=0.8))
    return ax


def draw_default_boxes(image, priors, indices=None, ax=None, color="tab:cyan", linewidth=1):
    """Draw default boxes (center form, normalised) on an image; `indices` picks some of them.
    Each box's centre is marked with a dot. Returns ax."""
    priors = to_numpy(priors).reshape(-1, 4)
    if indices is not None:
        priors = priors[np.asarray(indices)]
    ax = draw_boxes(image, center_to_corner(priors), ax=ax, color=color, linewidth=linewidth)
    if image is not None:
        h, w = to_numpy(image).shape[:2]
        ax.plot(priors[:, 0] * w, priors[:, 1] * h, ".", color=color, markersize=3)
    return ax


def draw_matches(image, gt_boxes, priors, conf_t, gt_labels=None, class_names=None, ax=None):
    """Ground truth (thick) and the default boxes matched to an object (thin, dashed, coloured
    by their class): conf_t (P,) from matching.match, > 0 where a prior is positive. Returns ax."""
    conf_t = to_numpy(conf_t).reshape(-1)
    pos = np.flatnonzero(conf_t > 0)
    ax = draw_boxes(image, gt_boxes, labels=gt_labels, class_names=class_names, ax=ax,
                    linewidth=3)
    draw_boxes(None, center_to_corner(to_numpy(priors)[pos]) * _image_scale(image),
               labels=conf_t[pos], ax=ax, normalized=False, linewidth=1, linestyle="--")
    ax.set_title(f"{len(pos)} positive default boxes")
    return ax


def _image_scale(image):
    h, w = to_numpy(image).shape[:2]
    return np.array([w, h, w, h], dtype=np.float64)


def draw_plan(plan, ax=None, title=None):
    """The network as one block diagram, read from a layer plan (minissd.plan.layer_plan).

    Left to right: the input, then every source feature map (a block whose height grows with
    its side), with the trunk layers that lead to it written on the arrow; under each source
    its two 3x3 heads (loc: B_k * 4 channels, conf: B_k * C) and the f_k * f_k * B_k default
    boxes it predicts; at the right the total. Everything comes from the plan, so the picture
    is right for ssd300, ssd512, tiny or any config. Returns ax.

    A body plan (stage "body": a graph, e.g. a ResNet) is drawn the same way, segment k being
    the layers that source k needs and no earlier source needs (_body_segments).
    """
    ax = ax if ax is not None else new_axes(figsize=(16, 5))
    trunk = [p for p in plan if p.stage in ("vgg", "l2norm", "extras")]
    heads = {(p.stage, p.source): p for p in plan if p.stage in ("loc", "conf")}
    # Split the trunk at every source: segment k is what runs between source k-1 and k.
    segments, current, sources = [], [], []
    if any(p.stage == "body" for p in plan):
        segments, sources = _body_segments(plan)
        trunk = []
    for p in trunk:
        if p.stage != "l2norm":
            current.append(p)
        if p.source is not None:
            convs = [q for q in current if q.kind == "conv"] or [p]
            name = p.label if p.kind == "l2norm" else convs[-1].label
            sources.append((p.source, name, p.out_shape))
            segments.append(current)
            current = []
    biggest = max(shape[1] for _, _, shape in sources)
    c_in, size, _ = plan[0].in_shape
    x, total, width = 0.0, 0, 1.0
    ax.add_patch(Rectangle((x, -1.5), width, 3.0, facecolor="lightgray", edgecolor="black"))
    ax.text(x + width / 2, 1.65, f"input\n{c_in}x{size}x{size}", ha="center", va="bottom",
            fontsize=8)
    for (k, name, (c, h, w)), seg in zip(sources, segments):
        # the arrow from the previous block, labelled with the layers that make this source
        layers = [q.label.replace(" (ceil)", "") for q in seg if q.kind in ("conv", "maxpool")]
        n_conv = sum(q.kind == "conv" for q in seg)
        n_pool = sum(q.kind == "maxpool" for q in seg)
        if len(layers) > 3:
            text = f"{layers[0]}\n..\n{layers[-1]}\n({n_conv} conv, {n_pool} pool)"
        else:
            text = "\n".join(layers) if layers else "(same map)"
        if any(q.kind == "batchnorm" for q in seg):
            text += "\n+ BN"
        ax.annotate("", xy=(x + width + 1.2, 0), xytext=(x + width, 0),
                    arrowprops=dict(arrowstyle="->", color="black"))
        ax.text(x + width + 0.6, 0.1, text, ha="center", va="bottom", fontsize=7)
        x += width + 1.2
        height = 0.3 + 2.7 * (h / biggest) ** 0.5
        ax.add_patch(Rectangle((x, -height / 2), width, height, facecolor="tab:blue",
                               alpha=0.35, edgecolor="black"))
        ax.text(x + width / 2, height / 2 + 0.05, f"source {k}\n{name}\n{h}x{w}x{c}",
                ha="center", va="bottom", fontsize=8, fontweight="bold")
        loc, conf = heads["loc", k], heads["conf", k]
        boxes = loc.out_shape[0] // 4
        classes = conf.out_shape[0] // boxes
        count = h * w * boxes
        total += count
        ax.annotate("", xy=(x + width / 2, -2.0), xytext=(x + width / 2, -height / 2),
                    arrowprops=dict(arrowstyle="->", color="tab:red"))
        kk = f"{loc.kernel}x{loc.kernel}"
        ax.text(x + width / 2, -2.05,
                f"loc {kk}: {boxes}x4\nconf {kk}: {boxes}x{classes}\n{h}x{w}x{boxes}\n"
                f"= {count} boxes", ha="center", va="top", fontsize=8, color="tab:red")
    ax.text(x + width + 0.4, -2.4, f"sum: {total} boxes\nloc (N, {total}, 4)\n"
            f"conf (N, {total}, {classes})", ha="left", va="top", fontsize=9,
            fontweight="bold")
    ax.set_xlim(-0.3, x + width + 2.6)
    ax.set_ylim(-3.7, 3.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _body_segments(plan):
    """For a body plan: [segment k] and [(k, name, out_shape)] in source order, segment k
    being the body layers that source k depends on and sources 0..k-1 do not (list order)."""
    body = {p.name: p for p in plan if p.stage == "body"}
    found = sorted((p.source, p) for p in body.values() if p.source is not None)
    done, segments, sources = set(), [], []
    for k, src in found:
        need, stack = set(), [src.name]
        while stack:                                    # src and everything it reads
            name = stack.pop()
            if name in body and name not in need and name not in done:
                need.add(name)
                stack.extend(body[name].inputs)
        segments.append([p for p in body.values() if p.name in need])
        sources.append((k, src.name, src.out_shape))
        done |= need
    return segments, sources


def plot_training_curves(records, path=None):
    """Loss parts and validation mAP against the step, from metrics.jsonl records.

    records: list of dicts; those with "loss" (and "loc", "conf") are training logs, those
             with "map" are evaluations; both carry "step"
    path:    where to save the PNG (optional)
    returns  the Figure
    """
    ax_loss, ax_map = new_axes(figsize=(11, 4), ncols=2)
    logs = [r for r in records if "loss" in r]
    for key, style in (("loss", "-"), ("loc", "--"), ("conf", ":")):
        pts = [(r["step"], r[key]) for r in logs if key in r]
        if pts:
            ax_loss.plot(*zip(*pts), style, label=key)
    ax_loss.set_xlabel("step"), ax_loss.set_ylabel("loss"), ax_loss.set_title("training loss")
    if logs and min(r["loss"] for r in logs) > 0:
        ax_loss.set_yscale("log")
    if logs:
        ax_loss.legend()
    # VOC07 mAP always; COCO's AP@[.5:.95] too when the run logged it (--coco-metric)
    for key, label in (("map", "VOC07 mAP"), ("coco_map", "COCO AP@[.5:.95]")):
        evals = [(r["step"], r[key]) for r in records if r.get(key) is not None
                 and not math.isnan(r[key])]
        if evals:
            ax_map.plot(*zip(*evals), "o-", label=label)
    if any("coco_map" in r for r in records):
        ax_map.legend()
    ax_map.set_xlabel("step"), ax_map.set_ylabel("mAP"), ax_map.set_ylim(0, 1)
    ax_map.set_title("validation mAP (VOC07 11-point)" if not any(
        "coco_map" in r for r in records) else "validation mAP")
    ax_map.grid(alpha=0.3)
    if path is not None:
        save_figure(ax_loss.figure, path)
    return ax_loss.figure


def plot_pr_curves(result, class_names=None, path=None):
    """Precision/recall curve per class from metrics.evaluate_detections' result.

    Each curve is labelled with its AP; classes without ground truth are skipped.
    Returns the Figure (saved to `path` when given).
    """
    ax = new_axes(figsize=(7, 6))
    for c, prec in result["precision"].items():
        if c in result.get("ignored", ()):
            continue
        name = class_names[c - 1] if class_names and c <= len(class_names) else str(c)
        rec = result["recall"][c]
        ax.plot(np.concatenate([[0], rec]), np.concatenate([[1], prec]), color=class_color(c),
                label=f"{name} (AP {result['ap'][c]:.3f})")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall"), ax.set_ylabel("precision")
    ax.set_title(f"PR curves, mAP {result['map']:.3f} ({result.get('metric', '')})")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(ax.figure, path)
    return ax.figure
