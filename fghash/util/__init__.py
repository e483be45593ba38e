"""Plumbing every layer may use: atomic writes, progress lines, thread control, device choice."""
