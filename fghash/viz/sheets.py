"""Labelled contact sheets of images: per-bit grids and retrieval examples.

A sheet is rows of tiles (``None`` leaves a gap). Each tile is an image letterboxed into
a square, optionally framed (green: relevant, red: not relevant, blue: the query), with
a caption under it; each row may carry a label on the left. The pixels are laid out
with PIL (:func:`compose`), then matplotlib adds the title, captions, row labels and a
legend for the frame colours (:func:`draw_sheet`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fghash.viz.plots import pyplot, save_figure

__all__ = ["FRAMES", "Tile", "load_image", "placeholder", "compose", "draw_sheet"]

#: frame name -> (RGB colour, legend text)
FRAMES: dict[str, tuple[tuple[int, int, int], str]] = {
    "query": ((31, 119, 180), "query"),
    "relevant": ((44, 160, 44), "relevant (same class)"),
    "irrelevant": ((214, 39, 40), "not relevant"),
}
_MISSING = (200, 200, 200)
_BACKGROUND = (255, 255, 255)


@dataclass
class Tile:
    """One image of a sheet: pixels ``uint8 [H, W, 3]``, caption, optional frame name."""

    image: np.ndarray
    caption: str = ""
    frame: str | None = None  # a key of FRAMES


def load_image(
    root: str | os.PathLike[str] | None, path: str | None, size: int
) -> np.ndarray | None:
    """The image ``root/path`` letterboxed into ``size × size`` RGB, or None when unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if root is None or path is None:
        return None
    try:
        with Image.open(Path(root) / path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError):
        return None
    return np.asarray(ImageOps.pad(rgb, (size, size), color=_BACKGROUND))


def placeholder(size: int) -> np.ndarray:
    """A grey square for an image that could not be read."""
    return np.full((size, size, 3), _MISSING, dtype=np.uint8)


def _fit(img: np.ndarray, tile: int) -> np.ndarray:
    if img.shape[:2] == (tile, tile):
        return img
    from PIL import Image, ImageOps

    return np.asarray(ImageOps.pad(Image.fromarray(img), (tile, tile), color=_BACKGROUND))


def compose(
    rows: Sequence[Sequence[Tile | None]],
    tile: int,
    *,
    gap: int = 6,
    caption: int = 28,
    frame: int = 4,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Lay the tiles out on a white canvas; returns it and each tile's ``(row, col, x, y)``.

    Images of another size are letterboxed to ``tile``. Every cell is ``tile + 2 frame`` wide, with ``caption`` pixels below it for text and
    ``gap`` pixels between cells; ``(x, y)`` is the top-left pixel of the image itself.
    """
    ncol = max((len(r) for r in rows), default=0)
    cell_w = tile + 2 * frame + gap
    cell_h = tile + 2 * frame + caption + gap
    canvas = np.full((max(len(rows), 1) * cell_h, max(ncol, 1) * cell_w, 3), 255, np.uint8)
    boxes = []
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            if t is None:
                continue
            x0, y0 = j * cell_w, i * cell_h
            if t.frame is not None:
                canvas[y0 : y0 + tile + 2 * frame, x0 : x0 + tile + 2 * frame] = FRAMES[t.frame][0]
            img = _fit(np.asarray(t.image, dtype=np.uint8), tile)
            x, y = x0 + frame, y0 + frame
            canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
            boxes.append((i, j, x, y))
    return canvas, boxes


def draw_sheet(
    rows: Sequence[Sequence[Tile | None]],
    path: str | os.PathLike[str],
    *,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[tuple[int, str]] = (),
    tile: int = 96,
    note: str | None = None,
) -> tuple[Path, int]:
    """Write the sheet as a PNG (title, captions, row and column labels, frame legend);
    returns the path and the number of tiles drawn. ``col_labels``: ``(column, text)``
    written above that column of the first row, left-aligned."""
    from matplotlib.patches import Patch

    plt = pyplot()
    canvas, boxes = compose(rows, tile)
    h, w = canvas.shape[:2]
    label_w = 150 if row_labels else 0
    dpi = 100
    fig = plt.figure(figsize=((w + label_w) / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((label_w / (w + label_w), 0, w / (w + label_w), 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for i, j, x, y in boxes:
        t = rows[i][j]
        assert t is not None
        if t.caption:
            ax.text(x + tile / 2, y + tile + 7, t.caption, ha="center", va="top", fontsize=7.5)
    if row_labels:
        cell_h = (h // max(len(rows), 1)) if rows else h
        for i, label in enumerate(row_labels):
            ax.text(-10, i * cell_h + tile / 2, label, ha="right", va="center", fontsize=9)
    cell_w = w // max(max((len(r) for r in rows), default=1), 1)
    for j, text in col_labels:
        ax.text(j * cell_w + 4, -4, text, ha="left", va="bottom", fontsize=9, weight="bold")
    fig.suptitle(
        title, fontsize=11, x=0.02, ha="left", y=1.0 + (24 if col_labels else 4) / h, va="bottom"
    )
    present = {t.frame for r in rows for t in r if t is not None and t.frame is not None}
    used = [f for f in FRAMES if f in present]
    handles = [Patch(color=np.array(FRAMES[f][0]) / 255, label=FRAMES[f][1]) for f in used]
    if handles:
        fig.legend(
            handles=handles,
            loc="upper right",
            bbox_to_anchor=(1.0, 0.0),
            ncol=len(handles),
            fontsize=8,
            frameon=False,
        )
    if note:
        fig.text(0.02, -0.04, note, fontsize=8, ha="left", va="top", color="#444444")
    return save_figure(fig, Path(path), dpi=dpi), len(boxes)
