"""Data set loaders on tiny fake copies of each official layout, transforms, corrupt
images, and the synthetic generator. Expected values are the ones written here."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fghash.data import (
    ImageListDataset,
    build_transform,
    collate_skip_none,
    generate_synthetic,
    list_datasets,
    load_dataset,
)
from fghash.data.synthetic import HEAD_RGB, PARTS, BirdSpec, class_specs, render_bird
from fghash.errors import FghashError

# ----------------------------------------------------------------------------- helpers


def colour_of(value: int) -> tuple[int, int, int]:
    return (value * 40 % 256, 255 - value * 40 % 256, 100)


def write_image(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> None:
    """A small solid image whose colour encodes ``value`` (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour_of(value)).save(path, quality=95)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def check_pixels(ds: ImageListDataset, expected_values: list[int]) -> None:
    """Each decoded image has the colour its fake file was written with."""
    for i, value in enumerate(expected_values):
        image, label, index = ds[i]
        assert image.mode == "RGB" and index == i and label == ds.labels[i]
        assert np.abs(np.asarray(image, int)[0, 0] - colour_of(value)).max() <= 6


def cell(strings: list[str]) -> np.ndarray:
    """A MATLAB N×1 cell array of strings, as in the official .mat files."""
    arr = np.empty((len(strings), 1), dtype=object)
    for k, s in enumerate(strings):
        arr[k, 0] = s
    return arr


# ----------------------------------------------------------------------------- CUB-200-2011


def make_cub(tmp: Path, with_attributes: bool = True) -> Path:
    root = tmp / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images = [
        (1, classes[0] + "/a_1.jpg", 1, 1),
        (2, classes[0] + "/a_2.jpg", 1, 0),
        (3, classes[1] + "/b_1.jpg", 2, 1),
        (4, classes[1] + "/b_2.jpg", 2, 0),
        (5, classes[2] + "/c_1.jpg", 3, 1),
        (6, classes[2] + "/c_2.jpg", 3, 1),
    ]
    write_lines(root / "classes.txt", [f"{k + 1} {c}" for k, c in enumerate(classes)])
    write_lines(root / "images.txt", [f"{i} {p}" for i, p, _, _ in images])
    write_lines(root / "image_class_labels.txt", [f"{i} {c}" for i, _, c, _ in images])
    write_lines(root / "train_test_split.txt", [f"{i} {t}" for i, _, _, t in images])
    for i, p, _, _ in images:
        write_image(root / "images" / p, i)
    if with_attributes:
        # The tarball puts attributes.txt beside CUB_200_2011/.
        write_lines(
            tmp / "attributes.txt",
            ["1 has_bill_shape::dagger", "2 has_wing_color::blue", "3 has_size::small"],
        )
        lines = []
        for i in range(1, 7):
            for a in range(1, 4):
                present = int((i + a) % 3 == 0)
                extra = (
                    " 0" if (i, a) == (2, 2) else ""
                )  # the official file has a few 6-column lines
                lines.append(f"{i} {a} {present} 3 12.5{extra}")
        write_lines(root / "attributes" / "image_attribute_labels.txt", lines)
    return root


def test_cub200_splits_labels_and_attributes(tmp_path):
    root = make_cub(tmp_path)
    train = load_dataset("cub200", root, split="train")
    test = load_dataset("cub200", root, split="test")
    assert len(train) == 4 and len(test) == 2
    assert train.paths == [
        "images/001.Black_footed_Albatross/a_1.jpg",
        "images/002.Laysan_Albatross/b_1.jpg",
        "images/003.Sooty_Albatross/c_1.jpg",
        "images/003.Sooty_Albatross/c_2.jpg",
    ]
    assert train.labels.tolist() == [0, 1, 2, 2] and test.labels.tolist() == [0, 1]
    assert train.labels.dtype == np.int64
    assert train.num_classes == test.num_classes == 3
    assert train.class_names[1] == "002.Laysan_Albatross"
    assert not set(train.paths) & set(test.paths)
    assert train.attribute_names == [
        "has_bill_shape::dagger",
        "has_wing_color::blue",
        "has_size::small",
    ]
    expected = np.array(
        [[int((i + a) % 3 == 0) for a in (1, 2, 3)] for i in (1, 3, 5, 6)], np.uint8
    )
    assert train.attributes.dtype == np.uint8
    np.testing.assert_array_equal(train.attributes, expected)
    np.testing.assert_array_equal(test.attributes, [[1, 0, 0], [0, 1, 0]])  # images 2 and 4
    check_pixels(train, [1, 3, 5, 6])
    check_pixels(test, [2, 4])


