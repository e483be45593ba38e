"""The sections of ``bench/gpu_check.py``, one module each.

A section is a module here with ``check(tiny: bool, device: str) -> dict``: ``tiny`` asks
for the same code paths at sizes a CPU runs in seconds (CI), ``device`` is ``"cuda"`` or
``"cpu"``; the dict it returns (JSON-serialisable) becomes the section's entry in the
report, beside ``status`` and ``seconds``. Raise to fail the section: the script records
the error and runs the next one. ``bench/gpu_check.py`` runs its own sections first
(:data:`bench.gpu_check.BUILT_IN`), then every other module here, alphabetically; a
module whose name starts with ``_`` is a helper, not a section.
"""

__all__: list[str] = []
