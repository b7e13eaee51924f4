"""fxgrow.ir.spaces: union-find, refinement and status propagation."""

import pytest

from fxgrow.ir.layout import Cat, Prod
from fxgrow.ir.spaces import BLOCKED, FIXED, GROWABLE, SpaceTable, UNIT, Unalignable


def test_union_merges_status_and_size_is_checked():
    t = SpaceTable()
    a, b = t.fresh(4), t.fresh(4, status=FIXED, reason="output")
    t.unify(a, b)
    assert t.find(a.space) == t.find(b.space)
    assert t.status(a.space) == FIXED and t.reasons(a.space) == ["output"]
    with pytest.raises(Unalignable):
        t.unify(a, t.fresh(5))


def test_cut_refines_everywhere_the_space_is_used():
    t = SpaceTable()
    a = t.fresh(10)
    used_elsewhere = Prod((a, t.fresh(2, free=True)))
    left, right = t.cut(a, 3)
    assert t.norm(a) == Cat((left, right))
    # the earlier layout sees the refinement, distributed over the product
    assert t.norm(used_elsewhere) == Cat((Prod((left, used_elsewhere.factors[1])),
                                          Prod((right, used_elsewhere.factors[1]))))


def test_status_is_pushed_to_refined_parts():
    t = SpaceTable()
    a = t.fresh(6)
    t.mark(a, BLOCKED, "softmax")
    l, r = t.cut(a, 2)
    assert t.status(l.space) == BLOCKED and t.status(r.space) == BLOCKED
    b = t.fresh(6)
    l2, r2 = t.cut(b, 2)
    t.mark(l2, FIXED, "output")
    t.finalize()
    assert t.status(l2.space) == FIXED and t.status(r2.space) == GROWABLE


def test_unify_concatenations_with_different_boundaries():
    t = SpaceTable()
    x = Cat((t.fresh(2), t.fresh(6)))
    y = Cat((t.fresh(5), t.fresh(3)))
    t.unify(x, y)
    nx, ny = t.norm(x), t.norm(y)
    assert nx == ny and [p.size for p in nx.parts] == [2, 3, 3]


def test_factor_splits_a_space_into_heads():
    t = SpaceTable()
    s = t.fresh(12)
    h, d = t.factor(s, [3, 4])
    assert t.norm(s) == Prod((h, d))
    # a second view with other factors refines further
    t.unify(s, Prod((t.fresh(6), t.fresh(2))))
    assert [f.size for f in t.norm(s).factors] == [3, 2, 2]


def test_interleaving_cut_is_refused():
    t = SpaceTable()
    p = Prod((t.fresh(3), t.fresh(4)))
    with pytest.raises(Unalignable, match="interleaves"):
        t.cut(p, 2)


def test_concatenation_viewed_as_product_ties_its_blocks():
    # cat(a, b) viewed as (2, 4), as a channel shuffle after a concat does: both
    # blocks must widen by one map, over a fixed axis saying which block
    t = SpaceTable()
    a, b = t.fresh(4), t.fresh(4)
    which, inner = t.factor(Cat((a, b)), [2, 4])
    assert t.find(a.space) == t.find(b.space) and t.norm(inner) == t.norm(a)
    assert t.status(which.space) == FIXED


def test_size_one_factors_are_dropped_and_fixed():
    t = SpaceTable()
    one = t.fresh(1)
    a = t.fresh(5)
    assert t.make_prod([one, a]) == a
    assert t.status(one.space) == FIXED
    assert t.make_prod([]) == UNIT


def test_roots_are_atomic_spaces():
    t = SpaceTable()
    a = t.fresh(4)
    t.cut(a, 1)
    assert a.space not in t.roots() and len(t.roots()) == 2


def test_pair_refines_to_one_structure_and_merges_nothing():
    t = SpaceTable()
    a, b = t.fresh(6), t.fresh(6)
    h, d = t.factor(b, [2, 3])
    pairs = t.pair(a, b)  # a is refined into a fresh copy of b's (2 x 3)
    assert [(x.size, y.size) for x, y in pairs] == [(2, 2), (3, 3)]
    assert [y for _, y in pairs] == [h, d]
    assert all(t.find(x.space) != t.find(y.space) for x, y in pairs)
    assert isinstance(t.norm(a), Prod)
    # products factor to their common refinement; cats cut at both sides' bounds
    p, q = t.factor(t.fresh(12), [4, 3]), t.factor(t.fresh(12), [2, 6])
    assert [x.size for x, _ in t.pair(Prod(tuple(p)), Prod(tuple(q)))] == [2, 2, 3]
    c1 = Cat((t.fresh(2), t.fresh(4)))
    c2 = Cat((t.fresh(3), t.fresh(3)))
    assert [x.size for x, _ in t.pair(c1, c2)] == [2, 1, 3]
    with pytest.raises(Unalignable):
        t.pair(t.fresh(4), t.fresh(5))
