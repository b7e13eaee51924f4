"""The records the analysis hands on: groups, their members, and constraints.

Plain frozen data, in terms of *group ids* (the layouts they hold name group
ids, not the walk's space ids).  :class:`fxgrow.analysis.result.Analysis`
collects them; the plan and the rewrite read them.

* :class:`Member`: one dimension of one parameter or buffer, with its role.
* :class:`Group`: neurons that must be widened by one index map.
* :class:`UniformSite`: a node that averages over a layout (LayerNorm, a
  mean), so the groups in it must replicate every neuron equally.
* :class:`Pairing`: two groups on the two sides of a product between
  activations (a query/key head dim): one copies the other's index map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from .layout import Layout
from .roles import GROWABLE

__all__ = ["Member", "Group", "UniformSite", "Pairing"]


@dataclass(frozen=True)
class Member:
    """One dimension of one parameter or buffer, in terms of groups.

    ``role`` is ``"producer"`` (its rows make the group's neurons: gathered),
    ``"consumer"`` (its columns read them: gathered and divided by the
    replication counts), ``"pass-through"`` (per-neuron values such as
    BatchNorm statistics: gathered) or ``"attr"`` (a tensor attribute read
    by the graph: gathered).
    """

    tensor: str
    dim: int
    role: str
    layout: Layout

    @property
    def module(self) -> str:
        return self.tensor.rpartition(".")[0]


@dataclass(frozen=True)
class Group:
    """Neurons that must be widened by one index map.

    ``uniform`` holds the reasons of the uniform-replication constraints the
    group is under (its own and those of the groups sharing its map).
    """

    id: int
    size: int
    status: str
    reasons: Tuple[str, ...]
    producers: Tuple[str, ...]
    members: Tuple[Member, ...]
    uniform: Tuple[str, ...] = ()

    @property
    def growable(self) -> bool:
        return self.status == GROWABLE

    @property
    def reason(self) -> str:
        """Why the group cannot grow ('' if it can)."""
        return "; ".join(self.reasons)

    def __str__(self) -> str:
        return (f"group {self.id}: {self.size} neurons, {self.status}"
                + (f" ({self.reason})" if self.reasons else ""))


@dataclass(frozen=True)
class UniformSite:
    """Node ``node`` averages over ``layout``: each of its neurons must be copied
    the same number of times (``why`` says which op and how)."""

    layout: Layout
    why: str
    node: str


@dataclass(frozen=True)
class Pairing:
    """The outcome for one contraction: group ``rescaled`` follows ``primary``'s map.

    ``sqrt_scale``: the product is also divided by ``sqrt(size)`` read at run
    time, so the rescaled side undoes the change of that factor too.
    """

    primary: int
    rescaled: int
    node: str
    sqrt_scale: bool
