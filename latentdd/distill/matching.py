"""The matching engine: every method that optimises a synthetic set against the real one.

A matching method optimises the synthetic variables -- latents, or pixels in the identity
latent space (`--vae pixel`) -- so that networks see them as they see real data. The
engine owns everything the methods share; a method is a small registered subclass that
sets its reference's defaults and says how one class is scored (`class_loss`), where its
networks come from (`network_source`), and, when it needs more than one optimiser step
an iteration (DC's outer/inner loops), how an iteration runs (`iterate`).

What the engine provides:
- the variables: (K*IPC, c, h, w), grouped by class, initialised from random real latents
  of the class ("real") or its k-means centroids ("kmeans"); with factorization each
  holds factor x factor sub-latents (tiles "latent"), or the set holds factor**2 whole latents per
  stored image, each decoded, pooled and tiled into it at render time (tiles "decoded");
- the embedding (`Inputs`): the latents themselves ("latent": ConvNets built for the latent
  shape), or decode -> normalised pixels -> ConvNet ("pixel"; the real latents are decoded
  once, up front, the synthetic ones every iteration, with gradients);
- siamese DSA: one augmentation draw per class per iteration, applied to the real and the
  synthetic batch alike;
- a network source: a fresh random ConvNet each iteration (`FreshNetworks`, DM/DC), or
  the in-loop pool of IDM/BACON (`InLoopPool`), networks trained briefly on real data
  between iterations;
- a fast forward of those networks (`Embedder`): every iteration's network is copied into one
  module per run, which torch.compile compiles once (`compile`), and the real batch, which needs
  no gradient, can run in bfloat16 (`real_precision`);
- the optimiser of the synthetic set: SGD (the references') or Adam;
- checkpoints (`latentdd.state`: safetensors + JSON, never a pickle, a checksum beside) keyed by
  `latentdd.cachekey`, resume bit-identical to an uninterrupted run; a checkpoint is checked
  before it is resumed (checksum; iteration, shape, finite values, within the divergence limit
  of the initial set; optimiser, networks and generator load), and one that fails is ignored
  with a warning naming it, the run starting as if it had never been there;
- a progress bar showing the loss terms, a stop with advice on NaN or divergence (measured
  against the initial set, also after a resume), and the loss curve in the result's extras.

All randomness comes from one torch.Generator seeded with `seed`; nothing is chosen by
test accuracy: the result is the last iteration's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.cachekey import content_key, tensor_sha256
from latentdd.config import positive_int
from latentdd.distill.base import DistillContext, assemble, check_distill_input, class_points, uniform_weights
from latentdd.distill.quantize import KMeansDistiller, quantization_error
from latentdd.errors import DataError
from latentdd.evaluate.convnet import ConvNet, default_depth
from latentdd.evaluate.dsa import DiffAugment, DSAConfig
from latentdd.evaluate.factorization import check_factor, tile, untile
from latentdd.evaluate.trainer import CompileStatus
from latentdd.io import checksum_path
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.progress import progress_bar
from latentdd.state import StateRejected, check_count, load_optimizer, restore, save_state

log = logging.getLogger(__name__)

EMBEDDINGS = ("latent", "pixel")
INITS = ("real", "kmeans")
TILES = ("latent", "decoded")  # what a factorized tile is: MatchingDistiller.tiles
OPTIMIZERS = ("sgd", "adam")
COMPILE_MODES = ("off", "auto", "on")
REAL_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": None}  # auto: native_bfloat16
CHECKPOINT_FILE = "matching_checkpoint.safetensors"  # latentdd.state: tensors, the rest as JSON, a checksum beside
_OLD_CHECKPOINTS = ("bacon_checkpoint.pt", "bacon_checkpoint.safetensors")  # earlier formats: never resumed
# DSA groups that make sense on latent maps: colour and cutout act on pixel intensities.
LATENT_DSA = "crop_flip_scale_rotate"
# The pixel embedding keeps every real latent decoded (float32): refuse above this many bytes.
PIXEL_CACHE_MAX_BYTES = 4 * 2**30
_DECODE_BATCH = 1024


# ---------------------------------------------------------------------------------------
# Networks


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

    def __init__(self, spec: NetSpec, gen: torch.Generator) -> None:
        self.spec, self.gen = spec, gen

    def next(self, it: int) -> Net:
        return Net(self.spec.build(self.gen))

    def record(self) -> dict:
        return {"networks": "fresh random ConvNet each iteration"}


class InLoopPool:
    """IDM/BACON's pool: `start` networks, one more every `add_every` iterations up to `max_size`;
    after each iteration `train_nets` of them train `train_steps` SGD steps on real batches, so the
    pool spans networks at different stages of training."""

    def __init__(self, spec: NetSpec, gen: torch.Generator, *, start: int, add_every: int, max_size: int,
                 train_nets: int, train_steps: int, lr: float, momentum: float, weight_decay: float,
                 batch: int) -> None:
        self.spec, self.gen = spec, gen
        self.add_every, self.max_size = add_every, max_size
        self.train_nets, self.train_steps, self.batch = train_nets, train_steps, batch
        self.sgd = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self.nets = [self._new() for _ in range(start)]

    def _new(self) -> Net:
        model = self.spec.build(self.gen)
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
            y = run.all_labels[pick]
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


class NetworkBank(_FixedSource):
    """Networks trained on the real data ONCE, snapshotted at several points of their training and
    cached by content; each iteration samples one snapshot. It stands in for the in-loop pool (whose
    training is most of BACON/IDM's cost) and gives DM trained networks besides random ones.

    snapshots: [(state_dict, train accuracy % over the steps before the snapshot)].
    train_seconds: the bank's training time, where it was trained (kept in the cache, None for a bank
        cached before it was recorded): a set's time to accuracy is its distillation's seconds plus these.
    """

    def __init__(self, spec: NetSpec, gen: torch.Generator, snapshots: list[tuple[dict, float]],
                 cached: bool, train_seconds: float | None = None) -> None:
        self.gen, self.snapshots, self.cached, self.train_seconds = gen, snapshots, cached, train_seconds
        self.model = spec.build(torch.Generator().manual_seed(0))  # weights come from the snapshots

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
            return cls(spec, run.gen, snapshots, True, state.get("train_seconds"))

        bank = restore(path, load, otherwise="the bank is trained again") if path is not None else None
        if bank is not None:
            return bank
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(0)  # a bank depends on the data and its settings, not the run's seed
        pool = InLoopPool(spec, gen, start=nets, add_every=1, max_size=nets, train_nets=0, train_steps=0, lr=lr,
                          momentum=momentum, weight_decay=weight_decay, batch=batch)
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
        seconds = time.perf_counter() - t0
        if path is not None:
            save_state(path, {"key": key, "settings": settings, "train_seconds": seconds,
                              "snapshots": [{"model": m, "accuracy": a} for m, a in snapshots]})
        return cls(spec, run.gen, snapshots, False, seconds)

    def next(self, it: int) -> Net:
        weights, accuracy = self.snapshots[int(torch.randint(len(self.snapshots), (1,), generator=self.gen))]
        self.model.load_state_dict(weights)
        return Net(self.model, None, accuracy)

    def record(self) -> dict:
        return {"networks": "network bank", "bank_snapshots": len(self.snapshots), "bank_cached": self.cached,
                "bank_train_seconds": self.train_seconds}


class Embedder:
    """The embedding forward of a run's networks, made fast without changing what is matched.

    One module of the run's spec serves every network: `load` copies a network's weights into
    it (a fresh random ConvNet, a pool member or a bank snapshot costs a parameter copy), so
    torch.compile (`compile` auto|on) compiles its `embed` once per input shape for the whole
    run instead of once per network. Mode auto falls back to eager on a compiler failure, and
    says so in `status`. The real batch needs no gradient: with `real_precision` bfloat16 its
    forward runs under CPU/GPU autocast (the matmuls and convolutions in bfloat16, the result
    returned as float32), while the synthetic batch, whose gradient moves the set, stays float32.

    Measured on one core (2560 real 28 px images through ConvNet-3): 6.1 s eager float32, 4.1 s
    compiled, 2.9 s eager bfloat16, 1.6 s compiled bfloat16; the class-mean embedding moves by
    0.1% of its norm in bfloat16.
    """

    def __init__(self, spec: NetSpec, compile: str, real_precision: str) -> None:
        self.model = spec.build(torch.Generator().manual_seed(0)).requires_grad_(False)  # weights come from load
        self.status = CompileStatus(compile)
        self.requested_precision, self.real_precision = real_precision, real_precision
        self.real_dtype = REAL_PRECISIONS[real_precision]  # None until auto meets its device
        model = self.model

        # Two functions, so that each keeps its own few compiled graphs (one per batch size and mode)
        # within dynamo's recompile limit, instead of one function flipping between grad modes.
        def embed_real(x: torch.Tensor) -> torch.Tensor:
            return model.embed(x)

        def embed_syn(x: torch.Tensor) -> torch.Tensor:
            return model.embed(x)

        self.eager = {"real": embed_real, "syn": embed_syn}
        self.forward = dict(self.eager) if compile == "off" else {
            side: torch.compile(fn, dynamic=False) for side, fn in self.eager.items()}
        self.calls = 0

    def load(self, model: torch.nn.Module) -> None:
        """Make the embedding that of `model` (a network of the same spec)."""
        with torch.no_grad():
            for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
                mine.copy_(theirs)

    def _embed(self, side: str, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.forward[side] is self.eager[side]:
            return self.forward[side](x)
        if x.stride() != _dense_strides(x.shape):  # e.g. (784, 1, 28, 1) for one channel: a graph of its own
            x = torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x)
        try:
            return self.forward[side](x)
        except Exception as err:  # noqa: BLE001 - any compiler failure
            self.status.fall_back(f"embedding call {self.calls}", err)
            self.forward = dict(self.eager)
            return self.forward[side](x)

    def real(self, x: torch.Tensor) -> torch.Tensor:
        """(b, C, S, S) real inputs -> (b, F) float32 embeddings, without gradient."""
        if self.real_dtype is None:  # auto: bfloat16 only where the hardware computes in it
            self.real_dtype = torch.bfloat16 if native_bfloat16(x.device) else torch.float32
            self.real_precision = str(self.real_dtype).removeprefix("torch.")
        with torch.no_grad():
            if self.real_dtype == torch.float32:
                return self._embed("real", x)
            with torch.autocast(x.device.type, dtype=self.real_dtype):
                return self._embed("real", x).float()

    def syn(self, x: torch.Tensor) -> torch.Tensor:
        """(m, C, S, S) synthetic inputs -> (m, F) float32 embeddings, differentiable in x."""
        return self._embed("syn", x)

    def record(self) -> dict:
        return {"embedding_forward": {**self.status.record(), "real_precision": self.real_precision,
                                      **({"requested": "auto"} if self.requested_precision == "auto" else {})}}


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX. Elsewhere bfloat16 is emulated: measured 26x slower than float32 for ConvNet-3 on an AMD EPYC CPU
    without them (1280 images, one thread: 129 s against 5 s)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def machine_real_precision() -> str:
    """What real_precision auto runs on this machine's default device (the GPU if there is one)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return "bfloat16" if native_bfloat16(device) else "float32"


