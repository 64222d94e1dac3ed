"""BACON and IDM in latent space: synthetic latents whose embeddings match the real ones.

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

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.distill.bacon_loss import bacon_loss, dm_loss
from latentdd.distill.base import (
    DistillContext,
    assemble,
    check_distill_input,
    class_points,
    register_distiller,
    uniform_weights,
)
from latentdd.distill.quantize import KMeansDistiller, quantization_error
from latentdd.errors import DataError
from latentdd.evaluate.convnet import ConvNet, default_depth
from latentdd.evaluate.dsa import DiffAugment, DSAConfig
from latentdd.evaluate.factorization import check_factor, tile, untile
from latentdd.io import atomic_write_bytes
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.progress import progress_bar

log = logging.getLogger(__name__)

LOSS_NAMES = ("bacon", "bacon-reference", "dm")
EMBEDDINGS = ("latent", "pixel")
INITS = ("real", "kmeans")
_CHECKPOINT = "bacon_checkpoint.safetensors"  # tensors, and the rest as JSON in its metadata: no pickle
_OLD_CHECKPOINT = "bacon_checkpoint.pt"  # earlier versions pickled the checkpoint: never loaded
# DSA groups that make sense on latent maps: colour and cutout act on pixel intensities.
_LATENT_DSA = "crop_flip_scale_rotate"
# The pixel embedding keeps every real latent decoded (float32): refuse above this many bytes.
PIXEL_CACHE_MAX_BYTES = 4 * 2**30
_DECODE_BATCH = 1024


@dataclass
class _PoolNet:
    model: ConvNet
    optimizer: torch.optim.Optimizer
    accuracy: float = 0.0  # percent correct over its last training round


@register_distiller
@dataclass
class BaconDistiller:
    """Optimise IPC synthetic latents per class against the real latents (see module docstring).

    loss: "bacon" (paper terms), "bacon-reference" (the public code's batch-mean variant),
        "dm" (IDM's mean matching).
    embedding: "latent" or "pixel" (needs the VAE decoder in the DistillContext).
    init: "real" (random real latents of the class) or "kmeans" (its k-means centroids).
    iterations: optimisation steps of the synthetic set (one step covers every class).
    lr, momentum: SGD on the synthetic latents.
    batch_real: real latents per class per iteration; None -> 5000 at IPC 1, else 256.
    ce_weight: weight of the CE term, times the sampled network's train accuracy (%).
    pool_start, pool_add_every (None -> 5 at IPC 1, else 30), pool_max: the network pool.
    train_nets, train_steps, net_lr, net_momentum, net_weight_decay, net_batch: how pool
        networks train on real data after each iteration.
    width, depth (None -> ConvNet-3 for 32 px pixels; for latents, as many 2x poolings as
        leave maps of at least 2x2), norm: the ConvNets.
    dsa: one siamese DSA draw per class per iteration (and per-image DSA when the pool
        trains); dsa_strategy None -> all six groups on pixels, crop/flip/scale/rotate on
        latents; flip False for classes that flipping changes (digits).
    lam: BACON's TV weight (CLIP gets 1 - lam).
    checkpoint_every: iterations between checkpoints (when the context names a folder).
    factor: factorization (IDM/BACON's --aug: 2; 1 = off). Each stored latent (c, h, w)
        holds factor**2 sub-latents, initialised from factor**2 * IPC real latents (or
        k-means centroids) per class, average-pooled and tiled; the matching and the CE
        term see the factor**2 * IPC tiles upsampled back to full size. Evaluate the
        result with EvalConfig(factor=...) set the same.
    """

    name: ClassVar[str] = "bacon"
    uses_context: ClassVar[bool] = True

    loss: str = "bacon"
    embedding: str = "latent"
    init: str = "real"
    iterations: int = 20000
    lr: float = 0.2
    momentum: float = 0.5
    batch_real: int | None = None
    ce_weight: float = 0.5
    pool_start: int = 3
    pool_add_every: int | None = None
    pool_max: int = 100
    train_nets: int = 2
    train_steps: int = 10
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    net_batch: int = 256
    width: int = 128
    depth: int | None = None
    norm: str = "instancenorm"
    dsa: bool = True
    dsa_strategy: str | None = None
    flip: bool = True
    lam: float = 0.8
    checkpoint_every: int = 100
    factor: int = 1

    def __post_init__(self) -> None:
        for field, allowed in (("loss", LOSS_NAMES), ("embedding", EMBEDDINGS), ("init", INITS)):
            if getattr(self, field) not in allowed:
                raise DataError(f"{self.name} {field} must be one of {', '.join(allowed)}; got {getattr(self, field)!r}")
        positive = ("iterations", "pool_start", "pool_max", "net_batch", "width", "checkpoint_every", "factor")
        optional = ("batch_real", "pool_add_every", "depth")
        for field in positive + optional:
            value = getattr(self, field)
            if value is None and field in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{self.name} {field} must be a positive integer; got {value!r}")
        for field in ("train_nets", "train_steps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DataError(f"{self.name} {field} must be a non-negative integer; got {value!r}")
        for field in ("lr", "net_lr"):
            if not getattr(self, field) > 0:
                raise DataError(f"{self.name} {field} must be > 0; got {getattr(self, field)!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise DataError(f"{self.name} lam must lie in [0, 1]; got {self.lam!r}")
        if self.pool_start > self.pool_max:
            raise DataError(f"{self.name} pool_start ({self.pool_start}) exceeds pool_max ({self.pool_max})")

    # -----------------------------------------------------------------------------------

    def distill(self, latents: Latents, ipc: int, *, seed: int, context: DistillContext | None = None) -> SyntheticLatents:
        context = context or DistillContext()
        members = check_distill_input(latents, ipc, seed)
        self._check_factor(latents, members, ipc)
        inputs = _Inputs.make(self.embedding, latents, context)
        check_factor(self.factor, inputs.size, inputs.size, f"{self.embedding} network input")
        num_classes = len(members)
        gen = torch.Generator().manual_seed(seed)
        batch_real = self.batch_real or (5000 if ipc == 1 else 256)
        add_every = self.pool_add_every or (5 if ipc == 1 else 30)
        depth = self.depth or inputs.default_depth()
        strategy = self.dsa_strategy or (_LATENT_DSA if self.embedding == "latent" else DSAConfig.strategy)
        augment = DiffAugment(DSAConfig(strategy=strategy), flip=self.flip) if self.dsa else None

        def new_net() -> _PoolNet:
            with _seeded_from(gen):
                model = ConvNet(inputs.channels, num_classes, inputs.size, width=self.width, depth=depth, norm=self.norm)
            opt = torch.optim.SGD(model.parameters(), lr=self.net_lr, momentum=self.net_momentum,
                                  weight_decay=self.net_weight_decay)
            return _PoolNet(model, opt)

        syn = torch.nn.Parameter(self._initial(latents, members, ipc, seed, gen))  # (K*ipc, c, h, w)
        optimizer = torch.optim.SGD([syn], lr=self.lr, momentum=self.momentum)
        pool = [new_net() for _ in range(self.pool_start)]
        curve: list[dict] = []
        start, elapsed = 0, 0.0
        key = self._checkpoint_key(latents, ipc, seed)
        path = Path(context.checkpoint_dir) / _CHECKPOINT if context.checkpoint_dir else None
        state = _read_state(path) if path is not None else None
        if state is not None:
            # A checkpoint past this run's end (a longer run's) cannot be rewound: start afresh.
            if state.get("key") == key and state["iteration"] <= self.iterations:
                while len(pool) < len(state["pool"]):
                    pool.append(new_net())
                start, elapsed, curve = state["iteration"], state["seconds"], state["curve"]
                _load_state(state, syn, optimizer, pool, gen)

        labels = [torch.full((ipc * self.factor**2,), k, dtype=torch.long) for k in range(num_classes)]
        all_members = torch.from_numpy(np.concatenate(members))
        bar = progress_bar(range(start, self.iterations), initial=start, total=self.iterations, desc=self.name,
                   disable=not context.progress, unit="it")
        window: dict[str, list[float]] = {}
        t0 = time.perf_counter() - elapsed
        for it in bar:
            if it > 0 and it % add_every == 0 and len(pool) < self.pool_max:
                pool.append(new_net())
            net = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            net.model.requires_grad_(False)  # gradients flow to the latents only
            total = syn.new_zeros(())
            terms: dict[str, float] = {}
            for k, idx in enumerate(members):
                pick = torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)[:batch_real]]
                x_real = inputs.real(pick)  # (b, C, S, S)
                # Split after decoding: the evaluator splits the decoded stored image, so for "pixel"
                # the decoder sees the whole tiled latent, as at render time (decoding each upsampled
                # sub-latent instead would match images nobody trains on). For "latent" syn() is the
                # identity and this unfolds the latent.
                x_syn = untile(inputs.syn(syn[k * ipc : (k + 1) * ipc]), self.factor)  # (f*f*ipc, C, S, S)
                if augment is not None:
                    x_real, x_syn = augment.siamese(x_real, x_syn, generator=gen)
                e_real = net.model.embed(x_real).detach()  # (b, F)
                e_syn = net.model.embed(x_syn)  # (ipc, F)
                match, parts = self._match(e_syn, e_real, it, k)
                ce = F.cross_entropy(net.model.classifier(e_syn), labels[k])
                total = total + match + self.ce_weight * net.accuracy * ce
                for name, value in (("match", match), ("ce", ce), *parts):
                    terms[name] = terms.get(name, 0.0) + float(value.detach()) / num_classes
            net.model.requires_grad_(True)
            if not torch.isfinite(total):
                raise DataError(self._nan_message(it, f"the loss is {float(total)}", path))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if not torch.isfinite(syn.grad).all():
                raise DataError(self._nan_message(it, "a gradient of the synthetic latents is NaN or inf", path))
            optimizer.step()
            for _ in range(self.train_nets):
                self._train_pool_net(pool[int(torch.randint(len(pool), (1,), generator=gen))], latents.labels,
                                     all_members, inputs, augment, gen)
            for name, value in terms.items():
                window.setdefault(name, []).append(value)
            if (it + 1) % self.checkpoint_every == 0 or it + 1 == self.iterations:
                curve.append({"iteration": it + 1, **{n: float(np.mean(v)) for n, v in window.items()}})
                window = {}
                bar.set_postfix({n: f"{v:.3g}" for n, v in curve[-1].items() if n != "iteration"})
                if path is not None:
                    _save_state(path, key, it + 1, time.perf_counter() - t0, curve, syn, optimizer, pool, gen)
        seconds = time.perf_counter() - t0
        factorization = {"factor": self.factor, "latents_matched_per_class": ipc * self.factor**2}
        params = {**dataclasses.asdict(self), "ipc": ipc, "seed": seed}
        extras = {"iterations": self.iterations, "seconds": seconds,
                  "iterations_per_second": (self.iterations - start) / max(seconds - elapsed, 1e-9),
                  "resumed_from": start, "pool_size": len(pool), "batch_real": batch_real,
                  "pool_add_every": add_every, "depth": depth, "dsa_strategy": strategy if self.dsa else None,
                  "embedding_features": pool[0].model.num_features, "loss_curve": curve,
                  "factorization": factorization if self.factor > 1 else False}
        per_class = [syn.detach()[k * ipc : (k + 1) * ipc] for k in range(num_classes)]  # (ipc, c, h, w) each
        # With factorization the points that stand for the class are the upsampled tiles, not the mosaics.
        extras["quantization_error"] = [
            quantization_error(class_points(latents, idx), untile(z, self.factor).reshape(-1, z[0].numel()).numpy())
            for idx, z in zip(members, per_class)]
        per_class = [z.reshape(ipc, -1).numpy() for z in per_class]
        return assemble(latents, per_class, method=self.name, params=params,
                        weights=uniform_weights(num_classes, ipc), extras=extras)

    # -----------------------------------------------------------------------------------

    def _check_factor(self, latents: Latents, members: list[np.ndarray], ipc: int) -> None:
        """DataError unless the latents split into factor x factor tiles and every class has factor**2 * ipc."""
        if self.factor == 1:
            return
        _, h, w = latents.latent_shape
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
        tiles factor**2 average-pooled real latents (or centroids) of its class."""
        n = ipc * self.factor**2  # sub-latents per class
        if self.init == "kmeans":
            z = KMeansDistiller().distill(latents, n, seed=seed).latents.clone()
        else:
            picks = [torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)[:n]] for idx in members]
            z = latents.latents[torch.cat(picks)].to(torch.float32).clone()  # (K*n, c, h, w)
        if self.factor == 1:
            return z
        return torch.cat([tile(part, self.factor) for part in z.split(n)])

    def _match(self, e_syn: torch.Tensor, e_real: torch.Tensor, it: int, k: int):
        """-> (0-d matching loss, [(term name, value), ...])."""
        try:
            if self.loss == "dm":
                return dm_loss(e_syn, e_real), []
            variant = "reference" if self.loss == "bacon-reference" else "paper"
            t = bacon_loss(e_syn, e_real, lam=self.lam, variant=variant)
        except DataError as err:
            raise DataError(self._nan_message(it, f"class {k}: {err}", None)) from err
        return t.total, [("lh", t.likelihood), ("tv", t.tv), ("clip", t.clip)]

    def _train_pool_net(self, net: _PoolNet, labels: torch.Tensor, members: torch.Tensor, inputs: _Inputs,
                        augment: DiffAugment | None, gen: torch.Generator) -> None:
        """`train_steps` SGD steps on random real batches (every class); sets the running accuracy.

        labels (N,) of all latents; members: the row indices to draw from."""
        if self.train_steps == 0:
            return
        correct = seen = 0
        for _ in range(self.train_steps):
            pick = members[torch.randint(len(members), (self.net_batch,), generator=gen)]
            with torch.no_grad():
                x = inputs.real(pick)
                if augment is not None:
                    x = augment(x, gen)
            y = labels[pick]
            logits = net.model(x)
            loss = F.cross_entropy(logits, y)
            net.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            net.optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        net.accuracy = 100.0 * correct / seen

    def _checkpoint_key(self, latents: Latents, ipc: int, seed: int) -> str:
        """What a checkpoint must match to be resumed: parameters, ipc, seed and the latents.

        `iterations` and `checkpoint_every` are left out, so a finished run can be continued
        with more iterations (there is no schedule that depends on the total).
        """
        x = latents.latents.to(torch.float64)
        fingerprint = [len(latents), list(latents.latent_shape), float(x.sum()), float((x * x).sum()),
                       latents.labels.tolist()[:64], list(latents.class_names)]
        params = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("iterations", "checkpoint_every")}
        return json.dumps([params, ipc, seed, fingerprint], sort_keys=True)

    def _nan_message(self, it: int, what: str, path: Path | None) -> str:
        kept = f"; the last checkpoint ({path}) is kept" if path is not None and path.is_file() else ""
        return (f"{self.name} stopped at iteration {it}: {what}. Lower lr (now {self.lr}) or ce_weight "
                f"(now {self.ce_weight}), or check the latents for NaN{kept}")


