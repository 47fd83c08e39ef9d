"""Cells of 08_augmentation_and_your_own_data.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 08 · Data augmentation, and training on your own data

SSD sees every training image a little differently each time: colours shifted, zoomed out onto
a larger canvas, cropped around its objects, mirrored. The paper calls this sampling strategy
crucial: on VOC2007 it lifts SSD300 from 65.5 to 74.3 mAP (Table 2), and the zoom-out step
alone adds another 2–3 points, mostly on **small objects** (Section 3.6). A single-shot
detector has no second stage to look closer at a small object, so it must see objects at
every size during training; zoom out makes objects small, crops make them large.

This notebook first takes one photo through `minissd.data.augment.SSDAugmentation` **step by
step**, with its boxes following every step. Then it makes a small folder of images in the
layout an annotation tool exports, trains on it with `python -m minissd.train`, and detects
with `python -m minissd.detect`, as you would on your own data.

The photo is scikit-image's `chelsea()`, a cat (CC0, by the photographer Stefan van der Walt),
with four boxes placed by hand in `minissd.data.photos`: the cat, two eyes and the nose.
"""),
("code", r"""
import os
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.boxes import iou
from minissd.config import tiny
from minissd.data.augment import (CROP_MIN_IOUS, CROP_TRIALS, SSDAugmentation, crop_boxes,
                                  crop_satisfies, photometric_distort, pixel_mean, resize,
                                  sample_crop, snap_crops)
from minissd.data.photos import normalised_boxes, photo

cat = photo("chelsea")
print("photo:", cat.name, cat.image.shape, "-", cat.license)
boxes = normalised_boxes(cat).astype(np.float64)          # (4, 4) corners in 0..1
names = list(dict.fromkeys(cat.labels))                   # cat, eye, nose
labels = np.array([names.index(n) + 1 for n in cat.labels])
S = 300                                                   # the output side, as SSD300
mean = pixel_mean(tiny().preprocess)                      # RGB 0..255: the expand fill
for name, box in zip(cat.labels, boxes.round(2).tolist()):   # four boxes, two of them eyes
    print(f"{name:>5}: {box}")
assert len(boxes) == 4 and list(cat.labels).count("eye") == 2
print("pixel mean (expand fill):", np.round(mean, 1))
"""),
("md", r"""
## 1 · Photometric distortion

Brightness ($\pm 32$), contrast and saturation ($\times 0.5 \dots 1.5$) and hue ($\pm 36°$),
each applied with probability 0.5, in Caffe SSD's order: brightness always first, then, by a
coin flip, contrast second (before saturation and hue) or last (after them). Only the
pixels change: the boxes stay where they are. Five draws:
"""),
("code", r"""
fig, axes = plt.subplots(1, 6, figsize=(18, 2.9))
viz.draw_boxes(cat.image, boxes, labels=labels, class_names=names, ax=axes[0])
axes[0].set_title("original")
changed = []
for seed, ax in enumerate(axes[1:]):
    out = photometric_distort(cat.image, np.random.default_rng(seed))
    changed.append(np.abs(out.astype(int) - cat.image).mean())
    viz.draw_boxes(out, boxes, labels=labels, class_names=names, ax=ax)
    ax.set_title(f"draw {seed}: mean change {changed[-1]:.0f}", fontsize=10)
plt.show()
assert out.shape == cat.image.shape and out.dtype == np.uint8
assert max(changed) > 10                              # the colours really change
"""),
("md", r"""
## 2 · Expand (zoom out)

With probability 0.5 the image is placed at a random spot of a canvas $r$ times its size,
$r \sim U(1, 4)$, filled with the pixel mean. A box $(x_0, y_0, x_1, y_1)$ of the image becomes

$$x' = \frac{\text{left} + x \cdot w}{r\, w}, \qquad y' = \frac{\text{top} + y \cdot h}{r\, h}$$

on the canvas: every box shrinks by the same $1/r$ and moves by the same offset. (Then, as
every step here, the result is resized to $S \times S$: the network's input is square, and SSD
stretches the image rather than keeping its aspect.) Below, `SSDAugmentation` with only the
expand step on, for the first three seeds that zoom out.
"""),
("code", r"""
only_expand = SSDAugmentation(S, mean, photometric=False, expand=True, crop=False, flip=False)
fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
shown, seed = 0, 0
while shown < 3:
    image, b, l = only_expand(cat.image, boxes, labels, np.random.default_rng(seed))
    scale = (b[:, 2:] - b[:, :2]) / (boxes[:, 2:] - boxes[:, :2])        # (4, 2): 1/r per axis
    if scale.min() < 0.99:                                            # this seed zoomed out
        offset = b[:, :2] - boxes[:, :2] * scale                          # (4, 2)
        assert np.allclose(scale, scale[0], atol=1e-5)                # one factor for all boxes
        assert np.allclose(offset, offset[0], atol=1e-5)              # one offset for all boxes
        corner = image[:2, :2] if offset[0].min() > 0.01 else image[-2:, -2:]
        assert np.allclose(corner, np.round(mean), atol=1.5)        # the canvas is the mean
        viz.draw_boxes(image.astype(np.uint8), b, labels=l, class_names=names, ax=axes[shown])
        axes[shown].set_title(f"seed {seed}: r = {1 / scale[0, 0]:.2f}, "
                              f"every box x{scale[0, 0]:.2f}", fontsize=10)
        shown += 1
    seed += 1
plt.show()
"""),
("md", r"""
## 3 · The min-IoU crops

Then a crop. Seven **samplers** each propose a window: the whole image; a window whose IoU with
at least one object is $\ge 0.1$, $0.3$, $0.5$, $0.7$ or $0.9$; or any window. A window has a
side of 0.3 to 1 of the image and an aspect ratio of 0.5 to 2; each constrained sampler tries
up to 50 random windows and keeps the first that meets its constraint (Caffe's rule, with one
guard of minissd's: the window must hold an object's centre). One of the samplers that
succeeded is then picked at random. Objects whose **centre** lies in the window are kept,
clipped to it; the others are dropped. (The paper says a side of 0.1 to 1; Caffe SSD's own
configuration, which produced the published results, uses 0.3.)

`minissd.data.augment.sample_crop` does all of this in one call. Here are its steps written
out, so that each sampler's window can be drawn, and checked against the library with the same
random numbers.

Look at what the constraints mean on this photo. "IoU $\ge t$ with at least one box" is easiest
to meet with a **big** box: the cat fills the photo, so "min IoU 0.9" can only be met by a window
almost as large as the photo. An eye can never meet "min IoU 0.5": a window has an area of at
least $0.3^2 = 0.09$ of the photo and an eye about $0.04$, so their IoU is at most
$0.04 / 0.09 \approx 0.4$. The windows that zoom in on the eyes come from the low constraints
and from the unconstrained sampler, and from crops of a zoomed-out image, where the objects are
smaller still. An unconstrained window may hold no object centre at all, as the last one below
does: that training image then teaches only background.
"""),
("code", r"""
wh = (cat.image.shape[1], cat.image.shape[0])              # (width, height) in pixels
to_pixels = np.array([wh[0], wh[1], wh[0], wh[1]])         # normalised corners -> pixels
rng = np.random.default_rng(29)
windows = {"whole image": np.array([0.0, 0.0, 1.0, 1.0])}
for min_iou in CROP_MIN_IOUS + (None,):                     # the six random samplers
    side = rng.uniform(0.3, 1.0, CROP_TRIALS)               # CROP_TRIALS = 50 windows each
    aspect = np.clip(rng.uniform(0.5, 2.0, CROP_TRIALS), side ** 2, 1 / side ** 2)
    w = np.minimum(side * np.sqrt(aspect), 1.0)
    h = np.minimum(side / np.sqrt(aspect), 1.0)
    x0, y0 = rng.random(CROP_TRIALS) * (1 - w), rng.random(CROP_TRIALS) * (1 - h)
    trials = snap_crops(np.stack([x0, y0, x0 + w, y0 + h], 1), wh)      # (50, 4) whole pixels
    if min_iou is None:
        windows["no constraint"] = trials[0]
        continue
    ok = np.flatnonzero(crop_satisfies(trials, boxes, min_iou))
    print(f"min IoU {min_iou}: {len(ok):2d} of {CROP_TRIALS} windows qualify")
    if len(ok):
        windows[f"min IoU {min_iou}"] = trials[ok[0]]
pick = list(windows)[rng.integers(len(windows))]
library = sample_crop(boxes, np.random.default_rng(29), wh)
print(f"sample_crop with the same seed picks '{pick}':", np.allclose(library, windows[pick]))
assert np.allclose(library, windows[pick])
eye_area = np.prod(boxes[labels == 2, 2:] - boxes[labels == 2, :2], axis=1).max()
print(f"largest eye: {eye_area:.3f} of the photo; best IoU any window can reach with it "
      f"{eye_area / 0.3 ** 2:.2f}")
assert eye_area / 0.3 ** 2 < 0.5

fig, axes = plt.subplots(2, len(windows), figsize=(2.6 * len(windows), 5.4))
for (name, window), top, bottom in zip(windows.items(), axes[0], axes[1]):
    best = iou(window[None], boxes).max()
    viz.draw_boxes(cat.image, boxes, ax=top, color="white", linewidth=1)
    viz.draw_boxes(None, window[None] * to_pixels, ax=top, color="yellow",
                   normalized=False, linewidth=2.5)
    top.set_title(f"{name}\nbest IoU {best:.2f}", fontsize=9)
    kept, kept_labels = crop_boxes(boxes, labels, window)
    x0, y0, x1, y1 = np.round(window * to_pixels).astype(int)
    viz.draw_boxes(resize(np.ascontiguousarray(cat.image[y0:y1, x0:x1]), S), kept,
                   labels=kept_labels, class_names=names, ax=bottom)
    bottom.set_title(f"{len(kept)} of {len(boxes)} boxes kept", fontsize=9)
    if name.startswith("min IoU"):
        assert best >= float(name.split()[-1])           # the constraint really holds
plt.show()
"""),
("md", r"""
## 4 · Horizontal flip

With probability 0.5 the image is mirrored, and with it every box:
$x_0' = 1 - x_1$, $x_1' = 1 - x_0$ ($y$ unchanged).
"""),
("code", r"""
only_flip = SSDAugmentation(S, mean, photometric=False, expand=False, crop=False, flip=True)
seed = next(s for s in range(20)
            if not np.allclose(only_flip(cat.image, boxes, labels, np.random.default_rng(s))[1],
                               boxes, atol=1e-6))
image, b, l = only_flip(cat.image, boxes, labels, np.random.default_rng(seed))
assert np.allclose(b, np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1),
                   atol=1e-6)
assert np.array_equal(image, resize(np.ascontiguousarray(cat.image[:, ::-1]), S))
fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
viz.draw_boxes(resize(cat.image, S), boxes, labels=labels, class_names=names, ax=axes[0])
viz.draw_boxes(image.astype(np.uint8), b, labels=l, class_names=names, ax=axes[1])
axes[0].set_title("resized"), axes[1].set_title(f"flipped (seed {seed})")
plt.show()
"""),
("md", r"""
## 5 · All together

The full `SSDAugmentation(size, mean)`: photometric, expand, crop, flip, resize, each draw
from the generator passed in (so a seed always gives the same image). Eight draws of the same
photo, then the sizes of the objects over 400 draws: zoom out makes the cat small, and crops
make an eye and the nose large.
"""),
("code", r"""
full = SSDAugmentation(S, mean)
rng = np.random.default_rng(0)
fig, axes = plt.subplots(2, 4, figsize=(15, 7.8))
for ax in axes.flat:
    image, b, l = full(cat.image, boxes, labels, rng)
    viz.draw_boxes(image.astype(np.uint8), b, labels=l, class_names=names, ax=ax)
    ax.set_title(f"{len(b)} boxes", fontsize=10)
    assert image.shape == (S, S, 3) and (b >= 0).all() and (b <= 1).all()
plt.show()

side = lambda b: np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))     # sqrt of the area
before = {n: side(boxes[labels == k + 1]) for k, n in enumerate(names)}
after = {n: [] for n in names}
for _ in range(400):
    _, b, l = full(cat.image, boxes, labels, rng)
    for k, n in enumerate(names):
        after[n] += list(side(b[l == k + 1]))
fig, ax = plt.subplots(figsize=(9, 3.8))
bins = np.geomspace(0.02, 1.0, 30)
for k, n in enumerate(names):
    ax.hist(after[n], bins=bins, histtype="step", linewidth=2, color=viz.class_color(k + 1),
            label=f"{n}: {len(after[n])} boxes in 400 draws")
    for s in before[n]:
        ax.axvline(s, color=viz.class_color(k + 1), linestyle="--")
ax.set_xscale("log"), ax.set_xlabel("object side (sqrt of its area, share of the image side)")
ax.set_title("dashed: the photo's objects; solid: after augmentation"), ax.legend()
plt.show()
for n in names:
    print(f"{n:>5}: side {before[n].min():.2f} in the photo, after augmentation from "
          f"{min(after[n]):.2f} to {max(after[n]):.2f}")
assert min(after["cat"]) < before["cat"].min() / 2.5        # zoom out: the cat made small
assert max(after["eye"]) > 2 * before["eye"].max()          # crops: an eye made large
"""),
("md", r"""
## 6 · Your own data: a folder, a training run, detections

`python -m minissd.train --voc-root DIR` reads three layouts (README, "Train on your own data";
`minissd/data/folders.py`): a VOCdevkit; a VOC-format folder (`JPEGImages/`, `Annotations/`,
optional `ImageSets/Main/*.txt`); or the **flat export** of an annotation tool such as labelImg,
CVAT or Roboflow: each image with a same-stem `.xml` beside it, possibly in `train/`, `valid/`
and `test/` subfolders. Classes come from `labels.txt`/`classes.txt` or, failing that, from
the annotations. With no validation split, about 10% of the images are set aside by a hash
of their names.

We make a flat export of 16 images. To keep this notebook self-contained, the "annotated
photos" are drawn by `minissd.data.synthetic` (shapes on textured backgrounds) and then laid
out as labelImg would save them: `000000.jpg` next to `000000.xml`, no split files and no
`labels.txt`. Your own folder goes in the same place.
"""),
("code", r"""
from minissd.data.synthetic import generate

work = tempfile.mkdtemp(prefix="minissd-nb08-")
drawn = generate(os.path.join(work, "drawn"), num_train=16, num_val=0, image_size=128, seed=8)
mine = os.path.join(work, "my_shapes")
os.makedirs(mine)
for stem in sorted(f[:-4] for f in os.listdir(os.path.join(drawn, "JPEGImages"))):
    os.replace(os.path.join(drawn, "JPEGImages", stem + ".jpg"),
               os.path.join(mine, stem + ".jpg"))
    os.replace(os.path.join(drawn, "Annotations", stem + ".xml"),
               os.path.join(mine, stem + ".xml"))
files = sorted(os.listdir(mine))
print(len(files), "files:", ", ".join(files[:4]), "...")
with open(os.path.join(mine, "000000.xml"), encoding="utf-8") as f:
    print(f.read())
assert len(files) == 32
"""),
("md", r"""
Train with the command line, as you would in a terminal. A real folder has hundreds of images
and the default length (at least 4400 steps for the tiny config: about 5 minutes on 2 cores,
VOC07 mAP 0.89–0.90 on the README's three test folders); here `--iters 120` (about 70 epochs of
the 14 images it will train on), one process (`--procs 1`), flips only (`--augment flip`) and one
evaluation at the end, so that it fits in the notebook's minute. Read what it prints first: the
split it made, the classes it found, the plan, and its warning: half of these objects are under
16 pixels wide at the tiny config's 128-pixel input, and it says what to do about that.
"""),
("code", r"""
run_dir = os.path.join(work, "run")
train = subprocess.run([sys.executable, "-m", "minissd.train", "--voc-root", mine,
                        "--iters", "120", "--augment", "flip", "--procs", "1",
                        "--eval-every", "0", "--no-progress", "--out", run_dir],
                       capture_output=True, text=True, timeout=900)
print(train.stderr[-3000:], train.stdout[-3000:])   # the plan goes to stderr
assert train.returncode == 0
assert "median object" in train.stderr            # the small-object warning the text mentions
print("written:", sorted(os.listdir(run_dir)))
with open(os.path.join(run_dir, "split_val.txt"), encoding="utf-8") as f:
    val_ids = f.read().split()
with open(os.path.join(run_dir, "split_train.txt"), encoding="utf-8") as f:
    train_ids = f.read().split()
print("held out for validation:", val_ids)
assert len(train_ids) + len(val_ids) == 16 and 1 <= len(val_ids) <= 4
"""),
("md", r"""
Now `python -m minissd.detect` on two of the training images and on the held-out ones. It
prints each detection as `class score xmin ymin xmax ymax` in the image's pixels and writes a
picture per image.
"""),
("code", r"""
from IPython.display import Image, display

shown = train_ids[:2] + val_ids[:2]
det_dir = os.path.join(work, "detections")
found = subprocess.run([sys.executable, "-m", "minissd.detect", "--checkpoint",
                        os.path.join(run_dir, "last.npz"), "--out", det_dir, "--threshold", "0.5"]
                       + [os.path.join(mine, i + ".jpg") for i in shown],
                       capture_output=True, text=True, timeout=300)
print(found.stdout[-3000:], found.stderr[-3000:])
assert found.returncode == 0
pictures = sorted(os.listdir(det_dir))
assert len(pictures) == len(shown)
fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.6))
for ax, image_id in zip(axes, shown):
    name = next(p for p in pictures if p.startswith(image_id))
    ax.imshow(plt.imread(os.path.join(det_dir, name))), ax.set_axis_off()
    ax.set_title(("trained on: " if image_id in train_ids else "held out: ") + image_id,
                 fontsize=10)
plt.show()
"""),
("md", r"""
How good is it? The command line's own evaluation printed the validation mAP above; below, the
library's `load_model` and `predict` (what `detect` uses) check the training images. After 120
steps on 14 images, the network finds most objects **of the images it trained on**; on held-out
images it finds few. That is the honest state of a two-minute run: for a detector that
generalises, give it more images and the default length (`python -m minissd.train --voc-root
my_shapes`), then `python -m minissd.evaluate --checkpoint <run>/best.npz`.
"""),
("code", r"""
from minissd.data.voc import VOCDataset
from minissd.inference import load_model, predict
from minissd.priors import default_boxes

model, config, meta = load_model(os.path.join(run_dir, "last.npz"))
priors = default_boxes(config)
print("classes stored in the checkpoint:", config.class_names)
ds = VOCDataset(mine, ids=train_ids, classes=tuple(config.class_names))


def share_found(indices):
    hits = total = 0
    samples = [ds[i] for i in indices]
    for s, (b, sc, l) in zip(samples, predict(model, config, [s.image for s in samples], priors)):
        sure = sc >= 0.5
        ok = iou(s.boxes, b[sure]) * (s.labels[:, None] == l[sure][None]) > 0.5   # (G, K)
        hits, total = hits + ok.any(axis=1).sum(), total + len(s.boxes)
    return hits / total


on_train = share_found(range(len(ds)))
print(f"objects of the training images found (IoU > 0.5, right class, score >= 0.5): "
      f"{on_train:.0%}")
assert on_train > 0.5
"""),
("md", r"""
## Exercises

1. Run `SSDAugmentation(S, mean, max_expand=1.5)` (what `--augment light` uses on your own
   data) for 400 draws. How small does the cat get now? When would you want the full 4x?
2. In the crop section, change the seed until "min IoU 0.9" finds no window. Why does it fail
   more often on an image whose only object fills the frame?
3. Add a `labels.txt` with `star`, `circle` (one per line) to `my_shapes` and train again. What
   does the command line say about the other shapes, and about the label order?
4. Move 4 image/XML pairs into `my_shapes/valid/` and the rest into `my_shapes/train/`
   (Roboflow's layout). Which images does the command now validate on?
5. Train on `my_shapes` with `--augment full` and with `--augment flip` for the same 120 steps.
   Which finds more of the training objects? Which would you expect to do better on the
   held-out images after 4400 steps, and why?
"""),
("md", r"""
## Know your data: the report, fitted default boxes, the error breakdown

Before training, `python -m minissd.inspect` reads the annotations of a folder and reports what
SSD will face: problems in the annotations, objects per class, their sizes at the network's
input and, for every object, its best IoU with any default box. The share of objects whose
best IoU reaches the matching threshold (0.5) is the **recall ceiling** of the configuration:
an object below it still gets one positive from the bipartite step, but it is the first one a
trained detector misses. Here, on `my_shapes`:
"""),
("code", r"""
report_dir = os.path.join(work, "inspect")
looked = subprocess.run([sys.executable, "-m", "minissd.inspect", "--voc-root", mine,
                         "--out", report_dir], capture_output=True, text=True, timeout=600)
print(looked.stdout[-4000:])
assert looked.returncode == 0 and "recall ceiling:" in looked.stdout
display(Image(os.path.join(report_dir, "sizes.png")))
"""),
("md", r"""
The same numbers from the library: `best_prior_iou` gives each object's best IoU, and
`fit_default_boxes` searches the box scales (and, for elongated objects, aspect ratios) that
lift the ceiling. `train --fit-boxes` runs this search before the first step and stores the
boxes in the checkpoint's config, so `evaluate` and `detect` use the same ones.
"""),
("code", r"""
from minissd.analysis.coverage import best_prior_iou
from minissd.analysis.dataset import collect
from minissd.analysis.fit import fit_default_boxes
from minissd.config import tiny

objects = collect(VOCDataset(mine, ids=train_ids, classes=tuple(config.class_names)), "train")
base = tiny(class_names=config.class_names)
best, _ = best_prior_iou(objects.boxes, default_boxes(base))
fit = fit_default_boxes(base, objects.boxes)
print(f"{len(best)} training objects; ceiling {fit.before:.0%} with tiny's boxes, "
      f"{fit.after:.0%} fitted; min sizes {[round(v, 1) for v in base.min_sizes]} -> "
      f"{[round(v, 1) for v in fit.config.min_sizes]}")
assert fit.before == np.mean(best >= 0.5) and fit.after >= fit.before
"""),
("md", r"""
After training, `python -m minissd.evaluate --errors` sorts the mistakes into TIDE's types
(classification, localisation, both, duplicate, background, missed) with the mAP points a fix
of each type would add, and prints the precision/recall at each class's best-F1 threshold and
a confusion matrix (`errors.png` and `errors.json` in the run folder). Which type costs the
two-minute run above the most, and what would you change first?
"""),
("code", r"""
errors = subprocess.run([sys.executable, "-m", "minissd.evaluate", "--checkpoint",
                         os.path.join(run_dir, "last.npz"), "--errors", "--metric", "voc07",
                         "--out", run_dir], capture_output=True, text=True, timeout=600)
print(errors.stdout[-4000:])
assert errors.returncode == 0 and "error types (TIDE" in errors.stdout
display(Image(os.path.join(run_dir, "errors.png")))
"""),
]
