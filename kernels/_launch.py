"""What the three kernel launchers share: importing numba.cuda late, putting every input on one
device, binding each launch to CuPy's device and stream, and an exact multiply.

numba.cuda is imported only when a kernel is first launched or compiled, so that
`import minissd.kernels` stays cheap and works on machines without CUDA.

A launcher receives either CuPy arrays (the real path: zero-copy, on CuPy's current device and
stream) or NumPy arrays (Numba's simulator, NUMBA_ENABLE_CUDASIM=1, and quick experiments:
Numba copies them to the device and back around each launch).

Two devices, one launch. CuPy and Numba each keep their own idea of "the current GPU": CuPy
through `cupy.cuda.Device(i).use()` (or `with cupy.cuda.Device(i):`), Numba through its own
context stack, which starts on device 0. A Numba kernel launched in device 0's context with
pointers that CuPy allocated on device 1 reads another GPU's addresses. So every launch runs
inside `launch_on(x)`: it checks that x lives on CuPy's current device, enters Numba's
context for that device (`numba.cuda.gpus[i]`), and hands the kernel CuPy's current stream of
that device (`numba.cuda.external_stream`), so the kernel is ordered after the CuPy work that
made its inputs and before the CuPy work that reads its outputs, with no synchronisation.

Exact products. NVVM contracts `a * b + c` into one fused multiply-add (one rounding instead of
two) unless told not to, even without fastmath; the result then differs from NumPy's by up to
an ulp. The kernels that promise NumPy's IoU bit for bit multiply with `mul_rn(a, b)`:
libdevice's __nv_fmul_rn / __nv_dmul_rn, which compile to PTX `mul.rn`, an instruction that
neither NVVM nor ptxas fuses. In the simulator mul_rn is a plain `a * b`.
"""
from __future__ import annotations

import contextlib

from minissd.backend import get_array_module, is_cupy


def numba_cuda():
    """The numba.cuda module, imported on first use."""
    from numba import cuda
    return cuda


def on_one_device(*arrays):
    """`arrays` on one device: that of the first CuPy array among them (the one a kernel runs
    on; the others are cupy.asarray'd, a host-to-device copy for NumPy arrays), unchanged when
    none is CuPy. None stays None."""
    xp = get_array_module(next((a for a in arrays if is_cupy(a)), None))
    return tuple(None if a is None else xp.asarray(a) for a in arrays)


def device_array(x):
    """x as something a Numba kernel accepts, without copying a CuPy array.

    CuPy arrays are wrapped through __cuda_array_interface__ (sync=False: the kernel runs on
    the same stream that produced them). NumPy arrays pass through unchanged. Call it inside
    launch_on(x): Numba ties the wrapped pointer to its current context.
    """
    if is_cupy(x):
        return numba_cuda().as_cuda_array(x, sync=False)
    return x


def cupy_device_and_stream(x):
    """(device id, stream pointer) a kernel on CuPy array x must use: CuPy's current device,
    which must be x's, and CuPy's current stream on it. Raises ValueError naming both devices
    when x lives on another GPU than the current one."""
    cupy = get_array_module(x)
    current = cupy.cuda.Device().id
    if x.device.id != current:
        raise ValueError(f"minissd.kernels: the input lives on GPU {x.device.id} but CuPy's "
                         f"current device is GPU {current}; run the call inside `with "
                         f"cupy.cuda.Device({x.device.id}):` or move the array there")
    return current, cupy.cuda.get_current_stream().ptr


@contextlib.contextmanager
def launch_on(x):
    """Context for launching a kernel on x's device; yields the stream to launch on.

        with _launch.launch_on(a) as stream:
            kernel[grid, block, stream](device_array(a), ...)

    CuPy x: Numba's context of CuPy's current device, and CuPy's current stream there.
    NumPy x (the simulator): nothing to enter, the default stream 0.
    """
    if not is_cupy(x):
        yield 0
        return
    device_id, stream_ptr = cupy_device_and_stream(x)
    cuda = numba_cuda()
    with cuda.gpus[device_id]:
        yield cuda.external_stream(stream_ptr)


def _python_mul_rn(x, y):
    """The simulator's mul_rn: NumPy scalars multiply with one rounding already."""
    return x * y


_mul_rn = None


def exact_mul():
    """mul_rn(x, y) for the kernel bodies: x * y rounded once, never fused into an FMA.

    Under Numba's simulator a plain Python multiply; for real CUDA a Numba intrinsic that
    calls libdevice's __nv_fmul_rn (float32) or __nv_dmul_rn (float64).
    """
    global _mul_rn
    if _mul_rn is not None:
        return _mul_rn
    from numba import config
    if config.ENABLE_CUDASIM:
        _mul_rn = _python_mul_rn
        return _mul_rn
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic
    try:
        from numba.cuda import cgutils          # numba-cuda's own copy (recent versions)
    except ImportError:
        from numba.core import cgutils          # older numba-cuda, and numba's built-in target
    libdevice = {types.float32: "__nv_fmul_rn", types.float64: "__nv_dmul_rn"}

    @intrinsic
    def mul_rn(typingctx, x, y):
        if x != y or x not in libdevice:
            return None                # Numba then reports "no matching definition"

        def codegen(context, builder, signature, args):
            t = context.get_value_type(x)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t]),
                                                libdevice[x])
            return builder.call(fn, args)
        return x(x, y), codegen

    _mul_rn = mul_rn
    return _mul_rn


def bind_cuda(namespace):
    """Bind the names `cuda` (numba.cuda) and `mul_rn` (exact_mul()) in a kernel file's
    globals, once, and return numba.cuda.

    The kernel bodies are plain functions that say cuda.threadIdx, cuda.syncthreads(),
    mul_rn(w, h), ...; the names are looked up in their module's globals when Numba compiles
    them, so they must be bound before the first jit or compile_ptx.
    """
    if namespace.get("cuda") is None:
        namespace["cuda"] = numba_cuda()
    if "mul_rn" in namespace and namespace["mul_rn"] is None:
        namespace["mul_rn"] = exact_mul()
    return namespace["cuda"]


class LazyKernels:
    """A kernel file's jitted kernels by name, each compiled by cuda.jit on first use.

        _kernels = LazyKernels(globals(), v1=iou_kernel_v1, v2=iou_kernel_v2)
        _kernels["v2"][blocks, threads, stream](...)
    """

    def __init__(self, namespace, **pyfuncs):
        self._namespace = namespace
        self._pyfuncs = pyfuncs
        self._jitted = {}

    def __getitem__(self, name):
        if name not in self._jitted:
            cuda = bind_cuda(self._namespace)
            self._jitted[name] = cuda.jit(self._pyfuncs[name])
        return self._jitted[name]
