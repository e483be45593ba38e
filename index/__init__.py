"""FAISS binary indexes over fghash codes files. Never imports torch.

Public API (everything other parts of fghash may use):

- :func:`fast_dim`, :func:`pad_codes`: zero-padding to FAISS's fast code widths.
- :class:`BinaryIndex`, :func:`build_index`, :data:`KINDS`: build and search
  (``flat``, ``ivf``, ``hnsw``, ``hash``, ``multihash``); order within ties is
  documented in :mod:`index.binary`.
- :func:`resolve_device`: ``auto``/``cpu``/``gpu`` (only ``flat`` runs on GPU).
- :class:`ItemMeta`, :func:`result_rows`, :func:`search_items`: positions → ids,
  labels, paths.
- :func:`save_index`, :func:`load_index`, :func:`build_from_codes`,
  :func:`build_bundle`: index bundles.
- :func:`search_bundle`, :func:`describe`: one call per CLI command.

FAISS itself is imported lazily, inside the functions that need it.
"""

from index.binary import (
    KINDS,
    MIN_POINTS_PER_CENTROID,
    MISSING_DISTANCE,
    BinaryIndex,
    build_index,
    default_hash_params,
    default_nlist,
)
from index.bundle import (
    build_bundle,
    build_from_codes,
    is_bundle,
    load_index,
    read_bundle_meta,
    save_index,
)
from index.gpu import GPU_MAX_K, resolve_device
from index.items import ItemMeta, result_rows, search_items
from index.padding import FAST_CODE_BYTES, fast_dim, pad_codes
from index.query import describe, search_bundle

__all__ = [
    "KINDS",
    "MIN_POINTS_PER_CENTROID",
    "MISSING_DISTANCE",
    "GPU_MAX_K",
    "FAST_CODE_BYTES",
    "BinaryIndex",
    "ItemMeta",
    "build_index",
    "build_bundle",
    "build_from_codes",
    "default_hash_params",
    "default_nlist",
    "describe",
    "fast_dim",
    "is_bundle",
    "load_index",
    "pad_codes",
    "read_bundle_meta",
    "resolve_device",
    "result_rows",
    "save_index",
    "search_bundle",
    "search_items",
]
