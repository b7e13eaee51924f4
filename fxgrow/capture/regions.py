"""Grad-mode and autocast regions, as plain nodes of the graph.

``torch.no_grad()`` / ``enable_grad()`` / ``set_grad_enabled()`` and
``torch.autocast`` regions in ``forward`` change what a model computes
(which weights get gradients, in which dtype a matmul runs).  Neither
front end hands them on as fxgrow's rules could read them:

* torch.fx runs the context managers while tracing and records nothing, so
  the region is lost; :func:`recording` makes the tracer record
  ``prev = torch.is_grad_enabled(); torch._C._set_grad_enabled(False)`` at
  the region's start and ``torch._C._set_grad_enabled(prev)`` at its end
  (autocast: ``_enter_autocast`` / ``_exit_autocast``);
* torch.export wraps the region's nodes in a higher-order op
  (``wrap_with_set_grad_enabled(False, submod, *args)``) whose body is a
  nested graph; :func:`inline_regions` copies the body into the graph
  between the same enter and exit nodes.

Either way the region's ops are ordinary nodes the rules see, and the grown
graph switches grad mode (or autocast) exactly where the model did.
"""

from __future__ import annotations

import contextlib
import operator
from typing import Any, Dict, Iterator, List

import torch
from torch import fx
from torch.amp import autocast_mode

__all__ = ["recording", "inline_regions", "ENTER_EXIT"]

_SET_GRAD = torch._C._set_grad_enabled
#: the plain calls a region becomes (enter, exit): the rule table reads them as no-ops
ENTER_EXIT = (torch.is_grad_enabled, _SET_GRAD, autocast_mode._enter_autocast,
              autocast_mode._exit_autocast)


@contextlib.contextmanager
def recording(tracer: fx.Tracer) -> Iterator[None]:
    """While torch.fx traces, record grad-mode and autocast regions as nodes."""
    gm_cls = torch.autograd.grad_mode
    patched: List[Any] = []
    stack: List[Any] = []

    def node(target, args):  # (the tracer tags it with the module stack it is in)
        return tracer.create_node("call_function", target, args, {})

    def patch(cls, mode_of):
        enter, exit_ = cls.__enter__, cls.__exit__

        def __enter__(self):
            prev = node(torch.is_grad_enabled, ())
            node(_SET_GRAD, (mode_of(self),))
            stack.append(prev)
            return enter(self)

        def __exit__(self, *exc):
            if stack:
                node(_SET_GRAD, (stack.pop(),))
            return exit_(self, *exc)
        patched.append((cls, enter, exit_))
        cls.__enter__, cls.__exit__ = __enter__, __exit__

    patch(gm_cls.no_grad, lambda self: False)
    patch(gm_cls.enable_grad, lambda self: True)
    patch(gm_cls.set_grad_enabled, lambda self: self.mode)
    a_enter, a_exit = autocast_mode.autocast.__enter__, autocast_mode.autocast.__exit__
    contexts: List[Any] = []

    def ac_enter(self):
        contexts.append(node(autocast_mode._enter_autocast,
                             (self.device, self.fast_dtype, self._enabled, self._cache_enabled)))
        return a_enter(self)

    def ac_exit(self, *exc):
        if contexts:
            node(autocast_mode._exit_autocast, (contexts.pop(),))
        return a_exit(self, *exc)
    autocast_mode.autocast.__enter__, autocast_mode.autocast.__exit__ = ac_enter, ac_exit
    try:
        yield
    finally:
        for cls, enter, exit_ in patched:
            cls.__enter__, cls.__exit__ = enter, exit_
        autocast_mode.autocast.__enter__, autocast_mode.autocast.__exit__ = a_enter, a_exit


def _hop(name: str):
    return getattr(torch.ops.higher_order, name, None)


def inline_regions(gm: fx.GraphModule) -> int:
    """Copy the bodies of ``wrap_with_set_grad_enabled`` / ``wrap_with_autocast`` nodes
    into ``gm``'s graph between enter and exit nodes; return how many were inlined."""
    grad_hop, cast_hop = _hop("wrap_with_set_grad_enabled"), _hop("wrap_with_autocast")
    done = 0
    while True:
        node = next((n for n in gm.graph.nodes if n.op == "call_function"
                     and n.target in (grad_hop, cast_hop) and n.target is not None), None)
        if node is None:
            break
        body_at = 1 if node.target is grad_hop else 4
        body = gm.get_submodule(node.args[body_at].target)
        graph = gm.graph
        stack = node.meta.get("nn_module_stack")

        def call(target, args):  # enter/exit belong to the module the region is in
            n = graph.call_function(target, args)
            if stack:
                n.meta["nn_module_stack"] = dict(stack)
            return n
        with graph.inserting_before(node):
            if node.target is grad_hop:
                prev = call(torch.is_grad_enabled, ())
                call(_SET_GRAD, (node.args[0],))
            else:
                ctx = call(autocast_mode._enter_autocast, tuple(node.args[:4]))
            env: Dict[fx.Node, Any] = {}
            args = iter(node.args[body_at + 1:])
            outputs: Any = None
            for n in body.graph.nodes:
                if n.op == "placeholder":
                    env[n] = next(args)
                elif n.op == "output":
                    outputs = fx.map_arg(n.args[0], lambda a: env[a])
                elif n.op == "get_attr":  # a nested region's body, or a constant
                    name = f"{node.args[body_at].target}_{n.target}".replace(".", "_")
                    setattr(gm, name, getattr(body, n.target))
                    env[n] = graph.get_attr(name)
                else:
                    env[n] = graph.node_copy(n, lambda a: env[a])
            if node.target is grad_hop:
                call(_SET_GRAD, (prev,))
            else:
                call(autocast_mode._exit_autocast, (ctx,))
        outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        for user in list(node.users):
            if user.op == "call_function" and user.target is operator.getitem:
                user.replace_all_uses_with(outs[user.args[1]])
                graph.erase_node(user)
        body_node = node.args[body_at]
        graph.erase_node(node)
        if not body_node.users:
            graph.erase_node(body_node)
        done += 1
    if done:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return done
