"""The sharded latent cache: round trip, resuming after a crash, corruption and mismatches."""

from __future__ import annotations

import json

import pytest
import torch

from latentdd.data import load_dataset
from latentdd.errors import DataError
from latentdd.latents.cache import CacheConfig, encode_split, load_latents, read_manifest, shard_name, write_manifest

VAE = {"name": "toy", "latent_shape": [2, 4, 4], "scaling_factor": 1.0}
DATASET = {"name": "digits", "split": "train"}
CONFIG = CacheConfig(shard_size=100, batch_size=32)


class ToyEncoder:
    """A fixed convolution standing in for a VAE encoder: (b, 1, 8, 8) -> (b, 2, 4, 4)."""

    def __init__(self, fail_after: int | None = None):
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.randn(2, 1, 2, 2, generator=gen)
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return torch.nn.functional.conv2d(images, self.weight, stride=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def encode_all(data, out, encoder=None, **kw):
    paths = encode_split(data, encoder or ToyEncoder(), out, vae=VAE, dataset=DATASET, config=CONFIG,
                         progress=False, **kw)
    return paths


def test_round_trip_matches_direct_encoding(digits, tmp_path):
    encode_all(digits, tmp_path)
    manifest = write_manifest(tmp_path, digits.class_names)
    assert manifest["latent_shape"] == [2, 4, 4] and sum(manifest["per_class_counts"]) == len(digits)
    assert len(manifest["shards"]) == 15  # 1438 images in shards of 100
    latents = load_latents(tmp_path, expect_vae=VAE)
    assert torch.equal(latents.labels, digits.labels)
    assert torch.allclose(latents.latents, ToyEncoder()(digits.images), atol=1e-6)
    assert latents.vae == VAE and latents.class_names == digits.class_names


def test_interrupted_encode_resumes_to_the_same_result(digits, tmp_path):
    reference = tmp_path / "reference"
    encode_all(digits, reference)
    write_manifest(reference, digits.class_names)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        encode_all(digits, out, ToyEncoder(fail_after=10))  # dies inside the 3rd shard (4 batches per shard)
    assert sorted(p.name for p in out.glob("shard-*")) == [shard_name(0), shard_name(1)]
    assert not list(out.glob(".*tmp"))  # no half-written shard is left looking like one
    with pytest.raises(DataError, match="not finished"):
        read_manifest(out)
    again = ToyEncoder()
    encode_all(digits, out, again)
    assert again.calls == 12 * 4 + 2  # only the 13 missing shards (the last has 38 images: 2 batches)
    write_manifest(out, digits.class_names)
    assert torch.equal(load_latents(out).latents, load_latents(reference).latents)


def test_shards_split_over_ranks_give_the_single_process_result(digits, tmp_path):
    single, multi = tmp_path / "one", tmp_path / "two"
    encode_all(digits, single)
    write_manifest(single, digits.class_names)
    mine = [encode_all(digits, multi, rank=r, world_size=2) for r in (0, 1)]
    assert {p.name for p in mine[0]}.isdisjoint({p.name for p in mine[1]})
    write_manifest(multi, digits.class_names)
    assert torch.equal(load_latents(single).latents, load_latents(multi).latents)


def test_corrupt_shard_and_mismatches_are_clear_errors(digits, tmp_path):
    encode_all(digits, tmp_path)
    write_manifest(tmp_path, digits.class_names)
    with pytest.raises(DataError, match="another VAE"):
        load_latents(tmp_path, expect_vae={**VAE, "latent_shape": [4, 8, 8]})
    with pytest.raises(DataError, match="different vae"):
        encode_split(digits, ToyEncoder(), tmp_path, vae={**VAE, "name": "other"}, dataset=DATASET, config=CONFIG,
                     progress=False)
    shard = tmp_path / shard_name(3)
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt"):
        load_latents(tmp_path)
    shard.write_bytes(b"not a safetensors file")
    encoder = ToyEncoder()
    encode_all(digits, tmp_path, encoder)  # an unreadable shard is encoded again, the others are kept
    assert encoder.calls == 4
    write_manifest(tmp_path, digits.class_names)
    assert load_latents(tmp_path).latents.shape == (len(digits), 2, 4, 4)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["vae"] == VAE and manifest["dataset"] == DATASET
