"""Reading a node's arguments and a module's tensors: one reader for each.

Rules, the padding proofs and deepening all read arguments by position or
keyword (:func:`node_arg`), and fetch a parameter or buffer by its qualified
name (:func:`tensor_by_name`, :func:`owner_of`).

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 3))
>>> tensor_by_name(m, "0.bias").shape
torch.Size([3])
>>> owner_of(m, "0.weight")
(Linear(in_features=2, out_features=3, bias=True), 'weight')
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from ..errors import RuleError

__all__ = ["MISSING", "node_arg", "with_arg", "tensor_by_name", "attr_by_name", "owner_of"]

#: ``node_arg``'s default: the argument is required
MISSING = object()


def node_arg(node: Any, index: Optional[int], name: Optional[str] = None,
             default: Any = MISSING) -> Any:
    """A node's raw argument by position or keyword (a Node or a Python value).

    ``node`` is an ``fx.Node`` (or a view of one with canonical arguments);
    a missing argument without ``default`` is a ``RuleError``, which blocks.
    """
    if index is not None and index < len(node.args):
        return node.args[index]
    if name is not None and name in node.kwargs:
        return node.kwargs[name]
    if default is MISSING:
        raise RuleError(f"missing argument {name or index}")
    return default


def with_arg(args: tuple, kwargs: dict, index: int, name: str, value: Any) -> Tuple[tuple, dict]:
    """``(args, kwargs)`` with the argument at ``index`` (or keyword ``name``) set to ``value``."""
    args, kwargs = list(args), dict(kwargs)
    if len(args) > index:
        args[index] = value
    else:
        kwargs[name] = value
    return tuple(args), kwargs


def owner_of(root: nn.Module, qualname: str) -> Tuple[nn.Module, str]:
    """The submodule holding tensor ``qualname``, and the tensor's name in it."""
    path, _, name = qualname.rpartition(".")
    try:
        return (root.get_submodule(path) if path else root), name
    except AttributeError as e:
        raise RuleError(f"no module `{path}` holds `{qualname}`") from e


def attr_by_name(root: nn.Module, qualname: str) -> Any:
    """Whatever ``qualname`` (a ``get_attr`` target) names: a tensor, a subgraph, a constant."""
    return getattr(*owner_of(root, qualname))


def tensor_by_name(root: nn.Module, qualname: str) -> torch.Tensor:
    """The parameter, buffer or tensor attribute ``qualname`` of ``root``."""
    mod, name = owner_of(root, qualname)
    t = getattr(mod, name, None)
    if not isinstance(t, torch.Tensor):
        raise RuleError(f"`{qualname}` is not a tensor")
    return t