def test_cub200_without_attribute_files(tmp_path):
    ds = load_dataset("cub200", make_cub(tmp_path, with_attributes=False), split="train")
    assert ds.attributes is None and ds.attribute_names is None and len(ds) == 4


# ----------------------------------------------------------------------------- NABirds


def make_nabirds(root: Path, inner_label: bool = False) -> Path:
    write_lines(
        root / "classes.txt",
        [
            "0 Birds",
            "1 Ducks",
            "2 Perching Birds",
            "10 Mallard",
            "11 Wood Duck",
            "20 American Robin",
            "21 Blue Jay",
        ],
    )
    write_lines(root / "hierarchy.txt", ["1 0", "2 0", "10 1", "11 1", "20 2", "21 2"])
    # (uuid, folder, class id, is_train); class 21 is a leaf no image uses.
    images = [
        ("0a1b-01", "0010", 20, 1),
        ("0a1b-02", "0010", 10, 1),
        ("0a1b-03", "0011", 11, 0),
        ("0a1b-04", "0020", 20, 0),
        ("0a1b-05", "0011", 11, 1),
    ]
    if inner_label:
        images.append(("0a1b-06", "0001", 1, 1))
    write_lines(root / "images.txt", [f"{u} {f}/{u}.jpg" for u, f, _, _ in images])
    write_lines(root / "image_class_labels.txt", [f"{u} {c}" for u, _, c, _ in images])
    write_lines(root / "train_test_split.txt", [f"{u} {t}" for u, _, _, t in images])
    for k, (u, f, _, _) in enumerate(images):
        write_image(root / "images" / f / f"{u}.jpg", k)
    return root


def test_nabirds_keeps_used_leaves_renumbered(tmp_path):
    root = make_nabirds(tmp_path / "nabirds")
    train = load_dataset("nabirds", root, split="train")
    test = load_dataset("nabirds", root, split="test")
    # Used leaves 10, 11, 20 -> 0, 1, 2 (inner nodes 0, 1, 2 and unused leaf 21 dropped).
    assert train.class_names == test.class_names == ["Mallard", "Wood Duck", "American Robin"]
    assert train.labels.tolist() == [2, 0, 1] and test.labels.tolist() == [1, 2]
    assert train.paths == [
        "images/0010/0a1b-01.jpg",
        "images/0010/0a1b-02.jpg",
        "images/0011/0a1b-05.jpg",
    ]
    check_pixels(train, [0, 1, 4])


def test_nabirds_rejects_inner_node_labels(tmp_path):
    root = make_nabirds(tmp_path / "nabirds", inner_label=True)
    with pytest.raises(FghashError, match="inner node"):
        load_dataset("nabirds", root)


# ----------------------------------------------------------------------------- FGVC-Aircraft


def test_aircraft_trainval_and_test(tmp_path):
    root = tmp_path / "fgvc-aircraft-2013b"
    write_lines(root / "data" / "variants.txt", ["707-320", "Cessna 172", "F/A-18"])
    write_lines(
        root / "data" / "images_variant_trainval.txt",
        ["1025794 707-320", "0034309 F/A-18", "0034958 Cessna 172"],
    )
    write_lines(root / "data" / "images_variant_test.txt", ["1514522 Cessna 172"])
    for k, image_id in enumerate(["1025794", "0034309", "0034958", "1514522"]):
        write_image(root / "data" / "images" / f"{image_id}.jpg", k)
    train = load_dataset("aircraft", root, split="train")
    test = load_dataset("aircraft", root, split="test")
    assert train.labels.tolist() == [0, 2, 1] and test.labels.tolist() == [1]
    assert train.paths[1] == "data/images/0034309.jpg" and train.num_classes == 3
    check_pixels(train, [0, 1, 2])
    write_lines(root / "data" / "images_variant_test.txt", ["1514522 Boeing 999"])
    with pytest.raises(FghashError, match="Boeing 999"):
        load_dataset("aircraft", root, split="test")


