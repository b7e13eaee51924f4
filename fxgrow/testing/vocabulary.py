"""The op vocabulary the random architectures draw from, as code snippets.

``{x}`` stands for the input variable, ``{c}`` for its channel count, ``{d}``
for the channel dim.
"""

from __future__ import annotations

from typing import Tuple

__all__ = ["ACTIVATIONS", "UNKNOWN_OPS", "REDUCTIONS"]

#: Activations, as code: ``nn.X(...)`` is a module, ``{x}`` marks a functional form.
ACTIVATIONS: Tuple[str, ...] = (
    "nn.ReLU()", "nn.ReLU6()", "nn.LeakyReLU(0.1)", "nn.GELU()", "nn.SiLU()", "nn.Sigmoid()",
    "nn.Tanh()", "nn.Hardswish()", "nn.Hardsigmoid()", "nn.Hardtanh()", "nn.ELU()",
    "nn.SELU()", "nn.CELU()", "nn.Softplus()", "nn.Mish()", "nn.Softsign()", "nn.Tanhshrink()",
    "nn.LogSigmoid()", "nn.Threshold(0.1, 0.0)", "nn.Hardshrink(0.3)", "nn.Softshrink(0.3)",
    "nn.Identity()", "nn.Dropout(0.5)", "nn.PReLU()", "nn.PReLU({c})",
    "F.relu({x})", "F.relu6({x})", "F.leaky_relu({x}, 0.2)", "F.gelu({x})", "F.silu({x})",
    "F.mish({x})", "torch.sigmoid({x})", "torch.tanh({x})", "F.hardswish({x})",
    "F.hardsigmoid({x})", "F.hardtanh({x})", "F.elu({x})", "F.selu({x})", "F.celu({x})",
    "F.softplus({x})", "F.softsign({x})", "F.logsigmoid({x})", "F.tanhshrink({x})",
    "F.hardshrink({x})", "F.softshrink({x})", "F.dropout({x}, 0.5, self.training)",
    "torch.abs({x})", "torch.neg({x})", "torch.square({x})", "torch.sin({x})",
    "torch.cos({x})", "torch.erf({x})", "torch.clamp({x}, -1.0, 1.0)",
    "{x}.relu()", "{x}.sigmoid()", "{x}.tanh()", "{x}.abs()", "{x}.clamp(min=0.0)",
    "torch.relu({x})", "({x} * 0.5)", "({x} + 1.0)",
)

#: Ops fxgrow has no rule for (``{d}`` is the channel dim): they must block.
UNKNOWN_OPS: Tuple[str, ...] = (
    "torch.flip({x}, [{d}])", "torch.roll({x}, 1, {d})", "F.normalize({x}, dim={d})",
    "torch.cummax({x}, dim={d})[0]", "{x}.sort(dim={d})[0]", "torch.atan({x})",
    "torch.sinh({x})", "torch.special.expit({x})",
)

#: Reductions over the channel dim combined back with the tensor.
REDUCTIONS: Tuple[str, ...] = (
    "F.softmax({x}, dim={d})", "torch.log_softmax({x}, dim={d})",
    "({x} - {x}.mean({d}, keepdim=True))", "({x} - {x}.sum({d}, keepdim=True))",
    "({x} * {x}.amax({d}, keepdim=True))", "({x} - {x}.logsumexp({d}, keepdim=True))",
    "({x} / ({x}.var({d}, keepdim=True, correction=0) + 1.0))",
    "({x} / {x}.size({d}))", "({x} * {x}.shape[{d}] ** -0.5)",
)

