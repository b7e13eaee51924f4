"""fxgrow: grow trained PyTorch networks without changing what they compute.

>>> import torch, fxgrow
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> x = torch.randn(5, 4)
>>> wide = fxgrow.widen(model, x, 2.0)
>>> fxgrow.verify(model, wide, x).ok
True

The pipeline is one subpackage per pass (see docs/architecture.md):
:mod:`fxgrow.capture` -> :mod:`fxgrow.analysis` (with the rule table
:mod:`fxgrow.rules` over the IR :mod:`fxgrow.ir` and the op vocabulary
:mod:`fxgrow.ops`) -> :mod:`fxgrow.widen` / :mod:`fxgrow.deepen` ->
:func:`fxgrow.verify`; :mod:`fxgrow.viz` draws analyses, :mod:`fxgrow.testing`
fuzzes them.
"""

# The subpackages are imported before the entry points of the same names are bound:
# `fxgrow.widen` and `fxgrow.deepen` are the functions, their passes live in
# `fxgrow/widen/` and `fxgrow/deepen/` (import those with `from fxgrow.widen import ...`).
from . import analysis as _analysis, capture as _capture, deepen as _deepen, widen as _widen
from .analysis import Analysis, Group, Member, RuleContext
from .api import CaptureOptions, analyze, widen
from .deepen import deepen
from .grow import grow_checkpoint, grow_into
from .errors import (AnalysisError, ConstraintError, ExampleInputError, FxGrowError,
                     GroupNotGrowableError, GrowthWarning, ModeError, NarrowingError,
                     NotIdentityError, OptimizerError, OutputPathError, ShapeGuardError,
                     SpecialisedInputError, SpecError, TargetMismatchError, TraceError,
                     UnknownInitError, UnknownTargetError, VerificationError)
from .optim import grow_optimizer
from .rules import register_rule
from .verify import Report, verify
from .widen.apply import apply_plan
from .widen.plan import GrowthPlan, plan_widening

__version__ = "0.1.0"

__all__ = [
    "analyze", "widen", "deepen", "grow_into", "grow_checkpoint", "verify", "plan_widening", "apply_plan", "register_rule",
    "grow_optimizer",
    "Analysis", "Group", "Member", "GrowthPlan", "Report", "RuleContext", "CaptureOptions",
    "FxGrowError", "TraceError", "ExampleInputError", "SpecError", "NarrowingError",
    "UnknownTargetError", "GroupNotGrowableError", "ConstraintError", "UnknownInitError",
    "VerificationError", "AnalysisError", "ModeError", "OutputPathError", "GrowthWarning",
    "OptimizerError", "TargetMismatchError", "NotIdentityError", "ShapeGuardError",
    "SpecialisedInputError",
]