# ----------------------------------------------------------------------------- Food-101


def test_food101(tmp_path):
    root = tmp_path / "food-101"
    write_lines(root / "meta" / "classes.txt", ["apple_pie", "baby_back_ribs", "baklava"])
    write_lines(
        root / "meta" / "train.txt", ["apple_pie/1005649", "baklava/1006121", "baklava/1014880"]
    )
    write_lines(root / "meta" / "test.txt", ["baby_back_ribs/1001165"])
    for k, entry in enumerate(
        ["apple_pie/1005649", "baklava/1006121", "baklava/1014880", "baby_back_ribs/1001165"]
    ):
        write_image(root / "images" / f"{entry}.jpg", k)
    train = load_dataset("food101", root, split="train")
    test = load_dataset("food101", root, split="test")
    assert train.labels.tolist() == [0, 2, 2] and test.labels.tolist() == [1]
    assert train.paths[0] == "images/apple_pie/1005649.jpg"
    assert train.class_counts().tolist() == [1, 0, 2]
    check_pixels(train, [0, 1, 2])


# ----------------------------------------------------------------------------- VegFru


def test_vegfru_lists(tmp_path):
    root = tmp_path / "vegfru"
    train = [
        "veg200_images/Chinese_artichoke/v_14_01_0001.jpg 0",
        "veg200_images/Chinese_kale/v_06_03_0007.jpg 1",
    ]
    train.append("fru92_images/banana/f_01_01_1031.jpg 2")
    test = [
        "fru92_images/carambola/f_01_05_0599.jpg 3",
        "veg200_images/Chinese_kale/v_06_03_0010.jpg 1",
    ]
    write_lines(root / "vegfru_list" / "vegfru_train.txt", train)
    write_lines(
        root / "vegfru_list" / "vegfru_val.txt", ["veg200_images/Chinese_kale/v_06_03_0099.jpg 1"]
    )
    write_lines(root / "vegfru_list" / "vegfru_test.txt", test)
    for k, line in enumerate(train + test):
        write_image(root / line.split()[0], k)
    tr = load_dataset("vegfru", root, split="train")
    te = load_dataset("vegfru", root, split="test")
    assert len(tr) == 3 and len(te) == 2  # the val list is not part of either split
    assert tr.labels.tolist() == [0, 1, 2] and te.labels.tolist() == [3, 1]
    assert tr.num_classes == te.num_classes == 4
    assert tr.class_names == ["Chinese_artichoke", "Chinese_kale", "banana", "carambola"]
    assert te.paths[0] == "fru92_images/carambola/f_01_05_0599.jpg"
    check_pixels(te, [3, 4])


# ----------------------------------------------------------------------------- Stanford Dogs


def test_stanford_dogs_mat_lists(tmp_path):
    root = tmp_path / "dogs"
    train_files = [
        "n02085620-Chihuahua/n02085620_5927.jpg",
        "n02085782-Japanese_spaniel/n02085782_2.jpg",
    ]
    train_files.append("n02085620-Chihuahua/n02085620_10074.jpg")
    root.mkdir()
    train_mat = {"file_list": cell(train_files), "labels": np.array([[1], [2], [1]], dtype=float)}
    scipy.io.savemat(root / "train_list.mat", train_mat)
    # One test image: loadmat squeezes it to a scalar, which the loader must handle.
    test_files = ["n02086240-Shih-Tzu/n02086240_1.jpg"]
    scipy.io.savemat(
        root / "test_list.mat",
        {"file_list": cell(test_files), "labels": np.array([[3]], dtype=float)},
    )
    for k, f in enumerate(train_files + test_files):
        write_image(root / "Images" / f, k)
    train = load_dataset("dogs", root, split="train")
    test = load_dataset("dogs", root, split="test")
    assert train.labels.tolist() == [0, 1, 0] and test.labels.tolist() == [2]
    assert train.class_names == test.class_names == ["Chihuahua", "Japanese_spaniel", "Shih-Tzu"]
    assert train.paths[0] == "Images/n02085620-Chihuahua/n02085620_5927.jpg"
    check_pixels(train, [0, 1, 2])
    check_pixels(test, [3])


