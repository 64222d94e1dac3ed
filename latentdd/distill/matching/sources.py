"""Where a matching run's networks come from: a fresh random ConvNet each iteration (`FreshNetworks`),
IDM/BACON's in-loop pool of networks trained between iterations (`InLoopPool`), networks trained
once and snapshotted (`NetworkBank`), or the soft protocol's trained teacher (`TeacherNetwork`)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from latentdd.cache import cached_state
from latentdd.cachekey import content_key, tensor_sha256
from latentdd.checkpoint import StateRejected, load_optimizer
from latentdd.distill.matching.inputs import Run
from latentdd.nn.convnet import ConvNet
from latentdd.progress import progress_bar


@dataclass
class Net:
    """A network the matching sees through; `optimizer` and `accuracy` only for trained ones."""

    model: ConvNet
    optimizer: torch.optim.Optimizer | None = None
    accuracy: float = 0.0  # percent correct over its last training round


@dataclass
class NetSpec:
    """How to build the ConvNets of a run (their input follows the embedding)."""

    channels: int
    num_classes: int
    size: int
    width: int
    depth: int
    norm: str

    @property
    def features(self) -> int:
        """Embedding width of these ConvNets (ConvNet pads a 28 px input by 3, to 32 px maps)."""
        size = 32 if self.size == 28 else self.size
        return self.width * (size // 2**self.depth) ** 2

    def build(self, gen: torch.Generator) -> ConvNet:
        """A freshly initialised ConvNet; its initialisation draws one seed from `gen`."""
        with seeded_from(gen):
            return ConvNet(self.channels, self.num_classes, self.size, width=self.width, depth=self.depth,
                           norm=self.norm)


class seeded_from:
    """Run a block with torch's global RNG seeded from `gen` (module init draws from it), then restore it."""

    def __init__(self, gen: torch.Generator) -> None:
        self.seed = int(torch.randint(2**62, (1,), generator=gen))

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        torch.random.set_rng_state(self.state)


class _FixedSource:
    """A network source with nothing to train between iterations and nothing to checkpoint.

    Every source provides next(it) -> Net, after_step(run), state() / load(state) (what a
    checkpoint holds) and record() (what the result's extras say about it)."""

    def after_step(self, run: Run) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load(self, state: dict) -> None:
        pass


