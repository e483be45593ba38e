"""A training run's folder: its layout, resolved config, checkpoint and data fingerprint."""
