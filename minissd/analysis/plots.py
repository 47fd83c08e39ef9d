"""Pictures of the data report: object sizes and aspect ratios against the default boxes, and
the objects the default boxes cover worst. Text histograms for the terminal are here too."""
from __future__ import annotations

import numpy as np

from ..boxes import center_to_corner
from .coverage import object_sides

SIDE_EDGES = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))
ASPECT_EDGES = (0, 1 / 5, 1 / 3, 1 / 2, 2 / 3, 3 / 2, 2, 3, 5, float("inf"))


def text_histogram(values, edges, fmt, width=40):
    """Lines "label  count  ####" of a histogram over the given bin edges (empty bins kept
    between the first and the last non-empty one)."""
    values = np.asarray(values, np.float64)
    counts = [int(((values >= lo) & (values < hi)).sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    used = [i for i, c in enumerate(counts) if c]
    if not used:
        return ["(no objects)"]
    top = max(counts)
    lines = []
    for i in range(used[0], used[-1] + 1):
        lo, hi = edges[i], edges[i + 1]
        label = f">= {fmt(lo)}" if hi == float("inf") else f"{fmt(lo)} - {fmt(hi)}"
        bar = "#" * int(round(width * counts[i] / top))
        lines.append(f"  {label:>15}  {counts[i]:>7d}  {bar}")
    return lines


def aspect_label(v):
    return f"{v:.2f}" if v >= 1 or v == 0 else f"1/{1 / v:.3g}"


def plot_sizes(boxes, config, path):
    """sizes.png: (left) object side sqrt(w h) in input pixels, log bins, with the default
    boxes' sizes as lines; (middle) aspect ratio w/h, with the default boxes' ratios; (right)
    each object's (w, h) in input pixels, with every default-box shape."""
    from ..viz import new_axes, save_figure
    axes = new_axes(figsize=(15, 4.5), ncols=3)
    fig = axes[0].figure
    s = config.image_size
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = (b[:, 2] - b[:, 0]) * s, (b[:, 3] - b[:, 1]) * s
    sides = np.maximum(object_sides(b, s), 0.5)
    mins, maxs = config.scales()
    ax = axes[0]
    ax.hist(sides, bins=np.geomspace(0.5, max(2 * s, sides.max()), 40), color="tab:blue")
    ax.set_xscale("log")
    for m, x in zip(mins, maxs):
        ax.axvline(m, color="tab:red", lw=1)
        ax.axvline(np.sqrt(m * x), color="tab:orange", lw=1, ls="--")
    ax.set(xlabel=f"object side sqrt(w h), pixels of the {s}x{s} input", ylabel="objects",
           title="sizes (red: default box s_k, orange: s'_k)")
    ax = axes[1]
    aspect = np.clip(np.maximum(w, 1e-6) / np.maximum(h, 1e-6), 1 / 20, 20)
    ax.hist(aspect, bins=np.geomspace(1 / 20, 20, 41), color="tab:green")
    ax.set_xscale("log")
    for r in sorted({1.0} | {float(a) for rs in config.aspect_ratios for a in rs}):
        for v in (r, 1 / r):
            ax.axvline(v, color="tab:red", lw=1)
    ax.set(xlabel="aspect ratio w / h at the input", ylabel="objects",
           title="aspect ratios (red: default boxes')")
    ax = axes[2]
    ax.scatter(np.maximum(w, 0.5), np.maximum(h, 0.5), s=4, alpha=0.4, color="tab:blue")
    shapes = {}
    for m, x, rs in zip(mins, maxs, config.aspect_ratios):
        shapes[(m, m)] = shapes[(np.sqrt(m * x),) * 2] = 1
        for a in rs:
            shapes[(m * np.sqrt(a), m / np.sqrt(a))] = shapes[(m / np.sqrt(a), m * np.sqrt(a))] = 1
    sw, sh = np.array(list(shapes)).T
    ax.scatter(sw, sh, marker="x", color="tab:red", s=30, label="default boxes")
    ax.set(xscale="log", yscale="log", xlabel="width, input pixels", ylabel="height, input pixels",
           title="objects (dots) and default-box shapes (x)")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def plot_worst(dataset, objects, best, index, priors, class_names, path, count=8):
    """worst_covered.png: the `count` objects with the lowest best IoU, each on its image
    (green: the object, red: its best default box, with the IoU in the title)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..viz import draw_boxes, save_figure
    order = np.argsort(best, kind="stable")[:count]
    cols = min(4, max(1, len(order)))
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig = Figure(figsize=(4 * cols, 4 * rows))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, k + 1) for k in range(rows * cols)]
    corners = center_to_corner(np.asarray(priors, np.float64))
    for ax, g in zip(axes, order):
        i = int(objects.image[g])
        try:
            image = dataset[i].image
        except Exception:                    # an unreadable image: draw the boxes alone
            image = np.full((64, 64, 3), 255, np.uint8)
        draw_boxes(image, objects.boxes[g:g + 1], objects.labels[g:g + 1],
                   class_names=class_names, ax=ax, color="tab:green")
        _draw_prior(ax, image, corners[index[g]])
        _zoom(ax, image, objects.boxes[g], corners[index[g]])
        ax.set_title(f"{objects.ids[i]}  IoU {best[g]:.2f}", fontsize=9)
        ax.axis("off")
    for ax in axes[len(order):]:
        ax.axis("off")
    return save_figure(fig, path)


def _draw_prior(ax, image, corner):
    from matplotlib.patches import Rectangle
    h, w = image.shape[:2]
    x0, y0, x1, y1 = np.asarray(corner) * np.array([w, h, w, h])
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="tab:red",
                           linewidth=1.5, linestyle="--"))


def _zoom(ax, image, box, prior):
    """Show the region around an object and its default box (at least 48 pixels wide, at
    most the image)."""
    h, w = image.shape[:2]
    both = np.concatenate([np.asarray(box).reshape(1, 4), np.asarray(prior).reshape(1, 4)])
    both = both * np.array([w, h, w, h])
    x0, y0 = both[:, :2].min(axis=0)
    x1, y1 = both[:, 2:].max(axis=0)
    half = max(x1 - x0, y1 - y0, 24.0) * 1.5
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax.set_xlim(max(cx - half, 0), min(cx + half, w))            # within the image
    ax.set_ylim(min(cy + half, h), max(cy - half, 0))
