"""MTT: matching training trajectories (Cazenavette et al., CVPR 2022) on the matching engine, in the latent space
(latents -> decoder -> network, as GLaD) or in pixels (`--vae pixel`), with DATM's options (Guo et al., ICLR
2024): a rising window of start epochs, learned soft labels, initialisation from samples the expert gets right.
Issue 35; TESLA's constant-memory gradient is not built.

Expert trajectories (`ExpertBuffer`): `experts` ConvNets (the run's spec: width, depth, norm) trained on the real
inputs -- the decoded real latents for embedding "pixel" -- with SGD lr expert_lr, no momentum or weight decay,
batch expert_batch, DSA when `dsa` is on (MTT's buffer.py), their parameters kept after every epoch (epoch 0: the
initialisation) for buffer_epochs epochs; an epoch is a pass over every real input, or `epoch_steps` batches
of them when set (a CPU cut: shorter experts). Cached by content (the settings, the real inputs and labels) under
cache_dir/expert_buffer/<key24>/, one file an expert, each written when that expert finishes: a killed build
resumes at the next expert.

An iteration draws an expert and a start epoch t in [0, max_start_epoch) from the run's generator. The student
starts at the expert's parameters at t and takes syn_steps SGD steps of the learnable size syn_lr, each on a
batch of batch_syn synthetic inputs (all classes; one DSA draw a step), keeping every step in the graph; the loss
is ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2, M = expert_epochs (`unroll_loss`). Its gradient
reaches the synthetic variables (through the decoder) and syn_lr, which has its own SGD (lr_lr, momentum 0.5, as
MTT's). syn_lr and its optimiser are checkpointed with the set, so a resumed run continues bit for bit.

DATM's options:
- window: start epochs are drawn in [min_start_epoch, upper), the upper bound rising linearly over the
  iterations from max_start_epoch to max_start_epoch_final (DATM raises it in steps; None: fixed);
- learn_labels: a logit vector per synthetic input, initialised to the logits of the first expert's last epoch
  on the initial set (`label_init: teacher`: the context's trained teacher's logits instead, so that the labels
  start where the `static` protocol's teacher labels are), optimised with the set (SGD lr_labels, momentum 0.9);
  the unroll's cross-entropy takes their softmax as targets, and the set stores it as its soft labels (the
  `static` protocol trains on them);
- init "correct": per class, random real latents whose decoded image the first expert's last epoch classifies
  correctly (the rest of the class only if too few are).

Reference defaults (MTT's CIFAR-10 IPC 10: syn_steps 30, expert_epochs 2, max_start_epoch 20, lr_teacher 0.01,
lr_lr 1e-5, 5000 iterations, buffers of 100 experts x 50 epochs) do not fit 2 CPU cores; the defaults here are a
cheap buffer (5 experts x 15 epochs) and are recorded in every result.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call

from latentdd.cache import cached_state
from latentdd.cachekey import content_key, tensor_sha256
from latentdd.checkpoint import StateRejected, load_optimizer
from latentdd.config import NonNegativeInt, PositiveFloat, PositiveInt
from latentdd.distill.base import DistillContext, register_distiller
from latentdd.distill.matching import EMBEDDINGS, MatchingDistiller, NetSpec, Run
from latentdd.distill.matching.sources import TeacherEmbedding
from latentdd.errors import DataError
from latentdd.nn.factorization import tile
from latentdd.progress import progress_bar


def unroll_loss(model: torch.nn.Module, start: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                batches: list[tuple[torch.Tensor, torch.Tensor]], syn_lr: torch.Tensor) -> torch.Tensor:
    """MTT's loss: from parameters `start`, one SGD step of size syn_lr per (inputs, labels) batch, each step's
    gradient kept in the graph; -> ||theta_N - target||^2 / ||start - target||^2, differentiable in the batches'
    inputs, syn_lr and soft labels. Labels: class indices (B,) or class distributions (B, K).
    `model` gives the architecture (functional_call); its own parameters are not used."""
    params = {name: value.detach().requires_grad_(True) for name, value in start.items()}
    current = params
    for x, y in batches:
        loss = F.cross_entropy(functional_call(model, current, (x,)), y)
        grads = torch.autograd.grad(loss, list(current.values()), create_graph=True)
        current = {name: value - syn_lr * g for (name, value), g in zip(current.items(), grads)}
    num = sum(((current[n] - target[n]) ** 2).sum() for n in current)
    den = sum(((start[n] - target[n]) ** 2).sum() for n in current)
    return num / den


class ExpertBuffer:
    """Expert trajectories: per expert, its parameters after each epoch (module docstring)."""

    def __init__(self, spec: NetSpec, trajectories: list[list[dict[str, torch.Tensor]]], seconds: float,
                 cached: int) -> None:
        self.spec, self.trajectories, self.seconds, self.cached = spec, trajectories, seconds, cached

    def judge(self) -> torch.nn.Module:
        """The first expert at its last epoch (frozen): what init "correct" and the labels' first logits use."""
        model = self.spec.build(torch.Generator().manual_seed(0))
        model.load_state_dict(self.trajectories[0][-1])
        return model.eval().requires_grad_(False)

    @classmethod
    def load_or_train(cls, spec: NetSpec, run: Run, *, experts: int, epochs: int, lr: float, batch: int,
                      cache_dir: str | Path | None, progress: bool, epoch_steps: int | None = None) -> ExpertBuffer:
        settings = {"spec": dataclasses.asdict(spec), "epochs": epochs, "lr": lr, "batch": batch,
                    "dsa": None if run.augment is None else run.augment.config.strategy}
        if epoch_steps is not None:  # absent from the key when unset: full-pass buffers keep their key
            settings["epoch_steps"] = epoch_steps
        key = content_key("expert-buffer", settings=settings, inputs=tensor_sha256(run.inputs.rows),
                          labels=tensor_sha256(run.all_labels))
        folder = Path(cache_dir) / "expert_buffer" / key[:24] if cache_dir else None
        shapes = {k: v.shape for k, v in spec.build(torch.Generator().manual_seed(0)).state_dict().items()}
        trajectories, seconds, cached = [], 0.0, 0
        bar = progress_bar(total=experts * epochs, desc="expert buffer", disable=not progress, unit="epoch")
        for i in range(experts):
            def load(state: dict, i=i) -> tuple[list, float]:
                if state["key"] != key or state["expert"] != i:
                    raise StateRejected("it is another buffer's expert (other settings, data or index)")
                snaps = state["epochs"]
                if len(snaps) != epochs + 1 or any({k: v.shape for k, v in s.items()} != shapes for s in snaps):
                    raise StateRejected(f"it does not hold {epochs + 1} snapshots of this network")
                if not all(torch.isfinite(v).all() for s in snaps for v in s.values()):
                    raise StateRejected("a snapshot holds NaN or inf")
                return snaps, float(state["seconds"])

            def build(i=i) -> tuple[list, float]:
                t0 = time.perf_counter()
                snaps = _train_expert(spec, run, torch.Generator().manual_seed(i), epochs=epochs, lr=lr, batch=batch,
                                      bar=bar, steps=epoch_steps)
                return snaps, time.perf_counter() - t0

            path = folder / f"expert_{i}.safetensors" if folder else None
            (snaps, secs), was_cached = cached_state(
                path, build, load=load, otherwise="the expert is trained again",
                state=lambda value, i=i: {"key": key, "expert": i, "settings": settings, "seconds": value[1],
                                          "epochs": value[0]})
            if was_cached:
                bar.update(epochs)
            trajectories.append(snaps)
            seconds += secs
            cached += int(was_cached)
        bar.close()
        return cls(spec, trajectories, seconds, cached)


