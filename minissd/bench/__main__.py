"""python -m minissd.bench [topic] [options]

With no topic, every topic runs on the best device (the GPU when one answers, else the CPU).
Topics: layers (every SSD300 conv shape, vs torch), kernels (IoU, NMS, mining, vs torchvision),
data (decode + augmentation + batching), model (SSD300 forward, forward+backward, vs torch.nn),
loss (matching, the MultiBox loss with mining, detect()), opencv (OpenCV's trained res10 face
SSD, minissd vs OpenCV's DNN module, same threads). Each takes --help for its options,
and --device cpu|cuda.
"""
import importlib
import sys

from . import TOPICS


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    topic, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("all", argv)
    if topic != "all" and topic not in TOPICS:
        print(f"unknown topic {topic!r}; choose one of: {', '.join(TOPICS)}, all", file=sys.stderr)
        return 2
    if not any(a == "--device" or a.startswith("--device=") for a in rest):
        from .. import backend
        rest = rest + ["--device", backend.set_device("auto")]
    for t in (TOPICS if topic == "all" else (topic,)):
        if topic == "all":
            print(f"\n=== {t} ===", flush=True)
        status = importlib.import_module(f"minissd.bench.{t}").main(rest)
        if status:                     # a topic's usage error (its one line is printed): 2
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
