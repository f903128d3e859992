"""Eight float32 lanes as one Numba value: what the direct path's tiles hold in registers.

Numba vectorises loops, but only innermost ones, and only by streaming the
outputs through memory: a correlation then loads and stores each output once
per few template taps, and that, not arithmetic, bounds its speed (about half
of the machine's multiply-add rate). A register tile turns it round: a
handful of output vectors stay in registers over *every* tap, and each tap
costs one broadcast and a few loads of frame pixels. Numba cannot express a
value that is a vector, so this module gives it one, :data:`float32x8`
(LLVM's ``<8 x float>``: one AVX register, two SSE or NEON ones), and the
six operations the tiles need.

There are no bounds checks: the caller guarantees that ``index .. index + 7``
lies inside the array. Arrays must be one-dimensional, C-contiguous float32
(rows of C-contiguous arrays are).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

#: Lanes in one vector.
LANES = 8

_VECTOR = ir.VectorType(ir.FloatType(), LANES)


class Float32x8(types.Type):
    """Numba type of eight float32 lanes."""

    def __init__(self):
        super().__init__(name="float32x8")


#: The vector type (an instance: Numba types are values).
float32x8 = Float32x8()


@register_model(Float32x8)
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
    """``arr[index : index + 8]`` as a vector (any alignment)."""
    if not (_is_row(arr) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig.args[0], args[0], args[1], sig.args[1]), align=4)

    return float32x8(arr, index), codegen


@intrinsic
def store(typingctx, arr, index, vector):
    """Write ``vector`` to ``arr[index : index + 8]`` (any alignment)."""
    if not (_is_row(arr) and isinstance(index, types.Integer) and vector == float32x8):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _address(context, builder, sig.args[0], args[0], args[1], sig.args[1]), align=4)
        return context.get_dummy_value()

    return types.void(arr, index, vector), codegen


@intrinsic
def splat(typingctx, value):
    """Eight copies of ``value`` (converted to float32)."""
    if not isinstance(value, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[0], sig.args[0], types.float32)
        first = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        everywhere = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(first, ir.Constant(_VECTOR, ir.Undefined), everywhere)

    return float32x8(value), codegen


@intrinsic
def zeros(typingctx):
    """A vector of +0.0."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_VECTOR, [0.0] * LANES)

    return float32x8(), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` lane by lane: fused where the machine has FMA, IEEE (NaN and inf kept) either way."""
    if not (a == b == c == float32x8):
        return None

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), f"llvm.fmuladd.v{LANES}f32")
        return builder.call(function, args)

    return float32x8(a, b, c), codegen


@intrinsic
def add(typingctx, a, b):
    """``a + b`` lane by lane."""
    if not (a == b == float32x8):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return float32x8(a, b), codegen
