"""fxgrow: grow trained PyTorch networks without changing what they compute.

>>> import torch, fxgrow
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> x = torch.randn(5, 4)
>>> wide = fxgrow.widen(model, x, 2.0)
>>> fxgrow.verify(model, wide, x).ok
True
"""

from .analysis import RuleContext
from .api import analyze, widen
from .deepen import deepen
from .errors import (AnalysisError, ConstraintError, ExampleInputError, FxGrowError,
                     GroupNotGrowableError, NarrowingError, SpecError, TraceError,
                     UnknownInitError, UnknownTargetError, VerificationError)
from .groups import Analysis, Group, Member
from .plan import GrowthPlan, plan_widening
from .apply import apply_plan
from .rules import register_rule
from .verify import Report, verify

__version__ = "0.1.0"

__all__ = [
    "analyze", "widen", "deepen", "verify", "plan_widening", "apply_plan", "register_rule",
    "Analysis", "Group", "Member", "GrowthPlan", "Report", "RuleContext",
    "FxGrowError", "TraceError", "ExampleInputError", "SpecError", "NarrowingError",
    "UnknownTargetError", "GroupNotGrowableError", "ConstraintError", "UnknownInitError",
    "VerificationError", "AnalysisError",
]
