"""Boundary samples: a set's latents moved toward other classes' regions, so the teacher's soft labels of their
images carry more than their own class (issue 34, "boundary samples the latent space makes possible").

Start points: per class, its k-means centroids ("kmeans", as the kmeans distiller) or random real latents
("random"). Then one of two moves, each latent's own, through the decoder and the teacher:

- "entropy": `steps` steps of normalised gradient ascent on the teacher's predictive entropy of the decoded
  image, z <- z + lr * g / ||g|| (||.|| over the latent), lr in the latents' units;
- "interpolate": toward the nearest real latent (in the latent space, among `candidates` drawn from that class) of
  the class the teacher finds most likely after the latent's own, z <- (1 - alpha) z + alpha z_other.

With `keep_class` (default) a move is undone for a latent whose image the teacher no longer puts in its own class
(entropy: the latent keeps its last step that did), so every stored image stays its label's. Whether boundary
samples help under a teacher's labels is a measurement (results/teacher_table_fashion_mnist), not an assumption.
The extras record the teacher's mean entropy and own-class probability before and after, per class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.config import PositiveFloat, PositiveInt, NonNegativeInt, Probability
from latentdd.distill.base import (CheckedParams, DistillContext, assemble, check_distill_input, class_points,
                                   class_seeds, register_distiller, uniform_weights)
from latentdd.distill.quantize import KMeansDistiller, quantization_error
from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents

MOVES = ("entropy", "interpolate")
STARTS = ("kmeans", "random")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, K) logits -> (B,) entropy of their softmax, in nats."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)


@register_distiller
@dataclass
class BoundaryDistiller(CheckedParams):
    """A class's k-means centroids (or random real latents) moved toward other classes (module docstring)."""

    name: ClassVar[str] = "boundary"
    uses_context: ClassVar[bool] = True
    uses_teacher: ClassVar[bool] = True

    start: Literal[STARTS] = "kmeans"
    move: Literal[MOVES] = "entropy"
    steps: NonNegativeInt = 10  # entropy: gradient steps
    lr: PositiveFloat = 0.1  # entropy: step length in the latents' units
    alpha: Probability = 0.3  # interpolate: the share of the way to the other class's latent
    candidates: PositiveInt = 1000  # interpolate: real latents per class the nearest is looked for among
    keep_class: bool = True  # undo a move that takes an image out of its class (in the teacher's eyes)

    def distill(self, latents: Latents, ipc: int, *, seed: int, context: DistillContext | None = None) -> SyntheticLatents:
        context = context or DistillContext()
        members = check_distill_input(latents, ipc, seed)
        if context.teacher is None or context.decode is None:
            raise DataError("boundary moves latents by what a teacher sees of their images: pass "
                            "DistillContext(decode=..., teacher=...) (latentdd distill and run give both)")
        if self.start == "kmeans":
            z0 = KMeansDistiller().distill(latents, ipc, seed=seed).latents.to(torch.float32)
        else:
            picks = [np.sort(np.random.default_rng(class_seeds(seed, k)[0]).choice(idx, ipc, replace=False))
                     for k, idx in enumerate(members)]
            z0 = latents.latents_at(np.concatenate(picks)).to(torch.float32)
        labels = torch.arange(len(members)).repeat_interleave(ipc)
        teacher, decode = context.teacher, context.decode
        with torch.no_grad():
            before = teacher(decode(z0).clamp(0, 1))
        z = self._entropy(z0, labels, teacher, decode) if self.move == "entropy" else \
            self._interpolate(z0, before, labels, latents, members, seed, teacher, decode)
        with torch.no_grad():
            after = teacher(decode(z).clamp(0, 1))
        per_class = [z[k * ipc : (k + 1) * ipc].reshape(ipc, -1).numpy() for k in range(len(members))]

        def by_class(values: torch.Tensor) -> list[float]:
            return [round(float(values[k * ipc : (k + 1) * ipc].mean()), 6) for k in range(len(members))]

        own = lambda logits: F.softmax(logits, 1).gather(1, labels[:, None])[:, 0]  # noqa: E731
        extras = {"teacher": teacher.summary(),
                  "teacher_entropy": {"before": by_class(entropy(before)), "after": by_class(entropy(after))},
                  "teacher_own_class_probability": {"before": by_class(own(before)), "after": by_class(own(after))},
                  "teacher_keeps_class": float((after.argmax(1) == labels).float().mean()),
                  "latent_shift": round(float((z - z0).flatten(1).norm(dim=1).mean()), 6),
                  "quantization_error": [quantization_error(class_points(latents, idx), p)
                                         for idx, p in zip(members, per_class)]}
        return assemble(latents, per_class, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed},
                        weights=uniform_weights(len(members), ipc), extras=extras)

    def _entropy(self, z0: torch.Tensor, labels: torch.Tensor, teacher, decode) -> torch.Tensor:
        """`steps` normalised ascent steps on the teacher's entropy; with keep_class a latent keeps its last step
        whose image the teacher still puts in its own class."""
        z, kept = z0.clone(), z0.clone()
        for _ in range(self.steps):
            z = z.detach().requires_grad_(True)
            logits = teacher.model(teacher._inputs(decode(z).clamp(0, 1)))
            (grad,) = torch.autograd.grad(entropy(logits).sum(), z)
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (z.dim() - 1))
            z = (z + self.lr * step).detach()
            if self.keep_class:
                with torch.no_grad():
                    ok = teacher(decode(z).clamp(0, 1)).argmax(1) == labels
                kept[ok] = z[ok]
                z = kept.clone()
        return z if not self.keep_class else kept

    def _interpolate(self, z0: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, latents: Latents,
                     members: list[np.ndarray], seed: int, teacher, decode) -> torch.Tensor:
        """Each latent (1 - alpha) of the way from itself to the nearest real latent of its runner-up class."""
        runner_up = logits.scatter(1, labels[:, None], float("-inf")).argmax(1)  # the likeliest other class
        pools = {}
        z = z0.clone()
        for i, j in enumerate(runner_up.tolist()):
            if j not in pools:
                idx = members[j]
                rng = np.random.default_rng(class_seeds(seed, j, 3)[2])
                pools[j] = torch.from_numpy(class_points(latents, np.sort(rng.choice(
                    idx, min(self.candidates, len(idx)), replace=False))))
            pool = pools[j]
            nearest = pool[(pool - z0[i].flatten()).square().sum(1).argmin()].view_as(z0[i])
            z[i] = (1 - self.alpha) * z0[i] + self.alpha * nearest
        if self.keep_class:
            with torch.no_grad():
                lost = teacher(decode(z).clamp(0, 1)).argmax(1) != labels
            z[lost] = z0[lost]
        return z
