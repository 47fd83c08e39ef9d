"""Benchmarks: `python -m minissd.bench <topic> [--device cpu|cuda] [...]`.

One module per topic (layers, kernels, data, model, loss, opencv); each has `main(argv)` and
prints a table. Benchmarks live here, not in the tests. When PyTorch/torchvision are
importable they are timed at the same sizes for comparison; they are never a dependency of
minissd itself.
"""
import time

TOPICS = ("layers", "kernels", "data", "model", "loss", "opencv")


def best_time(fn, repeat, sync=lambda: None):
    """The fastest wall time in seconds of `repeat` calls of fn(), after one warm-up call.

    sync() is called before starting and after each call, so GPU work queued by fn is
    counted (pass backend.synchronize, or torch.cuda.synchronize for torch's ops).
    """
    fn()                                    # warm-up: allocations, JIT, cuBLAS/cuDNN plans
    sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best
