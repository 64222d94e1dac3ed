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

weights (not in DM): "uniform" is DM's plain mean. "voronoi" gives each synthetic point the
mass of its Voronoi cell among the class's real latents, measured once on the initial set
(with init "kmeans": the k-means centroids' DDOQ weights). The loss matches the weighted
synthetic mean, and the evaluator trains with the same weights (`use_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from latentdd.distill.bacon_loss import dm_loss
from latentdd.config import PositiveFloat
from latentdd.distill.base import class_points, register_distiller
from latentdd.distill.matching import EMBEDDINGS, MatchingDistiller, Net, Run
from latentdd.distill.quantize import nearest_centroid, voronoi_masses
from latentdd.errors import DataError
from latentdd.latents.types import Latents

WEIGHTS = ("uniform", "voronoi")


@register_distiller
@dataclass
class DMDistiller(MatchingDistiller):
    """Mean embedding matching through a fresh random ConvNet each iteration (module docstring)."""

    name: ClassVar[str] = "dm"
    class_terms: ClassVar[bool] = True

    embedding: Literal[EMBEDDINGS] = "pixel"
    lr: PositiveFloat = 1.0
    weights: Literal[WEIGHTS] = "uniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights == "voronoi" and self.factor > 1:
            raise DataError("dm weights 'voronoi' weighs whole latents, and factorization splits each into "
                            f"factor**2 images: use factor 1 (now {self.factor}) or weights 'uniform'")

    def initial_weights(self, latents: Latents, members: list[np.ndarray], syn: torch.Tensor) -> torch.Tensor | None:
        if self.weights == "uniform":
            return None
        ipc = len(syn) // len(members)
        masses = []
        for k, idx in enumerate(members):
            assign, _ = nearest_centroid(class_points(latents, idx), syn[k * ipc : (k + 1) * ipc].reshape(ipc, -1).numpy())
            masses.append(voronoi_masses(assign, ipc))
        return torch.from_numpy(np.concatenate(masses)).to(torch.float32)

    def class_loss(self, net: Net, e_syn: torch.Tensor, e_real: torch.Tensor, run: Run, k: int,
                   it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = None if run.weights is None else run.weights[k * run.ipc : (k + 1) * run.ipc]
        match = dm_loss(e_syn, e_real, weights)
        return match, {"match": match}
