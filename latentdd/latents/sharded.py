"""A finished latent cache read shard by shard: `ShardedLatents`, what `open_latents` returns.

`load_latents` concatenates every shard into one tensor: N x c*h*w floats, 8 KB per image for
TAEF2's 32x8x8 latents, so 10 GB for ImageNet-1K. Per-class distillers (kmeans, herding, ...)
need one class at a time: `ShardedLatents.of_class(k)` / `latents_at(indices)` read only the
rows asked for (memory-mapped, a shard at a time), so their memory is one class's latents,
whatever N, and a class scattered through every shard costs its own rows, not every shard. Distillers that need every latent at once (matching, BACON, the diffusion
prior) read `.latents`, which loads them all once, as `load_latents` would.

Every shard is checked against the manifest's sha256 when the cache is opened (streamed in
1 MB blocks); the labels are read then, the latents only when asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from latentdd.errors import DataError
from latentdd.io import file_sha256
from latentdd.latents.cache import REPAIR_ADVICE, CacheDamagedError, read_manifest
from latentdd.latents.types import Latents, _check_labels


class ShardedLatents:
    """The latents of a finished cache, read from its shards on demand; the `Latents` interface.

    labels: (N,) int64 (held in memory); class_names; vae: the manifest's VAE identity;
    latent_shape: (c, h, w). Latents come back float32, scaled as the cache stores them.
    """

    def __init__(self, folder: Path, manifest: dict, labels: torch.Tensor, shards: list[dict]):
        self.folder, self.manifest = folder, manifest
        self.class_names = list(manifest["class_names"])
        self.vae = manifest["vae"]
        self.shards = shards  # [{"file", "start", "stop"}], covering 0..N in order
        self.starts = np.array([s["start"] for s in shards], dtype=np.int64)
        self._latent_shape = tuple(int(v) for v in manifest["latent_shape"])
        self._all: torch.Tensor | None = None
        self._finite: np.ndarray | None = None
        # _check_labels wants an (N, ...) tensor only for N: a zero-stride view of one float costs nothing.
        self.labels = _check_labels(torch.empty(1, 1, 1, 1).expand(len(labels), 1, 1, 1), labels,
                                    self.class_names, f"latent cache {folder}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    def _read_rows(self, shard: dict, rows: np.ndarray) -> torch.Tensor:
        """Shard-local `rows` (ascending) of `shard` -> (len(rows), c, h, w) float32, reading only those rows.

        The latents tensor of a shard is memory-mapped (a safetensors file is an 8-byte header
        length, a JSON header, then the raw little-endian data), so the rows of a class
        scattered through a shard cost their own pages, not the whole shard's.
        """
        path = self.folder / shard["file"]
        try:
            with open(path, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                entry = json.loads(f.read(size))["latents"]
        except (OSError, ValueError, KeyError) as err:
            raise CacheDamagedError(f"shard {path} cannot be read ({err}); {REPAIR_ADVICE}") from err
        if entry["dtype"] != "F32":  # not what encode_split writes; read the span the slow way
            return self._read(shard, int(rows[0]), int(rows[-1]) + 1)[torch.from_numpy(rows - rows[0])]
        mapped = np.memmap(path, dtype="<f4", mode="r", offset=8 + size + entry["data_offsets"][0],
                           shape=tuple(entry["shape"]))
        try:
            return torch.from_numpy(np.array(mapped[rows]))  # a copy: the mapping is closed below
        finally:
            del mapped

    def _read(self, shard: dict, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of `shard` (shard-local) -> (hi - lo, c, h, w) float32."""
        from safetensors import safe_open

        path = self.folder / shard["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                part = f.get_slice("latents")[lo:hi]
        except Exception as err:  # noqa: BLE001 - safetensors raises its own types for a damaged file
            raise CacheDamagedError(f"shard {path} cannot be read ({err}); {REPAIR_ADVICE}") from err
        return part.to(torch.float32)

    def latents_at(self, indices) -> torch.Tensor:
        """Latents at global `indices` (n,) -> (n, c, h, w) float32, in the order given.

        Reads each shard that holds some of them once, only the wanted rows (`_read_rows`), so
        memory is the result plus at most the wanted rows of one shard.
        """
        idx = np.asarray(torch.as_tensor(indices, dtype=torch.long).reshape(-1))
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise DataError(f"latent indices must lie in [0, {len(self)}); got {idx.min()}..{idx.max()}")
        if self._all is not None:
            return self._all[torch.from_numpy(idx)]
        order = np.argsort(idx, kind="stable")
        wanted = idx[order]
        out = torch.empty((len(idx), *self._latent_shape), dtype=torch.float32)
        which = np.searchsorted(self.starts, wanted, side="right") - 1  # shard of each wanted row
        for s in np.unique(which):
            rows = wanted[which == s] - self.starts[s]  # shard-local, ascending
            out[torch.from_numpy(order[which == s])] = self._read_rows(self.shards[s], rows)  # (n_s, c, h, w)
        return out

    def of_class(self, k: int) -> torch.Tensor:
        """(n_k, c, h, w) latents of class k, in dataset order."""
        return self.latents_at(torch.nonzero(self.labels == k).flatten())

    def finite_rows(self) -> np.ndarray:
        """(N,) bool: whether each latent is free of NaN and inf (computed one shard at a time, once)."""
        if self._finite is None:
            parts = []
            for shard in self.shards:
                z = self._read(shard, 0, shard["stop"] - shard["start"])
                parts.append(torch.isfinite(z.reshape(len(z), -1)).all(dim=1).numpy())
            self._finite = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
        return self._finite

    @property
    def latents(self) -> torch.Tensor:
        """All (N, c, h, w) latents, loaded once on first use (for distillers that need them all at once)."""
        if self._all is None:
            parts = [self._read(s, 0, s["stop"] - s["start"]) for s in self.shards]
            self._all = torch.cat(parts) if parts else torch.empty((0, *self._latent_shape))
        return self._all

    def materialize(self) -> Latents:
        """Everything in memory as plain `Latents`."""
        return Latents(self.latents, self.labels, self.class_names, self.vae)


def open_latents(out: Path | str, *, expect_vae: dict | None = None, verify: bool = True) -> ShardedLatents:
    """A finished cache as `ShardedLatents`: the same checks as `load_latents`, the latents left on disk.

    verify: check every shard's sha256 against the manifest now (CacheDamagedError naming
    the shard and how to repair it); the reads later trust what was checked here.
    """
    from safetensors import safe_open

    from latentdd.latents.cache import check_vae

    out = Path(out)
    manifest = read_manifest(out)
    check_vae(out, manifest, expect_vae)
    labels, shards = [], []
    for shard in manifest["shards"]:
        path = out / shard["file"]
        if verify and (not path.exists() or file_sha256(path) != shard["sha256"]):
            raise CacheDamagedError(f"shard {path} is missing or corrupt (checksum mismatch); {REPAIR_ADVICE}")
        try:
            with safe_open(str(path), framework="pt") as f:
                labels.append(f.get_tensor("labels"))
                shape = f.get_slice("latents").get_shape()
        except Exception as err:  # noqa: BLE001
            raise CacheDamagedError(f"shard {path} cannot be read ({err}); {REPAIR_ADVICE}") from err
        if list(shape[1:]) != list(manifest["latent_shape"]) or shape[0] != shard["stop"] - shard["start"]:
            raise DataError(f"shard {path} holds latents of shape {tuple(shape)}; the manifest says "
                            f"{shard['stop'] - shard['start']} of {manifest['latent_shape']}")
        shards.append({"file": shard["file"], "start": shard["start"], "stop": shard["stop"]})
    all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    return ShardedLatents(out, manifest, all_labels.long(), shards)
