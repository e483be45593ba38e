"""Removal from a Milvus bundle: rows deleted by position, positions left with gaps.

A Milvus collection cannot renumber its rows in one step, so removed items leave gaps:
``index.json`` keeps ``params.next_pos`` (one past the largest position ever given)
beside ``ntotal`` (the rows there are), searches filter on ``pos < next_pos``, and new
items go on from ``next_pos``. The delete is the change outside the files that
:class:`index.snapshot.Change` ``redo`` names: made once the journal is written, and
made again (harmlessly) by the next command if this one dies before the switch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError
from index.folder import now_iso, write_meta
from index.milvus import MilvusIndex, milvus_meta
from index.milvus_connect import connect, reason

__all__ = ["delete_positions", "milvus_rows", "redo_call", "write_removed_meta"]

_PAGE = 10_000


def milvus_rows(index: MilvusIndex) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, ids)`` of the rows the bundle records, in position order."""
    pos: list[int] = []
    ids: list[int] = []
    for s in range(0, index.next_pos, _PAGE):
        try:
            got = index.client.query(
                index.collection,
                filter=f"pos >= {s} and pos < {min(index.next_pos, s + _PAGE)}",
                output_fields=["pos", "id"],
                consistency_level="Strong",
            )
        except Exception as e:
            raise FghashError(f"reading {index.collection!r} failed: {reason(e)}") from None
        for row in sorted(got, key=lambda r: int(r["pos"])):
            pos.append(int(row["pos"]))
            ids.append(int(row["id"]))
    return np.asarray(pos, dtype=np.int64), np.asarray(ids, dtype=np.int64)


def delete_positions(uri: str, collection: str, positions: list[int]) -> None:
    """Delete the rows at ``positions`` (rows already gone are no error)."""
    client = connect(uri)
    try:
        for s in range(0, len(positions), _PAGE):
            client.delete(collection, filter=f"pos in {positions[s : s + _PAGE]}")
        client.flush(collection)
    except Exception as e:
        raise FghashError(f"deleting from {collection!r} failed: {reason(e)}") from None


def redo_call(index: MilvusIndex, positions: np.ndarray) -> dict[str, Any]:
    """The journal's ``redo`` for deleting ``positions`` of ``index``'s collection."""
    return {
        "call": "index.milvus_remove:delete_positions",
        "args": {
            "uri": index.params["uri"],
            "collection": index.collection,
            "positions": [int(p) for p in positions],
        },
    }


def write_removed_meta(
    tmp: Path, index: MilvusIndex, removed: int, source: dict[str, Any], meta: dict[str, Any]
) -> None:
    """The bundle's next ``index.json``, ``removed`` rows fewer, into the folder ``tmp``."""
    index.params["next_pos"] = index.next_pos
    out = milvus_meta(index, source)
    out["ntotal"] = index.ntotal - removed
    out["created"] = meta.get("created") or out["created"]
    out["updated"] = now_iso()
    out["generation"] = int(meta.get("generation", 1)) + 1
    write_meta(tmp, out)
