"""Read and write safetensors one tensor at a time, in HuggingFace's sharded layout.

The format (https://github.com/huggingface/safetensors) is an 8-byte little-endian
header length, a JSON header ``{name: {"dtype", "shape", "data_offsets": [begin,
end]}, "__metadata__": {...}}``, then the raw little-endian bytes.  Because every
grown tensor's name, dtype and shape are known before any is computed (they are the
target model's, built on the ``meta`` device), the headers are written first and
the tensors streamed after them: memory holds one source tensor and its grown
version, never a shard.  Reading seeks to one tensor and reads it, without mapping
the file (a mapped checkpoint counts in the resident set as it is touched).

A directory holds ``model.safetensors``, or shards named in
``model.safetensors.index.json`` (``{"metadata": {"total_size"}, "weight_map": {name:
file}}``); that is what ``transformers``' ``from_pretrained`` loads.

Examples
--------
>>> import tempfile, torch
>>> d = tempfile.mkdtemp()
>>> w = ShardedWriter(d, {"a": ((2, 3), torch.float32), "b": ((4,), torch.int64)})
>>> w.write("a", torch.ones(2, 3)); w.write("b", torch.arange(4)); w.close()
>>> read_tensor(open_checkpoint(d)["b"]).tolist()
[0, 1, 2, 3]
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import torch

from ..errors import SpecError

__all__ = ["Entry", "open_checkpoint", "read_tensor", "ShardedWriter"]

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)
_CODES = {v: k for k, v in _DTYPES.items()}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies: file, absolute byte offset, length, dtype and shape."""

    path: str
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: Tuple[int, ...]


def _header(path: str) -> Tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return 8 + n, json.loads(f.read(n))


def open_checkpoint(directory: str) -> Dict[str, Entry]:
    """``{tensor name: Entry}`` of a safetensors checkpoint directory (single or sharded)."""
    if not isinstance(directory, (str, os.PathLike)) or not os.path.isdir(directory):
        raise SpecError(f"src must be a directory of safetensors weights, not {directory!r}")
    index = os.path.join(directory, INDEX)
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(directory, SINGLE)):
        files = [SINGLE]
    else:
        raise SpecError(f"{directory!r} holds neither {SINGLE} nor {INDEX}")
    out: Dict[str, Entry] = {}
    for name in files:
        path = os.path.join(directory, name)
        start, header = _header(path)
        for key, v in header.items():
            if key == "__metadata__":
                continue
            if v["dtype"] not in _DTYPES:
                raise SpecError(f"{path}: tensor {key!r} has dtype {v['dtype']}, which this "
                                "reader does not know")
            b, e = v["data_offsets"]
            out[key] = Entry(path, start + b, e - b, _DTYPES[v["dtype"]], tuple(v["shape"]))
    return out


def _bytes_of(t: torch.Tensor) -> memoryview:
    flat = t.reshape(-1)
    data = flat.view(torch.uint8) if t.dtype != torch.bool else flat.to(torch.uint8)
    return memoryview(data.numpy()).cast("B")


def read_tensor(entry: Entry, rows: Tuple[int, int] = None) -> torch.Tensor:
    """Read one tensor, or rows ``[a, b)`` of its first dim (a fresh CPU tensor; the
    file is not mapped)."""
    shape, offset, nbytes = entry.shape, entry.offset, entry.nbytes
    if rows is not None:
        a, b = rows
        row = nbytes // shape[0] if shape and shape[0] else 0
        shape, offset, nbytes = (b - a,) + tuple(shape[1:]), offset + a * row, (b - a) * row
    t = torch.empty(shape, dtype=entry.dtype)
    if nbytes:
        buf = bytearray(nbytes) if t.dtype == torch.bool else None
        with open(entry.path, "rb") as f:
            f.seek(offset)
            got = f.readinto(buf if buf is not None else _bytes_of(t))
        if got != nbytes:
            raise SpecError(f"{entry.path} is truncated: {got} of {nbytes} bytes")
        if buf is not None:
            t = torch.frombuffer(buf, dtype=torch.uint8).to(torch.bool).reshape(shape)
    return t


