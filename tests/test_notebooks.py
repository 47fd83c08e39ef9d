"""Run the notebooks (01..09) top to bottom (nbclient, kernel python3); fail on errors.

Each notebook runs in its own temporary working directory with TMPDIR pointing there, so
nothing is written into the repository and the generated data sets are removed with pytest's
tmp_path. Figures go through the kernel's inline backend, as in Jupyter, and every notebook
must show at least one picture (an image/png output): each stage has one. The notebooks' own assert
cells are the checks: an AssertionError in a cell fails the test with the cell's source.
Notebooks are committed with outputs cleared; that is checked too.
"""
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "notebooks")
NOTEBOOKS = [
    "01_default_boxes",
    "02_layers_and_gradient_checks",
    "03_network",
    "04_matching_and_encoding",
    "05_loss_and_hard_negative_mining",
    "06_detection_and_nms",
    "07_training_and_evaluation",
    "08_augmentation_and_your_own_data",
    "09_a_real_trained_ssd",
]
CELL_TIMEOUT = 600          # seconds per cell; the slowest cells (the training runs of 07 and
                            # 08) take about 30 s on 2 idle cores, several minutes when busy


def _read(name):
    with open(os.path.join(NOTEBOOK_DIR, name + ".ipynb"), encoding="utf-8") as f:
        return nbformat.read(f, as_version=4)


def test_every_notebook_is_listed():
    found = sorted(f[:-len(".ipynb")] for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
    assert found == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"notebooks/{name}.ipynb has no code cells"
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, (f"notebooks/{name}.ipynb: code cells {dirty} have outputs; clear them "
                       "(python notebooks/_build.py rewrites the notebooks cleared)")
    assert any("assert" in c.source for c in code), f"notebooks/{name}.ipynb checks nothing"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in Jupyter
    monkeypatch.setenv("TMPDIR", str(tmp_path))      # the notebooks' tempfile folders go here
    nb = _read(name)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"notebooks/{name}.ipynb failed:\n{e}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    pictures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if "image/png" in o.get("data", {})]
    assert pictures, f"notebooks/{name}.ipynb ran but showed no picture"
