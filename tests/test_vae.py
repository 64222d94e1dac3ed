"""VAEs: the adapter, diffusers wrappers, TAESD from state dicts, loading, and fitting.

Fast tests use dummy components (a 2-block AutoencoderKL with a handful of channels, a
two-stage TAESD with random weights); `TestTAEF2Weights` uses the real TAEF2 weights from
../shared when they are there and skips otherwise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from latentdd.data import ImageSet, load_dataset
from latentdd.data.base import data_identity
from latentdd.errors import DataError, LatentDDError
from latentdd.vae import (
    TAESD,
    DiffusersKL,
    DiffusersTiny,
    FitVAEConfig,
    LatentVAE,
    VAEInputAdapter,
    fit_vae,
    load_vae,
)
from latentdd import fitting
from latentdd.vae import fit as fit_module

diffusers = pytest.importorskip("diffusers")

TAEF2_DIR = Path(
    os.environ.get("LATENTDD_TAEF2") or Path(__file__).resolve().parents[2] / "shared" / "weights" / "taef2"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are so small that a second thread only adds synchronisation, and on a
    busy machine the thread pool's waits made a 1 s fit take a minute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / ((a - b) ** 2).mean().item())


# ---------------------------------------------------------------- dummy components


def tiny_kl_config(**overrides) -> dict:
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "sample_size": 16,
        "scaling_factor": 0.5,
        "shift_factor": 0.1,
    }
    return {**config, **overrides}


def save_tiny_kl(directory: Path, **overrides) -> Path:
    torch.manual_seed(0)
    diffusers.AutoencoderKL(**tiny_kl_config(**overrides)).save_pretrained(directory)
    return directory


def save_tiny_autoencoder_tiny(directory: Path) -> Path:
    torch.manual_seed(0)
    model = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
        act_fn="relu",
    )
    model.save_pretrained(directory)
    return directory


def tiny_taesd_state_dicts(seed: int = 0) -> tuple[dict, dict]:
    """Random weights laid out like a 2x-downsampling TAESD with a TAEF2-style pool midblock.

    encoder: 0 conv 3->8, 1 Block, 2 conv stride 2 (no bias), 3 Block with pool, 4 conv 8->4
    decoder: 0 clamp, 1 conv 4->8, 2 ReLU, 3 Block with pool, 4 Upsample, 5 conv (no bias), 6 Block, 7 conv 8->3
    """
    g = torch.Generator().manual_seed(seed)

    def conv(out_c, in_c, k=3, bias=True, prefix=""):
        fan_in = in_c * k * k
        sd = {f"{prefix}weight": torch.randn(out_c, in_c, k, k, generator=g) / math.sqrt(fan_in)}
        if bias:
            sd[f"{prefix}bias"] = 0.05 * torch.randn(out_c, generator=g)
        return sd

    def block(i, pool=False):
        sd = {}
        for j in (0, 2, 4):
            sd.update(conv(8, 8, prefix=f"{i}.conv.{j}."))
        if pool:
            sd.update(conv(16, 8, 1, bias=False, prefix=f"{i}.pool.0."))
            sd[f"{i}.pool.1.weight"] = 1 + 0.1 * torch.randn(16, generator=g)
            sd[f"{i}.pool.1.bias"] = 0.1 * torch.randn(16, generator=g)
            sd.update(conv(8, 16, 1, bias=False, prefix=f"{i}.pool.3."))
        return sd

    encoder = {
        **conv(8, 3, prefix="0."),
        **block(1),
        **conv(8, 8, bias=False, prefix="2."),
        **block(3, pool=True),
        **conv(4, 8, prefix="4."),
    }
    decoder = {
        **conv(8, 4, prefix="1."),
        **block(3, pool=True),
        **conv(8, 8, bias=False, prefix="5."),
        **block(6),
        **conv(3, 8, prefix="7."),
    }
    return {k: v.half() for k, v in encoder.items()}, {k: v.half() for k, v in decoder.items()}


def save_tiny_taesd(directory: Path) -> Path:
    encoder, decoder = tiny_taesd_state_dicts()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(encoder, directory / "tiny_encoder.pth")
    torch.save(decoder, directory / "tiny_decoder.pth")
    return directory


def reference_taesd(encoder: dict, decoder: dict, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Functional forward of the tiny TAESD, written from the layout alone, as a parity check."""
    encoder = {k: v.float() for k, v in encoder.items()}
    decoder = {k: v.float() for k, v in decoder.items()}

    def conv(sd, p, x, stride=1):
        w = sd[f"{p}.weight"]
        return F.conv2d(x, w, sd.get(f"{p}.bias"), stride=stride, padding=w.shape[-1] // 2)

    def block(sd, i, x):
        if f"{i}.pool.0.weight" in sd:
            h = F.group_norm(conv(sd, f"{i}.pool.0", x), 4, sd[f"{i}.pool.1.weight"], sd[f"{i}.pool.1.bias"])
            x = x + conv(sd, f"{i}.pool.3", F.relu(h))
        h = conv(sd, f"{i}.conv.4", F.relu(conv(sd, f"{i}.conv.2", F.relu(conv(sd, f"{i}.conv.0", x)))))
        return F.relu(h + x)

    x = block(encoder, 1, conv(encoder, "0", images))
    z = conv(encoder, "4", block(encoder, 3, conv(encoder, "2", x, stride=2)))
    y = block(decoder, 3, F.relu(conv(decoder, "1", torch.tanh(z / 3) * 3)))
    y = block(decoder, 6, conv(decoder, "5", F.interpolate(y, scale_factor=2, mode="nearest")))
    return z, conv(decoder, "7", y)


@pytest.fixture
def vae_of_kind(tmp_path):
    """vae_of_kind(kind) -> a dummy LatentVAE of that kind, loaded through load_vae."""

    def make(kind: str) -> LatentVAE:
        if kind == "kl":
            return load_vae(str(save_tiny_kl(tmp_path / "kl")))
        if kind == "kl_gray":
            return load_vae(str(save_tiny_kl(tmp_path / "kl_gray", in_channels=1, out_channels=1)))
        if kind == "autoencoder_tiny":
            return load_vae(str(save_tiny_autoencoder_tiny(tmp_path / "tiny")), input_size=16)
        if kind == "taesd":
            return load_vae(f"taesd:{save_tiny_taesd(tmp_path / 'taesd')}", input_size=16)
        raise AssertionError(kind)

    return make


# ---------------------------------------------------------------- the adapter


def test_adapter_maps_gray28_to_rgb64_and_back_exactly():
    images = torch.rand(5, 1, 28, 28)
    adapter = VAEInputAdapter((1, 28, 28), input_size=64, input_channels=3, resize="resize")
    vae_images = adapter.to_vae(images)
    assert vae_images.shape == (5, 3, 64, 64)
    assert torch.equal(vae_images[:, 0], vae_images[:, 2])  # gray repeated
    back = adapter.from_vae(vae_images)
    assert back.shape == (5, 1, 28, 28)
    assert back.min() >= 0 and back.max() <= 1
    # The pseudo-inverse undoes the upsampling; an antialiased resize back would be ~20 dB off.
    assert torch.allclose(back, images, atol=1e-4)


def test_adapter_pad_inverts_by_cropping():
    images = torch.rand(3, 1, 28, 28)
    adapter = VAEInputAdapter((1, 28, 28), input_size=32, input_channels=1, resize="pad")
    padded = adapter.to_vae(images)
    assert padded.shape == (3, 1, 32, 32)
    assert padded[..., :2, :].abs().sum() == 0 and padded[..., -2:].abs().sum() == 0
    assert torch.allclose(adapter.from_vae(padded), images, atol=1e-6)


def test_adapter_shrinking_and_rgb_to_gray_keep_shapes_and_range():
    images = torch.rand(2, 3, 40, 24)
    adapter = VAEInputAdapter((3, 40, 24), input_size=32, input_channels=1)
    vae_images = adapter.to_vae(images)
    assert vae_images.shape == (2, 1, 32, 32)
    back = adapter.from_vae(vae_images)
    assert back.shape == (2, 3, 40, 24)
    assert back.min() >= 0 and back.max() <= 1


def test_adapter_takes_the_vae_policy_and_rejects_bad_shapes(vae_of_kind):
    vae = vae_of_kind("kl")
    adapter = VAEInputAdapter.for_vae(vae, (3, 12, 12))
    assert adapter.vae_shape == vae.input_shape and adapter.resize == "resize"
    with pytest.raises(DataError, match=r"\(B, 3, 12, 12\)"):
        adapter.to_vae(torch.rand(2, 1, 12, 12))
    with pytest.raises(DataError, match="cannot pad"):
        VAEInputAdapter((1, 40, 40), input_size=32, input_channels=1, resize="pad")
    with pytest.raises(DataError, match="resize must be one of"):
        VAEInputAdapter((1, 28, 28), input_size=32, input_channels=1, resize="center_crop")


# ---------------------------------------------------------------- every VAE kind


@pytest.mark.parametrize("kind", ["kl", "kl_gray", "autoencoder_tiny", "taesd"])
def test_round_trip_keeps_shapes_and_decode_is_differentiable(vae_of_kind, kind):
    vae = vae_of_kind(kind)
    images = torch.rand(3, *vae.input_shape)
    with torch.no_grad():
        latents = vae.encode(images)
    assert latents.shape == (3, *vae.latent_shape) and latents.dtype == torch.float32
    latents.requires_grad_(True)
    decoded = vae.decode(latents)
    assert decoded.shape == (3, *vae.input_shape)
    assert decoded.min() >= 0 and decoded.max() <= 1
    decoded.sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    identity = vae.identity()
    assert identity["latent_shape"] == list(vae.latent_shape)
    assert identity["input_shape"] == list(vae.input_shape)
    assert identity["num_parameters"] == sum(p.numel() for p in vae.parameters()) > 0


def test_kl_scaling_and_shift_come_from_the_config(tmp_path):
    directory = save_tiny_kl(tmp_path / "kl", scaling_factor=0.5, shift_factor=0.1)
    vae = load_vae(str(directory))
    assert isinstance(vae, DiffusersKL)
    assert (vae.scaling_factor, vae.shift_factor) == (0.5, 0.1)
    assert vae.latent_shape == (4, 8, 8)  # 2 blocks: one 2x downsampling of sample_size 16
    raw = diffusers.AutoencoderKL.from_pretrained(directory)
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = (raw.encode(images * 2 - 1).latent_dist.mean - 0.1) * 0.5
        latents = vae.encode(images)
        assert torch.allclose(latents, expected, atol=1e-6)
        expected_images = ((raw.decode(latents / 0.5 + 0.1).sample + 1) / 2).clamp(0, 1)
        assert torch.allclose(vae.decode(latents), expected_images, atol=1e-6)


def test_kl_shift_none_means_zero_and_latent_shape_follows_blocks(tmp_path):
    config = tiny_kl_config(
        shift_factor=None,
        block_out_channels=[8, 8, 16],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
    )
    vae = DiffusersKL.from_config(config, input_size=32)
    assert vae.shift_factor == 0.0
    assert vae.latent_shape == (4, 8, 8)
    with torch.no_grad():
        assert vae.encode(torch.rand(1, 3, 32, 32)).shape == (1, 4, 8, 8)
    with pytest.raises(LatentDDError, match="multiple of 4"):
        DiffusersKL.from_config(config, input_size=30)


def test_kl_sampling_follows_the_generator():
    vae = DiffusersKL.from_config(tiny_kl_config())
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        a = vae.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
        b = vae.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
        mean = vae.encode(images)
    assert torch.equal(a, b)
    assert not torch.equal(a, mean)


def test_from_config_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = DiffusersKL.from_config(tiny_kl_config(), seed=3)
    after = torch.rand(1)
    second = DiffusersKL.from_config(tiny_kl_config(), seed=3)
    assert torch.equal(before, after)
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)


