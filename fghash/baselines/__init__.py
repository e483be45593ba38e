"""Shallow hashing baselines on float features (numpy only): LSH, PCAH, ITQ, SDH.

Every method is a :class:`~fghash.baselines.base.Hasher` registered by name::

    from fghash.baselines import create_baseline, list_baselines
    itq = create_baseline("itq", 32, seed=0).fit(X_train)
    codes = itq.encode(X_query)          # packed uint8, schema-v1 bit order

:func:`fghash.baselines.run.run_baseline` (``fghash baseline``) fits one on the
database split of a features file and writes standard codes files.
"""

from fghash.baselines import itq, lsh, pcah, sdh  # noqa: F401  (register the methods)
from fghash.baselines._registry import (
    BASELINES,
    create_baseline,
    get_baseline,
    list_baselines,
    register_baseline,
)
from fghash.baselines.base import Hasher
from fghash.baselines.itq import ITQ
from fghash.baselines.lsh import LSH
from fghash.baselines.pcah import PCAH
from fghash.baselines.sdh import SDH

__all__ = [
    "BASELINES",
    "Hasher",
    "ITQ",
    "LSH",
    "PCAH",
    "SDH",
    "create_baseline",
    "get_baseline",
    "list_baselines",
    "register_baseline",
]
