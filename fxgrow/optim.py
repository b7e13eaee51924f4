"""Grow an optimizer with its model: ``fxgrow.grow_optimizer``.

Staged training (Shen et al., 2022) grows Adam's state with the model instead
of restarting it.  Growth maps the source model's gradient to the grown
model's by a gather and a scale per position (the record of
:mod:`fxgrow.widen.record`): with equal shares, a copy's producer row gets
``1/c`` of its neuron's gradient (its output is read with weight ``1/c``) and
its consumer column the neuron's whole gradient (it reads an activation equal
to the neuron's, with the same output gradient).  Optimizer state is a running
average of gradients, so it grows by the same map: momentum buffers and
first moments by the ratio ``r``, second moments by ``r²``, the step count as
it was.  After one step on the same batch, the grown optimizer's state is then
exactly the state the grown model's own gradients give (tested for SGD with
momentum, Adam and AdamW, at ``lr=0``).  Weight decay applied to the gradient
(``SGD``/``Adam`` ``weight_decay``) adds ``λ·θ``, which scales with the value
rather than the gradient, so that part of the state is only approximately
mapped; AdamW's decoupled decay does not touch the state.

Exactness holds where the record's map is exact (see :mod:`fxgrow.widen.record`):
every group under ``net2net``; under ``split``, groups no norm averages over;
fresh values (``zero_out``, ``random_pad``) and padded neurons start with zero
state, and ``random_init`` carries no state at all.
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, Mapping

import torch
from torch import nn

from . import meta
from .errors import OptimizerError

__all__ = ["grow_optimizer", "register_growth", "SUPPORTED", "LINEAR_STATE", "SQUARED_STATE"]

#: models grown outside a GraphModule (``grow_into`` fills the user's own module, which has
#: no ``meta``): their growth record and the source name of each of their tensors
_GROWN: "weakref.WeakKeyDictionary[nn.Module, Any]" = weakref.WeakKeyDictionary()


def register_growth(model: nn.Module, record: Any, source_names: Mapping[str, str]) -> None:
    """Remember how ``model`` was grown, for :func:`grow_optimizer`: ``record`` is the
    widening's gradient map (by source tensor name), ``source_names`` maps each of
    ``model``'s tensors to the source tensor it grew from (held weakly: it goes with
    the model)."""
    _GROWN[model] = (record, dict(source_names))

#: optimizers whose state this module understands
SUPPORTED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
#: state that averages gradients (grows by the ratio) and squared gradients (by its square)
LINEAR_STATE = ("momentum_buffer", "exp_avg")
SQUARED_STATE = ("exp_avg_sq", "max_exp_avg_sq")


def _grow_state(name: str, state: Dict[str, Any], growth: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in state.items():
        if key == "step" or value is None:
            out[key] = value.clone() if isinstance(value, torch.Tensor) else value
        elif key in LINEAR_STATE or key in SQUARED_STATE:
            power = 1 if key in LINEAR_STATE else 2
            out[key] = value.detach().clone() if growth is None else growth.grow(value, power)
        else:
            raise OptimizerError(f"cannot grow optimizer state {key!r} of parameter `{name}`: "
                                 f"fxgrow grows {LINEAR_STATE + SQUARED_STATE} and 'step'")
    return out


def grow_optimizer(optimizer: torch.optim.Optimizer, source: nn.Module,
                   grown: nn.Module) -> torch.optim.Optimizer:
    """An optimizer of the same class over ``grown``'s parameters, with grown state.

    Parameters
    ----------
    optimizer : torch.optim.SGD, Adam or AdamW
        Optimizes (some of) ``source``'s parameters.
    source : nn.Module
        The model that was grown (parameters are matched by qualified name).
    grown : nn.Module
        The result of :func:`fxgrow.widen` (or :func:`fxgrow.apply_plan`) on
        ``source``, whose ``meta["fxgrow.growth"]`` holds the gradient map; of
        :func:`fxgrow.deepen`, where no parameter changes shape (old
        parameters keep their state); or the target :func:`fxgrow.grow_into`
        filled (it remembers the map, and which source tensor each of the
        target's continues, even where ``layers`` moved a block).

    Returns
    -------
    torch.optim.Optimizer
        Same class, the same param groups (hyper-parameters included) over the
        grown parameters of the same names; state grown by the gradient map
        (parameters that did not grow keep theirs).  Parameters of ``grown``
        that ``source`` has no parameter of the same name for (the blocks
        ``deepen`` inserts) join the first param group with fresh state.
        ``optimizer`` is left as it was.

    Raises
    ------
    OptimizerError
        An unsupported optimizer or state, a parameter ``source`` does not
        have or ``grown`` lacks, or parameters that changed shape without a
        growth record.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    >>> m(torch.randn(8, 3)).sum().backward(); opt.step()
    >>> g = fxgrow.widen(m, torch.randn(8, 3), 2.0)
    >>> new = fxgrow.grow_optimizer(opt, m, g)
    >>> type(new).__name__, tuple(new.state[g.get_submodule("0").weight]["exp_avg"].shape)
    ('Adam', (8, 3))
    """
    if type(optimizer) not in SUPPORTED:
        raise OptimizerError(f"grow_optimizer supports {[c.__name__ for c in SUPPORTED]}, "
                             f"not {type(optimizer).__name__}")
    record = getattr(grown, "meta", {}).get(meta.GROWTH)
    rename: Dict[str, str] = {}  # source name -> grown name, where they differ
    if record is None and grown in _GROWN:  # grown in place by fxgrow.grow_into
        record, from_source = _GROWN[grown]
        for target_name, source_name in from_source.items():
            rename.setdefault(source_name, target_name)
    names = {id(p): rename.get(n, n) for n, p in source.named_parameters()}
    back = {v: k for k, v in rename.items()}  # grown name -> source name (the record's keys)
    targets = dict(grown.named_parameters())
    if record is None:
        changed = [n for n, p in source.named_parameters()
                   if n in targets and targets[n].shape != p.shape]
        if changed:
            raise OptimizerError(
                f"`grown` has no growth record (meta['fxgrow.growth']) but `{changed[0]}` changed "
                "shape: pass the model fxgrow.widen or fxgrow.apply_plan returned")
    groups, pairs = [], []
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            name = names.get(id(p))
            if name is None:
                raise OptimizerError(f"the optimizer holds a parameter of shape {tuple(p.shape)} "
                                     "that is not a parameter of `source`")
            if name not in targets:
                raise OptimizerError(f"the grown model has no parameter `{name}`")
            params.append(targets[name])
            pairs.append((name, p, targets[name]))
        new_group = {k: v for k, v in group.items() if k != "params"}
        new_group["params"] = params
        groups.append(new_group)
    known = set(names.values())
    added = [p for n, p in targets.items() if n not in known]  # inserted layers
    if added and groups:
        groups[0]["params"] = groups[0]["params"] + added
    new = type(optimizer)(groups)
    new.defaults = dict(optimizer.defaults)
    if record is not None and record.reinitialised:
        return new  # every parameter was re-initialised: nothing to carry over
    for name, old, target in pairs:
        state = optimizer.state.get(old)
        if not state:
            continue
        growth = record.tensors.get(back.get(name, name)) if record is not None else None
        if growth is None and tuple(old.shape) != tuple(target.shape):
            raise OptimizerError(f"`{name}` changed shape but the growth record has no map "
                                 "for it")
        new.state[target] = _grow_state(name, state, growth)
    return new
