"""The parts of ``python -m bench.scripts.reproduce_tables`` (not scripts themselves).

- :mod:`bench.scripts.reproduce.plan` – which ``fghash`` steps make which table entry;
- :mod:`bench.scripts.reproduce.steps` – running the steps as subprocesses, resumably.
"""

__all__: list[str] = []