# ----------------------------------------------------------------------------- Stanford Cars


def cars_annotations(rows: list[tuple[int, str]]) -> np.ndarray:
    dtype = [(f, object) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    arr = np.empty((1, len(rows)), dtype=dtype)
    for k, (cls, fname) in enumerate(rows):
        arr[0, k] = (np.uint8(5), np.uint8(6), np.uint16(300), np.uint16(200), np.uint8(cls), fname)
    return arr


def test_stanford_cars_devkit(tmp_path):
    root = tmp_path / "stanford_cars"
    (root / "devkit").mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    meta = np.empty((1, 3), dtype=object)
    meta[0, :] = names
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": meta})
    train_rows = [(3, "00001.jpg"), (1, "00002.jpg"), (3, "00003.jpg")]
    test_rows = [(2, "00001.jpg"), (1, "00002.jpg")]
    scipy.io.savemat(
        root / "devkit" / "cars_train_annos.mat", {"annotations": cars_annotations(train_rows)}
    )
    scipy.io.savemat(
        root / "cars_test_annos_withlabels.mat", {"annotations": cars_annotations(test_rows)}
    )
    for k, (_, f) in enumerate(train_rows):
        write_image(root / "cars_train" / f, k)
    for k, (_, f) in enumerate(test_rows):
        write_image(root / "cars_test" / f, 10 + k)
    train = load_dataset("cars", root, split="train")
    test = load_dataset("cars", root, split="test")
    assert train.labels.tolist() == [2, 0, 2] and test.labels.tolist() == [1, 0]
    assert train.class_names == names and train.num_classes == 3
    assert train.paths[0] == "cars_train/00001.jpg" and test.paths[0] == "cars_test/00001.jpg"
    check_pixels(train, [0, 1, 2])
    check_pixels(test, [10, 11])


# ----------------------------------------------------------------------------- list and imagefolder


def test_list_layout_with_and_without_classes(tmp_path):
    root = tmp_path / "mine"
    write_lines(root / "train.txt", ["pics/a 1.png 0", "pics/b.png 2"])
    write_lines(root / "test.txt", ["pics/c.png 4"])
    for k, name in enumerate(["a 1.png", "b.png", "c.png"]):
        write_image(root / "pics" / name, k)
    train = load_dataset("list", root, split="train")
    assert train.paths == ["pics/a 1.png", "pics/b.png"] and train.labels.tolist() == [0, 2]
    assert train.num_classes == 5  # the largest label of either list
    check_pixels(train, [0, 1])
    write_lines(root / "classes.txt", ["zero", "one", "two", "three", "four", "five"])
    test = load_dataset("list", root, split="test")
    assert test.class_names[4] == "four" and test.num_classes == 6
    write_lines(root / "train.txt", ["pics/b.png 7"])
    with pytest.raises(FghashError, match="classes.txt"):
        load_dataset("list", root, split="train")


def test_imagefolder_classes_are_the_sorted_union(tmp_path):
    root = tmp_path / "folder"
    write_image(root / "train" / "sparrow" / "2.png", 0)
    write_image(root / "train" / "sparrow" / "1.jpg", 1)
    write_image(root / "train" / "finch" / "x.jpeg", 2)
    (root / "train" / "finch" / "notes.txt").write_text("not an image")
    write_image(root / "test" / "wren" / "y.png", 3)
    train = load_dataset("imagefolder", root, split="train")
    test = load_dataset("imagefolder", root, split="test")
    assert train.class_names == test.class_names == ["finch", "sparrow", "wren"]
    assert train.paths == ["train/finch/x.jpeg", "train/sparrow/1.jpg", "train/sparrow/2.png"]
    assert train.labels.tolist() == [0, 1, 1] and test.labels.tolist() == [2]
    check_pixels(train, [2, 1, 0])


# ----------------------------------------------------------------------------- errors


def test_registry_names_and_bad_arguments(tmp_path):
    assert list_datasets() == [
        "cub200",
        "aircraft",
        "food101",
        "nabirds",
        "vegfru",
        "dogs",
        "cars",
        "list",
        "imagefolder",
        "synthetic",
    ]
    with pytest.raises(FghashError, match="Unknown data set 'cub'"):
        load_dataset("cub", tmp_path)
    with pytest.raises(FghashError, match="split 'val'"):
        load_dataset("list", tmp_path, split="val")


EXPECTED_FIRST_FILE = {
    "cub200": "images.txt",
    "aircraft": "variants.txt",
    "food101": "classes.txt",
    "nabirds": "images.txt",
    "vegfru": "vegfru_train.txt",
    "dogs": "train_list.mat",
    "cars": "cars_meta.mat",
    "list": "train.txt",
    "imagefolder": "train",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FIRST_FILE))
