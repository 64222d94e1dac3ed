"""DC and DSA: gradient matching (Zhao, Mopuri & Bilen, ICLR 2021; Zhao & Bilen, ICML 2021).

Each iteration draws a fresh randomly initialised ConvNet and runs `outer_loop` rounds.
In each round, for every class, the gradients of the CE loss w.r.t. the network's weights
on a real batch and on the class's synthetic set are compared by DC's layer-wise distance
(`gradient_distance`), and the synthetic set takes one step on the summed distance; then,
except after the last round, the network trains `inner_loop` epochs on the synthetic set
(SGD lr net_lr, batch net_batch). DSA is the same loop with one siamese DSA draw per class
for the real and synthetic batch, and DSA on the network's training batches.

Reference defaults (the DatasetCondensation code): SGD lr 0.1 momentum 0.5 on the synthetic
images, real batch 256 per class, net lr 0.01 (no momentum), batch 256, 1000 iterations,
outer/inner loops by IPC (1: 1/1, 10: 10/50, 20: 20/25, 30: 30/20, 40: 40/15, 50: 50/10; other
IPCs: IPC outer rounds and 500 // IPC inner epochs, the rule of the table from IPC 10 up).
Initialisation: real images (DSA's code; DC's own default was noise).

The cost of an iteration grows with outer_loop x classes x (a forward/backward of the real
batch + a double backward through the synthetic set) + the inner epochs: at IPC 10 on CPU
cores this is far more than DM's, so runs here use fewer iterations or outer loops,
recorded in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from latentdd.config import PositiveFloat, PositiveInt
from latentdd.distill.base import register_distiller
from latentdd.distill.matching import EMBEDDINGS, MatchingDistiller, Run
from latentdd.errors import DataError

# DC's get_loops: IPC -> (outer_loop, inner_loop).
REFERENCE_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def gradient_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor]) -> torch.Tensor:
    """DC's layer-wise gradient distance -> 0-d tensor, differentiable w.r.t. g_syn.

    For each weight tensor, its gradient is viewed as (output units, rest) -- conv
    (o, i, kh, kw) -> (o, i*kh*kw), linear (o, i) as is -- and each output unit contributes
    1 - cos(g_syn row, g_real row) (with 1e-6 added to the norms' product). One-dimensional
    tensors (biases, norm affines) are left out, as in DC.
    """
    if len(g_syn) != len(g_real):
        raise DataError(f"gradient_distance needs one real gradient per synthetic one; got {len(g_syn)} and {len(g_real)}")
    total = g_syn[0].new_zeros(())
    for gs, gr in zip(g_syn, g_real):
        if gs.shape != gr.shape:
            raise DataError(f"gradient shapes differ: {tuple(gs.shape)} vs {tuple(gr.shape)}")
        if gr.ndim == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@register_distiller
@dataclass
class DCDistiller(MatchingDistiller):
    """Gradient matching with outer/inner loops on fresh networks (module docstring).

    outer_loop, inner_loop: None -> the reference's for the IPC (REFERENCE_LOOPS; other IPCs:
        IPC outer rounds and 500 // IPC inner epochs).
    net_lr, net_batch: the network's SGD on the synthetic set between rounds.
    """

    name: ClassVar[str] = "dc"

    embedding: Literal[EMBEDDINGS] = "pixel"
    iterations: PositiveInt = 1000
    lr: PositiveFloat = 0.1
    dsa: bool = False
    outer_loop: PositiveInt | None = None
    inner_loop: PositiveInt | None = None
    net_lr: PositiveFloat = 0.01
    net_batch: PositiveInt = 256
    checkpoint_every: PositiveInt = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.compile, self.real_precision) != ("off", "float32"):
            raise DataError(f"{self.name} matches parameter gradients, which run eagerly in float32; compile and "
                            "real_precision speed up the embedding forward of dm, bacon and idm only: leave them "
                            f"at off / float32 (got {self.compile!r}, {self.real_precision!r})")

    def loops(self, ipc: int) -> tuple[int, int]:
        if self.outer_loop is not None and self.inner_loop is not None:
            return self.outer_loop, self.inner_loop
        # Between the table's IPCs, its rule from IPC 10 up: IPC outer rounds, 500 / IPC inner epochs.
        outer, inner = REFERENCE_LOOPS.get(ipc, (ipc, max(1, 500 // ipc)))
        return self.outer_loop or outer, self.inner_loop or inner

    def describe(self, run: Run) -> dict:
        outer, inner = self.loops(run.ipc)
        return {"outer_loop": outer, "inner_loop": inner}

    def iterate(self, run: Run, syn, optimizer, source, it: int, check) -> dict[str, float]:
        outer, inner = self.loops(run.ipc)
        model = source.next(it).model
        params = [p for p in model.parameters()]
        net_opt = torch.optim.SGD(params, lr=self.net_lr)
        terms = {"match": 0.0}
        for round_ in range(outer):
            total = syn.new_zeros(())
            for k in range(run.num_classes):
                x_real, x_syn = run.class_pair(syn, k)
                y_real = torch.full((len(x_real),), k, dtype=torch.long)
                g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x_real), y_real), params)]
                g_syn = torch.autograd.grad(F.cross_entropy(model(x_syn), run.labels(k)), params, create_graph=True)
                total = total + gradient_distance(list(g_syn), g_real)
            check.step(total, it)
            terms["match"] += float(total.detach()) / (run.num_classes * outer)
            if round_ == outer - 1:
                break
            self._train_on_synthetic(model, net_opt, syn, run, inner)
        return terms

    def _train_on_synthetic(self, model, net_opt, syn, run: Run, epochs: int) -> None:
        """`epochs` epochs of SGD on the (detached) synthetic set, DSA per image when dsa is on."""
        with torch.no_grad():
            x_all = torch.cat([run.syn_batch(syn, k) for k in range(run.num_classes)])  # (K*f*f*ipc, C, S, S)
        y_all = torch.cat([run.labels(k) for k in range(run.num_classes)])
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=run.gen)
            for start in range(0, len(order), self.net_batch):
                pick = order[start : start + self.net_batch]
                x = x_all[pick]
                if run.augment is not None:
                    x = run.augment(x, run.gen)
                loss = F.cross_entropy(model(x), y_all[pick])
                net_opt.zero_grad(set_to_none=True)
                loss.backward()
                net_opt.step()


@register_distiller
@dataclass
class DSADistiller(DCDistiller):
    """DSA: DC with siamese differentiable augmentation (all six groups on pixels)."""

    name: ClassVar[str] = "dsa"
    dsa: bool = True
