"""The op vocabulary: what ops are, independent of what they do to neurons.

* :mod:`.aten` -- the canonical forms of ATen overloads (``torch.export`` graphs);
* :mod:`.kinds` -- op kinds (move, add, scale, linear layer, norm, BatchNorm, activation);
* :mod:`.access` -- the one argument reader and tensor-by-name lookup;
* :mod:`.layers` -- layer readers for fx and ATen graphs alike (kind, BatchNorm
  parameters, kernel size, module scopes);
* :mod:`.activations` -- which activation a node computes, and whether it is idempotent.

Importing the vocabulary does not load the rule table (:mod:`fxgrow.rules`).
"""
