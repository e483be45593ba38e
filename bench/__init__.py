"""Retrieval metrics, throughput timing, float baselines, reports and benchmark scripts."""
