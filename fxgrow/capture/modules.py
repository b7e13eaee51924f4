"""What a module computes besides its ``forward``, which no graph shows.

Forward hooks and pre-hooks (``spectral_norm``, ``weight_norm``, pruning masks
and user hooks are all pre-hooks), parametrizations (``torch.nn.utils.parametrize``)
and lazy modules that have not run yet change what calling a module does.
torch.fx traces ``forward`` alone, so capture keeps such modules whole (leaves,
:func:`hidden_computation`) and the analysis blocks what they touch; hooks on
the root, or global ones, would be lost from the graph entirely, so capture
refuses them (:func:`root_problem`).

>>> m = nn.Linear(2, 2)
>>> hidden_computation(m) is None
True
>>> _ = m.register_forward_hook(lambda mod, i, o: o * 2)
>>> hidden_computation(m)
'it has forward hooks'
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.modules import module as _module

__all__ = ["hidden_computation", "root_problem", "call_override", "deepcopy_memo",
           "complete_state"]


def complete_state(gm: nn.Module, model: nn.Module) -> None:
    """Give ``gm`` every ``state_dict`` entry of ``model`` it lacks, under the same name.

    A traced graph module holds only what the graph reads; the grown model must
    keep the user's ``state_dict`` keys, including tensors reached under a
    second name (``self.alias = self.a``) and modules ``forward`` never calls.
    The tensors are the model's own (shared, not copied).

    >>> m = nn.Sequential(nn.Linear(2, 2))
    >>> m.alias = m[0]
    >>> gm = torch.fx.symbolic_trace(m)
    >>> complete_state(gm, m)
    >>> sorted(gm.state_dict()) == sorted(m.state_dict())
    True
    """
    have = set(gm.state_dict(keep_vars=True))
    persistent = {}
    for prefix, mod in model.named_modules(remove_duplicate=False):
        for name, t in mod._parameters.items():
            if t is not None:
                persistent[f"{prefix}.{name}" if prefix else name] = (t, True)
        for name, t in mod._buffers.items():
            if t is not None and name not in mod._non_persistent_buffers_set:
                persistent[f"{prefix}.{name}" if prefix else name] = (t, False)
    for qualname in model.state_dict(keep_vars=True):
        if qualname in have or qualname not in persistent:
            continue
        t, is_param = persistent[qualname]
        owner = gm
        *path, name = qualname.split(".")
        for part in path:
            if not hasattr(owner, part) or not isinstance(getattr(owner, part), nn.Module):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        if is_param:
            owner.register_parameter(name, t)
        else:
            owner.register_buffer(name, t)


def deepcopy_memo(module: nn.Module) -> dict:
    """A ``copy.deepcopy`` memo for tensors deepcopy refuses: computed (non-leaf)
    tensors a module keeps as plain attributes, such as a pruned layer's
    ``weight = weight_orig * weight_mask``, are copied detached.

    >>> import copy, torch
    >>> m = nn.Linear(2, 2)
    >>> m.cached = m.weight * 2          # a non-leaf tensor attribute
    >>> copy.deepcopy(m, deepcopy_memo(m)).cached.requires_grad
    False
    """
    memo = {}
    for m in module.modules():
        for v in vars(m).values():
            if isinstance(v, torch.Tensor) and not v.is_leaf:
                memo[id(v)] = v.detach().clone()
    return memo


def call_override(model: nn.Module) -> Optional[str]:
    """The first submodule whose class overrides ``__call__``, or None.

    torch.fx intercepts ``nn.Module.__call__``: an override runs (and is
    traced) around it, and the graph module then calls the override again, so
    fx cannot capture such a model faithfully (``torch.export`` can).
    """
    for name, m in model.named_modules():
        if type(m).__call__ is not nn.Module.__call__:
            return f"`{name or type(model).__name__}` ({type(m).__name__}) overrides __call__"
    return None


def hidden_computation(m: nn.Module) -> Optional[str]:
    """Why calling ``m`` computes more than its ``forward`` shows, or None."""
    pre = [h for h in (getattr(m, "_forward_pre_hooks", None) or {}).values()
           if not getattr(h, "checks_only", False)]  # fxgrow's own input checks compute nothing
    if pre:
        return "it has forward pre-hooks (spectral_norm, weight_norm and pruning use them)"
    if getattr(m, "_forward_hooks", None):
        return "it has forward hooks"
    if getattr(m, "parametrizations", None) is not None and isinstance(
            getattr(m, "parametrizations"), nn.ModuleDict):
        return f"its {', '.join(m.parametrizations)} are parametrized (torch.nn.utils.parametrize)"
    return None


def root_problem(model: nn.Module) -> Optional[str]:
    """Why ``model`` cannot be captured faithfully as a whole, or None."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return ("global forward hooks are registered (torch.nn.modules.module."
                "register_module_forward_hook): they would run in the original model but not in "
                "its graph")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            return (f"`{name or type(model).__name__}` is a lazy module whose parameters are not "
                    "initialised yet: run the model once on an input first")
    hidden = hidden_computation(model)
    if hidden:
        return (f"the model itself ({type(model).__name__}) computes more than its forward: "
                f"{hidden}; the traced graph would lose it. Remove them, or wrap the model in a "
                "module of your own that calls it (its hooks are then blocked, not lost)")
    return None
