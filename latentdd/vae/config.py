"""The latent space a run works in: which VAE, how images reach it, where its caches live."""

from __future__ import annotations

from dataclasses import dataclass, field

from latentdd.config import positive_int, resolved_fields
from latentdd.errors import DataError
from latentdd.vae.fit import FitVAEConfig


@dataclass
class LatentSpaceConfig:
    """Which latent space: the VAE, how images reach it, where caches live."""

    vae: str = "fit"  # fit | pixel | taesd:PATH | DIR | hub id (see `latentdd.vae.VAE_SPEC_HELP`)
    input_size: int | None = None  # side of the VAE's input; None: the VAE's own
    resize: str | None = None  # resize | pad to reach input_size; None: the VAE's default
    cache_dir: str = "~/.cache/latentdd"  # fitted VAEs and latent caches (both keyed by content)
    shard_size: int = 4096
    batch_size: int = 256
    workers: int = 0  # processes decoding images while the VAE encodes (latentdd.latents.cache.CacheConfig)
    fit: dict = field(default_factory=dict)  # FitVAEConfig's fields for vae: fit (missing ones: its defaults)

    def __post_init__(self) -> None:
        # Checked here and completed with the defaults, so that the saved config holds every value used.
        self.fit = resolved_fields(FitVAEConfig, self.fit, "latent.fit")
        if self.resize not in (None, "resize", "pad"):
            raise DataError(f"latent.resize must be resize or pad (or null: the VAE's default); got {self.resize!r}")
        positive_int(self.input_size, "latent.input_size", optional=True)
        positive_int(self.shard_size, "latent.shard_size")
        positive_int(self.batch_size, "latent.batch_size")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise DataError(f"latent.workers must be a non-negative integer; got {self.workers!r}")
