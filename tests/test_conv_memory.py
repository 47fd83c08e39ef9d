"""The conv's memory plan: keeping the input (columns rebuilt in backward) or the columns,
and the chunked workspace, give bit-identical results; the cache holds what it says."""
import numpy as np
import pytest

from minissd.gradcheck import check_gradients
from minissd.ops.conv import (chunk_images, conv2d_backward, conv2d_forward, conv_memory,
                              set_conv_memory)
from test_ops import CONV_CASES, _ids


@pytest.fixture
def restore_conv_memory():
    old = conv_memory()
    yield
    set_conv_memory(**old)


def _run(x, w, b, dy, s, p, d, keep, workspace, need_dx=True):
    set_conv_memory(workspace_bytes=workspace)
    y, cache = conv2d_forward(x, w, b, s, p, d, keep=keep)
    return (y,) + conv2d_backward(dy, cache, need_dx)


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_keep_input_and_chunks_are_bit_identical_to_keep_cols(rng, case, restore_conv_memory):
    n, c, h, wd, f, k, s, p, d = case
    n = 3                                          # chunks of 1, 2 (and 1) images and of 3
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    y0, _ = conv2d_forward(x, w, b, s, p, d, keep="cols")
    dy = rng.standard_normal(y0.shape).astype(np.float32)
    ref = _run(x, w, b, dy, s, p, d, "cols", 2**40)           # the whole batch at once
    per_image = c * k * k * y0.shape[2] * y0.shape[3] * 4
    for keep in ("input", "cols"):
        for workspace in (1, 2 * per_image, 2**40):
            got = _run(x, w, b, dy, s, p, d, keep, workspace)
            for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
                assert g.dtype == r.dtype and g.shape == r.shape
                np.testing.assert_array_equal(g, r, err_msg=f"{name} {keep} {workspace}")
            _, dx, dw, db = _run(x, w, b, dy, s, p, d, keep, workspace, need_dx=False)
            assert dx is None
            np.testing.assert_array_equal(dw, ref[2])


def test_the_cache_keeps_the_input_or_the_columns(rng):
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    _, cache = conv2d_forward(x, w, None, 1, 1, keep="input")
    assert cache.cols is None and cache.x is x
    _, cache = conv2d_forward(x, w, None, 1, 1, keep="cols")
    assert cache.x is None and cache.cols.shape == (2, 4 * 9, 81)
    assert cache.cols.nbytes == 9 * x.nbytes        # what keeping the input saves, 3x3 conv


def test_gradcheck_with_one_image_per_chunk(rng, restore_conv_memory):
    set_conv_memory(keep="input", workspace_bytes=1)
    x, w, b = rng.standard_normal((3, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), \
        rng.standard_normal(3)
    y, cache = conv2d_forward(x, w, b, 2, 1, 1)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    errs = check_gradients(lambda: conv2d_forward(x, w, b, 2, 1, 1)[0],
                           {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, dy,
                           num_checks=60, rng=rng)
    assert max(errs.values()) < 1e-6, errs


def test_settings_are_checked_and_restored(restore_conv_memory):
    with pytest.raises(ValueError, match="keep"):
        set_conv_memory(keep="columns")
    with pytest.raises(ValueError, match="workspace"):
        set_conv_memory(workspace_bytes=0)
    old = set_conv_memory(keep="cols", workspace_bytes=1000)
    assert conv_memory() == {"keep": "cols", "workspace_bytes": 1000}
    set_conv_memory(**old)
    assert conv_memory() == old
    with pytest.raises(ValueError, match="keep"):
        conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), None, keep="x")


def test_chunk_images():
    assert chunk_images(32, 100, 1000) == 10
    assert chunk_images(32, 2000, 1000) == 1          # at least one image
    assert chunk_images(4, 1, 1000) == 4              # at most the batch
