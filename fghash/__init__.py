"""fghash: fine-grained image retrieval with learned attribute-aware binary codes.

Importing :mod:`fghash` is cheap and never imports torch or FAISS; the learning side
(:mod:`fghash.models`, :mod:`fghash.training.loop`, :mod:`fghash.encoding.encode`) imports torch when used.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "FghashError", "load"]

from fghash.errors import FghashError  # noqa: E402


def __getattr__(name: str) -> object:  # PEP 562: keep ``import fghash`` free of torch
    if name == "load":
        from fghash.encoding.encode import load

        return load
    raise AttributeError(f"module 'fghash' has no attribute {name!r}")
