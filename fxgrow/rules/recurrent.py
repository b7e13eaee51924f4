"""Recurrent layers: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``.

The hidden size is a fresh space ``H`` made by the gate rows: every
``weight_ih``, ``weight_hh`` and bias of a layer stacks its gates' rows
(LSTM ``i, f, g, o``; GRU ``r, z, n``), so their rows are ``Prod(G, H)``
with ``G`` the fixed gate count.  ``weight_hh``'s columns read the previous
hidden state and ``weight_ih``'s columns the layer's input (the model's
input features for layer 0, the previous layer's ``H`` -- ``Cat(H, H)``
when bidirectional -- above it): they are consumers.

Why copies stay copies: let hidden unit ``j`` copy unit ``g(j)``.  Its gate
rows are the copied rows, its input term reads the same input, and its
recurrent term is ``Σ_j' W_hh[., g(j')] / c_g(j') · h_g(j')``, which is the old
sum as long as the previous hidden state holds copies -- true at ``t = 0``
(zeros, or a given ``h_0``/``c_0`` laid out like ``H``) and so, by induction,
at every step: the gate pre-activations, hence the gates, the cell and the
hidden state of ``j`` equal those of ``g(j)``.  Every layer and direction
shares one ``hidden_size``, so they share one space (one index map).  The
recurrence runs along the time dim, which must be free; the batch dim
passes.  ``proj_size`` and dropout between layers in training mode block.
"""

from __future__ import annotations

from typing import Any, List

from torch import nn

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.roles import CONSUMER, FIXED, PRODUCER
from ..ir.values import TV
from .registry import RuleSet

__all__ = ["RULES", "recurrent"]

RULES = RuleSet()

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _state(ctx, v: Any, batch: List[Layout], hidden: Layout) -> None:
    """A given initial state ``(D·L, B, H)`` (or ``(D·L, H)``): its last dim is ``H``."""
    if not isinstance(v, TV):
        raise RuleError("an initial state that is not a tensor")
    if v.ndim != len(batch) + 2:
        raise RuleError("an initial state of unexpected rank")
    ctx.fix(v.dims[0], "the layers and directions of a recurrent state")
    for a, b in zip(v.dims[1:-1], batch):
        ctx.unify(a, b)
    ctx.unify(v.dims[-1], hidden)


@RULES.rule(*_GATES)
def recurrent(ctx) -> Any:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (see the module documentation)."""
    m = ctx.module
    gates = next(n for cls, n in _GATES.items() if isinstance(m, cls))
    if getattr(m, "proj_size", 0):
        raise RuleError("an LSTM with proj_size has no rule yet")
    if not isinstance(ctx.spec(ctx.arg(0, "input")), TensorSpec):
        raise RuleError("a packed sequence has no rule yet")
    x = ctx.tensor(ctx.arg(0, "input"))
    if x.ndim not in (2, 3):
        raise RuleError("input of unexpected rank")
    time = 1 if (m.batch_first and x.ndim == 3) else 0
    batch = [d for i, d in enumerate(x.dims[:-1]) if i != time]
    ctx.mixes(x.dims[time], "a recurrence runs along this dim, carrying each position to the "
                            "next")
    hidden = ctx.fresh(m.hidden_size)
    if m.dropout and m.training and m.num_layers > 1:
        ctx.block(hidden, "dropout between recurrent layers in training mode draws a mask per "
                          "neuron (call model.eval() before growing)")
    g = ctx.table.fresh(gates, status=FIXED, reason=f"the gates of `{ctx.node.target}`")
    rows = ctx.prod([g, hidden]) if gates > 1 else hidden
    directions = ("", "_reverse") if m.bidirectional else ("",)
    features = ctx.cat([hidden] * len(directions)) if len(directions) > 1 else hidden
    layer_input = x.dims[-1]
    for layer in range(m.num_layers):
        for suffix in directions:
            ih, hh = f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"
            ctx.unify(ctx.param(ih, 0, PRODUCER), rows)
            ctx.unify(ctx.param(ih, 1, CONSUMER), layer_input)
            ctx.unify(ctx.param(hh, 0, PRODUCER), rows)
            ctx.unify(ctx.param(hh, 1, CONSUMER), hidden)
            if m.bias:
                for b in (f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"):
                    ctx.unify(ctx.param(b, 0, PRODUCER), rows)
        layer_input = features
    hx = ctx.arg(1, "hx", None)
    states = 2 if isinstance(m, nn.LSTM) else 1
    if hx is not None:
        given = ctx.value(hx)  # LSTM: (h_0, c_0), a tuple node or a tuple of nodes
        if states == 2 and not (isinstance(given, tuple) and len(given) == 2):
            raise RuleError("an LSTM state that is not a pair (h_0, c_0)")
        for h0 in (given if states == 2 else (given,)):
            _state(ctx, h0, batch, hidden)
    ctx.module_attr("input_size", ctx.size(x.dims[-1]))
    ctx.module_attr("hidden_size", ctx.size(hidden))
    out = list(x.dims)
    out[-1] = features
    spec = ctx.out_spec
    h_n = TV((ctx.free(spec[1].shape[0] if states == 1 else spec[1][0].shape[0]),)
             + tuple(batch) + (hidden,))
    if states == 1:
        return TV(tuple(out)), h_n
    c_n = TV((ctx.free(spec[1][1].shape[0]),) + tuple(batch) + (hidden,))
    return TV(tuple(out)), (h_n, c_n)
