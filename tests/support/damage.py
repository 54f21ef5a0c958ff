"""Hypothesis strategies that damage valid payloads, for fuzzing the strict readers."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from pycrdt import write_var_uint


@st.composite
def mutated(
    draw: st.DrawFn,
    payloads: st.SearchStrategy[bytes],
    numbers: Sequence[int],
    *,
    most: int = 3,
    junk: int = 8,
) -> bytes:
    """A payload with 1 to ``most`` of: a byte changed, one of ``numbers`` spliced in as a
    variable-length integer, a cut, or up to ``junk`` bytes added."""
    data = bytearray(draw(payloads))
    for _ in range(draw(st.integers(1, most))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["byte", "number", "cut", "append"])):
            case "byte" if data:
                data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
            case "number":
                data[at:at] = write_var_uint(draw(st.sampled_from(numbers)))
            case "cut":
                del data[at:]
            case _:
                data += draw(st.binary(min_size=1, max_size=junk))
    return bytes(data)
