"""Cells of 04_matching_and_encoding.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 04 · Matching and box encoding

Training needs a target for each of the 8732 default boxes: a class (0 = background) and, for
the boxes that see an object, the offsets to that object. `minissd.matching.match` decides which
default box is responsible for which ground-truth box; `minissd.boxes.encode` turns a matched
pair into offsets.
"""),
("code", r"""
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.boxes import center_to_corner, decode, encode, iou
from minissd.config import ssd300
from minissd.data.augment import resize
from minissd.data.synthetic import generate
from minissd.data.voc import VOCDataset
from minissd.kernels import iou_matrix
from minissd.matching import match
from minissd.priors import default_boxes

cfg = ssd300()
priors = default_boxes(cfg)                        # (P, 4) center form
priors_corner = center_to_corner(priors)           # (P, 4) corner form
root = generate(tempfile.mkdtemp(prefix="minissd-nb04-"), num_train=8, num_val=0, image_size=300,
                seed=4)
ds = VOCDataset(root, splits=("train",))
sample = max((ds[n] for n in range(len(ds))), key=lambda s: len(s.boxes))
image, gt, labels = resize(sample.image, 300), sample.boxes, sample.labels
print(len(gt), "objects:", [ds.class_names[l - 1] for l in labels])
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

overlaps = iou_matrix(gt, priors_corner)           # (G, P)
assert np.allclose(overlaps, iou(gt, priors_corner), atol=1e-6)   # kernel == NumPy reference
print("overlaps", overlaps.shape, " best IoU per object:", overlaps.max(axis=1).round(3))

# Picture: the IoU of each object with the square box (s_k) of every conv4_3 and conv7 cell.
fig, axes = plt.subplots(2, min(len(gt), 4), figsize=(3.2 * min(len(gt), 4), 6.4), squeeze=False)
for g in range(axes.shape[1]):
    for row, (start, f, nbox, name) in enumerate(((0, 38, 4, "conv4_3"), (5776, 19, 6, "conv7"))):
        heat = overlaps[g, start:start + f * f * nbox:nbox].reshape(f, f)   # box 0 of each cell
        axes[row, g].imshow(heat, vmin=0, vmax=1, cmap="magma")
        axes[row, g].set_title(f"{ds.class_names[labels[g] - 1]}: {name}, max {heat.max():.2f}",
                               fontsize=9)
        axes[row, g].set_axis_off()
plt.show()
"""),
("md", r"""
## The matching rule

1. **Bipartite step**: every ground truth claims the default box it overlaps most, whatever the
   IoU, so every object gets at least one positive (a later object wins a box two objects claim).
2. **Threshold**: every other default box takes the ground truth it overlaps most if that IoU
   $\ge 0.5$; otherwise it is background (label 0).
"""),
("code", r"""
loc_t, conf_t = match(gt, labels, priors)          # (P, 4), (P,)
best_prior = overlaps.argmax(axis=1)               # step 1: one box per object
above = overlaps.max(axis=0) >= 0.5                # step 2: boxes over the threshold
print("positives:", int((conf_t > 0).sum()), " from the threshold:", int(above.sum()),
      " claimed by step 1:", len(best_prior))
assert np.all(conf_t[best_prior] == labels)        # every object has its best box
assert np.array_equal(conf_t > 0, above | np.isin(np.arange(len(priors)), best_prior))

fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
viz.draw_boxes(image, center_to_corner(priors[best_prior]), labels=labels, ax=axes[0],
               linestyle="--")
viz.draw_boxes(None, gt * 300, labels=labels, class_names=ds.class_names, ax=axes[0],
               normalized=False, linewidth=3)
axes[0].set_title("step 1: each object's best default box (dashed)")
viz.draw_matches(image, gt, priors, conf_t, gt_labels=labels, class_names=ds.class_names,
                 ax=axes[1])
plt.show()
"""),
("md", r"""
Why the bipartite step matters: a 12x9-pixel object has no default box with IoU $\ge 0.5$ (the
smallest boxes are 30x30), so the threshold alone would make it invisible to training.
"""),
("code", r"""
small = np.array([[0.40, 0.40, 0.44, 0.43]], np.float32)
best = iou_matrix(small, priors_corner).max()
_, conf_small = match(small, np.array([3]), priors)
print(f"best IoU {best:.3f} < 0.5, yet positives: {int((conf_small > 0).sum())}")
assert best < 0.5 and (conf_small > 0).sum() == 1
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

pos = np.flatnonzero(conf_t > 0)
best_gt = overlaps.argmax(axis=0)                   # the object each positive box took
best_gt[best_prior] = np.arange(len(gt))            # (step 1 overrides)
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

1. Lower the threshold to 0.3 and to 0.7: how does the number of positives change for this
   image? Which objects lose all but their step-1 box at 0.7?
2. Make two ground-truth boxes claim the same default box in step 1. Check that the later one
   wins, and think about what happens to the earlier one.
3. Encode without variances (`variances=(1, 1)`) and look at the histogram again.
4. `minissd.matching.match_batch` matches a batch with one IoU call. Check it against `match`
   image by image.
"""),
]
