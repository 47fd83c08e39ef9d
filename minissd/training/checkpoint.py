"""Run checkpoints: what last.npz / best.npz hold, reading one back for --resume, and the
checks that keep a NaN or a half-applied update out of them.

A run checkpoint holds the parameters, the optimizer's state (SGD's momentum buffers or Adam's
moment estimates and step count), the step, the settings, the config and the data spec, so
evaluate, detect and --resume need nothing else.
"""
from __future__ import annotations

import os

from .. import backend
from ..inference import CheckpointError
from ..weights import load_checkpoint, save_checkpoint

FORMAT = "minissd-train-1"       # meta["format"] of a checkpoint written by minissd.train


class NonFiniteLoss(RuntimeError):
    """The loss (or a parameter) became NaN or infinite."""


def save_run_checkpoint(path, model, opt, step, settings, config, spec, best_map):
    """Parameters + optimizer + everything needed to rebuild and resume (atomic write)."""
    meta = {"format": FORMAT, "step": int(step), "config": config.to_dict(),
            "settings": settings.to_dict(), "data": spec,
            "loader": {"seed": settings.seed, "next_step": int(step)},
            "best_map": best_map}
    save_checkpoint(path, model.state_dict(), meta, opt.state_dict())


def load_run_checkpoint(path):
    """(arrays, meta) of a checkpoint written by minissd.train; CheckpointError otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file; pass the last.npz or best.npz that "
                              "python -m minissd.train wrote")
    try:
        arrays, meta = load_checkpoint(path)
    except Exception as e:          # not a zip, truncated, no metadata, ...
        raise CheckpointError(f"{path}: not a readable minissd checkpoint ({type(e).__name__}: "
                              f"{e}); pass a last.npz or best.npz written by "
                              "python -m minissd.train") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by python -m minissd.train "
                              "(no training state inside)")
    return arrays, meta


def params_finite(model):
    """True when every parameter is finite. Each parameter's check is reduced on its device
    to one flag, the flags are stacked and reduced again, and only that one bool comes back:
    one host sync for the whole model (rather than one per parameter array)."""
    flags = [backend.get_array_module(w).isfinite(w).all() for _, w in model.params()]
    if not flags:
        return True
    xp = backend.get_array_module(flags[0])
    return bool(xp.stack(flags).all())                  # host sync (needed): the answer


def checked_save(save, model, path, step):
    """save(path, step) after checking that no parameter is NaN or infinite."""
    if not params_finite(model):
        raise NonFiniteLoss(f"step {step} (a parameter is not finite)")
    save(path, step)


def save_on_interrupt(save, model, last_path, completed, updating):
    """Ctrl-C: save the state after the last completed step, when it is sound. Returns the
    message for the user."""
    hint = f"python -m minissd.train --resume {last_path}"
    if updating or not params_finite(model):
        # interrupted in the middle of a parameter update: this state belongs to no step
        return (f"\nminissd.train: interrupted during an update; nothing saved. Resume from "
                f"the last checkpoint: {hint}")
    save(last_path, completed)
    return (f"\nminissd.train: interrupted; saved the state after step {completed} to "
            f"{last_path}.\n  resume with: {hint}")
