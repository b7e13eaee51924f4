"""The exceptions fxgrow raises.

Every error a user can trigger is an :class:`FxGrowError`, so ``except
fxgrow.FxGrowError`` catches all of them; the subclasses say which kind of
mistake it was.
"""

from __future__ import annotations

__all__ = [
    "FxGrowError",
    "TraceError",
    "ExampleInputError",
    "SpecError",
    "NarrowingError",
    "UnknownTargetError",
    "GroupNotGrowableError",
    "ConstraintError",
    "UnknownInitError",
    "VerificationError",
    "OptimizerError",
    "AnalysisError",
    "ModeError",
    "SpecialisedInputError",
    "ShapeGuardError",
    "TargetMismatchError",
    "NotIdentityError",
]


class FxGrowError(Exception):
    """Base class of every error fxgrow raises on purpose."""


class TraceError(FxGrowError):
    """The model could not be captured as a ``torch.fx`` graph."""


class ExampleInputError(FxGrowError):
    """The example input is malformed or the model does not run on it."""


class SpecError(FxGrowError):
    """The growth request (widths, locations, options) is not valid."""


class NarrowingError(SpecError):
    """A requested size is smaller than the current one; fxgrow only grows."""


class UnknownTargetError(SpecError, KeyError):
    """A module name or group id in the request does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class GroupNotGrowableError(SpecError):
    """The requested group is fixed or blocked; ``reason`` says why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class ConstraintError(SpecError):
    """A requested size breaks a constraint (e.g. uniform replication)."""


class UnknownInitError(SpecError):
    """``init`` names no known initialiser."""


class VerificationError(FxGrowError):
    """The grown model does not compute what the original computes.

    ``report`` holds the :class:`fxgrow.verify.Report` that failed.
    """

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report


class OutputPathError(FxGrowError, OSError):
    """A file cannot be written where asked (missing folder, a folder, no permission).

    Also an ``OSError``, so ``except OSError`` keeps working.
    """


class ModeError(FxGrowError):
    """A grown graph that baked in one mode (train or eval) was run in the other
    (see :mod:`fxgrow.capture.modes`)."""


class TargetMismatchError(SpecError):
    """``grow_into``: the target is not the source grown (a tensor no growth explains,
    a narrower group, a tensor left unwritten, an op the target computes differently)."""


class NotIdentityError(TargetMismatchError):
    """``grow_into``: a block the target adds cannot start as the identity (its output is
    not a residual sum whose branch can be zeroed, e.g. a norm after the residual add)."""


class SpecialisedInputError(ExampleInputError, TypeError):
    """A grown graph was called with a keyword argument its capture specialised (the
    example did not give it), at another value than the captured one."""


class ShapeGuardError(ExampleInputError, AssertionError):
    """A graph captured by ``torch.export`` was called with inputs outside the
    conditions its capture took for granted (its shape guards): the model's Python
    depends on the inputs there and the graph holds only the example's path."""


class OptimizerError(FxGrowError):
    """An optimizer (or its state) that :func:`fxgrow.grow_optimizer` cannot grow."""


class AnalysisError(FxGrowError):
    """A rule failed unexpectedly on a node (a bug: please report it)."""


class RuleError(Exception):
    """Internal: a rule met arguments it does not handle; the node is blocked.

    Not an :class:`FxGrowError`: it never reaches users, the analysis turns
    it into a blocked group whose reason carries the message.
    """


class DeepenError(SpecError):
    """A deepening request (:func:`fxgrow.deepen`) cannot be carried out."""


class UnknownLocationError(DeepenError, UnknownTargetError):
    """``after`` names a node or module that is not in the graph."""


class NotDeepenableError(DeepenError):
    """The location's output cannot take a new layer exactly.

    Its channels are fixed (e.g. they reach the model output) or the tensor
    has no neuron dimension (a model input, a flattened map, a scalar).
    ``reason`` says which.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class NotIdempotentError(DeepenError):
    """``method="identity"`` after an activation φ with φ(φ(z)) ≠ φ(z)."""


class CalibrationError(DeepenError):
    """Calibration data is missing or does not fit the model."""


class MissingCalibrationError(CalibrationError):
    """A mirrored BatchNorm needs calibration data and none was given."""


class GrowthWarning(UserWarning):
    """A request fxgrow carried out but that probably does not do what was meant
    (e.g. a spec that grows nothing).  Not an error: filter it with
    ``warnings.simplefilter("error", fxgrow.GrowthWarning)`` to make it one."""


__all__ += ["OutputPathError", "GrowthWarning", "DeepenError", "UnknownLocationError",
            "NotDeepenableError", "NotIdempotentError",
            "CalibrationError", "MissingCalibrationError"]
