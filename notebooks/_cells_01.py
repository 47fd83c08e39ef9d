"""Cells of 01_default_boxes.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 01 · Default boxes

SSD predicts every object as an **offset from a fixed box**, a *default box* (the paper's name;
other detectors say *anchor* or *prior*). This notebook builds the 8732 default boxes of SSD300
from `minissd.priors.default_boxes` and looks at them.

**Concept.** Six feature maps of decreasing size (38x38 down to 1x1) each tile the image with a
grid. Every cell of map $k$ holds $B_k$ boxes (4 or 6) centred on the cell, all of one scale
$s_k$: large maps see small objects, small maps see large ones.
"""),
("code", r"""
import os
import tempfile
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.config import ssd300
from minissd.data.augment import resize
from minissd.data.synthetic import generate
from minissd.data.voc import VOCDataset
from minissd.priors import boxes_per_location, default_boxes

cfg = ssd300()
print("feature maps", cfg.feature_maps)
print("steps       ", cfg.steps, "  (pixels per cell; f_k = 300 / step)")
print("ratios      ", cfg.aspect_ratios)
print("B_k         ", cfg.mbox)
"""),
("md", r"""
## Scales: the paper's formula and the VGG config

The paper (Sec. 2.2) spaces the scales evenly between $s_{min} = 0.2$ and $s_{max} = 0.9$ for
$m = 6$ maps:

$$s_k = s_{min} + \frac{s_{max} - s_{min}}{m - 1}(k - 1), \qquad k = 1, \dots, m$$

Each location also gets an extra square box of scale $s'_k = \sqrt{s_k\, s_{k+1}}$. For an
aspect ratio $a$, the box is $w = s_k\sqrt{a}$, $h = s_k / \sqrt{a}$ (and its transpose for
$1/a$).

The released VOC model (Caffe SSD, ssd.pytorch, and `minissd.config.ssd300`) does not use the
formula as written: it gives conv4_3 a smaller scale (0.1, i.e. 30 px) and spaces the other five
from 0.2 to 0.88 in whole pixels (`min_sizes`, `max_sizes`). `SSDConfig.scales()` returns
either; an empty `min_sizes` selects the formula.
"""),
("code", r"""
paper = replace(cfg, name="ssd300-paper", min_sizes=(), max_sizes=())
vgg_min, vgg_max = cfg.scales()
pap_min, pap_max = paper.scales()
names = ["conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]

header = (f"{'k':>2} {'source':>9} {'f_k':>4} {'step':>5} | {'paper s_k':>9} {'s_k prime':>9} | "
          f"{'VGG s_k':>8} {'s_k prime':>9} | {'B_k':>3} {'boxes':>6}")
print(header)
print("-" * len(header))
for k, (name, f, step, b) in enumerate(zip(names, cfg.feature_maps, cfg.steps, cfg.mbox)):
    ps, pp = pap_min[k] / 300, np.sqrt(pap_min[k] * pap_max[k]) / 300
    vs, vp = vgg_min[k] / 300, np.sqrt(vgg_min[k] * vgg_max[k]) / 300
    print(f"{k + 1:>2} {name:>9} {f:>4} {step:>5} | {ps:>9.3f} {pp:>9.3f} | "
          f"{vs:>8.3f} {vp:>9.3f} | {b:>3} {f * f * b:>6}")
"""),
("code", r"""
# Check: the formula gives 0.2, 0.34, ..., 0.9, and the config's sizes are the VOC model's.
assert np.allclose(np.array(pap_min) / 300, [0.2, 0.34, 0.48, 0.62, 0.76, 0.9])
assert tuple(vgg_min) == (30, 60, 111, 162, 213, 264)
"""),
("md", r"""
## Counting the boxes

Map $k$ has $f_k^2$ locations and $B_k = 2 + 2\,|\text{ratios}_k|$ boxes per location
(two squares, then a wide and a tall box per ratio), so

$$P = \sum_k f_k^2 B_k
     = 38^2\cdot4 + 19^2\cdot6 + 10^2\cdot6 + 5^2\cdot6 + 3^2\cdot4 + 1^2\cdot4 = 8732.$$
"""),
("code", r"""
counts = [f * f * boxes_per_location(r) for f, r in zip(cfg.feature_maps, cfg.aspect_ratios)]
priors = default_boxes(cfg)                       # (P, 4) center form (cx, cy, w, h)
print(" + ".join(map(str, counts)), "=", sum(counts))
print("priors", priors.shape, priors.dtype)
assert sum(counts) == cfg.num_priors() == priors.shape[0] == 8732
assert default_boxes(paper).shape == (8732, 4)    # same layout, other sizes
"""),
("md", r"""
## One location, worked by hand

The boxes are listed map by map, then row $i$, then column $j$, then box by box, the order the
network's heads write their predictions in. So the boxes of cell $(i, j)$ of map $k$ start at

$$\text{start} = \sum_{k' < k} f_{k'}^2 B_{k'} + (i f_k + j) B_k,$$

with centre $c_x = (j + 0.5) / f_k$, $c_y = (i + 0.5) / f_k$ where $f_k = 300 / \text{step}_k$.
For conv7 ($k = 2$, $f = 19$, step 16) at cell $(9, 9)$: $c_x = c_y = 9.5 \cdot 16 / 300 = 0.5067$;
$s_2 = 60/300 = 0.2$, $s'_2 = \sqrt{60 \cdot 111}/300 = 0.272$; ratio 2 gives
$0.2\sqrt2 \times 0.2/\sqrt2 = 0.283 \times 0.141$.
"""),
("code", r"""
offsets = np.cumsum([0] + counts)                 # first box of each map
k, i, j = 1, 9, 9
f, b = cfg.feature_maps[k], cfg.mbox[k]
start = offsets[k] + (i * f + j) * b
cell = priors[start:start + b]                    # (B_k, 4)
np.set_printoptions(precision=4, suppress=True)
print("cx, cy, w, h of the 6 boxes of conv7 cell (9, 9):")
print(cell)
print("w / h:", cell[:, 2] / cell[:, 3])
assert np.allclose(cell[:, :2], 9.5 * 16 / 300)
assert np.allclose(cell[:, 2] / cell[:, 3], [1, 1, 2, 1 / 2, 3, 1 / 3], rtol=1e-5)
assert np.allclose(cell[1, 2], np.sqrt(60 * 111) / 300)
"""),
("md", r"""
## Default boxes on an image

An image from the synthetic set (`minissd.data.synthetic`), resized to 300x300. For each map,
the dots are the centres of all its cells and the boxes are the $B_k$ default boxes of the cell
nearest the image centre.
"""),
("code", r"""
root = generate(tempfile.mkdtemp(prefix="minissd-nb01-"), num_train=8, num_val=0, image_size=300,
                seed=1)
ds = VOCDataset(root, splits=("train",))
idx = int(np.argmax([len(ds[n].boxes) for n in range(len(ds))]))   # the busiest image
sample = ds[idx]
image = resize(sample.image, 300)
print("image", sample.image_id, image.shape,
      "objects:", [ds.class_names[l - 1] for l in sample.labels])

fig, axes = plt.subplots(2, 3, figsize=(13, 9))
for k, ax in enumerate(axes.ravel()):
    f, b = cfg.feature_maps[k], cfg.mbox[k]
    c = f // 2
    start = offsets[k] + (c * f + c) * b
    centres = priors[offsets[k]:offsets[k + 1]:b, :2] * 300        # (f*f, 2) one per cell
    viz.draw_default_boxes(image, priors, indices=np.arange(start, start + b), ax=ax,
                           color="yellow", linewidth=1.5)
    ax.plot(centres[:, 0], centres[:, 1], ".", color="white", markersize=1.5 if f > 10 else 4)
    ax.set_title(f"{names[k]}: {f}x{f} cells, {b} boxes each, s_k = {vgg_min[k] / 300:.2f}")
fig.tight_layout()
plt.show()
"""),
("md", r"""
The same picture for the two scale rules: the square box $s_k$ of each map, centred on the
image, with the paper's formula (left) and the VGG config (right). The formula's smallest box is
twice as large, so very small objects have no default box their size.
"""),
("code", r"""
paper_priors = default_boxes(paper)
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
for ax, boxes, title in ((axes[0], paper_priors, "paper formula (0.2 .. 0.9)"),
                         (axes[1], priors, "VGG config (30 .. 264 px)")):
    squares = []
    for k, (f, b) in enumerate(zip(cfg.feature_maps, cfg.mbox)):
        c = f // 2
        squares.append(offsets[k] + (c * f + c) * b)   # box 0 of the centre cell: (s_k, s_k)
    viz.draw_default_boxes(image, boxes, indices=squares, ax=ax, color="yellow", linewidth=1.5)
    ax.set_title(title)
plt.show()
assert paper_priors[squares[0], 2] > 1.9 * priors[squares[0], 2]
"""),
("md", r"""
## Exercises

1. SSD512 (`minissd.config.ssd512`) has seven maps. Count its default boxes by hand, then check
   with `default_boxes(ssd512()).shape` (24564).
2. Remove ratio 3 from every map (and fix `mbox`). How many boxes are left? Which objects lose
   a well-shaped default box?
3. `clip=True` clamps $(c_x, c_y, w, h)$, not the corners. Find the boxes that change and draw
   them. Would clamping the corners change the trained model's predictions?
4. For an object of 20x20 pixels, which map and which box has the highest IoU? Use
   `minissd.boxes.iou` with `minissd.boxes.center_to_corner(priors)`.
"""),
]
