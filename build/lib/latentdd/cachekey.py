"""Content keys: what names a cache entry, a checkpoint or a reusable report.

A key is the sha256 of canonical JSON over KEY_VERSION, a stage name and the stage's
inputs: settings (dataclasses as dicts, tuples as lists, numbers normalised so that 1
and 1.0 agree, sorted keys) and artifacts, hashed by content (`tensor_sha256`: dtype,
shape and bytes). Timings and paths never belong in a key. Bump KEY_VERSION to
invalidate every key on purpose when the key format changes.

    content_key("vae-fit", config=config, images=tensor_sha256(images))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

KEY_VERSION = 1
_CHUNK = 1 << 24  # bytes hashed at a time, so a large tensor is never copied whole


def canonical(value):
    """`value` as plain JSON values: dataclasses -> dicts, tuples/sets -> lists, tensors -> their sha256,
    integral floats -> ints (so 1 and 1.0 give one key), numpy scalars -> Python numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(canonical(v) for v in value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return tensor_sha256(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value if math.isfinite(value) else repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"cannot key a {type(value).__name__}: {value!r}")


def content_key(stage: str, **inputs) -> str:
    """sha256 hex naming `stage` run on `inputs` (settings and content hashes)."""
    key = {"key_version": KEY_VERSION, "stage": stage, **canonical(inputs)}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class TensorHasher:
    """sha256 over a sequence of tensors (dtype, shape and bytes of each), e.g. a split's batches."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def update(self, tensor: torch.Tensor | np.ndarray) -> TensorHasher:
        array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
        array = np.ascontiguousarray(array)
        self._digest.update(f"{array.dtype.str}{list(array.shape)};".encode())
        data = memoryview(array.reshape(-1).view(np.uint8))
        for start in range(0, len(data), _CHUNK):
            self._digest.update(data[start : start + _CHUNK])
        return self

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def tensor_sha256(*tensors: torch.Tensor | np.ndarray) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes, in order."""
    hasher = TensorHasher()
    for tensor in tensors:
        hasher.update(tensor)
    return hasher.hexdigest()


def split_sha256(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[str, str, int]:
    """(images sha256, labels sha256, count) of a split's (images, labels) batches; the images
    are hashed as float32, so the key does not depend on the batch size."""
    images, labels = TensorHasher(), []
    for x, y in batches:
        for row in x.float():  # per image: the same bytes whatever the batching
            images.update(row)
        labels.append(y.long())
    labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    return images.hexdigest(), tensor_sha256(labels), len(labels)
