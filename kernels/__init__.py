"""Numba CUDA kernels (installed as minissd.kernels): IoU matrix, hard negative mining, NMS."""
