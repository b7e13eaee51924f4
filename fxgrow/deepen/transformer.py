"""Zero-residual transformer sub-blocks for :func:`fxgrow.deepen` (``block=``).

On a token sequence ``x`` of shape ``(N, T, C)`` (neurons in the last dim)
:func:`fxgrow.deepen` can insert, instead of its default
``x + L2(act(BN(L1(x))))``:

* ``block="mlp"``: ``x + W2(act(W1(norm(x))))``;
* ``block="attention"``: ``x + Wo(attn(norm(x)))``, multi-head
  self-attention with separate q/k/v ``Linear`` layers and
  ``F.scaled_dot_product_attention``;
* ``block="transformer"``: the attention sub-block, then the MLP sub-block
  (a pre-norm transformer layer).

``W2`` and ``Wo`` (weights and biases) are zero, so each branch adds exactly
``0`` and the function is unchanged -- whatever the norm, the activation, the
attention pattern or the mode.  The other layers are freshly initialised, so
the gradient of ``W2``/``Wo`` is non-zero from the first step.

The blocks are written into the graph op by op (``Linear`` and ``LayerNorm``
as leaf modules, ``unflatten``/``transpose``/SDPA/``flatten`` as functions,
the head split with literal sizes), so :func:`fxgrow.analyze` sees the MLP's
hidden width and the attention's heads as fresh growable groups and
:func:`fxgrow.widen` can grow them afterwards.  The containers' own
``forward`` computes the same function for standalone use, with the sizes
they were built with; in the grown model the graph is what runs.

Defaults are read from the model where that is cheap (:func:`model_defaults`):
the head count of an attention over the same width, causal when the model's
SDPA calls are causal, RMSNorm when the model uses one (LayerNorm otherwise,
with the model's ``eps``); otherwise ``C // 64`` heads where 64 divides
``C``, else the largest divisor of ``C`` not above ``C // 8``; MLP width
``4 C``; GELU.

Examples
--------
>>> import torch
>>> spec = resolve(BlockSpec("transformer"), channels=16, defaults={})
>>> (spec.heads, spec.hidden, spec.norm, spec.activation.name, spec.causal)
(2, 64, 'layernorm', 'GELU', False)
>>> block = TransformerBlock(spec)
>>> x = torch.randn(2, 5, 16)
>>> torch.equal(block(x), x)          # both branches add exactly zero
True
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import meta
from ..errors import SpecError
from ..ops.activations import Activation
from ..ops.aten import canonical_target
from ..ops.layers import module_of, type_names

__all__ = ["BlockSpec", "BLOCKS", "as_spec", "resolve", "model_defaults", "RMSNorm", "AttentionBranch",
           "MLPBranch", "TransformerBlock"]

#: the ``block=`` kinds
BLOCKS = ("mlp", "attention", "transformer")

_ACTS = {"gelu": ("GELU", nn.GELU), "gelu_tanh": ("GELU", lambda: nn.GELU(approximate="tanh")),
         "relu": ("ReLU", nn.ReLU), "silu": ("SiLU", nn.SiLU), "tanh": ("Tanh", nn.Tanh)}


@dataclass(frozen=True)
class BlockSpec:
    """A transformer sub-block to insert: ``deepen(..., block=BlockSpec(...))``.

    ``block="mlp"`` is short for ``BlockSpec("mlp")``; unset fields take the
    defaults described in the module docs.

    Parameters
    ----------
    kind : {"mlp", "attention", "transformer"}
    heads : int, optional
        Attention heads; must divide the location's width ``C``.
    hidden : int or float, optional
        MLP hidden width: an int, or a float multiple of ``C`` (default 4.0).
    norm : {"layernorm", "rmsnorm"}, optional
        The pre-norm; default RMSNorm if the model uses one, else LayerNorm.
    eps : float, optional
        The norm's epsilon; default the model's (1e-5 LayerNorm, 1e-6 RMSNorm).
    activation : str or nn.Module, optional
        ``"gelu"`` (default), ``"gelu_tanh"``, ``"relu"``, ``"silu"``,
        ``"tanh"``, or a module (copied).
    causal : bool, optional
        Causal attention; default: causal if the model's SDPA calls are.
    """

    kind: str
    heads: Optional[int] = None
    hidden: Optional[Union[int, float]] = None
    norm: Optional[str] = None
    eps: Optional[float] = None
    activation: Any = None
    causal: Optional[bool] = None


@dataclass(frozen=True)
class ResolvedBlock:
    """A :class:`BlockSpec` with every size and option decided for one location."""

    kind: str
    channels: int
    heads: int
    hidden: int
    norm: str
    eps: float
    activation: Activation
    causal: bool
    dtype: torch.dtype = torch.float32

    @property
    def attention(self) -> bool:
        return self.kind in ("attention", "transformer")

    @property
    def mlp(self) -> bool:
        return self.kind in ("mlp", "transformer")

    def record(self) -> Dict[str, object]:
        rec: Dict[str, object] = {"block": self.kind, "norm": self.norm}
        if self.attention:
            rec.update(heads=self.heads, causal=self.causal)
        if self.mlp:
            rec.update(hidden=self.hidden)
        return rec


def as_spec(block: Any) -> Optional[BlockSpec]:
    """``None`` / a kind name / a :class:`BlockSpec` -> a BlockSpec (or None)."""
    if block is None or isinstance(block, BlockSpec):
        spec = block
    elif isinstance(block, str):
        spec = BlockSpec(block)
    else:
        raise SpecError(f"block must be one of {BLOCKS} or a BlockSpec, got {block!r}")
    if spec is not None and spec.kind not in BLOCKS:
        raise SpecError(f"unknown block {spec.kind!r}; choose one of {BLOCKS}")
    return spec


def _activation(act: Any) -> Activation:
    if act is None:
        act = "gelu"
    if isinstance(act, str):
        if act not in _ACTS:
            raise SpecError(f"unknown activation {act!r}; choose one of {sorted(_ACTS)} "
                            "or pass a module")
        name, make = _ACTS[act]
        return Activation(name, False, make)
    if isinstance(act, nn.Module):
        return Activation(type(act).__name__, False, lambda: copy.deepcopy(act))
    raise SpecError(f"activation must be a name or an nn.Module, got {act!r}")


def _default_heads(c: int) -> int:
    if c % 64 == 0:
        return c // 64
    return max(h for h in range(1, max(1, c // 8) + 1) if c % h == 0)


def model_defaults(gm: fx.GraphModule) -> Dict[str, Any]:
    """What the model itself suggests: heads per width, causal, norm kind and eps.

    Heads: ``nn.MultiheadAttention`` modules (also inside a leaf
    ``nn.TransformerEncoder``), and SDPA/matmul calls on ``(N, H, T, D)``
    tensors (width ``H * D``).  Causal: any SDPA call with ``is_causal=True``.
    """
    heads: Dict[int, int] = {}
    causal = False
    for m in gm.modules():
        if isinstance(m, nn.MultiheadAttention):
            heads.setdefault(m.embed_dim, m.num_heads)
    ln_eps = rms_eps = None
    for n in gm.graph.nodes:
        t = canonical_target(n) if n.op == "call_function" else n.target
        if t in (F.scaled_dot_product_attention, torch.matmul, operator.matmul) or \
                (n.op == "call_method" and t == "matmul"):
            q = n.args[0] if n.args else None
            spec = meta.shape(q) if isinstance(q, fx.Node) else None
            shape = getattr(spec, "shape", ())
            if len(shape) == 4:
                heads.setdefault(shape[1] * shape[3], shape[1])
            if t is F.scaled_dot_product_attention:
                is_causal = n.kwargs.get("is_causal", n.args[5] if len(n.args) > 5 else False)
                causal = causal or is_causal is True
        m = module_of(n)
        if isinstance(m, nn.LayerNorm) and ln_eps is None:
            ln_eps = m.eps
        elif t is F.layer_norm and ln_eps is None and len(n.args) > 4:
            ln_eps = n.args[4]
    for m in gm.modules():
        if "RMSNorm" in type(m).__name__ and rms_eps is None:
            rms_eps = getattr(m, "eps", None) or getattr(m, "variance_epsilon", None)
    rms = any("RMSNorm" in name for name in type_names(gm))
    return {"heads": heads, "causal": causal, "norm": "rmsnorm" if rms else "layernorm",
            "eps": {"layernorm": ln_eps or 1e-5, "rmsnorm": rms_eps or 1e-6}}


def resolve(spec: BlockSpec, channels: int, defaults: Dict[str, Any],
            dtype: torch.dtype = torch.float32) -> ResolvedBlock:
    """Fill in ``spec``'s unset fields for a location of width ``channels``.

    Raises
    ------
    SpecError
        Heads that do not divide ``channels``, a bad width, norm or activation.
    """
    c = channels
    heads = spec.heads if spec.heads is not None else \
        defaults.get("heads", {}).get(c) or _default_heads(c)
    if not isinstance(heads, int) or heads < 1 or c % heads:
        raise SpecError(f"heads={heads!r} must be a positive int dividing the width {c}")
    hidden = 4.0 if spec.hidden is None else spec.hidden
    if isinstance(hidden, float):
        hidden = max(1, round(hidden * c))
    if not isinstance(hidden, int) or hidden < 1:
        raise SpecError(f"hidden={spec.hidden!r} must be a positive int or float multiple")
    norm = spec.norm or defaults.get("norm", "layernorm")
    if norm not in ("layernorm", "rmsnorm"):
        raise SpecError(f"norm must be 'layernorm' or 'rmsnorm', got {norm!r}")
    eps = spec.eps if spec.eps is not None else \
        defaults.get("eps", {}).get(norm, 1e-5 if norm == "layernorm" else 1e-6)
    causal = spec.causal if spec.causal is not None else bool(defaults.get("causal", False))
    return ResolvedBlock(spec.kind, c, heads, hidden, norm, float(eps),
                         _activation(spec.activation), causal, dtype)


# -- modules ----------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dim (written into the graph as plain ops)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def emit(self, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
        # plain ops rather than a leaf: the analysis reads them as a written-out RMSNorm
        # (zero-padded to any width, as the model's own) on torch versions without nn.RMSNorm
        sq = graph.call_method("pow", (x, 2))
        ms = graph.call_method("mean", (sq, -1), {"keepdim": True})
        r = graph.call_function(torch.rsqrt, (graph.call_function(operator.add, (ms, self.eps)),))
        y = graph.call_function(operator.mul, (x, r))
        return graph.call_function(operator.mul, (y, graph.get_attr(f"{prefix}.weight")))


def _norm(spec: ResolvedBlock) -> nn.Module:
    if spec.norm == "rmsnorm":
        return RMSNorm(spec.channels, spec.eps)
    return nn.LayerNorm(spec.channels, eps=spec.eps)


def _emit_norm(norm: nn.Module, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
    if isinstance(norm, RMSNorm):
        return norm.emit(graph, x, prefix)
    return graph.call_module(prefix, (x,))


def _zero(layer: nn.Linear) -> nn.Linear:
    with torch.no_grad():  # the branch adds exactly zero: the function is unchanged
        layer.weight.zero_()
        layer.bias.zero_()
    return layer


class AttentionBranch(nn.Module):
    """``out(attn(norm(x)))`` with ``out`` zero: multi-head self-attention over dim -2."""

    def __init__(self, spec: ResolvedBlock) -> None:
        super().__init__()
        c = spec.channels
        self.heads, self.causal = spec.heads, spec.causal
        self.norm = _norm(spec)
        self.q, self.k, self.v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.out = _zero(nn.Linear(c, c))

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (..., T, C) -> (..., H, T, C/H)
        return t.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        y = F.scaled_dot_product_attention(self._split(self.q(h)), self._split(self.k(h)),
                                           self._split(self.v(h)), is_causal=self.causal)
        return self.out(y.transpose(-3, -2).flatten(-2))

    def emit(self, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
        h = _emit_norm(self.norm, graph, x, f"{prefix}.norm")
        d = self.q.out_features // self.heads

        def split(name: str) -> fx.Node:
            t = graph.call_module(f"{prefix}.{name}", (h,))
            # literal (heads, head dim): the analysis factors the width into them, and
            # widening rewrites the literal when heads (or the value head dim) grow
            t = graph.call_function(torch.unflatten, (t, -1, (self.heads, d)))
            return graph.call_method("transpose", (t, -3, -2))

        q, k, v = split("q"), split("k"), split("v")
        y = graph.call_function(F.scaled_dot_product_attention, (q, k, v),
                                {"is_causal": self.causal})
        y = graph.call_function(torch.flatten, (graph.call_method("transpose", (y, -3, -2)), -2))
        return graph.call_module(f"{prefix}.out", (y,))


class MLPBranch(nn.Module):
    """``fc2(act(fc1(norm(x))))`` with ``fc2`` zero."""

    def __init__(self, spec: ResolvedBlock) -> None:
        super().__init__()
        self.norm = _norm(spec)
        self.fc1 = nn.Linear(spec.channels, spec.hidden)
        self.act = spec.activation.make()
        self.fc2 = _zero(nn.Linear(spec.hidden, spec.channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))

    def emit(self, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
        y = _emit_norm(self.norm, graph, x, f"{prefix}.norm")
        for name in ("fc1", "act", "fc2"):
            y = graph.call_module(f"{prefix}.{name}", (y,))
        return y


class TransformerBlock(nn.Module):
    """``x + attn(x)`` then ``+ mlp(.)``, as ``spec.kind`` asks; both branches start at zero.

    Children ``attn`` (:class:`AttentionBranch`) and/or ``mlp``
    (:class:`MLPBranch`), so parameters are named e.g.
    ``<location>_deepen0.attn.q.weight`` and ``<location>_deepen0.mlp.fc1.weight``.
    """

    def __init__(self, spec: ResolvedBlock) -> None:
        super().__init__()
        self.spec = spec
        if spec.attention:
            self.attn = AttentionBranch(spec)
        if spec.mlp:
            self.mlp = MLPBranch(spec)

    def _branches(self):
        return [(n, getattr(self, n)) for n in ("attn", "mlp") if hasattr(self, n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, branch in self._branches():
            x = x + branch(x)
        return x

    def emit(self, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
        for name, branch in self._branches():
            x = graph.call_function(operator.add, (x, branch.emit(graph, x, f"{prefix}.{name}")))
        return x


def scale_note(spec: ResolvedBlock) -> str:
    """Why the inserted block is exact, for the plan's ``why``."""
    parts = {"mlp": "x + W2(act(W1(norm(x)))) with W2 = 0",
             "attention": "x + Wo(attn(norm(x))) with Wo = 0",
             "transformer": "attention then MLP sub-block, Wo = W2 = 0"}
    return f"{spec.kind} sub-block: {parts[spec.kind]}, so each branch adds exactly 0"

