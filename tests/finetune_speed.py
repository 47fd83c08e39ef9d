"""The cost of one training step with a frozen part against the whole network (the README's
fine-tuning figures):

    python tests/finetune_speed.py [--weights opencv-face] [--image-size 128] [--reps 5]

Per variant (nothing frozen as from scratch, nothing frozen from --weights, --freeze base,
--freeze extras): forward, backward (need_dx False, as training) and an Adam update of the
parameters that train, on a batch of 8 random images, the gradient of the outputs fixed. The
variants run interleaved, each rep in turn, and each keeps its fastest rep in CPU time
(time.process_time: on a busy machine wall time measures the other processes). Without
--weights: the tiny config.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from minissd.config import tiny
from minissd.freeze import frozen_layers, frozen_params
from minissd.model import SSD
from minissd.optim import Adam
from minissd.training import finetune


def step_cost(model, x, dloc, dconf, skip, opt):
    """CPU seconds of forward + backward + the optimizer update."""
    t = time.process_time()
    model.forward(x)
    model.backward(dloc, dconf, need_dx=False)
    params = [(n, w) for n, w in model.params() if n not in skip]
    opt.step(params, model.grads, 1e-4)
    return time.process_time() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights")
    p.add_argument("--image-size", type=int)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--reverse", action="store_true", help="run the variants in the reverse "
                   "order in each rep (a check that the order does not decide)")
    args = p.parse_args(argv)
    names = ("a", "b", "c")
    if args.weights:
        pconfig, pstate = finetune.parent(args.weights)
        config = finetune.child_config(pconfig, names, image_size=args.image_size)
    else:
        config, pstate = tiny(class_names=names, image_size=args.image_size or 128), None
    rng = np.random.default_rng(0)
    s = config.image_size
    x = rng.standard_normal((8, 3, s, s)).astype(np.float32)
    variants = {}
    for name, freeze in (("scratch", "none"), ("none", "none"), ("base", "base"),
                         ("extras", "extras")):
        model = SSD(config, rng=1)
        if pstate is not None and name != "scratch":
            model.load_state_dict(finetune.start_state(pstate, pconfig, model)[0])
        frozen = frozen_layers(model.plan, freeze)
        model.freeze(frozen)
        variants[name] = (model, frozen_params(model.plan, frozen), Adam(), [])
    loc, conf = variants["scratch"][0].forward(x, keep_cache=False)
    dloc = rng.standard_normal(loc.shape).astype(np.float32) * 1e-3
    dconf = rng.standard_normal(conf.shape).astype(np.float32) * 1e-3
    for rep in range(args.reps + 1):
        order = list(variants.values())
        for model, skip, opt, times in (order[::-1] if args.reverse else order):
            t = step_cost(model, x, dloc, dconf, skip, opt)
            if rep:                            # the first rep warms up
                times.append(t)
    base = min(variants["scratch"][3])
    print(f"{config.name} at {s} px, batch 8, {args.reps} reps, fastest CPU s per step:")
    for name, (_, skip, _, times) in variants.items():
        print(f"  {name:8s} {min(times):.3f} s  ({min(times) / base:.2f} x scratch; "
              f"{len(skip)} frozen arrays)")


if __name__ == "__main__":
    main()
