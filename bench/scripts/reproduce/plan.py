"""Which ``fghash`` steps make which table entry of ``reproduce_tables``.

:func:`make_plan` turns the methods, code lengths and table rows asked for into the
``fghash train``/``encode``/``baseline`` calls that make their codes files (each run
trained once, whichever tables use it) and one entry per table cell naming the codes
file it is scored from. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.runs.folder import DATABASE_CODES, bits_folder

__all__ = [
    "DEEP",
    "SHALLOW",
    "FLOAT",
    "FLOAT_LABEL",
    "ABLATION",
    "DEFAULT_METHODS",
    "EXTRA_RUNS",
    "SMALL_TRAIN_ARGS",
    "Step",
    "Plan",
    "split_list",
    "parse_use",
    "make_plan",
]

# method key -> (column label, `fghash train` options that select it, run folder name)
DEEP: dict[str, tuple[str, tuple[str, ...], str]] = {
    "adsh": ("ADSH", ("--preset", "adsh"), "adsh"),
    "dpsh": ("DPSH", ("--method", "dpsh"), "dpsh"),
    "hashnet": ("HashNet", ("--method", "hashnet"), "hashnet"),
    "a2net": ("A²-Net", ("--preset", "a2net"), "a2net"),
    "a2net_efficient": ("A²-Net (efficient)", ("--method", "a2net_efficient"), "a2net_efficient"),
    "a2net+sc": ("A²-Net + self-consistency", ("--preset", "+self-consistency"), "a2net-sc"),
}
SHALLOW: dict[str, str] = {"lsh": "LSH", "pcah": "PCAH", "itq": "ITQ", "sdh": "SDH"}
FLOAT = "float"
FLOAT_LABEL = "float (relaxed features)"
# Table 2 row -> (row label, the run it uses: a DEEP key or an extra run (label, options, folder))
ABLATION: dict[str, tuple[str, str]] = {
    "adsh": ("ADSH", "adsh"),
    "+attention": ("+ attention", "+attention"),
    "+reconstruction": ("+ reconstruction", "+reconstruction"),
    "+decorrelation": ("+ decorrelation (A²-Net)", "a2net"),
    "+self-consistency": ("+ self-consistency", "a2net+sc"),
}
# Table 2 rows that no Table 1 method trains -> (`fghash train` options, run folder name)
EXTRA_RUNS: dict[str, tuple[tuple[str, ...], str]] = {
    "+attention": (("--preset", "+attention"), "attention"),
    "+reconstruction": (("--preset", "+reconstruction"), "reconstruction"),
}
DEFAULT_METHODS = "lsh,pcah,itq,sdh,dpsh,hashnet,adsh,a2net,float"

#: ``--small``: a CPU configuration (minutes, not days) — ResNet-18 from random weights,
#: 64-pixel crops, 2 attention maps, 18 outer iterations of 3 epochs over 480 sampled
#: images, lr 0.01 without decay or Nesterov, soft similarity targets and γ = 20 instead
#: of the paper's 200: on tiny data sets the learned codes collapse to one code without
#: soft targets and a weaker γ (``fghash.demo`` explains why; the demo itself uses γ = 1).
SMALL_TRAIN_ARGS: tuple[str, ...] = (
    "--weights", "none",
    "--backbone", "resnet18",
    "--image-size", "64",
    "--num-attention", "2",
    "--max-iter", "18",
    "--epochs", "3",
    "--num-samples", "480",
    "--batch-size", "16",
    "--lr", "0.01",
    "--lr-milestones", "",
    "--no-nesterov",
    "--train-crop", "resize-crop",
    "--gamma", "20",
    "--soft-similarity",
)  # fmt: skip


@dataclass
class Step:
    """One ``python -m fghash ARGV`` call and the files that show it is done."""

    name: str  # file-name friendly, e.g. "train-a2net-12"
    argv: list[str]  # fghash arguments, without the ones that may change between runs
    outputs: list[Path]  # all exist => done
    run_dir: Path | None = None  # train steps: the run folder (resume, --force)
    extra: list[str] = field(default_factory=list)  # e.g. --device (not part of the record)

    def done(self) -> bool:
        return all(p.exists() for p in self.outputs)


@dataclass
class Plan:
    """Every step, and where each table entry's codes file comes from."""

    steps: list[Step]
    # one per table cell: {"table", "key", "label", "bits", "path", "score": hamming|float}
    entries: list[dict[str, Any]]
    shallow_features: Path | None
    float_source: str | None