def test_missing_root_and_files_name_them(tmp_path, name):
    with pytest.raises(FghashError, match="not a folder"):
        load_dataset(name, tmp_path / "nowhere")
    with pytest.raises(FghashError, match=EXPECTED_FIRST_FILE[name]) as info:
        load_dataset(name, tmp_path)
    assert str(tmp_path) in str(info.value) and name in str(info.value)


def test_missing_list_file_of_one_split(tmp_path):
    root = make_nabirds(tmp_path / "nabirds")
    (root / "hierarchy.txt").unlink()
    with pytest.raises(FghashError, match="hierarchy.txt"):
        load_dataset("nabirds", root)


# ----------------------------------------------------------------------------- corrupt images


def make_list_with_corrupt(root: Path) -> Path:
    for k in range(4):
        write_image(root / f"{k}.jpg", k)
    (root / "junk.jpg").write_bytes(b"this is not an image")
    good = (root / "0.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    write_lines(
        root / "train.txt", ["0.jpg 0", "junk.jpg 1", "1.jpg 1", "cut.jpg 0", "2.jpg 0", "3.jpg 1"]
    )
    write_lines(root / "test.txt", ["0.jpg 0"])
    return root


def test_corrupt_images_skipped_with_one_warning_each(tmp_path, caplog):
    import torch

    root = make_list_with_corrupt(tmp_path / "c")
    ds = load_dataset("list", root, transform=build_transform(False, 8, 10), skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="fghash.data.base"):
        assert ds[1] is None and ds[1] is None and ds[3] is None
        loader = torch.utils.data.DataLoader(ds, batch_size=6, collate_fn=collate_skip_none)
        images, labels, indices = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1, 0, 1] and indices.tolist() == [0, 2, 4, 5]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "junk.jpg" in warned[0] and "cut.jpg" in warned[1]
    empty_images, empty_labels, _ = collate_skip_none([None, None])
    assert empty_images.numel() == 0 and empty_labels.numel() == 0


def test_corrupt_image_raises_naming_the_file(tmp_path):
    root = make_list_with_corrupt(tmp_path / "c")
    ds = load_dataset("list", root)
    with pytest.raises(FghashError, match="junk.jpg"):
        ds[1]
    with pytest.raises(FghashError, match="cut.jpg"):
        ds[3]
    (root / "2.jpg").unlink()
    with pytest.raises(FghashError, match="2.jpg.*does not exist"):
        load_dataset("list", root, skip_corrupt=True)[4]


# ----------------------------------------------------------------------------- transforms and subsets


def test_transforms_shape_and_normalisation():
    import torch

    image = Image.new("RGB", (50, 40), (128, 64, 255))
    train_tf, eval_tf = build_transform(True, 32), build_transform(False, 32)
    x = train_tf(image)
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
    y = eval_tf(image)
    assert y.shape == (3, 32, 32)
    expected = [
        (128 / 255 - 0.485) / 0.229,
        (64 / 255 - 0.456) / 0.224,
        (255 / 255 - 0.406) / 0.225,
    ]
    np.testing.assert_allclose(y.mean(dim=(1, 2)).numpy(), expected, atol=1e-4)
    assert torch.equal(eval_tf(image), y)  # evaluation is deterministic
    # A left-right gradient: the random flip must show up within a few draws.
    grad = Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8)[None, :, None], (50, 1, 3)))
    firsts = {round(float(train_tf(grad)[0, 16, 0]), 3) for _ in range(24)}
    assert len(firsts) > 1
    with pytest.raises(FghashError, match="smaller than the crop"):
        build_transform(True, 224, resize=200)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(64, 64), (50, 37), (37, 90)])
