"""minissd.parallel.ThreadedSSD: the batch split over threads gives the whole batch's result."""
import dataclasses

import numpy as np
import pytest

from minissd import backend
from minissd.model import SSD
from minissd.parallel import ThreadedSSD
from test_model import micro_config


def _random_like(rng, a):
    return backend.current_device_xp().asarray(rng.normal(size=a.shape))


def test_without_batch_norm_the_threads_give_the_single_model_gradient(rng, xp):
    cfg = micro_config()
    single = SSD(cfg, rng=0, dtype=np.float64)
    par = ThreadedSSD(SSD(cfg, rng=0, dtype=np.float64), 2)
    x = xp.asarray(rng.normal(size=(5, 3, 30, 30)))              # 5 = 3 + 2: uneven slices
    loc1, conf1 = single.forward(x)
    loc2, conf2 = par.forward(x)
    np.testing.assert_allclose(backend.to_numpy(loc2), backend.to_numpy(loc1), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(conf2), backend.to_numpy(conf1), rtol=1e-12)
    dloc, dconf = _random_like(rng, loc1), _random_like(rng, conf1)
    dx1 = single.backward(dloc, dconf)
    dx2 = par.backward(dloc, dconf)
    np.testing.assert_allclose(backend.to_numpy(dx2), backend.to_numpy(dx1), rtol=1e-10,
                               atol=1e-14)
    assert set(par.grads) == set(single.grads)
    for name, g in single.grads.items():
        np.testing.assert_allclose(backend.to_numpy(par.grads[name]), backend.to_numpy(g),
                                   rtol=1e-10, atol=1e-14, err_msg=name)
    assert par.backward(dloc, dconf, need_dx=False) is None
    par.close()


def test_batch_norm_uses_each_slice_and_running_stats_are_averaged(rng, xp):
    cfg = dataclasses.replace(micro_config(), batch_norm=True)
    ref_a, ref_b = SSD(cfg, rng=0, dtype=np.float64), SSD(cfg, rng=0, dtype=np.float64)
    par = ThreadedSSD(SSD(cfg, rng=0, dtype=np.float64), 2)
    x = xp.asarray(rng.normal(size=(4, 3, 30, 30)))
    loc, conf = par.forward(x)
    la, ca = ref_a.forward(x[:2])
    lb, cb = ref_b.forward(x[2:])
    np.testing.assert_allclose(backend.to_numpy(loc),
                               np.concatenate([backend.to_numpy(la), backend.to_numpy(lb)]),
                               rtol=1e-12)
    dloc, dconf = _random_like(rng, loc), _random_like(rng, conf)
    par.backward(dloc, dconf, need_dx=False)
    ref_a.backward(dloc[:2], dconf[:2])
    ref_b.backward(dloc[2:], dconf[2:])
    for name, g in ref_a.grads.items():
        np.testing.assert_allclose(backend.to_numpy(par.grads[name]),
                                   backend.to_numpy(g + ref_b.grads[name]), rtol=1e-10,
                                   atol=1e-14, err_msg=name)
    par.sync_buffers()
    ra, rb = dict(ref_a.buffers()), dict(ref_b.buffers())
    assert ra, "the batch-norm config has running statistics"
    for r in par.replicas:
        for name, buf in r.buffers():
            np.testing.assert_allclose(backend.to_numpy(buf),
                                       backend.to_numpy((ra[name] + rb[name]) / 2), rtol=1e-12)
    par.close()


def test_replicas_share_the_parameters_and_small_batches_use_fewer_threads(rng, xp):
    cfg = micro_config()
    model = SSD(cfg, rng=0, dtype=np.float64)
    par = ThreadedSSD(model, 3)
    name, w = model.params()[0]
    w *= 0.5                                                      # an optimizer's in-place update
    for replica in par.replicas[1:]:
        assert dict(replica.params())[name] is w
    x = xp.asarray(rng.normal(size=(1, 3, 30, 30)))
    loc, conf = par.forward(x)
    assert par.threads_used == 1
    ref = model.forward(x)[0]
    np.testing.assert_allclose(backend.to_numpy(loc), backend.to_numpy(ref), rtol=1e-12)
    par.backward(_random_like(rng, loc), _random_like(rng, conf), need_dx=False)
    assert set(par.grads) == {n for n, _ in model.params()}
    par.close()
    with pytest.raises(ValueError, match="num_threads"):
        ThreadedSSD(model, 0)
