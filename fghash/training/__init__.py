"""The training loop of A2-Net and its parts: losses, the ADSH update of B, DDP and validation."""
