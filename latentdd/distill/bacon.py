"""BACON and IDM on the matching engine: synthetic latents whose embeddings match the real ones.

The optimised variables are the synthetic LATENTS (K*IPC, c, h, w). Each iteration, for
every class, a network sampled from a growing pool embeds a batch of the class's real
latents and the class's synthetic latents (after one shared DSA draw), and the loss
matches the two embedding clouds: BACON's (`bacon_loss`, paper or reference variant) or
DM/IDM's mean matching (`dm_loss`), plus a cross-entropy term on the synthetic batch
weighted by ce_weight x the network's running train accuracy in percent (the reference's
rule). Then a few pool networks train briefly on real data, so the pool spans networks
at different stages of training (IDM's idea); every `pool_add_every` iterations a freshly
initialised one joins.

Two embeddings (PROTOCOLS.md section 3):
- "pixel": decode the latents with the frozen, differentiable VAE decoder (passed in
  `DistillContext.decode`), normalise, and embed the pixels with ConvNet-3 -- closest to
  the reference code, which works on pixels. The real latents are decoded once, up front
  (see `_Inputs`); the synthetic ones every iteration, with gradients;
- "latent": ConvNets built for the latent shape embed the latents directly -- no decoder
  in the loop, so an iteration is far cheaper.

Every default is the reference's (IDM/BACON public code): SGD lr 0.2, momentum 0.5 on the
synthetic set; real batch 256 per class (5000 at IPC 1); pool of 3 ConvNets growing by
one every 30 iterations (5 at IPC 1) up to 100; 2 pool networks trained per iteration
for 10 steps of SGD (0.01, momentum 0.9, weight decay 5e-4, batch 256); CE weight 0.5;
20,000 iterations. Unlike the reference, everything is seeded (one torch.Generator), and
nothing is selected by test accuracy: the result is the last iteration's.

Factorization (`factor` 2; off by default, as in this project's comparisons; the published
IDM/BACON runs use it, PROTOCOLS.md section 2): each stored latent holds 2x2 sub-latents,
and the matching sees the 4 tiles of each, upsampled, as the evaluator with factor 2 will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from latentdd.config import NonNegativeInt, PositiveFloat, PositiveInt, Probability
from latentdd.distill.bacon_loss import bacon_loss, dm_loss
from latentdd.distill.base import register_distiller
from latentdd.distill.matching import InLoopPool, MatchingDistiller, Net, NetSpec, Run
from latentdd.errors import DataError

LOSS_NAMES = ("bacon", "bacon-reference", "dm")


@register_distiller
@dataclass
class BaconDistiller(MatchingDistiller):
    """Optimise IPC synthetic latents per class against the real latents (see module docstring;
    the engine's parameters are `MatchingDistiller`'s).

    loss: "bacon" (paper terms), "bacon-reference" (the public code's batch-mean variant),
        "dm" (IDM's mean matching).
    batch_real: None -> 5000 at IPC 1, else 256.
    ce_weight: weight of the CE term, times the sampled network's train accuracy (%).
    pool_start, pool_add_every (None -> 5 at IPC 1, else 30), pool_max: the network pool.
    train_nets, train_steps, net_lr, net_momentum, net_weight_decay, net_batch: how pool
        networks train on real data after each iteration (per-image DSA when dsa is on).
    lam: BACON's TV weight (CLIP gets 1 - lam).
    """

    name: ClassVar[str] = "bacon"
    class_terms: ClassVar[bool] = True  # with networks "teacher" a share distils alone (splits_by_class)

    loss: Literal[LOSS_NAMES] = "bacon"
    ce_weight: float = 0.5
    pool_start: PositiveInt = 3
    pool_add_every: PositiveInt | None = None
    pool_max: PositiveInt = 100
    train_nets: NonNegativeInt = 2
    train_steps: NonNegativeInt = 10
    net_lr: PositiveFloat = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    net_batch: PositiveInt = 256
    lam: Probability = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_start > self.pool_max:
            raise DataError(f"{self.name} pool_start ({self.pool_start}) exceeds pool_max ({self.pool_max})")

    def default_batch_real(self, ipc: int) -> int:
        return 5000 if ipc == 1 else 256

    def network_source(self, spec: NetSpec, run: Run) -> InLoopPool:
        return InLoopPool(spec, run.gen, device=run.device, start=self.pool_start, add_every=self.pool_add_every or (5 if run.ipc == 1 else 30),
                          max_size=self.pool_max, train_nets=self.train_nets, train_steps=self.train_steps,
                          lr=self.net_lr, momentum=self.net_momentum, weight_decay=self.net_weight_decay,
                          batch=self.net_batch)

    def class_loss(self, net: Net, e_syn: torch.Tensor, e_real: torch.Tensor, run: Run, k: int,
                   it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The matching loss plus CE on the synthetic batch, weighted by the network's accuracy (%)."""
        try:
            if self.loss == "dm":
                match, parts = dm_loss(e_syn, e_real), {}
            else:
                variant = "reference" if self.loss == "bacon-reference" else "paper"
                t = bacon_loss(e_syn, e_real, lam=self.lam, variant=variant)
                match, parts = t.total, {"lh": t.likelihood, "tv": t.tv, "clip": t.clip}
        except DataError as err:
            raise DataError(self.stop_message(it, f"class {k}: {err}", None)) from err
        ce = F.cross_entropy(net.model.classifier(e_syn), run.labels(k))
        return match + self.ce_weight * net.accuracy * ce, {"match": match, "ce": ce, **parts}

    def advice(self) -> str:
        return f"Lower lr (now {self.lr}) or ce_weight (now {self.ce_weight}), or check the latents for NaN"


@register_distiller
@dataclass
class IDMDistiller(BaconDistiller):
    """IDM: the same loop with mean embedding matching (`dm_loss`) instead of BACON's loss."""

    name: ClassVar[str] = "idm"
    loss: Literal[LOSS_NAMES] = "dm"
