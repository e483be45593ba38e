"""The embedded synthetic fine-grained data set: procedural "birds", no download.

Every class is a bird species defined by four small parts, and only those parts:

===============  ==========================================
part             values
===============  ==========================================
head colour      red, blue, yellow, green
wing pattern     plain, striped, spotted
tail shape       pointed, forked, round
beak length      short, long
===============  ==========================================

That gives 4·3·3·2 = 72 possible species; ``num_classes`` of them are taken in a
fixed shuffled order (independent of ``seed``, so class ``k`` means the same
species for every seed). The 12 binary attributes are the one-hot codes of the
four parts (``has_head_colour::red`` ...), CUB-200-2011 style; an image's
attribute vector is its species' vector. Everything else varies *within* a
class: body colour, pose (rotation ±25°, horizontal flip), scale, position,
background colour and texture (gradient, stripes, blobs, clouds), lighting
(brightness and colour cast) and pixel noise. Classes thus differ only in small
parts while the nuisance factors are large — the fine-grained setting.

Images are drawn with ``PIL.ImageDraw`` at twice the output size and
downsampled (anti-aliasing). Generation is deterministic: each image has its own
``numpy`` generator seeded from ``(seed, split, class, k)``, so the same
parameters give byte-identical PNG files.

Files written under ``root`` (the ``list`` layout plus attributes)::

    images/<class name>/{train,test}_<k>.png
    train.txt, test.txt            <relative path> <label>
    classes.txt                    one class name per line
    attributes.txt                 one attribute name per line
    image_attribute_labels.txt     <relative path> <a_1> ... <a_12>   (0/1, every image)
    manifest.json                  generator, version and parameters (written last)

Calling :func:`generate_synthetic` again with the same parameters reuses the
files. A root that holds a synthetic set made with *other* parameters raises
:class:`FghashError` unless ``overwrite=True`` (then it is regenerated); a
non-empty root without a manifest is never touched. New files are written to a
temporary folder beside ``root`` and moved into place at the end, so an
interrupted run leaves no half data set under ``root``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError
from fghash.util.atomic import default_folder_mode, remove_stale, temp_prefix

__all__ = [
    "PARTS",
    "MAX_CLASSES",
    "BirdSpec",
    "Pose",
    "class_specs",
    "attribute_names",
    "render_bird",
    "generate_synthetic",
    "load_synthetic",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST = "manifest.json"

#: The parts that define a species, and their values (order fixes attribute columns).
PARTS: dict[str, tuple[str, ...]] = {
    "head_colour": ("red", "blue", "yellow", "green"),
    "wing_pattern": ("plain", "striped", "spotted"),
    "tail_shape": ("pointed", "forked", "round"),
    "beak_length": ("short", "long"),
}
MAX_CLASSES = math.prod(len(v) for v in PARTS.values())

HEAD_RGB = {
    "red": (205, 35, 35),
    "blue": (35, 75, 215),
    "yellow": (235, 215, 35),
    "green": (35, 165, 60),
}
BEAK_RGB = (240, 150, 30)
BEAK_LENGTH = {"short": 0.05, "long": 0.15}  # in units of the canvas width
_BODY_RGB = ((125, 90, 55), (128, 128, 132), (185, 160, 115), (80, 68, 60), (150, 120, 100))
_CLASS_ORDER_SEED = 20211206  # fixes which species the first num_classes are; not the data seed


@dataclass(frozen=True)
class BirdSpec:
    """A species: one value per part of :data:`PARTS`."""

    head_colour: str
    wing_pattern: str
    tail_shape: str
    beak_length: str

    @property
    def name(self) -> str:
        return (
            f"{self.head_colour}-head_{self.wing_pattern}-wing_"
            f"{self.tail_shape}-tail_{self.beak_length}-beak"
        )

    def attributes(self) -> np.ndarray:
        """One-hot code of each part, concatenated: uint8 ``[12]``."""
        return np.array(
            [
                int(getattr(self, part) == value)
                for part, values in PARTS.items()
                for value in values
            ],
            dtype=np.uint8,
        )


@dataclass(frozen=True)
class Pose:
    """The within-class variation of one image (all drawn at random by the generator)."""

    angle: float = 0.0  # degrees, counter-clockwise
    flip: bool = False
    scale: float = 1.0  # bird size relative to the canvas
    dx: float = 0.0  # centre offset, fraction of the canvas
    dy: float = 0.0
    body_rgb: tuple[int, int, int] = _BODY_RGB[0]
    background: str = "plain"  # plain, gradient, stripes, blobs, clouds
    bg_rgb: tuple[int, int, int] = (200, 215, 230)
    bg_rgb2: tuple[int, int, int] = (150, 170, 120)
    brightness: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.0  # standard deviation of Gaussian pixel noise (0..255 scale)
    texture_seed: int = 0


def attribute_names() -> list[str]:
    """Names of the 12 binary attributes, e.g. ``has_head_colour::red``."""
    return [f"has_{part}::{value}" for part, values in PARTS.items() for value in values]


def class_specs(num_classes: int) -> list[BirdSpec]:
    """The first ``num_classes`` species, in a fixed order that mixes all parts."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise FghashError(
            f"The synthetic data set has 2 to {MAX_CLASSES} classes, got num_classes={num_classes}."
        )
    combos = list(itertools.product(*PARTS.values()))
    order = np.random.default_rng(_CLASS_ORDER_SEED).permutation(len(combos))
    return [BirdSpec(*combos[i]) for i in order[:num_classes]]