def _dense_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a C-contiguous tensor of `shape`, size-1 dimensions included."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


# ---------------------------------------------------------------------------------------
# One run's fixed inputs


@dataclass
class Inputs:
    """How latents become network inputs: the latents themselves, or normalised decoded pixels.

    rows: what `real` indexes -- the latents (N, c, h, w) themselves for "latent"; for "pixel"
    every real latent decoded once, up front, normalised, (N, C, H, W) float32. That costs
    N*C*H*W*4 bytes (Fashion-MNIST at 32 px: 60000 x 1 x 32 x 32 x 4 = 246 MB) and is refused
    above PIXEL_CACHE_MAX_BYTES; decoding each real batch every iteration instead took 26 s
    an iteration on 2 CPU cores there.
    mean, std: (C,) of all decoded real latents, for "pixel".
    """

    embedding: str
    channels: int
    size: int
    rows: torch.Tensor
    decode: object = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def make(cls, embedding: str, latents: Latents, context: DistillContext) -> Inputs:
        c, h, w = latents.latent_shape
        if embedding == "latent":
            if h != w:
                raise DataError(f"latent embedding needs square latents; got {h}x{w}")
            return cls(embedding, c, h, latents.latents)
        if context.decode is None:
            raise DataError("embedding 'pixel' needs the VAE decoder: run it through `latentdd distill` / `run`, "
                            "or pass DistillContext(decode=...)")
        with torch.no_grad():
            shape = context.decode(latents.latents[:1].to(torch.float32)).shape  # (1, C, H, W)
            if len(shape) != 4 or shape[-1] != shape[-2]:
                raise DataError(f"the decoder must give square (n, C, H, W) images; got {tuple(shape)}")
            n = len(latents)
            nbytes = n * math.prod(shape[1:]) * 4
            if nbytes > PIXEL_CACHE_MAX_BYTES:
                raise DataError(
                    f"embedding 'pixel' keeps all {n} real latents decoded: {nbytes / 2**30:.1f} GiB of float32 "
                    f"{tuple(shape[1:])} images, above the {PIXEL_CACHE_MAX_BYTES / 2**30:g} GiB limit "
                    "(latentdd.distill.matching.PIXEL_CACHE_MAX_BYTES); use embedding 'latent', or distil a "
                    "smaller subset of the latents")
            pixels = torch.empty((n, *shape[1:]), dtype=torch.float32)
            for start in range(0, n, _DECODE_BATCH):
                pixels[start : start + _DECODE_BATCH] = context.decode(
                    latents.latents[start : start + _DECODE_BATCH].to(torch.float32))  # in [0, 1]
            mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
            pixels.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        return cls(embedding, shape[1], shape[-1], pixels, context.decode, mean, std)

    def default_depth(self) -> int:
        if self.embedding == "pixel":
            return default_depth(self.size)
        return max(1, int(math.log2(self.size)) - 1)  # poolings that leave maps of at least 2x2

    def real(self, indices: torch.Tensor) -> torch.Tensor:
        """(b,) row indices into the latents -> (b, C, S, S) float32 inputs, without gradient."""
        return self.rows[indices].to(torch.float32)

    def syn(self, z: torch.Tensor) -> torch.Tensor:
        """(n, c, h, w) latents -> (n, C, S, S) inputs, differentiable (decoded each call for "pixel")."""
        if self.embedding == "latent":
            return z
        x = self.decode(z)  # (n, C, H, W) in [0, 1]
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


