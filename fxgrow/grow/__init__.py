"""Growing into a model the user built: :func:`grow_into` (see :mod:`fxgrow.grow.into`).

The passes: :mod:`~fxgrow.grow.names` (which target module continues which source
module), :mod:`~fxgrow.grow.match` (group sizes read off the target's analysis),
:mod:`~fxgrow.grow.identity` (new blocks start as the identity),
:mod:`~fxgrow.grow.correspond` (the target computes the grown source, op for op).
"""

from .checkpoint import grow_checkpoint
from .into import grow_into

__all__ = ["grow_into", "grow_checkpoint"]
