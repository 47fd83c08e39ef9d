"""Run a group of minissd commands, one after the other, in THIS process, under resource
limits; tests/test_hostile.py starts it as a subprocess:

    python tests/hostile_driver.py cases.json results.json

Why a group: starting Python and importing minissd costs about a second per process, and
the hostile corpus has dozens of cases. Each case is still the real command (its module's
main(argv), what `python -m minissd.<cmd>` runs), with its own stdout and stderr (the file
descriptors are redirected, so C-level output is caught too), its own time limit
(signal.alarm, which also interrupts a blocking open() of a FIFO), and the process-wide
limits set once: RLIMIT_AS (address space) and RLIMIT_CPU. A case may also lower
RLIMIT_FSIZE ("fsize": a full disk; SIGXFSZ is ignored so a write fails with EFBIG).

cases.json: [{"name", "module" (e.g. "minissd.train"), "argv": [...], "timeout": s,
             "fsize": bytes or null}, ...]; limits come from the environment:
             HOSTILE_AS_BYTES, HOSTILE_CPU_SECONDS.
results.json: [{"name", "code", "stdout", "stderr", "seconds", "maxrss_mb"}, ...]
A case that raises (anything but SystemExit) gets code 1 and its traceback on stderr, as
the real command would; one that runs past its timeout gets code 124.
"""
import importlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in the code hides it."""


def _alarm(signum, frame):
    raise CaseTimeout()


def _limit(kind, value):
    hard = resource.getrlimit(kind)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, hard))


def run_case(case, folder):
    """Run one case; returns its result dict."""
    out_path, err_path = (os.path.join(folder, f"{n}.txt") for n in ("out", "err"))
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    fsize = case.get("fsize")
    old_fsize = resource.getrlimit(resource.RLIMIT_FSIZE)
    t = time.perf_counter()
    code = 0
    try:
        warnings.simplefilter("always")          # every case sees its own warnings
        if fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, old_fsize[1]))
        signal.alarm(int(case.get("timeout", 60)))
        module = importlib.import_module(case["module"])
        status = module.main(list(case["argv"]))
        code = status or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except CaseTimeout:
        code = 124
        print(f"hostile_driver: case timed out after {case.get('timeout', 60)} s",
              file=sys.stderr)
    except BaseException:                        # what a real command would print
        traceback.print_exc()
        code = 1
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_FSIZE, old_fsize)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    seconds = time.perf_counter() - t
    with open(out_path, encoding="utf-8", errors="backslashreplace") as f:
        stdout = f.read()
    with open(err_path, encoding="utf-8", errors="backslashreplace") as f:
        stderr = f.read()
    return {"name": case["name"], "code": code, "stdout": stdout, "stderr": stderr,
            "seconds": seconds,
            "maxrss_mb": _peak_rss_mb()}


def _peak_rss_mb():
    """This process's peak resident memory in MiB: VmHWM, which starts afresh at exec.
    (getrusage's ru_maxrss is kept across execve, so a driver started from a large pytest
    process would report the parent's size; getrusage(2).)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(cases_path, results_path):
    _limit(resource.RLIMIT_AS, int(os.environ.get("HOSTILE_AS_BYTES", 3 << 30)))
    _limit(resource.RLIMIT_CPU, int(os.environ.get("HOSTILE_CPU_SECONDS", 300)))
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with open(cases_path) as f:
        cases = json.load(f)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for case in cases:
            results.append(run_case(case, folder))
            with open(results_path, "w") as f:  # written after each case: a crash keeps them
                json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
