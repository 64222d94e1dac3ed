"""DM: distribution matching with randomly initialised networks (Zhao & Bilen, WACV 2023).

Each iteration draws a FRESH randomly initialised ConvNet and, per class, matches the mean
embedding of a batch of real inputs with the mean embedding of the class's synthetic set
(`bacon_loss.dm_loss`: ||mean(e_syn) - mean(e_real)||^2), both seen through one siamese
DSA draw. No network is trained and there is no CE term, so an iteration costs one
forward pass of the real batch and one forward/backward of the synthetic set per class --
the cheapest matching method.

Reference defaults (DM's public code): real batch 256 per class, SGD lr 1.0 momentum 0.5 on
the synthetic images (normalised pixels there), init from real images, all six DSA groups,
20,000 iterations, ConvNet-3 width 128 with instance norm.

lr applies to the variables as stored. In pixel space (`--vae pixel`) those are [0, 1]
pixels that the embedding normalises by the real data's std s, so lr here is the
reference's lr times s**2 (Fashion-MNIST: s = 0.353, the reference's 1.0 is 0.125 here);
in a VAE's latent space it is a step on the scaled latents. Choose it on the val split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from latentdd.distill.bacon_loss import dm_loss
from latentdd.distill.base import register_distiller
from latentdd.distill.matching import MatchingDistiller, Net, Run


@register_distiller
@dataclass
class DMDistiller(MatchingDistiller):
    """Mean embedding matching through a fresh random ConvNet each iteration (module docstring)."""

    name: ClassVar[str] = "dm"

    embedding: str = "pixel"
    lr: float = 1.0

    def class_loss(self, net: Net, e_syn: torch.Tensor, e_real: torch.Tensor, run: Run, k: int,
                   it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        match = dm_loss(e_syn, e_real)
        return match, {"match": match}
