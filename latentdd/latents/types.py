"""Artifacts of the latent stages: real `Latents` (encoded) and `SyntheticLatents` (distilled)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from latentdd.errors import DataError


def _check_labels(latents: torch.Tensor, labels: torch.Tensor, class_names: list[str], what: str) -> torch.Tensor:
    if latents.ndim != 4:
        raise DataError(f"{what} must be (N, c, h, w); got shape {tuple(latents.shape)}")
    if labels.shape != (latents.shape[0],):
        raise DataError(f"{what} labels must be ({latents.shape[0]},); got {tuple(labels.shape)}")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{what} labels must lie in [0, {len(class_names)})")
    return labels


@dataclass
class Latents:
    """Encoded real images of one split.

    latents: (N, c, h, w) float32, already multiplied by the VAE's scaling factor (and
    shifted by its shift factor), i.e. in the space diffusion models work in.
    labels: (N,) int64. vae: the VAE's identity (name, latent_shape, scaling_factor,
    shift_factor, input image shape), so a cache can refuse a mismatching VAE.
    """

    latents: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    vae: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = _check_labels(self.latents, self.labels, self.class_names, "latents")

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.latents.shape[1:])

    def of_class(self, k: int) -> torch.Tensor:
        """(n_k, c, h, w) latents of class k."""
        return self.latents[self.labels == k]


@dataclass
class SyntheticLatents:
    """Per-class synthetic latents produced by a distiller.

    latents: (M, c, h, w) float32 in the same scaled space as `Latents`; labels: (M,)
    int64; weights: (M,) float32 >= 0 summing to 1 within each class (Voronoi masses for
    quantization, uniform otherwise) or None; method and params: what made them;
    extras: method-specific results (quantization error per class, medoid indices, ...).
    """

    latents: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    method: str
    params: dict = field(default_factory=dict)
    weights: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = _check_labels(self.latents, self.labels, self.class_names, "synthetic latents")
        if self.weights is not None:
            self.weights = torch.as_tensor(self.weights, dtype=torch.float32)
            if self.weights.shape != self.labels.shape:
                raise DataError(f"weights must be ({len(self.labels)},); got {tuple(self.weights.shape)}")

    def __len__(self) -> int:
        return self.latents.shape[0]
