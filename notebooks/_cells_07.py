"""Cells of 07_training_and_evaluation.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 07 · Training and VOC evaluation

Everything from notebooks 01–06 in one loop: a **short** training run of the `tiny` config on a
small synthetic set, the loss curve, PASCAL VOC AP with precision–recall curves, and the trained
model's detections.

This run is deliberately small (a couple of hundred steps would be needed for good results; we
take far fewer so the notebook runs in about a minute on a CPU), so **its mAP is low**. The full
run is one command:

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
from minissd.config import tiny
from minissd.data.augment import SSDAugmentation, pixel_mean
from minissd.data.loader import DataLoader, EvalLoader
from minissd.data.synthetic import generate
from minissd.data.voc import VOCDataset
from minissd.loss import multibox_loss_backward, multibox_loss_forward
from minissd.matching import match_batch
from minissd.metrics import evaluate_detections
from minissd.model import SSD
from minissd.optim import Adam, learning_rate
from minissd.postprocess import detect
from minissd.priors import default_boxes

STEPS, BATCH, LR, WARMUP = 50, 6, 2e-3, 10          # small on purpose: about a minute on 2 cores
root = generate(tempfile.mkdtemp(prefix="minissd-nb07-"), num_train=160, num_val=40,
                image_size=128, seed=0)
train_set = VOCDataset(root, splits=("train",))
val_set = VOCDataset(root, splits=("val",), keep_difficult=True)
cfg = tiny(class_names=train_set.class_names)
print(cfg.name, cfg.image_size, "px,", cfg.num_classes, "classes:", train_set.class_names)
print(len(train_set), "training images,", len(val_set), "validation images")
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
is SGD with momentum 0.9 (`minissd.optim.SGD`); exercise 5 compares the two. Light
augmentation (horizontal flips) so the few steps count.
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
    loc, conf = model.forward(images)                                     # (N, P, 4), (N, P, C)
    loc_t, conf_t = match_batch([b for b, _ in targets], [l for _, l in targets], priors)
    loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
    model.backward(*multibox_loss_backward(cache))                        # fills model.grads
    opt.step(model.params(), model.grads, learning_rate(step, LR, WARMUP))
    records.append({"step": step, "loss": float(loss), "loc": float(parts["loc"]),
                    "conf": float(parts["conf"])})
    if step % 10 == 0 or step == STEPS - 1:
        print(f"step {step:3d}  loss {float(loss):7.3f}  "
              f"(loc {float(parts['loc']):.3f}, conf {float(parts['conf']):.3f})"
              f"  {time.perf_counter() - start:5.1f} s")
losses = np.array([r["loss"] for r in records])
assert np.isfinite(losses).all()
assert losses[-10:].mean() < losses[:10].mean()          # it learns
"""),
("md", r"""
## VOC evaluation

(The loss curve is drawn after the evaluation, so the mAP panel has its one point.)

`detect` (softmax, decode, per-class NMS at 0.45, top 200) on every validation image, then
`minissd.metrics.evaluate_detections`: per class, detections sorted by score are true
positives when they overlap an unmatched ground-truth box of that class with IoU $> 0.5$;

$$\text{precision} = \frac{TP}{TP + FP}, \qquad \text{recall} = \frac{TP}{\#\text{ground truth}},
\qquad AP_{07} = \frac{1}{11}\sum_{t \in \{0, 0.1, \dots, 1\}} \max_{r \ge t} p(r).$$

"Difficult" objects count neither way.
"""),
("code", r"""
model.eval()      # inference: the tiny config's batch norm now uses its running statistics
detections, ground_truths, images = [], [], []
for x, infos in EvalLoader(val_set, 20, cfg.image_size, cfg):
    loc, conf = model.forward(x, keep_cache=False)
    detections += detect(loc, conf, priors)
    ground_truths += [{"boxes": i["boxes"], "labels": i["labels"], "difficult": i["difficult"]}
                      for i in infos]
    images += [val_set[i["index"]].image for i in infos]
result = evaluate_detections(detections, ground_truths, cfg.num_classes)
for c, ap in result["ap"].items():
    print(f"{cfg.class_names[c - 1]:>10}  AP {ap:.3f}  ({result['num_gt'][c]} objects, "
          f"{result['num_det'][c]} detections)")
print(f"mAP (VOC07 11-point) {result['map']:.3f}  - low on purpose: {STEPS} steps; "
      "run python -m minissd.train for the full run")
assert 0.0 <= result["map"] <= 1.0
assert len(detections) == len(val_set)
"""),
("code", r"""
from IPython.display import Image, display
out = tempfile.mkdtemp(prefix="minissd-nb07-out-")
records.append({"step": STEPS - 1, "map": result["map"]})   # one evaluation, at the end
display(Image(viz.save_figure(viz.plot_training_curves(records), f"{out}/curves.png")))
pr = viz.plot_pr_curves(result, class_names=cfg.class_names)
display(Image(viz.save_figure(pr, f"{out}/pr.png")))
"""),
("md", r"""
## Detections of the trained model

Four validation images, with the ground truth (white) and the model's three highest-scoring
detections, whatever their score. After so few steps the scores are low and the boxes and
classes only roughly right (or wrong): compare with a model from `python -m minissd.train`.
"""),
("code", r"""
fig, axes = plt.subplots(1, 4, figsize=(16, 4.5))
for ax, image, (boxes, scores, labels), gt in zip(axes, images, detections, ground_truths):
    top = slice(0, 3)                                   # detections come sorted by score
    viz.draw_boxes(image, gt["boxes"], ax=ax, color="white", linewidth=3)
    viz.draw_boxes(None, boxes[top] * image.shape[0], labels=labels[top], scores=scores[top],
                   class_names=cfg.class_names, ax=ax, normalized=False)
    ax.set_title(f"top 3 of {len(scores)} detections")
plt.show()
"""),
("md", r"""
## Exercises

1. Run the loop for 300 steps (`STEPS = 300`). How do the loss and the mAP change? Compare with
   `python -m minissd.train --iters 300`.
2. Turn on the full augmentation (`SSDAugmentation(size, mean)`). Is the loss higher or lower
   after the same number of steps? Is the mAP?
3. Compare the VOC07 11-point AP with the VOC2010 all-point AP
   (`evaluate_detections(..., use_07_metric=False)`). Which one is larger here, and why?
4. Overfit: train on 8 images only and evaluate on the same 8. How close to 1.0 does the mAP get?
5. Replace Adam by `SGD(momentum=0.9, weight_decay=5e-4, clip_norm=10.0)` and try learning rates
   of 0.05, 0.01 and 0.001. Which of them lowers the loss in 50 steps?
"""),
]
