"""Source lines are at most 100 columns: the package, the kernels, the tests and the notebook
cell files (the .ipynb files are generated from notebooks/_cells_NN.py)."""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMIT = 100


def test_lines_at_most_100_columns():
    files = [p for folder in ("minissd", "kernels", "tests", "notebooks")
             for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50                   # the walk found the tree
    long = [f"{p.relative_to(ROOT)}:{i}: {len(line)} columns"
            for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > LIMIT]
    assert not long, "lines over 100 columns:\n" + "\n".join(long)