def test_encode_rejects_wrong_shapes_and_ranges(vae_of_kind):
    vae = vae_of_kind("kl")
    with pytest.raises(DataError, match="VAEInputAdapter"):
        vae.encode(torch.rand(2, 1, 16, 16))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        vae.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    with pytest.raises(DataError, match="decodes latents"):
        vae.decode(torch.zeros(2, 4, 4, 4))


# ---------------------------------------------------------------- TAESD from state dicts


def test_taesd_matches_a_functional_reference(tmp_path):
    encoder, decoder = tiny_taesd_state_dicts()
    vae = load_vae(str(save_tiny_taesd(tmp_path / "w")), input_size=16)  # a directory of .pth: no prefix needed
    assert isinstance(vae, TAESD)
    assert vae.latent_shape == (4, 8, 8) and vae.input_shape == (3, 16, 16)
    assert (vae.scaling_factor, vae.shift_factor) == (1.0, 0.0)
    images = torch.rand(2, 3, 16, 16)
    z_ref, y_ref = reference_taesd(encoder, decoder, images)
    with torch.no_grad():
        z = vae.encode(images)
        assert torch.allclose(z, z_ref, atol=1e-5)
        assert torch.allclose(vae.decode(z), y_ref.clamp(0, 1), atol=1e-5)
    with pytest.raises(LatentDDError, match="deterministic"):
        vae.encode(images, sample=True)


