"""Benchmarks: `python -m minissd.bench <topic> [--device cpu|cuda] [...]`.

One module per topic (layers, kernels, data, model); each has `main(argv)` and prints a table.
Benchmarks live here, not in the tests. When PyTorch/torchvision are importable they are timed
at the same sizes for comparison; they are never a dependency of minissd itself.
"""
TOPICS = ("layers", "kernels", "data", "model")
