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

An equation with ``...`` or without ``->`` is first written out explicitly
(:func:`explicit_equation`) from the operands' ranks: ``...`` stands for
unnamed dims, broadcast right-aligned across operands like an elementwise
op's, which get letters of their own, and an implicit output is those dims
followed by the letters used once, in alphabetical order (torch's rule).  The
equation then means the same to torch and to the rule at any width, so it is
never rewritten.
"""

from __future__ import annotations

from string import ascii_letters
from typing import Dict, List, Sequence, Tuple

import torch

from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.values import TV
from .registry import RuleSet

__all__ = ["RULES", "einsum", "explicit_equation"]

RULES = RuleSet()


def explicit_equation(eq: str, ranks: Sequence[int]) -> Tuple[List[str], str]:
    """The terms and output of ``eq`` with every dim named by a letter.

    Parameters
    ----------
    eq : str
        A ``torch.einsum`` equation, with or without ``...`` and ``->``.
    ranks : sequence of int
        The rank of each operand.

    Returns
    -------
    terms : list of str
        One string of letters per operand, one letter per dim.
    out : str
        The output's letters.

    Raises
    ------
    RuleError
        Where the equation does not fit the operands' ranks.

    Notes
    -----
    ``...`` covers the dims an operand has beyond its letters; across operands
    they align from the right (``...ij,...jk`` with ranks 4 and 3), so each is
    named by one of as many fresh letters as the widest ``...`` covers, taken from
    the right.  Without ``->`` the output is the ``...`` dims followed by the
    letters used exactly once, sorted (upper case before lower, as torch orders
    them).  Without ``...`` in the output its dims are summed, as torch does.
    """
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise RuleError("operand count does not match the equation")
    if not all(c in ascii_letters for t in terms + [rhs] for c in t.replace("...", "", 1)):
        raise RuleError(f"an einsum equation fxgrow does not read: {eq!r}")
    widths = []
    for t, r in zip(terms, ranks):
        named = len(t.replace("...", ""))
        if ("..." in t and named > r) or ("..." not in t and named != r):
            raise RuleError("equation rank does not match an operand")
        widths.append(r - named if "..." in t else 0)
    fresh = [c for c in ascii_letters if c not in eq][:max(widths, default=0)]
    if len(fresh) < max(widths, default=0):
        raise RuleError("too many dims under '...' to name")
    terms = [t.replace("...", "".join(fresh[len(fresh) - w:])) for t, w in zip(terms, widths)]
    if not arrow:
        once = sorted(c for c in set("".join(terms)) if "".join(terms).count(c) == 1
                      and c not in fresh)
        return terms, "".join(fresh) + "".join(once)
    if "..." in rhs and "..." not in lhs and fresh:
        raise RuleError(f"an einsum equation fxgrow does not read: {eq!r}")
    return terms, rhs.replace("...", "".join(fresh))


@RULES.rule(torch.einsum)
def einsum(ctx) -> TV:
    eq = ctx.arg(0, "equation")
    if not isinstance(eq, str):
        raise RuleError("einsum without an equation string (the sublist form)")
    operands = list(ctx.node.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    terms, rhs = explicit_equation(eq, [ctx.tensor(n).ndim for n in operands])
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
