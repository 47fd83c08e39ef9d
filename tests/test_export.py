"""ONNX export (minissd/onnx_graph.py, minissd/export.py) checked against two runtimes:
onnxruntime and OpenCV's dnn (cv2.dnn.readNetFromONNX), on real photos and random weights.

Raw outputs must equal SSD.forward's within float32 rounding (export.RAW_TOLERANCE of each
output's scale) and the detections after minissd's NMS must be equal. The conf heads' random
weights are scaled up so that the class scores spread out: with the default init every score
is near 1 / C and the top-400 candidates per class would be decided by rounding.
"""
import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="pip install onnx (in the test extra)")
ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime (in the test extra)")

from minissd import export  # noqa: E402
from minissd.cli import CommandError  # noqa: E402
from minissd.config import ssd300, tiny  # noqa: E402
from minissd.kernels import batched_nms  # noqa: E402
from minissd.model import SSD  # noqa: E402
from minissd.onnx_graph import onnx_model, plan_inputs  # noqa: E402
from minissd.plan import layer_plan  # noqa: E402
from minissd.priors import default_boxes  # noqa: E402
from minissd.weights import save_checkpoint  # noqa: E402

from cli_checks import fails  # noqa: E402


def _photos():
    """The project's real photos when scikit-image is there, else two generated images."""
    try:
        from minissd.data.photos import photo
        return [photo("chelsea").image, photo("coffee").image]
    except ImportError:
        rng = np.random.default_rng(1)
        return [rng.integers(0, 256, (240, 320, 3), np.uint8),
                rng.integers(0, 256, (300, 200, 3), np.uint8)]


def _model(config, seed=0):
    model = SSD(config, rng=seed)
    for name, w in model.params():
        if name.startswith("conf."):
            w *= 30.0                                  # spread the class scores (see above)
    model.eval()
    return model


def _write(model, config, tmp_path, nms=False):
    path = str(tmp_path / f"{config.name}.onnx")
    export.write_model(model, config, path, nms=nms)
    return path


def _check_runtimes(config, tmp_path, batch):
    model = _model(config)
    path = _write(model, config, tmp_path)
    x = export.network_images(_photos()[:batch], config.image_size)
    ours = export.minissd_outputs(model, config, x)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = dict(zip(export_outputs(), session.run(export_outputs(), {"images": x})))
    worst, same = export.compare(ours, (out["loc"], out["conf"]), config)
    assert worst < export.RAW_TOLERANCE and same, f"onnxruntime: {worst:.2e}, equal {same}"
    # decoded boxes and softmax scores in the graph = minissd's decode and softmax
    from minissd.boxes import decode
    from minissd.ops.softmax import softmax
    np.testing.assert_allclose(out["boxes"], decode(out["loc"], default_boxes(config),
                                                    config.variances), atol=1e-6)
    np.testing.assert_allclose(out["scores"], softmax(out["conf"], axis=-1), atol=1e-6)

    cv2 = pytest.importorskip("cv2", reason="pip install opencv-python-headless (test extra)")
    net = cv2.dnn.readNetFromONNX(path)
    for i in range(batch):                       # OpenCV's dnn: one image at a time
        net.setInput(x[i:i + 1])
        loc, conf, boxes, scores = net.forward(["loc", "conf", "boxes", "scores"])
        worst, same = export.compare(tuple(a[i:i + 1] for a in ours), (loc, conf), config)
        assert worst < export.RAW_TOLERANCE and same, f"OpenCV dnn: {worst:.2e}, equal {same}"
        np.testing.assert_allclose(boxes, out["boxes"][i:i + 1], atol=export.RAW_TOLERANCE)
        np.testing.assert_allclose(scores, out["scores"][i:i + 1], atol=export.RAW_TOLERANCE)


def export_outputs():
    return ["loc", "conf", "boxes", "scores"]


def test_tiny_equals_minissd_in_onnxruntime_and_opencv(tmp_path):
    _check_runtimes(tiny(), tmp_path, batch=2)


def test_ssd300_equals_minissd_in_onnxruntime_and_opencv(tmp_path):
    _check_runtimes(ssd300(), tmp_path, batch=1)


