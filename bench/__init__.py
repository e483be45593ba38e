"""What ``fghash bench`` needs, and, apart in ``bench/scripts/``, the benchmark scripts.

The library behind ``fghash bench`` (and the demo's summary); nothing here imports torch:

- :mod:`bench.evaluate` – all quality figures of one codes file (the ranking and metrics
  themselves live below, in :mod:`fghash.eval`, which training's validation also uses);
- :mod:`bench.throughput` – build time, size, QPS, latency and accuracy per index
  configuration, and of exact float search; :mod:`bench.timing` – ``RepeatTimer``;
- :mod:`bench.report` – the report (``report.json``, plots from :mod:`fghash.viz.plots`),
  :mod:`bench.report_markdown` – its ``report.md``; :mod:`bench.outdir` – what may be
  written where; :mod:`bench.machine` – hardware and versions; :mod:`bench.progress` –
  a log line per phase with what is left;
- :mod:`bench.quick` – the few headline figures ``fghash demo`` prints.

``bench/scripts/``: one-off measurements, each runnable as ``python -m
bench.scripts.NAME --help`` (``bench_encode``, ``bench_gpu_search``, ``bench_map_speed``,
``bench_models``, ``bench_padding``, ``bench_scale``, ``bench_train``, ``make_codes``,
``paper_table``, ``reproduce_tables``; the last one's parts in
``bench/scripts/reproduce/``). The library never imports a script.
"""

__all__: list[str] = []
