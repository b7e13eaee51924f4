"""Switches that compute no tensor: grad mode and autocast regions.

Capture turns ``no_grad`` / ``enable_grad`` / ``set_grad_enabled`` and
``autocast`` regions into plain calls (:mod:`fxgrow.capture.regions`).  They
read no neurons and make none, so they constrain nothing; keeping them in the
graph keeps the region in the grown model.
"""

from __future__ import annotations

from typing import Any

from ..capture.regions import ENTER_EXIT
from .registry import RuleSet

__all__ = ["RULES", "switch"]

RULES = RuleSet()


@RULES.rule(*ENTER_EXIT, name="switch")
def switch(ctx) -> Any:
    """A grad-mode or autocast switch: its value (a flag, or a context) is not a tensor."""
    return ctx.out_spec
