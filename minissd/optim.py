"""SGD with momentum and weight decay, and SSD's learning-rate schedule.

The update is the Caffe / PyTorch form, for every parameter w with gradient g:

    g = g + weight_decay * w          # L2 penalty (weight_decay / 2) * ||w||^2, folded into g
    v = momentum * v + g              # velocity (one buffer per parameter, starts at 0)
    w = w - lr * v

Weight decay applies to EVERY parameter, biases and the L2Norm scale included, as in
ssd.pytorch and Caffe SSD's solver; this keeps the optimizer free of name rules.

Parameters are updated in place, so the arrays the model owns (and any view of them) see the
new values. The optimizer works on NumPy and CuPy alike: its buffers are created with the
array module of each parameter. Optional gradient clipping rescales all gradients together
when their global L2 norm exceeds `clip_norm`; it uses array arithmetic only (no host sync).

The schedule (`learning_rate`) is a pure function of the step, so a resumed run uses exactly
the rate an uninterrupted one would.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_numpy


def learning_rate(step, base_lr, warmup_steps=0, milestones=(), gamma=0.1, warmup_factor=1e-3):
    """Learning rate at iteration `step` (0-based): linear warm-up, then step decay.

    step:          the iteration about to run (0, 1, 2, ...)
    base_lr:       the rate after warm-up and before the first milestone
    warmup_steps:  iterations of warm-up; the rate goes linearly from base_lr * warmup_factor
                   at step 0 to base_lr at step warmup_steps
    milestones:    steps at which the rate is multiplied by gamma (SSD300: 80000, 100000)
    returns        float learning rate

    Example (SSD300 recipe): learning_rate(90000, 1e-3, 500, (80000, 100000)) == 1e-4.
    """
    lr = base_lr * gamma ** sum(step >= m for m in milestones)
    if warmup_steps > 0 and step < warmup_steps:
        alpha = step / warmup_steps
        lr *= warmup_factor * (1 - alpha) + alpha
    return float(lr)


class SGD:
    """SGD with momentum and weight decay (Caffe / PyTorch form, see the module docstring).

    opt = SGD(momentum=0.9, weight_decay=5e-4)
    opt.step(model.params(), model.grads, lr)      # updates the parameters in place

    params:  iterable of (name, array) - the arrays are modified in place
    grads:   {name: array} with the same shapes
    """

    def __init__(self, momentum=0.9, weight_decay=5e-4, clip_norm=None):
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.velocity = {}          # name -> array like the parameter (created at first step)

    def step(self, params, grads, lr):
        """One update of every parameter in `params` with learning rate `lr` (a float)."""
        params = list(params)
        scale = self._clip_scale([grads[name] for name, _ in params]) if self.clip_norm else None
        for name, w in params:
            if name not in grads:
                raise KeyError(f"optim.SGD.step: no gradient for parameter {name!r}; "
                               "run model.backward() before the optimizer step")
            g = grads[name]
            if scale is not None:
                g = g * scale
            # g = g + wd * w   (weight decay as an L2 penalty on the loss)
            if self.weight_decay:
                g = g + self.weight_decay * w
            v = self.velocity.get(name)
            if v is None:
                xp = get_array_module(w)
                v = self.velocity[name] = xp.zeros_like(w)
            # v = mu * v + g
            v *= self.momentum
            v += g
            # w = w - lr * v
            w -= lr * v

    def _clip_scale(self, grads):
        """min(1, clip_norm / ||g||) over all gradients together, as a 0-d array (no sync)."""
        xp = get_array_module(grads[0])
        total = xp.sqrt(sum(xp.sum(g.astype(xp.float64) ** 2) for g in grads))
        return xp.minimum(1.0, self.clip_norm / (total + 1e-12)).astype(grads[0].dtype)

    def state_dict(self):
        """{"momentum": 0-d array, "weight_decay": ..., "velocity.<name>": numpy array, ...}.

        All values are NumPy arrays, so the dict goes straight into an .npz checkpoint.
        """
        state = {"momentum": np.asarray(self.momentum), "weight_decay": np.asarray(self.weight_decay)}
        for name, v in self.velocity.items():
            state["velocity." + name] = to_numpy(v)
        return state

    def load_state_dict(self, state, like=None):
        """Restore from state_dict(). `like` ({name: array}, e.g. dict(model.params())) puts each
        velocity on the device and dtype of its parameter; without it they stay NumPy arrays."""
        self.momentum = float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        self.velocity = {}
        for key, value in state.items():
            if not key.startswith("velocity."):
                continue
            name = key[len("velocity."):]
            if like is not None:
                if name not in like:
                    raise KeyError(f"optimizer state has a velocity for {name!r}, which the model "
                                   "does not have; was the checkpoint made with another config?")
                w = like[name]
                if tuple(w.shape) != tuple(value.shape):
                    raise ValueError(f"optimizer velocity {name!r} has shape {tuple(value.shape)}, "
                                     f"the parameter has {tuple(w.shape)}; wrong checkpoint?")
                value = get_array_module(w).asarray(value, dtype=w.dtype)
            else:
                value = np.array(value)
            self.velocity[name] = value
