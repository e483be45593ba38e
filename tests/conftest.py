"""Shared fixtures. Tests are CPU-only, small and never touch the network."""

from __future__ import annotations

import os

# Keep tests deterministic and polite on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TORCH_HOME", os.path.join(os.path.dirname(__file__), ".no-downloads"))
