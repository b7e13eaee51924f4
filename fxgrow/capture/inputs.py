"""The example input: its forms, and its values bound to a graph's placeholders.

A user gives one batch as a tensor (one positional input), a tuple or list
(the positional inputs) or a dict (keyword inputs).  :func:`normalize_input`
splits it into ``(args, kwargs)``; :func:`bind_inputs` lays those out as the
values of a captured graph's placeholders, filling in defaults.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

import torch
from torch import fx

from ..errors import ExampleInputError
from .export import flat_inputs, is_exported

__all__ = ["ExampleInput", "normalize_input", "bind_inputs"]

ExampleInput = Union[torch.Tensor, Tuple[Any, ...], Dict[str, Any]]


def normalize_input(example_input: ExampleInput) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Split an example input into positional and keyword arguments.

    A tensor is one positional argument, a tuple or list is the positional
    arguments, a dict is keyword arguments.
    """
    if isinstance(example_input, torch.Tensor):
        return (example_input,), {}
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    if isinstance(example_input, dict):
        if not all(isinstance(k, str) for k in example_input):
            raise ExampleInputError("a dict example input must have str keys (argument names)")
        return (), dict(example_input)
    raise ExampleInputError(
        f"example_input must be a tensor, a tuple of positional inputs or a dict of keyword "
        f"inputs, not {type(example_input).__name__}")


def bind_inputs(gm: fx.GraphModule, args, kwargs) -> Tuple[Any, ...]:
    """Placeholder values in graph order, with defaults filled in."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if is_exported(gm):  # ep.module(): inputs are flattened as its forward does
        try:
            flat = flat_inputs(gm, args, kwargs)
        except Exception as e:
            raise ExampleInputError(f"the example input does not match the exported "
                                    f"program's inputs: {type(e).__name__}: {e}") from e
        if flat is not None:
            return flat
    names = [n.target for n in placeholders]
    bound = list(args)
    if len(bound) > len(names):
        raise ExampleInputError(
            f"the model takes {len(names)} inputs ({', '.join(names)}), got {len(bound)} positional")
    unknown = set(kwargs) - set(names)
    if unknown:
        raise ExampleInputError(
            f"unknown keyword input(s) {sorted(unknown)}; the model's inputs are {names}")
    for node in placeholders[len(bound):]:
        name = node.target
        if name in kwargs:
            bound.append(kwargs[name])
        elif node.args:  # placeholder default
            bound.append(node.args[0])
        elif name.startswith("*"):
            continue
        else:
            raise ExampleInputError(f"the example input gives no value for the model input `{name}`")
    return tuple(bound)
