"""Small readers for the annotation files of the official data set layouts.

Every failure is a :class:`FghashError` that names the file and the data set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fghash.errors import FghashError

__all__ = [
    "IMAGE_EXTENSIONS",
    "require_root",
    "require_file",
    "first_existing",
    "read_rows",
    "parse_int",
    "read_table",
    "read_labelled_list",
    "load_mat",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def require_root(root: str | Path, dataset: str) -> Path:
    """``root`` as a Path, or FghashError if it is not an existing folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FghashError(
            f"Data root {path} for data set {dataset!r} is not a folder; "
            "pass --data-root pointing at the extracted data set (see docs/datasets.md)."
        )
    return path


def require_file(root: Path, rel: str, dataset: str) -> Path:
    """``root / rel``, or FghashError naming the expected file."""
    path = root / rel
    if not path.is_file():
        raise FghashError(
            f"Data set {dataset!r} expects the file {path} but it does not exist; "
            "check --data-root and the layout in docs/datasets.md."
        )
    return path


def first_existing(root: Path, candidates: list[str], dataset: str, what: str) -> Path:
    """The first of ``root / c`` that is a file, or FghashError listing them all."""
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    tried = ", ".join(str(root / c) for c in candidates)
    raise FghashError(
        f"Data set {dataset!r} needs its {what} but none of these files exists: {tried}; "
        "check --data-root and the layout in docs/datasets.md."
    )


def read_rows(
    path: Path, dataset: str, *, min_fields: int = 1, maxsplit: int = -1
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each non-blank line, split on whitespace.

    ``maxsplit`` keeps the tail of the line whole (class names with spaces).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FghashError(
            f"File {path} of data set {dataset!r} is not UTF-8 text ({exc})."
        ) from exc
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(None, maxsplit)
        if len(fields) < min_fields:
            raise FghashError(
                f"Line {number} of {path} (data set {dataset!r}) has {len(fields)} field(s), "
                f"expected at least {min_fields}: {line!r}."
            )
        yield number, fields


def parse_int(value: str, path: Path, number: int, dataset: str) -> int:
    """``int(value)`` or FghashError pointing at the file and line."""
    try:
        return int(value)
    except ValueError:
        raise FghashError(
            f"Line {number} of {path} (data set {dataset!r}) holds {value!r} where an integer was expected."
        ) from None


def read_table(
    path: Path, dataset: str, *, int_keys: bool = False, int_values: bool = False
) -> dict:
    """``{key: value}`` from lines ``<key> <value...>`` (the value keeps its spaces)."""
    table: dict = {}
    for number, (key, value) in read_rows(path, dataset, min_fields=2, maxsplit=1):
        k = parse_int(key, path, number, dataset) if int_keys else key
        if k in table:
            raise FghashError(
                f"Line {number} of {path} (data set {dataset!r}) repeats the id {key!r}."
            )
        table[k] = parse_int(value, path, number, dataset) if int_values else value
    return table


def read_labelled_list(path: Path, dataset: str) -> tuple[list[str], list[int]]:
    """``(paths, labels)`` from lines ``<relative/path> <integer label>``.

    The label is the last field, so a path may itself contain spaces.
    """
    paths, labels = [], []
    for number, (line,) in read_rows(path, dataset, maxsplit=0):
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise FghashError(
                f"Line {number} of {path} (data set {dataset!r}) is not '<relative/path> <label>': {line!r}."
            )
        label = parse_int(fields[1], path, number, dataset)
        if label < 0:
            raise FghashError(
                f"Line {number} of {path} (data set {dataset!r}) has a negative label {label}."
            )
        paths.append(fields[0])
        labels.append(label)
    return paths, labels


def load_mat(path: Path, dataset: str) -> dict:
    """Read a MATLAB .mat file with scipy (imported here: only Dogs and Cars need it)."""
    try:
        import scipy.io
    except ImportError:
        raise FghashError(
            f"Data set {dataset!r} stores its lists in .mat files; install scipy to read {path}."
        ) from None
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True)
    except (ValueError, OSError, TypeError) as exc:
        raise FghashError(
            f"File {path} of data set {dataset!r} is not a readable .mat file ({exc})."
        ) from exc
