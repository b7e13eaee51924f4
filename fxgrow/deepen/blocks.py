"""The blocks Net2DeeperNet inserts, built from an :class:`~fxgrow.deepen.plan.Insertion`.

Each block is a small container module whose children are ordinary leaves
(``Linear``/``ConvNd``, ``BatchNorm``, an activation), so the grown graph
calls them one by one and :func:`fxgrow.analyze` sees a Linear or a conv
whose output is a *fresh* neuron space: the deepened model can be widened.

* :class:`IdentityBlock` -- ``φ(BN(I·h))``.  A Linear with weight ``I`` and
  zero bias, or a ConvNd whose kernel is a Dirac delta at the centre
  ``(k-1)/2`` with padding ``(k-1)/2`` (so every output position reads only
  its own input position, multiplied by 1).
* :class:`ResidualBlock` -- ``h + L2(φ(BN(L1(h))))`` with ``L2``'s weight and
  bias zero, so the branch adds exactly 0 whatever ``L1``, BN and ``φ`` do.
* :class:`~fxgrow.deepen.transformer.TransformerBlock` -- zero-residual
  attention and/or MLP sub-blocks on token sequences (``block=``).

Identity weights are built with one vectorised scatter (no loop over
channels, unlike ``nn.init.dirac_``).

Examples
--------
>>> import torch
>>> conv = identity_layer("conv2d", 4, 3)
>>> x = torch.randn(2, 4, 5, 5)
>>> torch.equal(conv(x), x)
True
"""

from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import fx, nn

from .plan import Insertion
from .transformer import TransformerBlock

__all__ = ["identity_layer", "IdentityBlock", "ResidualBlock", "build_block"]

_CONV = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}
_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _layer(kind: str, channels: int, k: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(channels, channels)
    return _CONV[kind](channels, channels, k, padding=(k - 1) // 2)


def identity_layer(kind: str, channels: int, kernel_size: int = 1) -> nn.Module:
    """A Linear (``I``, zero bias) or ConvNd (centred Dirac kernel, same padding).

    Parameters
    ----------
    kind : {"linear", "conv1d", "conv2d", "conv3d"}
    channels : int
    kernel_size : int
        Odd; ignored for ``linear``.
    """
    layer = _layer(kind, channels, kernel_size)
    with torch.no_grad():
        w = torch.zeros_like(layer.weight)
        c = torch.arange(channels)
        centre = (kernel_size - 1) // 2
        # w[j, j, centre, ..., centre] = 1 for every channel j at once
        w[(c, c) + (centre,) * (w.dim() - 2)] = 1.0
        layer.weight.copy_(w)
        layer.bias.zero_()
    return layer


class IdentityBlock(nn.Module):
    """``act(bn(layer(x)))`` initialised to the identity (see the module docs)."""

    def __init__(self, ins: Insertion, ndim: int) -> None:
        super().__init__()
        prefix = "linear" if ins.kind == "linear" else "conv"
        self._order = [prefix]
        setattr(self, prefix, identity_layer(ins.kind, ins.channels, ins.kernel_size))
        if ins.batchnorm is not None:
            self.bn = _BN[ndim](ins.channels, eps=ins.batchnorm.eps,
                                momentum=ins.batchnorm.momentum)
            self._order.append("bn")
        if ins.activation is not None:
            # only reached for idempotent φ: φ(φ(z)) = φ(z) (checked by the plan)
            self.act = ins.activation.make()
            self._order.append("act")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._order:
            x = getattr(self, name)(x)
        return x

    def bn_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the block's BatchNorm reads when the block reads ``x``."""
        return getattr(self, self._order[0])(x)

    def calibrate(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Make the BN the identity in eval mode, and close to it in training mode.

        Eval: ``γ (x - μ) / √(σ² + ε) + β`` with ``μ, σ²`` the running stats is
        ``x`` for γ = √(σ² + ε), β = μ, whatever ``μ, σ²`` are.  Taking them from
        the data makes training mode (batch statistics) close as well.
        """
        bn = self.bn
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var.double() + bn.eps).to(var.dtype))
            bn.bias.copy_(mean)

    def emit(self, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
        for name in self._order:
            x = graph.call_module(f"{prefix}.{name}", (x,))
        return x


class ResidualBlock(nn.Module):
    """``x + layer2(act(bn1(layer1(x))))`` with ``layer2`` zero (see the module docs)."""

    def __init__(self, ins: Insertion, ndim: int) -> None:
        super().__init__()
        p = "linear" if ins.kind == "linear" else "conv"
        self._names = (f"{p}1", f"{p}2")
        setattr(self, f"{p}1", _layer(ins.kind, ins.channels, ins.kernel_size))
        last = _layer(ins.kind, ins.channels, ins.kernel_size)
        with torch.no_grad():  # the branch adds exactly zero: the function is unchanged
            last.weight.zero_()
            last.bias.zero_()
        setattr(self, f"{p}2", last)
        self.bn1 = None
        if ins.batchnorm is not None:
            self.bn1 = _BN[ndim](ins.channels, eps=ins.batchnorm.eps,
                                 momentum=ins.batchnorm.momentum)
        self.act = ins.activation.make() if ins.activation is not None else nn.ReLU()

    def _branch(self):
        first, second = (getattr(self, n) for n in self._names)
        return [m for m in (first, self.bn1, self.act, second) if m is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for m in self._branch():
            y = m(y)
        return x + y

    def bn_input(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self._names[0])(x)

    def calibrate(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Running statistics of ``layer1``'s output (γ = 1, β = 0 as usual)."""
        with torch.no_grad():
            self.bn1.running_mean.copy_(mean)
            self.bn1.running_var.copy_(var)

    def emit(self, graph: fx.Graph, x: fx.Node, prefix: str) -> fx.Node:
        names = {id(m): n for n, m in self.named_children()}
        y = x
        for m in self._branch():
            y = graph.call_module(f"{prefix}.{names[id(m)]}", (y,))
        return graph.call_function(operator.add, (x, y))


def build_block(ins: Insertion, ndim: int, *, device: Optional[torch.device],
                mode: bool) -> nn.Module:
    """The block of ``ins`` (random parts drawn from the current RNG), in ``mode``."""
    if ins.block is not None:  # a transformer sub-block (block="mlp"/"attention"/...)
        block = TransformerBlock(ins.block)
    else:
        cls = IdentityBlock if ins.method == "identity" else ResidualBlock
        block = cls(ins, ndim)
    block = block.to(device=device, dtype=ins.dtype)
    return block.train(mode)
