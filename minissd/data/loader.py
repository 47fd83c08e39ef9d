"""Batches for training and evaluation, decoded and augmented in background threads.

Dimension letters: N batch, S input side, G boxes of one image.

    loader = DataLoader(dataset, batch_size=32, transform=SSDAugmentation(300, mean),
                        preprocess=config, seed=0)
    for step, (images, targets) in zip(range(iters), loader):
        ...                    # images (N, 3, S, S) float32; targets [(boxes (G, 4), labels (G,))]

Training iteration never ends: step s belongs to epoch s // steps_per_epoch, and each epoch
has its own shuffle. Everything random is a function of (seed, epoch, image index): the
epoch's order comes from SeedSequence([seed, epoch]), each sample's augmentation from
SeedSequence([seed, epoch, index]). So the batches do not depend on which thread finished
first, and a run resumed at step s (`loader.set_state(saved)` or `loader.batches(s)`) sees
exactly the batches the original run would have seen.

Data parallelism: `loader.set_shard(rank, size)` makes the loader load and yield only its
shard of each global batch, positions [lo, hi) of it (np.array_split's bounds: rank r of
size gets the r-th of `size` near-equal parts). The images and their augmentation are those
of the global batch, the sample's randomness being a function of (seed, epoch, image index),
that is of (seed, step, position in the global batch): the data are the same whatever the
number of processes, and a loader of size 1 is the plain one.

Decoding (Pillow) and resizing release the GIL, so a thread pool overlaps them; `prefetch`
batches are kept in flight while the caller trains on the current one.

A sample that fails (DataError, or any of SKIPPED_ERRORS: an image error from Pillow, a
number that overflows) is skipped: its batch is one image shorter, `loader.skipped` counts
it, and each bad file is warned about once. One bad file never stops a long run; two epochs
(at least 8) of batches in a row in which no image could be read do (DataError), rather than
looping on.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .augment import preprocess as preprocess_images
from .augment import resize
from .voc import DataError

# What one bad file can raise while it is read and augmented: DataError (a ValueError) from
# the readers, OSError / SyntaxError / EOFError from Pillow, ValueError and ArithmeticError
# (OverflowError, ZeroDivisionError) from numbers in a file. A bug elsewhere (TypeError,
# IndexError, ...) is not caught: it stops the run with its traceback.
SKIPPED_ERRORS = (DataError, OSError, SyntaxError, EOFError, ValueError, ArithmeticError)


def _preprocess_dict(preprocess):
    """A preprocess dict from a dict or from anything with a .preprocess (an SSDConfig)."""
    pp = getattr(preprocess, "preprocess", preprocess)
    if not isinstance(pp, dict) or not {"channel_order", "scale", "mean", "std"} <= set(pp):
        raise ValueError("preprocess must be an SSDConfig or a dict with channel_order, scale, "
                         "mean and std (see minissd.config.CAFFE_PREPROCESS)")
    return pp


class _Prefetcher:
    """Runs fn(job) for a stream of jobs in a thread pool, yielding results in job order
    with at most `depth` jobs in flight. num_workers 0 runs them in the caller's thread."""

    def __init__(self, num_workers):
        self.pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None

    def map(self, fn, jobs, depth):
        if self.pool is None:
            for job in jobs:
                yield fn(job)
            return
        pending = deque()
        for job in jobs:
            pending.append(self.pool.submit(fn, job))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class _SkipLog:
    """Counts skipped samples and warns once per bad file."""

    def __init__(self):
        self.count = 0
        self.warned = set()

    def skip(self, index, error):
        self.count += 1
        if index not in self.warned:
            self.warned.add(index)
            warnings.warn(f"skipping image {index} of the dataset: {error}", stacklevel=2)


