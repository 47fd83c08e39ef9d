"""What a run reports: metrics.jsonl (one JSON object per log line and per evaluation), the
progress bar (or plain log lines), and curves.png (loss and mAP)."""
from __future__ import annotations

import json
import os
import sys


class RunLog:
    """metrics.jsonl in `out` (appended to, so a resumed run continues it; fresh=True, a new
    run: started afresh), its history in memory for the curves, and a tqdm bar over steps
    start..total unless progress is False.

    A line cut short by an interrupted write (the last one, without its newline) is dropped
    before appending, so the file stays one JSON object per line."""

    def __init__(self, out, start, total, progress=True, fresh=False):
        self.out = out
        self.path = os.path.join(out, "metrics.jsonl")
        if fresh:
            with open(self.path, "w", encoding="utf-8"):
                pass
        self.history = _read_history(self.path)
        self.file = open(self.path, "a", encoding="utf-8")
        self.bar = None
        if progress:
            from tqdm import tqdm          # imported here: only the progress bar needs it
            self.bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True,
                            file=sys.stderr)

    def write(self, rec):
        """One record into metrics.jsonl (flushed) and the history."""
        self.file.write(json.dumps(rec, allow_nan=True) + "\n")
        self.file.flush()
        self.history.append(rec)

    def show_losses(self, rec):
        """A loss record on the progress bar, or as a log line without one."""
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{rec['loss']:.3f}", "loc": f"{rec['loc']:.3f}",
                                  "conf": f"{rec['conf']:.3f}", "lr": f"{rec['lr']:.2g}",
                                  "img/s": f"{rec['img_per_s']:.0f}"})
        else:
            print(f"step {rec['step']}: loss {rec['loss']:.4f} (loc {rec['loc']:.4f}, "
                  f"conf {rec['conf']:.4f}) lr {rec['lr']:.3g} "
                  f"{rec['img_per_s']:.1f} img/s", file=sys.stderr)

    def message(self, msg):
        """A line of text that does not break the progress bar."""
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def advance(self):
        """One more step done."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.file.close()

    def plot(self):
        """curves.png from the history (a failure is reported, never raised)."""
        from ..viz import plot_training_curves    # imported here: matplotlib is slow to import
        try:
            plot_training_curves(self.history, os.path.join(self.out, "curves.png"))
        except Exception as e:          # a plot must never stop training
            print(f"minissd.train: could not draw curves.png ({e})", file=sys.stderr)


class NullLog:
    """RunLog's interface doing nothing: the log of a data-parallel rank other than 0."""
    history = ()

    def write(self, rec):
        pass

    def show_losses(self, rec):
        pass

    def message(self, msg):
        pass

    def advance(self):
        pass

    def close(self):
        pass

    def plot(self):
        pass


def _read_history(path):
    """The records of metrics.jsonl. A last line without its newline (a write cut short) is
    cut off the file; another line that is not JSON is skipped, with one notice."""
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        print(f"minissd.train: {path}: dropped its last line, cut short by an interrupted "
              "write", file=sys.stderr)
        data = data[:keep]
    records, bad = [], 0
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line) if line.strip() else None
        except ValueError:
            rec, bad = None, bad + 1
        if isinstance(rec, dict):
            records.append(rec)
    if bad:
        print(f"minissd.train: {path}: skipped {bad} line(s) that are not JSON",
              file=sys.stderr)
    return records
