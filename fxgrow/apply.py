"""Carry out a growth plan: build the widened ``GraphModule``.

Apply only executes a plan; every decision was made by the analysis and the
plan.  For each tensor dimension that belongs to a growing group it computes
the dimension's index map and scale with :func:`fxgrow.layout.expand` and
rebuilds the tensor with one vectorised ``index_select`` per dimension:

* producer and pass-through dims are gathered, so new neurons compute
  exactly what the neurons they copy compute;
* consumer dims are gathered and multiplied by ``1 / count``, so the copies
  of a neuron together contribute what the neuron contributed alone.

Module attributes (``in_features``, ``num_features``, ...) and literal graph
arguments (view sizes, split sizes, slice bounds) are recomputed from the new
layouts.  The result is a new ``GraphModule``; the user's model and the
analysed graph are left as they were.

Initialisers
------------
``net2net``
    The above: function preserving.
``net2net`` with ``noise > 0``
    As above, then Gaussian noise of ``noise * std(tensor)`` added to the
    new neurons' producer rows (the paper's symmetry breaking). Not exact.
``random_pad``
    Old neurons keep their weights unscaled; every slice that belongs to a
    new neuron takes a fresh initialisation. Not function preserving.
``random_init``
    The widened architecture with every parameter re-initialised. Not
    function preserving.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import fx, nn

from .errors import UnknownInitError
from .groups import Member
from .layout import Layout, expand, leaves, new_size
from .meanpad import written_rms
from .plan import GrowthPlan
from .roles import PRODUCER, SCALED

__all__ = ["apply_plan", "INITS"]

INITS = ("net2net", "random_pad", "random_init")


def _owner(root: nn.Module, qualname: str) -> Tuple[nn.Module, str]:
    path, _, name = qualname.rpartition(".")
    return (root.get_submodule(path) if path else root), name


def _aliases(root: nn.Module) -> Dict[int, List[str]]:
    """Every qualified name of every tensor, keyed by tensor identity."""
    out: Dict[int, List[str]] = {}
    for prefix, mod in root.named_modules(remove_duplicate=False):
        for name, t in list(mod._parameters.items()) + list(mod._buffers.items()):
            if t is not None:
                q = f"{prefix}.{name}" if prefix else name
                lst = out.setdefault(id(t), [])
                if q not in lst:
                    lst.append(q)
        for name, t in vars(mod).items():
            if isinstance(t, torch.Tensor) and not name.startswith("_"):
                q = f"{prefix}.{name}" if prefix else name
                out.setdefault(id(t), [q])
    return out


def _set_tensor(root: nn.Module, qualnames: List[str], old: torch.Tensor,
                new: torch.Tensor) -> None:
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new, requires_grad=old.requires_grad)
    for q in qualnames:
        mod, name = _owner(root, q)
        if name in mod._parameters:
            mod._parameters[name] = new
        elif name in mod._buffers:
            mod._buffers[name] = new
        else:
            setattr(mod, name, new)


class _Expander:
    """Caches the expanded index, scale and new-position mask of each layout."""

    def __init__(self, plan: GrowthPlan) -> None:
        self.maps = plan.maps()
        old_flags = {g: (gg.index, (torch.arange(gg.new) < gg.old).to(torch.float64))
                     for g, gg in plan.growth.items() if g in self.maps}
        self.old_flags = old_flags
        # producers are copied unscaled, except the divided side of a contraction
        rescaled = plan.rescaled()
        self.producer_maps = {g: rescaled.get(g, (idx, torch.ones(idx.numel(), dtype=torch.float64)))
                              for g, (idx, _) in self.maps.items()}
        self.rescaled = set(rescaled)
        self._cache: Dict[Tuple[Layout, str], Any] = {}

    def grows(self, layout: Layout) -> bool:
        return any(leaf.space in self.maps for leaf in leaves(layout))

    def index_scale(self, layout: Layout, device) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (layout, "map")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.maps)
        idx, scale = self._cache[key]
        return idx.to(device), scale.to(device)

    def producer_scale(self, layout: Layout, device) -> Optional[torch.Tensor]:
        """What a producer's rows along ``layout`` are multiplied by (None: nothing)."""
        if not any(leaf.space in self.rescaled for leaf in leaves(layout)):
            return None
        key = (layout, "producer")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.producer_maps)[1]
        return self._cache[key].to(device)

    def is_new(self, layout: Layout, device) -> torch.Tensor:
        """True at positions that belong to a new neuron of any leaf."""
        key = (layout, "new")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.old_flags)[1] == 0
        return self._cache[key].to(device)


