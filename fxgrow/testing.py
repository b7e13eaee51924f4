"""Hypothesis strategies that draw random architectures, for fuzzing fxgrow.

Every strategy draws a :class:`Drawn` value: a ``(model, example_input)``
pair (unpack it like a tuple) that also carries the :class:`ArchSpec` it was
built from.  The spec is a short, declarative list of layer dicts, so
hypothesis shrinks a failing example to a small model, and
:meth:`ArchSpec.to_code` prints that model as a self-contained PyTorch script
(the drawn model *is* that script, executed).

>>> from hypothesis import given
>>> from fxgrow.testing import architectures
>>> @given(architectures())
... def test_widen_is_exact(drawn):
...     model, x = drawn
...     ...

Strategies
----------
``architectures()``
    Any of the three families below.
``mlps()``
    ``(N, C)`` stacks: Linear, BatchNorm1d, LayerNorm, activations,
    residual blocks, adds joining several producers, concat, split/chunk,
    learned scales, reductions and ops fxgrow has no rule for.
``cnns()``
    ``(N, C, H, W)`` or ``(N, C, L)`` stacks: ConvNd (plain, grouped,
    depthwise), BatchNorm, GroupNorm, pooling, SE gates, channel shuffle,
    residual blocks, concat/split, then flatten (or global pooling) into an
    MLP tail.
``transformers()``
    ``(N, T, C)`` stacks (optionally from token ids through an Embedding):
    attention blocks with random heads (plain PyTorch q/k/v, or packed
    qkv), LayerNorm, MLP blocks, then pooling into an MLP tail.

Models are built in float64 (so the 1e-10 verification tolerance separates
exact from wrong), in eval mode, with BatchNorm statistics perturbed as a
trained model's are.  hypothesis is an optional dependency of fxgrow: it is
imported when this module is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    from hypothesis import strategies as st
    from hypothesis import note as _note
except ImportError as _e:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "fxgrow.testing needs the optional dependency `hypothesis`; install it with "
        "`pip install hypothesis`") from _e

import torch
from torch import nn

__all__ = ["ArchSpec", "Drawn", "architectures", "mlps", "cnns", "transformers",
           "arch_specs", "perturb_norms", "one_size_per_family", "ACTIVATIONS", "UNKNOWN_OPS",
           "REDUCTIONS"]


# -- vocabulary -------------------------------------------------------------------
#: Activations, as code: ``nn.X(...)`` is a module, ``{x}`` marks a functional form.
ACTIVATIONS: Tuple[str, ...] = (
    "nn.ReLU()", "nn.ReLU6()", "nn.LeakyReLU(0.1)", "nn.GELU()", "nn.SiLU()", "nn.Sigmoid()",
    "nn.Tanh()", "nn.Hardswish()", "nn.Hardsigmoid()", "nn.Hardtanh()", "nn.ELU()",
    "nn.SELU()", "nn.CELU()", "nn.Softplus()", "nn.Mish()", "nn.Softsign()", "nn.Tanhshrink()",
    "nn.LogSigmoid()", "nn.Threshold(0.1, 0.0)", "nn.Hardshrink(0.3)", "nn.Softshrink(0.3)",
    "nn.Identity()", "nn.Dropout(0.5)", "nn.PReLU()", "nn.PReLU({c})",
    "F.relu({x})", "F.relu6({x})", "F.leaky_relu({x}, 0.2)", "F.gelu({x})", "F.silu({x})",
    "F.mish({x})", "torch.sigmoid({x})", "torch.tanh({x})", "F.hardswish({x})",
    "F.hardsigmoid({x})", "F.hardtanh({x})", "F.elu({x})", "F.selu({x})", "F.celu({x})",
    "F.softplus({x})", "F.softsign({x})", "F.logsigmoid({x})", "F.tanhshrink({x})",
    "F.hardshrink({x})", "F.softshrink({x})", "F.dropout({x}, 0.5, self.training)",
    "torch.abs({x})", "torch.neg({x})", "torch.square({x})", "torch.sin({x})",
    "torch.cos({x})", "torch.erf({x})", "torch.clamp({x}, -1.0, 1.0)",
    "{x}.relu()", "{x}.sigmoid()", "{x}.tanh()", "{x}.abs()", "{x}.clamp(min=0.0)",
    "torch.relu({x})", "({x} * 0.5)", "({x} + 1.0)",
)

#: Ops fxgrow has no rule for (``{d}`` is the channel dim): they must block.
UNKNOWN_OPS: Tuple[str, ...] = (
    "torch.flip({x}, [{d}])", "torch.roll({x}, 1, {d})", "F.normalize({x}, dim={d})",
    "torch.cummax({x}, dim={d})[0]", "{x}.sort(dim={d})[0]", "torch.atan({x})",
    "torch.sinh({x})", "torch.special.expit({x})",
)

#: Reductions over the channel dim combined back with the tensor.
REDUCTIONS: Tuple[str, ...] = (
    "F.softmax({x}, dim={d})", "torch.log_softmax({x}, dim={d})",
    "({x} - {x}.mean({d}, keepdim=True))", "({x} - {x}.sum({d}, keepdim=True))",
    "({x} * {x}.amax({d}, keepdim=True))", "({x} - {x}.logsumexp({d}, keepdim=True))",
    "({x} / ({x}.var({d}, keepdim=True, correction=0) + 1.0))",
    "({x} / {x}.size({d}))", "({x} * {x}.shape[{d}] ** -0.5)",
)


# -- the spec -----------------------------------------------------------------------
@dataclass
class ArchSpec:
    """A random architecture as data.

    Attributes
    ----------
    family : {"mlp", "cnn", "transformer"}
    input : dict
        ``{"kind": "vec"|"img"|"seq"|"tokens", "c": channels, "sp": spatial sizes
        (img: (H, W) or (L,); seq/tokens: (T,)), "n": batch, "vocab": int}``.
    layers : list of dict
        One dict per layer, ``{"op": ..., ...}``; see the ``_emit_*`` functions.
    seed : int
        Seeds the weights and the example input.
    """

    family: str
    input: Dict[str, Any]
    layers: List[Dict[str, Any]] = field(default_factory=list)
    seed: int = 0

    def to_code(self) -> str:
        """A self-contained script defining ``Net`` and ``make()`` for this spec."""
        return _Emitter.render(self)

    def build(self) -> "Drawn":
        """Execute :meth:`to_code` and return ``Drawn((model, example_input), spec)``."""
        code = self.to_code()
        ns: Dict[str, Any] = {"__name__": "fxgrow_testing_generated"}
        exec(compile(code, "<fxgrow.testing ArchSpec>", "exec"), ns)
        model, x = ns["make"]()
        return Drawn((model, x), self)

    def __str__(self) -> str:
        return self.to_code()


class Drawn(tuple):
    """``(model, example_input)`` plus the :class:`ArchSpec` it was built from."""

    spec: ArchSpec

    def __new__(cls, pair, spec: ArchSpec):
        self = super().__new__(cls, pair)
        self.spec = spec
        return self

    @property
    def model(self) -> nn.Module:
        return self[0]

    @property
    def example_input(self) -> torch.Tensor:
        return self[1]

    def __repr__(self) -> str:
        return f"Drawn(\n{self.spec.to_code()})"


_RMSNORM = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()


def perturb_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm layers non-trivial statistics and affine parameters (as if trained)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g).to(m.running_mean) * 0.3)
                m.running_var.copy_((torch.rand(n, generator=g) + 0.5).to(m.running_var))
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
                              + _RMSNORM) and isinstance(p, torch.Tensor):
                    base = 1.0 if name == "weight" else 0.0
                    p.copy_((base + 0.3 * torch.randn(p.shape, generator=g)).to(p))
    return model


# -- code generation ------------------------------------------------------------------
@dataclass
class _T:
    """A tensor the generated forward holds: variable, kind, channels, other dims."""

    var: str
    kind: str  # vec | img | seq
    c: int
    sp: Tuple[int, ...] = ()

    @property
    def cdim(self) -> int:
        return 1 if self.kind == "img" else -1

    def same_frame(self, other: "_T") -> bool:
        return self.kind == other.kind and self.sp == other.sp


class _Emitter:
    """Turns layer dicts into ``__init__`` and ``forward`` lines, tracking shapes.

    The strategies use the same object to know what may come next, so the
    state the code is generated from and the state it was drawn from agree.
    """

    def __init__(self, inp: Dict[str, Any]) -> None:
        self.inp = inp
        self.n = inp.get("n", 3)
        self.init: List[str] = []
        self.fwd: List[str] = []
        self.taps: List[_T] = []
        self.k = 0
        kind = inp["kind"]
        if kind == "tokens":
            self.init.append(f"self.embed = nn.Embedding({inp['vocab']}, {inp['c']})")
            self.fwd.append("x = self.embed(x)")
            kind = "seq"
        self.x = _T("x", kind, inp["c"], tuple(inp.get("sp", ())))

    # helpers ------------------------------------------------------------------
    def _name(self, stem: str) -> str:
        return f"{stem}{self.k}"

    def _tap(self) -> None:
        """Keep the current tensor for later adds/concats."""
        var = f"t{len(self.taps)}"
        self.fwd.append(f"{var} = x")
        self.taps.append(_T(var, self.x.kind, self.x.c, self.x.sp))

    def _proj(self, name: str, cin: int, cout: int, kind: str, bias: bool = True,
              k: int = 1, groups: int = 1) -> str:
        if kind == "img":
            nd = len(self.x.sp)
            return (f"self.{name} = nn.Conv{nd}d({cin}, {cout}, {k}, padding={k // 2}"
                    + (f", groups={groups}" if groups != 1 else "")
                    + ("" if bias else ", bias=False") + ")")
        return f"self.{name} = nn.Linear({cin}, {cout}" + ("" if bias else ", bias=False") + ")"

    def _act(self, code: str, var: str, c: int, name: str) -> str:
        if code.startswith("nn."):
            self.init.append(f"self.{name} = {code.format(c=c)}")
            return f"self.{name}({var})"
        return code.format(x=var)

    def candidates(self) -> List[str]:
        """Ops that may follow in the current state."""
        x = self.x
        # producers first (hypothesis shrinks towards the front) and more often
        ops = (["linear"] if x.kind != "img" else ["conv"]) * 3
        ops += ["act", "act", "residual", "branches", "cat", "scale", "unknown", "reduce",
                "shared", "pad"] + (["repeat"] if x.c <= 6 else [])
        if x.c >= 2:
            ops.append("split")
        if x.kind == "vec":
            ops += ["norm"]
        if x.kind == "seq":
            ops += ["norm", "attn", "pool"]
        if x.kind == "img":
            ops += ["norm", "se", "flatten"]
            if all(s >= 2 for s in x.sp):
                ops.append("pool")
            if x.c >= 2 and any(x.c % g == 0 for g in range(2, x.c + 1)):
                ops.append("shuffle")
        if any(t.same_frame(x) and t.c == x.c for t in self.taps):
            ops.append("tapadd")
        return ops

    # one op ------------------------------------------------------------------
    def emit(self, layer: Dict[str, Any]) -> None:
        getattr(self, "_emit_" + layer["op"])(layer)
        self.k += 1
        if layer.get("tap"):
            self._tap()

    def _emit_linear(self, L) -> None:
        name = self._name("fc")
        self.init.append(self._proj(name, self.x.c, L["out"], "vec", L.get("bias", True)))
        self.fwd.append(f"x = self.{name}(x)")
        self.x.c = L["out"]

    def _emit_conv(self, L) -> None:
        name = self._name("conv")
        line = self._proj(name, self.x.c, L["out"], "img", L.get("bias", True),
                          L.get("k", 1), L.get("groups", 1))
        if L.get("transposed"):
            line = line.replace("nn.Conv", "nn.ConvTranspose")
        self.init.append(line)
        self.fwd.append(f"x = self.{name}(x)")
        self.x.c = L["out"]

    def _emit_act(self, L) -> None:
        self.fwd.append(f"x = {self._act(L['fn'], 'x', self.x.c, self._name('act'))}")

    def _emit_norm(self, L) -> None:
        name, x = self._name("norm"), self.x
        kind = L["kind"]
        if kind == "bn":
            nd = len(x.sp) if x.kind == "img" else 1
            self.init.append(f"self.{name} = nn.BatchNorm{nd}d({x.c})")
        elif kind == "ln":
            self.init.append(f"self.{name} = nn.LayerNorm({x.c})")
        elif kind == "gn":
            self.init.append(f"self.{name} = nn.GroupNorm({L['groups']}, {x.c})")
        elif kind == "ln_f":  # functional LayerNorm with learned get_attr weight
            self.init.append(f"self.{name}_w = nn.Parameter(1.0 + 0.1 * torch.randn({x.c}))")
            self.fwd.append(f"x = F.layer_norm(x, ({x.c},), self.{name}_w)")
            return
        elif kind == "rms":
            self.init.append(f"self.{name} = nn.RMSNorm({x.c})")
        elif kind == "rms_w":  # RMSNorm written out, LLaMA's way
            self.init.append(f"self.{name}_w = nn.Parameter(1.0 + 0.1 * torch.randn({x.c}))")
            self.fwd.append(f"x = self.{name}_w * (x * torch.rsqrt(x.pow(2).mean(-1, "
                            "keepdim=True) + 1e-05))")
            return
        self.fwd.append(f"x = self.{name}(x)")

    def _emit_scale(self, L) -> None:
        name, x = self._name("scale"), self.x
        shape = (x.c,) if x.kind != "img" else (1, x.c) + (1,) * len(x.sp)
        self.init.append(f"self.{name} = nn.Parameter(1.0 + 0.5 * torch.randn{shape})")
        self.fwd.append(f"x = x {'*' if L.get('mul', True) else '+'} self.{name}")

    def _emit_shared(self, L) -> None:
        """One square layer applied twice: its input and output are one space."""
        name, x = self._name("shared"), self.x
        self.init.append(self._proj(name, x.c, x.c, x.kind))
        act = self._act(L["act"], f"self.{name}(x)", x.c, self._name("sharedact"))
        self.fwd.append(f"x = self.{name}({act})")

    def _emit_repeat(self, L) -> None:
        x = self.x
        if L["how"] == "repeat":
            reps = ["1"] * (2 + len(x.sp) if x.kind == "img" else 2 if x.kind == "vec" else 3)
            reps[1 if x.kind == "img" else -1] = str(L["r"])
            self.fwd.append(f"x = x.repeat({', '.join(reps)})")
        else:
            self.fwd.append(f"x = x.repeat_interleave({L['r']}, dim={x.cdim})")
        self.x.c = x.c * L["r"]

    def _emit_pad(self, L) -> None:
        x = self.x
        lo, hi = L["pad"]
        if x.kind == "img":  # pads the channel dim: (last dims..., C)
            amounts = (0, 0) * len(x.sp) + (lo, hi)
        else:
            amounts = (lo, hi)
        self.fwd.append(f"x = F.pad(x, {amounts})")
        self.x.c = x.c + lo + hi

    def _emit_unknown(self, L) -> None:
        self.fwd.append("x = " + L["fn"].format(x="x", d=self.x.cdim))

    def _emit_reduce(self, L) -> None:
        self.fwd.append("x = " + L["fn"].format(x="x", d=self.x.cdim))

    def _emit_residual(self, L) -> None:
        """``x = x + b(act(a(x)))``: joins x's group across the block."""
        a, b, x = self._name("res") + "a", self._name("res") + "b", self.x
        k = L.get("k", 1)
        self.init.append(self._proj(a, x.c, L["hidden"], x.kind, k=k))
        self.init.append(self._proj(b, L["hidden"], x.c, x.kind, k=k))
        act = self._act(L["act"], f"self.{a}(x)", L["hidden"], self._name("res") + "act")
        self.fwd.append(f"x = x + self.{b}({act})")

    def _emit_branches(self, L) -> None:
        """``x = p0(x) + p1(t_i) + ...``: one group joining several producers."""
        x, terms = self.x, []
        for j, src in enumerate(L["srcs"]):
            t = x if src < 0 else self.taps[src]
            name = f"{self._name('br')}_{j}"
            self.init.append(self._proj(name, t.c, L["out"], x.kind))
            terms.append(f"self.{name}({t.var})")
        self.fwd.append("x = " + " + ".join(terms))
        self.x.c = L["out"]

    def _emit_tapadd(self, L) -> None:
        self.fwd.append("x = x + " + " + ".join(self.taps[i].var for i in L["srcs"]))

    def _emit_cat(self, L) -> None:
        x = self.x
        parts = []
        for j, src in enumerate(L["srcs"]):
            if src == "x":
                parts.append("x")
                c = x.c
            elif isinstance(src, int):
                parts.append(self.taps[src].var)
                c = self.taps[src].c
            else:  # ("proj", width)
                name = f"{self._name('cat')}_{j}"
                self.init.append(self._proj(name, x.c, src[1], x.kind))
                parts.append(f"self.{name}(x)")
                c = src[1]
            parts[-1] = (parts[-1], c)
        self.fwd.append(f"x = torch.cat([{', '.join(p for p, _ in parts)}], dim={x.cdim})")
        self.x.c = sum(c for _, c in parts)

    def _emit_split(self, L) -> None:
        x = self.x
        how = L["how"]
        if how == "chunk":
            sizes = [len(p) for p in torch.arange(x.c).chunk(L["k"])]
            call = f"x.chunk({L['k']}, dim={x.cdim})"
        elif how == "slice":
            s = L["sizes"][0]
            lead = ":, " if x.kind == "img" else "..., "
            self.fwd.append(f"x = x[{lead}{L['start']}:{L['start'] + s}]")
            self.x.c = s
            return
        else:
            sizes = list(L["sizes"])
            call = f"torch.split(x, {sizes}, dim={x.cdim})"
        ps = [f"p{i}" for i in range(len(sizes))]
        self.fwd.append(f"{', '.join(ps)}{',' if len(ps) == 1 else ''} = {call}")
        then = L["then"]
        if then == "first" or len(ps) == 1:
            self.fwd.append("x = p0")
            self.x.c = sizes[0]
        elif then == "rev":
            self.fwd.append(f"x = torch.cat([{', '.join(reversed(ps))}], dim={x.cdim})")
        elif then == "glu":  # needs sizes[0] == sizes[1]
            self.fwd.append("x = p0 * torch.sigmoid(p1)")
            self.x.c = sizes[0]
        elif then == "proj":  # each piece projected, summed
            terms = []
            for i, s in enumerate(sizes):
                name = f"{self._name('sp')}_{i}"
                self.init.append(self._proj(name, s, L["out"], x.kind))
                terms.append(f"self.{name}(p{i})")
            self.fwd.append("x = " + " + ".join(terms))
            self.x.c = L["out"]

    def _emit_pool(self, L) -> None:
        x = self.x
        if x.kind == "seq":
            self.fwd.append("x = x.mean(1)" if L["how"] == "mean" else "x = x[:, 0]")
            self.x = _T("x", "vec", x.c)
            return
        nd = len(x.sp)
        self.fwd.append(f"x = F.{L['how']}_pool{nd}d(x, 2)")
        self.x.sp = tuple(s // 2 for s in x.sp)

    def _emit_se(self, L) -> None:
        x, nm = self.x, self._name("se")
        nd = len(x.sp)
        dims = tuple(range(2, 2 + nd))
        self.init.append(self._proj(nm + "a", x.c, L["hidden"], "vec"))
        self.init.append(self._proj(nm + "b", L["hidden"], x.c, "vec"))
        self.fwd.append(f"s = x.mean({dims})")
        self.fwd.append(f"s = torch.sigmoid(self.{nm}b(F.relu(self.{nm}a(s))))")
        how = L["how"]
        if how == "index":
            self.fwd.append(f"x = x * s[:, :{', None' * nd}]")
        elif how == "view":
            self.fwd.append(f"x = x * s.view(s.size(0), -1{', 1' * nd})")
        else:
            self.fwd.append("x = x * s" + ".unsqueeze(-1)" * nd)

    def _emit_shuffle(self, L) -> None:
        x, g = self.x, L["groups"]
        sp = ", ".join(map(str, x.sp))
        if L.get("literal", True):
            self.fwd.append(f"x = x.view({self.n}, {g}, {x.c // g}, {sp}).transpose(1, 2)"
                            f".reshape({self.n}, {x.c}, {sp})")
        else:
            dims = ", ".join(f"s{i}" for i in range(len(x.sp)))
            self.fwd.append(f"b, c, {dims} = x.shape")
            self.fwd.append(f"x = x.view(b, {g}, c // {g}, {dims}).transpose(1, 2)"
                            f".flatten(1, 2)")

    def _emit_flatten(self, L) -> None:
        x, how = self.x, L["how"]
        nd = len(x.sp)
        if how == "flatten":
            self.fwd.append("x = torch.flatten(x, 1)")
        elif how == "view":
            self.fwd.append("x = x.view(x.size(0), -1)")
        elif how == "module":
            name = self._name("flat")
            self.init.append(f"self.{name} = nn.Flatten()")
            self.fwd.append(f"x = self.{name}(x)")
        elif how == "gap":
            self.fwd.append(f"x = x.mean({tuple(range(2, 2 + nd))})")
        elif how == "adaptive":
            self.fwd.append(f"x = F.adaptive_avg_pool{nd}d(x, 1).flatten(1)")
        elif how == "reshape":
            self.fwd.append(f"x = x.reshape({self.n}, {x.c * math.prod(x.sp)})")
        c = x.c * (math.prod(x.sp) if how in ("flatten", "view", "module", "reshape") else 1)
        self.x = _T("x", "vec", c)

    def _emit_attn(self, L) -> None:
        """Multi-head self-attention in plain PyTorch (q/k/v, heads, softmax, out)."""
        x, nm = self.x, self._name("attn")
        h, d = L["heads"], L["head_dim"]
        hd = h * d
        self.fwd.append("B, T, _ = x.shape")
        if L.get("packed") and L.get("view3"):  # one (3, heads, head_dim) view, as in timm
            self.init.append(self._proj(nm + "_qkv", x.c, 3 * hd, "seq"))
            self.fwd.append(f"q, k, v = self.{nm}_qkv(x).view(B, T, 3, {h}, {d})"
                            ".permute(2, 0, 3, 1, 4).unbind(0)")
        else:
            if L.get("packed"):
                self.init.append(self._proj(nm + "_qkv", x.c, 3 * hd, "seq"))
                self.fwd.append(f"q, k, v = self.{nm}_qkv(x).chunk(3, dim=-1)")
            else:
                for p in "qkv":
                    self.init.append(self._proj(f"{nm}_{p}", x.c, hd, "seq"))
                self.fwd.append(f"q, k, v = self.{nm}_q(x), self.{nm}_k(x), self.{nm}_v(x)")
            for p in "qkv":
                self.fwd.append(f"{p} = {p}.view(B, T, {h}, {d}).transpose(1, 2)")
        self.init.append(self._proj(nm + "_o", hd, x.c, "seq"))
        if L.get("rope"):  # rotary-like tables (buffers) multiplied into q and k
            self.init.append(f"self.register_buffer('{nm}_cos', torch.randn({d}))")
            self.init.append(f"self.register_buffer('{nm}_sin', torch.randn({d}))")
            for p in "qk":
                rot = (f"torch.cat([-{p}[..., {d // 2}:], {p}[..., :{d // 2}]], -1)" if d % 2 == 0
                       else f"{p}")
                self.fwd.append(f"{p} = {p} * self.{nm}_cos + {rot} * self.{nm}_sin")
        if L.get("sdpa"):
            self.fwd.append("y = F.scaled_dot_product_attention(q, k, v)")
        else:
            self.fwd.append(f"a = torch.softmax(q @ k.transpose(-2, -1) * {d ** -0.5!r}, dim=-1)")
            self.fwd.append("y = a @ v")
        self.fwd.append(f"y = y.transpose(1, 2).reshape(B, T, {hd})")
        self.fwd.append(f"x = x + self.{nm}_o(y)" if L.get("residual", True)
                        else f"x = self.{nm}_o(y)")

    # rendering -------------------------------------------------------------------
    @classmethod
    def render(cls, spec: ArchSpec) -> str:
        em = cls(spec.input)
        for layer in spec.layers:
            em.emit(layer)
        inp = spec.input
        shape = (em.n,) + ((inp["c"],) + tuple(inp["sp"]) if inp["kind"] == "img"
                           else tuple(inp.get("sp", ())) + ((inp["c"],) if inp["kind"] != "tokens"
                                                            else ()))
        if inp["kind"] == "tokens":
            make_x = f"x = torch.randint(0, {inp['vocab']}, {shape}, generator=g)"
        else:
            make_x = f"x = torch.randn({shape}, generator=g, dtype=torch.float64)"
        init = em.init or ["pass"]
        lines = [
            "import torch",
            "import torch.nn.functional as F",
            "from torch import nn",
            "from fxgrow.testing import perturb_norms",
            "",
            "",
            "class Net(nn.Module):",
            "    def __init__(self):",
            "        super().__init__()",
            *("        " + s for s in init),
            "",
            "    def forward(self, x):",
            *("        " + s for s in em.fwd),
            "        return x",
            "",
            "",
            "def make():",
            f"    torch.manual_seed({spec.seed})",
            f"    g = torch.Generator().manual_seed({spec.seed})",
            f"    model = perturb_norms(Net(), {spec.seed}).double().eval()",
            f"    {make_x}",
            "    return model, x",
            "",
        ]
        return "\n".join(lines)


# -- strategies ------------------------------------------------------------------------
def _divisors(n: int, lo: int = 2) -> List[int]:
    return [g for g in range(lo, n + 1) if n % g == 0]


def _acts(kind: str) -> st.SearchStrategy:
    # nn.PReLU(c) has one slope per channel of dim 1: not for (N, T, C)
    return st.sampled_from([a for a in ACTIVATIONS if kind != "seq" or "{c}" not in a])


@st.composite
def _layer(draw, em: _Emitter, max_width: int, allow: Sequence[str]) -> Dict[str, Any]:
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
        rms = ["rms", "rms_w"] if _RMSNORM else ["rms_w"]
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
    em = _Emitter(inp)
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
    activations, see :mod:`fxgrow.contraction`) asked for one size: the first drawn."""
    return {gid: spec[next(f for f in analysis.family(gid) if f in spec)] for gid in spec}


# -- long campaigns --------------------------------------------------------------------
def _classify_widen(model, x, spec, seed):
    """Widen and verify one architecture; return (outcome, detail)."""
    import fxgrow
    from .errors import AnalysisError, ConstraintError, FxGrowError, VerificationError

    try:
        grown = fxgrow.widen(model, x, spec, seed=seed, verify=False)
    except ConstraintError as e:
        return "refused (ConstraintError)", str(e)
    except (AnalysisError, VerificationError) as e:
        return f"BUG {type(e).__name__}", str(e)
    except FxGrowError as e:
        return f"BUG undocumented {type(e).__name__}", str(e)
    except Exception as e:  # noqa: BLE001 - a crash is what we are looking for
        return f"BUG crash {type(e).__name__}", str(e)
    report = fxgrow.verify(model, grown, x, trials=2)
    if not report.ok:
        return "BUG wrong model", str(report)
    # fx registers submodules in call order, so only the key *set* is compared
    if sorted(grown.state_dict()) != sorted(model.state_dict()):
        return "BUG state_dict keys", ""
    return "exact", ""


def _classify_deepen(model, x, site, method):
    """Deepen and verify; return (outcome, detail, deepened model or None)."""
    import fxgrow
    from .errors import AnalysisError, FxGrowError, VerificationError

    try:
        deep = fxgrow.deepen(model, x, after=site, method=method, calibration=x, verify=False)
    except (AnalysisError, VerificationError) as e:
        return f"BUG deepen {type(e).__name__}", str(e), None
    except FxGrowError as e:
        return f"deepen refused ({type(e).__name__})", str(e), None
    except Exception as e:  # noqa: BLE001
        return f"BUG deepen crash {type(e).__name__}", str(e), None
    report = fxgrow.verify(model, deep, x, trials=2)
    if not report.ok:
        return "BUG deepen wrong model", str(report), None
    return "deepen exact", "", deep


def campaign(n: int = 5000, *, seed: int = 0, family: Optional[str] = None,
             out_dir: Optional[str] = None, progress: int = 0) -> Dict[str, Any]:
    """Draw ``n`` architectures with hypothesis and widen each at random sizes.

    Unlike the property tests, a campaign never stops at a failure: every
    outcome is counted (``exact``, ``refused (...)``, ``BUG ...``), and the
    code of each failing architecture is written to ``out_dir`` (one file per
    failure, with the spec and the error) so it can be replayed.

    Returns ``{"counts": Counter, "groups": Counter of group statuses,
    "failures": [(outcome, code, detail), ...]}``.
    """
    import collections
    import os

    import fxgrow
    from hypothesis import HealthCheck, given, settings

    counts: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    failures: List[Tuple[str, str, str]] = []

    def record(outcome: str, detail: str, spec: Optional[ArchSpec] = None) -> None:
        code = current[0].to_code()
        failures.append((outcome, code, detail))
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, f"failure_{len(failures):04d}.py")
            with open(path, "w") as f:
                f.write(f"# {outcome}\n# " + detail.replace("\n", "\n# ") + "\n" + code)

    current: List[ArchSpec] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(arch_specs(family), st.data())
    def one(spec, data):
        current[:] = [spec]
        counts["architectures"] += 1
        try:
            model, x = spec.build()
        except Exception as e:  # noqa: BLE001
            counts["strategy error"] += 1
            failures.append(("strategy error", spec.to_code(), repr(e)))
            return
        # the widen outcome is counted once per architecture; deepen separately
        outcome, detail = "analysis", ""
        try:
            analysis = fxgrow.analyze(model, x)
        except Exception as e:  # noqa: BLE001
            outcome, detail = f"BUG analyze {type(e).__name__}", str(e)
            analysis = None
        if analysis is not None:
            for g in analysis.groups:
                statuses[g.status] += 1
            growable = analysis.growable
            if not growable:
                outcome = "nothing growable"
            else:
                chosen = data.draw(st.lists(st.sampled_from(growable), unique_by=lambda g: g.id,
                                            min_size=1, max_size=len(growable)))
                wspec = {g.id: (g.size + data.draw(st.integers(0, 2 * g.size + 1))
                                if data.draw(st.booleans())
                                else data.draw(st.sampled_from([1.5, 2.0, 3.0, 1.34])))
                         for g in chosen}
                wspec = one_size_per_family(analysis, wspec)
                outcome, detail = _classify_widen(model, x, wspec, data.draw(st.integers(0, 3)))
                detail = f"widen spec {wspec}\n{detail}"
        if hasattr(fxgrow, "deepen") and not outcome.startswith("BUG"):
            names = ["all"] + [n for n, m in model.named_modules()
                               if n and not list(m.children())]
            site = data.draw(st.sampled_from(names))
            method = data.draw(st.sampled_from(["identity", "residual", "auto"]))
            d_outcome, d_detail, _ = _classify_deepen(model, x, site, method)
            counts[d_outcome] += 1
            if d_outcome.startswith("BUG"):
                record(d_outcome, f"deepen after={site!r} method={method!r}\n{d_detail}")
        counts[outcome] += 1
        if outcome.startswith("BUG"):
            record(outcome, detail)
        if progress and counts["architectures"] % progress == 0:
            print(dict(counts), flush=True)

    torch.manual_seed(seed)
    one()
    counts["architectures"] = counts["architectures"]  # includes draws hypothesis aborted
    counts["completed"] = sum(v for k, v in counts.items()
                              if k not in ("architectures", "completed")
                              and not k.startswith(("deepen", "BUG deepen")))
    return {"counts": counts, "groups": statuses, "failures": failures}


def _main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse
    import warnings

    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(prog="python -m fxgrow.testing",
                                description="Run a fuzz campaign over random architectures.")
    p.add_argument("-n", type=int, default=5000, help="architectures to draw")
    p.add_argument("--family", choices=["mlp", "cnn", "transformer"], default=None)
    p.add_argument("--out", default="fxgrow-fuzz-failures", help="folder for failing models")
    p.add_argument("--progress", type=int, default=250)
    a = p.parse_args(argv)
    res = campaign(a.n, family=a.family, out_dir=a.out, progress=a.progress)
    print("outcomes:", dict(res["counts"]))
    print("group statuses:", dict(res["groups"]))
    print(f"{len(res['failures'])} failures written to {a.out}/")


if __name__ == "__main__":  # pragma: no cover
    _main()
