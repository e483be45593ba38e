"""Figures and image sheets shared by ``fghash bench``, ``fghash explain`` and ``fghash search --grid``."""