def _bcast(v: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.view(shape)


class _Pad:
    """How mean- and zero-padded groups fill their new neurons (see :mod:`fxgrow.meanpad`)."""

    def __init__(self, plan: GrowthPlan) -> None:
        analysis = plan.analysis
        self.groups = plan.padded
        self.norm_weight: Dict[str, int] = {}
        self.norm_bias: Dict[str, int] = {}
        self.norm_modules: Dict[str, int] = {}
        self.eps_literals: List[Tuple[str, int, float, int]] = []  # written-out RMSNorms
        nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
        for layout, name in analysis.uniform_sites:
            gid = getattr(layout, "space", None)
            if gid not in self.groups:
                continue
            node = nodes[name]
            if node.op == "call_module":
                self.norm_modules[node.target] = gid
                self.norm_weight[f"{node.target}.weight"] = gid
                self.norm_bias[f"{node.target}.bias"] = gid
                continue
            written = written_rms(analysis, node, gid)  # the plan proved it is one
            self.norm_weight[written.weight] = gid
            self.eps_literals.append((written.eps_node, written.eps_index, written.eps, gid))

    def grows(self, m: Member) -> bool:
        return getattr(m.layout, "space", None) in self.groups and m.layout.size == \
            self.groups[m.layout.space].old

    def rescale_eps(self, new: nn.Module) -> None:
        """``ε·n/n'``: with ``γ·√(n/n')`` the old outputs are exact."""
        for path, gid in self.norm_modules.items():
            gg = self.groups[gid]
            norm = new.get_submodule(path)
            eps = norm.eps
            if eps is None:  # RMSNorm's default: the input dtype's machine epsilon
                weight = getattr(norm, "weight", None)
                eps = torch.finfo(weight.dtype if weight is not None else
                                  torch.get_default_dtype()).eps
            norm.eps = eps * gg.old / gg.new

    def rescale_eps_literals(self, new: fx.GraphModule) -> None:
        """The same ``ε·n/n'`` for RMSNorms written out, whose ``eps`` is a graph literal."""
        nodes = {n.name: n for n in new.graph.nodes}
        for name, index, eps, gid in self.eps_literals:
            gg = self.groups[gid]
            args = list(nodes[name].args)
            args[index] = eps * gg.old / gg.new
            nodes[name].args = tuple(args)

    def pad(self, out: torch.Tensor, m: Member, qualname: str) -> torch.Tensor:
        gg = self.groups[m.layout.space]
        n, extra = gg.old, gg.new - gg.old
        shape = list(out.shape)
        shape[m.dim] = extra
        if qualname in self.norm_weight:
            # the norm over n' neurons sees (mean) square n/n' of the old: γ·√(n/n') undoes it
            out = out * (n / gg.new) ** 0.5
            fill = torch.ones(shape, dtype=out.dtype, device=out.device)
        elif qualname in self.norm_bias or m.role == "consumer" or gg.mode == "zero":
            # new norm outputs are 0 and consumers read new neurons through zeros;
            # zero-padding: new rows 0 keep new entries 0 along every linear path
            fill = torch.zeros(shape, dtype=out.dtype, device=out.device)
        else:
            # mean-padding: new rows are the mean of the old, so every affine
            # combination downstream has new entries equal to its old mean
            fill = out.mean(dim=m.dim, keepdim=True).expand(shape)
        return torch.cat([out, fill], dim=m.dim)


def _gather(t: torch.Tensor, index: Dict[int, torch.Tensor]) -> torch.Tensor:
    """``t`` gathered along several dims, allocating the result once.

    Adjacent dims are gathered by one broadcast advanced index (which keeps
    them in place); anything else falls back to one ``index_select`` per dim.
    """
    dims = sorted(index)
    if len(dims) > 1 and dims == list(range(dims[0], dims[-1] + 1)):
        k = len(dims)
        idx = tuple(index[d].view([-1 if j == i else 1 for j in range(k)])
                    for i, d in enumerate(dims))
        return t[(slice(None),) * dims[0] + idx]
    for d in dims:
        t = t.index_select(d, index[d])
    return t


def _grow_tensor(t: torch.Tensor, members: List[Member], ex: _Expander,
                 scale_consumers: bool, mp: Optional["_Pad"] = None,
                 want_mask: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Gather ``t`` along every growing dim; return it (and, if asked, where it is new)."""
    with torch.no_grad():
        out = t.detach()
        masks = []
        for m in members:
            if mp is not None and mp.grows(m):
                out = mp.pad(out, m, m.tensor)
                masks.append((m.dim, torch.arange(out.shape[m.dim], device=out.device)
                              >= m.layout.size))
        index, scales = {}, []
        for m in members:
            if (mp is not None and mp.grows(m)) or not ex.grows(m.layout):
                continue
            index[m.dim], scale = ex.index_scale(m.layout, t.device)
            if scale_consumers and m.role in SCALED and out.is_floating_point():
                scales.append((m.dim, scale))
            elif scale_consumers and m.role == PRODUCER and out.is_floating_point():
                # the divided side of a contraction: Σ_j q_g(j) k_g(j)/c = Σ_i q_i k_i
                rows = ex.producer_scale(m.layout, t.device)
                if rows is not None:
                    scales.append((m.dim, rows))
            if want_mask:
                masks.append((m.dim, ex.is_new(m.layout, t.device)))
        if index:
            out = _gather(out, index)  # a new tensor: scaling it in place is safe
        for d, scale in scales:
            out.mul_(_bcast(scale.to(out.dtype), d, out.dim()))
        new_mask = None
        if want_mask:
            for d, is_new in masks:
                b = _bcast(is_new, d, out.dim())
                new_mask = b if new_mask is None else (new_mask | b)
            if new_mask is not None:
                new_mask = new_mask.expand(out.shape)
        # never hand back storage shared with the user's tensor
        return (out.clone() if out.data_ptr() == t.data_ptr() else out), new_mask


def _fresh_like(new: nn.Module, qualname: str, shape, like: torch.Tensor,
                fresh_modules: Dict[str, nn.Module]) -> torch.Tensor:
    """A freshly initialised tensor for ``qualname`` of the widened model."""
    path, _, name = qualname.rpartition(".")
    mod = new.get_submodule(path) if path else new
    reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
    if reset is not None and path:
        if path not in fresh_modules:
            clone = copy.deepcopy(mod)
            getattr(clone, reset.__name__)()
            fresh_modules[path] = clone
        t = getattr(fresh_modules[path], name, None)
        if isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(shape):
            return t.detach().to(like.dtype)
    if not like.is_floating_point():
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    std = like.detach().float().std() if like.numel() > 1 else torch.tensor(1.0)
    std = float(std) if float(std) > 0 else 1.0
    return (torch.randn(shape, device=like.device) * std).to(like.dtype)


def apply_plan(plan: GrowthPlan, init: str = "net2net", noise: float = 0.0) -> fx.GraphModule:
    """Build the grown model a plan describes.

    Parameters
    ----------
    plan : GrowthPlan
    init : {"net2net", "random_pad", "random_init"}
        See the module documentation; only ``net2net`` with ``noise=0``
        preserves the function.
    noise : float
        Relative noise on the new neurons' producer rows (``net2net`` only).

    Returns
    -------
    torch.fx.GraphModule
        A new module; ``meta["fxgrow.plan"]`` holds ``plan.summary()``.
    """
    if init not in INITS:
        raise UnknownInitError(f"unknown init {init!r}; choose one of {INITS}")
    analysis = plan.analysis
    old = analysis.graph_module
    ex = _Expander(plan)
    mp = _Pad(plan)
    by_tensor: Dict[str, List[Member]] = {}
    for m in analysis.members.values():
        by_tensor.setdefault(m.tensor, []).append(m)
    growing = {q: ms for q, ms in by_tensor.items()
               if any(ex.grows(m.layout) or mp.grows(m) for m in ms)}
    originals = {q: getattr(*_owner(old, q)) for q in growing}
    # Tensors about to be replaced are not copied: the peak is old + new
    # weights, not twice the old ones plus the new.
    memo: Dict[int, Any] = {}
    for t in originals.values():
        empty = torch.empty(0, dtype=t.dtype, device=t.device)
        memo[id(t)] = nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty
    new = copy.deepcopy(old, memo)
    aliases = _aliases(old)  # names of each original tensor, by identity

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        fresh_modules: Dict[str, nn.Module] = {}
        # module attributes first: fresh modules for random_pad need the new sizes
        size = _sizer(analysis, plan)
        for path, attr, fn in analysis.module_literals:
            # "self_attn.embed_dim" names an attribute of a submodule
            owner, _, name = f"{path}.{attr}".rpartition(".")
            setattr(new.get_submodule(owner), name, fn(size))
        mp.rescale_eps(new)
        pending = []
        for qualname, members in growing.items():
            t = originals[qualname]
            grown, mask = _grow_tensor(t, members, ex, scale_consumers=(init == "net2net"), mp=mp,
                                       want_mask=(init == "random_pad" or bool(noise)))
            if init == "net2net" and noise and mask is not None and grown.is_floating_point():
                if any(m.role == PRODUCER and ex.grows(m.layout) for m in members):
                    std = float(t.detach().float().std()) if t.numel() > 1 else 1.0
                    grown = grown + noise * std * torch.randn_like(grown) * mask
            _set_tensor(new, aliases.get(id(t), [qualname]), t, grown)
            pending.append((qualname, t, mask))
        if init == "random_pad":
            # fresh values come from modules that already have the new shapes
            for qualname, t, mask in pending:
                if mask is None:
                    continue
                current = getattr(*_owner(new, qualname))
                fresh = _fresh_like(new, qualname, current.shape, current, fresh_modules)
                _set_tensor(new, aliases.get(id(t), [qualname]), t,
                            torch.where(mask, fresh.to(current.device), current.detach()))
        if init == "random_init":
            _reinit_all(new)

    _rewrite_literals(new, analysis, size)
    mp.rescale_eps_literals(new)
    new.recompile()
    new.meta["fxgrow.plan"] = plan.summary()
    new.meta["fxgrow.init"] = init
    return new


def _sizer(analysis, plan: GrowthPlan):
    sizes = plan.sizes

    def size(layout: Layout) -> int:
        return new_size(analysis.resolve(layout), sizes)
    return size


def _reinit_all(root: nn.Module) -> None:
    """Re-initialise every parameter: module defaults, else N(0, std of the old values)."""
    covered = set()
    for mod in root.modules():
        reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
        if reset is not None and mod is not root:
            reset()
            covered.update(id(p) for p in mod.parameters(recurse=False))
    with torch.no_grad():
        for p in root.parameters():
            if id(p) not in covered and p.is_floating_point():
                std = float(p.detach().std()) if p.numel() > 1 else 1.0
                p.normal_(0.0, std if std > 0 else 1.0)


def _rewrite_literals(new: fx.GraphModule, analysis, size) -> None:
    nodes = {n.name: n for n in new.graph.nodes}
    old_nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    for name, fn in analysis.node_literals:
        result = fn(size)
        target = None
        if len(result) == 3:
            target, args, kwargs = result
        else:
            args, kwargs = result
        old = old_nodes[name]
        if target is None and args == tuple(old.args) and kwargs == dict(old.kwargs):
            continue
        node = nodes[name]
        remap = lambda n: nodes[n.name]  # noqa: E731  old graph's nodes -> new graph's
        node.args = fx.map_arg(tuple(args), remap)
        node.kwargs = fx.map_arg(dict(kwargs), remap)
        if target is not None:
            node.target = target