@dataclass
class Run:
    """What one `distill` call fixes before the first iteration; handed to the method's hooks."""

    inputs: Inputs
    members: list[np.ndarray]  # per class, its global indices
    all_members: torch.Tensor  # (N,) every class's members, concatenated
    all_labels: torch.Tensor  # (N_latents,) labels of every latent, indexed by global index
    ipc: int
    factor: int
    batch_real: int
    augment: DiffAugment | None
    gen: torch.Generator
    embedder: Embedder | None = None  # the networks' fast forward (`Embedder`)
    weights: torch.Tensor | None = None  # (K*ipc,) the set's weights (`initial_weights`); None -> uniform
    tiles: str = "latent"  # MatchingDistiller.tiles

    @property
    def num_classes(self) -> int:
        return len(self.members)

    @property
    def per_class(self) -> int:
        """Synthetic variables per class: ipc stored latents, or with tiles "decoded" one whole latent a tile."""
        return self.ipc * self.factor**2 if self.tiles == "decoded" else self.ipc

    def labels(self, k: int) -> torch.Tensor:
        """(factor**2 * ipc,) labels of class k's synthetic network inputs."""
        return torch.full((self.ipc * self.factor**2,), k, dtype=torch.long)

    def real_batch(self, k: int) -> torch.Tensor:
        """(b, C, S, S): up to batch_real random real inputs of class k (without gradient)."""
        idx = self.members[k]
        pick = torch.from_numpy(idx)[torch.randperm(len(idx), generator=self.gen)[: self.batch_real]]
        return self.inputs.real(pick)

    def syn_batch(self, syn: torch.Tensor, k: int) -> torch.Tensor:
        """(factor**2 * ipc, C, S, S): class k's synthetic inputs, differentiable.

        Split after decoding: the evaluator splits the decoded stored image, so for "pixel" the
        decoder sees the whole tiled latent, as at render time. For "latent" this unfolds the latent.
        With tiles "decoded" each tile's latent is decoded whole, then pooled and tiled as at render
        time, and split again as the evaluator does."""
        x = self.inputs.syn(syn[k * self.per_class : (k + 1) * self.per_class])
        return untile(tile(x, self.factor) if self.tiles == "decoded" else x, self.factor)

    def class_pair(self, syn: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(real batch, synthetic batch) of class k after one shared (siamese) DSA draw."""
        x_real, x_syn = self.real_batch(k), self.syn_batch(syn, k)
        if self.augment is not None:
            x_real, x_syn = self.augment.siamese(x_real, x_syn, generator=self.gen)
        return x_real, x_syn


# ---------------------------------------------------------------------------------------
# The engine


@dataclass
class MatchingDistiller:
    """Base of the matching methods (see the module docstring). Subclasses register themselves,
    set `name` and their reference's defaults, and implement `class_loss` (and `network_source`,
    `iterate` where they differ).

    embedding: "latent" or "pixel" (needs the decoder in the DistillContext).
    init: "real" (random real latents of the class) or "kmeans" (its k-means centroids).
    iterations: iterations of the synthetic set (one covers every class).
    optimizer, lr, momentum: of the synthetic variables ("sgd" with momentum, or "adam"; lr
        applies to the variables as stored: latents, or [0, 1] pixels for --vae pixel).
    batch_real: real inputs per class per iteration; None -> the method's default.
    width, depth (None -> ConvNet-3 for 32 px pixels; for latents, as many 2x poolings as leave
        maps of at least 2x2), norm: the ConvNets.
    dsa: siamese DSA per class per iteration; dsa_strategy None -> all six groups on pixels,
        crop/flip/scale/rotate on latents; flip False for classes that flipping changes.
    divergence: stop with advice once a synthetic value exceeds this many times the largest
        absolute value of the initial set (lr far too large).
    checkpoint_every: iterations between checkpoints and curve points.
    compile: torch.compile the networks' embedding forward, once per run ("off" | "auto": fall
        back to eager on a compiler failure | "on"); see `Embedder`.
    real_precision: "float32", "bfloat16" (autocast) or "auto" (bfloat16 where the device computes in it
        natively, `native_bfloat16`, else float32) for the real batch's forward, which needs no gradient;
        the synthetic batch is always float32. The record names the precision that ran.
    networks: "method" (the method's own source: fresh networks for DM/DC, the in-loop pool for
        BACON/IDM) or "bank" (`NetworkBank`: bank_nets networks trained once on the real inputs with
        SGD lr bank_lr, momentum 0.9, batch bank_batch, DSA when dsa is on, snapshotted after each
        of bank_steps steps, cached by content under the context's cache_dir).
    factor: factorization (IDM/BACON's --aug 2; 1 = off): each stored image holds factor**2 tiles,
        initialised from factor**2 * IPC real latents (or centroids) per class; the matching sees
        the tiles upsampled back to full size, as the evaluator trains on them.
    tiles: what a tile is when factor > 1. "latent": a 1/factor part of one stored latent (its
        sub-latents average-pooled and tiled), the stored image that latent decoded whole.
        "decoded": a whole latent of its own, decoded, average-pooled by factor and tiled into the
        stored image at render time -- IDM/BACON's pixel tiles, each from the decoder's full-size
        output; the set holds factor**2 latents per stored image. Needs embedding "pixel" and
        uniform weights.
    """

    name: ClassVar[str] = "matching"
    uses_context: ClassVar[bool] = True

    embedding: str = "latent"
    init: str = "real"
    iterations: int = 20000
    optimizer: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.5
    batch_real: int | None = None
    width: int = 128
    depth: int | None = None
    norm: str = "instancenorm"
    dsa: bool = True
    dsa_strategy: str | None = None
    flip: bool = True
    divergence: float = 1e3
    checkpoint_every: int = 100
    compile: str = "off"
    real_precision: str = "float32"
    factor: int = 1
    tiles: str = "latent"
    networks: str = "method"
    bank_nets: int = 4
    bank_steps: tuple[int, ...] = (0, 50, 100, 200, 400)
    bank_lr: float = 0.01
    bank_batch: int = 256

    # Checked in __post_init__: positive integers, of which these may be None.
    _positive: ClassVar[tuple[str, ...]] = ("iterations", "width", "checkpoint_every", "factor", "batch_real",
                                            "depth")
    _optional: ClassVar[tuple[str, ...]] = ("batch_real", "depth")

    def __post_init__(self) -> None:
        for field, allowed in (("embedding", EMBEDDINGS), ("init", INITS), ("optimizer", OPTIMIZERS),
                               ("compile", COMPILE_MODES), ("real_precision", tuple(REAL_PRECISIONS))):
            if getattr(self, field) not in allowed:
                raise DataError(f"{self.name} {field} must be one of {', '.join(allowed)}; got {getattr(self, field)!r}")
        for field in self._positive:
            positive_int(getattr(self, field), f"{self.name} {field}", optional=field in self._optional)
        if not self.lr > 0:
            raise DataError(f"{self.name} lr must be > 0; got {self.lr!r}")
        if not self.divergence > 1:
            raise DataError(f"{self.name} divergence must be > 1; got {self.divergence!r}")
        if self.tiles not in TILES:
            raise DataError(f"{self.name} tiles must be one of {', '.join(TILES)}; got {self.tiles!r}")
        if self.tiles == "decoded" and self.embedding != "pixel":
            raise DataError(f"{self.name} tiles 'decoded' decodes each tile's latent, so it needs embedding 'pixel' "
                            f"(got {self.embedding!r}); with embedding 'latent' use tiles 'latent'")
        if self.networks not in ("method", "bank"):
            raise DataError(f"{self.name} networks must be method (its own source) or bank; got {self.networks!r}")
        steps = tuple(self.bank_steps)
        if isinstance(self.bank_nets, bool) or not isinstance(self.bank_nets, int) or self.bank_nets < 1 or not steps \
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in steps) or not self.bank_lr > 0:
            raise DataError(f"{self.name} bank_nets must be a positive integer, bank_steps non-negative step counts "
                            f"and bank_lr > 0; got {self.bank_nets!r}, {self.bank_steps!r}, {self.bank_lr!r}")

    # ---- hooks ------------------------------------------------------------------------

    def default_batch_real(self, ipc: int) -> int:
        return 256

    def network_source(self, spec: NetSpec, run: Run):
        return FreshNetworks(spec, run.gen)

    def class_loss(self, net: Net, e_syn: torch.Tensor, e_real: torch.Tensor, run: Run, k: int,
                   it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embeddings of class k (synthetic (m, F) with gradient, real (b, F) without) -> (0-d loss, its terms)."""
        raise NotImplementedError

    def initial_weights(self, latents: Latents, members: list[np.ndarray], syn: torch.Tensor) -> torch.Tensor | None:
        """(K*ipc,) weights of the set, each class's summing to 1, fixed from its initial points syn
        (K*ipc, c, h, w); they reach `class_loss` as run.weights and the result. None -> uniform."""
        return None

    def describe(self, run: Run) -> dict:
        """Settings resolved for this run (defaults that depend on the IPC), for the result's extras."""
        return {}

    def iterate(self, run: Run, syn: torch.nn.Parameter, optimizer: torch.optim.Optimizer, source, it: int,
                check) -> dict[str, float]:
        """One iteration: a network from the source, every class's loss through it, one step.
        -> the loss terms averaged over classes."""
        net = source.next(it)
        net.model.requires_grad_(False)  # gradients flow to the synthetic set only
        run.embedder.load(net.model)
        total = syn.new_zeros(())
        terms: dict[str, float] = {}
        for k in range(run.num_classes):
            x_real, x_syn = run.class_pair(syn, k)
            e_real = run.embedder.real(x_real)  # (b, F)
            e_syn = run.embedder.syn(x_syn)  # (m, F)
            loss, parts = self.class_loss(net, e_syn, e_real, run, k, it)
            total = total + loss
            for name, value in parts.items():
                terms[name] = terms.get(name, 0.0) + float(value.detach()) / run.num_classes
        net.model.requires_grad_(True)
        check.step(total, it)
        source.after_step(run)
        return terms

    # ---- the loop ---------------------------------------------------------------------

    def distill(self, latents: Latents, ipc: int, *, seed: int, context: DistillContext | None = None) -> SyntheticLatents:
        context = context or DistillContext()
        t_setup = time.perf_counter()
        members = check_distill_input(latents, ipc, seed)
        self._check_factor(latents, members, ipc)
        inputs = Inputs.make(self.embedding, latents, context)
        check_factor(self.factor, inputs.size, inputs.size, f"{self.embedding} network input")
        gen = torch.Generator().manual_seed(seed)
        strategy = self.dsa_strategy or (LATENT_DSA if self.embedding == "latent" else DSAConfig.strategy)
        augment = DiffAugment(DSAConfig(strategy=strategy), flip=self.flip) if self.dsa else None
        run = Run(inputs, members, torch.from_numpy(np.concatenate(members)), latents.labels, ipc, self.factor,
                  self.batch_real or self.default_batch_real(ipc), augment, gen, tiles=self._tiles())
        depth = self.depth or inputs.default_depth()
        spec = NetSpec(inputs.channels, len(members), inputs.size, self.width, depth, self.norm)
        run.embedder = Embedder(spec, self.compile, self.real_precision)

        initial = self._initial(latents, members, ipc, seed, gen)  # (K*per_class, c, h, w)
        run.weights = self.initial_weights(latents, members, initial)
        if run.weights is not None and run.tiles == "decoded":
            raise DataError(f"{self.name} tiles 'decoded' stores factor**2 latents an image, so the set's weights "
                            "must be uniform; leave weights at uniform or use tiles 'latent'")
        bank = None
        if self.networks == "bank":
            bank = NetworkBank.load_or_train(spec, run, nets=self.bank_nets, steps=tuple(self.bank_steps),
                                             lr=self.bank_lr, momentum=0.9, weight_decay=5e-4,
                                             batch=self.bank_batch, cache_dir=context.cache_dir,
                                             progress=context.progress)
        # The divergence stop measures against the initial set, also in a resumed run.
        limit = self.divergence * max(float(initial.abs().max()), 1e-3)
        fresh_gen = gen.get_state()

        def build():
            """The set, its optimiser and the network source as a fresh run starts them (gen included)."""
            gen.set_state(fresh_gen)
            syn = torch.nn.Parameter(initial.clone())
            return syn, self._make_optimizer(syn), bank if bank is not None else self.network_source(spec, run)

        key = self._checkpoint_key(latents, ipc, seed)
        path = Path(context.checkpoint_dir) / CHECKPOINT_FILE if context.checkpoint_dir else None
        resumed = self._resume(path, key, initial, limit, build, gen) if path is not None else None
        (syn, optimizer, source), start, elapsed, curve = resumed or (build(), 0, 0.0, [])

        check = _Guard(self, syn, optimizer, path, limit, start)
        bar = progress_bar(range(start, self.iterations), initial=start, total=self.iterations, desc=self.name,
                           disable=not context.progress, unit="it")
        window: dict[str, list[float]] = {}
        setup_seconds = time.perf_counter() - t_setup
        t0 = time.perf_counter() - elapsed
        for it in bar:
            for name, value in self.iterate(run, syn, optimizer, source, it, check).items():
                window.setdefault(name, []).append(value)
            if (it + 1) % self.checkpoint_every == 0 or it + 1 == self.iterations:
                curve.append({"iteration": it + 1, "seconds": time.perf_counter() - t0,
                              **{n: float(np.mean(v)) for n, v in window.items()}})
                window = {}
                bar.set_postfix({n: f"{v:.3g}" for n, v in curve[-1].items() if n not in ("iteration", "seconds")})
                if path is not None:
                    save_state(path, {"key": key, "iteration": it + 1, "seconds": time.perf_counter() - t0,
                                      "curve": curve, "syn": syn, "optimizer": optimizer.state_dict(),
                                      "generator": gen.get_state(), "source": source.state()})
        seconds = time.perf_counter() - t0
        return self._result(latents, members, syn.detach(), run, seed, {
            "iterations": self.iterations, "seconds": seconds, "setup_seconds": setup_seconds,
            "iterations_per_second": (self.iterations - start) / max(seconds - elapsed, 1e-9),
            "resumed_from": start, "batch_real": run.batch_real, "depth": depth,
            "dsa_strategy": strategy if self.dsa else None, "embedding_features": spec.features,
            **source.record(), **run.embedder.record(), **self.describe(run), "loss_curve": curve})

    # ---- pieces -----------------------------------------------------------------------

    def _resume(self, path: Path, key: str, initial: torch.Tensor, limit: float, build, gen: torch.Generator):
        """The run as the checkpoint at `path` left it: ((syn, optimizer, source), iteration, seconds,
        curve), with gen restored; or None (no checkpoint, or one that cannot be resumed: a warning
        says why, and `build` starts the run afresh)."""
        for old in _OLD_CHECKPOINTS:
            if path.with_name(old).is_file():
                log.warning("ignoring %s: a checkpoint of an earlier latentdd version (those in .pt files are pickles, "
                            "which are never loaded: loading one can run any code); delete it", path.with_name(old))

        def load(state: dict):
            if state["key"] != key:
                raise StateRejected("it is another run's (other method, parameters, IPC, seed or latents)")
            it, z = state["iteration"], state["syn"]
            if isinstance(it, int) and it > self.iterations:
                raise StateRejected(f"it is a longer run's (iteration {it}, past this run's {self.iterations}), "
                                    "which cannot be rewound")
            check_count(it, self.iterations, "iteration")
            if not isinstance(z, torch.Tensor) or z.shape != initial.shape or z.dtype != initial.dtype:
                what = f"{tuple(z.shape)} {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
                raise StateRejected(f"its synthetic set is {what}, this run's {tuple(initial.shape)} {initial.dtype}")
            if bool(z.min() == z.max()) and bool(initial.min() != initial.max()):
                raise StateRejected(f"its synthetic set is constant (every value {float(z.flatten()[0]):.3g})")
            peak = float(z.abs().max())
            if peak > limit:
                raise StateRejected(f"its synthetic set's largest |value| {peak:.3g} is over {self.divergence:g}x the "
                                    f"initial set's largest ({limit / self.divergence:.3g})")
            if not isinstance(state["seconds"], (int, float)) or not isinstance(state["curve"], list):
                raise StateRejected("its seconds are not a number, or its loss curve not a list")
            syn, optimizer, source = build()
            with torch.no_grad():
                syn.copy_(z)
            load_optimizer(optimizer, state["optimizer"])
            source.load(state["source"])  # may build networks, drawing from gen: before gen is restored
            gen.set_state(state["generator"])
            return (syn, optimizer, source), it, state["seconds"], state["curve"]

        return restore(path, load, otherwise="this run starts afresh, and its first checkpoint replaces the file")

    def _make_optimizer(self, syn: torch.nn.Parameter) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam([syn], lr=self.lr)
        return torch.optim.SGD([syn], lr=self.lr, momentum=self.momentum)

    def _result(self, latents: Latents, members: list[np.ndarray], syn: torch.Tensor, run: Run, seed: int,
                extras: dict) -> SyntheticLatents:
        num_classes, ipc, per, weights = len(members), run.ipc, run.per_class, run.weights
        per_class = [syn[k * per : (k + 1) * per] for k in range(num_classes)]  # (per, c, h, w) each
        extras["factorization"] = ({"factor": self.factor, "tiles": run.tiles,
                                    "latents_matched_per_class": ipc * self.factor**2} if self.factor > 1 else False)
        # With factorization the points that stand for the class are the tiles' latents, not the mosaics.
        points = (lambda z: z) if run.tiles == "decoded" else (lambda z: untile(z, self.factor))
        extras["quantization_error"] = [
            quantization_error(class_points(latents, idx), points(z).reshape(-1, z[0].numel()).numpy())
            for idx, z in zip(members, per_class)]
        params = {**dataclasses.asdict(self), "ipc": ipc, "seed": seed}
        return assemble(latents, [z.reshape(per, -1).numpy() for z in per_class], method=self.name, params=params,
                        weights=uniform_weights(num_classes, per) if weights is None else weights, extras=extras)

    def _tiles(self) -> str:
        """What a tile is in this run: `tiles`, or "latent" without factorization."""
        return self.tiles if self.factor > 1 else "latent"

    def _check_factor(self, latents: Latents, members: list[np.ndarray], ipc: int) -> None:
        """DataError unless the latents split into factor x factor tiles and every class has factor**2 * ipc."""
        if self.factor == 1:
            return
        _, h, w = latents.latent_shape
        if self.tiles == "latent":
            check_factor(self.factor, h, w, "latent")
        need = ipc * self.factor**2
        smallest = min(range(len(members)), key=lambda k: len(members[k]))
        if len(members[smallest]) < need:
            raise DataError(f"factor {self.factor} starts each class from {need} latents (factor^2 x IPC) but "
                            f"class {latents.class_names[smallest]!r} has {len(members[smallest])}; "
                            "lower --ipc or the factor")

    def _initial(self, latents: Latents, members: list[np.ndarray], ipc: int, seed: int,
                 gen: torch.Generator) -> torch.Tensor:
        """(K*ipc, c, h, w) float32 starting latents, grouped by class; with factorization each
        tiles factor**2 average-pooled real latents (or centroids) of its class (tiles "latent"), or
        those factor**2 * ipc latents a class stand as they are (tiles "decoded": K*ipc*factor**2 rows)."""
        n = ipc * self.factor**2  # sub-latents per class
        if self.init == "kmeans":
            z = KMeansDistiller().distill(latents, n, seed=seed).latents.clone()
        else:
            picks = [torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)[:n]] for idx in members]
            z = latents.latents[torch.cat(picks)].to(torch.float32).clone()  # (K*n, c, h, w)
        if self._tiles() == "decoded" or self.factor == 1:
            return z
        return torch.cat([tile(part, self.factor) for part in z.split(n)])

    def _checkpoint_key(self, latents: Latents, ipc: int, seed: int) -> str:
        """What a checkpoint must match to be resumed: the method, its parameters, ipc, seed and the
        latents' content. `iterations` and `checkpoint_every` are left out, so a finished run can be
        continued with more iterations (no schedule depends on the total)."""
        params = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("iterations", "checkpoint_every")}
        return content_key(f"distill-{self.name}", params=params, ipc=ipc, seed=seed,
                           latents=tensor_sha256(latents.latents), labels=tensor_sha256(latents.labels),
                           class_names=list(latents.class_names))

    def advice(self) -> str:
        """What to change when the optimisation stops on NaN or divergence."""
        return f"Lower lr (now {self.lr})"

    def stop_message(self, it: int, what: str, path: Path | None, resumed_from: int = 0) -> str:
        """resumed_from: the iteration this run resumed from the checkpoint at `path` (0: it did not)."""
        kept = f"; the last checkpoint ({path}) is kept" if path is not None and path.is_file() else ""
        resumed = (f". This run resumed from {path} at iteration {resumed_from}: if the checkpoint is at fault, "
                   "delete it and run again to start afresh") if resumed_from else ""
        return f"{self.name} stopped at iteration {it}: {what}. {self.advice()}{kept}{resumed}"


