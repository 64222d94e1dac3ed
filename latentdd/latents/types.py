"""Artifacts of the latent stages: real `Latents` (encoded) and `SyntheticLatents` (distilled)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentdd.errors import DataError
from latentdd.io import atomic_write_bytes

SYNTHETIC_FORMAT, SYNTHETIC_FORMAT_VERSION = "latentdd-synthetic-latents", 1
_SYNTHETIC_KEY = "latentdd"  # the safetensors metadata entry that holds the JSON fields


# Extras that describe a run rather than its result: wall-clock times and rates, the iteration a
# resumed run started from, whether a cache was hit. distill.json keeps them; the latents file does
# not, so that two runs of the same settings write the same bytes and its sha256 names its content.
_RUN_DEPENDENT = re.compile(r"(.*_)?seconds|.*_per_second|(.*_)?cached|resumed_from")


def content_extras(value):
    """`value` (a SyntheticLatents' extras, or anything in them) without the run-dependent keys, at any
    depth (a loss curve's points lose their "seconds")."""
    if isinstance(value, dict):
        return {k: content_extras(v) for k, v in value.items() if not _RUN_DEPENDENT.fullmatch(str(k))}
    if isinstance(value, (list, tuple)):
        return [content_extras(v) for v in value]
    return value


def _check_labels(latents: torch.Tensor, labels: torch.Tensor, class_names: list[str], what: str) -> torch.Tensor:
    if latents.ndim != 4:
        raise DataError(f"{what} must be (N, c, h, w); got shape {tuple(latents.shape)}")
    if labels.shape != (latents.shape[0],):
        raise DataError(f"{what} labels must be ({latents.shape[0]},); got {tuple(labels.shape)}")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{what} labels must lie in [0, {len(class_names)})")
    return labels


@dataclass
class Latents:
    """Encoded real images of one split.

    latents: (N, c, h, w) float32, already multiplied by the VAE's scaling factor (and
    shifted by its shift factor), i.e. in the space diffusion models work in.
    labels: (N,) int64. vae: the VAE's identity (name, latent_shape, scaling_factor,
    shift_factor, input image shape), so a cache can refuse a mismatching VAE.
    """

    latents: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    vae: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = _check_labels(self.latents, self.labels, self.class_names, "latents")

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.latents.shape[1:])

    def of_class(self, k: int) -> torch.Tensor:
        """(n_k, c, h, w) latents of class k."""
        return self.latents[self.labels == k]

    def latents_at(self, indices) -> torch.Tensor:
        """(n, c, h, w) latents at global `indices` (n,); `ShardedLatents` reads the same from disk."""
        return self.latents[torch.as_tensor(indices, dtype=torch.long)]

    def finite_rows(self) -> np.ndarray:
        """(N,) bool: whether each latent is free of NaN and inf."""
        return torch.isfinite(self.latents.reshape(len(self), -1)).all(dim=1).numpy()


@dataclass
class SyntheticLatents:
    """Per-class synthetic latents produced by a distiller.

    latents: (M, c, h, w) float32 in the same scaled space as `Latents`; labels: (M,)
    int64; weights: (M,) float32 >= 0 summing to 1 within each class (Voronoi masses for
    quantization, uniform otherwise) or None; method and params: what made them;
    extras: method-specific results (quantization error per class, medoid indices, ...) -- among them
    "factorization", which says how the latents make the stored images (`tile_factor`);
    soft_labels: (M, K) float32 class distributions, or None.

    `save` / `load` keep them in one safetensors file: the tensors, and the rest as JSON in
    its metadata (no pickle).
    """

    latents: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    method: str
    params: dict = field(default_factory=dict)
    weights: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    soft_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.labels = _check_labels(self.latents, self.labels, self.class_names, "synthetic latents")
        if self.weights is not None:
            self.weights = torch.as_tensor(self.weights, dtype=torch.float32)
            if self.weights.shape != self.labels.shape:
                raise DataError(f"weights must be ({len(self.labels)},); got {tuple(self.weights.shape)}")
        if self.soft_labels is not None:
            self.soft_labels = torch.as_tensor(self.soft_labels, dtype=torch.float32)
            if self.soft_labels.shape != (len(self.labels), len(self.class_names)):
                raise DataError(f"soft_labels must be ({len(self.labels)}, {len(self.class_names)}); "
                                f"got {tuple(self.soft_labels.shape)}")

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def tile_factor(self) -> int:
        """How many latents, per side, make one stored image: f when each stored image is f x f latents of
        its class, each rendered whole, then pooled and tiled into it (a matching method's factorization with
        tiles "decoded", which its extras["factorization"] records and the file keeps); 1 when each latent
        renders to one stored image (factorized "latent" tiles too: they are tiled within the latent)."""
        factorization = self.extras.get("factorization") or {}
        return int(factorization["factor"]) if factorization.get("tiles") == "decoded" else 1

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file at `path`, atomically: latents, labels (and weights, soft_labels when
        set) as tensors; class_names, method, params and extras as JSON in its metadata -- the extras
        without timings and other run-dependent values (`content_extras`), so the same result is always
        the same bytes. `load` gives back the extras the file holds."""
        from safetensors.torch import save

        tensors = {"latents": self.latents.float(), "labels": self.labels}
        for name in ("weights", "soft_labels"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        fields = {"format": SYNTHETIC_FORMAT, "format_version": SYNTHETIC_FORMAT_VERSION,
                  "class_names": list(self.class_names), "method": self.method, "params": self.params,
                  "extras": content_extras(self.extras)}
        # default=str as for every JSON latentdd writes: a value JSON cannot hold is kept as its text.
        metadata = {_SYNTHETIC_KEY: json.dumps(fields, default=str)}
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
        return atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: str | Path, *, recorded_extras: dict | None = None) -> SyntheticLatents:
        """The synthetic latents `save` wrote at `path`; DataError naming the file if it is missing, corrupt or
        not one `save` wrote (a tensors-only latents.safetensors of a version before `save`, say).

        recorded_extras: the extras a distill folder's distill.json holds, timings included; taken instead of
        the file's when, without their run-dependent values, they equal the file's (else the file's are kept).
        """
        from safetensors import safe_open

        path = Path(path)
        redo = "write it again (distil again, or delete the folder that holds it)"
        if not path.is_file():
            raise DataError(f"synthetic latents {path} do not exist (expected the latents.safetensors that "
                            "SyntheticLatents.save / latentdd distill writes)")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise DataError(f"cannot read the synthetic latents {path} ({err}); the file is damaged: {redo}") from None
        if _SYNTHETIC_KEY not in metadata:
            raise DataError(f"{path} holds tensors but no latentdd metadata: it was not written by "
                            "SyntheticLatents.save (the tensors-only latents.safetensors of a distill folder from "
                            f"before it, which latentdd no longer reads, is such a file); {redo}")
        try:
            fields = json.loads(metadata[_SYNTHETIC_KEY])
        except ValueError as err:
            raise DataError(f"the synthetic latents {path} carry unreadable metadata ({err}): {redo}") from None
        if not isinstance(fields, dict) or fields.get("format") != SYNTHETIC_FORMAT or \
                fields.get("format_version", 99) > SYNTHETIC_FORMAT_VERSION:
            raise DataError(f"{path} is not a synthetic-latents file this latentdd can read: {redo}")
        # A folder re-rendered from these latents (latents_from) keeps the run's timings in its distill.json.
        if isinstance(recorded_extras, dict) and content_extras(recorded_extras) == fields.get("extras"):
            fields["extras"] = recorded_extras
        missing = sorted({"latents", "labels"} - set(tensors)) + \
            sorted({"class_names", "method"} - set(fields))
        if missing:
            raise DataError(f"the synthetic latents {path} lack {', '.join(missing)}: {redo}")
        return cls(tensors["latents"], tensors["labels"], list(fields["class_names"]), fields["method"],
                   dict(fields.get("params") or {}), weights=tensors.get("weights"),
                   extras=dict(fields.get("extras") or {}), soft_labels=tensors.get("soft_labels"))
