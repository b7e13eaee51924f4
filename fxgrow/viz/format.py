"""Formatting shared by the DOT text and the HTML page.

>>> fmt_shape((2, 3)), fmt_shape(((2, 3), (4,)))
('2×3', '(2×3, 4)')
"""

from __future__ import annotations

from typing import Any

__all__ = ["fmt_shape"]


def fmt_shape(shape: Any) -> str:
    if shape is None:
        return ""
    if shape and all(isinstance(s, int) for s in shape):
        return "×".join(map(str, shape))
    if not shape:
        return "()"
    return "(" + ", ".join(fmt_shape(s) for s in shape) + ")"
