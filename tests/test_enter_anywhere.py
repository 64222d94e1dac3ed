"""Entering the flow at an artifact: `distill --latents DIR` reads the cache `encode --out DIR` wrote,
and `SyntheticLatents.save` / `load` round-trip the distilled latents."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from latentdd.cli import main

diffusers = pytest.importorskip("diffusers")


def save_tiny_vae(folder, scaling_factor: float = 0.5):
    """A 2-block AutoencoderKL: 1 x 8 x 8 digits -> (4, 4, 4) latents, saved as a diffusers folder."""
    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8], layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=8, scaling_factor=scaling_factor,
    ).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """(vae folder, the train split's latent cache written by `latentdd encode`)."""
    root = tmp_path_factory.mktemp("encoded")
    vae = save_tiny_vae(root / "vae")
    assert main(["encode", "--dataset", "digits", "--vae", str(vae), "--cache-dir", str(root / "cache"),
                 "--out", str(root / "latents"), "--quiet"]) == 0
    return vae, root / "latents"


def distill(tmp_path, vae, out: str, *extra: str) -> int:
    return main(["distill", "--dataset", "digits", "--vae", str(vae), "--cache-dir", str(tmp_path / "cache"),
                 "--method", "kmeans", "--ipc", "2", "--out", str(tmp_path / out), "--quiet", *extra])


def test_distill_reads_an_encoded_cache_without_encoding(tmp_path, encoded, monkeypatch):
    import pipelines.distill

    vae, latents = encoded
    assert distill(tmp_path, vae, "encoded_here") == 0  # encodes into its own content-keyed cache
    monkeypatch.setattr(pipelines.distill, "encode_split", lambda *a, **k: pytest.fail("encoded again"))
    assert distill(tmp_path / "other", vae, "from_cache", "--latents", str(latents)) == 0
    out = tmp_path / "other" / "from_cache"
    record = json.loads((out / "distill.json").read_text())["record"]
    assert record["vae"]["cache"] == str(latents)
    a, b = (load_file(str(folder / "latents.safetensors")) for folder in (tmp_path / "encoded_here", out))
    assert torch.equal(a["latents"], b["latents"])  # the same train latents, the same kmeans
    assert main(["distill", "--config", str(_yaml(tmp_path, {"distill": {"latents": str(latents)}})), "--dataset",
                 "digits", "--vae", str(vae), "--cache-dir", str(tmp_path / "c2"), "--ipc", "2", "--out",
                 str(tmp_path / "yaml"), "--quiet"]) == 0


def _yaml(tmp_path, sections: dict):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.mark.bad_input
def test_distill_refuses_a_cache_of_another_vae(tmp_path, encoded, capsys):
    vae, latents = encoded
    other = save_tiny_vae(tmp_path / "other_vae", scaling_factor=0.25)
    assert distill(tmp_path, other, "x", "--latents", str(latents)) == 2
    err = capsys.readouterr().err
    assert "encoded with another VAE" in err and "name" in err and "scaling_factor" in err and "--vae" in err
    assert distill(tmp_path, vae, "x", "--vae-input-size", "16", "--latents", str(latents)) == 2
    assert "adapter" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.bad_input
def test_distill_refuses_a_cache_of_another_split_or_no_cache(tmp_path, encoded, capsys):
    vae, _ = encoded
    assert main(["encode", "--dataset", "digits", "--vae", str(vae), "--cache-dir", str(tmp_path / "cache"),
                 "--split", "test", "--out", str(tmp_path / "test_latents"), "--quiet"]) == 0
    assert distill(tmp_path, vae, "x", "--latents", str(tmp_path / "test_latents")) == 2
    assert "needs its train split" in capsys.readouterr().err
    assert distill(tmp_path, vae, "x", "--latents", str(tmp_path / "nothing_here")) == 2
    assert "not a finished latent cache" in capsys.readouterr().err