def _nbytes(shape, dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty(0, dtype=dtype).element_size()


class ShardedWriter:
    """Write tensors named up front, in any order, each once, into shards of at most
    ``max_shard_bytes`` (a tensor larger than that gets a shard of its own).

    ``layout`` maps each name to ``(shape, dtype)``; the headers are written when the
    writer opens, the bytes as each tensor arrives, the index when it closes.
    """

    def __init__(self, directory: str, layout: Mapping[str, Tuple[Tuple[int, ...], torch.dtype]],
                 max_shard_bytes: int = 2 * 2**30, metadata: Mapping[str, str] = None) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        shards: List[List[str]] = [[]]
        size = 0
        for name, (shape, dtype) in layout.items():
            if dtype not in _CODES:
                raise SpecError(f"cannot write tensor {name!r} of dtype {dtype} as safetensors")
            n = _nbytes(shape, dtype)
            if shards[-1] and size + n > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += n
        k = len(shards)
        names = [SINGLE] if k == 1 else [f"model-{i + 1:05d}-of-{k:05d}.safetensors"
                                          for i in range(k)]
        self.where: Dict[str, Tuple[str, int, int]] = {}
        self.files = []
        self.total = 0
        self.written: set = set()
        for fname, members in zip(names, shards):
            header, offset = {"__metadata__": dict(metadata or {"format": "pt"})}, 0
            for name in members:
                shape, dtype = layout[name]
                n = _nbytes(shape, dtype)
                header[name] = {"dtype": _CODES[dtype], "shape": [int(s) for s in shape],
                                "data_offsets": [offset, offset + n]}
                offset += n
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
            path = os.path.join(directory, fname)
            f = open(path, "wb")
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            f.truncate(8 + len(blob) + offset)
            start = 8 + len(blob)
            for name in members:
                b, e = header[name]["data_offsets"]
                self.where[name] = (fname, start + b, e - b)
            self.files.append((fname, f))
            self.total += offset
        self.layout = dict(layout)
        self._handles = dict(self.files)
        self._rows: Dict[str, int] = {}

    def write(self, name: str, tensor: torch.Tensor, start_row: int = 0) -> None:
        """Write ``tensor`` as ``name``, or as its rows from ``start_row`` on (a tensor
        may arrive in row blocks; it counts as written once every row has)."""
        if name not in self.where:
            raise SpecError(f"tensor {name!r} was not announced to the writer")
        if name in self.written:
            raise SpecError(f"tensor {name!r} written twice")
        shape, dtype = self.layout[name]
        whole = start_row == 0 and tuple(tensor.shape) == tuple(shape)
        if not whole and (not shape or tuple(tensor.shape[1:]) != tuple(shape[1:])
                          or start_row + tensor.shape[0] > shape[0]):
            raise SpecError(f"tensor {name!r} has shape {tuple(tensor.shape)} (from row "
                            f"{start_row}), announced {tuple(shape)}")
        fname, offset, n = self.where[name]
        rows = tensor.shape[0] if not whole else (shape[0] if shape else 1)
        row_bytes = n // shape[0] if shape and shape[0] else n
        t = tensor.detach().to("cpu", dtype).contiguous()
        f = self._handles[fname]
        f.seek(offset + start_row * row_bytes)
        if t.numel():
            f.write(_bytes_of(t))
        done = self._rows.get(name, 0) + (rows if shape else 1)
        self._rows[name] = done
        if whole or done >= (shape[0] if shape else 1):
            self.written.add(name)

    def abort(self) -> None:
        """Close the files after a failure (what was written stays, the index is not)."""
        for _, f in self.files:
            f.close()

    def close(self) -> None:
        missing = [n for n in self.layout if n not in self.written]
        for _, f in self.files:
            f.close()
        if missing:
            raise SpecError(f"{len(missing)} announced tensors were never written "
                            f"(first: {missing[0]!r})")
        if len(self.files) > 1:
            weight_map = {name: where[0] for name, where in self.where.items()}
            with open(os.path.join(self.directory, INDEX), "w") as f:
                json.dump({"metadata": {"total_size": self.total}, "weight_map": weight_map},
                          f, indent=2)
