"""Numerical gradients by central differences, to check hand-written backward passes.

The check (cs231n's): pick a random upstream gradient `dout` with the output's shape, form the
scalar L = sum(f(x) * dout), and compare the analytic dL/dx (the backward pass fed `dout`)
with the numerical one,

    dL/dx[i] ~= (L(x + h e_i) - L(x - h e_i)) / (2 h)

coordinate by coordinate. A random `dout` (not all ones) catches permuted or transposed
gradients that a plain `.sum()` would hide.

Everything here runs in float64: with h = 1e-5 the difference quotient has an error of about
h^2 (truncation) + 1e-16 / h (rounding), ~1e-10, far below float32's 1e-7 resolution. Inputs are
perturbed IN PLACE and restored, so `f` may read them through a closure (a layer's params).

Functions:
    rel_error(x, y)                                    max |x - y| / max(1e-8, |x| + |y|)
    numerical_gradient(f, x, dout=None, h=1e-5)        full numerical dL/dx, f(x) -> output
    grad_check_sparse(f, x, analytic, dout=None, ...)  max rel error over random coordinates
    check_gradients(f, params, grads, dout=None, ...)  the same for several tensors, f() -> output

`f` may return one array or a tuple of arrays (then `dout` is a tuple of the same shapes);
`dout=None` means the output is a scalar loss (dout = 1). NumPy and CuPy arrays both work.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_numpy


def rel_error(x, y) -> float:
    """Largest elementwise relative error max |x - y| / max(1e-8, |x| + |y|), as a float.

    x, y: arrays of the same shape (NumPy or CuPy), or scalars.
    """
    x = to_numpy(x).astype(np.float64)
    y = to_numpy(y).astype(np.float64)
    if x.shape != y.shape:
        raise ValueError(f"gradcheck.rel_error: shapes differ, {x.shape} vs {y.shape}")
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _as_tuple(v):
    return v if isinstance(v, (tuple, list)) else (v,)


def _projected_loss(out, dout) -> float:
    """L = sum over outputs of sum(out * dout); dout None means out is already the scalar L."""
    if dout is None:
        return float(sum(float(o) if np.ndim(o) == 0 else float(o.sum()) for o in _as_tuple(out)))
    outs, douts = _as_tuple(out), _as_tuple(dout)
    if len(outs) != len(douts):
        raise ValueError(f"gradcheck: f returned {len(outs)} outputs but dout has {len(douts)}; "
                         "pass one dout array per output (a tuple in the same order)")
    total = 0.0
    for o, d in zip(outs, douts):
        if o.shape != d.shape:
            raise ValueError(f"gradcheck: an output has shape {o.shape} but its dout has "
                             f"{d.shape}; make dout with the output's shape")
        total += float((o * d).sum())
    return total


def _check_float64(x, name="x"):
    if x.dtype != np.float64:
        raise TypeError(f"gradcheck: {name} is {x.dtype}; gradient checks need float64 "
                        f"(central differences with h=1e-5 are below float32 precision). "
                        f"Build the layer/inputs in float64, e.g. {name}.astype('float64').")
    if not x.flags.c_contiguous:
        raise ValueError(f"gradcheck: {name} must be C-contiguous (it is perturbed in place "
                         "through a flat view); pass an ascontiguousarray copy")


def _numerical_at(f, x, flat_indices, dout, h):
    """Numerical dL/dx at the given flat indices of x (x perturbed in place, then restored)."""
    flat = x.reshape(-1)            # a view: writing it writes x
    grads = np.empty(len(flat_indices), dtype=np.float64)
    for k, i in enumerate(flat_indices):
        i = int(i)
        old = float(flat[i])
        flat[i] = old + h
        plus = _projected_loss(f(), dout)
        flat[i] = old - h
        minus = _projected_loss(f(), dout)
        flat[i] = old
        grads[k] = (plus - minus) / (2.0 * h)
    return grads


def numerical_gradient(f, x, dout=None, h=1e-5):
    """Numerical gradient of L = sum(f(x) * dout) with respect to every element of x.

    Inputs:
        f:    function x -> output array (or tuple of arrays); called 2 * x.size times
        x:    float64 array of any shape, C-contiguous; perturbed in place and restored
        dout: upstream gradient, shaped like f(x) (tuple for tuple outputs); None if f returns
              a scalar
        h:    step of the central difference
    Returns:
        dx: array shaped like x (same array module), float64
    """
    _check_float64(x)
    xp = get_array_module(x)
    g = _numerical_at(lambda: f(x), x, range(x.size), dout, h)
    return xp.asarray(g.reshape(x.shape))


def _sample_indices(size, num_checks, rng):
    if num_checks is None or num_checks >= size:
        return np.arange(size)
    rng = np.random.default_rng(0) if rng is None else rng
    return rng.choice(size, size=num_checks, replace=False)


def grad_check_sparse(f, x, analytic_grad, dout=None, num_checks=20, h=1e-5, rng=None):
    """Compare an analytic gradient with central differences at random coordinates of x.

    Inputs:
        f:             function x -> output (array or tuple of arrays)
        x:             float64 array, perturbed in place and restored
        analytic_grad: dL/dx from the backward pass, shaped like x
        dout:          upstream gradient fed to the backward pass (None for a scalar output)
        num_checks:    number of coordinates sampled without replacement (None: all of them)
        h:             finite-difference step
        rng:           numpy Generator choosing the coordinates (default seed 0)
    Returns:
        the largest relative error (float) over the sampled coordinates
    """
    return check_gradients(lambda: f(x), {"x": x}, {"x": analytic_grad}, dout,
                           num_checks=num_checks, h=h, rng=rng)["x"]


def check_gradients(f, params, grads, dout=None, num_checks=None, h=1e-5, rng=None):
    """Check several tensors at once: each entry of `params` is perturbed in place in turn.

    Inputs:
        f:          function of no arguments that recomputes the output from the current
                    contents of the tensors (e.g. lambda: layer.forward(x))
        params:     {name: float64 array} the tensors to check (inputs or parameters)
        grads:      {name: analytic gradient}, same keys and shapes (computed BEFORE calling
                    this, since calling f may overwrite caches)
        dout:       upstream gradient of f's output (None if f returns a scalar loss)
        num_checks: coordinates sampled per tensor (None: every coordinate)
        h:          finite-difference step
        rng:        numpy Generator choosing coordinates (default seed 0)
    Returns:
        {name: largest relative error over that tensor's sampled coordinates}
    """
    errors = {}
    for name, p in params.items():
        if name not in grads:
            raise KeyError(f"gradcheck.check_gradients: no analytic gradient for {name!r}; "
                           f"grads has {sorted(grads)}")
        _check_float64(p, name)
        g = grads[name]
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"gradcheck: grads[{name!r}] has shape {g.shape}, "
                             f"but the tensor has {p.shape}")
        idx = _sample_indices(p.size, num_checks, rng)
        numeric = _numerical_at(f, p, idx, dout, h)
        analytic = to_numpy(g).reshape(-1)[idx]
        errors[name] = rel_error(numeric, analytic)
    return errors
