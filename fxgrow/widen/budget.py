"""Refuse a widening that cannot fit in memory, before any tensor is allocated.

A request such as ``{"0": 10**9}`` is valid as a spec but would allocate
hundreds of gigabytes: the grown parameters and buffers, and an index map
per growing group.  :func:`check_memory` adds up those bytes (a lower bound
of what applying the plan needs; the old weights and temporaries come on
top) and raises :class:`~fxgrow.errors.SpecError` when they exceed the memory
available on the tensors' device, so the error comes at once instead of a
``MemoryError`` (or the OOM killer) minutes later.

Examples
--------
>>> import torch, fxgrow
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> a = fxgrow.analyze(m, torch.randn(1, 4))
>>> needed_bytes(a, {a.group("0").id: 16})[0]  # (16x4 + 16 + 2x16) floats, 16 x (index + scale)
704
"""

from __future__ import annotations

import math
import os
from typing import Dict, Mapping, Optional, Tuple

import torch

from ..analysis.result import Analysis
from ..errors import SpecError
from ..ir.layout import new_size
from ..ops.access import tensor_by_name

__all__ = ["available_bytes", "needed_bytes", "check_memory"]


def _read_int(path: str, key: Optional[str] = None) -> Optional[int]:
    try:
        with open(path) as f:
            for line in f:
                if key is None:
                    text = line.strip()
                    return int(text) if text.isdigit() else None
                if line.startswith(key):
                    return int(line.split()[1]) * 1024  # /proc/meminfo counts kB
    except (OSError, ValueError):
        return None
    return None


def available_bytes(device: torch.device) -> Optional[int]:
    """Free memory on ``device`` (CPU: available RAM, within a cgroup limit); None if
    unknown (then nothing is refused)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # pragma: no cover - no driver
            return None
    if device.type != "cpu":
        return None
    known = [_read_int("/proc/meminfo", "MemAvailable:")]
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        known.append(max(limit - used, 0))
    if hasattr(os, "sysconf") and not any(k is not None for k in known):
        try:
            known.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):  # pragma: no cover
            pass
    known = [k for k in known if k is not None]
    return min(known) if known else None


def needed_bytes(analysis: Analysis, sizes: Mapping[int, int]
                 ) -> Tuple[int, Dict[torch.device, int]]:
    """Bytes of every tensor that grows, at its new size, plus the index maps:
    ``(total, {device: bytes})``."""
    per_device: Dict[torch.device, int] = {}
    dims: Dict[str, Dict[int, object]] = {}
    for m in analysis.members.values():
        dims.setdefault(m.tensor, {})[m.dim] = m.layout
    for name, layouts in dims.items():
        ratio = 1.0
        for layout in layouts.values():
            old = layout.size
            ratio *= new_size(layout, sizes) / old if old else 1.0
        if ratio == 1.0:
            continue
        try:
            t = tensor_by_name(analysis.graph_module, name)
        except Exception:  # a tensor the graph no longer holds: nothing to count
            continue
        grown = math.ceil(t.numel() * ratio) * t.element_size()
        per_device[t.device] = per_device.get(t.device, 0) + grown
    cpu = torch.device("cpu")
    per_device[cpu] = per_device.get(cpu, 0) + 16 * sum(sizes.values())  # index + scale
    return sum(per_device.values()), per_device


def check_memory(analysis: Analysis, sizes: Mapping[int, int]) -> None:
    """Raise :class:`SpecError` if the grown tensors cannot fit on their device."""
    _, per_device = needed_bytes(analysis, sizes)
    for device, need in per_device.items():
        free = available_bytes(device)
        if free is not None and need > free:
            biggest = max(sizes.items(), key=lambda kv: kv[1])
            raise SpecError(
                f"the requested sizes (up to {biggest[1]:,} neurons for group {biggest[0]}) "
                f"need at least {_gb(need)} for the grown tensors on {device}, but only "
                f"{_gb(free)} is available there; ask for smaller sizes")


def _gb(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 27 else f"{n / 2 ** 20:.1f} MiB"
