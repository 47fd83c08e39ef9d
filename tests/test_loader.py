"""The batch loader: deterministic for a seed whatever the threads do, reshuffled per epoch,
resumable at any step, and it skips unreadable files with a count."""
import os
import warnings

import numpy as np
import pytest

from minissd.config import CAFFE_PREPROCESS, tiny
from minissd.data import synthetic
from minissd.data.augment import SSDAugmentation, pixel_mean
from minissd.data.loader import DataLoader, EvalLoader
from minissd.data.voc import Sample, VOCDataset


class ArrayDataset:
    """n tiny images; image i is filled with the value i so batches reveal their indices."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.full((16, 16, 3), i, np.uint8)
        boxes = np.array([[0.1, 0.2, 0.6, 0.9]], np.float32)
        return Sample(image, boxes, np.array([1 + i % 3]), np.zeros(1, bool), str(i))


def _indices(images):
    """Which images a preprocessed Caffe batch holds (value i minus the blue mean 104)."""
    return [int(round(v)) for v in images[:, 0, 0, 0] + 104]


def _identity(image, boxes, labels, rng):
    return image.astype(np.float32), boxes, labels


def test_epochs_reshuffle_and_cover_the_dataset():
    loader = DataLoader(ArrayDataset(10), 3, _identity, CAFFE_PREPROCESS, seed=0, num_workers=0)
    assert loader.steps_per_epoch == 3                    # drop_last: 9 of 10 per epoch
    it = iter(loader)
    epochs = [sum((_indices(next(it)[0]) for _ in range(3)), []) for _ in range(3)]
    for e in epochs:
        assert len(set(e)) == 9 and set(e) <= set(range(10))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert loader.state() == {"step": 9, "seed": 0}
    unshuffled = DataLoader(ArrayDataset(10), 5, _identity, CAFFE_PREPROCESS, shuffle=False,
                            num_workers=0)
    assert _indices(next(iter(unshuffled))[0]) == [0, 1, 2, 3, 4]


def test_deterministic_across_threads_and_resumable():
    ds = ArrayDataset(11)
    aug = SSDAugmentation(24, pixel_mean(CAFFE_PREPROCESS))

    def run(num_workers, start=None, n=8):
        loader = DataLoader(ds, 4, aug, CAFFE_PREPROCESS, seed=5, num_workers=num_workers)
        return [b for _, b in zip(range(n), loader.batches(start))], loader

    serial, _ = run(0)
    threaded, _ = run(3)
    resumed, loader = run(2, start=5, n=3)            # step 5 is in epoch 2 (2 steps/epoch)
    assert loader.state()["step"] == 8
    for (a, ta), (b, tb) in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
        for (ba, la), (bb, lb) in zip(ta, tb):
            np.testing.assert_array_equal(ba, bb)
            np.testing.assert_array_equal(la, lb)
    for (a, _), (b, _) in zip(serial[5:], resumed):
        np.testing.assert_array_equal(a, b)
    other = DataLoader(ds, 4, aug, CAFFE_PREPROCESS, seed=6, num_workers=0)
    assert not np.array_equal(next(iter(other))[0], serial[0][0])

    fresh = DataLoader(ds, 4, aug, CAFFE_PREPROCESS, seed=5, num_workers=1)
    fresh.set_state({"step": 5, "seed": 5})
    np.testing.assert_array_equal(next(iter(fresh))[0], serial[5][0])
    with pytest.raises(ValueError, match="seed"):
        fresh.set_state({"step": 1, "seed": 4})


def test_batch_contents_on_the_synthetic_set(tmp_path):
    root = synthetic.generate(tmp_path / "s", num_train=10, num_val=3, image_size=64)
    cfg = tiny()
    train = VOCDataset(root, splits=("train",))
    loader = DataLoader(train, 4, SSDAugmentation(32, pixel_mean(cfg.preprocess)), cfg)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.float32
    assert abs(float(images.mean())) < 2                  # normalised input, not 0..255
    for boxes, labels in targets:
        assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == np.int64 and ((labels >= 1) & (labels <= 6)).all()

    val = VOCDataset(root, splits=("val",), keep_difficult=True)
    batches = list(EvalLoader(val, 2, 32, cfg))
    assert [b[0].shape[0] for b in batches] == [2, 1]
    infos = [i for _, b in batches for i in b]
    assert [i["image_id"] for i in infos] == ["000010", "000011", "000012"]
    np.testing.assert_array_equal(infos[0]["boxes"], val.annotation(0).boxes)


def test_corrupted_file_is_skipped_and_counted(tmp_path):
    root = synthetic.generate(tmp_path / "s", num_train=8, num_val=0, image_size=48)
    with open(os.path.join(root, "JPEGImages", "000003.jpg"), "r+b") as f:
        f.truncate(100)
    ds = VOCDataset(root, splits=("train",))
    loader = DataLoader(ds, 4, SSDAugmentation(32, (0, 0, 0)), CAFFE_PREPROCESS, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sizes = [b[0].shape[0] for _, b in zip(range(6), loader)]   # 3 epochs
    assert loader.skipped == 3                            # once per epoch
    assert sorted(sizes) == [3, 3, 3, 4, 4, 4]
    messages = [str(w.message) for w in caught if "000003.jpg" in str(w.message)]
    assert len(messages) == 1 and "skipping image 3" in messages[0]
    evaluate = EvalLoader(ds, 3, 32, CAFFE_PREPROCESS, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(b[0].shape[0] for b in evaluate) == 7
    assert evaluate.skipped == 1


def test_batch_larger_than_dataset_is_named():
    with pytest.raises(ValueError, match="batch-size"):
        DataLoader(ArrayDataset(3), 4, _identity, CAFFE_PREPROCESS)