def split_list(text: str, what: str) -> list[str]:
    """The names of a comma-separated option, each once (``what`` names the option)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FghashError(f"{what} needs at least one name.")
    dup = [t for t in dict.fromkeys(items) if items.count(t) > 1]
    if dup:
        raise FghashError(f"{what} lists {dup[0]!r} twice; give each name once.")
    return items


def parse_use(specs: Sequence[str]) -> dict[tuple[str, int], Path]:
    """``--use METHOD@BITS=PATH`` options as ``{(run, bits): path}``; a Table 2 row that is
    a Table 1 run (``+decorrelation`` is ``a2net``) is keyed by that run."""
    known = set(DEEP) | set(SHALLOW) | set(ABLATION)
    out: dict[tuple[str, int], Path] = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        name, at, bits = key.partition("@")
        if not (sep and at and path) or not bits.isdigit():
            raise FghashError(
                f"--use {spec!r} must look like METHOD@BITS=PATH, e.g. a2net@12=runs/a2net-12."
            )
        if name not in known:
            raise FghashError(
                f"--use {spec!r}: unknown method {name!r}; use one of {', '.join(sorted(known))}."
            )
        p = Path(path)
        if not p.exists():
            raise FghashError(f"--use {spec!r}: {p} does not exist.")
        if name in SHALLOW and p.is_dir():
            raise FghashError(f"--use {spec!r}: a shallow method needs a codes file, not a folder.")
        # Table 2 rows that are Table 1 runs share their --use
        run = ABLATION[name][1] if name in ABLATION else name
        out[(run, int(bits))] = p
    return out


def make_plan(
    out: Path,
    dataset: str,
    data_root: str,
    methods: Sequence[str],
    bits: Sequence[int],
    tables: Sequence[str],
    ablation: Sequence[str],
    ablation_bits: Sequence[int],
    train_args: Sequence[str],
    use: dict[tuple[str, int], Path],
    shallow_features: Path | None,
    seed: int,
    device: str,
) -> Plan:
    """Work out every step and table entry; raises :class:`FghashError` for bad names."""
    _check_names(methods, ablation)
    t1 = "1" in tables
    t2 = "2" in tables
    deep1 = [m for m in methods if m in DEEP] if t1 else []
    shallow1 = [m for m in methods if m in SHALLOW] if t1 else []
    float_source = None
    if t1 and FLOAT in methods:
        if not deep1:
            raise FghashError(
                "--methods float needs a deep method (e.g. a2net) whose relaxed codes it searches."
            )
        float_source = "a2net" if "a2net" in deep1 else deep1[0]
    p = _Planner(out, dataset, data_root, train_args, use, seed, ["--device", device])
    entries: list[dict[str, Any]] = []
    if t1:
        for b in bits:
            for m in deep1:
                entries.append(_entry("1", m, DEEP[m][0], b, p.codes_for(m, b), "hamming"))
    feats = None
    if shallow1:
        feats = p.features_for(shallow_features, bits[0])
        for b in bits:
            for m in shallow1:
                entries.append(_entry("1", m, SHALLOW[m], b, p.baseline(m, b, feats), "hamming"))
    if float_source is not None:
        for b in bits:
            path = p.codes_for(float_source, b)
            entries.append(_entry("1", FLOAT, FLOAT_LABEL, b, path, "float"))
    if t2:
        for b in ablation_bits:
            for r in ablation:
                label, run = ABLATION[r]
                entries.append(_entry("2", r, label, b, p.codes_for(run, b), "hamming"))
    # Order columns/rows as asked: Table 1 by --methods, Table 2 by --ablation.
    order1 = {m: i for i, m in enumerate(methods)}
    order2 = {r: i for i, r in enumerate(ablation)}
    entries.sort(
        key=lambda e: (e["table"], (order1 if e["table"] == "1" else order2)[e["key"]], e["bits"])
    )
    return Plan(p.steps, entries, feats, float_source)


def _check_names(methods: Sequence[str], ablation: Sequence[str]) -> None:
    for m in methods:
        if m not in DEEP and m not in SHALLOW and m != FLOAT:
            raise FghashError(
                f"unknown method {m!r} in --methods; choose from "
                f"{', '.join([*DEEP, *SHALLOW, FLOAT])}."
            )
    for r in ablation:
        if r not in ABLATION:
            raise FghashError(
                f"unknown ablation row {r!r} in --ablation; choose from {', '.join(ABLATION)}."
            )


def _entry(table: str, key: str, label: str, bits: int, path: Path, score: str) -> dict[str, Any]:
    """One table cell: which codes file it is scored from, and how (Hamming or float)."""
    return dict(table=table, key=key, label=label, bits=bits, path=path, score=score)


class _Planner:
    """The steps so far, each run trained and each codes file encoded once."""

    def __init__(
        self,
        out: Path,
        dataset: str,
        data_root: str,
        train_args: Sequence[str],
        use: dict[tuple[str, int], Path],
        seed: int,
        dev: list[str],
    ) -> None:
        self.out, self.dataset, self.data_root = out, dataset, data_root
        self.train_args, self.use, self.seed, self.dev = list(train_args), use, seed, dev
        self.steps: list[Step] = []
        self.codes_of: dict[tuple[str, int], Path] = {}

    def run_for(self, run: str, b: int) -> Path | None:
        """Train step for (run, b) unless supplied; returns the run folder (None: a file)."""
        given = self.use.get((run, b))
        if given is not None:
            return given if given.is_dir() else None
        opts, folder = (DEEP[run][1], DEEP[run][2]) if run in DEEP else EXTRA_RUNS[run]
        run_dir = bits_folder(self.out / "runs" / folder, b)
        name = f"train-{folder}-{b}"
        if not any(s.name == name for s in self.steps):
            argv = ["train", "--dataset", self.dataset, "--data-root", self.data_root]
            argv += ["--out", str(run_dir), "--bits", str(b), *opts, "--seed", str(self.seed)]
            argv += self.train_args
            done = run_dir / DATABASE_CODES
            self.steps.append(Step(name, argv, [done], run_dir, self.dev))
        return run_dir

    def codes_for(self, run: str, b: int) -> Path:
        """The codes file of (run, b): given with ``--use``, else an encode step's output."""
        if (run, b) in self.codes_of:
            return self.codes_of[(run, b)]
        run_dir = self.run_for(run, b)
        if run_dir is None:
            path = self.use[(run, b)]
        else:
            folder = DEEP[run][2] if run in DEEP else EXTRA_RUNS[run][1]
            path = self.out / "codes" / f"{folder}-{b}.h5"
            argv = ["encode", str(run_dir), "--out", str(path), "--features", "relaxed"]
            self.steps.append(Step(f"encode-{folder}-{b}", argv, [path], None, self.dev))
        self.codes_of[(run, b)] = path
        return path

    def features_for(self, given: Path | None, first_bits: int) -> Path:
        """The backbone features of the shallow methods: a given file, or an encode step
        over the given run folder, else over the ADSH run of the first code length."""
        if given is not None and given.is_file():
            return given
        src = given or self.run_for("adsh", first_bits)
        if src is None:
            raise FghashError(
                f"the shallow methods need backbone features: --use gave a codes file for "
                f"adsh@{first_bits}, so pass --shallow-features (a run folder or features file)."
            )
        feats = self.out / "features" / "backbone.h5"
        argv = ["encode", str(src), "--out", str(feats), "--features", "backbone"]
        self.steps.append(Step("encode-backbone-features", argv, [feats], None, self.dev))
        return feats

    def baseline(self, method: str, b: int, feats: Path) -> Path:
        """The codes file of a shallow method: given with ``--use``, else a baseline step's."""
        given = self.use.get((method, b))
        if given is not None:
            return given
        path = self.out / "codes" / f"{method}-{b}.h5"
        argv = ["baseline", method, "--features", str(feats), "--bits", str(b)]
        argv += ["--out", str(path), "--seed", str(self.seed)]
        self.steps.append(Step(f"baseline-{method}-{b}", argv, [path]))
        return path
