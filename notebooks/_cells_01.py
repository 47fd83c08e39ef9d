"""Cells of 01_default_boxes.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 01 · Default boxes

SSD predicts every object as an **offset from a fixed box**, a *default box* (the paper's name;
other detectors say *anchor* or *prior*). This notebook explains why SSD has so many of them,
builds the 8732 default boxes of SSD300 with `minissd.priors.default_boxes`, and draws them on
real photos.

Three words first, because every table below uses them:

* a **feature map** is one of the network's intermediate images: an array of $f \times f$
  cells (and many channels) that a convolution computes from the input. SSD300 predicts from six
  of them, of $f_k$ = 38, 19, 10, 5, 3 and 1 cells per side (`feature_maps`);
* the **step** of a map is how many input pixels one of its cells stands for (`steps`: 8 for
  the 38x38 map, $300 / 38 \approx 8$; 300 for the 1x1 map);
* **boxes per cell** $B_k$ (`mbox`): each cell of map $k$ carries $B_k$ default boxes, all
  centred on the cell, of different sizes and shapes. For every one of them the network predicts
  4 offsets and one score per class.

## Why SSD exists

In 2015 the accurate detectors had **two stages**. Faster R-CNN first runs a region proposal
network that suggests about 300 candidate boxes per image, then crops each candidate's
features (RoI pooling) and runs a second network on every crop to classify it and refine its
box. Accurate, but the second stage runs once per proposal: 7 images per second on a GPU.

**YOLO v1** (Redmon et al., 2015) was not the first network to go from pixels to boxes
(OverFeat, 2013, slid one network over the image and regressed boxes; MultiBox, 2014, predicted
class-agnostic boxes in one pass and left the classes to a second network). It was the first to
predict **all the boxes and all the classes of an image in one real-time pass** of one network.
It cuts the image into a $7 \times 7$ grid and predicts, from its last, coarse feature map,
$B = 2$ boxes per cell and one set of class scores per cell: $7 \cdot 7 \cdot 2 = 98$ boxes in
all. Its output is one $7 \times 7 \times 30$ array: per cell, $B \cdot 5 = 10$ numbers for
the two boxes ($x, y, w, h$ and a confidence each) and $C = 20$ class probabilities. Fast
(45 images per second), but every cell can report at most two objects, of
one class, and all of them are predicted from a map where one cell covers 64x64 pixels of a
448-pixel image. A flock of small birds is lost.

**SSD** (Liu et al.) keeps YOLO's single pass and fixes both limits. It predicts from **six**
feature maps of decreasing resolution (38x38 down to 1x1 in SSD300), with 4 or 6 default boxes
per cell, each with its own class scores: **8732 boxes**, and its output is a $8732 \times (4 + C)$
array, $C = 21$ on VOC (20 classes and background): every box has its own 4 offsets and its own
class scores, where YOLO v1's two boxes of a cell share one set of classes. *Single shot*
means that one forward
pass of one network gives every box and every class score at once: there is no proposal step
and no second network run per region. What remains after the network is only decoding and
non-maximum suppression (notebook 06).

A note on dates, since explanations of SSD (the walkthrough these notebooks were first written
from among them) sometimes present it as an answer to YOLO v2: SSD appeared on arXiv in
December 2015 and at ECCV 2016; YOLO v2 (YOLO9000) appeared a year later, in December 2016,
took up anchor boxes (from Faster R-CNN) and compared itself with SSD. SSD came first.
"""),
("code", r"""
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from skimage.feature import blob_log

from minissd import viz
from minissd.boxes import center_to_corner, iou
from minissd.config import ssd300, tiny
from minissd.data.augment import resize
from minissd.data.photos import normalised_boxes, photo
from minissd.priors import box_labels, boxes_per_location, default_boxes

cfg = ssd300()
print("feature maps", cfg.feature_maps, "  (f_k: cells per side of map k)")
print("steps       ", cfg.steps, "  (pixels of the 300-pixel input per cell)")
print("ratios      ", cfg.aspect_ratios)
print("B_k         ", cfg.mbox, "  (default boxes per cell)")

yolo_boxes = 7 * 7 * 2                           # S x S cells, B boxes each
ssd_boxes = cfg.num_priors()
print(f"YOLO v1: {yolo_boxes} boxes from one 7x7 map;  SSD300: {ssd_boxes} boxes from "
      f"{len(cfg.feature_maps)} maps ({ssd_boxes / yolo_boxes:.0f}x as many)")
assert yolo_boxes == 98 and ssd_boxes == 8732 and len(cfg.feature_maps) == 6

yolo_out = (7, 7, 2 * 5 + 20)        # per cell: 2 boxes x (x, y, w, h, conf), 20 classes
ssd_out = (ssd_boxes, 4 + cfg.num_classes)       # per box: 4 offsets, 21 class scores
print(f"output: YOLO v1 {yolo_out} = {np.prod(yolo_out)} numbers;  SSD300 {ssd_out} = "
      f"{np.prod(ssd_out)} numbers")
assert yolo_out == (7, 7, 30) and np.prod(yolo_out) == 1470
assert ssd_out == (8732, 25) and np.prod(ssd_out) == 218_300
"""),
("md", r"""
### Default boxes on several maps, anchors on one

Faster R-CNN's region proposal network also places fixed boxes (it calls them *anchors*) on a
feature map, and SSD's default boxes are "similar to the anchor boxes used in Faster R-CNN"
(the paper, Sec. 2.1). The difference is where they sit. The RPN puts $k = 9$ anchors (3 scales,
128, 256 and 512 pixels, times 3 ratios) at every position of **one** map, conv5_3 at stride 16,
"typically ~2,400" positions (a 1000x600 image gives a $63 \times 38$ map): all sizes are
predicted from the same coarse features. SSD gives each map the boxes of **its own size**: the
small boxes sit on the fine 38x38 map (stride 8), the large ones on the coarse maps, so each size
is predicted from features whose cells match it.
"""),
("code", r"""
rpn_positions = 63 * 38                           # conv5_3 of a 1000x600 image, stride 16
rpn_anchors = rpn_positions * 9                   # 3 scales x 3 ratios, all on this one map
print(f"RPN: {rpn_positions} positions x 9 anchors = {rpn_anchors} anchors on one map")
ssd_per_map = [f * f * b for f, b in zip(cfg.feature_maps, cfg.mbox)]
print("SSD300: default boxes per map", ssd_per_map, "(smallest boxes on the finest map)")
assert rpn_positions == 2394 and rpn_anchors == 21546
assert ssd_per_map[0] == 5776 and sum(ssd_per_map) == 8732
"""),
("md", r"""
### A crowd of small objects

The Hubble eXtreme Deep Field (`skimage.data.hubble_deep_field()`, NASA / HubbleSite, public
domain) is a sky full of small galaxies. There are no hand-placed boxes for it (there are
hundreds of galaxies): a blob detector (`skimage.feature.blob_log`, a Laplacian of Gaussian)
finds the bright ones, and we count how many fall into each cell of YOLO v1's 7x7 grid. A cell
can report at most two of them. SSD300's first map, 38x38 with 4 boxes per cell, has room for
almost all of them.

This is about *capacity*, how many objects a design can report at all. Most of these galaxies
are a few pixels wide, smaller than even SSD300's smallest default box (30 pixels): finding
objects that small is hard for SSD too (notebook 08 shows how augmentation helps).
"""),
("code", r"""
sky = photo("hubble_deep_field")
print("license:", sky.license)
gray = resize(sky.image, 300).mean(axis=2) / 255.0              # (300, 300) in 0..1
blobs = blob_log(gray, min_sigma=1, max_sigma=6, num_sigma=6, threshold=0.12)  # (n, 3) y, x, s
centres = blobs[:, [1, 0]]                                       # (n, 2) x, y in pixels
print(len(centres), "galaxies found")


grid_counts = {}                                                 # cells per side -> counts
for cells in (7, 38):
    ij = np.minimum((centres / 300 * cells).astype(int), cells - 1)    # (n, 2) column, row
    grid_counts[cells] = np.bincount(ij[:, 1] * cells + ij[:, 0], minlength=cells * cells)
yolo_counts, ssd_counts = grid_counts[7], grid_counts[38]        # (49,), (1444,)
yolo_can = np.minimum(yolo_counts, 2).sum()
ssd_can = np.minimum(ssd_counts, 4).sum()
print(f"YOLO v1 7x7, 2 per cell: can report {yolo_can} of {len(centres)} "
      f"(busiest cell: {yolo_counts.max()} galaxies)")
print(f"SSD300 conv4_3 38x38, 4 per cell: can report {ssd_can} of {len(centres)} "
      f"(busiest cell: {ssd_counts.max()})")
assert yolo_can <= yolo_boxes and yolo_can < len(centres) / 2
assert ssd_can >= 0.99 * len(centres)

fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
for ax, cells, counts, cap, title in ((axes[0], 7, yolo_counts, 2, "YOLO v1: 7x7 cells"),
                                      (axes[1], 38, ssd_counts, 4, "SSD conv4_3: 38x38 cells")):
    ax.imshow(resize(sky.image, 300))
    for t in np.linspace(0, 300, cells + 1):
        ax.axhline(t, color="white", linewidth=0.8 if cells < 10 else 0.2)
        ax.axvline(t, color="white", linewidth=0.8 if cells < 10 else 0.2)
    ij = np.minimum((centres / 300 * cells).astype(int), cells - 1)
    over = counts[ij[:, 1] * cells + ij[:, 0]] > cap                   # galaxy in a full cell
    ax.plot(*centres[~over].T, "o", color="lime", markersize=3, label="cell has room")
    ax.plot(*centres[over].T, "o", color="red", markersize=3,
            label=f"cell has more than {cap}")
    ax.set_title(f"{title}: room for {np.minimum(counts, cap).sum()} of {len(centres)}")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_axis_off()
fig.tight_layout()
plt.show()
"""),
("md", r"""
## Scales: the paper's formula and the released sizes

Map $k$ gets a scale $s_k$, a fraction of the image side. The paper (Sec. 2.2) spaces them
evenly between $s_{min} = 0.2$ and $s_{max} = 0.9$ for $m = 6$ maps:

$$s_k = s_{min} + \frac{s_{max} - s_{min}}{m - 1}(k - 1), \qquad k = 1, \dots, m$$

Not every box of map $k$ has scale $s_k$. Each cell holds:

* a square of side $s_k$ (aspect ratio 1);
* one **extra square** of side $s'_k = \sqrt{s_k\, s_{k+1}}$, between this map's scale and
  the next one's;
* for each aspect ratio $a$ of the map, a wide box $w = s_k\sqrt{a}$, $h = s_k / \sqrt{a}$
  and its transpose, the tall box for $1/a$. These have the area $s_k^2$ of the first square.

The released VOC model (Caffe SSD's `ssd_pascal.py`, ssd.pytorch, and `minissd.config.ssd300`)
gives conv4_3 the scale 0.1 (30 px). That is the paper's own choice too: its Sec. 3.1 sets
"default box with scale 0.1 on conv4_3" for the VOC model, and Sec. 2.2's formula then covers
the other five maps. The other five are not 0.2, 0.34, ..., 0.9 but **0.20, 0.37, 0.54, 0.71,
0.88**: Caffe's script computes the spacing in whole percent, $\lfloor (90 - 20) / (6 - 2)
\rfloor = \lfloor 17.5 \rfloor = 17$ percentage points, so the last map gets 88% rather than
90% (it is this integer step, not a rounding of pixels: $0.88 \cdot 300 = 264$ exactly). The
extra square's $s_{k+1}$ comes from `max_sizes` (the next map's size; 315 px, 105%, for the
last one). These `min_sizes` are therefore the paper's scales as the released code computes
them. `SSDConfig.scales()` returns either; an empty `min_sizes` selects the formula as written.
"""),
("code", r"""
paper = replace(cfg, name="ssd300-paper", min_sizes=(), max_sizes=())
vgg_min, vgg_max = cfg.scales()
pap_min, pap_max = paper.scales()
names = ["conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]

header = (f"{'k':>2} {'source':>9} {'f_k':>4} {'step':>5} | {'paper s_k':>9} {'s_k prime':>9} | "
          f"{'rel. s_k':>8} {'s_k prime':>9} | {'B_k':>3} {'boxes':>6}")
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
# ssd_pascal.py's rule: conv4_3 at 10%, then whole percents from 20 in steps of
# floor((90 - 20) / (6 - 2)) = 17, each size ratio * 300 / 100; max sizes: the next ratio.
step = (90 - 20) // (6 - 2)
ratios = [10] + list(range(20, 90 + 1, step))    # 10, 20, 37, 54, 71, 88
print("percent step", step, "->", ratios, "% of 300 px")
assert step == 17 and ratios == [10, 20, 37, 54, 71, 88]
assert [300 * r // 100 for r in ratios] == list(vgg_min)
assert [300 * r // 100 for r in ratios[1:] + [ratios[-1] + step]] == list(vgg_max)
"""),
("md", r"""
## Counting the boxes

Map $k$ is $f_k \times f_k$ cells (`feature_maps`, the paper's $|f_k|$) and has
$B_k = 2 + 2\,|\text{ratios}_k|$ boxes per cell (two squares, then a wide and a tall box per
ratio), so

$$P = \sum_k f_k^2 B_k
     = 38^2\cdot4 + 19^2\cdot6 + 10^2\cdot6 + 5^2\cdot6 + 3^2\cdot4 + 1^2\cdot4
     = 5776 + 2166 + 600 + 150 + 36 + 4 = 8732.$$

The walkthrough these notebooks were first written from gives 8742 here: a slip of addition.
The paper, Caffe SSD and ssd.pytorch all have 8732, and so does the code below.

**Why 4 boxes on some maps and 6 on others.** The paper (Sec. 3.1) puts 6 default boxes at each
location of conv7, conv8_2 and conv9_2 and only 4 on conv4_3, conv10_2 and conv11_2, "omitting
aspect ratios of 1/3 and 3". The paper gives no reason; two facts fit the choice. conv4_3 is
the largest map (38x38: 5776 boxes with 4 per cell, 8664 with 6, a third more boxes in all), and
on the 3x3 and 1x1 maps a ratio-3 box would be wider than the image ($213\sqrt3 = 369$ and
$264\sqrt3 = 457$ pixels against 300) and cut by the border. The extra shapes are worth having
where they are used: in the paper's ablation (Sec. 3.2,
Table 2) removing the 1/3 and 3 boxes everywhere costs 0.6 mAP points on VOC2007 test, and also
removing 1/2 and 2 costs another 2.1.
"""),
("code", r"""
counts = [f * f * boxes_per_location(r) for f, r in zip(cfg.feature_maps, cfg.aspect_ratios)]
priors = default_boxes(cfg)                       # (P, 4) center form (cx, cy, w, h)
print(" + ".join(map(str, counts)), "=", sum(counts))
print("priors", priors.shape, priors.dtype)
assert counts == [5776, 2166, 600, 150, 36, 4]
assert sum(counts) == cfg.num_priors() == priors.shape[0] == 8732 != 8742
assert default_boxes(paper).shape == (8732, 4)    # same layout, other sizes
six_everywhere = sum(f * f * 6 for f in cfg.feature_maps)
print("with 6 boxes on every map:", six_everywhere, "(conv4_3 alone:", 38 * 38 * 6, ")")
assert six_everywhere == 11640 and 38 * 38 * 6 == 8664
assert round((8732 - 5776 + 8664) / 8732, 2) == 1.33          # a third more boxes in all
print("a ratio-3 box on conv10_2, conv11_2:", [round(m * np.sqrt(3)) for m in cfg.min_sizes[4:]],
      "pixels wide")
assert [round(m * np.sqrt(3)) for m in cfg.min_sizes[4:]] == [369, 457]
"""),
("md", r"""
## One location, worked by hand

Two numbers describe a map's grid, and they are not the same:

* $f_k$, the map's side in cells (`feature_maps[k]`: 38, 19, 10, 5, 3, 1);
* $n_k = 300 / \text{step}_k$, how many cells of $\text{step}_k$ pixels fit across the image
  (37.5, 18.75, 9.375, 4.6875, 3, 1). ssd.pytorch's `PriorBox` calls this one `f_k`.

The cell centres use the step: $c_x = (j + 0.5) / n_k$, $c_y = (i + 0.5) / n_k$ for row $i$ and
column $j$, $0 \le i, j < f_k$. Where $f_k > n_k$ the grid runs a little past the image: the
last centre of conv8_2 is at $9.5 \cdot 32 / 300 = 1.013$, clipped to 1. (The paper writes
$(i + 0.5) / |f_k|$, which puts every grid exactly on the image; the released model uses the
steps.)

The boxes are listed map by map, then row $i$, then column $j$, then box by box, the order the
network's heads write their predictions in. So the boxes of cell $(i, j)$ of map $k$ start at

$$\text{start} = \sum_{k' < k} f_{k'}^2 B_{k'} + (i f_k + j) B_k.$$

For conv7 ($k = 2$, $f_2 = 19$, step 16) at cell $(9, 9)$: $c_x = c_y = 9.5 \cdot 16 / 300 =
0.5067$; $s_2 = 60/300 = 0.2$, $s'_2 = \sqrt{60 \cdot 111}/300 = 0.272$; ratio 2 gives
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

n = [300 / s for s in cfg.steps]
print("f_k:", cfg.feature_maps, "  n_k = 300 / step_k:", n)
assert n[0] == 37.5 != cfg.feature_maps[0] and n[2] == 9.375
last = offsets[3] - cfg.mbox[2]                   # first box of conv8_2's last cell (9, 9)
unclipped = default_boxes(replace(cfg, clip=False))
print(f"last conv8_2 centre: {unclipped[last, 0]:.4f}, clipped to {priors[last, 0]:.1f}")
assert np.isclose(unclipped[last, 0], 9.5 * 32 / 300) and priors[last, 0] == 1.0
"""),
("md", r"""
## Default boxes on a real photo

Chelsea the cat (`skimage.data.chelsea()`; CC0, by the photographer Stefan van der Walt),
resized to 300x300 as SSD300's input is (the aspect ratio is not kept, SSD squashes every image
to a square). For each map, the dots are the centres of all its cells and the boxes are the
$B_k$ default boxes of the cell nearest the image centre, each labelled by its
(scale, aspect ratio) with `minissd.priors.box_labels`: scale $s_k$, or $s'_k$ for the extra
square, and the ratio $w/h$. The wide and tall boxes of ratio $a$ have the area $s_k^2$ of the
first square. The boxes of the coarsest maps are cut to the image (`clip`).
"""),
("code", r"""
cat = photo("chelsea")
print("license:", cat.license)
image = resize(cat.image, 300)

fig, axes = plt.subplots(2, 3, figsize=(14, 9.6))
for k, ax in enumerate(axes.ravel()):
    f, b = cfg.feature_maps[k], cfg.mbox[k]
    c = f // 2
    start = offsets[k] + (c * f + c) * b
    tags = box_labels(cfg)[start:start + b]                       # (scale, ratio)
    ax.imshow(image)
    centres = priors[offsets[k]:offsets[k + 1]:b, :2] * 300        # (f*f, 2) one per cell
    ax.plot(centres[:, 0], centres[:, 1], ".", color="white", markersize=1.5 if f > 10 else 4)
    corners = center_to_corner(priors[start:start + b]) * 300      # (B_k, 4) pixels
    for n_box, ((x0, y0, x1, y1), tag) in enumerate(zip(corners, tags)):
        color = viz.class_color(n_box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                               linewidth=1.8))
        ax.text(0.01, 0.99 - 0.06 * n_box, tag, transform=ax.transAxes, va="top",
                fontsize=9, color="white", bbox=dict(facecolor=color, edgecolor="none", pad=1))
    ax.set_title(f"{names[k]}: {f}x{f} cells, {b} boxes per cell")
    ax.set_xlim(0, 300), ax.set_ylim(300, 0), ax.set_axis_off()
fig.tight_layout()
plt.show()
"""),
("md", r"""
The same photo for the two scale rules: the square box $s_k$ of each map, centred on the
image, with the paper's formula as written (left) and the released sizes (right). The
formula's smallest box is
twice as large (60 pixels instead of 30), so objects much smaller than 60 pixels have no
default box their size under the formula.
"""),
("code", r"""
paper_priors = default_boxes(paper)
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
squares = [offsets[k] + (f // 2 * f + f // 2) * b            # box 0 of the centre cell
           for k, (f, b) in enumerate(zip(cfg.feature_maps, cfg.mbox))]
for ax, boxes, rule, sizes in ((axes[0], paper_priors, "paper formula", pap_min),
                               (axes[1], priors, "released sizes", vgg_min)):
    viz.draw_default_boxes(image, boxes, indices=squares, ax=ax, color="yellow", linewidth=1.5)
    ax.set_title(f"{rule}: s_k = " + ", ".join(f"{s / 300:.2f}" for s in sizes), fontsize=10)
plt.show()
assert paper_priors[squares[0], 2] > 1.9 * priors[squares[0], 2]
"""),
("md", r"""
## The paper's Figure 1 on a real photo

The paper's first figure shows a cat and a dog: on an 8x8 feature map two default boxes fit
the small cat, on a 4x4 map one fits the large dog. Each object is matched (notebook 04) by the
maps whose boxes have its size. minissd's `tiny` config (128-pixel input, 5620 boxes) really
has an 8x8 map (conv8_2, step 16, squares of 34 and 44 pixels) and a 4x4 map (conv9_2, step 32,
squares of 58 and 71 pixels).

The photo is `skimage.data.astronaut()` (NASA, Eileen Collins; no known copyright
restrictions, public domain), with boxes placed by hand in `minissd.data.photos`. Her head is
a small object, the flag behind her a large one. Below: the default boxes of each map with
IoU $\ge 0.5$, the matching threshold, with each object.
"""),
("code", r"""
small_cfg = tiny()
small_priors = default_boxes(small_cfg)                            # (5620, 4)
astro = photo("astronaut")
print("license:", astro.license)
gt = normalised_boxes(astro)                                       # (G, 4) corners in 0..1
picked = {"head": astro.labels.index("head"), "flag": astro.labels.index("flag")}
small_counts = [f * f * b for f, b in zip(small_cfg.feature_maps, small_cfg.mbox)]
small_offsets = np.cumsum([0] + small_counts)
maps = {8: small_cfg.feature_maps.index(8), 4: small_cfg.feature_maps.index(4)}
overlaps = iou(gt, center_to_corner(small_priors))                 # (G, 5620)

fits = {}
for obj, g in picked.items():
    for side, k in maps.items():
        block = overlaps[g, small_offsets[k]:small_offsets[k + 1]]
        fits[obj, side] = small_offsets[k] + np.flatnonzero(block >= 0.5)
        print(f"{obj:>5} on the {side}x{side} map: best IoU {block.max():.2f}, "
              f"{len(fits[obj, side])} boxes at IoU >= 0.5")

small_image = resize(astro.image, 128)
small_tags = box_labels(small_cfg)
colors = {"head": "tab:red", "flag": "tab:blue"}
fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
axes[0].imshow(small_image)
for obj, g in picked.items():
    viz.draw_boxes(None, gt[g] * 128, labels=[1], class_names=[obj], ax=axes[0],
                   normalized=False, color=colors[obj], linewidth=2.5)
axes[0].set_title("ground truth (128x128 input)")
axes[0].set_xlim(-1, 129), axes[0].set_ylim(129, -1), axes[0].set_axis_off()
for ax, (obj, side) in ((axes[1], ("head", 8)), (axes[2], ("flag", 4))):
    ax.imshow(small_image)
    for t in np.linspace(0, 128, side + 1):
        ax.axhline(t, color="white", linewidth=0.8)
        ax.axvline(t, color="white", linewidth=0.8)
    viz.draw_boxes(None, gt[picked[obj]] * 128, ax=ax, normalized=False, color=colors[obj],
                   linewidth=3)
    for n_box, p in enumerate(fits[obj, side]):
        shade = ("yellow", "cyan", "magenta", "lime", "orange", "white")[n_box % 6]
        viz.draw_default_boxes(None, small_priors * 128, indices=[p], ax=ax, color=shade,
                               linewidth=1.5)
        x, y = small_priors[p, :2] * 128
        ax.plot(x, y, "o", color=shade, markersize=5)
        ax.text(0.99, 0.02 + 0.07 * n_box, f"{small_tags[p]}, IoU {overlaps[picked[obj], p]:.2f}",
                transform=ax.transAxes, ha="right", fontsize=9,
                bbox=dict(facecolor=shade, edgecolor="none", pad=1))
    ax.set_xlim(-1, 129), ax.set_ylim(129, -1), ax.set_axis_off()
    ax.set_title(f"{side}x{side} map: {len(fits[obj, side])} default boxes fit the {obj}")
fig.tight_layout()
plt.show()

# The small object is caught by the fine map only, the large one by the coarse map only.
assert len(fits["head", 8]) > 0 and len(fits["head", 4]) == 0
assert len(fits["flag", 4]) > 0 and len(fits["flag", 8]) == 0
assert small_cfg.num_priors() == small_priors.shape[0] == 5620
"""),
("md", r"""
## Exercises

1. SSD512 (`minissd.config.ssd512`) has seven maps. Count its default boxes by hand, then check
   with `default_boxes(ssd512()).shape` (24564). Its steps (8, 16, ..., 512) give exactly
   $512/\text{step}_k$ = 64, 32, 16, 8, 4, 2, 1 cells, its $f_k$: unlike SSD300, no grid runs
   past the image. Which SSD300 maps do (see "One location, worked by hand" above)?
2. Remove ratio 3 from every map (and fix `mbox`). How many boxes are left? Which objects lose
   a well-shaped default box?
3. `clip=True` clamps $(c_x, c_y, w, h)$, not the corners. Find the boxes that change and draw
   them. Would clamping the corners change the trained model's predictions?
4. For each of the astronaut photo's six boxes, which map of `tiny` and which box (scale,
   ratio) has the highest IoU? Use `minissd.boxes.iou` with `center_to_corner(small_priors)`.
5. YOLO v2 predicts 5 anchor boxes per cell of a 13x13 grid. How many of the Hubble galaxies
   would it have room for? Add 13 to `grid_counts` and compare with the two grids above.
"""),
]
