"""What one matching run fixes before its first iteration: how latents become network inputs (`Inputs`),
and the classes' members, batches, augmentation and generator that the method's hooks are handed (`Run`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from latentdd.distill.base import DistillContext
from latentdd.errors import DataError
from latentdd.latents.types import Latents
from latentdd.nn.convnet import default_depth
from latentdd.nn.dsa import DiffAugment
from latentdd.nn.factorization import tile, untile

if TYPE_CHECKING:  # only Run's annotation names it: the embedder builds on the networks, which take a Run
    from latentdd.distill.matching.embedder import Embedder

EMBEDDINGS = ("latent", "pixel")
# The pixel embedding keeps every real latent decoded (float32): refuse above this many bytes.
PIXEL_CACHE_MAX_BYTES = 4 * 2**30
_DECODE_BATCH = 1024


def decode_latents(decode, latents: torch.Tensor) -> torch.Tensor:
    """(N, c, h, w) latents -> (N, C, H, W) float32 images in [0, 1] by `decode`, _DECODE_BATCH at a time,
    without gradient: the pixel embedding's real inputs before normalisation."""
    pixels = None
    with torch.no_grad():
        for start in range(0, len(latents), _DECODE_BATCH):
            x = decode(latents[start : start + _DECODE_BATCH].to(torch.float32))
            if pixels is None:
                pixels = torch.empty((len(latents), *x.shape[1:]), dtype=torch.float32)
            pixels[start : start + len(x)] = x
    return pixels


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
    row_of: torch.Tensor | None = None  # (N,) global index -> row of `rows`, when they hold a share's latents only

    @classmethod
    def make(cls, embedding: str, latents: Latents, context: DistillContext, keep: np.ndarray | None = None,
             device: torch.device | str = "cpu") -> Inputs:
        """keep: the global indices of a share of the classes (a distillation split by class): only their rows
        are kept (for "latent" only theirs are read); the pixel normalisation is still every latent's.
        device: where the rows (and the normalisation) are kept; they are computed on the CPU."""
        c, h, w = latents.latent_shape
        if embedding == "latent":
            if h != w:
                raise DataError(f"latent embedding needs square latents; got {h}x{w}")
            if keep is None:
                return cls(embedding, c, h, latents.latents.to(device))
            return cls(embedding, c, h, latents.latents_at(keep).to(device), row_of=_row_of(len(latents), keep))
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
                    "(latentdd.distill.matching.inputs.PIXEL_CACHE_MAX_BYTES); use embedding 'latent', or distil a "
                    "smaller subset of the latents")
            if context.decoded is None:
                pixels = decode_latents(context.decode, latents.latents)
            else:  # kept by the caller (LatentSpace.decoded_latents): normalised below on a copy
                pixels = context.decoded()
                if tuple(pixels.shape) != (n, *shape[1:]):
                    raise DataError(f"the decoded real latents given (DistillContext.decoded) are "
                                    f"{tuple(pixels.shape)}, not the {n} latents' {(n, *shape[1:])}")
            mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
            if keep is not None:
                pixels = pixels[torch.from_numpy(keep)]
            elif context.decoded is not None:
                pixels = pixels.clone()
            pixels.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        return cls(embedding, shape[1], shape[-1], pixels.to(device), context.decode, mean.to(device),
                   std.to(device), None if keep is None else _row_of(n, keep))

    def default_depth(self) -> int:
        if self.embedding == "pixel":
            return default_depth(self.size)
        return max(1, int(math.log2(self.size)) - 1)  # poolings that leave maps of at least 2x2

    def real(self, indices: torch.Tensor) -> torch.Tensor:
        """(b,) global indices of latents -> (b, C, S, S) float32 inputs, without gradient."""
        rows = indices if self.row_of is None else self.row_of[indices]
        return self.rows[rows.to(self.rows.device)].to(torch.float32)

    def syn(self, z: torch.Tensor) -> torch.Tensor:
        """(n, c, h, w) latents -> (n, C, S, S) inputs, differentiable (decoded each call for "pixel")."""
        if self.embedding == "latent":
            return z
        x = self.decode(z).to(z.device)  # (n, C, H, W) in [0, 1]; the decoder may run on another device
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


def _row_of(n: int, keep: np.ndarray) -> torch.Tensor:
    row_of = torch.full((n,), -1, dtype=torch.long)
    row_of[torch.from_numpy(keep)] = torch.arange(len(keep))
    return row_of


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
    experts: Any = None  # mtt: its expert buffer (`latentdd.distill.mtt.ExpertBuffer`), set by `prepare`
    label_init: torch.Tensor | None = None  # mtt learn_labels: the initial logits of the synthetic inputs
    label_judge: Any = None  # mtt label_init teacher: the network whose logits label_init is (None: the first expert)
    # A distillation split by class: the classes of `members` (ascending), and every class's size (None: all)
    share: list[int] | None = None
    class_sizes: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        """Where the run's networks, inputs and set are."""
        return self.inputs.rows.device

    def each_class(self) -> Iterator[int]:
        """The run's classes in order, as positions in `members` and the set. With a share, every other class's
        draws of `class_pair` are made in its place, so that each class sees the draws of the unsplit run."""
        if self.share is None:
            yield from range(self.num_classes)
            return
        mine = dict(zip(self.share, range(len(self.share))))
        for k, size in enumerate(self.class_sizes):
            if k in mine:
                yield mine[k]
            else:
                self._draws(size)

    @property
    def per_class(self) -> int:
        """Synthetic variables per class: ipc stored latents, or with tiles "decoded" one whole latent a tile."""
        return self.ipc * self.factor**2 if self.tiles == "decoded" else self.ipc

    def labels(self, k: int) -> torch.Tensor:
        """(factor**2 * ipc,) labels of class k's synthetic network inputs."""
        return torch.full((self.ipc * self.factor**2,), k if self.share is None else self.share[k], dtype=torch.long,
                          device=self.device)

    def _draws(self, size: int) -> tuple[torch.Tensor, dict | None]:
        """A class pair's draws from the run's generator: the order of the class's `size` real inputs (its first
        batch_real are the batch), then the siamese DSA parameters (None without DSA)."""
        order = torch.randperm(size, generator=self.gen)[: self.batch_real]
        s = self.inputs.size
        return order, None if self.augment is None else self.augment.sample(1, (s, s), self.gen, self.device)

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
        idx = self.members[k]
        order, params = self._draws(len(idx))
        x_real, x_syn = self.inputs.real(torch.from_numpy(idx)[order]), self.syn_batch(syn, k)
        if params is not None:
            x_real, x_syn = self.augment.apply(x_real, params), self.augment.apply(x_syn, params)
        return x_real, x_syn
