"""The two optimizers, SGD with momentum and Adam, and SSD's learning-rate schedule.

SGD is SSD's published recipe (ssd300 on VOC); Adam is what the default training run uses
(`python -m minissd.train`: the `tiny` config from scratch on the synthetic set). SGD's update
is the Caffe / PyTorch form, for every parameter w with gradient g:

    g = g + weight_decay * w          # L2 penalty (weight_decay / 2) * ||w||^2, folded into g
    v = momentum * v + g              # velocity (one buffer per parameter, starts at 0)
    w = w - lr * v

Adam's (torch.optim.Adam's form, weight decay folded into g the same way) is in its class
docstring. Weight decay applies to EVERY parameter, biases and the L2Norm scale included, as
in ssd.pytorch and Caffe SSD's solver; this keeps the optimizers free of name rules.

Both share one interface: opt.step(model.params(), model.grads, lr), state_dict() and
load_state_dict(). Parameters are updated in place, so the arrays the model owns (and any view
of them) see the new values. The optimizers work on NumPy and CuPy alike: their buffers are
created with the array module of each parameter. Optional gradient clipping rescales all
gradients together when their global L2 norm exceeds `clip_norm`; it uses array arithmetic
only (no host sync).

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


def _clip_scale(grads, clip_norm):
    """min(1, clip_norm / ||g||) over all gradients together, as a 0-d array (no sync)."""
    xp = get_array_module(grads[0])
    total = xp.sqrt(sum(xp.sum(g.astype(xp.float64) ** 2) for g in grads))
    return xp.minimum(1.0, clip_norm / (total + 1e-12)).astype(grads[0].dtype)


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

    def step(self, params, grads, lr, lr_scale=None):
        """One update of every parameter in `params` with learning rate `lr` (a float);
        lr_scale {name: factor}: those parameters step with lr * factor (fine-tuning's body)."""
        params = list(params)
        scale = (_clip_scale([grads[name] for name, _ in params], self.clip_norm)
                 if self.clip_norm else None)
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
            w -= (lr if lr_scale is None else lr * lr_scale.get(name, 1.0)) * v

    def state_dict(self):
        """{"momentum": 0-d array, "weight_decay": ..., "velocity.<name>": numpy array, ...}.

        All values are NumPy arrays, so the dict goes straight into an .npz checkpoint.
        """
        state = {"momentum": np.asarray(self.momentum),
                 "weight_decay": np.asarray(self.weight_decay)}
        for name, v in self.velocity.items():
            state["velocity." + name] = to_numpy(v).copy()   # a copy, never the live buffer
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
                value = get_array_module(w).array(value, dtype=w.dtype)     # a copy
            else:
                value = np.array(value)
            self.velocity[name] = value


class Adam:
    """Adam (Kingma & Ba, 2015) with L2 weight decay folded into the gradient, as
    torch.optim.Adam(weight_decay=...). Same interface as SGD.

        g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g            # first moment
        v = beta2 * v + (1 - beta2) * g^2          # second moment
        w = w - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    SSD's published recipe is SGD (above). The `tiny` config, trained from scratch on the
    synthetic set within minutes, uses Adam: per-parameter step sizes get the narrow network
    off the loss plateau where SGD leaves it predicting the same boxes for every image.
    """

    def __init__(self, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=5e-4, clip_norm=None):
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.t = 0                  # steps taken (for the bias corrections)
        self.m, self.v = {}, {}     # name -> array like the parameter

    def step(self, params, grads, lr, lr_scale=None):
        """One update of every parameter in `params` with learning rate `lr` (a float);
        lr_scale as for SGD.step."""
        params = list(params)
        scale = (_clip_scale([grads[name] for name, _ in params], self.clip_norm)
                 if self.clip_norm else None)
        self.t += 1
        c1, c2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for name, w in params:
            if name not in grads:
                raise KeyError(f"optim.Adam.step: no gradient for parameter {name!r}; "
                               "run model.backward() before the optimizer step")
            g = grads[name] if scale is None else grads[name] * scale
            # g = g + wd * w
            if self.weight_decay:
                g = g + self.weight_decay * w
            if name not in self.m:
                xp = get_array_module(w)
                self.m[name], self.v[name] = xp.zeros_like(w), xp.zeros_like(w)
            m, v = self.m[name], self.v[name]
            # m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            # w = w - lr * mhat / (sqrt(vhat) + eps)
            xp = get_array_module(w)
            lr_w = lr if lr_scale is None else lr * lr_scale.get(name, 1.0)
            w -= (lr_w / c1) * m / (xp.sqrt(v / c2) + self.eps)

    def state_dict(self):
        """Hyper-parameters, the step count and the moments, all as NumPy arrays."""
        state = {"adam": np.asarray([self.beta1, self.beta2, self.eps, self.weight_decay]),
                 "t": np.asarray(self.t)}
        for name in self.m:
            state["m." + name] = to_numpy(self.m[name]).copy()    # copies, not the live buffers
            state["v." + name] = to_numpy(self.v[name]).copy()
        return state

    def load_state_dict(self, state, like=None):
        """Restore from state_dict(); `like` as for SGD.load_state_dict."""
        self.beta1, self.beta2, self.eps, self.weight_decay = (float(x) for x in state["adam"])
        self.t = int(state["t"])
        self.m, self.v = {}, {}
        for key, value in state.items():
            kind, _, name = key.partition(".")
            if kind not in ("m", "v") or not name:
                continue
            if like is not None:
                if name not in like or tuple(like[name].shape) != tuple(value.shape):
                    raise ValueError(f"Adam state {key!r} {tuple(value.shape)} does not fit the "
                                     "model's parameters; was the checkpoint made with another "
                                     "config?")
                value = get_array_module(like[name]).array(value, dtype=like[name].dtype)
            else:
                value = np.array(value)
            (self.m if kind == "m" else self.v)[name] = value
