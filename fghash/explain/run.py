"""``fghash explain``: what the bits of a codes file mean, shown and measured.

For one codes file (:func:`explain`) it writes to ``OUT``:

* ``bits/bit-XX.png`` and ``bits_overview.png`` — per-bit grids (the paper's Figure 4):
  the database images with the most positive and the most negative relaxed value;
* ``auc_heatmap.png`` and ``awareness_null.png`` — AUC of every bit for every ground-truth
  attribute, and the attribute-awareness score against random rotations of the same
  codes (:mod:`fghash.explain.stats` has the definitions);
* ``bit_stats.png`` — bit balance and bit correlation matrix;
* ``retrieval.png`` — chosen or random queries with their top-k (Figure 3), framed
  relevant or not, Hamming distance under each (ties in database order, as the exact
  FAISS index returns them);
* ``explain.json`` (every number) and ``explain.md`` (the summary, what was skipped).

For several codes files, :func:`fghash.explain.compare.compare` puts the awareness scores
side by side.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError
from fghash.eval.ranking import hamming_matrix, relevance
from fghash.explain.inputs import ExplainInput
from fghash.explain.plots import plot_auc_heatmap, plot_bit_stats, plot_null
from fghash.explain.stats import (
    auc_matrix,
    awareness,
    bit_balance,
    bit_correlation,
    effective_bits,
    rotation_null,
)
from fghash.util.atomic import atomic_write_text, remove_stale
from fghash.util.faults import checkpoint
from fghash.util.unfinished import clear_unfinished, mark_unfinished, undo_unfinished
from fghash.viz.retrieval_sheet import draw_retrieval
from fghash.viz.sheets import Tile, draw_sheet, load_image, placeholder

__all__ = ["awareness_summary", "explain", "parse_bits_to_show", "jsonable", "prepare_out"]

logger = logging.getLogger(__name__)


def parse_bits_to_show(text: str | None, bits: int) -> list[int]:
    """``"0,3,5-7"`` → ``[0, 3, 5, 6, 7]``; None → every bit. Bits are 0-based."""
    if not text:
        return list(range(bits))
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise FghashError(f"--bits-to-show must look like 0,3,5-7, got {text!r}.") from None
    bad = [b for b in out if not 0 <= b < bits]
    if bad:
        raise FghashError(
            f"--bits-to-show names bit {bad[0]}, but the codes have bits 0..{bits - 1}."
        )
    return list(dict.fromkeys(out))


def awareness_summary(inp: ExplainInput, *, rotations: int = 20, seed: int = 0) -> dict[str, Any]:
    """AUC matrix, awareness and its rotation null for one input (``{"skipped": ...}``
    without attributes).

    The headline scores use the relaxed values against rotations of the relaxed space.
    With relaxed values, ``"binary"`` adds the same for their signs (the network's bits)
    against ``sgn(X Q)``: a rotated real coordinate can combine several informative bits
    into a better linear detector, which binarising takes away again, so the two nulls
    answer different questions and both are reported.
    """
    if inp.attributes is None:
        return {"skipped": "no attributes"}
    values = inp.relaxed if inp.relaxed is not None else inp.signs
    auc = auc_matrix(values, inp.attributes)
    aw = awareness(auc)
    null = rotation_null(
        values, inp.attributes, rotations=rotations, signs=inp.relaxed is None, seed=seed
    )
    names = inp.attribute_names or []
    out: dict[str, Any] = {
        "scores_from": "relaxed values" if inp.relaxed is not None else "signs of the codes",
        "per_bit": aw.per_bit,
        "per_attribute": aw.per_attribute,
        "null": null.summary(aw),
        "null_values": {
            "per_bit": null.per_bit.tolist(),
            "per_attribute": null.per_attribute.tolist(),
        },
        "best_per_bit": [
            {"bit": b, "attribute": names[int(a)], "auc": float(v)}
            for b, (a, v) in enumerate(zip(aw.best_attribute, aw.best_auc, strict=True))
        ],
        "auc": auc,
    }
    if inp.relaxed is not None:
        signs = np.where(inp.relaxed >= 0, 1.0, -1.0)
        bw = awareness(auc_matrix(signs, inp.attributes))
        bnull = rotation_null(signs, inp.attributes, rotations=rotations, signs=True, seed=seed)
        out["binary"] = {
            "scores_from": "signs of the relaxed values",
            "per_bit": bw.per_bit,
            "per_attribute": bw.per_attribute,
            "null": bnull.summary(bw),
        }
    return out


def _bit_sheets(
    inp: ExplainInput, out: Path, show: list[int], per_side: int, best: dict[int, str], tile: int
) -> tuple[list[Path], int, int]:
    """One PNG per bit and an overview; returns the paths, the tiles drawn, images unreadable."""
    assert inp.relaxed is not None
    s = inp.data
    labels = s.labels
    missing = 0

    def tiles(order: np.ndarray, b: int) -> list[Tile | None]:
        nonlocal missing
        row: list[Tile | None] = []
        for i in order:
            img = load_image(inp.root, s.paths[i] if s.paths else None, tile)
            if img is None:
                missing += 1
                img = placeholder(tile)
            lab = "" if labels is None or labels.ndim != 1 else f"\nlabel {int(labels[i])}"
            row.append(Tile(img, f"{inp.relaxed[i, b]:+.2f}{lab}"))
        return row

    paths, count = [], 0
    over_rows: list[list[Tile | None]] = []
    over_labels = []
    (out / "bits").mkdir(parents=True, exist_ok=True)
    for b in show:
        order = np.argsort(-inp.relaxed[:, b], kind="stable")
        pos, neg = tiles(order[:per_side], b), tiles(order[::-1][:per_side], b)
        head = f"bit {b}" + (f" — best attribute: {best[b]}" if b in best else "")
        p, n = draw_sheet(
            [pos, neg],
            out / "bits" / f"bit-{b:02d}.png",
            title=f"{inp.name}, {head}\n{per_side} {inp.split} images with the most positive "
            "(top) and most negative (bottom) relaxed value; value and class under each",
            row_labels=["most positive\n(bit = +1)", "most negative\n(bit = -1)"],
            tile=tile,
        )
        paths.append(p)
        count += n
        over_rows.append([*pos, None, *neg])
        over_labels.append(f"bit {b}\n{best.get(b, '')}".rstrip())
    p, n = draw_sheet(
        over_rows,
        out / "bits_overview.png",
        title=f"{inp.name}: per-bit grids — left, the {per_side} {inp.split} images with the most "
        f"positive relaxed value; right, the {per_side} most negative",
        row_labels=over_labels,
        col_labels=[(0, "most positive →"), (per_side + 1, "most negative →")],
        tile=tile // 2 + 16,
    )
    return [*paths, p], count + n, missing


def _choose_queries(
    inp: ExplainInput, query: Any, ids: Sequence[int] | None, n: int, seed: int
) -> np.ndarray:
    if ids:
        where = {int(i): r for r, i in enumerate(query.ids)}
        bad = [i for i in ids if int(i) not in where]
        if bad:
            raise FghashError(f"--queries: id {bad[0]} is not in the query split of {inp.path}.")
        return np.array([where[int(i)] for i in ids])
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(query), size=min(n, len(query)), replace=False))


def _retrieval(
    inp: ExplainInput, out: Path, ids: Sequence[int] | None, n: int, k: int, seed: int, tile: int
) -> tuple[dict[str, Any], list[Path], list[str]]:
    cf, db = inp.cf, inp.cf["database"]
    qname = "query" if "query" in cf.splits else "database"
    query = cf[qname]
    if len(query) == 0 or len(db) == 0:
        return {}, [], [f"retrieval: the {qname} or database split is empty"]
    rows = _choose_queries(inp, query, ids, n, seed)
    k = min(k, len(db))
    dist = hamming_matrix(query.codes[rows], db.codes, cf.bits).astype(np.int64)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    rel = None
    if query.labels is not None and db.labels is not None:
        rel = relevance(query.labels[rows], db.labels)
    examples = []
    for qi, r in enumerate(rows):
        res = []
        for j in order[qi]:
            res.append(
                {
                    "id": int(db.ids[j]),
                    "label": None
                    if db.labels is None or db.labels.ndim != 1
                    else int(db.labels[j]),
                    "path": db.paths[j] if db.paths else None,
                    "distance": int(dist[qi, j]),
                    "relevant": None if rel is None else bool(rel[qi, j]),
                }
            )
        lab = query.labels
        examples.append(
            {
                "query": {
                    "id": int(query.ids[r]),
                    "label": None if lab is None or lab.ndim != 1 else int(lab[r]),
                    "path": query.paths[r] if query.paths else None,
                },
                "results": res,
                "relevant_in_top_k": None if rel is None else int(rel[qi, order[qi]].sum()),
            }
        )
    info = {"query_split": qname, "k": k, "ties": "database order", "examples": examples}
    skipped: list[str] = []
    if qname == "database":
        skipped.append(
            "retrieval: no query split, so queries come from the database (each finds itself)"
        )
    if inp.root is None or query.paths is None or db.paths is None:
        skipped.append(
            "retrieval figure: no images (see images above); the examples are in explain.json"
        )
        return info, [], skipped
    for ex in examples:
        hits = ex["relevant_in_top_k"]
        ex["row_label"] = f"query id {ex['query']['id']}" + (
            "" if hits is None else f"\n{hits}/{k} relevant"
        )
    p, _, missing = draw_retrieval(
        examples,
        out / "retrieval.png",
        title=f"{inp.name}: top-{k} Hamming retrieval for {len(examples)} {qname} images "
        "(d = Hamming distance; ties in database order)",
        root=inp.root,
        tile=tile,
    )
    if missing:
        skipped.append(f"retrieval figure: {missing} image(s) could not be read (grey squares)")
    return info, [p], skipped


def _bit_stats(inp: ExplainInput) -> dict[str, Any]:
    return {
        "balance": bit_balance(inp.signs).tolist(),
        "correlation": bit_correlation(inp.signs).tolist(),
        "effective_bits": effective_bits(inp.signs),
    }


def _markdown(inp: ExplainInput, doc: dict[str, Any], figures: list[Path], out: Path) -> str:
    eff = doc["bit_stats"]["effective_bits"]
    lines = [
        f"# What the bits of `{inp.path.name}` mean",
        "",
        f"- Codes file: `{inp.path}` — method `{inp.cf.method}`, {inp.cf.bits} bits, split "
        f"`{inp.split}` ({len(inp.data)} items).",
        f"- Relaxed values: {dict(file='the stored relaxed_code features', run='encoded with --run', none='none (signs only)')[inp.relaxed_source]}.",
        f"- Images: {'`' + str(inp.root) + '`' if inp.root else 'not found'}.",
        f"- Command: `{doc['command']}`",
        "",
        "## Bit statistics",
        "",
        f"- Balance (share of +1 per bit): min {min(doc['bit_stats']['balance']):.2f}, "
        f"max {max(doc['bit_stats']['balance']):.2f} (ideal 0.50).",
        f"- Effective number of bits: {eff['balance_entropy']:.2f} of {eff['bits']} from balance "
        f"(Σ H(p_k)); {eff['correlation_rank']:.2f} from the correlation eigenvalues; whole-code "
        f"entropy {eff['code_entropy']:.2f} bits over {eff['distinct_codes']} distinct codes "
        f"(at most log2 N = {eff['code_entropy_cap']:.2f}).",
    ]
    aw = doc.get("awareness", {})
    if "per_bit" in aw:
        nl = aw["null"]
        lines += [
            "",
            "## Attribute awareness",
            "",
            f"AUC of each bit's {aw['scores_from']} for each attribute; score = mean of the best "
            f"|AUC − 0.5| (max 0.5). Null: the same codes under {nl['rotations']} random "
            "orthogonal rotations (same inner products, information spread differently).",
            "",
            "| score | learned bits | null mean ± sd | null max | p |",
            "|---|---:|---:|---:|---:|",
        ]
        blocks = [("", aw)] + ([("signs: ", aw["binary"])] if "binary" in aw else [])
        for prefix, a in blocks:
            nl = a["null"]
            for key, label in (("per_bit", "per bit"), ("per_attribute", "per attribute")):
                lines.append(
                    f"| {prefix}{label} | **{a[key]:.3f}** | {nl[key + '_mean']:.3f} ± "
                    f"{nl[key + '_std']:.3f} | {nl[key + '_max']:.3f} | {nl[key + '_p']:.3f} |"
                )
        if "binary" in aw:
            lines += [
                "",
                '"signs" rows: the same for the signs of the relaxed values (the network\'s '
                "bits) against sgn(X Q) of the rotated relaxed values.",
            ]
        lines += ["", "| bit | best attribute | AUC |", "|---:|---|---:|"]
        lines += [f"| {r['bit']} | {r['attribute']} | {r['auc']:.3f} |" for r in aw["best_per_bit"]]
    ret = doc.get("retrieval")
    if ret:
        lines += ["", "## Retrieval examples", ""]
        for ex in ret["examples"]:
            q = ex["query"]
            hits = ex["relevant_in_top_k"]
            lines.append(
                f"- query id {q['id']} (label {q['label']}): "
                + (
                    f"{hits}/{ret['k']} relevant in the top {ret['k']}; "
                    if hits is not None
                    else ""
                )
                + "distances "
                + ", ".join(str(r["distance"]) for r in ex["results"])
            )
    if doc["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in doc["skipped"]]
    if figures:
        lines += ["", "## Figures", ""] + [f"- `{p.relative_to(out)}`" for p in figures]
    return "\n".join(lines) + "\n"


def jsonable(o: Any) -> Any:
    """``json.dumps`` default: numpy arrays (NaN → null) and scalars."""
    if isinstance(o, np.ndarray):
        return np.where(np.isnan(o), None, o).tolist() if o.dtype.kind == "f" else o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# What a report of explain or compare may hold: every other entry is the user's.
_OWN = (
    "explain.json",
    "explain.md",
    "bits",
    "bits_overview.png",
    "auc_heatmap.png",
    "awareness_null.png",
    "bit_stats.png",
    "retrieval.png",
    "compare.png",
)


def _report_entries(out: Path) -> set[str]:
    """The entries of ``out`` that belong to an explain report: its known names and the
    figures its ``explain.json`` lists."""
    own = set(_OWN)
    try:
        doc = json.loads((out / "explain.json").read_text(encoding="utf-8"))
        own |= {Path(str(f)).parts[0] for f in doc.get("figures", []) if Path(str(f)).parts}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        pass
    return {p.name for p in out.iterdir()} & own


def prepare_out(out: Path, force: bool) -> None:
    """Create ``out`` and mark it unfinished (:mod:`fghash.util.unfinished`); refuse one
    holding a report, or anything else, unless ``force``.

    Call it holding ``out``'s writer lock (:func:`fghash.ops.reports.explain_codes` does):
    what a killed run left is undone first. With ``force`` the report being replaced is
    removed, ``explain.json`` first, so its figures never mix with the new ones; the
    user's other files are kept. The writer removes the marker after ``explain.json``.
    """
    if out.exists() and not out.is_dir():
        raise FghashError(f"--out {out} exists and is not a folder.")
    if out.is_dir():
        undo_unfinished(out)
        remove_stale(out)  # temporaries of a killed run are not "other files"
    if out.is_dir() and not force:
        if (out / "explain.json").exists():
            raise FghashError(f"{out} already holds an explain report; pass --force to replace it.")
        if any(out.iterdir()):
            raise FghashError(
                f"--out {out} already holds other files; choose a new or empty folder, or pass "
                "--force to write the report beside them."
            )
    out.mkdir(parents=True, exist_ok=True)
    own = _report_entries(out)
    mark_unfinished(
        out, writer="fghash explain", keep=[p.name for p in out.iterdir() if p.name not in own]
    )
    for name in sorted(own, key=lambda n: n != "explain.json"):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _header(inp: ExplainInput, command: str | None) -> dict[str, Any]:
    """The report's opening fields: what was explained, from what, by which command."""
    return {
        "format": "fghash.explain",
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or "(called from Python)",
        "codes": str(inp.path),
        "method": inp.cf.method,
        "bits": inp.cf.bits,
        "split": inp.split,
        "items": len(inp.data),
        "relaxed_values": inp.relaxed_source,
        "data_root": str(inp.root) if inp.root else None,
        "bit_stats": _bit_stats(inp),
    }


def _awareness_figures(
    inp: ExplainInput, aw: dict[str, Any], out: Path
) -> tuple[dict[int, str], list[Path]]:
    """Each bit's best attribute as a caption, and the AUC heatmap and null PNGs
    (nothing when the input has no attributes)."""
    if "per_bit" not in aw:
        return {}, []
    best = {
        r["bit"]: ("not " if r["auc"] < 0.5 else "") + f"{r['attribute']} (AUC {r['auc']:.2f})"
        for r in aw["best_per_bit"]
    }
    heatmap = plot_auc_heatmap(
        aw["auc"],
        inp.attribute_names or [],
        out / "auc_heatmap.png",
        title=f"{inp.name}: AUC of each bit's {aw['scores_from']} for each attribute",
    )
    null = plot_null(
        {"per_bit": aw["per_bit"], "per_attribute": aw["per_attribute"]},
        {key: np.array(v) for key, v in aw["null_values"].items()},
        out / "awareness_null.png",
        title=f"{inp.name}: attribute awareness of the learned bits vs. randomly rotated codes",
    )
    return best, [heatmap, null]


def explain(
    inp: ExplainInput,
    out: str | os.PathLike[str],
    *,
    bits_to_show: Sequence[int] | None = None,
    per_side: int = 8,
    queries: Sequence[int] | None = None,
    num_queries: int = 4,
    k: int = 10,
    rotations: int = 20,
    seed: int = 0,
    tile: int = 96,
    force: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Write the one-file report (module docstring) into ``out``; returns the JSON document."""
    out = Path(out)
    prepare_out(out, force)
    skipped = list(inp.skipped)
    doc = _header(inp, command)
    figures = [
        plot_bit_stats(
            np.array(doc["bit_stats"]["balance"]),
            np.array(doc["bit_stats"]["correlation"]),
            out / "bit_stats.png",
            title=f"{inp.name}: statistics of the stored codes of {len(inp.data)} {inp.split} items",
        )
    ]
    aw = awareness_summary(inp, rotations=rotations, seed=seed)
    best, paths = _awareness_figures(inp, aw, out)
    figures += paths
    doc["awareness"] = aw
    doc["auc_rows"] = inp.attribute_names
    show = list(bits_to_show) if bits_to_show is not None else list(range(inp.cf.bits))
    doc["bits_shown"] = show
    images_ok = inp.root is not None and inp.data.paths is not None
    if inp.relaxed is not None and images_ok and show:
        paths, tiles, missing = _bit_sheets(inp, out, show, per_side, best, tile)
        figures += paths
        doc["bit_grid_tiles"] = tiles
        if missing:
            skipped.append(f"per-bit grids: {missing} image(s) could not be read (grey squares)")
    elif inp.relaxed is not None and not images_ok:
        skipped.append("per-bit grids: no images (see images above)")
    ret, paths, notes = _retrieval(inp, out, queries, num_queries, k, seed, tile)
    doc["retrieval"] = ret
    figures += paths
    skipped += notes
    doc["skipped"] = skipped
    doc["figures"] = [str(p.relative_to(out)) for p in figures]
    checkpoint("explain:after-plots")
    atomic_write_text(out / "explain.md", _markdown(inp, doc, figures, out))
    atomic_write_text(out / "explain.json", json.dumps(doc, indent=1, default=jsonable) + "\n")
    checkpoint("explain:after-report")
    clear_unfinished(out)
    return doc
