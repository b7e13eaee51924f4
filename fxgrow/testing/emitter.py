"""Code generation: an :class:`~fxgrow.testing.spec.ArchSpec` as a PyTorch script.

:class:`Emitter` turns layer dicts into ``__init__`` and ``forward`` lines,
tracking the shape of the tensor the forward holds, so every drawn model is
printable, replayable code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch


__all__ = ["Emitter"]


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


class Emitter:
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
    def render(cls, spec: Any) -> str:  # an ArchSpec (which imports this module)
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
