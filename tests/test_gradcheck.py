"""minissd.gradcheck: the numerical gradient and the relative error it is judged by."""
import numpy as np
import pytest

from minissd.gradcheck import check_gradients, grad_check_sparse, numerical_gradient, rel_error


def test_rel_error_known_values():
    assert rel_error(np.array([1.0]), np.array([1.0])) == 0.0
    # |3 - 1| / (3 + 1) = 0.5
    assert rel_error(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.5)
    # both zero: denominator floored at 1e-8, so no NaN
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


def test_numerical_gradient_of_known_function(xp, rng):
    # f(x) = x**3 elementwise, so dL/dx = 3 x^2 * dout
    x = xp.asarray(rng.standard_normal((3, 4)))
    dout = xp.asarray(rng.standard_normal((3, 4)))
    num = numerical_gradient(lambda v: v ** 3, x, dout)
    assert type(num) is type(x) and num.shape == x.shape
    assert rel_error(num, 3 * x ** 2 * dout) < 1e-8


def test_numerical_gradient_restores_input(xp, rng):
    x = xp.asarray(rng.standard_normal(5))
    before = x.copy()
    numerical_gradient(lambda v: xp.sin(v), x, xp.ones(5))
    assert bool((x == before).all())


def test_sparse_check_catches_a_wrong_gradient(xp, rng):
    # f(x) = A @ x, dL/dx = A^T dout; the transpose-free mistake A dout must be caught
    a = xp.asarray(rng.standard_normal((6, 6)))
    x = xp.asarray(rng.standard_normal(6))
    dout = xp.asarray(rng.standard_normal(6))
    good = grad_check_sparse(lambda v: a @ v, x, a.T @ dout, dout, num_checks=4)
    bad = grad_check_sparse(lambda v: a @ v, x, a @ dout, dout, num_checks=4)
    assert good < 1e-8
    assert bad > 1e-3


def test_check_gradients_tuple_outputs_and_scalar(xp, rng):
    w = xp.asarray(rng.standard_normal((4, 3)))
    b = xp.asarray(rng.standard_normal(3))
    x = xp.asarray(rng.standard_normal((2, 4)))
    d1 = xp.asarray(rng.standard_normal((2, 3)))
    d2 = xp.asarray(rng.standard_normal((2, 3)))
    # two outputs: y1 = x w + b, y2 = 2 y1
    f = lambda: (x @ w + b, 2 * (x @ w + b))   # noqa: E731
    dy = d1 + 2 * d2
    errs = check_gradients(f, {"w": w, "b": b, "x": x},
                           {"w": x.T @ dy, "b": dy.sum(0), "x": dy @ w.T}, (d1, d2))
    assert set(errs) == {"w", "b", "x"} and max(errs.values()) < 1e-8
    # scalar output, dout None
    errs = check_gradients(lambda: (x ** 2).sum(), {"x": x}, {"x": 2 * x})
    assert errs["x"] < 1e-8


def test_float32_is_refused(xp):
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda v: v, xp.ones(3, dtype=xp.float32), xp.ones(3, dtype=xp.float32))
