"""Cells of 07_training_and_evaluation.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 07 · Training and VOC evaluation

Everything from notebooks 01–06 in one loop: a **short** training run of the `tiny` config,
the loss curve, PASCAL VOC average precision (first by hand on five detections, then with
precision–recall curves), and the trained model's detections.

**How long is a real run?** `python -m minissd.train` trains the tiny config on 6000 synthetic
images for **6600 steps of 8 images** and reaches a VOC07 mAP of **0.91** on the synthetic
validation set in about **7 minutes on 2 CPU cores** (the README's measurement). A notebook has
about a minute, so this one does what fits in a minute and says so: it trains on **8 images
only**, for 120 steps, until the network has **memorised** them. That is a real check, not a
shortcut: a network that cannot overfit 8 images has a bug somewhere (in matching, the loss,
a backward pass or the optimiser), and one that does detects its 8 images almost perfectly. It
has not learned what a circle is in general, and on images it has never seen its mAP stays
low; the evaluation below shows both. The full run is one command:

```
python -m minissd.train     # tiny config, synthetic set: VOC07 mAP 0.91 in 7 min on 2 cores
python -m minissd.train --voc-root VOCdevkit --config ssd300 --pretrained-vgg vgg16.pth
```
"""),
("code", r"""
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.boxes import iou
from minissd.config import tiny
from minissd.data.augment import SSDAugmentation, pixel_mean
from minissd.data.loader import DataLoader, EvalLoader
from minissd.data.synthetic import generate
from minissd.data.voc import VOCDataset
from minissd.loss import multibox_loss_backward, multibox_loss_forward
from minissd.matching import match_batch
from minissd.metrics import evaluate_detections, voc_ap
from minissd.model import SSD
from minissd.optim import Adam, learning_rate
from minissd.postprocess import detect
from minissd.priors import default_boxes
from minissd.training.settings import TINY_ON_SYNTHETIC

full = TINY_ON_SYNTHETIC                           # what python -m minissd.train runs
print(f"the full run: {full.iters} steps of {full.batch_size} images on {full.num_train} "
      f"synthetic images ({full.optimizer}, lr {full.lr})")
assert (full.iters, full.batch_size, full.num_train) == (6600, 8, 6000)

STEPS, BATCH, LR, WARMUP = 120, 8, 2e-3, 10          # 8 images memorised: about a minute
root = generate(tempfile.mkdtemp(prefix="minissd-nb07-"), num_train=8, num_val=40,
                image_size=128, seed=0)
train_set = VOCDataset(root, splits=("train",), keep_difficult=True)
val_set = VOCDataset(root, splits=("val",), keep_difficult=True)
cfg = tiny(class_names=train_set.class_names)
print(cfg.name, cfg.image_size, "px,", cfg.num_classes, "classes:", train_set.class_names)
print(len(train_set), "training images,", len(val_set), "validation images; "
      f"this run: {STEPS} steps of {BATCH}, {STEPS / full.iters:.1%} of the full run's steps")
"""),
("md", r"""
## One training step

$$\text{images} \xrightarrow{\text{SSD.forward}} (\text{loc}, \text{conf}), \quad
\text{ground truth} \xrightarrow{\text{match\_batch}} (\text{loc}_t, \text{conf}_t), \quad
L = \text{multibox}(\cdot), \quad \text{backward}, \quad
w \leftarrow w - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon}$$

The `tiny` config is trained from scratch (batch norm, no pretrained VGG), and like
`python -m minissd.train` this loop uses **Adam** ($\hat m$, $\hat v$: bias-corrected running
means of the gradient and its square, see `minissd/optim.py`) with weight decay
$5 \cdot 10^{-4}$ and a linear warm-up. SSD's published recipe for SSD300 with a pretrained base
is SGD with momentum 0.9 (`minissd.optim.SGD`); exercise 5 compares the two. Augmentation is
light (horizontal flips only), as in the default run: notebook 08 shows the full recipe.
"""),
("code", r"""
model = SSD(cfg, rng=0)
model.train()     # batch norm uses the batch's statistics and updates its running ones
priors = default_boxes(cfg)
augment = SSDAugmentation(cfg.image_size, pixel_mean(cfg.preprocess), photometric=False,
                          expand=False, crop=False, flip=True)
loader = DataLoader(train_set, BATCH, augment, cfg, seed=0)
opt = Adam(weight_decay=5e-4, clip_norm=10.0)
records = []
start = time.perf_counter()
for step, (images, targets) in zip(range(STEPS), loader):
    loc, conf = model.forward(images)                                     # (B, P, 4), (B, P, C)
    loc_t, conf_t = match_batch([b for b, _ in targets], [l for _, l in targets], priors)
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    model.backward(*multibox_loss_backward(cache))                        # fills model.grads
    opt.step(model.params(), model.grads, learning_rate(step, LR, WARMUP))
    records.append({"step": step, "loss": float(loss), "loc": float(parts["loc"]),
                    "conf": float(parts["conf"])})
    if step % 20 == 0 or step == STEPS - 1:
        print(f"step {step:3d}  loss {float(loss):7.3f}  "
              f"(loc {float(parts['loc']):.3f}, conf {float(parts['conf']):.3f})"
              f"  {time.perf_counter() - start:5.1f} s")
losses = np.array([r["loss"] for r in records])
assert np.isfinite(losses).all()
assert losses[-10:].mean() < 0.1 * losses[:10].mean()          # it learns these 8 images
"""),
("md", r"""
## Average precision by hand

How VOC scores a detector, on an example small enough to do on paper. One class, two images,
**3 objects**: A and B side by side in image 0 (they overlap a little), C in image 1. The
detector returns **5 detections**. The rule of the VOC devkit (`VOCevaldet.m`; py-faster-rcnn's
`voc_eval.m` is only a wrapper that calls it) and of py-faster-rcnn's Python `voc_eval.py`,
which `minissd.metrics` follows, with one difference at the boundary:

1. sort all detections of the class, over all images, by score, highest first;
2. for each detection, take the ground-truth box **of its image with the highest IoU**;
3. if that IoU is $\le 0.5$: a **false positive**. (The devkit's `VOCevaldet.m` accepts
   `ovmax >= 0.5`; `voc_eval.py` and minissd require `ovmax > 0.5`. They differ only for an
   IoU of exactly 0.5, as the check after this table shows.) If that box is "difficult": ignored,
   neither true nor false. If that box is **already taken** by a higher-scoring detection: a
   **false positive**, even when the detection also overlaps another, free box by more than
   0.5: the devkit never falls back to the second-best box. Otherwise a **true positive**, and
   the box is now taken.

| detection | image | score | best box (IoU) | other box (IoU) | verdict |
|---|---|---|---|---|---|
| d1 | 0 | 0.9 | A (0.95) | | TP: A taken |
| d2 | 0 | 0.8 | A (0.67) | B (0.54) | FP: A is taken (B is not tried) |
| d3 | 1 | 0.7 | none | | FP |
| d4 | 0 | 0.6 | B (0.95) | | TP: B taken |
| d5 | 1 | 0.5 | C (0.90) | | TP: C taken |

After each detection, precision $= TP / (TP + FP)$ and recall $= TP / 3$:

| after | d1 | d2 | d3 | d4 | d5 |
|---|---|---|---|---|---|
| precision | 1 | 1/2 | 1/3 | 2/4 | 3/5 |
| recall | 1/3 | 1/3 | 1/3 | 2/3 | 1 |

**VOC07's 11-point AP** averages, over the recall levels $t = 0, 0.1, \dots, 1$, the best
precision reached at a recall of at least $t$:

$$AP_{07} = \frac{1}{11}\sum_{t \in \{0, 0.1, \dots, 1\}} \max_{r \ge t} p(r)$$

For $t = 0, 0.1, 0.2, 0.3$ the best precision is 1 (d1, recall $1/3 \ge 0.3$); for
$t = 0.4 \dots 0.6$ it is $\max(2/4, 3/5) = 0.6$; for $t = 0.7 \dots 1$ it is $3/5$. So

$$AP_{07} = \frac{4 \cdot 1 + 7 \cdot 0.6}{11} = \frac{8.2}{11} = 0.745.$$

(VOC2010's all-point AP is the area under the same envelope:
$\tfrac13 \cdot 1 + \tfrac13 \cdot 0.6 + \tfrac13 \cdot 0.6 = 0.733$.) Had d2 been allowed to fall
back to B, it would be a TP and d4 a duplicate: TP, TP, FP, FP, TP, an AP of
$(7 \cdot 1 + 4 \cdot 0.6)/11 = 0.855$. The rule matters.
"""),
("code", r"""
A, B, C = [0.10, 0.10, 0.50, 0.50], [0.30, 0.10, 0.70, 0.50], [0.50, 0.50, 0.90, 0.90]
hand_gt = [{"boxes": np.array([A, B]), "labels": np.array([1, 1])},
           {"boxes": np.array([C]), "labels": np.array([1])}]
d = {"d1": (0, 0.9, [0.11, 0.10, 0.50, 0.51]), "d2": (0, 0.8, [0.18, 0.10, 0.58, 0.50]),
     "d3": (1, 0.7, [0.05, 0.05, 0.30, 0.30]), "d4": (0, 0.6, [0.31, 0.11, 0.70, 0.50]),
     "d5": (1, 0.5, [0.52, 0.50, 0.90, 0.88])}
hand_det = [tuple(np.array(v) for v in ([b for i, s, b in d.values() if i == image],
                                        [s for i, s, b in d.values() if i == image],
                                        [1 for i, s, b in d.values() if i == image]))
            for image in (0, 1)]
overlap = iou(hand_det[0][0], hand_gt[0]["boxes"])                # (d1, d2, d4) x (A, B)
print("IoU in image 0 (rows d1, d2, d4; columns A, B):\n", overlap.round(2))
assert np.allclose(overlap[1], [0.67, 0.54], atol=0.005)          # d2: A best, B above 0.5 too
result_hand = evaluate_detections(hand_det, hand_gt, num_classes=2)
precision = np.array([1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
recall = np.array([1, 1, 1, 2, 3]) / 3
print("precision", result_hand["precision"][1].round(3), "  recall",
      result_hand["recall"][1].round(3))
print(f"AP07 by hand {8.2 / 11:.4f}, minissd.metrics {result_hand['ap'][1]:.4f}")
assert np.allclose(result_hand["precision"][1], precision)
assert np.allclose(result_hand["recall"][1], recall)
assert np.isclose(result_hand["ap"][1], (4 * 1 + 7 * 0.6) / 11)
assert np.isclose(voc_ap(recall, precision, use_07_metric=False), 1 / 3 + 0.2 + 0.2)
fallback = voc_ap(np.array([1, 2, 2, 2, 3]) / 3, np.array([1, 1, 2 / 3, 2 / 4, 3 / 5]))
assert np.isclose(fallback, (7 * 1 + 4 * 0.6) / 11) and fallback > result_hand["ap"][1]

# The boundary: a detection with IoU exactly 0.5 (binary fractions, no rounding) is a false
# positive for minissd and voc_eval.py (> 0.5); the devkit's VOCevaldet.m (>= 0.5) counts it.
edge_gt = [{"boxes": np.array([[0.0, 0.0, 0.5, 0.5]]), "labels": np.array([1])}]
edge_det = [(np.array([[0.0, 0.0, 0.5, 0.25]]), np.array([0.9]), np.array([1]))]
assert iou(edge_det[0][0], edge_gt[0]["boxes"])[0, 0] == 0.5
assert evaluate_detections(edge_det, edge_gt, num_classes=2)["ap"][1] == 0.0

fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
for image, ax in enumerate(axes[:2]):
    names = [n for n, (i, s, b) in d.items() if i == image]
    viz.draw_boxes(np.full((300, 300, 3), 235, np.uint8), hand_gt[image]["boxes"], ax=ax,
                   color="black", linewidth=3)
    viz.draw_boxes(None, hand_det[image][0] * 300, ax=ax, color="tab:red", normalized=False,
                   linewidth=1.5)
    for k, (n, score, (x0, y0, x1, y1)) in enumerate(zip(names, hand_det[image][1],
                                                         hand_det[image][0] * 300)):
        ax.text(x1 - 3, y1 - 6 - 16 * k, f"{n} ({score})", color="tab:red", ha="right",
                fontsize=10)
    ax.set_title(f"image {image}: objects (black) " + ("A, B" if image == 0 else "C"))
ax = axes[2]
ax.plot(recall, precision, "o-", color="tab:red", label="after each detection")
envelope = [precision[recall >= t].max() if (recall >= t).any() else 0
            for t in np.linspace(0, 1, 11)]
ax.plot(np.linspace(0, 1, 11), envelope, "ks", mfc="none", label="the 11 points")
ax.set_xlim(-0.03, 1.03), ax.set_ylim(0, 1.05), ax.set_xlabel("recall")
ax.set_ylabel("precision"), ax.legend(loc="lower left")
ax.set_title(f"AP07 = mean of the 11 points = {result_hand['ap'][1]:.3f}")
plt.show()
"""),
("md", r"""
## VOC evaluation of the trained model

`detect` (softmax, decode, per-class NMS at 0.45, top 200) on every image, then
`minissd.metrics.evaluate_detections`, per class, with the rule above. "Difficult" objects
count neither way. We evaluate twice: on the **8 training images** the network memorised, and
on **40 validation images** it has never seen.
"""),
("code", r"""
model.eval()      # inference: the tiny config's batch norm now uses its running statistics


def run_detector(dataset):
    detections, ground_truths, images = [], [], []
    for x, infos in EvalLoader(dataset, 20, cfg.image_size, cfg):
        loc, conf = model.forward(x, keep_cache=False)
        detections += detect(loc, conf, priors)
        ground_truths += [{"boxes": i["boxes"], "labels": i["labels"],
                           "difficult": i["difficult"]} for i in infos]
        images += [dataset[i["index"]].image for i in infos]
    return detections, ground_truths, images


train_dets, train_gts, train_images = run_detector(train_set)
val_dets, val_gts, val_images = run_detector(val_set)
on_train = evaluate_detections(train_dets, train_gts, cfg.num_classes)
on_val = evaluate_detections(val_dets, val_gts, cfg.num_classes)
for c in on_train["ap"]:
    print(f"{cfg.class_names[c - 1]:>10}  AP on the training images {on_train['ap'][c]:.3f} "
          f"({on_train['num_gt'][c]} objects), on validation {on_val['ap'][c]:.3f} "
          f"({on_val['num_gt'][c]} objects)")
print(f"mAP (VOC07 11-point): {on_train['map']:.3f} on the 8 memorised images, "
      f"{on_val['map']:.3f} on 40 new ones")
assert on_train["map"] > 0.9                  # it detects the images it has learned ...
assert on_val["map"] < on_train["map"] - 0.5  # ... and has not yet learned to generalise
assert len(val_dets) == len(val_set)
"""),
("code", r"""
from IPython.display import Image, display
out = tempfile.mkdtemp(prefix="minissd-nb07-out-")
records.append({"step": STEPS - 1, "map": on_val["map"]})   # one evaluation, at the end
display(Image(viz.save_figure(viz.plot_training_curves(records), f"{out}/curves.png")))
for k, (name, result) in enumerate((("the 8 training images", on_train),
                                    ("40 validation images", on_val))):
    pr = viz.plot_pr_curves(result, class_names=cfg.class_names)
    pr.set_size_inches(5.5, 4.5)
    pr.axes[0].set_title(f"{name}: mAP {result['map']:.3f}", fontsize=11)
    display(Image(viz.save_figure(pr, f"{out}/pr{k}.png")))
"""),
("md", r"""
## Detections of the trained model

Top row: four of the 8 **training** images, with the ground truth (white) and every detection
scoring at least 0.5: the memorised network finds each object with the right class and a
tight box. Bottom row: four **validation** images with the same threshold: what 120 steps on 8
images gives on new images (little or nothing, or the wrong class). The detector you get from
`python -m minissd.train` (0.91 mAP) draws the bottom row as well as this one draws the top.
"""),
("code", r"""
fig, axes = plt.subplots(2, 4, figsize=(17, 9))
found = []
for row, (images, dets, gts, what) in enumerate(
        [(train_images, train_dets, train_gts, "training"),
         (val_images, val_dets, val_gts, "validation")]):
    for ax, image, (boxes, scores, labels), gt in zip(axes[row], images, dets, gts):
        sure = scores >= 0.5
        viz.draw_boxes(image, gt["boxes"], ax=ax, color="white", linewidth=3)
        viz.draw_boxes(None, boxes[sure] * image.shape[0], labels=labels[sure],
                       scores=scores[sure], class_names=cfg.class_names, ax=ax, normalized=False)
        ax.set_title(f"{what}: {len(gt['boxes'])} objects, {sure.sum()} scored >= 0.5",
                     fontsize=10)
        if row == 0:
            found.append(sure.sum() == len(gt["boxes"]))
plt.show()
assert sum(found) >= 3        # on the memorised images: one sure detection per object
"""),
("md", r"""
## Exercises

1. Keep the 8 training images but run 40 steps, then 300 (`STEPS`). When does the network
   start to detect its own images? Does the validation mAP move at all?
2. Train on 160 images (`num_train=160`) for the same 120 steps. Is the training-set mAP still
   near 1? What happens to the validation mAP? Compare with `python -m minissd.train
   --iters 300`.
3. Turn on the full augmentation (`SSDAugmentation(size, mean)`, notebook 08). Is the loss
   higher or lower after the same number of steps? Does the network still memorise the 8
   images?
4. Compare the VOC07 11-point AP with the VOC2010 all-point AP
   (`evaluate_detections(..., use_07_metric=False)`), for the hand example and for the model.
   Which one is larger, and why?
5. Replace Adam by `SGD(momentum=0.9, weight_decay=5e-4, clip_norm=10.0)` and try learning rates
   of 0.05, 0.01 and 0.001. Which of them lowers the loss in 120 steps?
6. In the hand example, mark object B "difficult" (`"difficult": np.array([False, True])`).
   Which detections change verdict, and what is the AP now? Work it out first, then check.
"""),
]