# ----------------------------------------------------------------------------- drawing


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill) -> None:
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(c * factor)))) for c in rgb)


def _draw_bird_layer(spec: BirdSpec, body_rgb, size: int) -> Image.Image:
    """The bird on a transparent ``size``×``size`` layer, facing right, centred, upright."""
    s = float(size)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    body, dark = body_rgb + (255,), _shade(body_rgb, 0.7) + (255,)
    bx, by, brx, bry = 0.45 * s, 0.55 * s, 0.20 * s, 0.12 * s

    # Tail, behind the body, from its left end.
    tx = bx - 0.85 * brx
    if spec.tail_shape == "pointed":
        d.polygon(
            [(tx, by - 0.05 * s), (tx - 0.24 * s, by + 0.01 * s), (tx, by + 0.05 * s)], fill=dark
        )
    elif spec.tail_shape == "forked":
        d.polygon(
            [
                (tx, by - 0.05 * s),
                (tx - 0.22 * s, by - 0.11 * s),
                (tx - 0.11 * s, by),
                (tx - 0.22 * s, by + 0.11 * s),
                (tx, by + 0.05 * s),
            ],
            fill=dark,
        )
    else:  # round: a fan
        r = 0.16 * s
        d.pieslice([tx - r, by - r, tx + r, by + r], start=140, end=220, fill=dark)

    # Legs, then body.
    for lx in (bx - 0.04 * s, bx + 0.04 * s):
        d.line(
            [(lx, by + 0.8 * bry), (lx - 0.01 * s, by + 0.25 * s)],
            fill=(60, 45, 30, 255),
            width=max(1, size // 64),
        )
    _ellipse(d, bx, by, brx, bry, body)

    # Wing with its pattern, clipped to the wing ellipse through a mask.
    wx, wy, wrx, wry = bx - 0.02 * s, by - 0.015 * s, 0.15 * s, 0.075 * s
    mask = Image.new("L", (size, size), 0)
    _ellipse(ImageDraw.Draw(mask), wx, wy, wrx, wry, 255)
    wing = Image.new("RGBA", (size, size), dark)
    wd = ImageDraw.Draw(wing)
    if spec.wing_pattern == "striped":
        for k in range(-3, 4):
            x0 = wx + k * 0.045 * s
            wd.line(
                [(x0 - 0.03 * s, wy - wry), (x0 + 0.03 * s, wy + wry)],
                fill=(245, 245, 240, 255),
                width=max(2, size // 40),
            )
    elif spec.wing_pattern == "spotted":
        for fx, fy in (
            (-0.6, -0.3),
            (-0.2, 0.35),
            (0.2, -0.35),
            (0.55, 0.25),
            (-0.05, -0.05),
            (0.25, 0.5),
        ):
            _ellipse(wd, wx + fx * wrx, wy + fy * wry, 0.022 * s, 0.022 * s, (245, 245, 240, 255))
    layer.paste(wing, (0, 0), mask)

    # Head, eye, beak.
    hx, hy, hr = bx + 0.23 * s, by - 0.13 * s, 0.085 * s
    _ellipse(d, hx, hy, hr, hr, HEAD_RGB[spec.head_colour] + (255,))
    _ellipse(d, hx + 0.03 * s, hy - 0.02 * s, 0.018 * s, 0.018 * s, (250, 250, 250, 255))
    _ellipse(d, hx + 0.03 * s, hy - 0.02 * s, 0.010 * s, 0.010 * s, (10, 10, 10, 255))
    root_x = hx + 0.9 * hr
    d.polygon(
        [
            (root_x, hy - 0.03 * s),
            (root_x + BEAK_LENGTH[spec.beak_length] * s, hy + 0.01 * s),
            (root_x, hy + 0.035 * s),
        ],
        fill=BEAK_RGB + (255,),
    )
    return layer


def _background(pose: Pose, size: int) -> Image.Image:
    rng = np.random.default_rng(pose.texture_seed)
    c1, c2 = np.array(pose.bg_rgb, float), np.array(pose.bg_rgb2, float)
    if pose.background == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = np.clip(0.5 + (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta), 0, 1)[..., None]
        arr = c1 * (1 - t) + c2 * t
        return Image.fromarray(arr.astype(np.uint8), "RGB")
    if pose.background == "clouds":
        low = rng.random((6, 6))
        t = np.asarray(
            Image.fromarray((low * 255).astype(np.uint8)).resize(
                (size, size), Image.Resampling.BICUBIC
            ),
            float,
        )
        t = (t / 255.0)[..., None]
        arr = c1 * (1 - t) + c2 * t
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    img = Image.new("RGB", (size, size), tuple(int(c) for c in c1))
    d = ImageDraw.Draw(img)
    if pose.background == "stripes":
        slope = rng.uniform(-0.6, 0.6)
        for x in np.arange(-size, 2 * size, rng.uniform(0.05, 0.12) * size):
            d.line(
                [(x, 0), (x + slope * size, size)],
                fill=tuple(int(c) for c in c2),
                width=max(1, size // 48),
            )
    elif pose.background == "blobs":
        for _ in range(int(rng.integers(5, 12))):
            mix = rng.uniform(0, 1)
            col = tuple(int(c) for c in c1 * (1 - mix) + c2 * mix)
            _ellipse(d, *(rng.uniform(0, size, 2)), *(rng.uniform(0.05, 0.25, 2) * size), col)
    return img


def render_bird(
    spec: BirdSpec, pose: Pose = Pose(), size: int = 64, supersample: int = 2
) -> Image.Image:
    """Draw one RGB image of species ``spec`` in ``pose``, ``size``×``size`` pixels.

    With the default ``Pose()`` the bird is upright, facing right, centred, at full
    scale on a plain background with neutral lighting and no noise.
    """
    big = size * supersample
    canvas = _background(pose, big)
    bird = _draw_bird_layer(spec, pose.body_rgb, big)
    if pose.flip:
        bird = bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if pose.angle:
        bird = bird.rotate(pose.angle, resample=Image.Resampling.BICUBIC, center=(big / 2, big / 2))
    side = max(1, round(big * pose.scale))
    if side != big:
        bird = bird.resize((side, side), Image.Resampling.LANCZOS)
    ox = round((big - side) / 2 + pose.dx * big)
    oy = round((big - side) / 2 + pose.dy * big)
    canvas.paste(bird, (ox, oy), bird)
    img = canvas.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float64) * pose.brightness * np.asarray(pose.cast)
    if pose.noise > 0:
        arr = arr + np.random.default_rng(pose.texture_seed + 1).normal(0.0, pose.noise, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _random_pose(rng: np.random.Generator) -> Pose:
    scale = float(rng.uniform(0.62, 0.95))
    room = (1.0 - scale) / 2 * 0.8
    jitter = rng.integers(-18, 19, 3)
    body = tuple(
        int(np.clip(c + j, 0, 255))
        for c, j in zip(_BODY_RGB[rng.integers(len(_BODY_RGB))], jitter, strict=True)
    )
    bg = rng.integers(40, 236, 3)
    bg2 = np.clip(bg + rng.integers(-70, 71, 3), 0, 255)
    return Pose(
        angle=float(rng.uniform(-25, 25)),
        flip=bool(rng.random() < 0.5),
        scale=scale,
        dx=float(rng.uniform(-room, room)),
        dy=float(rng.uniform(-room, room)),
        body_rgb=body,
        background=str(rng.choice(["plain", "gradient", "stripes", "blobs", "clouds"])),
        bg_rgb=tuple(int(c) for c in bg),
        bg_rgb2=tuple(int(c) for c in bg2),
        brightness=float(rng.uniform(0.75, 1.25)),
        cast=tuple(float(c) for c in rng.uniform(0.92, 1.08, 3)),
        noise=float(rng.uniform(0.0, 6.0)),
        texture_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------- files


_OUR_FILES = (
    "images",
    "train.txt",
    "test.txt",
    "classes.txt",
    "attributes.txt",
    "image_attribute_labels.txt",
    MANIFEST,
)


def _params(
    num_classes: int, train_per_class: int, test_per_class: int, image_size: int, seed: int
) -> dict:
    return {
        "num_classes": int(num_classes),
        "train_per_class": int(train_per_class),
        "test_per_class": int(test_per_class),
        "image_size": int(image_size),
        "seed": int(seed),
    }


def _read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FghashError(
            f"Synthetic data set manifest {path} is unreadable ({exc}); delete the folder to regenerate."
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("generator") != "fghash.synthetic":
        raise FghashError(
            f"File {path} is not a fghash synthetic data set manifest; use an empty folder."
        )
    return manifest


def _complete(root: Path, manifest: dict) -> bool:
    """True when every file the manifest promises is there."""
    for name in (
        "train.txt",
        "test.txt",
        "classes.txt",
        "attributes.txt",
        "image_attribute_labels.txt",
    ):
        if not (root / name).is_file():
            return False
    lines = (root / "image_attribute_labels.txt").read_text(encoding="utf-8").split("\n")
    paths = [line.split(" ", 1)[0] for line in lines if line.strip()]
    return len(paths) == manifest.get("num_images") and all((root / p).is_file() for p in paths)


def _write_files(out: Path, params: dict) -> dict:
    specs = class_specs(params["num_classes"])
    names = [f"{k:02d}.{spec.name}" for k, spec in enumerate(specs)]
    attr_rows: list[str] = []
    counts = {}
    total = params["num_classes"] * (params["train_per_class"] + params["test_per_class"])
    with tqdm(total=total, desc="synthetic birds", unit="img", disable=None) as bar:
        for split_id, split in enumerate(("train", "test")):
            per_class = params[f"{split}_per_class"]
            lines = []
            for label, (spec, cname) in enumerate(zip(specs, names, strict=True)):
                (out / "images" / cname).mkdir(parents=True, exist_ok=True)
                attrs = " ".join(str(int(a)) for a in spec.attributes())
                for k in range(per_class):
                    rng = np.random.default_rng([params["seed"], split_id, label, k])
                    rel = f"images/{cname}/{split}_{k:04d}.png"
                    render_bird(spec, _random_pose(rng), params["image_size"]).save(
                        out / rel, format="PNG"
                    )
                    lines.append(f"{rel} {label}")
                    attr_rows.append(f"{rel} {attrs}")
                    bar.update(1)
            (out / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            counts[split] = len(lines)
    (out / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    (out / "attributes.txt").write_text("\n".join(attribute_names()) + "\n", encoding="utf-8")
    (out / "image_attribute_labels.txt").write_text("\n".join(attr_rows) + "\n", encoding="utf-8")
    manifest = {
        "generator": "fghash.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "num_images": len(attr_rows),
        "num_train": counts["train"],
        "num_test": counts["test"],
        "classes": [{"name": n, **asdict(s)} for n, s in zip(names, specs, strict=True)],
        "attribute_names": attribute_names(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def generate_synthetic(
    root: str | Path,
    *,
    num_classes: int = 16,
    train_per_class: int = 30,
    test_per_class: int = 10,
    image_size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic data set under ``root`` (or reuse it) and return ``root``.

    Reuses an existing complete set made with the same parameters. A set made with
    other parameters raises :class:`FghashError`, or is replaced when
    ``overwrite=True``. A non-empty folder that is not a synthetic set raises.
    """
    if train_per_class < 1 or test_per_class < 1:
        raise FghashError(
            "The synthetic data set needs train_per_class and test_per_class of at least 1."
        )
    if not 16 <= image_size <= 1024:
        raise FghashError(f"The synthetic image size must be 16 to 1024 pixels, got {image_size}.")
    class_specs(num_classes)  # validates num_classes
    params = _params(num_classes, train_per_class, test_per_class, image_size, seed)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FghashError(
            f"Synthetic data root {root} exists and is not a folder; pass a folder path."
        )
    manifest = _read_manifest(root) if root.is_dir() else None
    if manifest is not None:
        same = manifest.get("params") == params and manifest.get("version") == GENERATOR_VERSION
        if same and _complete(root, manifest):
            logger.info("reusing synthetic data set in %s", root)
            return root
        if not same and not overwrite:
            old = manifest.get("params")
            raise FghashError(
                f"Folder {root} already holds a synthetic data set made with {old} (version "
                f"{manifest.get('version')}), not {params}; pass another folder, or overwrite=True "
                "to regenerate it."
            )
        if same:
            logger.warning("synthetic data set in %s is incomplete; regenerating it", root)
    elif root.is_dir() and any(root.iterdir()):
        raise FghashError(
            f"Folder {root} is not empty and holds no synthetic data set manifest; pass an empty or new folder."
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(root.parent, root.name)  # what a killed generation left beside root
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(root.name), suffix=".tmp", dir=root.parent))
    try:
        os.chmod(tmp, default_folder_mode())  # mkdtemp's 0700 would become the data folder's mode
        _write_files(tmp, params)
        if root.is_dir() and manifest is not None:
            # Ours (the manifest says so): move the old set aside, swap, then delete it.
            old = Path(
                tempfile.mkdtemp(prefix=temp_prefix(root.name), suffix=".old", dir=root.parent)
            )
            for name in _OUR_FILES:
                if (root / name).exists():
                    os.replace(root / name, old / name)
            for name in _OUR_FILES:
                os.replace(tmp / name, root / name)
            shutil.rmtree(old, ignore_errors=True)
            tmp.rmdir()
        else:
            if root.is_dir():
                root.rmdir()  # empty, checked above
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote synthetic data set (%s) to %s", params, root)
    return root


def load_synthetic(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load the synthetic set from ``root``, generating the default one first if absent."""
    from fghash.data._files import read_rows
    from fghash.data.generic import load_list

    root = Path(root).expanduser()
    if not (root / MANIFEST).is_file():
        logger.info("no synthetic data set in %s; generating the default one", root)
        generate_synthetic(root)
    _read_manifest(root)
    ds = load_list(root, split, name="synthetic")
    names_path = root / "attributes.txt"
    labels_path = root / "image_attribute_labels.txt"
    names = [line for _, (line,) in read_rows(names_path, "synthetic", maxsplit=0)]
    by_path = {
        fields[0]: [int(v) for v in fields[1:]]
        for _, fields in read_rows(labels_path, "synthetic", min_fields=2)
    }
    missing = [p for p in ds.paths if p not in by_path]
    if missing:
        raise FghashError(
            f"{labels_path} has no attribute row for {missing[0]} (data set 'synthetic')."
        )
    attrs = np.asarray([by_path[p] for p in ds.paths], dtype=np.uint8).reshape(len(ds), len(names))
    return ImageListDataset(
        root,
        ds.paths,
        ds.labels,
        ds.class_names,
        name="synthetic",
        split=split,
        attributes=attrs,
        attribute_names=names,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
