"""float32 lanes as one Numba value: what the direct path's tiles hold in registers.

Numba vectorises loops, but only innermost ones, and only by streaming the
outputs through memory: a correlation then loads and stores each output once
per few template taps, and that, not arithmetic, bounds its speed (about half
of the machine's multiply-add rate). A register tile turns it round: a
handful of output vectors stay in registers over *every* tap, and each tap
costs one broadcast and a few loads of frame pixels. Numba cannot express a
value that is a vector, so this module gives it one, :data:`vector` (LLVM's
``<LANES x float>``), and the six operations the tiles need.

:data:`LANES` is one register of the CPU Numba compiles for (the host, or
``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, such as a level of
``featuremap.service.edge.cpu_level``): 16 where it has AVX-512 (32 registers of 16 floats; the 2-core AVX-512 VM ran a tile 1.6x
faster with them than with 8 lanes), 8 elsewhere (AVX2's 16 registers of 8;
SSE and NEON machines split each vector into two). Numba's on-disk cache is
keyed by that CPU too, so a kernel compiled for one width never runs with
the other.

There are no bounds checks: the caller guarantees that ``index .. index +
LANES - 1`` lies inside the array. Arrays must be one-dimensional,
C-contiguous float32 (rows of C-contiguous arrays are).
"""

import llvmlite.binding as llvm
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


_PROBE = """
define void @probe(<16 x float>* %p) {
  %v = load <16 x float>, <16 x float>* %p
  %s = fadd <16 x float> %v, %v
  store <16 x float> %s, <16 x float>* %p
  ret void
}
"""


def _target_has_avx512() -> bool:
    """Whether the CPU Numba compiles for has AVX-512 registers.

    That CPU is the one Numba's code generator targets: ``NUMBA_CPU_NAME`` (else
    this host's) with ``NUMBA_CPU_FEATURES`` (else this host's). A name alone
    with an empty feature list (``x86-64-v4``, ``haswell``) implies features no
    string here spells, so LLVM itself is asked: it compiles a 16-lane add for
    that target, and the target has AVX-512 where the add uses a zmm register.
    """
    name = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    features = numba.config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        return True
    if "-avx512f" in features.split(","):
        return False
    try:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        machine = llvm.Target.from_default_triple().create_target_machine(cpu=name, features=features)
        module = llvm.parse_assembly(_PROBE)
        module.verify()
        return "zmm" in machine.emit_assembly(module)
    except RuntimeError:  # not an x86 target, or a name LLVM does not know
        return False


#: Lanes in one vector: one register of the target CPU.
LANES = 16 if _target_has_avx512() else 8

_VECTOR = ir.VectorType(ir.FloatType(), LANES)


class Lanes(types.Type):
    """Numba type of :data:`LANES` float32 lanes."""

    def __init__(self):
        super().__init__(name=f"float32x{LANES}")


#: The vector type (an instance: Numba types are values).
vector = Lanes()


@register_model(Lanes)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _is_row(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype == types.float32


def _address(context, builder, array_type, array, index, index_type):
    """Pointer to ``array[index]`` as a pointer to a vector."""
    data = context.make_array(array_type)(context, builder, array).data
    offset = context.cast(builder, index, index_type, types.intp)
    return builder.bitcast(builder.gep(data, [offset]), _VECTOR.as_pointer())


@intrinsic
def load(typingctx, arr, index):
    """``arr[index : index + LANES]`` as a vector (any alignment)."""
    if not (_is_row(arr) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig.args[0], args[0], args[1], sig.args[1]), align=4)

    return vector(arr, index), codegen


@intrinsic
def store(typingctx, arr, index, values):
    """Write the vector ``values`` to ``arr[index : index + LANES]`` (any alignment)."""
    if not (_is_row(arr) and isinstance(index, types.Integer) and values == vector):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _address(context, builder, sig.args[0], args[0], args[1], sig.args[1]), align=4)
        return context.get_dummy_value()

    return types.void(arr, index, values), codegen


@intrinsic
def splat(typingctx, value):
    """``value`` (converted to float32) in every lane."""
    if not isinstance(value, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[0], sig.args[0], types.float32)
        first = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        everywhere = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(first, ir.Constant(_VECTOR, ir.Undefined), everywhere)

    return vector(value), codegen


@intrinsic
def zeros(typingctx):
    """A vector of +0.0."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_VECTOR, [0.0] * LANES)

    return vector(), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` lane by lane: fused where the machine has FMA, IEEE (NaN and inf kept) either way."""
    if not (a == b == c == vector):
        return None

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), f"llvm.fmuladd.v{LANES}f32")
        return builder.call(function, args)

    return vector(a, b, c), codegen


@intrinsic
def add(typingctx, a, b):
    """``a + b`` lane by lane."""
    if not (a == b == vector):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return vector(a, b), codegen
