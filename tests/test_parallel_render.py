"""Rendering split over processes gives the one-process images bit for bit: for the VAE decoder and the
diffusion decoder (whose noise is per latent), with simulated ranks and under `accelerate launch`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import diffusers
import pytest
import torch

from latentdd.errors import LatentDDError
from latentdd.latents.types import SyntheticLatents
from latentdd.parallel import launch_args
from latentdd.prior.fit import FitPriorConfig
from latentdd.render import DiffusionDecoder, VAEDecoder
from latentdd.render.parallel import join_parts, rank_slice, render_part
from latentdd.vae import VAEInputAdapter
from latentdd.vae.taesd import TAESD

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vae():
    from test_vae import tiny_taesd_state_dicts

    encoder, decoder = tiny_taesd_state_dicts()
    return TAESD(encoder, decoder, name="tiny", input_size=8)  # latents (4, 4, 4)


@pytest.fixture(scope="module")
def synthetic():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(3)
    return SyntheticLatents(torch.randn(9, 4, 4, 4, generator=g), labels, ["a", "b", "c"], method="kmeans",
                            params={"ipc": 3}, weights=torch.full((9,), 1 / 3))


def diffusion(vae, adapter, batch_size):
    config = FitPriorConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(**config.unet_config((4, 4, 4), 3))
    return DiffusionDecoder(vae, adapter, unet, config.scheduler_config(), strength=0.6, num_inference_steps=4,
                            guidance_scale=2.0, batch_size=batch_size)


@pytest.mark.parametrize("num, batch, world, expected", [
    (10, 3, 2, [(0, 6), (6, 10)]),
    (5, 4, 3, [(0, 4), (4, 5), (5, 5)]),
    (8, 2, 2, [(0, 4), (4, 8)]),
])
def test_rank_slices_are_contiguous_whole_batches_covering_everything(num, batch, world, expected):
    assert [rank_slice(num, batch, r, world) for r in range(world)] == expected


@pytest.mark.parametrize("kind", ["vae", "diffusion"])
@pytest.mark.parametrize("world", [2, 3])
def test_simulated_ranks_join_to_the_one_process_images(vae, synthetic, tmp_path, kind, world):
    adapter = VAEInputAdapter((3, 8, 8), 8, 3)
    decoder = VAEDecoder(vae, adapter, batch_size=2) if kind == "vae" else diffusion(vae, adapter, batch_size=2)
    whole = decoder.render(synthetic, seed=7)
    for rank in range(world):
        render_part(decoder, synthetic, seed=7, rank=rank, world_size=world, parts=tmp_path)
    joined = join_parts(synthetic, tmp_path, world)
    assert torch.equal(joined.images, whole.images)
    assert torch.equal(joined.labels, whole.labels) and torch.equal(joined.weights, whole.weights)
    assert joined.meta == whole.meta and joined.class_names == whole.class_names


class _Rank0:
    """accelerate's PartialState as rank 0 of 2 sees it, the other rank's part already written."""

    process_index, num_processes, is_main_process = 0, 2, True

    def wait_for_everyone(self) -> None:
        pass


def test_a_set_of_tiles_renders_split_and_whole_to_its_stored_images(vae, tmp_path):
    """A set whose stored images are 2 x 2 latents each (tiles "decoded", which its extras record): the renderer
    reads that from the set, whole (`render_set`) or split over processes (`render_split`), and tiles."""
    from latentdd.nn.factorization import tile_set
    from latentdd.render import render_set
    from latentdd.render.parallel import render_split

    g = torch.Generator().manual_seed(1)
    tiles = SyntheticLatents(torch.randn(12, 4, 4, 4, generator=g), torch.arange(3).repeat_interleave(4),
                             ["a", "b", "c"], method="dm", params={"ipc": 1}, weights=torch.full((12,), 1 / 4),
                             extras={"factorization": {"factor": 2, "tiles": "decoded"}})
    assert tiles.tile_factor == 2
    decoder = VAEDecoder(vae, VAEInputAdapter((3, 8, 8), 8, 3), batch_size=5)  # the ranks' slices split classes
    stored = render_set(decoder, tiles, seed=0)
    assert stored.images.shape == (3, 3, 8, 8) and stored.labels.tolist() == [0, 1, 2]
    assert torch.equal(stored.images, tile_set(decoder.render(tiles), 2).images)
    assert torch.allclose(stored.weights, torch.ones(3))
    render_part(decoder, tiles, seed=0, rank=1, world_size=2, parts=tmp_path)
    split = render_split(decoder, tiles, seed=0, state=_Rank0(), parts=tmp_path)
    assert torch.equal(split.images, stored.images) and torch.equal(split.labels, stored.labels)
    # Without tiles "decoded" each latent is a stored image.
    plain = dataclasses.replace(tiles, extras={"factorization": {"factor": 2, "tiles": "latent"}})
    assert plain.tile_factor == 1 and len(render_set(decoder, plain)) == 12


def test_a_missing_part_is_a_clear_error(vae, synthetic, tmp_path):
    decoder = VAEDecoder(vae, VAEInputAdapter((3, 8, 8), 8, 3), batch_size=4)
    render_part(decoder, synthetic, seed=0, rank=0, world_size=2, parts=tmp_path)
    with pytest.raises(LatentDDError, match="part-00001.*rank 1 cannot be read"):
        join_parts(synthetic, tmp_path, 2)


@pytest.mark.slow
def test_latentdd_render_under_accelerate_writes_the_one_process_folder(tmp_path):
    from latentdd.cli import main

    common = ["--dataset", "digits", "--vae", "pixel", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["distill", *common, "--method", "kmeans", "--ipc", "2", "--param", "niter=3",
                 "--out", str(tmp_path / "k")]) == 0
    render = ["-m", "latentdd", "render", *common, "--synthetic", str(tmp_path / "k"), "--decode-batch-size", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *render, "--out", str(tmp_path / "one")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, *launch_args(2), *render, "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr
    assert "2 process(es)" in two.stdout
    pngs = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}  # noqa: E731
    assert len(pngs(tmp_path / "one" / "images")) == 20
    assert pngs(tmp_path / "two" / "images") == pngs(tmp_path / "one" / "images")
    # the distill folder's own images (rendered in one piece by distill) are the same too
    assert pngs(tmp_path / "one" / "images") == pngs(tmp_path / "k" / "images")
    assert not list(tmp_path.glob("*.render-parts"))


@pytest.mark.bad_input
def test_render_refuses_missing_or_mismatched_latents_before_rendering(tmp_path, capsys):
    from latentdd.cli import main

    common = ["--dataset", "digits", "--vae", "pixel", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["render", *common, "--synthetic", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "do not exist" in capsys.readouterr().err
    wrong = SyntheticLatents(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), [str(k) for k in range(10)], "kmeans")
    wrong.save(tmp_path / "wrong.safetensors")
    assert main(["render", *common, "--synthetic", str(tmp_path / "wrong.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "are pixel-space images of shape (1, 4, 4), but this dataset's images reach the pixel space as (1, 8, 8)" \
        in capsys.readouterr().err
    other = SyntheticLatents(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), ["x", "y"], "kmeans")
    other.save(tmp_path / "other.safetensors")
    assert main(["render", *common, "--synthetic", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "are of classes ['x', 'y']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.*"))
