"""``torch.einsum``: letters name dims, so the rule is read off the equation.

Dims that share a letter index the same neurons and are unified (size-1
dims broadcast and are fixed).  Letters missing from the output are summed
over: between two operands that would count copies, so the two sides are
recorded as contraction partners (:mod:`fxgrow.analysis.contraction` divides one
side's producers, or blocks both); a letter summed within one operand is
blocked.  Letters in the output pass through, like the batch dims of a matmul; between
two activations, a letter kept from one operand only is a per-head dim
(``ctx.head_dim``: a plain widening factor leaves it) where the batch letters
hold heads (``bhij,bhjd->bhid``: ``d`` is the value head dim).
"""

from __future__ import annotations

from typing import Dict, List

import torch

from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.values import TV
from .registry import RuleSet

__all__ = ["RULES", "einsum"]

RULES = RuleSet()


@RULES.rule(torch.einsum)
def einsum(ctx) -> TV:
    eq = ctx.arg(0, "equation")
    if not isinstance(eq, str) or "->" not in eq or "..." in eq:
        raise RuleError("einsum needs an explicit '->' equation without '...'")
    operands = list(ctx.node.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    lhs, rhs = eq.replace(" ", "").split("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise RuleError("operand count does not match the equation")
    by_letter: Dict[str, List[Layout]] = {}
    sizes: Dict[str, int] = {}
    for term, node in zip(terms, operands):
        tv, shape = ctx.tensor(node), ctx.spec(node).shape
        if len(term) != len(shape):
            raise RuleError("equation rank does not match an operand")
        for letter, lay, n in zip(term, tv.dims, shape):
            if n == 1 and sizes.get(letter, 1) != 1:
                ctx.fix(lay, "broadcast against a larger dimension")
                continue
            if n != 1 and sizes.get(letter, 1) == 1 and letter in by_letter:
                for old in by_letter[letter]:
                    ctx.fix(old, "broadcast against a larger dimension")
                by_letter[letter] = []
            sizes[letter] = max(n, sizes.get(letter, 1))
            by_letter.setdefault(letter, []).append(lay)
    for letter, lays in by_letter.items():
        if letter not in rhs and len(lays) == 2 and len(operands) == 2 and \
                all(term.count(letter) == 1 for term in terms):
            # summed over between the two operands: contraction partners
            ctx.contract(lays[0], lays[1], "summed over by einsum (copies would be counted twice)",
                         operands=operands)
            continue
        for other in lays[1:]:
            ctx.unify(lays[0], other)
        if letter not in rhs and lays and len(operands) > 1:
            ctx.block(lays[0], "summed over by einsum (copies would be counted twice)")
        elif letter not in rhs and lays:
            ctx.block(lays[0], "summed over by einsum")
    if len(operands) == 2 and not any(getattr(n, "op", None) == "get_attr" for n in operands):
        # between activations (`bhij,bhjd->bhid`): with heads in the batch letters, a
        # letter kept from one operand only is a per-head dim (the value head dim)
        batch = [by_letter[l][0] for l in rhs if all(l in t for t in terms) and by_letter.get(l)]
        for letter in rhs:
            if sum(letter in t for t in terms) == 1 and by_letter.get(letter):
                ctx.head_dim(by_letter[letter][0], batch)
    return TV(tuple(by_letter[l][0] if by_letter.get(l) else ctx.free(sizes[l]) for l in rhs))
