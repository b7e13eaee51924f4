"""Capture: from the user's model to a graph whose nodes carry shapes.

* :mod:`.frontend` -- :func:`capture` and :class:`CaptureOptions`, choosing a tracer;
* :mod:`.trace` -- ``torch.fx`` symbolic tracing with leaf modules;
* :mod:`.export` -- the ``torch.export`` front end (ATen graphs);
* :mod:`.inputs` -- the example input's forms, bound to placeholders;
* :mod:`.shapes` -- shape propagation (``fxgrow.shape`` on every node);
* :mod:`.runner` -- running a module without changing its state.

Hands on a :class:`Captured`: the ``GraphModule`` and the bound example input.
"""

from .frontend import CAPTURES, CaptureOptions, Captured, capture
from .inputs import ExampleInput, bind_inputs, normalize_input

__all__ = ["CAPTURES", "CaptureOptions", "Captured", "capture", "ExampleInput", "bind_inputs",
           "normalize_input"]
