"""``fxgrow.grow_checkpoint``: grow a safetensors checkpoint larger than memory.

The models are built on the ``meta`` device (``with torch.device("meta"):
LlamaForCausalLM(cfg)``): they cost no weight memory, and their graphs, groups and
shapes are all :func:`~fxgrow.grow.prepare.prepare` needs — the same analyses,
sizes, identity proofs and graph correspondence as :func:`fxgrow.grow_into`.
Then the tensors stream: each source tensor is read from ``src``, grown by the
plan's index maps and scales (the same :func:`~fxgrow.widen.gather.grow_tensor`
the widening pass applies, so the result equals ``grow_into``'s tensor for
tensor), written to its place in ``dst``'s shards, and dropped.  Memory holds one
source tensor and its grown version at a time.

New blocks' zeroed tensors are written as zeros; their other tensors are
initialised the way the target's code would (HuggingFace's ``_init_weights``, else
each module's ``reset_parameters``) on a materialised copy of that block alone.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple

import torch
from torch import nn

from .. import checks
from ..capture import ExampleInput
from ..errors import SpecError, TargetMismatchError
from ..widen import inits
from ..widen.gather import Expander, grow_tensor
from ..widen.pad import Padder
from ..widen.reparam import weight_norms
from .prepare import Prepared, assignments, prepare, tensors
from .safetensors_io import Entry, ShardedWriter, open_checkpoint, read_tensor

__all__ = ["grow_checkpoint"]

STREAMING_INITS = ("net2net", "split")
#: where each written tensor came from (a JSON file beside the shards)
RECORD = "grown_from.json"


def _progress(items: Iterable[str], total: int, enabled: bool) -> Iterator[str]:
    """tqdm over tensors when installed, else a plain line every ~10 % (stderr)."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(items, total=total, desc="grow_checkpoint", unit="tensor")
        return
    start, step = time.monotonic(), max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == total:
            print(f"grow_checkpoint: {i}/{total} tensors, {time.monotonic() - start:.1f} s",
                  file=sys.stderr, flush=True)


class _Grower:
    """Grow one source tensor as the widening pass would (net2net or split shares)."""

    def __init__(self, prep: Prepared) -> None:
        plan = inits.prepare(prep.plan, prep.init)
        self.ex, self.mp = Expander(plan), Padder(plan)
        self.members: Dict[str, list] = {}
        for m in plan.analysis.members.values():
            self.members.setdefault(m.tensor, []).append(m)
        self.weight_norms = weight_norms(plan.analysis.graph_module)

    def _growing(self, names: Iterable[str]) -> list:
        members = next((self.members[n] for n in names if n in self.members), None) or []
        return [m for m in members if self.ex.grows(m.layout) or self.mp.grows(m)]

    def rows_fixed(self, names: Iterable[str]) -> bool:
        """Whether the tensor's first dim does not grow: it can stream in row blocks."""
        return all(m.dim != 0 for m in self._growing(names))

    def __call__(self, names: Iterable[str], t: torch.Tensor) -> torch.Tensor:
        members = self._growing(list(names))
        if not members:
            return t
        site = next((self.weight_norms[n] for n in names if n in self.weight_norms), None)
        if site is not None:
            # v and g are re-derived together from the grown effective weight, which one
            # tensor at a time cannot do (fxgrow.widen.reparam)
            raise SpecError(f"`{site.weight}` is weight-normed (g * v / ||v||) and grows: "
                            "grow_checkpoint grows one tensor at a time and cannot re-derive "
                            "v and g; use fxgrow.grow_into on the loaded model instead")
        grown, _ = grow_tensor(t, members, self.ex, scale_consumers=True, mp=self.mp)
        return grown


