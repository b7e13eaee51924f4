"""Helpers several rule families share: reading a dim argument, broadcasting.

>>> dim_index(-1, 3)
2
"""

from __future__ import annotations

from typing import Any, List, Sequence

from ..errors import RuleError
from ..ir.layout import Layout

__all__ = ["dim_index", "broadcast"]


def dim_index(d: Any, ndim: int) -> int:
    """A literal dim argument as an index in ``range(ndim)`` (a RuleError otherwise)."""
    if not isinstance(d, int) or isinstance(d, bool):
        raise RuleError(f"non-literal dim {d!r}")
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise RuleError(f"dim {d} out of range")
    return d % max(ndim, 1)


def broadcast(ctx, dims_list: Sequence[Sequence[Layout]], shapes: Sequence[Sequence[int]],
              out_shape: Sequence[int]) -> List[Layout]:
    """Layouts of a broadcast result, aligning operands from the right.

    Dims of the output's size index the same neurons in every operand that
    has them, so they are unified (a residual add joins its branches); a
    size-1 dim broadcast against a larger one is fixed, since growing it
    would change the broadcast; output dims no operand gives are free.
    """
    out: List[Layout] = []
    for k in range(1, len(out_shape) + 1):
        n = out_shape[-k]
        full = [d[-k] for d, s in zip(dims_list, shapes) if len(s) >= k and s[-k] == n]
        for d, s in zip(dims_list, shapes):
            if len(s) >= k and s[-k] == 1 and n != 1:
                ctx.fix(d[-k], "broadcast against a larger dimension")
        for other in full[1:]:
            ctx.unify(full[0], other)
        out.append(full[0] if full else ctx.free(n))
    return list(reversed(out))
