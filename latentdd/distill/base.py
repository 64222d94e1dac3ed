"""The `Distiller` protocol, the `DISTILLERS` registry, and the checks every distiller shares.

A distiller turns real `Latents` into `SyntheticLatents`: `ipc` latents per class, grouped
by class in class order (entries [k*ipc, (k+1)*ipc) are class k), float32, shaped like the
input's (c, h, w). Distillers are small dataclasses of their parameters, registered by
name with `@register_distiller`; `latentdd.distill` imports every distiller module, so
`DISTILLERS` is complete once any part of `latentdd.distill` has been imported.

Every distiller works on one class at a time on FLATTENED latents, (n_k, c*h*w); a class's
members are its global indices in ascending order, so "index into the class" i means the
i-th latent of class k in dataset order. Randomness comes only from `seed`: class k draws
from `numpy.random.SeedSequence([seed, k])` (see `class_seeds`), so a class's result
depends only on (seed, k, that class's latents, the parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from latentdd.config import Checked, build, check_mapping, did_you_mean
from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents


@runtime_checkable
class Distiller(Protocol):
    """What `make_distiller` returns: a registry `name` and `distill`."""

    name: ClassVar[str]

    def distill(self, latents: Latents, ipc: int, *, seed: int) -> SyntheticLatents:
        """`ipc` synthetic latents per class -> SyntheticLatents of (K*ipc, c, h, w) float32."""
        ...


class CheckedParams(Checked):
    """Base of the distillers' dataclasses: their parameters are checked as declared (`latentdd.config.Checked`),
    messages naming `<distiller> <parameter>` (`kmeans niter`)."""

    def field_key(self, name: str) -> str:
        return f"{self.name} {name}"


@dataclass
class DistillContext:
    """What a distiller with `uses_context = True` may receive beyond the latents.

    decode: (B, c, h, w) latents -> (B, C, H, W) images in [0, 1] at the dataset's shape,
        differentiable (the frozen VAE decoder and the input adapter's inverse).
    checkpoint_dir: where a long optimisation checkpoints and resumes from (None: never).
    progress: show a progress bar.
    cache_dir: where statistics of the real data that any run may reuse are cached by content
        (the forgetting counts; None: never cached).
    teacher: a trained classifier of real images (`latentdd.evaluate.teacher.Teacher`), for the distillers
        whose `uses_teacher` is true (rded, matching with networks "teacher"); None: none given.
    decoded: () -> every latent of the distilled Latents decoded by `decode` (`decode_latents`: (N, C, H, W)
        float32 in [0, 1], in the latents' order), e.g. `LatentSpace.decoded_latents`, which decodes once and
        caches them by content; the matching engine's pixel embedding reads them instead of decoding every real
        latent itself. None: decoded where needed.
    device: where the matching methods run (their networks, real inputs and synthetic set; `decode` may run
        elsewhere, its output is moved); None: the CPU. Other distillers run on the CPU.
    """

    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    checkpoint_dir: str | Path | None = None
    progress: bool = False
    cache_dir: str | Path | None = None
    teacher: Any = None
    decoded: Callable[[], torch.Tensor] | None = None
    device: torch.device | str | None = None


DISTILLERS: dict[str, type] = {}


def register_distiller(cls: type) -> type:
    """Class decorator: add a dataclass with a `name` class attribute to `DISTILLERS`."""
    if not dataclasses.is_dataclass(cls) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls.__name__} must be a dataclass with a `name: ClassVar[str]`")
    if cls.name in DISTILLERS:
        raise DataError(f"distiller {cls.name!r} is already registered")
    DISTILLERS[cls.name] = cls
    return cls


def distiller_params(name: str) -> dict[str, Any]:
    """The parameters of distiller `name` and their defaults."""
    return {f.name: f.default for f in dataclasses.fields(_distiller_class(name))}


def coerce_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` of distiller `name` checked and coerced to their types (YAML's "1e-3" is 0.001); DataError
    naming the accepted parameters for an unknown one (and for params that are not a mapping)."""
    params = {str(key): value for key, value in check_mapping(params, f"the params of distiller {name!r}").items()}
    distiller = make_distiller(name, **params)
    return {key: getattr(distiller, key) for key in params}


def make_distiller(name: str, /, **params: Any) -> Distiller:
    """The distiller registered as `name`, built with `params` (the rest keep their defaults).

    Raises DataError naming the known distillers for an unknown name, and the accepted
    parameters for an unknown parameter; each class checks its parameters' values.
    """
    cls = _distiller_class(name)
    accepted = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise DataError(
            f"distiller {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(accepted) or '(none)'}{did_you_mean(unknown[0], accepted)}"
        )
    # Values are coerced to the fields' types: "1e-3" (YAML's reading of 1e-3) is 0.001, "maybe" no bool.
    return build(cls, params, section=f"distiller {name}")


def _distiller_class(name: str) -> type:
    try:
        return DISTILLERS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown distiller {name!r}; known distillers: {', '.join(DISTILLERS)}"
                        f"{did_you_mean(name, DISTILLERS)}") from None


# ---------------------------------------------------------------------------------------
# Shared helpers for distiller implementations.


def class_label(latents: Latents, k: int) -> str:
    return f"class {latents.class_names[k]!r} (index {k})"


def check_distill_input(latents: Latents, ipc: int, seed: int, classes: list[int] | None = None) -> list[np.ndarray]:
    """Validate a distill call -> per class k, its global indices (ascending int64 arrays); with `classes`, those
    of these classes only, in their order (a process's share of a distillation split by class).

    Raises DataError, with what to do, if ipc or seed is not a usable integer, a class has
    no latents or fewer than ipc, or a class's latents hold NaN or inf. Every class is
    checked before any work starts, so the error names the first offending class.
    """
    if isinstance(ipc, bool) or not isinstance(ipc, (int, np.integer)) or ipc < 1:
        raise DataError(f"IPC must be a positive integer; got {ipc!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer; got {seed!r}")
    labels = latents.labels.numpy()
    counts = np.bincount(labels, minlength=len(latents.class_names))
    finite = latents.finite_rows()  # (N,) bool; a sharded cache computes it a shard at a time
    # One stable sort gives every class's members in dataset order.
    order = np.argsort(labels, kind="stable")
    starts = np.cumsum(counts) - counts
    members = []
    for k, n_k in enumerate(counts):
        if n_k == 0:
            raise DataError(
                f"{class_label(latents, k)} has no latents; every class needs at least IPC ({ipc}) of them: "
                "encode that class's images, or drop the class from the dataset"
            )
        if n_k < ipc:
            raise DataError(f"IPC {ipc} is larger than {class_label(latents, k)}, which has {n_k} latents; lower --ipc")
        idx = order[starts[k] : starts[k] + n_k].astype(np.int64)
        bad = idx[~finite[idx]]
        if bad.size:
            raise DataError(
                f"{class_label(latents, k)} has {bad.size} latent(s) with NaN or inf values (first: latent "
                f"index {int(bad[0])}); re-encode them (an fp16 VAE can overflow: encode in float32)"
            )
        members.append(idx)
    return members if classes is None else [members[k] for k in classes]


def class_points(latents: Latents, indices: np.ndarray) -> np.ndarray:
    """(n_k,) global indices -> (n_k, c*h*w) float32 C-contiguous numpy array."""
    x = latents.latents_at(indices).reshape(len(indices), -1)  # a sharded cache reads only these rows
    return np.ascontiguousarray(x.to(torch.float32).numpy())


def class_seeds(seed: int, k: int, n: int = 1) -> list[int]:
    """`n` integer seeds in [0, 2**31) for class k, from SeedSequence([seed, k]).

    2**31 so they fit every consumer (faiss takes a C int, sklearn a uint32).
    """
    return [int(s) & 0x7FFFFFFF for s in np.random.SeedSequence([int(seed), int(k)]).generate_state(n)]


def uniform_weights(num_classes: int, ipc: int) -> torch.Tensor:
    """(num_classes*ipc,) float32, all 1/ipc."""
    return torch.full((num_classes * ipc,), 1.0 / ipc, dtype=torch.float32)


def assemble(
    latents: Latents,
    per_class: list[np.ndarray],
    *,
    method: str,
    params: dict,
    weights: torch.Tensor | None,
    extras: dict,
    classes: list[int] | None = None,
) -> SyntheticLatents:
    """Stack per-class (ipc, c*h*w) arrays, in class order, into SyntheticLatents (M, c, h, w); with `classes`,
    the arrays are of these classes (a share of a distillation split by class, `gather_parts`)."""
    ipc = per_class[0].shape[0]
    flat = torch.from_numpy(np.concatenate(per_class, axis=0).astype(np.float32, copy=False))
    ids = range(len(per_class)) if classes is None else classes
    labels = torch.as_tensor(list(ids), dtype=torch.int64).repeat_interleave(ipc)
    return SyntheticLatents(
        latents=flat.reshape(len(flat), *latents.latent_shape).contiguous(),  # (M, c, h, w)
        labels=labels,
        class_names=list(latents.class_names),
        method=method,
        params=params,
        weights=weights,
        extras=extras,
    )


def class_share(num_classes: int, rank: int, size: int) -> list[int]:
    """The classes process `rank` of `size` distils when a distillation is split by class: a contiguous block,
    the blocks' sizes differing by at most one."""
    base, extra = divmod(num_classes, size)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (rank < extra)))


def gather_parts(parts: list[SyntheticLatents]) -> SyntheticLatents:
    """The set of a distillation split by class, from its parts in class order (each `class_share`'s, as the
    distiller returned it with `classes`): tensors concatenated; extras' lists (one entry per class, or per
    synthetic latent) concatenated, their other values taken when every part has the same, else listed per part
    (e.g. seconds). Equal to the unsplit distillation's, byte for byte, for distillers whose classes are
    independent (`splits_by_class`)."""
    first = parts[0]
    cat = lambda name: None if getattr(first, name) is None else torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    extras = {}
    for key, value in first.extras.items():
        values = [p.extras.get(key) for p in parts]
        if isinstance(value, list):
            extras[key] = [v for part in values for v in part]
        else:
            extras[key] = value if all(v == value for v in values) else values
    return SyntheticLatents(latents=cat("latents"), labels=cat("labels"), class_names=list(first.class_names),
                            method=first.method, params=first.params, weights=cat("weights"), extras=extras,
                            soft_labels=cat("soft_labels"))
