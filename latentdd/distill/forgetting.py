"""Forgetting: the coreset of DC's baseline table (Toneva et al., ICLR 2019).

A ConvNet trains on the whole real train split; every time an example is seen in a
minibatch, its prediction is compared with the last time: correct then, wrong now is one
forgetting event. Examples never classified correctly count as forgotten most (Toneva's
rule). Per class, the IPC examples forgotten most are kept (ties broken by a seeded random
order), as real latents with equal weights.

The network sees the real data through the matching engine's embedding: the latents
themselves ("latent", the default: a ConvNet on 4x8x8 latents trains in seconds) or the
decoded pixels ("pixel"). The counts depend only on the data, the embedding and the
training settings, so they are cached by content (under the context's cache_dir) and
shared by every IPC and seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.cache import cached_state
from latentdd.cachekey import content_key, tensor_sha256
from latentdd.checkpoint import StateRejected
from latentdd.config import PositiveFloat, PositiveInt
from latentdd.distill.base import (
    CheckedParams,
    DistillContext,
    assemble,
    check_distill_input,
    class_points,
    class_seeds,
    register_distiller,
    uniform_weights,
)
from latentdd.distill.matching import EMBEDDINGS, Inputs, NetSpec
from latentdd.distill.quantize import quantization_error
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.progress import progress_bar

_NEVER_LEARNED = np.iinfo(np.int64).max  # forgotten "most": Toneva's rule for examples never learned


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """(T, N) bool, example n classified correctly at its t-th presentation -> (N,) int64 counts of
    correct -> wrong transitions; examples never correct get _NEVER_LEARNED."""
    correct = np.asarray(correct, dtype=bool)
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.int64)
    events[~correct.any(axis=0)] = _NEVER_LEARNED
    return events


@register_distiller
@dataclass
class ForgettingDistiller(CheckedParams):
    """Keep the IPC most forgotten real latents per class (module docstring).

    embedding: "latent" or "pixel" (needs the decoder in the DistillContext).
    epochs, batch, lr, momentum, weight_decay: SGD training of the ConvNet on all real inputs.
    width, depth (None: as the matching engine's), norm: the ConvNet.
    """

    name: ClassVar[str] = "forgetting"
    uses_context: ClassVar[bool] = True

    embedding: Literal[EMBEDDINGS] = "latent"
    epochs: PositiveInt = 10
    batch: PositiveInt = 256
    lr: PositiveFloat = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: PositiveInt = 128
    depth: PositiveInt | None = None
    norm: str = "instancenorm"

    def distill(self, latents: Latents, ipc: int, *, seed: int, context: DistillContext | None = None) -> SyntheticLatents:
        context = context or DistillContext()
        members = check_distill_input(latents, ipc, seed)
        inputs = Inputs.make(self.embedding, latents, context)
        counts, cached = self.counts(latents, inputs, context)
        chosen = []
        for k, idx in enumerate(members):
            tie = np.random.default_rng(class_seeds(seed, k)[0]).permutation(len(idx))
            order = np.lexsort((tie, -counts[idx].astype(np.float64)))  # most forgotten first, then the tie order
            chosen.append(idx[order[:ipc]])
        per_class = [class_points(latents, c) for c in chosen]
        extras = {"indices": np.concatenate(chosen).tolist(), "counts_cached": cached,
                  "forgetting_events": [[int(min(counts[i], 2**31)) for i in c] for c in chosen],
                  "never_learned": int((counts == _NEVER_LEARNED).sum()),
                  "quantization_error": [quantization_error(class_points(latents, idx), z)
                                         for idx, z in zip(members, per_class)]}
        return assemble(latents, per_class, method=self.name,
                        params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed},
                        weights=uniform_weights(len(members), ipc), extras=extras)

    def counts(self, latents: Latents, inputs: Inputs, context: DistillContext) -> tuple[np.ndarray, bool]:
        """(N,) forgetting counts of every latent, from the cache when it holds them -> (counts, cached)."""
        key = content_key("forgetting", settings=dataclasses.asdict(self), inputs=tensor_sha256(inputs.rows),
                          labels=tensor_sha256(latents.labels), num_classes=len(latents.class_names))
        path = Path(context.cache_dir) / "forgetting" / f"{key[:24]}.safetensors" if context.cache_dir else None

        def load(state: dict) -> np.ndarray:
            counts = state["counts"]
            if state["key"] != key:
                raise StateRejected("it holds the counts of other settings or data")
            if counts.shape != (len(latents),) or counts.dtype != torch.int64 or bool((counts < 0).any()):
                raise StateRejected(f"its counts are not {len(latents)} non-negative integers")
            return counts.numpy()

        return cached_state(path, lambda: self._train(latents, inputs, context.progress), load=load,
                            state=lambda counts: {"key": key, "counts": torch.from_numpy(counts)},
                            otherwise="they are counted again")

    def _train(self, latents: Latents, inputs: Inputs, progress: bool) -> np.ndarray:
        gen = torch.Generator().manual_seed(0)  # the counts are a property of the data: one fixed seed
        depth = self.depth or inputs.default_depth()
        model = NetSpec(inputs.channels, len(latents.class_names), inputs.size, self.width, depth, self.norm).build(gen)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        n = len(latents)
        labels = latents.labels
        correct = np.zeros((self.epochs, n), dtype=bool)  # each example is presented once per epoch
        for epoch in progress_bar(range(self.epochs), desc="forgetting", disable=not progress, unit="epoch"):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch):
                pick = order[start : start + self.batch]
                logits = model(inputs.real(pick))
                loss = F.cross_entropy(logits, labels[pick])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct[epoch, pick.numpy()] = (logits.argmax(1) == labels[pick]).numpy()
        return forgetting_events(correct)
