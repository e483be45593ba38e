"""``python -m fghash.cli``: the same as ``fghash``."""

from fghash.cli import main

main()
