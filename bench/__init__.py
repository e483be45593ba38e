"""Retrieval metrics, throughput timing, float baselines, reports and benchmark scripts.

Modules (import what you need; nothing here imports torch):

- The ranking and metric code lives below both training and ``bench/``, in
  :mod:`fghash.eval.ranking` (rank queries against a database in chunks, keeping per-distance
  counts) and :mod:`fghash.eval.metrics` (mAP@all/@k, P@k, R@k tie-aware and stable, PR by
  radius, k-NN recall; the ``METRICS`` registry), so training's validation uses them
  without importing ``bench/``.
- :mod:`bench.evaluate` – all quality figures of one codes file.
- :mod:`bench.timing` – ``RepeatTimer`` (warm-up, runs, median).
- :mod:`bench.throughput` – build time, size, QPS, latency and accuracy per index
  configuration, and of exact float search.
- :mod:`bench.report`, :mod:`fghash.viz.plots`, :mod:`bench.machine`, :mod:`bench.progress`
  (a log line per phase with what is left) – ``fghash bench``.
- Scripts: ``python -m bench.scripts.paper_table`` (Table 1 layout from codes files), ``python -m
  bench.scripts.reproduce_tables`` (runs the ``fghash`` steps, then the Table 1 and Table 2
  layouts), ``python -m bench.scripts.bench_map_speed`` (tie-aware mAP@all and @k at Food-101 or
  VegFru size against a naive evaluator), ``python -m bench.scripts.bench_encode`` (``fghash
  encode`` images/s against a plain PyTorch loop).
"""

__all__: list[str] = []
