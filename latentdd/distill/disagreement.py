"""Teacher-student disagreement selection: real latents chosen where a student trained on the set so far
imitates the teacher worst (issue 34's lever for IPC 10 under the teacher's soft labels).

Under `soft` a student learns the teacher's function on the augmented views of the stored images, so a stored
image is worth what it teaches the student that the others do not. RDED's choice (`rded`: per class, the most
typical candidate of each teacher-feature cluster) beats random real at IPC 1 and stops beating it at IPC 10.
This distiller starts from that choice and then grows the set where a student is still wrong:

1. per class, `candidates` real latents drawn at random (rded's pool and seeds), each decoded and scored by the
   teacher (cross-entropy on the class, features, log-probabilities at the protocol's temperature); the pool is
   clustered into IPC groups by k-means on the teacher's features (rded's `diversity: teacher`);
2. start: the round(start * IPC) most typical cluster representatives of each class (rded's first picks);
3. each of `rounds` rounds: a proxy student is trained on the images chosen so far under the `soft` protocol
   (the teacher labels every augmented batch; `proxy_epochs` epochs), and each candidate is scored by
   KL(teacher_T || student_T) on the plain decoded image; per class, the next picks are the candidates of
   highest disagreement, one per cluster not yet represented while there are such clusters
   (`grow`), until the class holds IPC.

The result is real latents (no optimisation of the latents), stored in the order they were chosen. It costs
rded's decode and teacher pass, plus per round one proxy training on at most IPC images a class and one decode
and student pass over the pool (the pool's images are decoded again each round rather than held: memory stays
one batch of images). At IPC 1 (start keeps one) it is rded's choice.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.config import PositiveFloat, PositiveInt
from latentdd.distill.base import (CheckedParams, DistillContext, assemble, check_distill_input, class_points,
                                   class_seeds, register_distiller, uniform_weights)
from latentdd.distill.quantize import kmeans_sklearn, nearest_centroid, quantization_error
from latentdd.distill.rded import select_typical
from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents


def grow(disagreement: np.ndarray, groups: np.ndarray, chosen: list[int], count: int) -> list[int]:
    """The next `count` picks of a class (local candidate indices, in order): the unchosen candidates of highest
    disagreement (n,), each from a group (n,) that no pick holds yet while such a group has a candidate, then the
    highest remaining. Ties go to the lower index."""
    taken, held = set(chosen), {int(groups[i]) for i in chosen}
    order = [int(i) for i in np.lexsort((np.arange(len(disagreement)), -disagreement)) if int(i) not in taken]
    picks: list[int] = []
    for i in order:
        if len(picks) == count:
            break
        if int(groups[i]) not in held:
            picks.append(i)
            held.add(int(groups[i]))
    picked = set(picks)
    picks += [i for i in order if i not in picked][: count - len(picks)]
    return picks


def round_sizes(total: int, rounds: int) -> list[int]:
    """`total` picks over `rounds` rounds as evenly as possible, the larger first, empty rounds dropped."""
    return [n for n in (total // rounds + (r < total % rounds) for r in range(rounds)) if n]


@register_distiller
@dataclass
class DisagreementDistiller(CheckedParams):
    """Per class, rded's most typical real latents, then the candidates a proxy student trained on the set so far
    imitates the teacher worst on, one per teacher-feature cluster (module docstring)."""

    name: ClassVar[str] = "disagreement"
    uses_context: ClassVar[bool] = True
    uses_teacher: ClassVar[bool] = True

    candidates: PositiveInt = 1000  # real latents scored per class, drawn at random (all when the class has fewer)
    start: float = 0.5  # the share of IPC chosen first by typicality (at least one a class)
    rounds: PositiveInt = 2  # proxy trainings; the picks after the start are spread over them
    proxy_epochs: PositiveInt = 300  # epochs of each proxy student's `soft` training (the protocol's 1000 scaled down)
    proxy_width: PositiveInt = 128  # the proxy ConvNet's width (the evaluator's 128)
    proxy_depth: PositiveInt | None = None  # its depth; None: the evaluator's for the image size (3 up to 32 px)
    temperature: PositiveFloat = 4.0  # of the disagreement KL (the `soft` protocol's)
    batch: PositiveInt = 256  # latents decoded and scored at once

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.start <= 1.0:
            raise DataError(f"disagreement start is the share of IPC chosen by typicality, in (0, 1]; got {self.start}")

    def distill(self, latents: Latents, ipc: int, *, seed: int,
                context: DistillContext | None = None) -> SyntheticLatents:
        context = context or DistillContext()
        members = check_distill_input(latents, ipc, seed)
        teacher, decode = context.teacher, context.decode
        if teacher is None or decode is None:
            raise DataError("disagreement scores decoded latents with a teacher and trains students on them: pass "
                            "DistillContext(decode=..., teacher=...) (latentdd distill and run give the space's "
                            "decoder and fit or load the teacher)")
        pools, scores, groups, teacher_logp, chosen = [], [], [], [], []
        first = max(1, round(self.start * ipc))
        moments = torch.zeros(3, dtype=torch.float64)  # the pool's pixels, all channels: count, sum, sum of squares
        for k, idx in enumerate(members):
            rng = np.random.default_rng(class_seeds(seed, k)[0])
            pool = np.sort(rng.choice(idx, size=min(self.candidates, len(idx)), replace=False))
            if len(pool) < ipc:
                pool = idx
            ce, features, logp = self._teacher_pass(latents, pool, k, teacher, decode, moments)
            centroids = kmeans_sklearn(features, ipc, niter=100, restarts=1, seed=class_seeds(seed, k, 2)[1])
            group, _ = nearest_centroid(features, centroids)
            pools.append(pool)
            scores.append(ce)
            groups.append(group)
            teacher_logp.append(logp)
            chosen.append([int(i) for i in select_typical(ce, group, ipc)[:first]])
        mean = moments[1] / moments[0]
        normalise = (mean.float(), (moments[2] / moments[0] - mean**2).clamp_min(1e-12).sqrt().float())
        rounds = []
        for r, count in enumerate(round_sizes(ipc - first, self.rounds)):
            t0 = time.perf_counter()
            student = self._proxy(latents, [p[c] for p, c in zip(pools, chosen)], teacher, decode, normalise,
                                  seed=seed + r)
            kl_means, added_means = [], []
            for k, pool in enumerate(pools):
                kl = self._disagreement(latents, pool, teacher_logp[k], student, decode)
                picks = grow(kl, groups[k], chosen[k], count)
                chosen[k] += picks
                kl_means.append(float(kl.mean()))
                added_means.append(float(kl[picks].mean()))
            rounds.append({"added_per_class": count, "seconds": round(time.perf_counter() - t0, 3),
                           "pool_disagreement_mean": round(float(np.mean(kl_means)), 6),
                           "added_disagreement_mean": round(float(np.mean(added_means)), 6)})
        per_class = [class_points(latents, p[c]) for p, c in zip(pools, chosen)]
        extras = {"indices": np.concatenate([p[c] for p, c in zip(pools, chosen)]).tolist(),
                  "typical_first": first, "rounds": rounds,
                  "teacher_cross_entropy": [[round(float(s[i]), 6) for i in c] for s, c in zip(scores, chosen)],
                  "teacher": teacher.summary(),
                  "quantization_error": [quantization_error(class_points(latents, idx), z)
                                         for idx, z in zip(members, per_class)]}
        return assemble(latents, per_class, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed},
                        weights=uniform_weights(len(members), ipc), extras=extras)

    def _images(self, latents: Latents, rows: np.ndarray, decode):
        for start in range(0, len(rows), self.batch):
            z = latents.latents_at(rows[start : start + self.batch]).to(torch.float32)
            yield decode(z).clamp(0, 1)

    @torch.no_grad()
    def _teacher_pass(self, latents: Latents, pool: np.ndarray, k: int, teacher, decode, moments: torch.Tensor):
        """Candidates (global rows) of class k -> the teacher's cross-entropy on k (n,) float64, its features
        (n, F) float32 and its log-probabilities at the temperature (n, K) float32; adds the images' pixel count,
        sum and sum of squares to `moments` (the proxy students' normalisation)."""
        ce, features, logp = [], [], []
        for images in self._images(latents, pool, decode):
            x = images.double()
            moments += torch.stack([torch.tensor(float(x.numel())), x.sum(), (x * x).sum()])
            logits = teacher(images).float()
            ce.append(F.cross_entropy(logits, torch.full((len(images),), k, dtype=torch.long), reduction="none"))
            features.append(teacher.features(images).float())
            logp.append(F.log_softmax(logits / self.temperature, dim=1))
        return (torch.cat(ce).numpy().astype(np.float64), np.ascontiguousarray(torch.cat(features).numpy()),
                torch.cat(logp))

    def _proxy(self, latents: Latents, rows: list[np.ndarray], teacher, decode, normalise, *, seed: int):
        """A student trained under `soft` on the decoded latents `rows` (one array a class), labelled online by
        the teacher -> images (B, C, H, W) in [0, 1] -> its logits."""
        images = torch.cat([torch.cat(list(self._images(latents, r, decode))) for r in rows])
        labels = torch.cat([torch.full((len(r),), k, dtype=torch.long) for k, r in enumerate(rows)])
        channels = images.shape[1]
        mean, std = (v.expand(channels).contiguous() for v in normalise)  # one value for every channel
        model = teacher.teach(images, labels, num_classes=len(rows), mean=mean, std=std, seed=seed,
                              epochs=self.proxy_epochs, width=self.proxy_width, depth=self.proxy_depth,
                              temperature=self.temperature)
        return lambda x: model((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))

    @torch.no_grad()
    def _disagreement(self, latents: Latents, pool: np.ndarray, teacher_logp: torch.Tensor, student,
                      decode) -> np.ndarray:
        """KL(teacher_T || student_T) of each candidate's plain decoded image -> (n,) float64."""
        student_logp = torch.cat([F.log_softmax(student(images).float() / self.temperature, dim=1)
                                  for images in self._images(latents, pool, decode)])
        kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(dim=1)
        return kl.numpy().astype(np.float64)
