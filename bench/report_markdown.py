"""``report.md`` of ``fghash bench``: the tables people read, rendered from ``report.json``.

Only the JSON document is read (no codes file, no index), so a report can be re-rendered
from its ``report.json`` alone. ``–`` marks a figure that does not apply (no labels, a
skipped index kind); numbers use four decimals, or three significant digits when very
large or small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fghash.eval.metrics import TIES

__all__ = ["render_markdown"]


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += [
        "| " + " | ".join(_f(v) if not isinstance(v, str) else v for v in r) + " |" for r in rows
    ]
    return "\n".join(lines)


def _quality_table(c: dict[str, Any], ks: Sequence[int]) -> str:
    header = ["ranking", "ties", "mAP@all"]
    header += [f"mAP@{k}" for k in ks] + [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + ["P@r≤2"]
    rows = []
    names = {
        "hamming": f"Hamming ({c['bits']} bits)",
        "float-ip": "float IP (exact)",
        "float-l2": "float L2 (exact)",
    }
    for key, q in c["quality"].items():
        for t in TIES:
            if t not in q:
                continue
            m = q[t]
            rows.append(
                [names.get(key, key), t, m["map@all"]]
                + [m["map@k"][str(k)] for k in ks]
                + [m["precision@k"][str(k)] for k in ks]
                + [m["recall@k"][str(k)] for k in ks]
                + [q.get("precision@r2")]
            )
    return _table(header, rows)


def _speed_table(c: dict[str, Any], ks: Sequence[int]) -> str:
    kl = "/".join(str(k) for k in ks)
    header = [
        "index",
        "device",
        "setting",
        "build s",
        "bytes/item",
        "QPS",
        "p50 ms",
        "p99 ms",
        f"kNN-recall@{kl}",
        f"mAP@{kl}",
    ]
    rows = []
    for r in c["throughput"]["rows"]:
        if "skipped" in r:
            rows.append([r["kind"], r["device"], "skipped: " + r["skipped"]] + [None] * 7)
            continue
        acc = r["accuracy"]
        setting = ", ".join(f"{k}={v}" for k, v in r["sweep"].items()) or "–"
        if r.get("sample"):
            sm = r["sample"]
            setting += (
                f" (first {sm['items']:,} of {sm['of']:,} items: "
                f"{sm['build_budget_s']:g} s build budget)"
            )
        rec = "/".join(_f(acc.get(f"knn-recall@{k}"), 3) for k in ks)
        mp = "/".join(_f(acc.get(f"map@{k}"), 3) for k in ks)
        rows.append(
            [
                r["kind"],
                r["device"],
                setting,
                r["build_s"],
                r["bytes_per_item"],
                f"{r['qps']:.0f}",
                r["latency_p50_ms"],
                r["latency_p99_ms"],
                rec,
                mp,
            ]
        )
    return _table(header, rows)


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: settings, machine, then per codes file its quality
    and speed tables and plots, then mAP against code length."""
    out = _md_header(report)
    plots = report.get("plots", [])
    for c in report["codes"]:
        out += _md_codes(c, report["settings"]["k"], plots)
    if "pr_curves.png" in plots:
        out += ["## Precision–recall by Hamming radius", "", "![pr_curves.png](pr_curves.png)", ""]
    if len(report["codes"]) > 1:
        out += _md_map_vs_bits(report["codes"])
        if "map_vs_bits.png" in plots:
            out += ["![map_vs_bits.png](map_vs_bits.png)", ""]
    return "\n".join(out)


def _md_header(report: dict[str, Any]) -> list[str]:
    """Title, creation, machine, software, timing settings and the protocol."""
    s, m = report["settings"], report["machine"]
    sw = report.get("software", {})
    ram = f"{m['ram_bytes'] / 2**30:.1f} GiB" if m.get("ram_bytes") else "unknown RAM"
    return [
        "# fghash benchmark report",
        "",
        f"- Created {report['created']}"
        + (f" by `{report['command']}`" if report.get("command") else ""),
        f"- Machine: {m['cpu_model']}, {m['cpu_cores']} cores ({m['cpu_cores_usable']} usable), {ram}, "
        f"{m.get('faiss_gpus', 0)} GPU(s) visible to FAISS",
        f"- Software: Python {sw.get('python')}, numpy {sw.get('numpy')}, FAISS {sw.get('faiss')}"
        + (f", torch {sw['torch']}" if sw.get("torch") else ""),
        f"- FAISS threads: {report.get('threads')}; timed runs: {s['runs']} after {s['warmup']} warm-up "
        f"(median reported); latency over {s['latency_queries']} single queries"
        + (
            f"; both stop early past {s['max_seconds_per_config']:g} s per configuration"
            if s.get("max_seconds_per_config")
            else ""
        ),
        "- Protocol: query split ranked against database split by Hamming distance; relevant = "
        "same label (multi-hot: a shared label); a query without relevant items counts AP 0. "
        "`tie-aware` = exact expectation over random order within equal distances; `stable` = "
        "ties by database position. Float baselines break (rare) ties by position.",
        "",
    ]


def _md_codes(c: dict[str, Any], ks: Sequence[int], plots: Sequence[str]) -> list[str]:
    """One codes file's section: what it holds, notes, quality and speed tables, its plots."""
    out = [
        f"## {c['tag']}: {c['method']}, {c['bits']} bits, {c['dataset']}",
        "",
        f"`{c['path']}` ({c['checksum'][:19]}…): {c['n_query']} queries × {c['n_database']} database items, "
        f"labels: {c['labels'] or 'none'}, features: "
        + (f"{c['features']['dim']}-d {c['features']['kind']}" if c["features"] else "none"),
        "",
    ]
    out += [f"> {n}" for n in c["notes"]] + ([""] if c["notes"] else [])
    if c["quality"]:
        h = c["quality"]["hamming"]
        out += [
            "### Retrieval quality",
            "",
            _quality_table(c, ks),
            "",
            f"Queries without any relevant item: {h['queries_without_relevant']}.",
            "",
        ]
    out += ["### Speed, size and accuracy per index configuration", "", _speed_table(c, ks), ""]
    for name in plots:
        if name.endswith(f"_{c['tag']}.png"):
            out += [f"![{name}]({name})", ""]
    return out


def _md_map_vs_bits(codes: Sequence[dict[str, Any]]) -> list[str]:
    """mAP@all of every codes file side by side (Hamming both ways, exact float)."""
    rows = []
    for c in codes:
        q = c["quality"]
        rows.append(
            [
                c["tag"],
                c["method"],
                str(c["bits"]),
                q.get("hamming", {}).get("tie-aware", {}).get("map@all"),
                q.get("hamming", {}).get("stable", {}).get("map@all"),
                q.get("float-ip", {}).get("stable", {}).get("map@all"),
                q.get("float-l2", {}).get("stable", {}).get("map@all"),
            ]
        )
    header = [
        "codes",
        "method",
        "bits",
        "Hamming tie-aware",
        "Hamming stable",
        "float IP",
        "float L2",
    ]
    return ["## mAP@all against code length", "", _table(header, rows), ""]
