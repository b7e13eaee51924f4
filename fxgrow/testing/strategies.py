"""Hypothesis strategies that draw random architectures, for fuzzing fxgrow.

Every strategy draws a :class:`~fxgrow.testing.spec.Drawn` value: a
``(model, example_input)`` pair (unpack it like a tuple) that also carries
the :class:`~fxgrow.testing.spec.ArchSpec` it was built from.  hypothesis is
an optional dependency of fxgrow: it is imported when this module is.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch

try:
    from hypothesis import strategies as st
    from hypothesis import note as _note
except ImportError as _e:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "fxgrow.testing's strategies need the optional dependency `hypothesis`; install it "
        "with `pip install hypothesis`") from _e

from .emitter import Emitter
from .spec import RMSNORM, ArchSpec, Drawn
from .vocabulary import ACTIVATIONS, REDUCTIONS, UNKNOWN_OPS

__all__ = ["architectures", "mlps", "cnns", "transformers", "arch_specs", "one_size_per_family"]


def _divisors(n: int, lo: int = 2) -> List[int]:
    return [g for g in range(lo, n + 1) if n % g == 0]


def _acts(kind: str) -> st.SearchStrategy:
    # nn.PReLU(c) has one slope per channel of dim 1: not for (N, T, C)
    return st.sampled_from([a for a in ACTIVATIONS if kind != "seq" or "{c}" not in a])


@st.composite
def _layer(draw, em: Emitter, max_width: int, allow: Sequence[str]) -> Dict[str, Any]:
    x = em.x
    ops = [o for o in em.candidates() if o in allow] or ["act"]
    op = draw(st.sampled_from(ops))
    width = st.integers(1, max_width)
    L: Dict[str, Any] = {"op": op}
    if op == "linear":
        L.update(out=draw(width), bias=draw(st.booleans()))
    elif op == "conv":
        kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
        k = draw(st.sampled_from([1, 3]))
        if kind == "depthwise" and x.c >= 2:
            L.update(out=x.c * draw(st.integers(1, max(1, max_width // x.c))), k=k, groups=x.c)
        elif kind == "grouped" and _divisors(x.c):
            g = draw(st.sampled_from(_divisors(x.c)))
            L.update(out=g * draw(st.integers(1, max(1, max_width // g))), k=k, groups=g)
        else:
            L.update(out=draw(width), k=k, bias=draw(st.booleans()),
                     transposed=draw(st.integers(0, 4)) == 0)
    elif op == "act":
        L.update(fn=draw(_acts(x.kind)))
    elif op == "norm":
        rms = ["rms", "rms_w"] if RMSNORM else ["rms_w"]
        kinds = {"vec": ["bn", "ln", "ln_f"] + rms, "seq": ["ln", "ln_f"] + rms,
                 "img": ["bn", "gn"]}[x.kind]
        L.update(kind=draw(st.sampled_from(kinds)))
        if L["kind"] == "gn":
            L.update(groups=draw(st.sampled_from([1] + _divisors(x.c))))
    elif op == "scale":
        L.update(mul=draw(st.booleans()))
    elif op == "unknown":
        L.update(fn=draw(st.sampled_from(UNKNOWN_OPS)))
    elif op == "shared":
        L.update(act=draw(_acts(x.kind)))
    elif op == "repeat":
        L.update(how=draw(st.sampled_from(["repeat", "interleave"])), r=draw(st.integers(2, 3)))
    elif op == "pad":
        L.update(pad=(draw(st.integers(0, 2)), draw(st.integers(0, 2))))
    elif op == "reduce":
        L.update(fn=draw(st.sampled_from(REDUCTIONS)))
    elif op == "residual":
        L.update(hidden=draw(width), act=draw(_acts(x.kind)),
                 k=draw(st.sampled_from([1, 3])) if x.kind == "img" else 1)
    elif op == "branches":
        same = [i for i, t in enumerate(em.taps) if t.same_frame(x)]
        srcs = [-1] + draw(st.lists(st.sampled_from(same), max_size=3)) if same else [-1]
        srcs += [-1] * draw(st.integers(0 if len(srcs) > 1 else 1, 2))
        L.update(out=draw(width), srcs=srcs)
    elif op == "tapadd":
        same = [i for i, t in enumerate(em.taps) if t.same_frame(x) and t.c == x.c]
        L.update(srcs=draw(st.lists(st.sampled_from(same), min_size=1, max_size=3)))
    elif op == "cat":
        same = [i for i, t in enumerate(em.taps) if t.same_frame(x)]
        src = st.one_of(st.just("x"), st.tuples(st.just("proj"), st.integers(1, max_width)),
                        *([st.sampled_from(same)] if same else []))
        L.update(srcs=["x"] + draw(st.lists(src, min_size=1, max_size=3)))
    elif op == "split":
        how = draw(st.sampled_from(["split", "chunk", "slice"]))
        if how == "chunk":
            L.update(how=how, k=draw(st.integers(2, min(x.c, 4))))
        elif how == "slice":
            s = draw(st.integers(1, x.c - 1))
            L.update(how=how, sizes=[s], start=draw(st.integers(0, x.c - s)))
        else:
            cuts = sorted(draw(st.sets(st.integers(1, x.c - 1), min_size=1, max_size=3)))
            bounds = [0] + cuts + [x.c]
            L.update(how=how, sizes=[b - a for a, b in zip(bounds, bounds[1:])])
        if how != "slice":
            sizes = ([len(p) for p in torch.arange(x.c).chunk(L["k"])] if how == "chunk"
                     else L["sizes"])
            thens = ["first", "rev", "proj"] + (["glu"] if len(sizes) >= 2
                                                 and sizes[0] == sizes[1] else [])
            L.update(then=draw(st.sampled_from(thens)))
            if L["then"] == "proj":
                L.update(out=draw(width))
    elif op == "pool":
        L.update(how=draw(st.sampled_from(["mean", "first"] if x.kind == "seq"
                                          else ["max", "avg"])))
    elif op == "se":
        L.update(hidden=draw(width), how=draw(st.sampled_from(["index", "view", "unsqueeze"])))
    elif op == "shuffle":
        L.update(groups=draw(st.sampled_from(_divisors(x.c))), literal=draw(st.booleans()))
    elif op == "flatten":
        L.update(how=draw(st.sampled_from(["flatten", "view", "module", "gap", "adaptive",
                                                       "reshape"])))
    elif op == "attn":
        L.update(heads=draw(st.integers(1, 3)), head_dim=draw(st.integers(1, 4)),
                 packed=draw(st.booleans()), residual=draw(st.booleans()),
                 sdpa=draw(st.booleans()), view3=draw(st.booleans()), rope=draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        L["tap"] = True
    return L


_ALL_OPS = ("linear", "conv", "act", "norm", "scale", "unknown", "reduce", "residual",
            "shared", "repeat", "pad",
            "branches", "tapadd", "cat", "split", "pool", "se", "shuffle", "flatten", "attn")


@st.composite
def arch_specs(draw, family: Optional[str] = None, *, max_layers: int = 6, max_width: int = 12,
               ops: Sequence[str] = _ALL_OPS, tail: bool = True) -> ArchSpec:
    """Draw an :class:`ArchSpec` (``family`` None: any of mlp, cnn, transformer).

    Parameters
    ----------
    family : {"mlp", "cnn", "transformer"}, optional
    max_layers : int
        Layers drawn (not counting an optional Linear head).
    max_width : int
        Largest width drawn for a layer (and the input's channel count).
    ops : sequence of str
        Layer kinds to draw from (default: all); e.g. leave out
        ``"unknown"`` and ``"reduce"`` for models without blocking ops.
    tail : bool
        Allow a final Linear head (so most groups are inner, growable ones).
    """
    family = family or draw(st.sampled_from(["mlp", "cnn", "transformer"]))
    c = st.integers(1, max_width)
    if family == "mlp":
        inp = {"kind": "vec", "c": draw(c), "n": 3}
    elif family == "cnn":
        nd = draw(st.sampled_from([2, 1]))
        inp = {"kind": "img", "c": draw(c), "n": 2,
               "sp": tuple(draw(st.integers(1, 4)) for _ in range(nd))}
    else:
        inp = {"kind": draw(st.sampled_from(["seq", "tokens"])), "c": draw(c), "n": 2,
               "sp": (draw(st.integers(1, 4)),), "vocab": 7}
    em = Emitter(inp)
    layers: List[Dict[str, Any]] = []
    for _ in range(draw(st.integers(1, max_layers))):
        layer = draw(_layer(em, max_width, ops))
        em.emit(layer)
        layers.append(layer)
    if tail and draw(st.booleans()):
        if em.x.kind == "img":
            layers.append({"op": "flatten", "how": "gap"})
            em.emit(layers[-1])
        layer = {"op": "linear", "out": draw(st.integers(1, 4)), "bias": True}
        em.emit(layer)
        layers.append(layer)
    return ArchSpec(family, inp, layers, seed=draw(st.integers(0, 2 ** 16)))


def _build(spec: ArchSpec) -> Drawn:
    drawn = spec.build()
    try:
        _note(f"drawn architecture:\n{spec.to_code()}")
    except Exception:  # outside a hypothesis test (e.g. .example())
        pass
    return drawn


def architectures(family: Optional[str] = None, **kwargs) -> st.SearchStrategy:
    """Random ``Drawn((model, example_input), spec)`` of any family.

    Keyword arguments go to :func:`arch_specs`.  On a failure the drawn
    model's code is printed (hypothesis ``note``).
    """
    return arch_specs(family, **kwargs).map(_build)


def mlps(**kwargs) -> st.SearchStrategy:
    """Random MLP-like models on ``(N, C)`` inputs."""
    return architectures("mlp", **kwargs)


def cnns(**kwargs) -> st.SearchStrategy:
    """Random convolutional models on ``(N, C, H, W)`` or ``(N, C, L)`` inputs."""
    return architectures("cnn", **kwargs)


def transformers(**kwargs) -> st.SearchStrategy:
    """Random attention models on ``(N, T, C)`` inputs or token ids."""
    return architectures("transformer", **kwargs)


def one_size_per_family(analysis, spec: Dict[int, Any]) -> Dict[int, Any]:
    """``spec`` with groups that share an index map (the two sides of a product between
    activations, see :mod:`fxgrow.analysis.contraction`) asked for one size: the first drawn."""
    return {gid: spec[next(f for f in analysis.family(gid) if f in spec)] for gid in spec}
