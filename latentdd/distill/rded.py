"""RDED-style selection and stitching in the latent space (after Sun et al., CVPR 2024; issue 34).

RDED keeps the real image patches a trained teacher finds most typical of their class and stitches
several into each stored image. Here a candidate is a whole real latent: per class, `candidates`
latents drawn at random are decoded and scored by the teacher.

- realism: the teacher's cross-entropy on the true class (lower: more typical);
- diversity ("teacher", "labels" or "latent"): the candidates are clustered into IPC * factor**2 groups
  by k-means (sklearn, k-means++) on the teacher's penultimate features, on its log-probabilities (the
  soft labels a student will be taught: "labels" keeps images whose labels differ) or on the latents, and each
  group gives its most typical member ("none": the IPC * factor**2 most typical candidates); with
  `pick: medoid` each group gives instead the member nearest its centroid (a coverage choice, as
  k-means quantization's, but of real latents);
- stitching: with factor f > 1 each stored image is f x f of the chosen latents of its class, each
  decoded whole, average-pooled by f and tiled into it at render time (the matching engine's tiles
  "decoded"); the evaluator trains on the tiles, as it does on IDM/BACON's factorized sets. Tile t
  of stored image n is choice t * IPC + n, the choices in order of typicality.

What differs from RDED: its candidates are random crops of real images and its score is computed on
each crop; here they are whole latents (a tile is a whole latent decoded and pooled), and diversity
is k-means clusters rather than RDED's per-image patch competition. No optimisation: the result is
real latents, so it costs one decode and one teacher pass over the candidates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.config import PositiveInt
from latentdd.distill.base import (CheckedParams, DistillContext, assemble, check_distill_input, class_points,
                                   class_seeds, register_distiller, uniform_weights)
from latentdd.distill.quantize import kmeans_sklearn, nearest_centroid, quantization_error
from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents

DIVERSITY = ("teacher", "labels", "latent", "none")
PICKS = ("typical", "medoid")


def select_typical(scores: np.ndarray, groups: np.ndarray | None, m: int) -> np.ndarray:
    """The m candidates to keep, most typical first: the lowest score of each of the m groups (candidates
    (n,) with group ids in [0, m)); a group left empty is filled by the lowest-scoring candidate not yet
    chosen. groups None: the m lowest scores. Ties go to the lower index. -> (m,) int64 distinct indices."""
    order = np.lexsort((np.arange(len(scores)), scores))  # by score, then index
    if groups is None:
        return order[:m].astype(np.int64)
    chosen, seen = [], set()
    for i in order:  # the first member of each group in score order is its most typical
        if groups[i] not in seen:
            seen.add(groups[i])
            chosen.append(i)
    taken = set(chosen)
    chosen += [i for i in order if i not in taken][: m - len(chosen)]
    chosen = np.array(chosen[:m], dtype=np.int64)
    return chosen[np.lexsort((chosen, scores[chosen]))]


@register_distiller
@dataclass
class RDEDDistiller(CheckedParams):
    """Per class, the real latents the teacher finds most typical, one per cluster, stitched factor x factor
    into each stored image (module docstring)."""

    name: ClassVar[str] = "rded"
    uses_context: ClassVar[bool] = True
    uses_teacher: ClassVar[bool] = True

    candidates: PositiveInt = 1000  # real latents scored per class, drawn at random (all when the class has fewer)
    factor: PositiveInt = 2  # stored images hold factor x factor chosen latents, each decoded whole; 1: one each
    diversity: Literal[DIVERSITY] = "teacher"  # k-means on the teacher's features | its log-probabilities | the latents | none
    pick: Literal[PICKS] = "typical"  # a cluster's member kept: the teacher's most typical | the nearest its centroid
    batch: PositiveInt = 256  # latents decoded and scored at once

    def distill(self, latents: Latents, ipc: int, *, seed: int, context: DistillContext | None = None) -> SyntheticLatents:
        context = context or DistillContext()
        members = check_distill_input(latents, ipc, seed)
        if context.teacher is None or context.decode is None:
            raise DataError("rded scores decoded latents with a teacher: pass DistillContext(decode=..., teacher=...) "
                            "(latentdd distill and run give the space's decoder and fit or load the teacher)")
        if self.pick == "medoid" and self.diversity == "none":
            raise DataError("rded pick medoid keeps each cluster's member nearest its centroid: it needs diversity "
                            "teacher or latent (clusters), not none")
        m = ipc * self.factor**2
        smallest = min(range(len(members)), key=lambda k: len(members[k]))
        if len(members[smallest]) < m:
            raise DataError(f"rded with factor {self.factor} keeps {m} latents of each class at IPC {ipc}; class "
                            f"{latents.class_names[smallest]!r} has {len(members[smallest])}: lower --ipc or the factor")
        per_class, chosen_all, scores_all = [], [], []
        for k, idx in enumerate(members):
            rng = np.random.default_rng(class_seeds(seed, k)[0])
            pool = np.sort(rng.choice(idx, size=min(self.candidates, len(idx)), replace=False))
            if len(pool) < m:
                pool = idx
            scores, features = self._score(latents, pool, k, context.teacher, context.decode)
            groups, rank = None, scores
            if self.diversity != "none":
                points = class_points(latents, pool) if self.diversity == "latent" else features
                centroids = kmeans_sklearn(points, m, niter=100, restarts=1, seed=class_seeds(seed, k, 2)[1])
                groups, sqdist = nearest_centroid(points, centroids)
                rank = sqdist if self.pick == "medoid" else scores
            pick = select_typical(rank, groups, m)
            pick = pick[np.lexsort((pick, scores[pick]))]  # the kept latents, most typical first
            chosen_all.append(pool[pick])
            scores_all.append(scores[pick])
            per_class.append(class_points(latents, pool[pick]))
        extras = {"indices": np.concatenate(chosen_all).tolist(),
                  "teacher_cross_entropy": [[round(float(s), 6) for s in c] for c in scores_all],
                  "teacher": context.teacher.summary(),
                  "factorization": {"factor": self.factor, "tiles": "decoded", "latents_matched_per_class": m}
                  if self.factor > 1 else False,
                  "quantization_error": [quantization_error(class_points(latents, idx), z)
                                         for idx, z in zip(members, per_class)]}
        return assemble(latents, per_class, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed},
                        weights=uniform_weights(len(members), m), extras=extras)

    @torch.no_grad()
    def _score(self, latents: Latents, pool: np.ndarray, k: int, teacher, decode) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (global indices) of class k -> the teacher's cross-entropy on k (n,) and, for diversity
        "teacher" its features, for "labels" its log-probabilities (n, F) float32 (else an empty array)."""
        scores, features = [], []
        for start in range(0, len(pool), self.batch):
            z = latents.latents_at(pool[start : start + self.batch]).to(torch.float32)
            images = decode(z).clamp(0, 1)  # (b, C, H, W)
            logits = teacher(images)
            scores.append(F.cross_entropy(logits, torch.full((len(z),), k, dtype=torch.long), reduction="none"))
            if self.diversity == "teacher":
                features.append(teacher.features(images).float())
            elif self.diversity == "labels":
                features.append(F.log_softmax(logits.float(), dim=1))
        feats = torch.cat(features).numpy() if features else np.empty((len(pool), 0), dtype=np.float32)
        return torch.cat(scores).numpy().astype(np.float64), np.ascontiguousarray(feats, dtype=np.float32)
