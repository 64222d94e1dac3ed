"""Bounded memory: encode streams its images a batch at a time, and per-class distillers read one class's
latents at a time from the sharded cache (never every latent at once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdd.data import load_dataset
from latentdd.distill import make_distiller
from latentdd.errors import DataError
from latentdd.latents.cache import CacheConfig, CacheDamagedError, encode_split, load_latents, shard_name, write_manifest
from latentdd.latents.sharded import ShardedLatents, open_latents

VAE = {"name": "toy", "latent_shape": [2, 4, 4], "scaling_factor": 1.0}
SHARD = 100


def toy_encode(images):  # (b, 1, 8, 8) -> (b, 2, 4, 4)
    weight = torch.linspace(-1, 1, 8).reshape(2, 1, 2, 2)
    return torch.nn.functional.conv2d(images, weight, stride=2)


class CountingImages:
    """`digits` behind the LabelledImages protocol, remembering the largest request it served."""

    def __init__(self, data):
        self.data, self.labels, self.class_names = data, data.labels, data.class_names
        self.largest = 0

    def __len__(self):
        return len(self.data)

    def load(self, indices):
        self.largest = max(self.largest, len(torch.as_tensor(indices).reshape(-1)))
        return self.data.load(indices)

    def iter_batches(self, batch_size):
        raise AssertionError("encode must not iterate the whole split")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


@pytest.fixture
def cache(digits, tmp_path):
    encode_split(digits, toy_encode, tmp_path, vae=VAE, dataset={"name": "digits"},
                 config=CacheConfig(shard_size=SHARD, batch_size=32), progress=False)
    write_manifest(tmp_path, digits.class_names)
    return tmp_path


@pytest.fixture
def no_materialize(monkeypatch):
    def refuse(self):
        raise AssertionError("every latent was loaded at once")

    monkeypatch.setattr(ShardedLatents, "latents", property(refuse))


@pytest.fixture
def read_sizes(monkeypatch):
    """The number of rows of each read: whole shards ("shard") and chosen rows ("rows")."""
    sizes, read, read_rows = {"shard": [], "rows": []}, ShardedLatents._read, ShardedLatents._read_rows

    def counting(self, shard, lo, hi):
        sizes["shard"].append(hi - lo)
        return read(self, shard, lo, hi)

    def counting_rows(self, shard, rows):
        sizes["rows"].append(len(rows))
        return read_rows(self, shard, rows)

    monkeypatch.setattr(ShardedLatents, "_read", counting)
    monkeypatch.setattr(ShardedLatents, "_read_rows", counting_rows)
    return sizes


def test_encode_asks_for_one_batch_of_images_at_a_time(digits, tmp_path):
    images = CountingImages(digits)
    encode_split(images, toy_encode, tmp_path, vae=VAE, dataset={"name": "digits"},
                 config=CacheConfig(shard_size=SHARD, batch_size=32), progress=False)
    assert images.largest == 32


def test_sharded_reads_equal_the_loaded_latents(cache):
    whole, lazy = load_latents(cache), open_latents(cache)
    assert torch.equal(lazy.labels, whole.labels) and lazy.latent_shape == whole.latent_shape == (2, 4, 4)
    assert len(lazy) == len(whole) and lazy.class_names == whole.class_names and lazy.vae == whole.vae
    for k in range(10):
        assert torch.equal(lazy.of_class(k), whole.of_class(k))
    scattered = torch.tensor([1400, 3, 250, 3, 99, 100, 0])  # across shards, unsorted, repeated
    assert torch.equal(lazy.latents_at(scattered), whole.latents[scattered])
    assert np.array_equal(lazy.finite_rows(), whole.finite_rows())
    assert torch.equal(lazy.latents, whole.latents)
    with pytest.raises(DataError, match="must lie in"):
        lazy.latents_at([len(whole)])


def test_kmeans_reads_one_class_at_a_time_and_gives_the_in_memory_result(cache, no_materialize, read_sizes):
    lazy = open_latents(cache)
    distiller = make_distiller("kmeans", backend="sklearn", niter=5)
    synthetic = distiller.distill(lazy, 2, seed=0)
    assert read_sizes["shard"] == [SHARD] * 14 + [38]  # the finite check: each shard once (1438 digits)
    # digits' classes are interleaved: each class reads its own rows from every shard, each row once
    assert max(read_sizes["rows"]) <= SHARD and sum(read_sizes["rows"]) == len(lazy)
    reference = distiller.distill(load_latents(cache), 2, seed=0)
    assert torch.equal(synthetic.latents, reference.latents) and torch.equal(synthetic.weights, reference.weights)


def test_distill_pipeline_keeps_the_latents_on_disk_for_kmeans(tmp_path, no_materialize):
    import json

    from latentdd.config import DataConfig
    from latentdd.pipelines.distill import LatentSpaceConfig, distill_to_folder, prepare_latent_space

    space = prepare_latent_space(DataConfig(name="digits"), LatentSpaceConfig(vae="pixel", cache_dir=str(tmp_path),
                                                                              shard_size=200), progress=False)
    assert isinstance(space.latents, ShardedLatents)
    out = distill_to_folder(space, "kmeans", 1, 0, tmp_path / "k", params={"niter": 2, "backend": "sklearn"})
    assert json.loads((out / "distill.json").read_text())["ipc"] == 1


@pytest.mark.bad_input
def test_a_damaged_shard_is_named_when_the_cache_is_opened(cache):
    path = cache / shard_name(3)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheDamagedError, match=shard_name(3) + ".*run the same command again"):
        open_latents(cache)



def test_the_preview_grid_of_many_classes_shows_the_first_hundred():
    import io

    from PIL import Image

    from latentdd.data import SyntheticImages
    from latentdd.export import image_grid

    classes = [f"c{k}" for k in range(150)]
    images = SyntheticImages(torch.rand(300, 3, 4, 4), torch.arange(150).repeat_interleave(2), classes)
    width, height = Image.open(io.BytesIO(image_grid(images))).size
    assert (width, height) == (10 * 5 + 1, 100 * 5 + 1)  # 4 px images with 1 px gaps


def test_encode_and_distill_commands_stream_an_image_folder(tmp_path, make_class_tree, monkeypatch):
    """`latentdd encode` and `latentdd distill --latents` never hold more than a batch of the folder's images."""
    from latentdd.cli import main
    from latentdd.data.image_folder import ImageFolderImages

    make_class_tree(tmp_path / "data" / "train", {"a": 12, "b": 9}, size=(8, 8))
    make_class_tree(tmp_path / "data" / "val", {"a": 2, "b": 2}, size=(8, 8), seed=1)
    largest, load = [0], ImageFolderImages.load

    def counting(self, indices):
        largest[0] = max(largest[0], len(torch.as_tensor(indices).reshape(-1)))
        return load(self, indices)

    monkeypatch.setattr(ImageFolderImages, "load", counting)
    monkeypatch.setattr(ImageFolderImages, "materialize", lambda self: pytest.fail("the folder was loaded whole"))
    common = ["--dataset", "imagefolder", "--root", str(tmp_path / "data"), "--image-size", "8", "--vae", "pixel",
              "--cache-dir", str(tmp_path / "cache"), "--encode-batch-size", "4", "--shard-size", "8", "--quiet"]
    assert main(["encode", *common, "--out", str(tmp_path / "latents")]) == 0
    assert largest[0] == 4
    assert main(["distill", *common, "--latents", str(tmp_path / "latents"), "--method", "kmeans", "--ipc", "2",
                 "--param", "backend=sklearn", "--out", str(tmp_path / "k")]) == 0
    assert largest[0] == 4
