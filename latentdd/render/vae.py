"""The `vae` decoder: each synthetic latent decoded directly (cheap; quantization
centroids come out as blurry "mean" images)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdd.data.base import SyntheticImages
from latentdd.latents.types import SyntheticLatents
from latentdd.vae.base import LatentVAE, VAEInputAdapter


@dataclass
class VAEDecoder:
    """Decode latents with the VAE, then bring the images back to the dataset's shape."""

    vae: LatentVAE
    adapter: VAEInputAdapter
    batch_size: int = 256
    name = "vae"

    @torch.no_grad()
    def render(self, synthetic: SyntheticLatents, *, seed: int = 0, first_index: int = 0) -> SyntheticImages:
        """(M, c, h, w) latents -> (M, C, H, W) images in [0, 1]; deterministic (seed and first_index unused:
        each latent's image depends on it alone)."""
        parts = [
            self.adapter.from_vae(self.vae.decode(synthetic.latents[i : i + self.batch_size])).cpu()
            for i in range(0, len(synthetic), self.batch_size)
        ]
        return SyntheticImages(
            torch.cat(parts), synthetic.labels.clone(), list(synthetic.class_names),
            weights=synthetic.weights, soft_labels=synthetic.soft_labels,
            meta={"method": {"name": synthetic.method, **synthetic.params}},
        )

    def record(self) -> dict:
        return {"name": self.name, "vae": self.vae.name, "adapter": self.adapter.identity()}

    @classmethod
    def from_config(cls, config, vae: LatentVAE, adapter: VAEInputAdapter, latents, cache_dir, *,
                    progress: bool = True) -> tuple[VAEDecoder, dict]:
        """The decoder of `config` (`latentdd.render.config.DecoderConfig`) -> (decoder, its record)."""
        decoder = cls(vae, adapter, config.batch_size)
        return decoder, decoder.record()

