"""A time limit on torch.export's dynamic-shape attempt.

Exporting with every input dim symbolic lets the captured (and grown) graph take other
input sizes, but its symbolic shape reasoning can blow up: on a window-attention model
(HuggingFace Swin: window partitions of a symbolic height and width) sympy simplifies
ever larger expressions for many minutes, where exporting with the example's static
sizes takes seconds.  :func:`time_limit` bounds the attempt; capture then falls back to
static sizes with a warning, as it does when dynamic export fails.

The limit is ``FXGROW_DYNAMIC_EXPORT_SECONDS`` (default 120; 0 turns it off).  It uses
``SIGALRM``, so it applies in the main thread of a POSIX process only; elsewhere the
attempt is not limited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional

__all__ = ["time_limit", "dynamic_export_seconds", "OutOfTime"]

DEFAULT_SECONDS = 120.0


class OutOfTime(BaseException):
    """The limited block ran past its time (a BaseException, so that no
    ``except Exception`` inside torch swallows it)."""


def dynamic_export_seconds() -> Optional[float]:
    """The limit from ``FXGROW_DYNAMIC_EXPORT_SECONDS`` (None: no limit).

    >>> os.environ["FXGROW_DYNAMIC_EXPORT_SECONDS"] = "30"
    >>> dynamic_export_seconds()
    30.0
    >>> del os.environ["FXGROW_DYNAMIC_EXPORT_SECONDS"]
    """
    raw = os.environ.get("FXGROW_DYNAMIC_EXPORT_SECONDS", "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_SECONDS
    except ValueError:
        seconds = DEFAULT_SECONDS
    return seconds if seconds > 0 else None


@contextlib.contextmanager
def time_limit(seconds: Optional[float]) -> Iterator[None]:
    """Raise :class:`OutOfTime` in the block once ``seconds`` have passed.

    >>> import time
    >>> try:
    ...     with time_limit(0.05):
    ...         time.sleep(1)
    ... except OutOfTime:
    ...     print("stopped")
    stopped
    """
    usable = seconds is not None and hasattr(signal, "setitimer") and \
        threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _expired(signum, frame):
        raise OutOfTime(f"more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:  # someone else's timer was running: give it back what is left
            signal.setitimer(signal.ITIMER_REAL, old_delay, old_interval)
