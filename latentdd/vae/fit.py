"""Fit a small diffusers AutoencoderKL to a dataset: the VAE behind `--vae fit`.

The fitted VAE is cached by content: its directory `cache_dir/<hash>` is named by the
`cachekey.content_key` of (FIT_VERSION, the config, the dataset's name, image shape and
number of images, and a checksum of the training images), so a second call with the same config
and data loads it instantly, and any change trains a new one (`latentdd.cache.cached`). The directory is what
`save_pretrained` writes plus `latentdd_fit.json` (config, data identity, report); it is
written under a temporary name and renamed, so a crash never leaves a half-written VAE.
Training checkpoints to `cache_dir/.partial-<hash>/` and resumes from there.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from latentdd.cache import cached, write_folder
from latentdd.cachekey import content_key
from latentdd.config import Checked, NonNegativeFloat, PositiveFloat, PositiveInt
from latentdd.data.base import LabelledImages, data_identity
from latentdd.errors import DataError, LatentDDError
from latentdd.fitting import check_blocks, fit_loop
from latentdd.io import atomic_write_json, read_json_fields
from latentdd.vae.base import VAEInputAdapter
from latentdd.vae.diffusers_kl import DiffusersKL

# Bump when a change to this file makes the same config train a different VAE.
FIT_VERSION = 1
FIT_META_FILE = "latentdd_fit.json"
_CHECKPOINT_FILE = "checkpoint.safetensors"  # latentdd.checkpoint, written by latentdd.fitting.fit_loop
# Fields that change neither the weights (a resumed fit equals an uninterrupted one) nor the data.
_NOT_HASHED = ("checkpoint_every", "log_every")


@dataclass
class FitVAEConfig(Checked):
    """How to fit the VAE. Defaults: a 0.24M-parameter AutoencoderKL, 28 px images zero-padded
    to 32, 4x8x8 latents (784 pixels -> 256 numbers), 1500 steps of 64 images (1.6 epochs of
    Fashion-MNIST). Measured on one CPU thread beside another busy job: 0.33 s per step,
    so about 8 minutes; halfway (step 750) the Fashion-MNIST test PSNR was 23.2 dB at 28 px.

    image_size: side of the VAE's input (dataset images are padded or resized to it); must
        be a multiple of 2 ** (len(block_out_channels) - 1).
    resize: "pad" or "resize", how dataset images reach image_size (VAEInputAdapter).
    block_out_channels, layers_per_block, latent_channels, norm_num_groups: the
        AutoencoderKL's; len(block_out_channels) - 1 downsamplings (3 blocks: 32 -> 8).
    max_steps: optimiser steps; epochs, when set, overrides it (ceil(epochs * N / batch_size)).
    batch_size, lr: Adam's. lr_schedule: "constant", or "cosine" decay from lr to lr / 10
        over the run.
    kl_weight: loss = MSE(pixels in [0, 1]) + kl_weight * KL per latent element.
    seed: weights, data order and posterior samples all follow from it.
    checkpoint_every: steps between resumable checkpoints (0: never).
    log_every: steps averaged into each point of the report's loss curve.
    scale_images: training images used to measure the latent std for scaling_factor.
    """

    section: ClassVar[str] = "latent.fit"

    image_size: PositiveInt = 32
    resize: Literal["pad", "resize"] = "pad"
    block_out_channels: tuple[PositiveInt, ...] = (16, 32, 32)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: PositiveInt = 8
    max_steps: PositiveInt = 1500
    epochs: float | None = None
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 3e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    kl_weight: NonNegativeFloat = 1e-4
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50
    scale_images: int = 10000

    def __post_init__(self) -> None:
        super().__post_init__()
        self.block_out_channels = check_blocks(self.block_out_channels, self.norm_num_groups, self.section)
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size % factor:
            blocks = len(self.block_out_channels)
            raise DataError(f"latent.fit.image_size {self.image_size} must be a multiple of {factor} for {blocks} "
                            "blocks")

    def diffusers_config(self, channels: int) -> dict:
        """AutoencoderKL(**...) arguments for `channels`-channel images."""
        n = len(self.block_out_channels)
        return {
            "in_channels": channels,
            "out_channels": channels,
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": self.image_size,
            "scaling_factor": 1.0,  # replaced by 1 / std of the training latents after fitting
        }


def fit_vae(
    train: LabelledImages,
    test: LabelledImages,
    config: FitVAEConfig,
    cache_dir: Path | str,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[DiffusersKL, dict]:
    """Fit (or load from the cache) a VAE to `train`; returns (the frozen VAE, its report).

    train, test: float32 (N, C, H, W) images in [0, 1], C in (1, 3); the VAE takes C channels.
    The report holds the config, data identity, loss curve, seconds, the latent std it
    scaled by, and `test_psnr`: 10 log10(1 / MSE) over the whole test split, in [0, 1] at
    the dataset's own image shape (VAE input, encode mean, decode, back through the adapter).
    `report["cached"]` says whether it was loaded rather than trained.
    """
    cache_dir = Path(cache_dir).expanduser()
    if not len(train):
        raise DataError("cannot fit a VAE to an empty dataset")
    channels = train.load([0]).shape[1]
    if channels not in (1, 3):
        raise DataError(f"the fitted VAE takes 1- or 3-channel images; got {channels} channels")
    data = data_identity(train)
    key = fit_hash(config, data)

    def load(entry: Path) -> tuple[DiffusersKL, dict] | None:
        if not (entry / FIT_META_FILE).is_file():
            return None
        # A damaged entry is a LatentDDError that says to delete it (as for --vae DIR), not fitted again.
        return load_fitted(entry).to(device), {**_read_meta(entry, report=True)["report"], "cached": True}

    image_shape = tuple(data["image_shape"])
    adapter = VAEInputAdapter(image_shape, config.image_size, image_shape[0], config.resize)
    partial = cache_dir / f".partial-{key[:16]}"

    def build() -> tuple[torch.nn.Module, dict]:
        """Train -> (the AutoencoderKL, scaled to unit latent std; its report, less what the stored VAE measures)."""
        start = time.perf_counter()
        fitted, curve = _train(train, adapter, config, partial / _CHECKPOINT_FILE, progress, device)
        train_seconds = time.perf_counter() - start
        mean, std = latent_stats(fitted, train, adapter, config.scale_images)
        fitted.model.register_to_config(scaling_factor=1.0 / std)
        return fitted.model, {
            "name": f"fit:{key[:16]}",
            "hash": key,
            "cached": False,
            "steps": curve[-1][0],
            "train_seconds": round(train_seconds, 1),
            "final_loss": curve[-1][1] if curve else None,
            "loss_curve": curve,
            "test_psnr": None,  # these three: measured on the VAE as it loads (save)
            "test_images": len(test),
            "latent_mean_unscaled": mean,
            "latent_std_unscaled": std,
            "scaling_factor": 1.0 / std,
            "num_parameters": None,
            "latent_shape": None,
            "config": dataclasses.asdict(config),
            "data": data,
        }

    def save(entry: Path, built: tuple[torch.nn.Module, dict]) -> tuple[DiffusersKL, dict]:
        model, report = built
        meta = {
            "fit_version": FIT_VERSION,
            "name": report["name"],
            "hash": key,
            "config": report["config"],
            "data": data,
            "input": {"image_size": config.image_size, "channels": image_shape[0], "resize": config.resize},
        }

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            atomic_write_json(tmp / FIT_META_FILE, meta)
            vae = load_fitted(tmp).to(device)
            report.update(test_psnr=round(reconstruction_psnr(vae, test, adapter), 3),
                          num_parameters=vae.num_parameters, latent_shape=list(vae.latent_shape))
            atomic_write_json(tmp / FIT_META_FILE, {**meta, "report": report})

        write_folder(entry, write, FIT_META_FILE)
        shutil.rmtree(partial, ignore_errors=True)
        return load_fitted(entry).to(device), report

    return cached(cache_dir / key[:16], build, load=load, save=save, otherwise="the VAE is fitted again")[0]


def load_fitted(directory: Path | str, *, input_size: int | None = None) -> DiffusersKL:
    """The fitted VAE saved in `directory` (a fit_vae cache entry), named "fit:<hash>"."""
    directory = Path(directory)
    meta = _read_meta(directory)
    try:
        return DiffusersKL.from_pretrained(
            str(directory),
            local_files_only=True,
            name=meta["name"],
            input_size=input_size or meta["input"]["image_size"],
            input_resize=meta["input"]["resize"],
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise LatentDDError(
            f"cannot load the fitted VAE in {directory}: {err}; delete the directory to fit it again"
        ) from err


def _read_meta(directory: Path, *, report: bool = False) -> dict:
    """The FIT_META_FILE of a fit_vae cache entry, with the fields a load reads (and the report, if asked);
    LatentDDError if it is missing or damaged."""
    fields = {"name": str, "input.image_size": int, "input.resize": str} | ({"report": dict} if report else {})
    meta = read_json_fields(directory / FIT_META_FILE, fields)
    if meta is None:
        raise LatentDDError(f"{directory} is not a fitted VAE latentdd can read: its {FIT_META_FILE} is missing or "
                            f"damaged (it must hold {', '.join(fields)}); delete the directory to fit it again")
    return meta


def fit_hash(config: FitVAEConfig, data: dict) -> str:
    """sha256 naming the cache entry: what makes two fits the same (the resolved config and the images)."""
    return content_key(
        "vae-fit",
        fit_version=FIT_VERSION,
        config={k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_HASHED},
        **{k: data[k] for k in ("name", "num_images", "image_shape", "images_sha256")},
    )


def _train(
    train: LabelledImages,
    adapter: VAEInputAdapter,
    config: FitVAEConfig,
    checkpoint: Path,
    progress: bool,
    device: str | torch.device,
) -> tuple[DiffusersKL, list[list[float]]]:
    """Train and return (the trainable wrapped AutoencoderKL in eval mode, [[step, mean loss], ...])."""

    def build() -> tuple[DiffusersKL, torch.optim.Optimizer]:
        vae = DiffusersKL.from_config(config.diffusers_config(adapter.input_channels), name="fitting",
                                      seed=config.seed, input_resize=config.resize, trainable=True).to(device)
        vae.model.train()
        return vae, torch.optim.Adam(vae.model.parameters(), lr=config.lr)

    def loss(vae: DiffusersKL, index: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        images = adapter.to_vae(train.load(index)).to(device)  # (B, C, S, S)
        posterior = vae.posterior(images)
        z = posterior.sample(generator=draws)  # (B, c, h, w)
        recon = (vae.model.decode(z).sample + 1) / 2
        kl = posterior.kl().mean() / z[0].numel()  # per latent element
        return F.mse_loss(recon, images) + config.kl_weight * kl

    vae, curve = fit_loop(
        config, len(train), build, loss, checkpoint=checkpoint,
        state=lambda vae: {"model": vae.model.state_dict()},
        load=lambda vae, state: vae.model.load_state_dict(state["model"]),
        diverged=lambda value, step: (
            f"fitting the VAE diverged: loss is {value} at step {step}. Lower lr (now {config.lr}) "
            f"or kl_weight (now {config.kl_weight}), and check the training images are finite and in [0, 1]"),
        desc="fit VAE", progress=progress)
    vae.model.eval()
    return vae, curve


@torch.no_grad()
def latent_stats(
    vae: DiffusersKL, data: LabelledImages, adapter: VAEInputAdapter, max_images: int
) -> tuple[float, float]:
    """(mean, std) over all elements of the unscaled posterior means of the first `max_images` images."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, min(len(data), max_images), 512):
        indices = torch.arange(start, min(start + 512, len(data), max_images))
        z = vae.posterior(adapter.to_vae(data.load(indices)).to(vae.device)).mode().double()
        total, total_sq, count = total + z.sum().item(), total_sq + (z**2).sum().item(), count + z.numel()
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean**2, 1e-12))


@torch.no_grad()
def reconstruction_psnr(vae, data: LabelledImages, adapter: VAEInputAdapter, batch_size: int = 512) -> float:
    """10 log10(1 / MSE) of encode(mean) -> decode round trips of `data`, in [0, 1] at its own shape."""
    sq, count = 0.0, 0
    for images, _ in data.iter_batches(batch_size):
        recon = adapter.from_vae(vae.decode(vae.encode(adapter.to_vae(images)))).cpu()
        sq += ((recon - images) ** 2).double().sum().item()
        count += images.numel()
    return 10 * math.log10(1.0 / max(sq / count, 1e-12))
