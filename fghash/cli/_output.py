"""The text tables the fghash commands print (``--format table``)."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "built_text",
    "demo_summary",
    "explain_text",
    "info_text",
    "printable",
    "search_text",
    "table",
]

# C0/C1 control characters, DEL and the Unicode line/paragraph separators: any of them
# in a stored path or label could move the cursor or start a new (forged) table row.
# Surrogate escapes: the bytes of a file name that is not UTF-8 (os.fsdecode's).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")


def _escape(c: str) -> str:
    if "\udc80" <= c <= "\udcff":
        return f"\\x{ord(c) - 0xDC00:02x}"  # the byte itself, printable in any locale
    return repr(c)[1:-1]


def printable(text: str) -> str:
    """``text`` with each control character written as a Python escape (``\\n``,
    ``\\x1b``) and each byte of a name that is not UTF-8 as ``\\xNN``, so that what
    files store prints as one line, in any locale, and never forges a row."""
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


def table(rows: list[tuple[str, ...]], indent: str = "") -> str:
    """Left-aligned columns, two spaces apart; control characters escaped (:func:`printable`)."""
    rows = [tuple(printable(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(indent + line for line in lines)


def info_text(d: dict[str, Any]) -> str:
    """What :func:`index.describe` found: an index bundle, or a codes file and its splits."""
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


def built_text(index: Any, milvus_index: str = "BIN_FLAT") -> str:
    """The line ``fghash build-index`` prints about the index it built."""
    if index.kind == "milvus":
        return (
            f"loaded {index.ntotal} items, {index.bits}-bit codes, into Milvus collection "
            f"{index.collection} ({milvus_index}, HAMMING) at {index.params['uri']}"
        )
    params = ", ".join(f"{k}={v}" for k, v in sorted(index.params.items()))
    padding = f", stored as {index.dim} (zero-padded)" if index.padded else ""
    return (
        f"built {index.kind} index on {index.device.upper()}: {index.ntotal} items, "
        f"{index.bits}-bit codes{padding}" + (f"; {params}" if params else "")
    )


def search_text(results: list[dict[str, Any]]) -> str:
    """One block per query (:func:`index.search_bundle` rows): its head, then its hits."""
    from fghash.codes.labels import format_label

    blocks = []
    for n, r in enumerate(results, start=1):
        q = r["query"]
        head = f"query {n}"
        if q["id"] is not None:
            head += f": id {q['id']}, label {printable(format_label(q['label']))}"
            if q["path"] is not None:
                head += f", {printable(str(q['path']))}"
        elif q["path"] is not None:  # an image given with --image
            head += f": {printable(str(q['path']))}"
        scored = any("score" in hit for hit in r["results"])  # re-ranked (--rerank)
        rows = [("rank", "id", "distance", *(("score",) if scored else ()), "label", "path")]
        for hit in r["results"]:
            rows.append(
                (
                    str(hit["rank"]),
                    str(hit["id"]),
                    str(hit["distance"]),
                    *((f"{hit['score']:.6g}",) if scored else ()),
                    printable(format_label(hit["label"])),
                    printable(str(hit["path"] or "-")),
                )
            )
        if len(rows) == 1:
            blocks.append(head + "\n  (nothing found)")
        else:
            blocks.append(head + "\n" + table(rows, indent="  "))
        if r.get("truncated"):  # a radius search cut at --max-results
            blocks[-1] += (
                f"\n  (truncated at {len(r['results'])} results: more lie within the radius; "
                "--max-results raises the limit)"
            )
    return "\n\n".join(blocks)


def _demo_quality(rep: Any) -> list[str]:
    """mAP@all of the learned codes, exact float search and chance."""
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
    return [
        f"mAP@all, {rep.n_query} queries (test split) against {rep.n_database} database "
        "items (training split):",
        table(rows, indent="  "),
        "  (the float search compares network outputs on both sides; the learned database",
        "  codes also carry the training labels, so they can beat it)",
    ]


def _demo_speed(rep: Any) -> list[str]:
    """Queries per second of the binary index and of exact float search."""
    feats = rep.features or {}
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
    return [
        f"speed, CPU, {rep.threads} FAISS thread(s), k={rep.k}, median of {rep.runs} runs "
        f"(tiny database: mostly call overhead):",
        table(speed, indent="  "),
    ]


def _demo_times(report: Any) -> list[str]:
    """The demo's phase times, one line each, then the total."""
    rows = [(name, f"{s:.1f} s") for name, s in report.seconds.items()]
    rows.append(("total", f"{sum(report.seconds.values()):.1f} s"))
    used = report.threads
    threads = f"{used} CPU thread(s)" if used.isdigit() else f"CPU threads {used}"
    return [f"time, {threads}, torch {report.torch_version}:", table(rows, indent="  ")]


def demo_summary(report: Any) -> str:
    """What ``fghash demo`` prints after its phases (a :class:`fghash.demo.DemoReport`):
    the searches, mAP, speed, phase times and the commands to try next."""
    res = report.learned
    out = res.out
    lines = [
        f"search: the first {len(report.searches)} test images, top {report.k}:",
        search_text(report.searches),
        "",
        *_demo_quality(report.quality),
        "",
        *_demo_speed(report.quality),
        "",
        *_demo_times(report),
        "",
        "next:",
    ]
    for line in (
        f"fghash search {report.bundle} --codes {res.codes_path} --limit 5 -k 10",
        f"fghash bench {res.codes_path} --out {out / 'bench'}",
        f"fghash info {res.codes_path}",
        f"fghash encode {res.run_dir} --out {out / 'codes-backbone.h5'} --features backbone",
    ):
        lines.append(f"  {line}")
    return "\n".join(lines)


def explain_text(doc: dict[str, Any]) -> str:
    """The awareness line(s) of ``fghash explain``: one file's scores against their
    rotation null, or several files side by side (:func:`fghash.explain.compare.awareness_text`)."""
    if "rows" in doc:
        from fghash.explain.compare import awareness_text

        return awareness_text(doc["rows"])
    aw = doc["awareness"]
    if "per_bit" not in aw:
        return ""
    n = aw["null"]
    return (
        f"attribute awareness per bit {aw['per_bit']:.3f} (rotation null "
        f"{n['per_bit_mean']:.3f}±{n['per_bit_std']:.3f}), per attribute "
        f"{aw['per_attribute']:.3f} (null {n['per_attribute_mean']:.3f}"
        f"±{n['per_attribute_std']:.3f})"
    )
