"""The matching engine: `MatchingDistiller`, the base of every matching method, and its loop (see the
package's docstring); `_Guard`, its optimiser step that stops on NaN or divergence; its checkpoints."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from latentdd.cachekey import content_key, tensor_sha256
from latentdd.checkpoint import StateRejected, check_count, load_optimizer, restore, save_state
from latentdd.config import NonNegativeInt, PositiveFloat, PositiveInt
from latentdd.distill.base import CheckedParams, DistillContext, assemble, check_distill_input, class_points, uniform_weights
from latentdd.distill.matching.embedder import REAL_PRECISIONS, Embedder
from latentdd.distill.matching.inputs import EMBEDDINGS, Inputs, Run
from latentdd.distill.matching.sources import FreshNetworks, Net, NetSpec, NetworkBank, TeacherEmbedding, TeacherNetwork
from latentdd.distill.quantize import KMeansDistiller, quantization_error
from latentdd.errors import DataError
from latentdd.io import checksum_path
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.nn.dsa import DiffAugment, DSAConfig
from latentdd.nn.factorization import check_factor, tile, untile
from latentdd.progress import progress_bar

INITS = ("real", "kmeans")
TILES = ("latent", "decoded")  # what a factorized tile is: MatchingDistiller.tiles
NETWORKS = ("method", "bank", "teacher")  # where the matched networks come from: MatchingDistiller.networks
OPTIMIZERS = ("sgd", "adam")
COMPILE_MODES = ("off", "auto", "on")
CHECKPOINT_FILE = "matching_checkpoint.safetensors"  # latentdd.checkpoint: tensors, the rest as JSON, a checksum beside
# DSA groups that make sense on latent maps: colour and cutout act on pixel intensities.
LATENT_DSA = "crop_flip_scale_rotate"


@dataclass
class MatchingDistiller(CheckedParams):
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
        BACON/IDM), "bank" (`NetworkBank`: bank_nets networks trained once on the real inputs with
        SGD lr bank_lr, momentum 0.9, batch bank_batch, DSA when dsa is on, snapshotted after each
        of bank_steps steps, cached by content under the context's cache_dir) or "teacher" (the
        context's teacher, the soft protocol's: its penultimate features are the embedding, every
        iteration; needs embedding "pixel"; width, depth and norm are the teacher's, not these).
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
    class_terms: ClassVar[bool] = False  # the loss is a sum of per-class terms, each of one class's variables

    embedding: Literal[EMBEDDINGS] = "latent"
    init: Literal[INITS] = "real"
    iterations: PositiveInt = 20000
    optimizer: Literal[OPTIMIZERS] = "sgd"
    lr: PositiveFloat = 0.2
    momentum: float = 0.5
    batch_real: PositiveInt | None = None
    width: PositiveInt = 128
    depth: PositiveInt | None = None
    norm: str = "instancenorm"
    dsa: bool = True
    dsa_strategy: str | None = None
    flip: bool = True
    divergence: Annotated[float, Field(gt=1)] = 1e3
    checkpoint_every: PositiveInt = 100
    compile: Literal[COMPILE_MODES] = "off"
    real_precision: Literal[tuple(REAL_PRECISIONS)] = "float32"
    factor: PositiveInt = 1
    tiles: Literal[TILES] = "latent"
    networks: Literal[NETWORKS] = "method"
    bank_nets: PositiveInt = 4
    bank_steps: tuple[NonNegativeInt, ...] = (0, 50, 100, 200, 400)
    bank_lr: PositiveFloat = 0.01
    bank_batch: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tiles == "decoded" and self.embedding != "pixel":
            raise DataError(f"{self.name} tiles 'decoded' decodes each tile's latent, so it needs embedding 'pixel' "
                            f"(got {self.embedding!r}); with embedding 'latent' use tiles 'latent'")
        if self.networks == "teacher" and self.embedding != "pixel":
            raise DataError(f"{self.name} networks 'teacher' sees decoded images through the teacher, so it needs "
                            f"embedding 'pixel' (got {self.embedding!r})")
        if not self.bank_steps:
            raise DataError(f"{self.name} bank_steps must name at least one step count (0: the untrained network)")

    @property
    def splits_by_class(self) -> bool:
        """Whether a share of the classes distils alone to the unsplit run's latents (`distill(classes=...)`):
        the loss is a sum of per-class terms (`class_terms`) and the networks learn nothing from the real data
        during the run (fresh random ones, or the teacher). An in-loop pool or a network bank trains on every
        class, and DC/DSA's and MTT's networks on the whole set: those runs stay whole."""
        fresh = self.networks == "method" and type(self).network_source is MatchingDistiller.network_source
        return self.class_terms and (fresh or self.networks == "teacher")

    @property
    def continuable(self) -> bool:
        """Whether a finished run continued to more iterations equals a run of that many from the start (no
        schedule spans the total): what lets a run's `curve` share one checkpoint."""
        return True

    @property
    def uses_teacher(self) -> bool:
        """Whether the run needs the context's teacher (networks 'teacher')."""
        return self.networks == "teacher"

    # ---- hooks ------------------------------------------------------------------------

    def default_batch_real(self, ipc: int) -> int:
        return 256

    def prepare(self, spec: NetSpec, run: Run, context: DistillContext) -> None:
        """Work done once a run, before its first iteration and outside its checkpoint (mtt: its expert buffer)."""

    def network_source(self, spec: NetSpec, run: Run):
        return FreshNetworks(spec, run.gen, run.device)

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
        for k in run.each_class():
            x_real, x_syn = run.class_pair(syn, k)
            e_real = run.embedder.real(x_real)  # (b, F)
            e_syn = run.embedder.syn(x_syn)  # (m, F)
            loss, parts = self.class_loss(net, e_syn, e_real, run, k, it)
            total = total + loss
            for name, value in parts.items():
                terms[name] = terms.get(name, 0.0) + float(value.detach()) / run.num_classes
        net.model.requires_grad_(net.optimizer is not None)  # a network the source trains (the in-loop pool's)
        check.step(total, it)
        source.after_step(run)
        return terms

    # ---- the loop ---------------------------------------------------------------------

    def distill(self, latents: Latents, ipc: int, *, seed: int, context: DistillContext | None = None,
                classes: list[int] | None = None) -> SyntheticLatents:
        """classes: distil only these classes (ascending), a share of a distillation split by class
        (`splits_by_class`; `latentdd.distill.base.gather_parts` joins the shares): every other class's random
        draws are made in its place (`Run.each_class`), so the share's latents are the unsplit run's."""
        context = context or DistillContext()
        t_setup = time.perf_counter()
        every = check_distill_input(latents, ipc, seed)
        self._check_factor(latents, every, ipc)
        if classes is not None:
            if not self.splits_by_class:
                raise DataError(f"{self.name} with networks {self.networks!r} couples its classes (splits_by_class "
                                "is false): distil it whole")
            if list(classes) != sorted(set(classes)) or not set(classes) <= set(range(len(every))):
                raise DataError(f"classes must be distinct class indices in ascending order; got {classes}")
        members = every if classes is None else [every[k] for k in classes]
        keep = None if classes is None else np.concatenate(members)
        device = torch.device(context.device or "cpu")
        inputs = Inputs.make(self.embedding, latents, context, keep=keep, device=device)
        check_factor(self.factor, inputs.size, inputs.size, f"{self.embedding} network input")
        gen = torch.Generator().manual_seed(seed)
        strategy = self.dsa_strategy or (LATENT_DSA if self.embedding == "latent" else DSAConfig.strategy)
        augment = DiffAugment(DSAConfig(strategy=strategy), flip=self.flip) if self.dsa else None
        run = Run(inputs, members, torch.from_numpy(np.concatenate(members)), latents.labels, ipc, self.factor,
                  self.batch_real or self.default_batch_real(ipc), augment, gen, tiles=self._tiles(),
                  share=None if classes is None else list(classes),
                  class_sizes=None if classes is None else [len(idx) for idx in every])
        depth = self.depth or inputs.default_depth()
        spec = NetSpec(inputs.channels, len(members), inputs.size, self.width, depth, self.norm)
        teacher_net = None
        if self.networks == "teacher":
            if context.teacher is None:
                raise DataError(f"{self.name} networks 'teacher' needs a teacher: pass DistillContext(teacher=...) "
                                "(latentdd distill and run fit or load the teacher: section teacher)")
            teacher_net = TeacherEmbedding(context.teacher.to(device), inputs.mean, inputs.std)
        run.embedder = Embedder(spec, self.compile, self.real_precision, model=teacher_net, device=device)

        self.prepare(spec, run, context)
        initial = self._initial(latents, every, ipc, seed, gen, run, classes)  # (K*per_class, c, h, w)
        run.weights = self.initial_weights(latents, members, initial)
        if run.weights is not None:
            run.weights = run.weights.to(device)
        if run.weights is not None and run.tiles == "decoded":
            raise DataError(f"{self.name} tiles 'decoded' stores factor**2 latents an image, so the set's weights "
                            "must be uniform; leave weights at uniform or use tiles 'latent'")
        bank = None if teacher_net is None else TeacherNetwork(teacher_net)
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
            syn = torch.nn.Parameter(initial.clone().to(device))
            return syn, self._make_optimizer(syn), bank if bank is not None else self.network_source(spec, run)

        key = self._checkpoint_key(latents, ipc, seed, teacher=context.teacher.key() if self.uses_teacher else None,
                                   keep=keep)
        path = Path(context.checkpoint_dir) / _checkpoint_file(classes) if context.checkpoint_dir else None
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
        result = self._result(latents, members, syn.detach().cpu(), run, seed, classes, {
            "iterations": self.iterations, "seconds": seconds, "setup_seconds": setup_seconds,
            "iterations_per_second": (self.iterations - start) / max(seconds - elapsed, 1e-9),
            "resumed_from": start, "batch_real": run.batch_real, "depth": depth,
            "dsa_strategy": strategy if self.dsa else None,
            "embedding_features": spec.features if teacher_net is None else None,
            **source.record(), **run.embedder.record(), **self.describe(run),
            # a share's curve is of its classes' terms: gathered, the set lists one per share
            "loss_curve": curve if classes is None else {"classes": list(classes), "points": curve}})
        learned = getattr(source, "learned_labels", lambda: None)()  # mtt with learn_labels: (K*ipc, K)
        return result if learned is None else dataclasses.replace(result, soft_labels=learned)

    # ---- pieces -----------------------------------------------------------------------

    def _resume(self, path: Path, key: str, initial: torch.Tensor, limit: float, build, gen: torch.Generator):
        """The run as the checkpoint at `path` left it: ((syn, optimizer, source), iteration, seconds,
        curve), with gen restored; or None (no checkpoint, or one that cannot be resumed: a warning
        says why, and `build` starts the run afresh)."""

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
                classes: list[int] | None, extras: dict) -> SyntheticLatents:
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
                        weights=uniform_weights(num_classes, per) if weights is None else weights.cpu(), extras=extras,
                        classes=classes)

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
                 gen: torch.Generator, run: Run | None = None, classes: list[int] | None = None) -> torch.Tensor:
        """(K*ipc, c, h, w) float32 starting latents, grouped by class; with factorization each
        tiles factor**2 average-pooled real latents (or centroids) of its class (tiles "latent"), or
        those factor**2 * ipc latents a class stand as they are (tiles "decoded": K*ipc*factor**2 rows).
        members: every class's; with `classes`, those classes' latents only (every class's draw is made)."""
        n = ipc * self.factor**2  # sub-latents per class
        if self.init == "kmeans":
            z = KMeansDistiller().distill(latents, n, seed=seed, classes=classes).latents.clone()
        else:
            picks = [torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)[:n]] for idx in members]
            if classes is not None:
                picks = [picks[k] for k in classes]
            z = latents.latents_at(torch.cat(picks)).to(torch.float32).clone()  # (K*n, c, h, w)
        if self._tiles() == "decoded" or self.factor == 1:
            return z
        return torch.cat([tile(part, self.factor) for part in z.split(n)])

    def _checkpoint_key(self, latents: Latents, ipc: int, seed: int, teacher: str | None = None,
                        keep: np.ndarray | None = None) -> str:
        """What a checkpoint must match to be resumed: the method, its parameters, ipc, seed and the
        latents' content (a share's: the global indices `keep` of its classes and their latents).
        `checkpoint_every` is left out, and `iterations` too where no schedule depends on the total
        (`continuable`), so a finished run can be continued with more iterations."""
        dropped = ("iterations", "checkpoint_every") if self.continuable else ("checkpoint_every",)
        params = {k: v for k, v in dataclasses.asdict(self).items() if k not in dropped}
        share = {} if keep is None else {"share": tensor_sha256(torch.from_numpy(keep))}
        return content_key(f"distill-{self.name}", params=params, ipc=ipc, seed=seed,
                           latents=tensor_sha256(latents.latents if keep is None else latents.latents_at(keep)),
                           labels=tensor_sha256(latents.labels), class_names=list(latents.class_names),
                           **({"teacher": teacher} if teacher else {}), **share)

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


# ---------------------------------------------------------------------------------------
# Checkpoints: `latentdd.checkpoint` files (safetensors + JSON, never a pickle, a checksum beside)


def _checkpoint_file(classes: list[int] | None) -> str:
    """A run's checkpoint file name in its checkpoint folder; a share's names its classes."""
    return CHECKPOINT_FILE if classes is None else CHECKPOINT_FILE.replace(
        ".safetensors", f".classes-{classes[0]}-{classes[-1]}.safetensors")


def remove_checkpoint(folder: Path) -> None:
    """Delete the checkpoints a run left in `folder` (a split run's shares' too), and the folder if that leaves
    it empty (only what latentdd wrote: anything else in the folder stays)."""
    folder = Path(folder)
    shares = folder.glob(CHECKPOINT_FILE.replace(".safetensors", ".classes-*.safetensors"))
    for path in [folder / CHECKPOINT_FILE, *shares]:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holds files of someone else's
