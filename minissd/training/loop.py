"""The training run: set up, then per step: step (forward, backward, update), log, evaluate,
save. `run` reads top to bottom; `Trainer` holds the run's state and does each named step.

Exact resume: the batch of step s is a pure function of (seed, s) (data/loader.py's
DataLoader.batches(start_step)), the model's init a function of the seed, and the learning rate
a function of s. So on the CPU a run stopped after step k and resumed gives bit-identical
parameters to one that never stopped.

Stopping: Ctrl-C lets the current step finish, saves last.npz and returns 130 (a second Ctrl-C
interrupts at once); a NaN or infinite loss stops without saving and returns 3.

Data parallelism (comm, minissd/distributed.py, more than one process): every rank runs this
same loop on its shard of each batch, with synchronized batch norm, the loss normalised by the
global batch's positives, and the gradients, the losses and the Ctrl-C flag summed by one
all-reduce per step; so every decision (log, NaN stop, Ctrl-C, evaluate, save) is the same on
every rank. Rank 0 alone writes (metrics.jsonl, the progress bar, curves.png, checkpoints)
and evaluates while the others wait.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from typing import NamedTuple

import numpy as np

from .. import backend
from ..coco_metrics import COCO_KEYS
from ..config import SSDConfig, get_config
from ..data.choice import (CachedDataset, data_spec, make_loader, median_object_side,
                           open_split, write_split_files)
from ..data.loader import to_device_prefetched
from ..distributed import (SingleProcess, allreduce_gradients, rank0_first, select_gpu,
                           sync_batch_norm)
from ..inference import CheckpointError, evaluate_model
from ..optim import learning_rate
from ..priors import default_boxes
from ..freeze import frozen_layers, frozen_params
from . import finetune
from .build import build_model, build_optimizer, load_pretrained_vgg
from .checkpoint import (NonFiniteLoss, checked_save, save_on_interrupt,
                         save_run_checkpoint)
from .log import NullLog, RunLog
from .step import forward_backward

ESTIMATE_AFTER_STEPS = 20      # the time estimate is printed after this many measured steps
SMALL_OBJECT_PIXELS = 16       # warn when the median object is smaller (input pixels)


def run(settings, device="auto", out=None, resume=None, workers=2, progress=True, spec=None,
        comm=None):
    """Train with `settings` (a TrainSettings) into the folder `out` (default
    runs/<config>-<data>-<time>). resume: (arrays, meta) of a run checkpoint to continue from.
    spec: the data spec (data/choice.py; default: made from the settings, or the checkpoint's).
    comm: the communicator of a data-parallel run (distributed.world()); None: one process.
    Returns the exit status: 0 done, 130 after Ctrl-C, 3 when the loss became NaN."""
    trainer = Trainer(settings, device, out, resume, workers, progress, spec, comm)  # set up
    try:
        with CtrlC() as ctrl_c:
            trainer.ctrl_c = ctrl_c
            for step, (images, targets) in trainer.batches():
                trainer.step(step, images, targets)       # forward, backward, update
                done = step + 1
                due = trainer.due(done)
                if due.log:
                    trainer.log_losses(done)
                trainer.log.advance()
                trainer.estimate_time(done)
                if due.evaluate:
                    trainer.evaluate(done)
                if due.save:
                    trainer.save_last(done)
                if trainer.interrupted() and done < settings.iters:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        return trainer.stop_interrupted()
    except NonFiniteLoss as e:
        return trainer.stop_non_finite(e)
    return trainer.finish()


class Due(NamedTuple):
    """What happens after a step: a log line, an evaluation, a checkpoint."""
    log: bool             # also before every evaluation and checkpoint (the NaN check)
    evaluate: bool
    save: bool


class Trainer:
    """One run: its data (this rank's shard of each batch), model, optimizer, log, checkpoint
    paths, the step reached and the best mAP so far."""

    def __init__(self, settings, device, out, resume, workers, progress, spec=None,
                 comm=None):
        s = self.settings = settings
        comm = self.comm = comm or SingleProcess()
        self.device = backend.set_device(device)
        if comm.size > 1 and self.device == "cuda":
            select_gpu(comm)                   # one GPU per rank, NCCL between them
        arrays, meta = resume if resume is not None else (None, None)
        self.start = meta["step"] if meta else 0
        self.best_map = meta.get("best_map") if meta else None
        if spec is None:
            spec = meta["data"] if meta else data_spec(
                s.voc_root, s.config, s.num_train, s.num_val, classes=s.classes,
                image_size=s.image_size)
        self.spec = spec
        with rank0_first(comm):                # rank 0 alone generates the synthetic set
            self.train_set = open_split(self.spec, "train")
            self.val_set = open_split(self.spec, "val", keep_difficult=True)
        parent = None                           # fine-tuning: (config, state) of --weights
        if meta:
            self.config = SSDConfig.from_dict(meta["config"])
        elif s.weights:
            pconfig, pstate, self.config = finetune.checked(
                s.weights, s.prototxt, self.train_set.class_names,
                None if s.config == finetune.OWN_NETWORK else s.config, s.image_size, s.freeze)
            parent = (pconfig, pstate)
        else:
            self.config = get_config(s.config, class_names=self.train_set.class_names,
                                     image_size=s.image_size)
        if meta is None and s.matching is not None:
            self.config = dataclasses.replace(self.config, matching=s.matching)
        self.box_notes = self._data_report(meta is None)
        self.out = out or os.path.join("runs", f"{self.config.name}-{self.spec['kind']}-"
                                               f"{time.strftime('%Y%m%d-%H%M%S')}")
        if comm.size > 1:
            self.out = comm.bcast(self.out)    # rank 0's clock names the folder
        os.makedirs(self.out, exist_ok=True)
        if comm.rank == 0:
            write_split_files(self.spec, self.out)
        self.last_path = os.path.join(self.out, "last.npz")
        self.best_path = os.path.join(self.out, "best.npz")

        self.model = build_model(self.config, s.seed)
        self.opt = build_optimizer(s)
        if meta:
            try:
                self.model.load_state_dict(arrays)
                if "optim_state" in meta:
                    self.opt.load_state_dict(meta["optim_state"],
                                             like=dict(self.model.params()))
            except (KeyError, ValueError, TypeError) as e:
                raise CheckpointError(f"--resume: its arrays do not fit the config and "
                                      f"optimizer stored with them ({str(e)[:200]}); it was "
                                      "not written by python -m minissd.train") from None
        elif s.pretrained_vgg:
            self.config.preprocess = load_pretrained_vgg(self.model, s.pretrained_vgg)
        elif parent is not None:
            state, report = finetune.start_state(parent[1], parent[0], self.model)
            self.model.load_state_dict(state)
            self.finetune_lines = finetune.describe(s.weights, parent[0], self.config, report,
                                                    s.freeze, s.body_lr_mult)
            del parent, state
        # fine-tuning: frozen layers (no update, batch norm in eval mode, no backward below
        # the lowest layer that trains) and the body's learning-rate factor
        self.frozen_params = frozenset()
        if s.freeze != "none":
            frozen = frozen_layers(self.model.plan, s.freeze)
            self.model.freeze(frozen)
            self.frozen_params = frozen_params(self.model.plan, frozen)
        self.lr_scale = None
        if s.body_lr_mult != 1.0:
            self.lr_scale = {n: s.body_lr_mult for n, _ in self.model.params()
                             if not n.startswith(("loc.", "conf."))}
        if comm.size > 1:
            sync_batch_norm(self.model, comm)  # batch statistics of the global batch
        self.priors = backend.current_device_xp().asarray(default_boxes(self.config))
        train_set = CachedDataset(self.train_set) if self.spec["kind"] == "synthetic" \
            else self.train_set
        self.loader = make_loader(train_set, self.config, s.batch_size, s.augment, s.seed,
                                  workers).set_shard(comm.rank, comm.size)

        if comm.rank == 0:
            self.print_plan()
        # a new run starts metrics.jsonl afresh (train --overwrite); a resumed one appends
        self.log = RunLog(self.out, self.start, s.iters, progress, fresh=meta is None) \
            if comm.rank == 0 else NullLog()
        # the steps since the last log line: summed (loss, loc, conf) on the device, count
        self.sums, self.count, self.t_log, self.good_step = None, 0, time.perf_counter(), \
            self.start
        self.completed = self.start  # steps whose parameter update is fully applied
        self.updating = False        # inside a parameter update (its state belongs to no step)
        self.lr = None
        self.ctrl_c = None           # run()'s CtrlC
        self.stop_asked = False      # Ctrl-C on some rank, as the step's all-reduce told
        self.t_first = None          # when the first step of this session ended (the estimate)
        self.val_skipped = 0         # unreadable validation images in the last evaluation

    def _data_report(self, new_run):
        """The plan's recall-ceiling line and, with --fit-boxes on a new run, default boxes
        fitted to the training objects (analysis/plan.py); lines for print_plan."""
        if self.spec["kind"] == "synthetic" and not self.settings.fit_boxes:
            return []
        from ..analysis.run_boxes import ceiling_line, fitted_config, training_boxes
        boxes = training_boxes(self.train_set)
        notes = []
        if self.settings.fit_boxes and new_run:
            self.config, line = fitted_config(self.config, boxes)
            notes.append(line)
        line = ceiling_line(self.config, boxes)
        return notes + ([line] if line else [])

    def print_plan(self):
        """What the run will do, before its first step: data, classes, steps, epochs."""
        s, c, n = self.settings, self.config, len(self.train_set)
        names = ", ".join(c.class_names[:12]) + (", ..." if len(c.class_names) > 12 else "")
        epochs = s.iters * s.batch_size / max(n, 1)
        procs = f" x {self.comm.size} processes" if self.comm.size > 1 else ""
        print(f"minissd.train: {c.name} ({c.image_size} px input) on {self.spec['kind']} data: "
              f"{n} train / {len(self.val_set)} val images, {len(c.class_names)} classes "
              f"({names})\n"
              f"minissd.train: steps {self.start}..{s.iters} of batch {s.batch_size} = "
              f"{epochs:.1f} epochs, {s.optimizer} lr {s.lr} (warm-up {s.warmup}, x0.1 at "
              f"{', '.join(map(str, s.milestones)) or 'never'}), {self.device}{procs} -> "
              f"{self.out}",
              file=sys.stderr)
        for line in (*getattr(self, "finetune_lines", ()), *self.box_notes):
            print(f"minissd.train: {line}", file=sys.stderr)
        if self.spec["kind"] != "synthetic":
            side = median_object_side(self.train_set, c.image_size)
            if side is not None and side < SMALL_OBJECT_PIXELS:
                print(f"minissd.train: warning: the median object is {side:.1f} pixels wide at "
                      f"the {c.image_size}-pixel input (objects under about "
                      f"{SMALL_OBJECT_PIXELS} pixels are found poorly); a larger --image-size, "
                      f"e.g. {2 * c.image_size}, sees them better", file=sys.stderr)

    # ------------------------------------------------------------------ the steps of run()
    def batches(self):
        """(step, (images, targets)) for the steps still to go. On a GPU the images come
        already on the device: each batch is copied from pinned memory on a side stream while
        the previous step computes (data/loader.py's to_device_prefetched)."""
        batches = self.loader.batches(self.start)
        if self.device == "cuda":
            batches = to_device_prefetched(batches, backend.HostToDevice())
        return zip(range(self.start, self.settings.iters), batches)

    def step(self, step, images, targets):
        """Forward, backward and the optimizer update of one batch."""
        s = self.settings
        self.lr = learning_rate(step, s.lr, s.warmup, s.milestones)
        x = images                             # on the device already (batches())
        batch = (x, [b for b, _ in targets], [l for _, l in targets])
        comm = self.comm if self.comm.size > 1 else None
        loss, loc_loss, conf_loss = forward_backward(self.model, self.priors, batch, self.config,
                                                     comm)
        grads = self.model.grads
        if comm is not None:
            grads, loss, loc_loss, conf_loss = self.reduce_step(grads, loss, loc_loss, conf_loss)
        self.updating = True
        if self.frozen_params or self.lr_scale is not None:     # fine-tuning
            params = [(n, w) for n, w in self.model.params() if n not in self.frozen_params]
            self.opt.step(params, grads, self.lr, lr_scale=self.lr_scale)
        else:
            self.opt.step(self.model.params(), grads, self.lr)
        self.updating, self.completed = False, step + 1
        parts = backend.get_array_module(loss).stack([loss, loc_loss, conf_loss])
        self.sums = parts if self.sums is None else self.sums + parts
        self.count += 1
        # On the CPU a number costs nothing; on a GPU float(loss) would wait for the step, so
        # there the NaN check is log_losses' (one host sync per log line, not per step).
        if self.device != "cuda" and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"step {step + 1}")

    def reduce_step(self, grads, loss, loc_loss, conf_loss):
        """Data parallelism: the gradients, the losses and the Ctrl-C flag summed over the
        ranks in one all-reduce; the whole batch's (grads, loss, loc, conf) on every rank."""
        pressed = float(self.ctrl_c is not None and self.ctrl_c.pressed)
        grads, (loss, loc_loss, conf_loss, stops) = allreduce_gradients(
            self.comm, grads, [loss, loc_loss, conf_loss, pressed])
        # host sync (needed): every rank must take the same stop decision after this step
        self.stop_asked = self.stop_asked or bool(stops > 0)
        return grads, loss, loc_loss, conf_loss

    def interrupted(self):
        """Ctrl-C was pressed (on any rank, agreed by the step's all-reduce)."""
        if self.comm.size > 1:
            return self.stop_asked
        return self.ctrl_c is not None and self.ctrl_c.pressed

    def due(self, done):
        """What is due after `done` steps (the last step logs, evaluates and saves)."""
        s, last = self.settings, done == self.settings.iters
        at_ckpt = bool(s.ckpt_every) and done % s.ckpt_every == 0
        at_eval = (bool(s.eval_every) and done % s.eval_every == 0) or last
        return Due(log=done % s.log_every == 0 or last or at_ckpt or at_eval,
                   evaluate=at_eval, save=at_ckpt or at_eval)

    def estimate_time(self, done, after=ESTIMATE_AFTER_STEPS):
        """After the first `after` measured steps: how long the whole run will take."""
        if done == self.start + 1:
            self.t_first = time.perf_counter()
        elif done == self.start + 1 + after and self.t_first is not None:
            per_step = (time.perf_counter() - self.t_first) / after
            left = per_step * (self.settings.iters - done)
            self.log.message(f"minissd.train: {per_step:.2f} s per step; the remaining "
                             f"{self.settings.iters - done} steps take about "
                             f"{_duration(left)} (plus the evaluations)")

    def log_losses(self, done):
        """The mean losses since the last log line into metrics.jsonl and the progress bar;
        the one host sync of the loop, and the NaN check of the steps it covers."""
        mean = backend.to_numpy(self.sums) / self.count      # host sync (needed): the numbers
        if not np.isfinite(mean).all():
            raise NonFiniteLoss(f"a step between {self.good_step + 1} and {done}")
        now = time.perf_counter()
        rec = {"step": done, "loss": float(mean[0]), "loc": float(mean[1]),
               "conf": float(mean[2]), "lr": self.lr,
               "img_per_s": self.count * self.settings.batch_size / max(now - self.t_log, 1e-9)}
        self.log.write(rec)
        self.log.show_losses(rec)
        self.sums, self.count, self.t_log, self.good_step = None, 0, time.perf_counter(), done

    def evaluate(self, done):
        """VOC07 / VOC10 mAP (and with --coco-metric COCO's AP) on the validation split; a
        better VOC07 mAP is saved as best.npz."""
        t = time.perf_counter()
        coco = self.settings.coco_metric
        # rank 0 evaluates, the others wait (and receive the result)
        r = self.comm.on_root(evaluate_model, self.model, self.val_set, self.config,
                              batch_size=self.settings.batch_size, limit=self.settings.val_limit,
                              coco=coco)
        self.val_skipped = r.get("skipped", 0)
        rec = {"step": done, "map": r["map"], "map_voc10": r["map_voc10"],
               "ap": {self.config.class_names[c - 1]: v for c, v in r["ap"].items()}}
        coco_text = ""
        if coco:
            rec.update({f"coco_{k}": r["coco"][k] for k in COCO_KEYS})
            coco_text = (f", COCO AP {rec['coco_map']:.4f}, AP50 {rec['coco_map50']:.4f}")
        rec["eval_s"] = time.perf_counter() - t
        self.log.write(rec)
        self.log.plot()
        self.log.message(f"step {done}: VOC07 mAP {rec['map']:.4f} "
                         f"(VOC10 {rec['map_voc10']:.4f}{coco_text}) in {rec['eval_s']:.1f}s")
        if self.best_map is None or rec["map"] > self.best_map:
            self.best_map = rec["map"]
            checked_save(self.save, self.model, self.best_path, done)
        self.t_log = time.perf_counter()        # evaluation time is not training speed

    def save_last(self, done):
        checked_save(self.save, self.model, self.last_path, done)

    # ------------------------------------------------------------------ helpers and endings
    def save(self, path, step):
        """The run checkpoint after `step` steps into `path` (by rank 0 alone)."""
        if self.comm.rank != 0:
            return
        save_run_checkpoint(path, self.model, self.opt, step, self.settings, self.config,
                            self.spec, self.best_map)

    def stop_interrupted(self):
        """After Ctrl-C: save the last completed step when sound; exit status 130."""
        self.log.close()
        message = save_on_interrupt(self.save, self.model, self.last_path, self.completed,
                                    self.updating)
        if self.comm.rank == 0:
            print(message, file=sys.stderr)
        self.comm.barrier()                     # rank 0 has written last.npz
        return 130

    def stop_non_finite(self, e):
        """After a NaN or infinite loss: nothing more is saved; exit status 3."""
        self.log.close()
        self.comm.barrier()
        if self.comm.rank != 0:
            return 3
        kept = self.last_path if os.path.exists(self.last_path) else "(none written yet)"
        print(f"minissd.train: the loss became NaN or infinite at {e}; training stopped and "
              f"nothing was saved after it. The last good checkpoint is {kept}. Lower --lr "
              f"(now {self.settings.lr}), lengthen --warmup or set --clip-norm, then start "
              f"again or --resume that checkpoint.", file=sys.stderr)
        return 3

    def finish(self):
        """The end of a complete run: curves, and where everything is; exit status 0."""
        self.log.close()
        self.log.plot()
        if self.comm.rank != 0:
            return 0
        skipped = self.loader.skipped + self.val_skipped
        if skipped:
            print(f"minissd.train: skipped {skipped} unreadable images ({self.loader.skipped} "
                  f"in training batches, {self.val_skipped} in the last "
                  "evaluation); the warnings above name the files", file=sys.stderr)
        print(f"minissd.train: done, {self.settings.iters} steps. Best VOC07 mAP "
              f"{self.best_map:.4f}\n"
              f"  checkpoints: {self.last_path}\n"
              f"               {self.best_path}\n"
              f"  metrics:     {self.log.path}\n"
              f"  curves:      {os.path.join(self.out, 'curves.png')}\n"
              f"  evaluate:    python -m minissd.evaluate --checkpoint {self.best_path}")
        return 0


def _duration(seconds):
    """'42 s', '7.5 min' or '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class CtrlC:
    """Ctrl-C during training sets `pressed`; the loop finishes its step, saves and exits.
    A second Ctrl-C interrupts at once (Python's default behaviour is put back)."""

    def __init__(self):
        self.pressed = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.pressed = True
        signal.signal(signal.SIGINT, self._old)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
