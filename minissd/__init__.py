"""minissd: SSD (Single Shot MultiBox Detector) from scratch, on NumPy and CuPy.

Start reading at README.md; the modules are listed there in the order a student meets them.
"""
__version__ = "0.1.0"