@register_distiller
@dataclass
class IDMDistiller(BaconDistiller):
    """IDM: the same loop with mean embedding matching (`dm_loss`) instead of BACON's loss."""

    name: ClassVar[str] = "idm"
    loss: str = "dm"


# ---------------------------------------------------------------------------------------


@dataclass
class _Inputs:
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
    def make(cls, embedding: str, latents: Latents, context: DistillContext) -> _Inputs:
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
                    "(latentdd.distill.bacon.PIXEL_CACHE_MAX_BYTES); use embedding 'latent', or distil a smaller "
                    "subset of the latents")
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


class _seeded_from:
    """Run a block with torch's global RNG seeded from `gen` (module init draws from it), then restore it."""

    def __init__(self, gen: torch.Generator) -> None:
        self.seed = int(torch.randint(2**62, (1,), generator=gen))

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        torch.random.set_rng_state(self.state)


def _pack(value, tensors: dict[str, torch.Tensor]):
    """Nested state (dicts, lists, numbers, tensors) -> JSON-able, each tensor moved to `tensors`
    and left as {"tensor": name}; dicts with non-string keys (optimizer state) as {"items": [[k, v], ...]}."""
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().clone().contiguous()  # cloned: safetensors refuses shared memory
        return {"tensor": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"dict": {k: _pack(v, tensors) for k, v in value.items()}}
        return {"items": [[k, _pack(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_pack(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _unpack(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    if isinstance(value, dict):
        if "tensor" in value:
            return tensors[value["tensor"]]
        if "items" in value:
            return {k: _unpack(v, tensors) for k, v in value["items"]}
        return {k: _unpack(v, tensors) for k, v in value["dict"].items()}
    return value


def _save_state(path: Path, key: str, iteration: int, seconds: float, curve: list, syn: torch.Tensor,
                optimizer: torch.optim.Optimizer, pool: list[_PoolNet], gen: torch.Generator) -> None:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    state = _pack({"key": key, "iteration": iteration, "seconds": seconds, "curve": curve, "syn": syn,
                   "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                   "pool": [{"model": n.model.state_dict(), "optimizer": n.optimizer.state_dict(),
                             "accuracy": n.accuracy} for n in pool]}, tensors)
    atomic_write_bytes(path, save(tensors, metadata={"latentdd_state": json.dumps(state)}))


def _read_state(path: Path) -> dict | None:
    """The checkpoint at `path`, or None (absent or unreadable: the run starts afresh, and says why)."""
    old = path.with_name(_OLD_CHECKPOINT)
    if old.is_file():
        log.warning("ignoring %s: checkpoints of earlier latentdd versions are pickles, which are never loaded "
                    "(loading one can run any code); delete it", old)
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads(f.metadata()["latentdd_state"])
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        return _unpack(state, tensors)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file is not resumed from
        log.warning("ignoring the checkpoint %s, which cannot be read (%s); this run starts afresh", path, err)
        return None


def _load_state(state: dict, syn: torch.Tensor, optimizer: torch.optim.Optimizer, pool: list[_PoolNet],
                gen: torch.Generator) -> None:
    with torch.no_grad():
        syn.copy_(state["syn"])
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    for net, saved in zip(pool, state["pool"]):
        net.model.load_state_dict(saved["model"])
        net.optimizer.load_state_dict(saved["optimizer"])
        net.accuracy = saved["accuracy"]


def remove_checkpoint(folder: Path) -> None:
    """Delete the checkpoint a run left in `folder`, and the folder if that leaves it empty (only
    what latentdd wrote: anything else in the folder stays)."""
    folder = Path(folder)
    (folder / _CHECKPOINT).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holds files of someone else's
