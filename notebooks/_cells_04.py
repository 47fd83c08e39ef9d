"""Cells of 04_matching_and_encoding.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 04 · Matching and box encoding

Training needs a target for each of the 8732 default boxes: a class (0 = background) and, for
the boxes that see an object, the offsets to that object. `minissd.matching.match` decides which
default box is responsible for which ground-truth box; `minissd.boxes.encode` turns a matched
pair into offsets. This notebook works the two rules in use (the paper's, as its Caffe code
runs it, and ssd.pytorch's) through by hand on 2 objects and 6 boxes, runs them on a real
photo, and explains why the offsets are divided by the box size and why the sizes
go through a log.
"""),
("code", r"""
import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.boxes import center_to_corner, corner_to_center, decode, encode, iou
from minissd.config import ssd300
from minissd.data.augment import resize
from minissd.data.photos import normalised_boxes, photo
from minissd.kernels import iou_matrix
from minissd.loss import multibox_loss_forward
from minissd.matching import match, match_reference
from minissd.priors import box_labels, default_boxes

cfg = ssd300()
priors = default_boxes(cfg)                        # (P, 4) center form
priors_corner = center_to_corner(priors)           # (P, 4) corner form
tags = box_labels(cfg)                             # (scale, ratio) of every default box
names = ["conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
offsets = np.cumsum([0] + [f * f * b for f, b in zip(cfg.feature_maps, cfg.mbox)])
"""),
("md", r"""
## The IoU matrix

$$\text{IoU}(A, B) = \frac{|A \cap B|}{|A \cup B|} = \frac{|A \cap B|}{|A| + |B| - |A \cap B|}$$

for every ground truth (rows) and every default box (columns): a $(G, 8732)$ matrix
(`minissd.kernels.iou_matrix`, a CUDA kernel on CuPy arrays). A hand example first:
$[0,0,2,2]$ and $[1,1,3,3]$ overlap in a unit square, union $4 + 4 - 1 = 7$, IoU $1/7$.
"""),
("code", r"""
a = np.array([[0, 0, 2, 2]], np.float32)
b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
print(iou_matrix(a, b))
assert np.allclose(iou_matrix(a, b), [[1 / 7, 1, 0]])
"""),
("md", r"""
## Two matching rules

The paper (Sec. 2.2) matches "each ground truth box to the default box with the best jaccard
overlap (as in MultiBox)", then every default box to any ground truth with overlap above 0.5.
Two codebases write the first step differently, and `minissd.matching.match(..., rule=...)`
runs either (`SSDConfig.matching` picks the one training uses):

**`rule="caffe"`, the paper's**, as the authors' Caffe code runs it (`MatchBBox` in
`bbox_util.cpp`, match type `PER_PREDICTION`, threshold 0.5), and as d2l teaches it:

1. **Greedy bipartite step.** Among all pairs (object, box) whose object and box are both still
   free, take the one with the largest IoU; give that box to that object; both leave the pool.
   Repeat until every object has a box (or no free pair overlaps at all). No box is given twice,
   every object gets one box of its own, and the order of the annotations does not matter.
2. **Threshold.** Every other box takes the object it overlaps most (the first one on a tie) if
   that IoU $\ge 0.5$; else it is background (label 0).

**`rule="ssd.pytorch"`**, the rule of ssd.pytorch's `match` (and of torchvision's SSD), which
minissd's own configs train with by default (it is what every published minissd figure was
measured with):

1. For every default box $p$: its best object `best_gt[p]` (the first one on a tie) and that
   IoU `best_gt_iou[p]`. For every object $g$: its best default box `best_prior[g]`.
2. **Bipartite step.** For $g = 0, 1, \dots, G-1$ in the order of the annotation:
   `best_gt[best_prior[g]] = g`, and every claimed box gets `best_gt_iou = 2`, above any
   threshold. So each object takes the box it overlaps most, whatever the IoU, and when two
   objects claim the same box **the later object wins**.
3. **Threshold.** As step 2 of Caffe's rule.

What ssd.pytorch's rule does *not* promise: that every object gets a positive. An object whose
claimed box is taken by a later object gets no second choice. It keeps only the boxes that pass
the threshold *and* overlap it more than any other object, and there may be none. It then
contributes nothing to the loss.

### Worked by hand: 2 objects, 6 default boxes

Six default boxes in a row and two objects close together, all eight spanning the same rows
$y = 0.4 .. 0.6$, so each IoU is the overlap of the $x$ ranges over their union:

| | $x$ range |
|---|---|
| boxes 0..5 | 0–0.2, 0.2–0.4, **0.3–0.5**, 0.4–0.6, 0.6–0.8, 0.8–1.0 |
| object A (label 1) | 0.28–0.46 |
| object B (label 2) | 0.32–0.52 |

A with box 2: overlap $0.46 - 0.30 = 0.16$, union $0.18 + 0.2 - 0.16 = 0.22$, IoU $0.727$;
A with box 1: $0.12 / 0.26 = 0.462$. B with box 2: $0.18 / 0.22 = 0.818$; B with box 3:
$0.12 / 0.28 = 0.429$. Both objects claim box 2.

* **ssd.pytorch's rule**: B comes later and takes box 2; A's next best box (box 1, 0.462) is
  under 0.5, so **A has no positive at all**. Written the other way round (B first), A takes
  box 2, although B overlaps it more, and B is left with none.
* **Caffe's rule**: the largest IoU of all is B with box 2 (0.818): B takes box 2. The free pairs
  left are A's with boxes 0, 1, 3, 4, 5; the largest is box 1 (0.462): **A takes box 1**, below
  the threshold but its own. Every other box is under 0.5 with both objects. In either order of
  the annotations: box 1 for A, box 2 for B.
"""),
("code", r"""
xs6 = [(0, .2), (.2, .4), (.3, .5), (.4, .6), (.6, .8), (.8, 1)]     # x ranges; y is 0.4..0.6
boxes6 = np.array([[x0, 0.4, x1, 0.6] for x0, x1 in xs6])            # (6, 4) corners
two = np.array([[.28, 0.4, .46, 0.6], [.32, 0.4, .52, 0.6]])         # (2, 4): A, B
hand_priors = corner_to_center(boxes6)                               # (6, 4) center form
ov = iou(two, boxes6)                                                # (2, 6)
print("IoU (rows A, B; columns boxes 0..5):")
print(ov.round(3))
assert np.allclose(ov[0, [1, 2]], [0.12 / 0.26, 0.16 / 0.22])
assert np.allclose(ov[1, [2, 3]], [0.18 / 0.22, 0.12 / 0.28])
assert ov.argmax(axis=1).tolist() == [2, 2]                          # both claim box 2

_, conf_ab = match(two, [1, 2], hand_priors)                         # A first, then B
_, conf_ba = match(two[::-1], [2, 1], hand_priors)                   # B first, then A
print("A, B order: labels per box", conf_ab, "-> positives of A:", (conf_ab == 1).sum())
print("B, A order: labels per box", conf_ba, "-> positives of B:", (conf_ba == 2).sum())
assert conf_ab.tolist() == [0, 0, 2, 0, 0, 0]                        # B took box 2, A has none
assert conf_ba.tolist() == [0, 0, 1, 0, 0, 0]                        # A took it, B has none

# A lower threshold would give A its box 1 back (0.462, and A overlaps box 1 more than B does).
_, conf_low = match(two, [1, 2], hand_priors, iou_threshold=0.45)
assert conf_low.tolist() == [0, 1, 2, 0, 0, 0]

# Caffe's rule (the paper's): B takes box 2 (0.818, the largest pair), then A its best free
# box, box 1 (0.462). The same in both orders, and the plain-loop reference agrees.
_, caffe_ab = match(two, [1, 2], hand_priors, rule="caffe")
_, caffe_ba = match(two[::-1], [2, 1], hand_priors, rule="caffe")
print("Caffe's rule, A, B order:", caffe_ab, " B, A order:", caffe_ba)
assert caffe_ab.tolist() == caffe_ba.tolist() == [0, 1, 2, 0, 0, 0]
assert match_reference(two, [1, 2], hand_priors, rule="caffe")[1].tolist() == [0, 1, 2, 0, 0, 0]
assert np.isclose(ov.max(), ov[1, 2]) and np.isclose(ov[0, [0, 1, 3, 4, 5]].max(), ov[0, 1])

fig, axes = plt.subplots(1, 3, figsize=(18, 3.8), gridspec_kw={"width_ratios": [1.3, 1.3, 1]})
for ax, conf, title in ((axes[0], conf_ab, "ssd.pytorch: both claim box 2, B (later) wins,\n"
                         "A is left with none"),
                        (axes[1], caffe_ab, "Caffe (the paper's): B takes box 2 (0.82),\n"
                         "then A its best free box, box 1 (0.46)")):
    for n_box, (x0, _, x1, _) in enumerate(boxes6):
        state = {0: "background", 1: "positive for A", 2: "positive for B"}[int(conf[n_box])]
        ax.barh(n_box, x1 - x0, left=x0, height=0.6, color="lightgray" if conf[n_box] == 0
                else viz.class_color(conf[n_box]), edgecolor="black")
        ax.text(1.01, n_box, f"box {n_box}: {state}", va="center", fontsize=9)
    for g, (name, y) in enumerate((("object A", 6.5), ("object B", 7.5))):
        ax.barh(y, two[g, 2] - two[g, 0], left=two[g, 0], height=0.6,
                color=viz.class_color(g + 1), alpha=0.6, edgecolor="black")
        ax.text(1.01, y, f"{name}: positives {(conf == g + 1).sum()}", va="center")
    ax.set_xlim(0, 1.45), ax.set_yticks([]), ax.invert_yaxis()
    ax.set_xlabel("x (all boxes span y = 0.4 .. 0.6)")
    ax.set_title(title, fontsize=10)
im = axes[2].imshow(ov, cmap="magma", vmin=0, vmax=1)
for (g, p), v in np.ndenumerate(ov):
    axes[2].text(p, g, f"{v:.2f}", ha="center", va="center",
                 color="black" if v > 0.5 else "white")
axes[2].set_yticks([0, 1], ["A", "B"]), axes[2].set_xticks(range(6))
axes[2].set_xlabel("default box"), axes[2].set_title("IoU matrix (G=2, P=6)")
fig.colorbar(im, ax=axes[2], shrink=0.8)
fig.tight_layout()
plt.show()
"""),
("md", r"""
Among 8732 boxes two objects seldom share their best one (none of the photo's six objects
below does), but it can happen in a crowd of small objects of about the same size, and then
ssd.pytorch's rule lets the order of the annotations decide which of them is trained; Caffe's
gives each its own box. (Caffe's greedy step is not an optimal assignment: DETR, for one, solves
the bipartite matching exactly with the Hungarian algorithm, maximising the total over all
pairs; the greedy step takes the single largest pair first.)

Why the bipartite step matters at all: a 12x9-pixel object has no default box with IoU
$\ge 0.5$ (the smallest boxes are 30x30), so the threshold alone would make it invisible to
training. Alone in its image, it keeps the one box it claims.
"""),
("code", r"""
small = np.array([[0.40, 0.40, 0.44, 0.43]], np.float32)
best = iou_matrix(small, priors_corner).max()
_, conf_small = match(small, np.array([3]), priors)
print(f"best IoU {best:.3f} < 0.5, yet positives: {int((conf_small > 0).sum())}")
assert best < 0.5 and (conf_small > 0).sum() == 1
"""),
("md", r"""
## Matching on a real photo

`skimage.data.astronaut()` (NASA, Eileen Collins; no known copyright restrictions, public
domain), resized to SSD300's 300x300, with six objects whose boxes were placed by hand in
`minissd.data.photos`: from the small mission patch to the whole person. For each object, the
map holding its best default box, and the IoU of every cell of that map (the best of the cell's
$B_k$ boxes) with the object.
"""),
("code", r"""
astro = photo("astronaut")
print("license:", astro.license)
image = resize(astro.image, 300)
gt = normalised_boxes(astro)                       # (G, 4) corners in 0..1
labels = np.arange(1, len(gt) + 1)                 # classes 1..G, one per object
class_names = list(astro.labels)
overlaps = iou_matrix(gt, priors_corner)           # (G, P)
assert np.allclose(overlaps, iou(gt, priors_corner), atol=1e-6)   # kernel == NumPy reference
best_prior = overlaps.argmax(axis=1)               # (G,) step 1: one box per object
best_map = np.searchsorted(offsets, best_prior, side="right") - 1  # (G,) which map holds it
for g, name in enumerate(class_names):
    print(f"{name:>8}: best box {best_prior[g]:>4} on {names[best_map[g]]:>8} "
          f"({tags[best_prior[g]]}), IoU {overlaps[g, best_prior[g]]:.2f}")

fig, axes = plt.subplots(1, len(gt), figsize=(3 * len(gt), 3.4))
for g, ax in enumerate(axes):
    k = best_map[g]
    f, nbox = cfg.feature_maps[k], cfg.mbox[k]
    heat = overlaps[g, offsets[k]:offsets[k + 1]].reshape(f, f, nbox).max(axis=2)   # (f, f)
    ax.imshow(heat, vmin=0, vmax=1, cmap="magma")
    ax.set_title(f"{class_names[g]}: {names[k]} {f}x{f}\nbest IoU {heat.max():.2f}", fontsize=9)
    ax.set_axis_off()
plt.show()
# The small patch is matched on the finest map, the whole person on a coarse one.
assert best_map[class_names.index("patch")] == 0 and best_map[class_names.index("person")] >= 4
"""),
("code", r"""
loc_t, conf_t = match(gt, labels, priors)          # (P, 4), (P,)
above = overlaps.max(axis=0) >= 0.5                # step 3: boxes over the threshold
claimed = np.isin(np.arange(len(priors)), best_prior)
print("positives:", int((conf_t > 0).sum()), " over the threshold:", int(above.sum()),
      " claimed in step 2:", len(best_prior))
print("positives per object:", dict(zip(class_names, [int((conf_t == l).sum()) for l in labels])))
assert len(set(best_prior.tolist())) == len(gt)    # no shared claim in this photo,
assert np.all(conf_t[best_prior] == labels)        # so every object keeps its best box
assert np.array_equal(conf_t > 0, above | claimed)
# With no shared claim the two rules agree: the greedy step gives each object its best box too.
assert np.array_equal(match(gt, labels, priors, rule="caffe")[1], conf_t)

fig, axes = plt.subplots(1, 2, figsize=(14, 7))
viz.draw_boxes(image, gt, labels=labels, class_names=class_names, ax=axes[0], linewidth=3)
for g in range(len(gt)):
    viz.draw_boxes(None, center_to_corner(priors[best_prior[g]]) * 300, ax=axes[0],
                   normalized=False, linestyle="--", color=viz.class_color(labels[g]))
for g in range(len(gt)):
    axes[0].text(0.01, 0.01 + 0.045 * g, f"{class_names[g]}: {names[best_map[g]]} "
                 f"({tags[best_prior[g]]}), IoU {overlaps[g, best_prior[g]]:.2f}",
                 transform=axes[0].transAxes, fontsize=8, color="white",
                 bbox=dict(facecolor=viz.class_color(labels[g]), edgecolor="none", pad=1))
axes[0].set_title("step 2: each object's best default box (dashed), labelled (scale, ratio)")
viz.draw_matches(image, gt, priors, conf_t, gt_labels=labels, class_names=class_names,
                 ax=axes[1])
axes[1].set_title(axes[1].get_title() + " (dashed, numbered by object)")
for ax in axes:
    ax.set_xlim(0, 300), ax.set_ylim(300, 0)
    for text in ax.texts:
        text.set_clip_on(True)          # labels of boxes that hang over the edge stay inside
fig.tight_layout()
plt.show()
"""),
("md", r"""
## Encoding with variances

A positive default box $p = (p_{cx}, p_{cy}, p_w, p_h)$ matched to ground truth $g$ is trained
to predict

$$t_{cx} = \frac{g_{cx} - p_{cx}}{v_0\, p_w}, \quad
  t_{cy} = \frac{g_{cy} - p_{cy}}{v_0\, p_h}, \quad
t_w = \frac{\log(g_w / p_w)}{v_1}, \quad t_h = \frac{\log(g_h / p_h)}{v_1}$$

with variances $(v_0, v_1) = (0.1, 0.2)$. Dividing by the variances scales the offsets to about
unit size, which suits the smooth L1 loss. Worked example: $p = (0.5, 0.5, 0.2, 0.2)$,
$g = (0.55, 0.5, 0.3, 0.2)$ gives $t = (0.05/0.02, 0, \log(1.5)/0.2, 0) = (2.5, 0, 2.027, 0)$.
Decoding inverts it exactly: $g_{cx} = p_{cx} + t_{cx} v_0 p_w$, $g_w = p_w e^{t_w v_1}$.
"""),
("code", r"""
p = np.array([[0.5, 0.5, 0.2, 0.2]], np.float64)
g = center_to_corner(np.array([[0.55, 0.5, 0.3, 0.2]]))
t = encode(g, p)
print("t =", t.round(4))
assert np.allclose(t, [[2.5, 0, np.log(1.5) / 0.2, 0]])
"""),
("md", r"""
### Why divide by the default box's size, and why the log

The same detector must find a 30-pixel bird and a 300-pixel bus. An error of 5 pixels is bad
for the bird (a sixth of its width) and negligible for the bus. If the targets were plain
coordinate differences, the loss would charge the bus's harmless 50-pixel error ten times
what it charges the bird's 5 pixels, and training would spend its effort on the large objects.
Dividing the centre offset by the default box's size makes the target **scale invariant**:
5 pixels on a 30-pixel box cost exactly what 50 pixels cost on a 300-pixel box,

$$\frac{5}{0.1 \cdot 30} = \frac{50}{0.1 \cdot 300} = 1.667.$$

For the size, the ratio $g_w / p_w$ is scale invariant too, and the **log** makes it symmetric
and unbounded: a box twice too small and one twice too large get $\pm \log 2 / 0.2 = \pm 3.47$,
where the plain ratio $g_w / p_w - 1$ would give $+1$ and $-0.5$. And whatever $t_w$ the
network predicts, decoding gives $p_w e^{0.2 t_w} > 0$: no negative widths.

Below, `minissd.boxes.encode` on both cases, in a 600x600 image so that both fit (offsets are
in units of the image, so its size cancels out).
"""),
("code", r"""
S = 600.0                                                           # pixels -> normalised: / S
bird_p = np.array([[300, 300, 30, 30]]) / S                         # default boxes, center form
bus_p = np.array([[300, 300, 300, 300]]) / S
bird_g = center_to_corner(np.array([[305, 300, 35, 30]]) / S)       # 5 px right, 5 px wider
bus_g = center_to_corner(np.array([[350, 300, 350, 300]]) / S)      # 50 px right, 50 px wider
t_bird, t_bus = encode(bird_g, bird_p), encode(bus_g, bus_p)
print("bird: raw dx =", f"{(305 - 300) / S:.4f}", " t =", t_bird.round(4))
print("bus:  raw dx =", f"{(350 - 300) / S:.4f}", " t =", t_bus.round(4))
assert np.allclose(t_bird, t_bus) and np.isclose(t_bird[0, 0], 5 / (0.1 * 30))
assert np.isclose(t_bird[0, 2], np.log(35 / 30) / 0.2)
# What minissd's loss charges a network that predicts the default box itself (offsets 0):
# one positive box, loc = 0 against loc_t = t (notebook 05 explains the loss).
loss_bird, loss_bus = (float(multibox_loss_forward(
    np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), t[None], np.ones((1, 1), int))[1]["loc"])
    for t in (t_bird, t_bus))
print(f"smooth L1 localisation loss: bird {loss_bird:.4f}, bus {loss_bus:.4f}")
assert np.isclose(loss_bird, loss_bus)

half = encode(center_to_corner(np.array([[300, 300, 15, 15]]) / S), bird_p)    # half the size
double = encode(center_to_corner(np.array([[300, 300, 60, 60]]) / S), bird_p)  # twice the size
print(f"t_w: half size {half[0, 2]:.3f}, double size {double[0, 2]:.3f}")
assert np.isclose(half[0, 2], -double[0, 2]) and np.isclose(double[0, 2], np.log(2) / 0.2)
tiny_box = decode(np.array([[0, 0, -40.0, -40.0]]), bird_p)          # a wild prediction
print("decoded from t_w = t_h = -40: width", tiny_box[0, 2] - tiny_box[0, 0])
assert np.all(tiny_box[0, 2:] > tiny_box[0, :2])                     # still a positive size
"""),
("md", r"""
And the round trip on the photo: decoding every positive's target gives back its object.
"""),
("code", r"""
pos = np.flatnonzero(conf_t > 0)
best_gt = overlaps.argmax(axis=0)                   # the object each positive box took
best_gt[best_prior] = np.arange(len(gt))            # (step 2 overrides)
decoded = decode(loc_t[pos], priors[pos])           # (P_pos, 4) back to corners
err = np.abs(decoded - gt[best_gt[pos]]).max()
print(f"round trip over {len(pos)} positives: max |decode(encode(g)) - g| = {err:.1e}")
assert err < 1e-5

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(loc_t[pos].ravel(), bins=40)
ax.set_title("encoded offsets of the positives (about unit scale)")
ax.set_xlabel("t")
plt.show()
"""),
("md", r"""
## Exercises

1. Lower the threshold to 0.3 and raise it to 0.7: how does the number of positives change
   for the astronaut? Which objects keep only their step-2 box at 0.7?
2. In the hand example, move object A to 0.26–0.44. Which box does it claim now, and does it
   keep a positive? Find the smallest shift of A for which both objects have one.
3. Compare the two rules on crowds: for the synthetic set's training images
   (`minissd.data.synthetic.generate`, then `minissd.data.voc.VOCDataset`), match every image
   with `rule="caffe"` and `rule="ssd.pytorch"` against `default_boxes(tiny())`. How many
   objects end with no positive under each rule? In how many images do the targets differ at
   all? `python -m minissd.train --matching caffe` trains with the paper's rule: compare its
   mAP with the default run's (the README's results section).
4. Encode without variances (`variances=(1, 1)`) and look at the histogram again.
5. `minissd.matching.match_batch` matches a batch with one IoU call. Check it against `match`
   image by image, including the hand example with the objects in both orders.
"""),
]
