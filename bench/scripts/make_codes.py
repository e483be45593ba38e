"""Write a clustered synthetic codes file of any size, to benchmark indexes at scale.

The embedded image data set is small; index speed only shows at hundreds of thousands
of items. This writes a schema-v1 codes file whose structure resembles trained codes,
which cluster by class: ``--classes`` classes, each with a random prototype code and a
random prototype vector in ``--dim`` dimensions. An item's code is its class's prototype
code with each bit flipped with probability ``--flip``; its ``features`` (searched by the
exact float baseline) are its class's prototype vector plus Gaussian noise of ``--noise``
times the prototype's norm. Codes and features are drawn independently, so the file
measures speed, memory and the plumbing, not what binarising a given network costs (the
learned codes files of ``fghash encode`` measure that).

    python -m bench.scripts.make_codes --out big-48.h5 --n 100000 --nq 1000 --bits 48 --dim 2048
    python -m bench.scripts.make_codes --out huge-64.h5 --n 10000000 --bits 64 --dim 0
    fghash bench big-48.h5 --out report-big --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fghash.codes import CodesWriter, pack_bits
from fghash.errors import FghashError

__all__ = ["make_clustered_codes", "main"]

# Rows generated and written at a time: bounded memory at any --n.
_BLOCK = 1 << 16


def _write_split(
    w: CodesWriter,
    name: str,
    rng: np.random.Generator,
    protos: np.ndarray,
    proto_bits: np.ndarray,
    n: int,
    noise: float,
    flip: float,
    first_id: int,
    block: int = _BLOCK,
) -> None:
    classes, dim = protos.shape
    bits = proto_bits.shape[1]
    w.add_split(name, n, labels="single", features=(dim, "synthetic") if dim else None)
    for s in range(0, n, block):
        e = min(n, s + block)
        labels = rng.integers(0, classes, e - s)
        bits01 = proto_bits[labels] ^ (rng.random((e - s, bits), dtype=np.float32) < flip)
        feats = None
        if dim:
            eps = rng.standard_normal((e - s, dim), dtype=np.float32) * np.float32(noise)
            feats = protos[labels] + eps
        ids = np.arange(first_id + s, first_id + e, dtype=np.int64)
        w.write(name, s, codes=pack_bits(bits01), ids=ids, labels=labels, features=feats)


def make_clustered_codes(
    out: str | Path,
    *,
    n: int = 100_000,
    nq: int = 1000,
    bits: int = 48,
    dim: int = 2048,
    classes: int = 200,
    noise: float = 1.5,
    flip: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the file described in the module docstring and return its path.

    Generated and written in blocks of rows, so memory stays bounded whatever ``n``
    (``dim=0`` writes no features, for files of tens of millions of codes).
    """
    for name, value in (("n", n), ("nq", nq), ("classes", classes)):
        if value < 1:
            raise FghashError(f"--{name} must be a positive integer, got {value}.")
    if dim < 0:
        raise FghashError(f"--dim must be 0 (no features) or a positive integer, got {dim}.")
    if not 0.0 <= flip <= 0.5:
        raise FghashError(f"--flip must lie between 0 and 0.5, got {flip}.")
    if Path(out).exists() and not overwrite:
        raise FghashError(f"{out} already exists; pass --force to replace it.")
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((classes, dim), dtype=np.float32) / np.float32(
        np.sqrt(max(dim, 1))
    )
    proto_bits = rng.random((classes, bits)) < 0.5
    sigma = noise / np.sqrt(max(dim, 1))
    config = dict(
        n=n, nq=nq, bits=bits, dim=dim, classes=classes, noise=noise, flip=flip, seed=seed
    )
    with CodesWriter(
        out, bits, method="synthetic-clustered", config=config, overwrite=overwrite
    ) as w:
        _write_split(w, "database", rng, protos, proto_bits, n, sigma, flip, 0)
        _write_split(w, "query", rng, protos, proto_bits, nq, sigma, flip, n)
        return w.commit()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.make_codes", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", required=True, help="codes file to write")
    p.add_argument("--n", type=int, default=100_000, help="database items")
    p.add_argument("--nq", type=int, default=1000, help="query items")
    p.add_argument("--bits", type=int, default=48)
    p.add_argument("--dim", type=int, default=2048, help="float feature dimension (0: none)")
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--noise", type=float, default=1.5, help="noise norm / prototype norm")
    p.add_argument("--flip", type=float, default=0.2, help="bit flip probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    a = p.parse_args(argv)
    try:
        path = make_clustered_codes(
            a.out,
            n=a.n,
            nq=a.nq,
            bits=a.bits,
            dim=a.dim,
            classes=a.classes,
            noise=a.noise,
            flip=a.flip,
            seed=a.seed,
            overwrite=a.force,
        )
    except FghashError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}: {a.n} database + {a.nq} query items, {a.bits} bits, {a.dim}-d features")


if __name__ == "__main__":
    main()
