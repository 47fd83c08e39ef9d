"""python -m minissd.bench <topic> [options]; `python -m minissd.bench all` runs every topic."""
import importlib
import sys

from . import TOPICS


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("topics: " + ", ".join(TOPICS) + ", all")
        print("each topic takes --help for its own options (--device cpu|cuda, sizes, ...)")
        return 0
    topic, rest = argv[0], argv[1:]
    if topic == "all":
        for t in TOPICS:
            print(f"\n=== {t} ===")
            importlib.import_module(f"minissd.bench.{t}").main(rest)
        return 0
    if topic not in TOPICS:
        print(f"unknown topic {topic!r}; choose one of: {', '.join(TOPICS)}, all", file=sys.stderr)
        return 2
    return importlib.import_module(f"minissd.bench.{topic}").main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