class FreshNetworks(_FixedSource):
    """A new randomly initialised network every iteration (DM, DC): nothing to train or keep."""

    def __init__(self, spec: NetSpec, gen: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.spec, self.gen, self.device = spec, gen, device

    def next(self, it: int) -> Net:
        return Net(self.spec.build(self.gen).to(self.device))  # initialised on the CPU: the same on every device

    def record(self) -> dict:
        return {"networks": "fresh random ConvNet each iteration"}


class InLoopPool:
    """IDM/BACON's pool: `start` networks, one more every `add_every` iterations up to `max_size`;
    after each iteration `train_nets` of them train `train_steps` SGD steps on real batches, so the
    pool spans networks at different stages of training."""

    def __init__(self, spec: NetSpec, gen: torch.Generator, *, start: int, add_every: int, max_size: int,
                 train_nets: int, train_steps: int, lr: float, momentum: float, weight_decay: float,
                 batch: int, device: torch.device | str = "cpu") -> None:
        self.spec, self.gen, self.device = spec, gen, device
        self.add_every, self.max_size = add_every, max_size
        self.train_nets, self.train_steps, self.batch = train_nets, train_steps, batch
        self.sgd = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self.nets = [self._new() for _ in range(start)]

    def _new(self) -> Net:
        model = self.spec.build(self.gen).to(self.device)
        return Net(model, torch.optim.SGD(model.parameters(), **self.sgd))

    def next(self, it: int) -> Net:
        if it > 0 and it % self.add_every == 0 and len(self.nets) < self.max_size:
            self.nets.append(self._new())
        return self.nets[int(torch.randint(len(self.nets), (1,), generator=self.gen))]

    def after_step(self, run: Run) -> None:
        for _ in range(self.train_nets):
            self._train(self.nets[int(torch.randint(len(self.nets), (1,), generator=self.gen))], run, self.gen,
                        self.train_steps)

    def _train(self, net: Net, run: Run, gen: torch.Generator, steps: int) -> None:
        """`steps` SGD steps on random real batches of every class; sets the running accuracy."""
        if steps == 0:
            return
        correct = seen = 0
        for _ in range(steps):
            pick = run.all_members[torch.randint(len(run.all_members), (self.batch,), generator=gen)]
            with torch.no_grad():
                x = run.inputs.real(pick)  # (b, C, S, S)
                if run.augment is not None:
                    x = run.augment(x, gen)
            y = run.all_labels[pick].to(x.device)
            logits = net.model(x)
            loss = F.cross_entropy(logits, y)
            net.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            net.optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        net.accuracy = 100.0 * correct / seen

    def state(self) -> dict:
        return {"pool": [{"model": n.model.state_dict(), "optimizer": n.optimizer.state_dict(),
                          "accuracy": n.accuracy} for n in self.nets]}

    def load(self, state: dict) -> None:
        if not len(self.nets) <= len(state["pool"]) <= self.max_size:
            raise StateRejected(f"its pool holds {len(state['pool'])} networks, not {len(self.nets)} to {self.max_size}")
        while len(self.nets) < len(state["pool"]):
            self.nets.append(self._new())
        for net, saved in zip(self.nets, state["pool"]):
            net.model.load_state_dict(saved["model"])
            load_optimizer(net.optimizer, saved["optimizer"])
            net.accuracy = float(saved["accuracy"])

    def record(self) -> dict:
        return {"networks": "in-loop pool", "pool_size": len(self.nets), "pool_add_every": self.add_every}


class TeacherEmbedding(torch.nn.Module):
    """The teacher as a matching network: the run's normalised pixel inputs -> the teacher's penultimate features.

    The matching normalises decoded pixels with the decoded real latents' mean/std (`Inputs`); the teacher
    takes [0, 1] images and normalises them with its own train split's (`Teacher.features`), so `embed`
    undoes the first before the second. The teacher's weights stay frozen.
    """

    def __init__(self, teacher, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.teacher = teacher
        self.model = teacher.model  # registered, so that .to() and the state dict see the teacher's weights
        self.register_buffer("in_mean", mean.view(1, -1, 1, 1).clone())
        self.register_buffer("in_std", std.view(1, -1, 1, 1).clone())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.features(x * self.in_std + self.in_mean)

    @property
    def classifier(self) -> torch.nn.Module:
        """The teacher's last layer, features -> logits (what BACON and IDM's cross-entropy term read)."""
        return self.model.classifier if hasattr(self.model, "classifier") else self.model.fc  # ConvNet, VGG / ResNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.model(self.teacher._inputs(x * self.in_std + self.in_mean))


class TeacherNetwork(_FixedSource):
    """The trained teacher every iteration (DM or BACON's loss in the teacher's feature space, issue 34's
    teacher-aware matching): one network, trained on all real data, never changed."""

    def __init__(self, model: TeacherEmbedding) -> None:
        self.model = model

    def next(self, it: int) -> Net:
        return Net(self.model)

    def record(self) -> dict:
        return {"networks": "teacher", "teacher": self.model.teacher.summary()}


class NetworkBank(_FixedSource):
    """Networks trained on the real data ONCE, snapshotted at several points of their training and
    cached by content; each iteration samples one snapshot. It stands in for the in-loop pool (whose
    training is most of BACON/IDM's cost) and gives DM trained networks besides random ones.

    snapshots: [(state_dict, train accuracy % over the steps before the snapshot)].
    train_seconds: the bank's training time, where it was trained (kept in the cache, None for a bank
        cached before it was recorded): a set's time to accuracy is its distillation's seconds plus these.
    """

    def __init__(self, spec: NetSpec, gen: torch.Generator, snapshots: list[tuple[dict, float]],
                 cached: bool, train_seconds: float | None = None, device: torch.device | str = "cpu") -> None:
        self.gen, self.snapshots, self.cached, self.train_seconds = gen, snapshots, cached, train_seconds
        self.model = spec.build(torch.Generator().manual_seed(0)).to(device)  # weights come from the snapshots

    @classmethod
    def load_or_train(cls, spec: NetSpec, run: Run, *, nets: int, steps: tuple[int, ...], lr: float,
                      momentum: float, weight_decay: float, batch: int, cache_dir: str | Path | None,
                      progress: bool) -> NetworkBank:
        settings = {"spec": dataclasses.asdict(spec), "nets": nets, "steps": list(steps), "lr": lr,
                    "momentum": momentum, "weight_decay": weight_decay, "batch": batch,
                    "dsa": None if run.augment is None else run.augment.config.strategy}
        key = content_key("network-bank", settings=settings, inputs=tensor_sha256(run.inputs.rows),
                          labels=tensor_sha256(run.all_labels))
        path = Path(cache_dir) / "network_bank" / f"{key[:24]}.safetensors" if cache_dir else None

        def load(state: dict) -> NetworkBank:
            if state["key"] != key:
                raise StateRejected("it is the bank of other settings or data")
            snapshots = [(s["model"], s["accuracy"]) for s in state["snapshots"]]
            if len(snapshots) != nets * len(set(steps)):
                raise StateRejected(f"it holds {len(snapshots)} snapshots, not {nets * len(set(steps))}")
            shapes = {k: v.shape for k, v in spec.build(torch.Generator().manual_seed(0)).state_dict().items()}
            for weights, accuracy in snapshots:
                if {k: getattr(v, "shape", None) for k, v in weights.items()} != shapes:
                    raise StateRejected("a snapshot's weights do not fit the networks (other names or shapes)")
                if not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 100:
                    raise StateRejected(f"a snapshot's accuracy {accuracy!r} is not a percentage")
            return cls(spec, run.gen, snapshots, True, state.get("train_seconds"), device=run.device)

        def build() -> NetworkBank:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(0)  # a bank depends on the data and its settings, not the run's seed
            pool = InLoopPool(spec, gen, start=nets, add_every=1, max_size=nets, train_nets=0, train_steps=0, lr=lr,
                              momentum=momentum, weight_decay=weight_decay, batch=batch, device=run.device)
            snapshots = []
            bar = progress_bar(total=nets * max(steps), desc="network bank", disable=not progress, unit="step")
            for net in pool.nets:
                done = 0
                for target in sorted(set(steps)):
                    pool._train(net, run, gen, target - done)
                    bar.update(target - done)
                    done = target
                    snapshots.append(({k: v.clone() for k, v in net.model.state_dict().items()}, net.accuracy))
            bar.close()
            return cls(spec, run.gen, snapshots, False, time.perf_counter() - t0, device=run.device)

        def state(bank: NetworkBank) -> dict:
            return {"key": key, "settings": settings, "train_seconds": bank.train_seconds,
                    "snapshots": [{"model": m, "accuracy": a} for m, a in bank.snapshots]}

        return cached_state(path, build, state=state, load=load, otherwise="the bank is trained again")[0]

    def next(self, it: int) -> Net:
        weights, accuracy = self.snapshots[int(torch.randint(len(self.snapshots), (1,), generator=self.gen))]
        self.model.load_state_dict(weights)
        return Net(self.model, None, accuracy)

    def record(self) -> dict:
        return {"networks": "network bank", "bank_snapshots": len(self.snapshots), "bank_cached": self.cached,
                "bank_train_seconds": self.train_seconds}
