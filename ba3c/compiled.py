"""Compiled element-wise passes shared by the services (numba), and the decorator that
compiles them.

Only what more than one service needs lives here: rounding float32 to bfloat16, which
the learner does to its gradients (`--grad_dtype bfloat16`) and the paramserver to its
replies (`--params_dtype bfloat16`). numpy needs eight passes and two temporaries for the
rounding (~1.5 ms for the Nature CNN's 1.69M parameters on this machine); the loop below
reads each float once (~0.13 ms). The paramserver's own kernels are in
services/paramserver/kernels.py and use the same decorator.

This module imports numba (~0.5 s), so `ba3c.tensors` imports it only when something is
first rounded to bfloat16 (`tensors.Packer` does it when it is built), never in the pools.
"""

from __future__ import annotations

from numba import njit, types


def compiled(signatures):
    """njit with these signatures, compiled now: no GIL (callers' threads run them in
    parallel), numpy's error model (no Python ZeroDivisionError checks, so loops
    vectorise), and the on-disk cache where there is one (beside the module, or numba's
    user cache directory), so that later starts load the machine code in milliseconds."""

    def decorate(fn):
        try:
            return njit(signatures, nogil=True, error_model="numpy", cache=True)(fn)
        except RuntimeError:  # no writable cache directory: compile at every start instead
            return njit(signatures, nogil=True, error_model="numpy")(fn)

    return decorate


def flat(dtype, writable: bool = False) -> types.Array:
    """A flat array at any alignment (arrays over received bytes, or slots in a packed
    buffer, are not aligned); read-only unless `writable`. Aligned or writable arrays
    convert to these types for free, so one compiled variant serves every caller."""
    return types.Array(dtype, 1, "C", readonly=not writable, aligned=False)


_NAN_BITS = 0x7FC0  # the quiet NaN numpy and TensorFlow write for bfloat16


@compiled([types.void(flat(types.uint32), flat(types.uint16, writable=True))])
def round_to_bfloat16(bits, out):
    """out[i] = float32 bits[i] rounded to the nearest bfloat16, ties to even; NaN -> the
    quiet NaN. One pass; `bits` is the float32 array viewed as uint32."""
    for i in range(bits.size):
        b = bits[i]
        if (b & 0x7FFFFFFF) > 0x7F800000:
            out[i] = _NAN_BITS
        else:
            out[i] = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
