"""What keeps a GPU training step free of host syncs, tested on the CPU: the device prefetch
(the copy of batch s + 1 queued before batch s is handed over), the no-op copier on NumPy, the
one-sync NaN check of a checkpoint; and on a GPU (marked `gpu`), the pinned asynchronous copy."""
import numpy as np
import pytest

from minissd import backend
from minissd.config import tiny
from minissd.data.loader import to_device_prefetched
from minissd.model import SSD
from minissd.training.checkpoint import params_finite


def _batches(n):
    return [(np.full((2, 3, 4, 4), s, np.float32), [(np.zeros((1, 4), np.float32),
                                                     np.ones(1, np.int64))]) for s in range(n)]


def test_prefetch_on_the_cpu_hands_the_same_arrays_back_in_order():
    batches = _batches(4)
    out = list(to_device_prefetched(iter(batches), backend.HostToDevice()))
    assert len(out) == 4
    for (x, t), (x0, t0) in zip(out, batches):
        assert x is x0 and t is t0                # no copy at all on the CPU


class _Recorder:
    """A copier that records the order of the calls (the logic of the overlap)."""

    def __init__(self):
        self.calls = []

    def start(self, host):
        self.calls.append(("start", int(host[0, 0, 0, 0])))
        return host

    def finish(self, ticket):
        self.calls.append(("finish", int(ticket[0, 0, 0, 0])))
        return ticket


def test_prefetch_queues_the_next_copy_before_handing_over_a_batch():
    rec = _Recorder()
    seen = []
    for x, _ in to_device_prefetched(iter(_batches(3)), rec):
        s = int(x[0, 0, 0, 0])
        seen.append(s)
        if s < 2:                                 # batch s + 1's copy is already queued
            assert ("start", s + 1) in rec.calls
        assert rec.calls[-1] == ("finish", s)
    assert seen == [0, 1, 2]
    assert rec.calls == [("start", 0), ("start", 1), ("finish", 0), ("start", 2),
                         ("finish", 1), ("finish", 2)]


def test_prefetch_of_nothing_is_nothing():
    assert list(to_device_prefetched(iter([]), _Recorder())) == []


def test_params_finite_finds_one_nan_in_one_check():
    model = SSD(tiny(), rng=0)
    assert params_finite(model)
    name, w = model.params()[7]
    w.reshape(-1)[3] = np.nan
    assert not params_finite(model)
    w.reshape(-1)[3] = np.inf
    assert not params_finite(model)
    w.reshape(-1)[3] = 0.0
    assert params_finite(model)


@pytest.mark.gpu
def test_pinned_copy_on_a_side_stream_gives_the_same_arrays():
    backend.set_device("cuda")
    try:
        xp = backend.current_device_xp()
        assert isinstance(backend.pinned_empty((2, 3), np.float32), np.ndarray)
        copier = backend.HostToDevice()
        batches = [(np.random.default_rng(s).standard_normal((4, 3, 64, 64)).astype(np.float32),
                    []) for s in range(5)]
        busy = xp.ones((2048, 2048), np.float32)
        got = []
        for x, _ in to_device_prefetched(iter(batches), copier):
            busy = busy @ busy / 2048                 # work on the current stream meanwhile
            got.append(backend.to_numpy(x * 1))       # read after the stream waited the copy
        for g, (h, _) in zip(got, batches):
            np.testing.assert_array_equal(g, h)
        assert copier.stream is not None and copier.count == 5
    finally:
        backend.set_device("cpu")