def test_graph_follows_the_plan(tmp_path):
    """A node per plan entry with the entry's name as its output, the state dict's names as
    initializers, the default boxes as "priors", opset 13, class names in the metadata."""
    config = tiny(class_names=("cat", "dog, big"))
    model = _model(config)
    proto = onnx.load(_write(model, config, tmp_path))
    outputs = {o for n in proto.graph.node for o in n.output}
    plan = layer_plan(config)
    assert {p.name for p in plan} <= outputs
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        np.testing.assert_array_equal(inits[name].reshape(value.shape), value)
    np.testing.assert_array_equal(inits["priors"], default_boxes(config))
    assert [o.version for o in proto.opset_import] == [13]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == ["cat", "dog, big"]
    assert [i.name for i in proto.graph.input] == ["images"]
    # L2Norm reads the ReLU of base conv l2norm_conv, and the trunk goes on from that ReLU
    reads = plan_inputs(plan)
    relu = reads["L2Norm"][0]
    assert sum(relu in r for r in reads.values()) == 2


def test_nms_in_the_graph_keeps_what_minissd_keeps(tmp_path):
    """--nms: NonMaxSuppression per class in onnxruntime selects the same (class, box)
    pairs as minissd.kernels.batched_nms on the same candidates (all of them: ONNX has no
    per-class cap before NMS)."""
    config = tiny()
    config.conf_threshold = 0.8                 # few enough candidates: no per-class cap
    model = _model(config)
    path = _write(model, config, tmp_path, nms=True)
    x = export.network_images(_photos()[:1], config.image_size)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    boxes, scores, selected = session.run(["boxes", "scores", "selected"], {"images": x})
    assert selected.shape[1] == 3 and len(selected) > 0
    box_idx, cls_idx = np.nonzero(scores[0][:, 1:] > config.conf_threshold)
    keep = batched_nms(boxes[0][box_idx], scores[0][box_idx, cls_idx + 1], cls_idx + 1,
                       config.nms_threshold)
    ours, per_class = set(), {}
    for c, b in zip(cls_idx[keep], box_idx[keep]):        # best first; at most top_k a class
        per_class[c] = per_class.get(c, 0) + 1
        if per_class[c] <= config.top_k:
            ours.add((int(c), int(b)))
    assert max(per_class.values()) > config.top_k         # the cap is exercised
    theirs = {(int(c), int(b)) for _, c, b in selected}
    assert theirs == ours


def test_command_writes_checks_and_refuses_to_overwrite(tmp_path, capsys):
    config = tiny()
    model = _model(config)
    ckpt = str(tmp_path / "last.npz")
    save_checkpoint(ckpt, model.state_dict(), {"config": config.to_dict()})
    out = str(tmp_path / "model.onnx")
    assert export.main(["--checkpoint", ckpt, "--out", out, "--check"]) == 0
    printed = capsys.readouterr().out
    assert "opset 13" in printed and "detections equal" in printed
    before = open(out, "rb").read()
    line = fails(["--checkpoint", ckpt, "--out", out], capsys, module=export)
    assert "exists" in line and open(out, "rb").read() == before
    assert export.main(["--checkpoint", ckpt, "--out", out, "--overwrite"]) == 0
    line = fails(["--checkpoint", ckpt, "--out", str(tmp_path / "no" / "m.onnx")], capsys,
                 module=export)
    assert "folder does not exist" in line
    line = fails(["--checkpoint", str(tmp_path / "none.npz"), "--out",
                  str(tmp_path / "m.onnx")], capsys, module=export)
    assert "not found" in line
    assert sorted(os.listdir(tmp_path)) == ["last.npz", "model.onnx"]   # no temporary left


def test_unknown_plan_kind_is_named():
    config = tiny()
    plan = list(layer_plan(config))
    from dataclasses import replace
    from minissd import onnx_graph
    g = onnx_graph._Graph(onnx)
    with pytest.raises(ValueError, match="kind 'swish' has no ONNX form"):
        onnx_graph._layer(g, replace(plan[0], kind="swish"), ["images"], {})
    with pytest.raises(CommandError):
        export.main(["--out", "x.onnx"])
