"""Looking at the data and at a trained model's mistakes: the recall ceiling of a config's
default boxes (coverage.py), what a dataset holds (dataset.py), default boxes fitted to the
objects (fit.py), advice with numbers (advice.py), pictures (plots.py) and TIDE's error
types (errors.py). python -m minissd.inspect and python -m minissd.evaluate --errors use them."""