def test_resize_crop_equals_torchvision_v2_pipeline(train: bool, shape: tuple[int, int]):
    """build_transform's one-call pipeline gives exactly what the transforms.v2 Compose it
    replaces gives, draw for draw (decoded PNG birds and random non-square images)."""
    import torch
    from torchvision.transforms import v2

    from fghash.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    size, resize = 32, 37
    cut = v2.RandomCrop(size) if train else v2.CenterCrop(size)
    steps = [v2.ToImage(), v2.Resize(resize, antialias=True), cut]
    steps += [v2.RandomHorizontalFlip(p=0.5)] if train else []
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    reference, ours = v2.Compose(steps), build_transform(train, size, resize=resize)
    ours = pickle.loads(pickle.dumps(ours))  # DataLoader workers get a pickled copy
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for _ in range(6)]
    images += [render_bird(spec, size=shape[0]) for spec in class_specs(3)]
    for image in images:
        torch.manual_seed(7)
        want = [reference(image) for _ in range(4)]
        torch.manual_seed(7)
        got = [ours(image) for _ in range(4)]
        for a, b in zip(want, got, strict=True):
            assert type(b) is torch.Tensor and b.shape == (3, size, size)
            assert torch.equal(a.as_subclass(torch.Tensor), b)


def test_subset_keeps_classes_attributes_and_parent_positions(tmp_path):
    ds = load_dataset("cub200", make_cub(tmp_path), split="train")
    sub = ds.subset([3, 1])
    assert isinstance(sub, ImageListDataset) and len(sub) == 2
    assert sub.labels.tolist() == [2, 1] and sub.num_classes == 3
    assert sub.paths == [ds.paths[3], ds.paths[1]]
    np.testing.assert_array_equal(sub.attributes, ds.attributes[[3, 1]])
    assert [sub[0][2], sub[1][2]] == [3, 1]  # index = position in the loaded split
    assert sub.subset([1])[0][2] == 1
    # DataLoader workers receive the dataset by pickling, transform included.
    ds.transform = build_transform(False, 8)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[2][0].shape == (3, 8, 8) and clone.paths == ds.paths


# ----------------------------------------------------------------------------- synthetic


