"""Net2WiderNet as two passes: plan (pure, cheap) and apply (builds the grown module).

* :mod:`.plan` -- :func:`plan_widening`: validate a request, draw the index maps;
* :mod:`.apply` -- :func:`apply_plan`: carry a plan out (initialisers, rewrites);
* :mod:`.inits` -- the exact symmetry-breaking initialisers ``split`` and
  ``zero_out`` (:func:`~.inits.initialise`), with :mod:`.fresh`, the proof
  that fresh neurons are harmless;
* :mod:`.record` -- the gradient map of a grown model (for optimizer state);
* :mod:`.gather` -- grow one tensor along its growing dims;
* :mod:`.pad` -- new neurons of mean- and zero-padded groups;
* :mod:`.diagnose` -- where a grown graph first departs from the analysis.

The entry point is :func:`fxgrow.widen`; note that ``fxgrow.widen`` is that
function, so import this package's modules with ``from fxgrow.widen import plan``
or ``from fxgrow.widen.plan import plan_widening``.
"""

from .apply import EXACT, INITS, apply_plan
from .diagnose import first_divergence
from .growth import GroupGrowth, GrowthPlan
from .inits import initialise
from .plan import Spec, plan_widening
from .record import GrowthRecord, TensorGrowth

__all__ = ["plan_widening", "apply_plan", "first_divergence", "GrowthPlan", "GroupGrowth",
           "Spec", "INITS", "EXACT", "initialise", "GrowthRecord", "TensorGrowth"]
