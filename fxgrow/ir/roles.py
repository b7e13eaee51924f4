"""The two small vocabularies of the analysis result: roles and statuses.

Roles say what a parameter dimension does with a group's neurons, and so how
widening treats it:

* ``PRODUCER``: its slices make the group's neurons (weight rows, biases);
  widening gathers them.
* ``CONSUMER``: its slices read the group's neurons (weight columns);
  widening gathers them and divides by the replication counts, so the sum a
  consumer computes over all copies equals the old sum.
* ``PASS``: per-neuron values applied in place (BatchNorm statistics and
  affine parameters, LayerNorm weights); widening gathers them.
* ``ATTR``: a tensor attribute read by the graph (``get_attr``); gathered.

Statuses say whether a group may grow: ``GROWABLE``; ``FIXED`` (its size is
part of the model's interface or of a literal the graph cannot recompute:
model inputs and outputs, a broadcast, a size-1 dim); ``BLOCKED`` (an op the
analysis does not understand, or cannot prove exact, reads it).  A space's
status only ever rises, in :data:`STATUS_RANK` order.

>>> sorted(ROLES), STATUS_RANK[BLOCKED] > STATUS_RANK[FIXED]
(['attr', 'consumer', 'pass-through', 'producer'], True)
"""

PRODUCER, CONSUMER, PASS, ATTR = "producer", "consumer", "pass-through", "attr"

#: every role, in the order a member with several roles reports the first one it has
ROLES = (CONSUMER, PRODUCER, PASS, ATTR)

#: roles whose slices are divided by replication counts
SCALED = frozenset({CONSUMER})

GROWABLE, FIXED, BLOCKED = "growable", "fixed", "blocked"

#: statuses only rise: a fixed space can be blocked, never made growable again
STATUS_RANK = {GROWABLE: 0, FIXED: 1, BLOCKED: 2}

__all__ = ["PRODUCER", "CONSUMER", "PASS", "ATTR", "ROLES", "SCALED",
           "GROWABLE", "FIXED", "BLOCKED", "STATUS_RANK"]