def test_taesd_identity_names_the_weights(tmp_path):
    directory = save_tiny_taesd(tmp_path / "w")
    by_dir = load_vae(f"taesd:{directory}", input_size=16)
    by_file = load_vae(f"taesd:{directory / 'tiny_encoder.pth'}", input_size=16)
    assert by_dir.identity() == by_file.identity()
    assert by_dir.identity()["name"] == f"taesd:{directory.resolve()}"
    assert len(by_dir.identity()["weights_sha256"]) == 64


def test_taesd_corrupt_missing_and_mismatched_weights_are_clear_errors(tmp_path):
    directory = save_tiny_taesd(tmp_path / "w")
    (directory / "tiny_decoder.pth").unlink()
    with pytest.raises(LatentDDError, match="tiny_decoder.pth does not exist"):
        load_vae(f"taesd:{directory / 'tiny_encoder.pth'}")

    (directory / "tiny_decoder.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LatentDDError, match="cannot read TAESD weights .*tiny_decoder.pth"):
        load_vae(f"taesd:{directory}")

    encoder, decoder = tiny_taesd_state_dicts()
    torch.save({**decoder, "3.pool.9.weight": torch.zeros(1)}, directory / "tiny_decoder.pth")
    with pytest.raises(LatentDDError, match=r"unexpected keys \['3.pool.9.weight'\]"):
        load_vae(f"taesd:{directory}")

    torch.save(encoder, directory / "tiny_decoder.pth")  # the encoder twice
    with pytest.raises(LatentDDError, match="does not look like a TAESD decoder"):
        load_vae(f"taesd:{directory}")

    with pytest.raises(LatentDDError, match="no '\\*encoder.pth'"):
        load_vae(f"taesd:{tmp_path}")


# ---------------------------------------------------------------- load_vae


def test_hub_id_offline_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    with pytest.raises(LatentDDError) as err:
        load_vae("someorg/not-cached-vae", local_files_only=True)
    message = str(err.value)
    assert "hf download someorg/not-cached-vae --local-dir DIR" in message
    assert "load_vae('DIR')" in message
    with pytest.raises(LatentDDError, match=r"--include 'vae/\*'.*\n.*DIR/vae"):
        load_vae("someorg/some-pipeline/vae", local_files_only=True)


def test_load_vae_explains_fit_and_unknown_specs(tmp_path):
    with pytest.raises(LatentDDError, match="fit_vae"):
        load_vae("fit")
    with pytest.raises(LatentDDError, match="neither an existing file or directory nor a hub id"):
        load_vae(str(tmp_path / "missing" / "deeper" / "path"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LatentDDError, match="holds neither a diffusers VAE"):
        load_vae(str(tmp_path / "empty"))


def test_load_vae_accepts_a_pipeline_directory(tmp_path):
    save_tiny_kl(tmp_path / "pipeline" / "vae")
    vae = load_vae(str(tmp_path / "pipeline"))
    assert isinstance(vae, DiffusersKL) and vae.latent_shape == (4, 8, 8)


def test_load_vae_dispatches_autoencoder_tiny(vae_of_kind):
    vae = vae_of_kind("autoencoder_tiny")
    assert isinstance(vae, DiffusersTiny)
    assert vae.latent_shape == (4, 8, 8) and vae.scaling_factor == 1.0


# ---------------------------------------------------------------- fitting


def tiny_fit_config(**overrides) -> FitVAEConfig:
    values = dict(
        image_size=8,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        latent_channels=2,
        max_steps=30,
        batch_size=32,
        lr=3e-3,
        log_every=10,
        checkpoint_every=0,
        scale_images=512,
    )
    return FitVAEConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    return train.subset(range(512)), test.subset(range(128))


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("fit_cache")
    vae, report = fit_vae(*digits, tiny_fit_config(), cache, progress=False)
    return vae, report, cache


def state_of(vae: DiffusersKL) -> dict:
    return {k: v.clone() for k, v in vae.model.state_dict().items()}


def test_fit_trains_saves_and_reports(fitted):
    vae, report, cache = fitted
    losses = [loss for _, loss in report["loss_curve"]]
    assert report["cached"] is False and report["steps"] == 30
    assert losses[-1] < 0.8 * losses[0]
    assert report["test_psnr"] > 10 and report["test_images"] == 128
    key = report["hash"][:16]
    assert vae.identity()["name"] == f"fit:{key}"
    assert (cache / key / "config.json").is_file() and (cache / key / "latentdd_fit.json").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary or partial dirs left
    assert vae.input_shape == (1, 8, 8) and vae.latent_shape == (2, 4, 4) and vae.input_resize == "pad"
    assert vae.scaling_factor == pytest.approx(1 / report["latent_std_unscaled"])
    with torch.no_grad():
        latents = vae.encode(torch.rand(4, 1, 8, 8))
        assert latents.shape == (4, 2, 4, 4)
        assert vae.decode(latents).shape == (4, 1, 8, 8)


def test_fit_latents_have_unit_std(fitted, digits):
    vae, _, _ = fitted
    adapter = VAEInputAdapter.for_vae(vae, digits[0].image_shape)
    with torch.no_grad():
        latents = vae.encode(adapter.to_vae(digits[0].images))
    assert latents.std().item() == pytest.approx(1.0, abs=0.01)


def test_fit_second_call_hits_the_cache(fitted, digits, monkeypatch):
    vae, report, cache = fitted

    def no_training(*args, **kwargs):
        raise AssertionError("fit_vae trained again instead of loading the cache")

    monkeypatch.setattr(fit_module, "_train", no_training)
    again, again_report = fit_vae(*digits, tiny_fit_config(), cache, progress=False)
    assert again_report["cached"] is True
    assert again.identity() == vae.identity()
    assert again_report["test_psnr"] == report["test_psnr"]
    for (name, p), q in zip(vae.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(p, q), name
    # The cache directory is also an ordinary load_vae spec.
    assert load_vae(str(cache / report["hash"][:16])).identity() == vae.identity()


def test_fit_same_seed_same_weights_other_seed_or_data_other_entry(fitted, digits, tmp_path):
    vae, report, _ = fitted
    same, same_report = fit_vae(*digits, tiny_fit_config(), tmp_path / "a", progress=False)
    assert same_report["cached"] is False and same_report["hash"] == report["hash"]
    for (name, p), q in zip(vae.model.state_dict().items(), same.model.state_dict().values()):
        assert torch.equal(p, q), name
    data = data_identity(digits[0])
    assert fit_module.fit_hash(tiny_fit_config(seed=1), data) != report["hash"]
    assert fit_module.fit_hash(tiny_fit_config(checkpoint_every=5), data) == report["hash"]  # same weights
    fewer = fit_module.fit_hash(tiny_fit_config(), data_identity(digits[0].subset(range(500))))
    assert fewer != report["hash"]


def test_fit_resumes_from_a_checkpoint_to_the_same_weights(fitted, digits, tmp_path, monkeypatch):
    vae, uninterrupted, _ = fitted
    config = tiny_fit_config(checkpoint_every=15)  # mid-way between two logged points (log_every 10)
    writes = []
    real_save = fitting.save_state

    def save_then_crash(path, state):
        real_save(path, state)
        writes.append(path)
        if len(writes) == 1:
            raise KeyboardInterrupt  # stop after the step-15 checkpoint

    monkeypatch.setattr(fitting, "save_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        fit_vae(*digits, config, tmp_path, progress=False)
    monkeypatch.setattr(fitting, "save_state", real_save)
    resumed, report = fit_vae(*digits, config, tmp_path, progress=False)
    assert report["steps"] == 30
    # The loss logged over the steps on both sides of the resume point is the uninterrupted fit's.
    assert report["loss_curve"] == uninterrupted["loss_curve"]
    for (name, p), q in zip(vae.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fit_nan_loss_is_an_error_with_advice(tmp_path):
    images = torch.rand(8, 1, 8, 8)
    images[0, 0, 0, 0] = float("nan")
    data = ImageSet(images, torch.zeros(8, dtype=torch.long), ["x"], name="nan")
    with pytest.raises(LatentDDError, match="Lower lr"):
        fit_vae(data, data, tiny_fit_config(batch_size=8), tmp_path, progress=False)


# ---------------------------------------------------------------- real TAEF2 weights


@pytest.mark.slow
@pytest.mark.skipif(
    not (TAEF2_DIR / "taef2_encoder.pth").is_file(),
    reason=f"TAEF2 weights not found in {TAEF2_DIR} (set LATENTDD_TAEF2 to their directory)",
)
class TestTAEF2Weights:
    def test_architecture_facts(self):
        vae = load_vae(str(TAEF2_DIR))
        assert vae.latent_shape == (32, 8, 8) and vae.input_shape == (3, 64, 64)
        assert sum(p.numel() for p in vae.encoder.parameters()) == 1_338_528
        assert sum(p.numel() for p in vae.decoder.parameters()) == 1_338_499
        assert vae.scaling_factor == 1.0

    def test_fashion_mnist_round_trip_psnr(self):
        try:
            test = load_dataset("fashion_mnist", "test")
        except LatentDDError as err:
            pytest.skip(f"Fashion-MNIST is not installed: {err}")
        vae = load_vae(str(TAEF2_DIR))
        images = test.images[:64]  # (64, 1, 28, 28)
        adapter = VAEInputAdapter.for_vae(vae, test.image_shape)
        vae_images = adapter.to_vae(images)  # (64, 3, 64, 64)
        with torch.no_grad():
            latents = vae.encode(vae_images)
            decoded = vae.decode(latents)
        assert psnr(decoded, vae_images) >= 25.0  # measured 29.7 dB
        assert psnr(adapter.from_vae(decoded), images) >= 25.0  # measured 29.9 dB at 28 px gray
        assert 0.5 < latents.std().item() < 1.2  # measured 0.80: TAEF2 needs no scaling
