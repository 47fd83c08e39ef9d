"""VOC07 mAP of several runs on one plot, against steps and against compute time (the README's
fine-tuning figures):

    python tests/finetune_curves.py --out curves.png NAME=RUN_DIR[:SECONDS_PER_STEP] ...

Each RUN_DIR holds the metrics.jsonl that python -m minissd.train wrote. The left panel is
mAP against the step; the right one against time, which is either the run's own training wall
time (from the logged img/s of each log line; on a busy machine this mostly measures the
other processes) or, when SECONDS_PER_STEP is given, steps x that cost (a step's time measured
apart, on an otherwise quiet core). It also prints the table of the evaluations.
"""
from __future__ import annotations

import argparse
import json
import os


def read_run(folder, per_step=None):
    """[(step, seconds, map)] of a run's evaluations; seconds = its training time to there."""
    steps_done, seconds, points, batch = 0, 0.0, [], None
    with open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                if batch is None:
                    batch = _batch_size(folder)
                seconds += (rec["step"] - steps_done) * batch / max(rec["img_per_s"], 1e-9)
                steps_done = rec["step"]
            if "map" in rec:
                t = rec["step"] * per_step if per_step is not None else seconds
                points.append((rec["step"], t, rec["map"]))
    return points


def _batch_size(folder):
    from minissd.weights import load_checkpoint
    _, meta = load_checkpoint(os.path.join(folder, "last.npz"))
    return meta["settings"]["batch_size"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR[:SECONDS_PER_STEP]")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec in args.runs:
        name, _, rest = spec.partition("=")
        folder, _, cost = rest.partition(":")
        pts = read_run(folder, float(cost) if cost else None)
        for step, t, m in pts:
            print(f"{name}\tstep {step}\t{t:.0f} s\tVOC07 mAP {m:.4f}")
        a1.plot([s for s, _, _ in pts], [m for _, _, m in pts], "o-", label=name)
        a2.plot([t / 60 for _, t, _ in pts], [m for _, _, m in pts], "o-", label=name)
    a1.set_xlabel("step (batch 8)")
    a2.set_xlabel("minutes of training" + (" (steps x measured s/step)"
                                           if any(":" in r for r in args.runs) else ""))
    for a in (a1, a2):
        a.set_ylabel("VOC07 mAP")
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
