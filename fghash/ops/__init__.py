"""One library function per user action, above ``index/``, ``bench/`` and the learning side:
the CLI and the HTTP service both call them, so the same arguments give the same result.

- :mod:`fghash.ops.indexes`: search a bundle (codes, a hex code or images), add items.
- :mod:`fghash.ops.new_items`: images encoded by a trained run as new items for ``add``.
- :mod:`fghash.ops.learning`: train runs, encode a run to a codes file.
- :mod:`fghash.ops.reports`: ``fghash explain`` (one codes file, or several compared).

Nothing is imported here: ``fghash search`` must not import torch, and the CLI must load
without numpy.
"""

__all__: list[str] = []
