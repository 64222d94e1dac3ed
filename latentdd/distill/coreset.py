"""Coreset distillers: pick IPC real latents per class (random, herding, k-center).

Each returns real latents with uniform weights 1/IPC, and in extras the chosen latents'
global indices (into the `Latents`, in selection order within each class) and the
quantization error of the chosen set per class (`quantize.quantization_error`, so
coresets and quantizers compare on one scale). Herding and k-center work in Euclidean
geometry on the flattened latents (n_k, c*h*w), in float64, and are deterministic: ties
go to the lowest index into the class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from latentdd.data.select import random_per_class
from latentdd.distill.base import assemble, check_distill_input, class_points, register_distiller, uniform_weights
from latentdd.distill.quantize import quantization_error
from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents


def _check_k(points: np.ndarray, k: int) -> np.ndarray:
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise DataError(f"need points (n, d) and 1 <= k <= n; got shape {x.shape} and k={k}")
    return x


def herding_order(points: np.ndarray, k: int) -> np.ndarray:
    """Herding (Welling 2009, as in the DC-benchmark): k rows whose running mean tracks the mean.

    points (n, d), 1 <= k <= n -> (k,) int64 distinct row indices in selection order. Step
    t = 1..k picks, among rows not yet chosen, the x minimising
    || mu - (S_{t-1} + x) / t ||, mu the mean of all rows and S_{t-1} the sum of the rows
    chosen so far; ties go to the lowest row index.
    """
    x = _check_k(points, k)
    mu = x.mean(axis=0)
    x_sq = np.einsum("nd,nd->n", x, x)
    chosen = np.empty(k, dtype=np.int64)
    taken = np.zeros(len(x), dtype=bool)
    total = np.zeros(x.shape[1])
    for t in range(1, k + 1):
        residual = t * mu - total  # what the next row should be for the running mean to hit mu
        score = x_sq - 2.0 * (x @ residual)  # ||residual - x||^2 - ||residual||^2, (n,)
        score[taken] = np.inf
        chosen[t - 1] = i = int(score.argmin())
        taken[i] = True
        total += x[i]
    return chosen


def kcenter_order(points: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center (farthest-point traversal): k rows covering the class.

    points (n, d), 1 <= k <= n -> (k,) int64 distinct row indices in selection order. The
    first is the row nearest the mean (a deterministic start at the class's centre,
    instead of a random row); each next one is the row farthest (Euclidean) from its
    nearest chosen row. Ties go to the lowest row index; once every row coincides with a
    chosen one (duplicates), the remaining picks are the lowest unchosen indices.
    """
    x = _check_k(points, k)
    x_sq = np.einsum("nd,nd->n", x, x)

    def sqdist_to(c: np.ndarray) -> np.ndarray:  # (n,) squared distances to c, clipped at 0
        return np.maximum(x_sq - 2.0 * (x @ c) + c @ c, 0.0)

    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = int(sqdist_to(x.mean(axis=0)).argmin())
    nearest = sqdist_to(x[chosen[0]])  # squared distance of each row to the chosen set
    nearest[chosen[0]] = -1.0  # chosen rows are never picked again
    for t in range(1, k):
        chosen[t] = i = int(nearest.argmax())
        nearest = np.minimum(nearest, sqdist_to(x[i]))
        nearest[chosen[: t + 1]] = -1.0
    return chosen


def _coreset(latents: Latents, members: list[np.ndarray], rows_per_class: list[np.ndarray], *,
             method: str, params: dict, classes: list[int] | None = None) -> SyntheticLatents:
    """Chosen rows (into each class) -> SyntheticLatents with uniform weights and indices in extras."""
    out, extras = [], {"indices": [], "quantization_error": []}
    for idx, rows in zip(members, rows_per_class):
        x = class_points(latents, idx)
        out.append(x[rows])
        extras["indices"] += idx[rows].tolist()
        extras["quantization_error"].append(quantization_error(x, x[rows]))
    ipc = len(rows_per_class[0])
    return assemble(latents, out, method=method, params=params, weights=uniform_weights(len(members), ipc),
                    extras=extras, classes=classes)


@register_distiller
@dataclass
class RandomDistiller:
    """IPC latents per class drawn uniformly without replacement (`random_per_class`,
    torch.Generator().manual_seed(seed)): the same draw as the pixel-space random baseline."""

    name: ClassVar[str] = "random"
    splits_by_class: ClassVar[bool] = True  # the draw of every class is made, then a share's classes kept

    def distill(self, latents: Latents, ipc: int, *, seed: int, classes: list[int] | None = None) -> SyntheticLatents:
        members = check_distill_input(latents, ipc, seed, classes)
        chosen = random_per_class(latents.labels, ipc, len(latents.class_names),
                                  torch.Generator().manual_seed(int(seed)), class_names=latents.class_names).numpy()
        # random_per_class returns global indices grouped by class; map them to rows of each class.
        ids = range(len(members)) if classes is None else classes
        rows = [np.searchsorted(idx, chosen[k * ipc : (k + 1) * ipc]) for k, idx in zip(ids, members)]
        return _coreset(latents, members, rows, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed}, classes=classes)


@register_distiller
@dataclass
class HerdingDistiller:
    """Per class, `herding_order` on the flattened latents. Deterministic: `seed` is unused."""

    name: ClassVar[str] = "herding"
    splits_by_class: ClassVar[bool] = True

    def distill(self, latents: Latents, ipc: int, *, seed: int, classes: list[int] | None = None) -> SyntheticLatents:
        members = check_distill_input(latents, ipc, seed, classes)
        rows = [herding_order(class_points(latents, idx), ipc) for idx in members]
        return _coreset(latents, members, rows, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed}, classes=classes)


@register_distiller
@dataclass
class KCenterDistiller:
    """Per class, `kcenter_order` on the flattened latents. Deterministic: `seed` is unused."""

    name: ClassVar[str] = "kcenter"
    splits_by_class: ClassVar[bool] = True

    def distill(self, latents: Latents, ipc: int, *, seed: int, classes: list[int] | None = None) -> SyntheticLatents:
        members = check_distill_input(latents, ipc, seed, classes)
        rows = [kcenter_order(class_points(latents, idx), ipc) for idx in members]
        return _coreset(latents, members, rows, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed}, classes=classes)