class DataLoader:
    """Endless, shuffled, augmented training batches with background prefetch.

    dataset:     indexable, dataset[i] -> Sample (minissd.data.voc.VOCDataset)
    batch_size:  N
    transform:   (image, boxes, labels, rng) -> (image (S, S, 3) float32, boxes, labels),
                 e.g. SSDAugmentation(S, mean)
    preprocess:  an SSDConfig (its .preprocess is used) or a preprocess dict
    shuffle:     reshuffle every epoch (else dataset order every epoch)
    seed:        the seed every random choice derives from
    num_workers: threads decoding and augmenting (0: in the caller's thread)
    drop_last:   drop the last incomplete batch of an epoch (else it is yielded shorter)
    prefetch:    batches kept in flight ahead of the caller

    Iterating yields (images (N, 3, S, S) float32 NumPy, [(boxes (G, 4) float32,
    labels (G,) int64)] * N) from the current step on, forever.
    """

    def __init__(self, dataset, batch_size, transform, preprocess, shuffle=True, seed=0,
                 num_workers=2, drop_last=True, prefetch=2):
        n = len(dataset)
        if n == 0:
            raise ValueError("the dataset is empty; check its split file")
        if drop_last and n < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} images) "
                             "with drop_last=True; lower --batch-size or pass drop_last=False")
        self.dataset, self.batch_size, self.transform = dataset, batch_size, transform
        self.preprocess = _preprocess_dict(preprocess)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_workers, self.prefetch = num_workers, max(1, prefetch)
        self.steps_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
        self.step = 0                       # the step of the next batch handed out
        self.rank, self.num_shards = 0, 1   # this loader's shard of each batch (set_shard)
        self._log = _SkipLog()
        self._order_cache = (None, None)    # (epoch, permutation)

    @property
    def skipped(self) -> int:
        """Samples skipped so far because their files could not be read."""
        return self._log.count

    # --- state, for resuming ---
    def state(self) -> dict:
        """What a checkpoint stores to resume this loader exactly."""
        return {"step": self.step, "seed": self.seed}

    def set_state(self, state: dict):
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"loader state was saved with seed {state['seed']} but this loader "
                             f"has seed {self.seed}; use the same --seed to resume")
        self.step = int(state["step"])

    # --- which images make up a step ---
    def epoch_order(self, epoch) -> np.ndarray:
        """(len(dataset),) image indices in the order of this epoch."""
        if self._order_cache[0] != epoch:
            n = len(self.dataset)
            if self.shuffle:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
                order = rng.permutation(n)
            else:
                order = np.arange(n)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def batch_indices(self, step):
        """(epoch, image indices) of the batch at `step`."""
        epoch, j = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return epoch, order[j * self.batch_size:(j + 1) * self.batch_size]

    def set_shard(self, rank, size):
        """Yield only shard `rank` of `size` of every global batch (data parallelism over
        `size` processes). Returns self."""
        if not 0 <= rank < size:
            raise ValueError(f"shard {rank} of {size}: the rank must be in 0..{size - 1}")
        if size > self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} cannot be split over {size} "
                             f"processes; use a batch of at least {size} images or fewer "
                             f"processes")
        self.rank, self.num_shards = rank, size
        return self

    def shard_indices(self, step):
        """(epoch, image indices) of this loader's shard of the batch at `step`."""
        epoch, idx = self.batch_indices(step)
        lo, hi = shard_bounds(len(idx), self.rank, self.num_shards)
        return epoch, idx[lo:hi]

    # --- loading ---
    def _load(self, job):
        """One augmented sample, or the exception that stopped it."""
        epoch, index = job
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, int(index)]))
        try:
            s = self.dataset[int(index)]
            return self.transform(s.image, s.boxes, s.labels, rng)
        except SKIPPED_ERRORS as e:
            return e

    def batches(self, start_step=None):
        """Batches from start_step (default: the current step) on, forever."""
        if start_step is not None:
            self.step = int(start_step)
        first = self.step
        prefetcher = _Prefetcher(self.num_workers)

        def jobs():
            s = first
            while True:
                epoch, idx = self.shard_indices(s)
                for i in idx:
                    yield (epoch, i)
                s += 1

        shard_size = -(-self.batch_size // self.num_shards)
        results = prefetcher.map(self._load, jobs(), self.prefetch * shard_size)
        try:
            s, empty = first, 0
            while True:
                epoch, idx = self.shard_indices(s)
                items = []
                for i in idx:
                    r = next(results)
                    if isinstance(r, Exception):
                        self._log.skip(int(i), r)
                    else:
                        items.append(r)
                s += 1
                self.step = s
                if not items and self.num_shards > 1:
                    # the other processes have their shards of this step: they cannot skip it
                    raise DataError(f"every image of shard {self.rank} of step {s - 1} failed "
                                    f"to load (see the warnings above); fix or remove those "
                                    f"files, or train in one process (--procs 1)")
                empty = 0 if items else empty + 1
                if empty >= max(2 * self.steps_per_epoch, 8):
                    raise DataError(f"no image of the last {empty} batches (two epochs) could "
                                    "be read (see the warnings above); fix or replace the "
                                    "dataset's files")
                if items:                   # a batch whose every file failed is skipped
                    yield self._collate(items)
        finally:
            prefetcher.close()

    def __iter__(self):
        return self.batches()

    def _collate(self, items):
        images = np.stack([im for im, _, _ in items])                      # (N, S, S, 3)
        targets = [(np.asarray(b, np.float32).reshape(-1, 4), np.asarray(l, np.int64))
                   for _, b, l in items]
        return preprocess_images(images, self.preprocess), targets         # (N, 3, S, S)


def to_device_prefetched(batches, copier):
    """(images on the device, targets) for every (images, targets) of `batches`, with the
    copy of batch s + 1 queued BEFORE batch s is handed over, so that it runs while step s
    computes (copier: backend.HostToDevice; on the CPU it hands the arrays back unchanged).

    Reads one batch ahead of the caller. The targets stay NumPy: matching (matching.py) sends
    a whole batch's ground truth to the device in two copies of its own."""
    it = iter(batches)
    try:
        images, targets = next(it)
    except StopIteration:
        return
    pending = (copier.start(images), targets)
    for images, targets in it:
        ahead = (copier.start(images), targets)      # batch s + 1, queued before step s
        yield copier.finish(pending[0]), pending[1]  # batch s: the step runs
        pending = ahead
    yield copier.finish(pending[0]), pending[1]


def shard_bounds(n, rank, size):
    """(lo, hi): the positions of part `rank` of `size` of n items, np.array_split's parts
    (the first n % size parts have one item more)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class EvalLoader:
    """Evaluation batches: every image once, in dataset order, resized only.

    Yields (images (N, 3, S, S) float32, infos) with one dict per image:
    {"index", "image_id", "boxes" (G, 4), "labels" (G,), "difficult" (G,) bool,
     "width", "height"}. Open the dataset with keep_difficult=True so that difficult objects
    are there to be ignored by the metric. Unreadable images are skipped and counted.
    """

    def __init__(self, dataset, batch_size, size, preprocess, num_workers=2):
        self.dataset, self.batch_size, self.size = dataset, batch_size, size
        self.preprocess = _preprocess_dict(preprocess)
        self.num_workers = num_workers
        self._log = _SkipLog()

    @property
    def skipped(self) -> int:
        return self._log.count

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def _load(self, i):
        try:
            s = self.dataset[i]
            info = {"index": i, "image_id": s.image_id, "boxes": s.boxes, "labels": s.labels,
                    "difficult": s.difficult, "height": s.image.shape[0],
                    "width": s.image.shape[1]}
            return resize(s.image, self.size).astype(np.float32), info
        except SKIPPED_ERRORS as e:
            return e

    def __iter__(self):
        prefetcher = _Prefetcher(self.num_workers)
        results = prefetcher.map(self._load, range(len(self.dataset)), 2 * self.batch_size)
        try:
            for start in range(0, len(self.dataset), self.batch_size):
                images, infos = [], []
                for i in range(start, min(start + self.batch_size, len(self.dataset))):
                    r = next(results)
                    if isinstance(r, Exception):
                        self._log.skip(i, r)
                    else:
                        images.append(r[0])
                        infos.append(r[1])
                if images:
                    yield preprocess_images(np.stack(images), self.preprocess), infos
        finally:
            prefetcher.close()