class _Guard:
    """One optimiser step of the synthetic set, stopping with advice on NaN/inf or divergence."""

    def __init__(self, method: MatchingDistiller, syn: torch.nn.Parameter, optimizer: torch.optim.Optimizer,
                 path: Path | None, limit: float, resumed_from: int) -> None:
        """limit: the largest |value| allowed (divergence x the initial set's largest); resumed_from: the
        iteration the run resumed from the checkpoint at `path` (0: none)."""
        self.method, self.syn, self.optimizer, self.path = method, syn, optimizer, path
        self.limit, self.resumed_from = limit, resumed_from

    def stop(self, it: int, what: str) -> DataError:
        return DataError(self.method.stop_message(it, what, self.path, self.resumed_from))

    def step(self, total: torch.Tensor, it: int) -> None:
        if not torch.isfinite(total):
            raise self.stop(it, f"the loss is {float(total)}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if not torch.isfinite(self.syn.grad).all():
            raise self.stop(it, "a gradient of the synthetic set is NaN or inf")
        self.optimizer.step()
        with torch.no_grad():
            peak = float(self.syn.abs().max())
        if not peak <= self.limit:
            raise self.stop(it, f"the synthetic set diverges (largest |value| {peak:.3g}, over "
                            f"{self.method.divergence:g}x the initial set's largest, "
                            f"{self.limit / self.method.divergence:.3g})")


class seeded_from:
    """Run a block with torch's global RNG seeded from `gen` (module init draws from it), then restore it."""

    def __init__(self, gen: torch.Generator) -> None:
        self.seed = int(torch.randint(2**62, (1,), generator=gen))

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        torch.random.set_rng_state(self.state)


# ---------------------------------------------------------------------------------------
# Checkpoints: `latentdd.state` files (safetensors + JSON, never a pickle, a checksum beside)


def remove_checkpoint(folder: Path) -> None:
    """Delete the checkpoint a run left in `folder`, and the folder if that leaves it empty (only
    what latentdd wrote: anything else in the folder stays)."""
    folder = Path(folder)
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    checksum_path(folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holds files of someone else's
