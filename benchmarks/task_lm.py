"""Task: byte-level language modelling of the Python standard library's source.

The text is the running interpreter's own standard library (``sysconfig.get_paths()["stdlib"]``,
``*.py`` files outside ``site-packages``): real, offline and the same on every machine with the
same Python.  Files are split into train and validation by a hash of their path (about 10 % to
validation), so no file is on both sides.  Batches are random windows of ``ctx + 1`` bytes of the
concatenated training files; the validation loss (nats per byte) is the mean over a fixed set of
validation windows.  The model is :class:`gpt.GPT`, trained with AdamW.
"""

from __future__ import annotations

import glob
import os
import sysconfig
import zlib

import torch
import torch.nn.functional as F

from gpt import GPT, init_gpt

FAMILIES = ["gpt"]
_DATA = {}


def _files():
    root = sysconfig.get_paths()["stdlib"]
    files = [f for f in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
             if "site-packages" not in f and "dist-packages" not in f]
    return root, sorted(files, key=lambda f: zlib.crc32(os.path.relpath(f, root).encode()))


def _read(files, cap):
    chunks, size = [], 0
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        chunks.append(data + b"\n\n")
        size += len(data) + 2
        if cap and size >= cap:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)[: cap or None].clone()


def setup(cfg):
    key = (cfg["train_bytes"], cfg["val_bytes"], cfg["gpt"]["ctx"], cfg["val_windows"])
    if key in _DATA:
        return _DATA[key]
    root, files = _files()
    is_val = [zlib.crc32(os.path.relpath(f, root).encode()) % 10 == 0 for f in files]
    train = _read([f for f, v in zip(files, is_val) if not v], cfg["train_bytes"])
    val = _read([f for f, v in zip(files, is_val) if v], cfg["val_bytes"])
    ctx = cfg["gpt"]["ctx"]
    g = torch.Generator().manual_seed(1234)
    starts = torch.randint(0, len(val) - ctx - 1, (cfg["val_windows"],), generator=g)
    windows = val[starts[:, None] + torch.arange(ctx + 1)].long()
    _DATA[key] = {"train": train, "val": windows, "n_files": len(files),
                  "n_val_files": sum(is_val), "train_bytes": len(train), "val_bytes": len(val)}
    return _DATA[key]


def _data(cfg):
    return setup(cfg)


def describe(cfg) -> str:
    d = _data(cfg)
    return (f"{d['n_files']} files of {sysconfig.get_paths()['stdlib']} "
            f"({d['n_val_files']} held out); {d['train_bytes'] / 1e6:.1f} MB train, "
            f"{d['val_bytes'] / 1e6:.2f} MB validation, {cfg['val_windows']} validation windows")


def small(family, cfg, seed):
    torch.manual_seed(seed)
    return GPT(**cfg["gpt"])


def batch(family, cfg, gen):
    data, ctx = _data(cfg)["train"], cfg["gpt"]["ctx"]
    starts = torch.randint(0, len(data) - ctx - 1, (cfg["batch"],), generator=gen)
    w = data[starts[:, None] + torch.arange(ctx + 1)].long()
    return w[:, :-1], w[:, 1:]


def example(family, cfg):
    return batch(family, cfg, torch.Generator().manual_seed(7))[0][:2]


def loss(family, model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


@torch.no_grad()
def evaluate(family, cfg, model):
    was = model.training
    model.eval()
    w = _data(cfg)["val"].to(next(model.parameters()).device)
    total = 0.0
    for chunk in w.split(64):
        total += float(loss(family, model, chunk[:, :-1], chunk[:, 1:])) * len(chunk)
    model.train(was)
    return {"loss": total / len(w)}


def optimizer(family, params, lr):
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)


def lr(family, cfg):
    return cfg["lr"]


def clip(family):
    return 1.0


def deepen(family, cfg, small_model, seed):
    """Depth x2 with ``fxgrow.grow_into``: a :class:`gpt.GPT` of twice the layers (the user's
    own class, so the deep student and the deep scratch model are the same architecture),
    source block ``i`` at position ``2 i`` and a new block at ``2 i + 1``, which starts as the
    identity (its attention and MLP output projections zeroed; the rest keeps GPT's init)."""
    import fxgrow

    layers = cfg["gpt"]["layers"]
    torch.manual_seed(seed)
    big = GPT(**{**cfg["gpt"], "layers": 2 * layers})
    moves = {f"blocks.{2 * i}": f"blocks.{i}" for i in range(layers)}
    moves.update({f"blocks.{2 * i + 1}": None for i in range(layers)})
    device = next(small_model.parameters()).device
    return fxgrow.grow_into(small_model, big.to(device), example(family, cfg).to(device),
                            layers=moves, seed=seed)


def reinit(family, model, seed):
    return init_gpt(model, seed)


def fresh_init(family, model, seed):
    """Fresh values for grown models follow GPT-2's law too (see growth_exp.grow_width)."""
    return init_gpt(model, 70_000 + seed)


def probe(family):
    return "blocks.0.mlp.fc1.weight"
