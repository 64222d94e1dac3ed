"""Encoding with several processes: the shards they write are the bytes one process writes, also after
the processes are killed with SIGKILL and the encode is run again; and `accelerate launch` really starts
(and warns when it does not start) several processes on a CPU machine."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from latentdd.data import load_dataset
from latentdd.latents.cache import CacheConfig, encode_split, shard_name, write_manifest
from latentdd.parallel import launch_args

REPO = Path(__file__).resolve().parents[1]
VAE = {"name": "toy", "latent_shape": [2, 4, 4], "scaling_factor": 1.0}
DATASET = {"name": "digits", "split": "train"}
CONFIG = CacheConfig(shard_size=100, batch_size=20)  # digits: 1438 images -> 15 shards of 5 batches

# One rank of a 2-process encode, in its own process, slowed so that it can be killed half-way.
RANK = textwrap.dedent("""
    import sys, time, torch
    from latentdd.data import load_dataset
    from latentdd.latents.cache import CacheConfig, encode_split
    out, rank = sys.argv[1], int(sys.argv[2])
    weight = torch.linspace(-1, 1, 8).reshape(2, 1, 2, 2)
    def encode(images):
        time.sleep(0.03)
        return torch.nn.functional.conv2d(images, weight, stride=2)
    encode_split(load_dataset("digits", "train"), encode, out, vae={vae}, dataset={dataset},
                 config=CacheConfig(shard_size=100, batch_size=20), rank=rank, world_size=2, progress=False)
""").format(vae=VAE, dataset=DATASET)


def toy_encode(images):  # (b, 1, 8, 8) -> (b, 2, 4, 4), as RANK's
    return torch.nn.functional.conv2d(images, torch.linspace(-1, 1, 8).reshape(2, 1, 2, 2), stride=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def cache_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a finished cache, the manifest without its creation time."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("created")
    return files | {"manifest.json": json.dumps(manifest, sort_keys=True).encode()}


def single_process_cache(data, folder: Path) -> dict[str, bytes]:
    encode_split(data, toy_encode, folder, vae=VAE, dataset=DATASET, config=CONFIG, progress=False)
    write_manifest(folder, data.class_names)
    return cache_bytes(folder)


@pytest.mark.slow
def test_two_ranks_killed_with_sigkill_resume_to_the_single_process_bytes(digits, tmp_path):
    reference = single_process_cache(digits, tmp_path / "one")
    out = tmp_path / "two"
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(script), str(out), str(r)], env=env, cwd=REPO) for r in (0, 1)]
    deadline = time.monotonic() + 240  # generous: the ranks import torch first, on a busy machine too
    while len(list(out.glob("shard-*.safetensors"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    for rank in ranks:
        os.kill(rank.pid, signal.SIGKILL)
        rank.wait()
    written = {p.name for p in out.glob("shard-*.safetensors")}
    assert 4 <= len(written) < 15, "both ranks should die half-way"
    (out / f".{shard_name(14)}.12345.tmp").write_bytes(b"half a shard")  # what a kill during a write leaves

    calls = []
    for rank in (0, 1):  # the same command again, rank by rank
        encode_split(digits, lambda x: calls.append(len(x)) or toy_encode(x), out, vae=VAE, dataset=DATASET,
                     config=CONFIG, rank=rank, world_size=2, progress=False)
    assert sum(calls) < len(digits)  # the shards that were whole were kept, not encoded again
    write_manifest(out, digits.class_names)
    assert cache_bytes(out).keys() == reference.keys()  # no stale temporary files either
    assert cache_bytes(out) == reference


def test_stale_temporaries_of_this_ranks_shards_are_removed(digits, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    mine, theirs = out / f".{shard_name(2)}.999.tmp", out / f".{shard_name(3)}.999.tmp"
    checksum = out / f".{shard_name(0)}.sha256.abcd1234.tmp"
    for stale in (mine, theirs, checksum):
        stale.write_bytes(b"x")
    encode_split(digits, toy_encode, out, vae=VAE, dataset=DATASET, config=CONFIG, rank=0, world_size=2,
                 progress=False)
    assert not mine.exists() and not checksum.exists()
    assert theirs.exists()  # rank 1's shard: rank 1 may be writing it right now


def _tiny_taesd(folder: Path) -> Path:
    from safetensors.torch import save_file
    from test_vae import tiny_taesd_state_dicts

    encoder, decoder = tiny_taesd_state_dicts()
    folder.mkdir()
    save_file(encoder, str(folder / "tiny_encoder.safetensors"))
    save_file(decoder, str(folder / "tiny_decoder.safetensors"))
    return folder


@pytest.mark.slow
def test_accelerate_launch_with_two_cpu_processes_writes_the_single_process_cache(tmp_path, make_class_tree):
    make_class_tree(tmp_path / "data" / "train", {"a": 9, "b": 7, "c": 8}, size=(16, 16))
    make_class_tree(tmp_path / "data" / "val", {"a": 1, "b": 1, "c": 1}, size=(16, 16), seed=1)
    vae = _tiny_taesd(tmp_path / "vae")
    encode = ["-m", "latentdd", "encode", "--dataset", "imagefolder", "--root", str(tmp_path / "data"),
              "--image-size", "16", "--vae", f"taesd:{vae}", "--vae-input-size", "16", "--shard-size", "4",
              "--encode-batch-size", "3", "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *encode, "--out", str(tmp_path / "one")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, *launch_args(2), *encode, "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr
    assert "encode (rank 1): done 12/12" in two.stderr  # rank 1 encoded its 3 of the 6 shards
    assert cache_bytes(tmp_path / "two") == cache_bytes(tmp_path / "one")


def test_a_launch_that_started_one_process_for_several_is_warned_about(monkeypatch, caplog):
    from latentdd.parallel import SINGLE_PROCESS_LAUNCH, process_state

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")  # what `accelerate launch --num_processes 2` (no --multi_gpu) sets
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    with caplog.at_level(logging.WARNING, logger="latentdd.parallel"):
        assert process_state().num_processes == 1
    assert SINGLE_PROCESS_LAUNCH in caplog.text and "--multi_gpu" in caplog.text
    caplog.clear()
    monkeypatch.delenv("MASTER_PORT")
    with caplog.at_level(logging.WARNING, logger="latentdd.parallel"):
        process_state()  # a plain `latentdd encode`: nothing to warn about
    assert caplog.text == ""


def test_decoding_workers_give_the_same_cache(tmp_path, make_class_tree, monkeypatch):
    """--encode-workers 2 decodes in DataLoader processes: the batches, and so every byte, are the same."""
    from latentdd.cli import main
    from latentdd.latents import cache

    make_class_tree(tmp_path / "data" / "train", {"a": 9, "b": 8}, size=(8, 8))
    make_class_tree(tmp_path / "data" / "val", {"a": 1, "b": 1}, size=(8, 8), seed=1)
    used = []
    batches = cache._image_batches
    monkeypatch.setattr(cache, "_image_batches", lambda data, b, workers: used.append(workers) or batches(data, b, workers))
    common = ["encode", "--dataset", "imagefolder", "--root", str(tmp_path / "data"), "--image-size", "8",
              "--vae", "pixel", "--shard-size", "6", "--encode-batch-size", "4", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "zero")]) == 0
    assert main([*common, "--encode-workers", "2", "--out", str(tmp_path / "two")]) == 0
    assert used == [0, 2]
    assert cache_bytes(tmp_path / "two") == cache_bytes(tmp_path / "zero")
