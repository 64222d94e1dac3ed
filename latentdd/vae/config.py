"""The latent space a run works in: which VAE, how images reach it, where its caches live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from latentdd.config import Checked, NonNegativeInt, PositiveInt, resolved_fields
from latentdd.vae.fit import FitVAEConfig


@dataclass
class LatentSpaceConfig(Checked):
    """Which latent space: the VAE, how images reach it, where caches live."""

    section: ClassVar[str] = "latent"

    vae: str = "fit"  # fit | pixel | taesd:PATH | DIR | hub id (see `latentdd.vae.VAE_SPEC_HELP`)
    input_size: PositiveInt | None = None  # side of the VAE's input; None: the VAE's own
    resize: Literal["resize", "pad"] | None = None  # how to reach input_size; None: the VAE's default
    cache_dir: str = "~/.cache/latentdd"  # fitted VAEs and latent caches (both keyed by content)
    shard_size: PositiveInt = 4096
    batch_size: PositiveInt = 256
    workers: NonNegativeInt = 0  # processes decoding images while the VAE encodes (latentdd.latents.cache.CacheConfig)
    fit: dict = field(default_factory=dict)  # FitVAEConfig's fields for vae: fit (missing ones: its defaults)

    def __post_init__(self) -> None:
        # Checked here and completed with the defaults, so that the saved config holds every value used.
        self.fit = resolved_fields(FitVAEConfig, self.fit)
        super().__post_init__()
