"""The text tables the fghash commands print (``--format table``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fghash.util import threads as runtime

__all__ = ["demo_summary", "demo_times", "info_text", "search_text", "table"]


def table(rows: list[tuple[str, ...]], indent: str = "") -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(indent + line for line in lines)


def info_text(d: dict[str, Any]) -> str:
    if d["type"] == "index":
        params = ", ".join(f"{k}={v}" for k, v in sorted(d["params"].items())) or "-"
        src = d.get("codes") or {}
        rows = [
            ("index bundle", d["path"]),
            ("kind", d["kind"]),
            (
                "bits",
                f"{d['bits']} (stored as {d['dim']}{', zero-padded' if d.get('padded') else ''})",
            ),
            ("items", str(d["ntotal"])),
            ("params", params),
            (
                ("built on", f"{d.get('built_on', '?')}, FAISS {d.get('faiss_version', '?')}")
                if d["kind"] != "milvus"
                else (
                    "milvus",
                    f"collection {d['params'].get('collection')} at {d['params'].get('uri')}",
                )
            ),
            ("codes", f"{src.get('path', '-')} (split {src.get('split', '-')})"),
            ("checksum", str(src.get("checksum", "-"))),
            ("index.faiss", f"checked: {d.get('checked', '-')}"),
            ("created", str(d.get("created", "-"))),
        ]
        return table(rows)
    rows = [
        ("codes file", d["path"]),
        ("bits", str(d["bits"])),
        ("method", str(d["method"])),
        ("created", str(d.get("created") or "-")),
        ("config", json.dumps(d["config"], sort_keys=True) if d["config"] else "-"),
        ("attributes", f"{d['attribute_names']} names" if d["attribute_names"] else "-"),
    ]
    splits = [("split", "items", "labels", "features")]
    for name, s in sorted(d["splits"].items()):
        feats = s.get("features")
        splits.append(
            (
                name,
                str(s["n"]),
                s.get("labels", "-"),
                f"{feats['kind']} [{feats['dim']}]" if feats else "-",
            )
        )
    return table(rows) + "\n\n" + table(splits)


def search_text(results: list[dict[str, Any]]) -> str:
    from index.query import format_label

    blocks = []
    for n, r in enumerate(results, start=1):
        q = r["query"]
        head = f"query {n}"
        if q["id"] is not None:
            head += f": id {q['id']}, label {format_label(q['label'])}"
            if q["path"] is not None:
                head += f", {q['path']}"
        elif q["path"] is not None:  # an image given with --image
            head += f": {q['path']}"
        rows = [("rank", "id", "distance", "label", "path")]
        for hit in r["results"]:
            rows.append(
                (
                    str(hit["rank"]),
                    str(hit["id"]),
                    str(hit["distance"]),
                    format_label(hit["label"]),
                    hit["path"] or "-",
                )
            )
        if len(rows) == 1:
            blocks.append(head + "\n  (nothing found)")
        else:
            blocks.append(head + "\n" + table(rows, indent="  "))
    return "\n\n".join(blocks)


def demo_summary(rep: Any, out: Path, seconds: dict[str, float]) -> str:
    """The closing table of ``fghash demo``."""
    feats = rep.features or {}
    rows = [("", "mAP@all", "ranking")]
    rows.append(
        (
            f"learned {rep.bits}-bit codes",
            f"{rep.map_hamming:.4f}",
            f"Hamming, tie-aware (stable ties: {rep.map_hamming_stable:.4f})",
        )
    )
    if rep.map_float is not None:
        rows.append(
            (
                "exact float search",
                f"{rep.map_float:.4f}",
                f"inner product over the {feats.get('dim')}-d {feats.get('kind')} features",
            )
        )
    rows.append(("chance", f"{rep.chance:.4f}", "random ranking (expected mAP)"))
    lines = [
        f"mAP@all, {rep.n_query} queries (test split) against {rep.n_database} database "
        "items (training split):",
        table(rows, indent="  "),
        "  (the float search compares network outputs on both sides; the learned database",
        "  codes also carry the training labels, so they can beat it)",
        "",
        f"speed, CPU, {rep.threads} FAISS thread(s), k={rep.k}, median of {rep.runs} runs "
        f"(tiny database: mostly call overhead):",
    ]
    speed = [
        (
            f"IndexBinaryFlat ({rep.bits} bits stored as {rep.index_bits})",
            f"{rep.qps_binary:,.0f} queries/s",
        )
    ]
    if rep.qps_float is not None:
        speed.append(
            (f"IndexFlatIP ({feats.get('dim')}-d float32)", f"{rep.qps_float:,.0f} queries/s")
        )
        speed.append(("binary / float", f"{rep.speedup:.2f}x"))
    lines.append(table(speed, indent="  "))
    lines += ["", demo_times(seconds)]
    return "\n".join(lines)


def demo_times(seconds: dict[str, float]) -> str:
    """The demo's phase times, one line each, then the total."""
    import torch

    rows = [(name, f"{s:.1f} s") for name, s in seconds.items()]
    rows.append(("total", f"{sum(seconds.values()):.1f} s"))
    used = runtime.thread_summary()
    threads = f"{used} CPU thread(s)" if used.isdigit() else f"CPU threads {used}"
    head = f"time, {threads}, torch {torch.__version__}:"
    return "\n".join([head, table(rows, indent="  ")])
