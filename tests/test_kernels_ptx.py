"""Each CUDA kernel compiled for real, to PTX for compute capability 9.0, without a GPU.

numba.cuda.compile_ptx runs Numba's CUDA typing and NVVM (from the numba-cuda[cu13] wheels),
so a kernel that would not compile on the GPU (a type error, an unsupported call, a shared
array of non-constant size) fails here. The signatures are the ones the launchers use, listed
by each kernel file's ptx_signatures().
"""
import pytest

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

from minissd.kernels import hard_negative_kernel, iou_kernel, nms_kernel  # noqa: E402

KERNEL_FILES = (iou_kernel, nms_kernel, hard_negative_kernel)
CASES = [case for module in KERNEL_FILES for case in module.ptx_signatures()]


@pytest.mark.parametrize("name,pyfunc,signature", CASES, ids=[c[0] for c in CASES])
def test_kernel_compiles_to_ptx(name, pyfunc, signature):
    ptx, return_type = cuda.compile_ptx(pyfunc, signature, cc=(9, 0))
    assert ".target sm_90" in ptx
    assert ".entry" in ptx and pyfunc.__name__ in ptx     # a kernel entry point, by name
    assert str(return_type) == "none"                     # kernels return nothing
