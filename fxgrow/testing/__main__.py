"""``python -m fxgrow.testing``: a fuzz campaign (see :mod:`fxgrow.testing.campaign`)."""

from .campaign import _main

if __name__ == "__main__":  # pragma: no cover
    _main()
