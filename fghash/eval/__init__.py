"""Evaluation kernels: Hamming distances, rankings and retrieval metrics (numpy and torch side by side)."""