def _train_expert(spec: NetSpec, run: Run, gen: torch.Generator, *, epochs: int, lr: float, batch: int,
                  bar, steps: int | None = None) -> list[dict[str, torch.Tensor]]:
    """One expert's trajectory: its state after each of `epochs` epochs of SGD on every real input (or on `steps`
    batches of them; epoch 0: the initialisation)."""
    model = spec.build(gen)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    snaps = [{k: v.detach().clone() for k, v in model.state_dict().items()}]
    members = run.all_members
    for _ in range(epochs):
        order = members[torch.randperm(len(members), generator=gen)]
        if steps is not None:
            order = order[: steps * batch]
        for start in range(0, len(order), batch):
            pick = order[start : start + batch]
            with torch.no_grad():
                x = run.inputs.real(pick)
                if run.augment is not None:
                    x = run.augment(x, gen)
            loss = F.cross_entropy(model(x), run.all_labels[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        snaps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        bar.update(1)
    return snaps


class Trajectories:
    """The network source of an MTT run: the expert buffer (fixed), one architecture module, and the learnable
    step size syn_lr with its optimiser (checkpointed)."""

    def __init__(self, buffer: ExpertBuffer, model: torch.nn.Module, gen: torch.Generator, *, syn_lr: float,
                 lr_lr: float, label_init: torch.Tensor | None = None, lr_labels: float = 0.0) -> None:
        self.buffer, self.model, self.gen = buffer, model, gen
        self.names = [name for name, _ in model.named_parameters()]  # what the student learns (no buffers)
        self.syn_lr = torch.nn.Parameter(torch.tensor(float(syn_lr)))
        self.lr_optimizer = torch.optim.SGD([self.syn_lr], lr=lr_lr, momentum=0.5)
        self.labels = None if label_init is None else torch.nn.Parameter(label_init.clone())  # (M, K) logits
        self.label_optimizer = None if label_init is None else torch.optim.SGD([self.labels], lr=lr_labels,
                                                                              momentum=0.9)

    def draw(self, low: int, high: int, ahead: int) -> tuple[dict, dict]:
        """(start, target) parameters: a random expert at a random epoch t in [low, high), and at t + ahead."""
        expert = self.buffer.trajectories[int(torch.randint(len(self.buffer.trajectories), (1,), generator=self.gen))]
        t = int(torch.randint(low, high, (1,), generator=self.gen))
        return ({n: expert[t][n] for n in self.names}, {n: expert[t + ahead][n] for n in self.names})

    def targets(self, hard: torch.Tensor) -> torch.Tensor:
        """The unroll's labels of every synthetic input: the learned distributions, or the hard labels."""
        return hard if self.labels is None else torch.softmax(self.labels, dim=1)

    def step_lr(self) -> None:
        """A step of syn_lr (and of the learned labels) on the gradient the set's step left them."""
        for opt in filter(None, (self.lr_optimizer, self.label_optimizer)):
            opt.step()
            opt.zero_grad(set_to_none=True)

    def learned_labels(self) -> torch.Tensor | None:
        return None if self.labels is None else torch.softmax(self.labels.detach(), dim=1)

    def after_step(self, run: Run) -> None:
        pass

    def state(self) -> dict:
        state = {"syn_lr": self.syn_lr.detach().clone(), "lr_optimizer": self.lr_optimizer.state_dict()}
        if self.labels is not None:
            state |= {"labels": self.labels.detach().clone(), "label_optimizer": self.label_optimizer.state_dict()}
        return state

    def load(self, state: dict) -> None:
        lr = state["syn_lr"]
        if not isinstance(lr, torch.Tensor) or lr.shape != () or not bool(torch.isfinite(lr)):
            raise StateRejected("its syn_lr is not a finite number")
        if self.labels is not None:
            labels = state.get("labels")
            if not isinstance(labels, torch.Tensor) or labels.shape != self.labels.shape or \
                    not bool(torch.isfinite(labels).all()):
                raise StateRejected(f"its learned labels are not finite {tuple(self.labels.shape)} logits")
        with torch.no_grad():
            self.syn_lr.copy_(lr)
            if self.labels is not None:
                self.labels.copy_(state["labels"])
        load_optimizer(self.lr_optimizer, state["lr_optimizer"])
        if self.labels is not None:
            load_optimizer(self.label_optimizer, state["label_optimizer"])

    def record(self) -> dict:
        b = self.buffer
        return {"networks": "expert trajectories", "experts": len(b.trajectories),
                "buffer_epochs": len(b.trajectories[0]) - 1, "buffer_seconds": b.seconds, "experts_cached": b.cached,
                "syn_lr_final": float(self.syn_lr.detach())}


@register_distiller
@dataclass
class MTTDistiller(MatchingDistiller):
    """Trajectory matching from a cached expert buffer (module docstring).

    experts, buffer_epochs, expert_lr, expert_batch, epoch_steps: the buffer (epoch_steps: batches an expert
    epoch; None: a pass over every real input). syn_steps: the student's unrolled steps;
    expert_epochs: M, the epochs ahead its target is; max_start_epoch: start epochs are drawn below it;
    syn_lr: the student's initial step size (MTT's lr_teacher); lr_lr: syn_lr's own learning rate;
    batch_syn: synthetic inputs a step (None: all of them).
    """

    name: ClassVar[str] = "mtt"

    embedding: Literal[EMBEDDINGS] = "pixel"
    init: Literal["real", "kmeans", "correct"] = "real"
    iterations: PositiveInt = 1000
    lr: PositiveFloat = 100.0
    momentum: float = 0.5
    experts: PositiveInt = 5
    buffer_epochs: PositiveInt = 15
    expert_lr: PositiveFloat = 0.01
    expert_batch: PositiveInt = 256
    epoch_steps: PositiveInt | None = None
    syn_steps: PositiveInt = 20
    expert_epochs: PositiveInt = 2
    max_start_epoch: PositiveInt = 10
    min_start_epoch: NonNegativeInt = 0
    max_start_epoch_final: PositiveInt | None = None  # DATM's window: the upper bound rises to this; None: fixed
    learn_labels: bool = False
    label_init: Literal["expert", "teacher"] = "expert"  # learn_labels' first logits: the first expert's | the teacher's
    lr_labels: PositiveFloat = 2.0
    syn_lr: PositiveFloat = 0.01
    lr_lr: PositiveFloat = 1e-5
    batch_syn: PositiveInt | None = None
    checkpoint_every: PositiveInt = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        top = max(self.max_start_epoch, self.max_start_epoch_final or 0)
        if top + self.expert_epochs > self.buffer_epochs:
            raise DataError(f"mtt draws start epochs below max_start_epoch ({self.max_start_epoch}, rising to "
                            f"max_start_epoch_final {self.max_start_epoch_final}) and targets expert_epochs "
                            f"({self.expert_epochs}) later, so the buffer needs max_start_epoch + expert_epochs <= "
                            f"buffer_epochs ({self.buffer_epochs}); lower one, or raise buffer_epochs")
        if self.min_start_epoch >= self.max_start_epoch:
            raise DataError(f"mtt min_start_epoch ({self.min_start_epoch}) must be below max_start_epoch "
                            f"({self.max_start_epoch})")
        if self.learn_labels and self.factor > 1:
            raise DataError("mtt learn_labels learns a label per training image, and factorization makes factor**2 "
                            "of them from each stored image: use factor 1 to learn labels")
        if self.label_init == "teacher" and not (self.learn_labels and self.embedding == "pixel"):
            raise DataError("mtt label_init 'teacher' starts learned labels at the teacher's logits of the decoded "
                            "images: set learn_labels: true and embedding: pixel")
        if self.networks != "method":
            raise DataError(f"mtt's networks are its expert trajectories; leave networks at 'method' (got "
                            f"{self.networks!r})")

    def _initial(self, latents, members, ipc, seed, gen, run=None, classes=None) -> torch.Tensor:  # never split
        if self.init != "correct":
            initial = super()._initial(latents, members, ipc, seed, gen, run)
        else:
            judge = run.experts.judge()
            picks = []
            for k, idx in enumerate(members):
                order = torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)]
                with torch.no_grad():
                    right = torch.cat([judge(run.inputs.real(order[i : i + 512])).argmax(1) == k
                                       for i in range(0, len(order), 512)])
                ranked = torch.cat([order[right], order[~right]])  # the correctly classified first, in drawn order
                picks.append(ranked[: ipc * self.factor**2])
            initial = latents.latents[torch.cat(picks)].to(torch.float32).clone()
            if self.factor > 1 and self._tiles() == "latent":
                initial = torch.cat([tile(part, self.factor) for part in initial.split(ipc * self.factor**2)])
        if self.learn_labels:
            judge = run.label_judge or run.experts.judge()
            with torch.no_grad():
                run.label_init = torch.cat([judge(run.syn_batch(initial, k)) for k in range(run.num_classes)])
        return initial

    def prepare(self, spec: NetSpec, run: Run, context: DistillContext) -> None:
        if run.device.type != "cpu":
            raise DataError(f"mtt runs on the CPU only for now (its expert buffer and unroll stay there); got device "
                            f"{run.device}: leave DistillContext.device unset")
        run.experts = ExpertBuffer.load_or_train(spec, run, experts=self.experts, epochs=self.buffer_epochs,
                                                 lr=self.expert_lr, batch=self.expert_batch,
                                                 cache_dir=context.cache_dir, progress=context.progress,
                                                 epoch_steps=self.epoch_steps)
        if self.label_init == "teacher":
            if context.teacher is None:
                raise DataError("mtt label_init 'teacher' needs a teacher: pass DistillContext(teacher=...) (latentdd "
                                "distill and run fit or load the teacher: section teacher)")
            run.label_judge = TeacherEmbedding(context.teacher, run.inputs.mean, run.inputs.std).eval()

    @property
    def uses_teacher(self) -> bool:
        return self.label_init == "teacher"

    @property
    def continuable(self) -> bool:
        return self.max_start_epoch_final is None  # DATM's window rises over the whole run

    def network_source(self, spec: NetSpec, run: Run) -> Trajectories:
        return Trajectories(run.experts, spec.build(torch.Generator().manual_seed(0)), run.gen, syn_lr=self.syn_lr,
                            lr_lr=self.lr_lr, label_init=run.label_init if self.learn_labels else None,
                            lr_labels=self.lr_labels)

    def window(self, it: int) -> tuple[int, int]:
        """[low, high) of the start epochs at iteration `it`: DATM's upper bound rising linearly to
        max_start_epoch_final, or fixed at max_start_epoch."""
        high = self.max_start_epoch
        if self.max_start_epoch_final is not None:
            high += int((self.max_start_epoch_final - self.max_start_epoch) * it / max(self.iterations - 1, 1))
        return self.min_start_epoch, high

    def iterate(self, run: Run, syn, optimizer, source: Trajectories, it: int, check) -> dict[str, float]:
        start, target = source.draw(*self.window(it), self.expert_epochs)
        x_all = torch.cat([run.syn_batch(syn, k) for k in range(run.num_classes)])  # (K*f*f*ipc, C, S, S)
        y_all = source.targets(torch.cat([run.labels(k) for k in range(run.num_classes)]))
        size = self.batch_syn or len(x_all)
        batches = []
        for _ in range(self.syn_steps):
            pick = torch.randperm(len(x_all), generator=run.gen)[:size]
            x = x_all[pick]
            if run.augment is not None:
                x = run.augment(x, run.gen)
            batches.append((x, y_all[pick]))
        loss = unroll_loss(source.model, start, target, batches, source.syn_lr)
        check.step(loss, it)
        source.step_lr()
        return {"match": float(loss.detach()), "syn_lr": float(source.syn_lr.detach())}

    def describe(self, run: Run) -> dict:
        low, high = self.window(self.iterations - 1)
        return {"syn_steps": self.syn_steps, "expert_epochs": self.expert_epochs,
                "start_epochs": [self.min_start_epoch, self.max_start_epoch], "start_epochs_at_the_end": [low, high],
                "learned_labels": self.learn_labels, **({"label_init": self.label_init} if self.learn_labels else {}),
                **({"label_teacher": run.label_judge.teacher.summary()} if run.label_judge is not None else {})}
