"""Export to ONNX: python -m minissd.export --checkpoint CKPT | --weights FILE --out model.onnx
                  [--nms] [--check IMAGE ...] [--overwrite]

Writes the network, its default boxes, the decoding and the softmax as one ONNX graph (opset
13; minissd/onnx_graph.py says what each input and output is). The file runs without minissd:

    import numpy as np, onnxruntime
    from PIL import Image
    session = onnxruntime.InferenceSession("model.onnx")
    x = np.asarray(Image.open("photo.jpg").convert("RGB").resize((S, S), Image.BILINEAR),
                   np.float32).transpose(2, 0, 1)[None]            # (1, 3, S, S) RGB 0..255
    boxes, scores = session.run(["boxes", "scores"], {"images": x})

with S the config's image size (printed, and stored in the file's metadata with the class
names). NMS is left to the caller, or is in the graph with --nms (output "selected").

--check runs the written file in onnxruntime on the given images (or on a generated one) and
prints the largest difference from minissd's own outputs; it fails when they differ by more
than float32 rounding or when the detections after minissd's NMS differ.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from . import backend
from .cli import Parser, add_weights_flags, fail
from .data.augment import preprocess, resize
from .data.voc import DataError, load_image
from .inference import CheckpointError, load_chosen
from .onnx_graph import OPSET, onnx_model
from .postprocess import detect
from .priors import default_boxes

# Raw outputs of two runtimes differ by float32 rounding in long sums (a conv of 4608 terms):
# relative to the output's scale, 1e-4 is far above that and far below a wrong layer.
RAW_TOLERANCE = 1e-4


def build_parser():
    p = Parser("export", description="Write the network, default boxes, decoding and softmax "
               "as an ONNX file that runs without minissd (onnxruntime, OpenCV's dnn).")
    add_weights_flags(p)
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--nms", action="store_true",
                   help="also put NMS in the graph (ONNX NonMaxSuppression, output "
                   "\"selected\"); without it the caller runs NMS on boxes and scores")
    p.add_argument("--check", nargs="*", metavar="IMAGE", default=None,
                   help="run the written file in onnxruntime on these images (none: a "
                   "generated one) and compare with minissd's outputs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out when it exists (default: refuse)")
    return p


def network_images(images, size):
    """(N, 3, S, S) float32 RGB 0..255: what the exported graph takes (resized with Pillow's
    bilinear, as minissd does for every minissd checkpoint)."""
    return np.stack([resize(im, size) for im in images]).astype(np.float32).transpose(0, 3, 1, 2)


def minissd_outputs(model, config, x):
    """(loc, conf) of SSD.forward on the graph's input x (preprocessed as minissd does)."""
    net_in = preprocess(x.transpose(0, 2, 3, 1), config.preprocess)
    xp = backend.get_array_module(model.params()[0][1])
    was_training = model.training
    model.eval()
    try:
        loc, conf = model.forward(xp.asarray(net_in), keep_cache=False)
    finally:
        model.train(was_training)
    return backend.to_numpy(loc), backend.to_numpy(conf)


def compare(reference, other, config):
    """The largest difference of (loc, conf) relative to each output's largest magnitude,
    and whether the detections after minissd's NMS are equal (same labels, boxes within the
    raw tolerance, scores within 1e-5). reference and other: (loc, conf) NumPy pairs."""
    worst = max(float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-12))
                for a, b in zip(reference, other))
    priors = default_boxes(config)
    kw = dict(conf_threshold=config.conf_threshold, nms_threshold=config.nms_threshold,
              top_k=config.top_k, variances=config.variances,
              per_class_top_k=config.per_class_top_k, clip_boxes=config.clip_boxes,
              wh_clamp=config.wh_clamp)
    same = True
    for (b0, s0, l0), (b1, s1, l1) in zip(detect(*reference, priors, **kw),
                                          detect(*other, priors, **kw)):
        same &= (l0.shape == l1.shape and bool((l0 == l1).all())
                 and np.allclose(b0, b1, atol=RAW_TOLERANCE) and np.allclose(s0, s1, atol=1e-5))
    return worst, same


def write_model(model, config, path, nms=False):
    """Write the ONNX file atomically (a temporary file renamed over `path`)."""
    proto = onnx_model(config, model.state_dict(), nms=nms)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return proto


def main(argv=None):
    args = build_parser().parse_args(argv)
    backend.set_device("cpu")
    try:
        import onnx  # noqa: F401
    except ImportError:
        fail("export", "the onnx package is missing; install it with pip install onnx")
    if os.path.isdir(args.out) or not args.out.endswith(".onnx"):
        fail("export", f"--out {args.out}: not a .onnx file name; give the file to write, "
             "e.g. --out model.onnx")
    if os.path.exists(args.out) and not args.overwrite:
        fail("export", f"--out {args.out}: the file exists; choose a new name or pass "
             "--overwrite")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        fail("export", f"--out {args.out}: its folder does not exist; create it first")
    try:
        model, config, _ = load_chosen(args.checkpoint, args.weights)
    except CheckpointError as e:
        fail("export", str(e))
    images = []
    for path in args.check or ():
        try:
            images.append(load_image(path))
        except DataError as e:
            fail("export", str(e))
    try:
        write_model(model, config, args.out, nms=args.nms)
    except OSError as e:
        fail("export", f"--out {args.out}: cannot write ({e.strerror}); choose a writable "
             "folder")
    s = config.image_size
    print(f"wrote {args.out}: {config.name}, opset {OPSET}, {os.path.getsize(args.out) / 1e6:.1f}"
          f" MB; input images (N, 3, {s}, {s}) float32 RGB 0..255; outputs loc, conf, boxes, "
          f"scores{', selected' if args.nms else ''}; {len(config.class_names)} classes")
    if args.check is not None:
        return _check(model, config, args.out, images)
    return 0


def _check(model, config, path, images):
    try:
        import onnxruntime
    except ImportError:
        fail("export", "--check: onnxruntime is missing; install it with pip install "
             "onnxruntime")
    if not images:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (config.image_size, config.image_size, 3), np.uint8)]
    x = network_images(images, config.image_size)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    ours = minissd_outputs(model, config, x)
    theirs = tuple(session.run(["loc", "conf"], {"images": x}))
    worst, same = compare(ours, theirs, config)
    print(f"onnxruntime {onnxruntime.__version__} on {len(images)} image(s): largest "
          f"difference {worst:.2e} of the output's scale; detections "
          f"{'equal' if same else 'DIFFER'}")
    if worst > RAW_TOLERANCE or not same:
        fail("export", f"--check: {path} does not reproduce minissd's outputs; report this "
             "with the config name")
    return 0


if __name__ == "__main__":
    sys.exit(main())
