"""Each CUDA kernel compiled for real, to PTX for compute capability 9.0, without a GPU.

numba.cuda.compile_ptx runs Numba's CUDA typing and NVVM (from the numba-cuda[cu12] or
numba-cuda[cu13] wheels that the cuda12 / cuda13 extra installs), so a kernel that would not
compile on the GPU (a type error, an unsupported call, a shared array of non-constant size)
fails here. The signatures are the ones the launchers use, listed
by each kernel file's ptx_signatures().
"""
import re

import pytest

NO_NVVM = ("no NVVM to compile with: install the CUDA extra of your driver's major next to "
           "the test one, pip install -e '.[test,cuda12]' or '.[test,cuda13]' (no GPU needed)")
cuda = pytest.importorskip("numba.cuda", reason=NO_NVVM)
nvvm = pytest.importorskip("numba.cuda.cudadrv.nvvm", reason=NO_NVVM)
if not nvvm.is_available():
    pytest.skip(NO_NVVM, allow_module_level=True)

from minissd.kernels import hard_negative_kernel, iou_kernel, nms_kernel  # noqa: E402

KERNEL_FILES = (iou_kernel, nms_kernel, hard_negative_kernel)
CASES = [case for module in KERNEL_FILES for case in module.ptx_signatures()]


@pytest.mark.parametrize("name,pyfunc,signature", CASES, ids=[c[0] for c in CASES])
def test_kernel_compiles_to_ptx(name, pyfunc, signature):
    ptx, return_type = cuda.compile_ptx(pyfunc, signature, cc=(9, 0))
    assert ".target sm_90" in ptx
    assert ".entry" in ptx and pyfunc.__name__ in ptx     # a kernel entry point, by name
    assert str(return_type) == "none"                     # kernels return nothing


# The kernels that promise minissd.boxes.iou's values bit for bit (IoU v1 and v2, the NMS mask,
# which compares IoUs against the threshold). NVVM contracts a multiply and an add into one
# fma.rn unless the multiply is mul.rn (kernels/_launch.py, mul_rn); ptxas does the same to a
# plain mul.f32 / add.f32 pair, so every float product must be mul.rn, and no fma may appear.
EXACT = [case for case in CASES if case[0].startswith(("iou_kernel", "nms_mask_kernel"))]
FLOAT_MUL = re.compile(r"^\s*(mul(?:\.\w+)*\.f(?:32|64))\s", re.MULTILINE)


@pytest.mark.parametrize("name,pyfunc,signature", EXACT, ids=[c[0] for c in EXACT])
def test_exact_kernels_have_no_fused_multiply_add(name, pyfunc, signature):
    ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=(9, 0), fastmath=False)
    fused = [line.strip() for line in ptx.splitlines() if "fma." in line]
    assert not fused, f"{name}: NVVM fused a product into an FMA: {fused[:3]}"
    products = FLOAT_MUL.findall(ptx)
    assert products, f"{name}: no float product found; did the PTX format change?"
    assert all(".rn" in p for p in products), f"{name}: contractible products {products}"
