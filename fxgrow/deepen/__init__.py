"""Net2DeeperNet: insert layers that start as the identity.

* :mod:`.rewrite` -- :func:`fxgrow.deepen`, the entry point, and the graph rewrite;
* :mod:`.plan` -- :func:`plan_deepening`: where new layers go, of what kind, and why
  that is exact (pure);
* :mod:`.blocks` -- the identity and zero-residual blocks;
* :mod:`.transformer` -- zero-residual transformer sub-blocks;
* :mod:`.calibrate` -- BatchNorm statistics from data.

Note that ``fxgrow.deepen`` is the function: import this package's modules with
``from fxgrow.deepen import plan`` or ``from fxgrow.deepen.plan import plan_deepening``.
"""

from .plan import DeepeningPlan, Insertion, plan_deepening
from .rewrite import deepen
from .transformer import BlockSpec

__all__ = ["deepen", "plan_deepening", "DeepeningPlan", "Insertion", "BlockSpec"]
