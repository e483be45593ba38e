"""``fghash serve``: index bundles as a long-running HTTP retrieval service.

One module per job: :mod:`~fghash.serve.registry` (bundles loaded once, reloaded when
their revision changes), :mod:`~fghash.serve.queries` (codes, base64 and ids in request
bodies), :mod:`~fghash.serve.images` (uploads and item image files),
:mod:`~fghash.serve.writes` (authorised adds), :mod:`~fghash.serve.metrics` (Prometheus)
and :mod:`~fghash.serve.app` (the FastAPI routes). Importing this package imports none of
FastAPI, FAISS or torch; :func:`fghash.serve.app.create_app` imports FastAPI, and torch is
imported on the first image request only.
"""

__all__: list[str] = []
