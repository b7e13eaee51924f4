"""The rule table: what each op does to neuron spaces.

One table (:mod:`.registry`) maps an op to its rule; the built-in rules live
in one module per op family and are installed here, explicitly:

========================  ==================================================================
:mod:`.elementwise`       activations, arithmetic, comparisons, casts, dropout
:mod:`.linear`            Linear, convolutions, embeddings (weights: producers, consumers)
:mod:`.reparam`           weights growth re-derives: the weight norm ``g * v / ||v||``
:mod:`.norms`             BatchNorm, InstanceNorm, LayerNorm, RMSNorm, GroupNorm
:mod:`.views`             view/reshape/flatten, permute/transpose, (un)squeeze, expand, repeat
:mod:`.slicing`           cat/stack, split/chunk/unbind, slicing and indexing
:mod:`.gathers`           gather/index_select, scatter/index_add/index_put (positions by value)
:mod:`.factories`         zeros/ones/full/empty, arange, one_hot (tensors made in forward)
:mod:`.sizes`             ``size()``, ``shape``, ``numel``
:mod:`.spatial`           pooling, interpolation, padding, roll, unfold/fold
:mod:`.recurrent`         LSTM, GRU, RNN
:mod:`.reductions`        mean/sum/max/var over dims, softmax, argmax
:mod:`.attention`         matmul between activations, SDPA, MultiheadAttention
:mod:`.moe`               the grouped expert matmul of mixture-of-experts blocks
:mod:`.einsum`            ``torch.einsum``
:mod:`.torchvision_ops`   functions torchvision wraps as fx leaves (Swin)
:mod:`.control`           grad-mode and autocast switches (no tensor)
:mod:`.aten`              the ``torch.export`` front end: ATen overloads read as canonical ops
========================  ==================================================================

Ops without a rule block every space they touch, so a missing rule can cost
growth but never correctness.  Users add rules for their own ops and leaf
modules with :func:`register_rule`:

>>> import torch
>>> from fxgrow.rules import register_rule, elementwise
>>> class MyAct(torch.nn.Module):
...     def forward(self, x):
...         return x.clamp(min=0) * 2
>>> _ = register_rule(MyAct)(elementwise)
"""

from . import (aten, attention, control, einsum, elementwise as _elementwise, factories,
               gathers, linear, moe, norms, recurrent, reductions, reparam, sizes, slicing,
               spatial, torchvision_ops, views)
from .elementwise import elementwise, same_as_input
from .registry import RULES, RULES_BY_NAME, Rule, RuleSet, add_fallback, has_module_rule, \
    install, lookup, register_rule

__all__ = ["Rule", "RuleSet", "register_rule", "lookup", "has_module_rule", "elementwise",
           "same_as_input",
           "RULES", "RULES_BY_NAME", "BUILTIN"]

#: the built-in rule sets, in the order they are installed
BUILTIN = (_elementwise.RULES, linear.RULES, reparam.RULES, norms.RULES, views.RULES, slicing.RULES,
           gathers.RULES, factories.RULES, sizes.RULES, spatial.RULES, reductions.RULES,
           attention.RULES, moe.RULES, einsum.RULES, recurrent.RULES, torchvision_ops.RULES,
           control.RULES, aten.RULES)

for _rules in BUILTIN:
    install(_rules)  # a rule the user registered before this import stays theirs
# the torch.export front end: ATen overloads read as canonical ops
add_fallback(aten.aten_rule)
# custom ops of other libraries (HuggingFace's grouped expert matmul), by schema name
add_fallback(moe.custom_op_rule)
