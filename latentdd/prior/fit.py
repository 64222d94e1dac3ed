"""Fit a small class-conditional diffusion model (the "prior") to cached latents.

The prior is a diffusers `UNet2DModel` that predicts the noise added to a scaled latent
(epsilon prediction) given the timestep and the class; it has `num_classes + 1` class
embeddings, the last one being the *null class* that classifier-free guidance uses as
"no label" (training replaces each label by it with probability `label_dropout`).
`latentdd.render.diffusion.DiffusionDecoder` then runs it img2img from synthetic latents.

Caching follows `latentdd.vae.fit`: the entry `cache_dir/<hash16>` is named by the
`cachekey.content_key` of (PRIOR_VERSION, the config minus fields that do not change the weights, the
number / shape / class names of the latents and a checksum of latents and labels). It
holds

    unet/                 UNet2DModel.save_pretrained (the EMA weights)
    scheduler/            DDPMScheduler.save_pretrained (the training noise schedule)
    latentdd_prior.json   config, data identity, report (loss curve, seconds, ...)
    loss_curve.png        the training loss (when matplotlib is installed)

and is written under a temporary name and renamed (`latentdd.cache.write_folder`), so a crash
never leaves half an entry. Training checkpoints to `cache_dir/.partial-<hash16>/` and resumes from there;
every random draw is a function of (seed, epoch) or (seed, step), so a resumed fit ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from latentdd.cache import cached, write_folder
from latentdd.cachekey import content_key, tensor_sha256
from latentdd.checkpoint import StateRejected
from latentdd.config import Checked, Fraction, PositiveFloat, PositiveInt
from latentdd.errors import DataError, LatentDDError
from latentdd.fitting import check_blocks, fit_loop
from latentdd.io import atomic_write_bytes, atomic_write_json, read_json_fields
from latentdd.latents.types import Latents

# Bump when a change to this file makes the same config train a different prior.
PRIOR_VERSION = 2  # 2: diffusers EMAModel (its first update copies the weights)
PRIOR_META_FILE = "latentdd_prior.json"
LOSS_CURVE_FILE = "loss_curve.png"
_CHECKPOINT_FILE = "checkpoint.safetensors"  # latentdd.checkpoint, written by latentdd.fitting.fit_loop
# Fields that change neither the weights (a resumed fit equals an uninterrupted one) nor the data.
_NOT_HASHED = ("checkpoint_every", "log_every")


@dataclass
class FitPriorConfig(Checked):
    """How to fit the prior. Defaults: a 0.70M-parameter UNet2DModel for Fashion-MNIST's
    (4, 8, 8) latents (one 2x downsampling, 8x8 -> 4x4; self-attention at 4x4 and in the
    middle block), 1500 AdamW steps of 64 latents (1.6 epochs of 60k). Measured alone on 2
    CPU cores: 112 s (12.5 steps/s), final loss 0.117; its pure samples are 99% class
    consistent (benchmarks/bench_render.py, strength 1). A 4.0M-parameter
    (64, 128) x 2-layer UNet at batch 128 took 2.5-4 s per step on a busy machine.

    block_out_channels, layers_per_block, attention_head_dim, norm_num_groups: the
        UNet2DModel's; len(block_out_channels) - 1 downsamplings, so the latent height and
        width must be multiples of 2 ** (len(block_out_channels) - 1). The first block is
        a plain ResNet block, the others add self-attention (`attention`: False drops it,
        also in the middle block).
    num_train_timesteps, beta_schedule, beta_start, beta_end: the DDPMScheduler's.
        "scaled_linear" 0.00085 -> 0.012 is the latent-diffusion (Stable Diffusion)
        schedule, so a decoder `strength` means the same noise level as D4M's SD img2img
        (strength 0.7 with 50 steps starts at t = 680, where sqrt(alpha_bar) = 0.31).
        Prediction type: epsilon; x0 is never clipped (latents are not in [-1, 1]).
    label_dropout: probability of replacing a label by the null class (classifier-free
        guidance needs the unconditional model; 0.1 as in DiT / Ho & Salimans).
    max_steps: optimiser steps; epochs, when set, overrides it (ceil(epochs * (N // batch_size))).
    batch_size, lr, weight_decay: AdamW's. lr_schedule: "constant", or "cosine" decay from
        lr to lr / 10 over the run (`latentdd.fitting.lr_factor`). grad_clip: max
        gradient norm (0: none).
    ema_decay: the saved weights are an exponential moving average of the trained ones,
        with decay min(ema_decay, n / (9 + n)) at update n (the first copies the weights) so that
        short fits still move (diffusers' EMAModel without warmup);
        0.995 averages over about the last 200 of the 1500 steps; 0 saves the last weights.
    seed: initial weights, data order, label dropout, timesteps and noise all follow from it.
    checkpoint_every: steps between resumable checkpoints (0: never).
    log_every: steps averaged into each point of the report's loss curve.
    """

    section: ClassVar[str] = "decoder.prior"

    block_out_channels: tuple[PositiveInt, ...] = (32, 64)
    layers_per_block: int = 1
    attention: bool = True
    attention_head_dim: int = 32
    norm_num_groups: PositiveInt = 32
    num_train_timesteps: Annotated[int, Field(ge=2)] = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    label_dropout: Fraction = 0.1
    max_steps: PositiveInt = 1500
    epochs: PositiveFloat | None = None
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: Fraction = 0.995
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        self.block_out_channels = check_blocks(self.block_out_channels, self.norm_num_groups, self.section)
        if self.attention and any(c % self.attention_head_dim for c in self.block_out_channels[1:]):
            raise DataError(
                f"decoder.prior.block_out_channels {self.block_out_channels[1:]} (the attention blocks) must be "
                f"multiples of decoder.prior.attention_head_dim {self.attention_head_dim}"
            )

    @property
    def downsampling(self) -> int:
        """Factor the UNet shrinks the latent by at its lowest level."""
        return 2 ** (len(self.block_out_channels) - 1)

    def unet_config(self, latent_shape: tuple[int, int, int], num_classes: int) -> dict:
        """UNet2DModel(**...) arguments for (c, h, w) latents of `num_classes` classes (+ the null class)."""
        c, h, w = latent_shape
        n = len(self.block_out_channels)
        attn = self.attention
        return {
            "sample_size": h if h == w else [h, w],
            "in_channels": c,
            "out_channels": c,
            "down_block_types": ["DownBlock2D"] + ["AttnDownBlock2D" if attn else "DownBlock2D"] * (n - 1),
            "up_block_types": ["AttnUpBlock2D" if attn else "UpBlock2D"] * (n - 1) + ["UpBlock2D"],
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_num_groups,
            "add_attention": attn,
            "num_class_embeds": num_classes + 1,  # the last index is the null class
        }

    def scheduler_config(self) -> dict:
        """DDPMScheduler(**...) arguments: the training noise schedule."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": "epsilon",
            "clip_sample": False,  # x0 of unit-variance latents is not in [-1, 1]
        }


def fit_prior(
    latents: Latents,
    config: FitPriorConfig,
    cache_dir: Path | str,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
):
    """Fit (or load from the cache) the class-conditional prior; returns (unet, scheduler, report).

    latents: scaled (N, c, h, w) latents with (N,) labels of K = len(class_names) classes.
    unet: a frozen UNet2DModel in eval mode on `device`, eps = unet(x_t, t, class_labels).sample
        with class_labels in [0, K], K the null class. scheduler: the DDPMScheduler it was
        trained with. report: config, data identity, loss curve [[step, mean loss], ...],
        train_seconds, name "prior:<hash16>"; `report["cached"]` says whether it was loaded.
    """
    data = latents_identity(latents)
    key = prior_hash(config, data)
    cache_dir = Path(cache_dir).expanduser()
    partial = cache_dir / f".partial-{key[:16]}"

    def load(entry: Path):
        if not (entry / PRIOR_META_FILE).is_file():
            return None
        # A damaged entry is a LatentDDError that says to delete it, not fitted again.
        unet, scheduler, report = load_prior(entry, device=device)
        return unet, scheduler, {**report, "cached": True}

    def build():
        factor = config.downsampling
        _, h, w = latents.latent_shape
        if h % factor or w % factor:
            raise DataError(
                f"the prior's UNet downsamples {len(config.block_out_channels) - 1} times, so latent height and width "
                f"must be multiples of {factor}; got {h}x{w}. Use fewer block_out_channels"
            )
        start = time.perf_counter()
        unet, scheduler, curve = _train(latents, config, partial / _CHECKPOINT_FILE, progress, device)
        train_seconds = time.perf_counter() - start
        report = {
            "name": f"prior:{key[:16]}",
            "hash": key,
            "cached": False,
            "steps": curve[-1][0],
            "train_seconds": round(train_seconds, 1),
            "final_loss": curve[-1][1],
            "loss_curve": curve,
            "num_parameters": sum(p.numel() for p in unet.parameters()),
            "num_classes": len(latents.class_names),
            "null_class": len(latents.class_names),
            "config": dataclasses.asdict(config),
            "data": data,
        }
        return unet, scheduler, report

    def save(entry: Path, built):
        unet, scheduler, report = built
        meta = {"prior_version": PRIOR_VERSION, "name": report["name"], "hash": key, "config": report["config"],
                "data": data, "report": report}
        write_folder(entry, lambda tmp: _save(tmp, unet, scheduler, meta), PRIOR_META_FILE)
        shutil.rmtree(partial, ignore_errors=True)
        return load_prior(entry, device=device)

    return cached(cache_dir / key[:16], build, load=load, save=save, otherwise="the prior is fitted again")[0]


def load_prior(directory: Path | str, *, device: str | torch.device = "cpu"):
    """(unet, scheduler, report) of the prior saved in `directory` (a fit_prior cache entry)."""
    from diffusers import DDPMScheduler, UNet2DModel

    directory = Path(directory)
    meta = read_json_fields(directory / PRIOR_META_FILE, {"report": dict})
    if meta is None:
        raise LatentDDError(f"{directory} is not a fitted prior latentdd can read: its {PRIOR_META_FILE} is missing or "
                            "damaged (it must hold the fit's report); delete the directory to fit it again")
    try:
        unet = UNet2DModel.from_pretrained(directory, subfolder="unet", local_files_only=True, use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(directory, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise LatentDDError(f"cannot load the prior in {directory}: {err}; delete the directory to fit it again") from err
    return unet.to(device).eval().requires_grad_(False), scheduler, {**meta["report"], "directory": str(directory)}


def latents_identity(latents: Latents) -> dict:
    """Number, shape, class names and sha256 of the latents' float32 and labels' int64 bytes."""
    x = latents.latents
    if len(latents) == 0:
        raise DataError("cannot fit a prior to an empty set of latents")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise DataError(f"{bad} of {len(latents)} latents hold NaN or infinite values; re-encode them")
    if not latents.class_names:
        raise DataError("the latents carry no class names")
    return {
        "num_latents": len(latents),
        "latent_shape": list(latents.latent_shape),
        "class_names": list(latents.class_names),
        "latents_sha256": tensor_sha256(x.detach().float(), latents.labels.long()),
        "vae": latents.vae.get("name", ""),
    }


def prior_hash(config: FitPriorConfig, data: dict) -> str:
    """sha256 naming the cache entry: what makes two fits the same (the resolved config and the latents)."""
    return content_key(
        "prior-fit",
        prior_version=PRIOR_VERSION,
        config={k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_HASHED},
        **{k: data[k] for k in ("num_latents", "latent_shape", "class_names", "latents_sha256")},
    )


def _train(latents: Latents, config: FitPriorConfig, checkpoint: Path, progress: bool, device):
    """Train; returns (EMA UNet in eval mode, DDPMScheduler, [[step, mean loss], ...])."""
    from diffusers import DDPMScheduler, UNet2DModel

    x_all = latents.latents.float()  # (N, c, h, w), stays on the CPU; batches move
    y_all = latents.labels
    null = len(latents.class_names)
    scheduler = DDPMScheduler(**config.scheduler_config())

    def build():
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global RNG left alone
            torch.manual_seed(config.seed)
            unet = UNet2DModel(**config.unet_config(latents.latent_shape, null)).to(device)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return (unet.train(), _ema(unet, config.ema_decay)), optimizer

    def load(parts, state: dict) -> None:
        unet, ema = parts
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        ema.to(device)
        if [p.shape for p in ema.shadow_params] != [p.shape for p in unet.parameters()]:
            raise StateRejected("its EMA weights do not fit the UNet")

    def loss(parts, index: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        unet, _ = parts
        x0, labels = x_all[index], y_all[index]  # (B, c, h, w), (B,)
        # All draws of a step come from (seed, step), on the CPU, so they do not depend on the device.
        dropped = torch.rand(len(index), generator=draws) < config.label_dropout
        labels = torch.where(dropped, null, labels)
        t = torch.randint(0, config.num_train_timesteps, (len(index),), generator=draws)
        noise = torch.randn(x0.shape, generator=draws)  # (B, c, h, w)
        x0, labels, t, noise = x0.to(device), labels.to(device), t.to(device), noise.to(device)
        noisy = scheduler.add_noise(x0, noise, t)  # (B, c, h, w)
        return F.mse_loss(unet(noisy, t, class_labels=labels).sample.float(), noise)

    def update(parts, optimizer: torch.optim.Optimizer) -> None:
        unet, ema = parts
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimizer.step()
        ema.step(unet.parameters())

    (unet, ema), curve = fit_loop(
        config, len(latents), build, loss, checkpoint=checkpoint, update=update, load=load,
        state=lambda parts: {"model": parts[0].state_dict(), "ema": parts[1].state_dict()},
        diverged=lambda value, step: (
            f"fitting the prior diverged: loss is {value} at step {step}. Lower lr (now {config.lr}) "
            "and check that the latents are scaled (about unit variance)"),
        desc="fit prior", progress=progress)
    ema.copy_to(unet.parameters())  # UNet2DModel has no buffers, so its parameters are all there is to average
    return unet.eval().requires_grad_(False), scheduler, curve


def _ema(unet: torch.nn.Module, decay: float):
    """diffusers' EMAModel of `unet`'s parameters: its n-th update (n from 1) averages with decay
    min(decay, n / (9 + n)), except the first, which copies the weights (decay 0)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(unet.parameters(), decay=decay, use_ema_warmup=False)


def _save(directory: Path, unet, scheduler, meta: dict) -> None:
    unet.save_pretrained(directory / "unet")
    scheduler.save_pretrained(directory / "scheduler")
    png = loss_curve_png(meta["report"]["loss_curve"], title=meta["name"])
    if png is not None:
        atomic_write_bytes(directory / LOSS_CURVE_FILE, png)
    atomic_write_json(directory / PRIOR_META_FILE, meta)  # last: its presence marks a complete entry


def loss_curve_png(curve: list[list[float]], *, title: str = "") -> bytes | None:
    """PNG bytes of the loss against the step (log scale), or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    # A bare Figure, not pyplot: no global figure state and no GUI backend.
    figure = Figure(figsize=(5, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps, losses = zip(*curve)
    axes.plot(steps, losses, marker="." if len(curve) < 30 else None)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("epsilon MSE")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
