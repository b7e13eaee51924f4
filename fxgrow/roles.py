"""Roles of a parameter dimension in a neuron group.

* ``PRODUCER``: its slices make the group's neurons (weight rows, biases);
  widening gathers them.
* ``CONSUMER``: its slices read the group's neurons (weight columns);
  widening gathers them and divides by the replication counts, so the sum a
  consumer computes over all copies equals the old sum.
* ``PASS``: per-neuron values applied in place (BatchNorm statistics and
  affine parameters, LayerNorm weights); widening gathers them.
* ``ATTR``: a tensor attribute read by the graph (``get_attr``); gathered.
"""

PRODUCER, CONSUMER, PASS, ATTR = "producer", "consumer", "pass-through", "attr"

#: roles whose slices are divided by replication counts
SCALED = frozenset({CONSUMER})
