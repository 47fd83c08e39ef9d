"""Writes the notebooks (01..09) from the cell lists in notebooks/_cells_*.py.

    python notebooks/_build.py            # rewrites notebooks/0*.ipynb with outputs cleared

The notebooks are committed with outputs cleared; tests/test_notebooks.py runs them.
Each _cells_NN.py module defines CELLS, a list of ("md" | "code", source) pairs.
"""
import importlib.util
import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

NOTEBOOKS = {
    "01_default_boxes": "_cells_01.py",
    "02_layers_and_gradient_checks": "_cells_02.py",
    "03_network": "_cells_03.py",
    "04_matching_and_encoding": "_cells_04.py",
    "05_loss_and_hard_negative_mining": "_cells_05.py",
    "06_detection_and_nms": "_cells_06.py",
    "07_training_and_evaluation": "_cells_07.py",
    "08_augmentation_and_your_own_data": "_cells_08.py",
    "09_a_real_trained_ssd": "_cells_09.py",
}


def load_cells(filename):
    path = os.path.join(HERE, filename)
    spec = importlib.util.spec_from_file_location(filename[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CELLS


def build(name, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source))
        else:
            raise ValueError(f"notebooks/_build.py: cell kind {kind!r} in {name}; use 'md' or "
                             "'code'")
    for i, cell in enumerate(nb.cells):           # stable ids: a rebuild gives the same bytes
        cell["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(NOTEBOOKS)
    for name in names:
        nb = build(name, load_cells(NOTEBOOKS[name]))
        path = os.path.join(HERE, name + ".ipynb")
        with open(path, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        print("wrote", path)


if __name__ == "__main__":
    main()