def _fresh_blocks(target: nn.Module, prep: Prepared) -> Dict[str, torch.Tensor]:
    """The new blocks' tensors as the target's code initialises them (one block at a time
    would do; blocks are small next to a checkpoint)."""
    out: Dict[str, torch.Tensor] = {}
    init_weights = getattr(target, "_init_weights", None)
    for root in prep.new_roots:
        block = copy.deepcopy(target.get_submodule(root))
        if any(t.is_meta for t in list(block.parameters()) + list(block.buffers())):
            block = block.to_empty(device="cpu")
        with torch.no_grad():
            for t in list(block.parameters()) + list(block.buffers()):
                if t.is_floating_point():
                    t.fill_(float("nan"))  # what no initialiser reaches stays NaN: caught below
            for sub in block.modules():
                if callable(init_weights):
                    init_weights(sub)
                elif hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
        for name, t in list(block.named_parameters()) + list(block.named_buffers()):
            out[f"{root}.{name}"] = t.detach()
    return out


def grow_checkpoint(
    source: nn.Module,
    target: nn.Module,
    example_input: ExampleInput,
    *,
    src: str,
    dst: str,
    layers: Optional[Mapping[str, Optional[str]]] = None,
    init: str = "net2net",
    seed: int = 0,
    max_shard_size: int = 2 * 2**30,
    chunk_bytes: int = 64 * 2**20,
    progress: bool = True,
    capture: str = "auto",
) -> Dict[str, Tuple[str, Optional[str]]]:
    """Grow the safetensors checkpoint ``src`` of ``source`` into ``dst`` for ``target``.

    Parameters
    ----------
    source, target : nn.Module
        The checkpoint's architecture and the bigger one, ideally built on the
        ``meta`` device (no weight memory); as for :func:`fxgrow.grow_into`.
    example_input : Tensor, tuple or dict
        On the ``meta`` device too, or real (it is only traced).  HuggingFace:
        ``{"input_ids": ids, "use_cache": False}``.
    src : str
        A directory holding ``model.safetensors`` or shards listed in
        ``model.safetensors.index.json`` (HuggingFace's layout; tensor names are the
        source's ``state_dict`` keys).
    dst : str
        The directory to write: shards of at most ``max_shard_size`` bytes and, when
        there are several, ``model.safetensors.index.json``.  If ``target`` has a
        HuggingFace ``config``, it is saved there too, so ``from_pretrained(dst)``
        loads the grown model.
    layers, seed :
        As for :func:`fxgrow.grow_into`.
    init : {"net2net", "split"}
        Function-preserving initialisers that need no materialised layer.
    max_shard_size : int
        Bytes per shard.
    chunk_bytes : int
        A source tensor larger than this whose first dim does not grow (an
        embedding, an LM head) streams in blocks of rows of about this size.
    progress : bool
        A progress bar over tensors (tqdm when installed, plain lines otherwise).

    Returns
    -------
    dict
        For each written tensor, where it came from: ``("grown", source tensor)``,
        ``("source", source tensor)``, ``("zero", None)``, ``("one", None)`` or
        ``("keep", None)``
        (a new block's tensor as the target's code initialises it).

    Examples
    --------
    >>> import tempfile, torch, fxgrow
    >>> from torch import nn
    >>> from fxgrow.grow.safetensors_io import ShardedWriter
    >>> small = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> src, dst = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> sd = small.state_dict()
    >>> w = ShardedWriter(src, {k: (v.shape, v.dtype) for k, v in sd.items()})
    >>> for k, v in sd.items(): w.write(k, v)
    >>> w.close()
    >>> with torch.device("meta"):
    ...     s = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ...     big = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    >>> how = fxgrow.grow_checkpoint(s, big, torch.randn(3, 4, device="meta"), src=src, dst=dst,
    ...                              progress=False)
    >>> how["0.weight"]
    ('grown', '0.weight')
    """
    if init not in STREAMING_INITS:
        raise SpecError(f"grow_checkpoint streams tensors, so init must be one of "
                        f"{STREAMING_INITS} (not {init!r}): zero_out and the baselines draw "
                        "fresh weights from materialised layers; use grow_into for those")
    if not isinstance(dst, (str, os.PathLike)):
        raise SpecError(f"dst must be a directory path, not {type(dst).__name__}")
    max_shard_size = checks.integer(max_shard_size, "max_shard_size", minimum=1)
    chunk_bytes = checks.integer(chunk_bytes, "chunk_bytes", minimum=1)
    progress = checks.flag(progress, "progress")
    entries = open_checkpoint(src)
    prep = prepare(source, target, example_input, layers=layers, init=init, seed=seed,
                   capture=capture, what="grow_checkpoint")

    src_tensors = tensors(source)
    src_alias: Dict[int, list] = {}
    for name, t in src_tensors.items():
        src_alias.setdefault(id(t), []).append(name)

    def entry_of(name: str) -> Entry:
        for n in [name] + src_alias.get(id(src_tensors.get(name)), []):
            if n in entries:
                return entries[n]
        raise TargetMismatchError(f"source tensor {name!r} is not in the checkpoint {src!r}")

    tgt = tensors(target)
    todo = assignments(prep, tgt, {k: tuple(v.shape) for k, v in src_tensors.items()})
    # what a checkpoint holds: the persistent state, each tied tensor once
    seen, names = set(), []
    for name, t in target.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            names.append(name)
    layout = {}
    for name in names:
        kind, other = todo[name]
        dtype = entry_of(other).dtype if kind in ("grown", "source") else tgt[name].dtype
        layout[name] = (tuple(tgt[name].shape), dtype)

    fresh = _fresh_blocks(target, prep) if any(todo[n][0] == "keep" for n in names) else {}
    grower = _Grower(prep)
    writer = ShardedWriter(dst, layout, max_shard_size)
    try:
        for name in _progress(names, len(names), progress):
            kind, other = todo[name]
            shape, dtype = layout[name]
            if kind == "zero":
                value = torch.zeros(shape, dtype=dtype)
            elif kind == "one":
                value = torch.ones(shape, dtype=dtype)
            elif kind == "keep":
                value = fresh[name]
                if value.is_floating_point() and torch.isnan(value).any():
                    raise TargetMismatchError(
                        f"new block tensor {name!r} has no initialiser: its module has no "
                        "reset_parameters and the model no _init_weights")
            else:
                entry = entry_of(other)
                aka = [other] + src_alias.get(id(src_tensors.get(other)), [])
                if entry.nbytes > chunk_bytes and entry.shape and (
                        kind == "source" or grower.rows_fixed(aka)):
                    # rows do not grow (an embedding's vocabulary): grow and write a block
                    # of rows at a time, so a tensor never sits whole in memory
                    step = max(1, chunk_bytes * entry.shape[0] // entry.nbytes)
                    for a in range(0, entry.shape[0], step):
                        b = min(entry.shape[0], a + step)
                        block = read_tensor(entry, rows=(a, b))
                        block = grower(aka, block) if kind == "grown" else block
                        if tuple(block.shape[1:]) != tuple(shape[1:]):
                            raise TargetMismatchError(
                                f"target tensor {name!r} has shape {shape}, the grown source "
                                f"tensor {other!r} rows of {tuple(block.shape[1:])}")
                        writer.write(name, block, start_row=a)
                        del block
                    continue
                value = read_tensor(entry)
                if kind == "grown":
                    value = grower(aka, value)
            if tuple(value.shape) != tuple(shape):
                raise TargetMismatchError(
                    f"target tensor {name!r} has shape {shape}, the grown source tensor "
                    f"{other!r} {tuple(value.shape)}")
            writer.write(name, value)
            del value
    except BaseException:
        writer.abort()
        raise
    writer.close()
    config = getattr(target, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(dst)
    with open(os.path.join(dst, RECORD), "w") as f:
        json.dump({"source": os.path.abspath(src), "init": init, "seed": seed,
                   "tensors": {n: list(todo[n]) for n in names}}, f, indent=1)
    return {n: todo[n] for n in names}
