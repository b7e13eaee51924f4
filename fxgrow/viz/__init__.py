"""Pictures of an analysis for debugging: networkx, DOT and an HTML page.

* :mod:`.graph` -- :func:`to_networkx`, :func:`collapse`, :func:`group_colours`;
* :mod:`.dot` -- :func:`to_dot`, Graphviz DOT text;
* :mod:`.page` -- :func:`draw`, the self-contained HTML page, rendered by
  :mod:`.html` with the placement of :mod:`.placement`;
* :mod:`.format` -- formatting both share.

Everything here only reads the analysis; nothing is recomputed or changed.
"""

from .dot import to_dot
from .graph import NO_GROUP, collapse, group_colours, to_networkx
from .page import draw

__all__ = ["to_networkx", "to_dot", "draw", "collapse", "group_colours", "NO_GROUP"]