SMALL = dict(num_classes=4, train_per_class=3, test_per_class=2, image_size=32)


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_synthetic_is_deterministic_and_seed_dependent(tmp_path):
    a = digests(generate_synthetic(tmp_path / "a", seed=3, **SMALL))
    b = digests(generate_synthetic(tmp_path / "b", seed=3, **SMALL))
    c = digests(generate_synthetic(tmp_path / "c", seed=4, **SMALL))
    pngs = [k for k in a if k.endswith(".png")]
    assert len(pngs) == 4 * (3 + 2)
    assert a == b
    assert all(a[k] != c[k] for k in pngs)
    assert a["train.txt"] == c["train.txt"]  # same classes and file names, other pixels
    with Image.open(tmp_path / "a" / pngs[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_synthetic_rerun_reuses_and_other_parameters_refuse(tmp_path):
    root = generate_synthetic(tmp_path / "s", seed=1, **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_synthetic(root, seed=1, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamp
    with pytest.raises(FghashError, match="already holds a synthetic data set"):
        generate_synthetic(root, seed=2, **SMALL)
    before = digests(root)
    generate_synthetic(root, seed=2, overwrite=True, **SMALL)
    after = digests(root)
    assert before.keys() == after.keys() and before != after
    # An incomplete set (a deleted image) is regenerated, not reused.
    victim = (
        root / "images" / next(iter(sorted((root / "images").iterdir()))).name / "test_0001.png"
    )
    victim.unlink()
    generate_synthetic(root, seed=2, **SMALL)
    assert digests(root) == after
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(FghashError, match="not empty"):
        generate_synthetic(tmp_path / "other", **SMALL)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_synthetic_loader_attributes_define_the_classes(tmp_path):
    root = generate_synthetic(
        tmp_path / "s", seed=0, num_classes=6, train_per_class=2, test_per_class=1, image_size=32
    )
    train = load_dataset("synthetic", root, split="train")
    test = load_dataset("synthetic", root, split="test")
    assert len(train) == 12 and len(test) == 6 and train.num_classes == test.num_classes == 6
    assert train.class_counts().tolist() == [2] * 6
    assert not set(train.paths) & set(test.paths)
    assert train.attributes.shape == (12, 12) and len(train.attribute_names) == 12
    # Exactly one value per part is set, and it is the value the class name spells out.
    sizes = [len(v) for v in PARTS.values()]
    groups = np.split(train.attributes, np.cumsum(sizes)[:-1], axis=1)
    assert all((g.sum(axis=1) == 1).all() for g in groups)
    for row, label in zip(train.attributes, train.labels, strict=True):
        on = {train.attribute_names[j].split("::")[1] for j in np.flatnonzero(row)}
        words = train.class_names[label].split(".", 1)[1].replace("_", "-").split("-")
        assert on <= set(words)
    per_class = {tuple(train.attributes[train.labels == c][0]) for c in range(6)}
    assert len(per_class) == 6  # classes are distinct by their attributes
    assert all(
        (train.attributes[train.labels == c] == train.attributes[train.labels == c][0]).all()
        for c in range(6)
    )
    image, label, index = test[5]
    assert image.size == (32, 32) and label == test.labels[5] and index == 5


def test_synthetic_classes_differ_only_in_their_part(tmp_path):
    """Canonical renders of species one part apart differ only inside that part."""
    size = 128
    base = BirdSpec("red", "plain", "pointed", "short")
    ref = np.asarray(render_bird(base, size=size), int)
    # Head centre at (0.68, 0.42) of the canvas; the head colour is the class's.
    assert np.abs(ref[int(0.42 * size), int(0.68 * size)] - HEAD_RGB["red"]).max() <= 3
    # Each part's box (x0, x1, y0, y1), as fractions of the image, from the drawing's
    # geometry plus 0.03 for anti-aliasing: head circle centre (0.68, 0.42) radius
    # 0.085; wing ellipse centre (0.43, 0.535) radii (0.15, 0.075); tail left of
    # x = 0.28 within ±0.16 of y = 0.55; beak from x = 0.7565 to at most 0.9065.
    regions = {
        "head_colour": (0.565, 0.795, 0.305, 0.535),
        "wing_pattern": (0.25, 0.61, 0.43, 0.64),
        "tail_shape": (0.0, 0.31, 0.36, 0.74),
        "beak_length": (0.72, 0.94, 0.36, 0.48),
    }
    other = {
        "head_colour": "blue",
        "wing_pattern": "striped",
        "tail_shape": "forked",
        "beak_length": "long",
    }
    for part, value in other.items():
        changed = np.asarray(
            render_bird(BirdSpec(**{**base.__dict__, part: value}), size=size), int
        )
        ys, xs = np.nonzero(np.abs(changed - ref).max(axis=2) > 8)
        x0, x1, y0, y1 = regions[part]
        assert len(xs) > 20, part
        assert xs.min() >= x0 * size and xs.max() <= x1 * size, part
        assert ys.min() >= y0 * size and ys.max() <= y1 * size, part
        assert len(xs) < 0.05 * size * size, part
    assert len(class_specs(72)) == len(set(class_specs(72))) == 72
    with pytest.raises(FghashError, match="2 to 72"):
        class_specs(73)


def test_synthetic_loader_generates_the_default_set_on_first_use(tmp_path):
    root = tmp_path / "fresh"
    train = load_dataset("synthetic", root, split="train")
    test = load_dataset("synthetic", root, split="test")
    assert (len(train), len(test), train.num_classes) == (16 * 30, 16 * 10, 16)
    assert (root / "manifest.json").is_file()
    image, _, _ = train[0]
    assert image.size == (64, 64)
