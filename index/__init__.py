"""Binary indexes over fghash codes files: FAISS's, and an exact tensor engine.

Public API (everything other parts of fghash may use):

- :func:`fast_dim`, :func:`pad_codes`: zero-padding to FAISS's fast code widths.
- :class:`BinaryIndex`, :func:`build_index`, :data:`KINDS`: build and search
  (``flat``, ``ivf``, ``hnsw``, ``hash``, ``multihash``); order within ties is
  documented in :mod:`index.binary`.
- :func:`resolve_faiss_device` (also exported as :func:`resolve_device`, its old name):
  ``auto``/``cpu``/``gpu`` (``cuda`` means ``gpu``); only ``flat`` runs on GPU.
- :class:`ItemMeta`, :func:`result_rows`, :func:`search_items`: positions → ids,
  labels, paths.
- :func:`save_index`, :func:`load_index`, :func:`build_from_codes`,
  :func:`build_bundle`, :func:`read_bundle_meta`, :func:`is_bundle`: index bundles
  (folder format :mod:`index.folder`; back ends :mod:`index.faiss_bundle` and
  :mod:`index.milvus`, chosen in :mod:`index.bundle`).
- :class:`TensorIndex`, :func:`pick_engine`: exact k-NN with torch on a GPU (or CPU,
  for tests), ties ordered like the flat index; which engine ``fghash search`` uses.
- :func:`search_bundle` (:mod:`index.search`), :func:`describe` (:mod:`index.describe`):
  one call per CLI command.

FAISS is imported lazily, inside the functions that need it; torch only by
:mod:`index.tensor`'s functions, when the tensor engine is used.
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
from index.bundle import build_bundle, load_index
from index.describe import describe
from index.faiss_bundle import build_from_codes, save_index
from index.folder import is_bundle, read_bundle_meta
from index.gpu import GPU_MAX_K, resolve_faiss_device
from index.gpu import resolve_faiss_device as resolve_device
from index.items import ItemMeta, result_rows, search_items
from index.padding import FAST_CODE_BYTES, fast_dim, pad_codes
from index.search import search_bundle
from index.tensor import ENGINES, TensorIndex, pick_engine

__all__ = [
    "KINDS",
    "ENGINES",
    "MIN_POINTS_PER_CENTROID",
    "MISSING_DISTANCE",
    "GPU_MAX_K",
    "FAST_CODE_BYTES",
    "BinaryIndex",
    "TensorIndex",
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
    "pick_engine",
    "read_bundle_meta",
    "resolve_device",
    "resolve_faiss_device",
    "result_rows",
    "save_index",
    "search_bundle",
    "search_items",
]
