"""The analysis pass: which neurons of which tensors must grow together.

* :mod:`.walk` -- :func:`analyze_graph`: one walk over the graph, a rule per node;
* :mod:`.context` -- :class:`RuleContext`, what a rule sees and the verbs it uses;
* :mod:`.state` -- what the walk accumulates, in walk-time space ids;
* :mod:`.ties` -- tensors read in conflicting roles (tied weights);
* :mod:`.contraction` -- products between activations (query/key head dims);
* :mod:`.build` -- numbering the groups, renaming layouts into group ids;
* :mod:`.result` -- :class:`Analysis`, the plain, frozen result;
* :mod:`.padding` -- proofs that a normalised group may grow to any width.

Hands on an :class:`Analysis`.
"""

from .context import RuleContext
from .result import Analysis, Group, Member
from .walk import analyze_graph

__all__ = ["analyze_graph", "RuleContext", "Analysis", "Group", "Member"]
