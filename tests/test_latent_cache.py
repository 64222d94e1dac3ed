"""The sharded latent cache: round trip, resuming after a crash, corruption and mismatches."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from latentdd.data import load_dataset
from latentdd.errors import DataError, LatentDDError
from latentdd.latents.cache import (
    CacheConfig,
    CacheDamagedError,
    encode_split,
    load_latents,
    read_manifest,
    shard_name,
    write_manifest,
)

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
    assert sorted(p.name for p in out.glob("shard-*.safetensors")) == [shard_name(0), shard_name(1)]
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


def _finished(data, out):
    encode_all(data, out)
    write_manifest(out, data.class_names)
    return load_latents(out).latents


def _flip_bytes_keep_size(path):
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # inside the last tensor's data: the header still reads, the size is the same
    path.write_bytes(bytes(raw))


@pytest.mark.bad_input
@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_damaged_shard_is_reported_and_the_same_encode_repairs_it(digits, tmp_path, damage):
    reference = _finished(digits, tmp_path)
    shard = tmp_path / shard_name(3)
    if damage == "delete":
        shard.unlink()
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        size = shard.stat().st_size
        _flip_bytes_keep_size(shard)
        assert shard.stat().st_size == size
    with pytest.raises(CacheDamagedError, match="run the same command again"):
        load_latents(tmp_path)
    encoder = ToyEncoder()
    encode_all(digits, tmp_path, encoder)  # what the advice says: the same encode, once more
    assert encoder.calls == 4  # the damaged shard (4 batches) and nothing else
    manifest = write_manifest(tmp_path, digits.class_names)
    assert manifest["shards"][3]["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert torch.equal(load_latents(tmp_path).latents, reference)


@pytest.mark.bad_input
def test_resume_checks_every_shard_whole_not_only_its_header(digits, tmp_path):
    """A same-size altered shard of an unfinished cache is encoded again, and the manifest
    holds the checksum of the re-encoded data, not of the altered bytes."""
    reference = _finished(digits, tmp_path / "reference")
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        encode_all(digits, out, ToyEncoder(fail_after=10))
    _flip_bytes_keep_size(out / shard_name(1))
    altered = hashlib.sha256((out / shard_name(1)).read_bytes()).hexdigest()
    again = ToyEncoder()
    encode_all(digits, out, again)
    assert again.calls == 13 * 4 + 2  # the 13 missing shards and the altered one
    manifest = write_manifest(out, digits.class_names)
    assert manifest["shards"][1]["sha256"] != altered
    assert torch.equal(load_latents(out).latents, reference)


def test_write_manifest_refuses_a_shard_that_fails_its_checksum(digits, tmp_path):
    encode_all(digits, tmp_path)
    _flip_bytes_keep_size(tmp_path / shard_name(2))
    with pytest.raises(LatentDDError, match="run the same encode again"):
        write_manifest(tmp_path, digits.class_names)


def test_a_cache_with_checksums_in_its_manifest_only_still_reads_and_an_encode_over_it_encodes_it_again(
        digits, tmp_path, caplog):
    """A cache from before the per-shard checksum files: reading checks the manifest's checksums; an encode into it
    no longer takes those (CHANGELOG), so it encodes every shard again, saying why, and the latents are the same."""
    reference = _finished(digits, tmp_path)
    for checksum in tmp_path.glob("shard-*.safetensors.sha256"):
        checksum.unlink()
    assert torch.equal(load_latents(tmp_path).latents, reference)
    encoder = ToyEncoder()
    encode_all(digits, tmp_path, encoder)
    assert encoder.calls == 14 * 4 + 2  # every shard
    assert "fails its checksum (none stored); encoding it again" in caplog.text
    write_manifest(tmp_path, digits.class_names)
    assert torch.equal(load_latents(tmp_path).latents, reference)


def test_checksum_files_read_with_sha256sum_format(digits, tmp_path):
    encode_all(digits, tmp_path)
    line = (tmp_path / (shard_name(0) + ".sha256")).read_text()
    assert line == f"{hashlib.sha256((tmp_path / shard_name(0)).read_bytes()).hexdigest()}  {shard_name(0)}\n"


# --- through the CLI: the advice followed literally, and encode / distill sharing one cache ---

TINY_FIT = ["--set", "image_size=8", "--set", "block_out_channels=[8, 16]", "--set", "norm_num_groups=4",
            "--set", "latent_channels=2", "--set", "max_steps=20", "--set", "batch_size=64",
            "--set", "checkpoint_every=0", "--set", "scale_images=256"]


@pytest.fixture
def common(tmp_path):
    return ["--dataset", "digits", "--vae", "fit", "--cache-dir", str(tmp_path / "cache"), *TINY_FIT, "--quiet",
            "--shard-size", "400"]


def _auto_cache(out):
    """The latent cache folder a distill output was made from (from its record)."""
    from pathlib import Path

    return Path(json.loads((out / "images" / "manifest.json").read_text())["record"]["vae"]["cache"])


@pytest.mark.bad_input
def test_following_the_printed_advice_literally_repairs_an_encode(tmp_path, common, capsys):
    from latentdd.cli import main

    command = ["encode", *common, "--out", str(tmp_path / "latents")]
    assert main(command) == 0
    reference = load_latents(tmp_path / "latents").latents
    _flip_bytes_keep_size(tmp_path / "latents" / shard_name(1))
    with pytest.raises(CacheDamagedError) as err:
        load_latents(tmp_path / "latents")
    assert "run the same command again" in str(err.value)
    assert main(command) == 0  # the advice, as written
    assert torch.equal(load_latents(tmp_path / "latents").latents, reference)


@pytest.mark.bad_input
def test_distill_repairs_its_damaged_latent_cache(tmp_path, common):
    from safetensors.torch import load_file

    from latentdd.cli import main

    assert main(["distill", *common, "--method", "herding", "--ipc", "2", "--out", str(tmp_path / "a")]) == 0
    (_auto_cache(tmp_path / "a") / shard_name(2)).unlink()
    assert main(["distill", *common, "--method", "herding", "--ipc", "2", "--out", str(tmp_path / "b")]) == 0
    assert torch.equal(load_file(str(tmp_path / "a" / "latents.safetensors"))["latents"],
                       load_file(str(tmp_path / "b" / "latents.safetensors"))["latents"])


def test_encode_into_distills_cache_folder_is_accepted_and_reused(tmp_path, common, monkeypatch):
    import latentdd.pipelines.distill
    from latentdd.cli import main

    assert main(["distill", *common, "--method", "herding", "--ipc", "2", "--out", str(tmp_path / "a")]) == 0
    folder = _auto_cache(tmp_path / "a")
    (folder / shard_name(0)).unlink()
    assert main(["encode", *common, "--out", str(folder)]) == 0  # the same plan: resumed, not refused

    def fail(*args, **kwargs):
        raise AssertionError("the cache was encoded again")

    monkeypatch.setattr(latentdd.pipelines.distill, "encode_split", fail)
    assert main(["distill", *common, "--method", "herding", "--ipc", "2", "--out", str(tmp_path / "b")]) == 0
