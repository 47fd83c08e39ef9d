"""Where the kernels run: inputs on mixed devices, Numba bound to CuPy's device and stream.

Without a GPU, tests/fake_cupy.py stands in for CuPy and numba.cuda: the tests check which
device the inputs end up on, which Numba context a launch enters and which stream it gets.
The tests marked `gpu` run the same situations on real CuPy arrays.
"""
import numpy as np
import pytest

import minissd.kernels as K
from fake_cupy import FakeCupy, FakeNumbaCuda, install, recording_kernels
from minissd import backend
from minissd.kernels import _launch, hard_negative_kernel, iou_kernel, nms_kernel


@pytest.fixture
def fake(monkeypatch):
    """A fake CuPy with two GPUs, installed in minissd.backend for this test."""
    cupy = FakeCupy(num_devices=2)
    install(monkeypatch, cupy)
    return cupy


@pytest.fixture
def numba_fake(monkeypatch):
    recorder = FakeNumbaCuda()
    monkeypatch.setattr(_launch, "numba_cuda", lambda: recorder)
    for module in (iou_kernel, nms_kernel, hard_negative_kernel):   # whatever gets bound
        monkeypatch.setattr(module, "cuda", module.cuda)             # is unbound afterwards
    return recorder


def boxes(n, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    return np.concatenate([xy, xy + 0.2], axis=1).astype(np.float32)


# ------------------------------------------------------------- dispatch: any CuPy input counts

@pytest.mark.parametrize("call, target, device_arg", [
    ("iou_matrix", "_iou.iou_matrix_cuda", 1),
    ("nms", "_nms.nms_cuda", 1),
    ("batched_nms", "_nms.batched_nms_cuda", 2),
    ("hard_negative_mask", "_hard_negative.hard_negative_mask_cuda", 1),
])
def test_dispatch_goes_to_cuda_when_any_input_is_cupy(fake, monkeypatch, call, target,
                                                      device_arg):
    """A CuPy array in any position (here not the first) selects the CUDA path."""
    module, name = target.split(".")
    calls = []
    monkeypatch.setattr(getattr(K, module), name, lambda *a: calls.append(a) or "cuda")
    args = {"iou_matrix": [boxes(3), boxes(4)],
            "nms": [boxes(5), np.ones(5, np.float32), 0.5],
            "batched_nms": [boxes(5), np.ones(5, np.float32), np.ones(5, np.int64), 0.5],
            "hard_negative_mask": [np.ones((2, 6), np.float32), np.zeros((2, 6), bool), 3]}
    args = args[call]
    args[device_arg] = fake.asarray(args[device_arg])
    assert getattr(K, call)(*args) == "cuda" and len(calls) == 1


# ------------------------------------------------------------- mixed inputs: one device

def test_nms_prepare_moves_scores_and_labels_to_the_boxes_device(fake):
    xp, b, s, lab = nms_kernel._prepare_cuda(fake.asarray(boxes(6)), np.ones(6, np.float32),
                                             np.arange(6))
    assert xp is fake
    assert all(backend.is_cupy(a) for a in (b, s, lab))
    _, b, s, lab = nms_kernel._prepare_cuda(boxes(6), fake.asarray(np.ones(6, np.float32)),
                                            None)
    assert backend.is_cupy(b) and backend.is_cupy(s) and backend.is_cupy(lab)


def test_on_one_device_numpy_leaves_numpy(fake):
    a, b = _launch.on_one_device(boxes(2), None)
    assert type(a) is np.ndarray and b is None


# ------------------------------------------------------------- launches: device and stream

def test_iou_launch_binds_numba_to_cupys_device_and_stream(fake, numba_fake, monkeypatch):
    with recording_kernels(monkeypatch, iou_kernel, numba_fake, ["v1", "v2"]) as kernels:
        with fake.cuda.Device(1):
            iou_kernel.iou_matrix_cuda(boxes(3), fake.asarray(boxes(40)))   # mixed inputs
    (launch,) = kernels["v2"].launches
    assert launch["context"] == 1                       # inside Numba's context of GPU 1
    grid, block, stream = launch["config"]
    assert stream.ptr == 1001                           # CuPy's current stream on GPU 1
    assert numba_fake.streams == [(1, 1001)]            # wrapped inside that context
    assert [ctx for ctx, _ in numba_fake.wrapped] == [1, 1, 1]
    assert [dev for _, dev in numba_fake.wrapped] == [1, 1, 1]   # a, b, out all on GPU 1
    assert numba_fake.entered == []                     # and the context is left again


def test_nms_launches_share_one_context_and_stream(fake, numba_fake, monkeypatch):
    with recording_kernels(monkeypatch, nms_kernel, numba_fake, ["mask", "reduce"]) as kernels:
        with fake.cuda.Device(1):
            nms_kernel.batched_nms_cuda(fake.asarray(boxes(70)), np.ones(70, np.float32),
                                        np.arange(70) % 3, 0.5)
    launches = kernels["mask"].launches + kernels["reduce"].launches
    assert [x["context"] for x in launches] == [1, 1]
    assert {x["config"][-1].ptr for x in launches} == {1001}
    assert all(dev == 1 for _, dev in numba_fake.wrapped)


def test_mining_launch_with_a_numpy_loss_and_a_cupy_mask(fake, numba_fake, monkeypatch):
    with recording_kernels(monkeypatch, hard_negative_kernel, numba_fake, ["v1"]) as kernels:
        mask = hard_negative_kernel.hard_negative_mask_cuda(
            np.ones((2, 50), np.float32), fake.asarray(np.zeros((2, 50), bool)))
    (launch,) = kernels["v1"].launches
    assert launch["context"] == 0 and launch["config"][-1].ptr == 1000
    assert backend.is_cupy(mask)
    assert all(backend.is_cupy(a) for a in launch["args"])   # keys, positive, k, mask


def test_input_on_another_gpu_than_cupys_current_one_is_refused(fake, numba_fake, monkeypatch):
    with fake.cuda.Device(1):
        a = fake.asarray(boxes(3))
    with recording_kernels(monkeypatch, iou_kernel, numba_fake, ["v1", "v2"]) as kernels:
        with pytest.raises(ValueError, match=r"GPU 1 but CuPy's current device is GPU 0.*"
                                             r"cupy\.cuda\.Device\(1\)"):
            iou_kernel.iou_matrix_cuda(a, a)
    assert kernels["v2"].launches == [] and numba_fake.entered == []


def test_numpy_inputs_launch_on_the_default_stream_without_a_context(numba_fake):
    with _launch.launch_on(boxes(2)) as stream:
        assert stream == 0 and numba_fake.entered == []


# ------------------------------------------------------------- on a GPU

@pytest.mark.gpu
def test_mixed_inputs_on_a_gpu_match_the_references():
    from minissd.boxes import iou
    from minissd.kernels.hard_negative_kernel import hard_negative_mask_reference
    from minissd.kernels.nms_kernel import nms_reference
    cp = backend._cupy
    rng = np.random.default_rng(0)
    a, b = boxes(7, 1), boxes(300, 2)
    np.testing.assert_array_equal(backend.to_numpy(K.iou_matrix(a, cp.asarray(b))), iou(a, b))
    scores = rng.integers(0, 9, 300).astype(np.float32) / 9
    labels = rng.integers(1, 4, 300)
    got = K.batched_nms(cp.asarray(b), scores, labels, 0.45)
    assert backend.is_cupy(got)
    np.testing.assert_array_equal(backend.to_numpy(got), nms_reference(b, scores, 0.45, labels))
    loss = rng.exponential(size=(3, 500)).astype(np.float32)
    positive = rng.random((3, 500)) < 0.05
    got = K.hard_negative_mask(loss, cp.asarray(positive), 3)
    np.testing.assert_array_equal(backend.to_numpy(got),
                                  hard_negative_mask_reference(loss, positive, 3))


@pytest.mark.gpu
def test_kernels_on_a_side_stream_and_on_a_second_gpu():
    """The kernels follow CuPy's current stream (ordered with the CuPy work around them) and,
    with two GPUs, CuPy's current device."""
    from minissd.boxes import iou
    cp = backend._cupy
    a, b = boxes(9, 3), boxes(2000, 4)
    ref = iou(a, b)
    with cp.cuda.Stream(non_blocking=True):
        da, db = cp.asarray(a), cp.asarray(b)          # queued on the side stream ...
        out = K.iou_matrix(da * 1, db * 1)             # ... and so is the kernel
        np.testing.assert_array_equal(cp.asnumpy(out), ref)
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU: the second-device half needs two")
    with cp.cuda.Device(1):
        out = K.iou_matrix(cp.asarray(a), cp.asarray(b))
        assert out.device.id == 1
        np.testing.assert_array_equal(cp.asnumpy(out), ref)
        keep = K.nms(cp.asarray(b), cp.asarray(np.linspace(1, 0, 2000, dtype=np.float32)), 0.5)
        assert keep.device.id == 1
