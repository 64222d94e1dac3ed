"""Stored state: checkpoints and cached training results, checked before anything is resumed from them.

`save_state` writes nested dicts/lists of numbers, strings and tensors as one safetensors file --
the tensors as tensors, the structure as JSON in its metadata, never a pickle -- with its sha256
beside it (`<file>.sha256`, the latent cache's convention: `latentdd.io.checksum_path`).

`restore(path, load, otherwise=...)` hands the stored state to `load`, which checks what it holds
(shapes, ranges) and builds from it; every way a state can be unusable -- absent, no checksum
(written before checksums, or its checksum file removed), failing its checksum (truncated,
altered), unreadable, holding NaN or inf, refused by `load` (`StateRejected`) or failing to load
-- ends in None, and all but the first in a warning that names the file, why, and what happens
instead (`otherwise`: the run starts afresh, the bank is trained again, ...). The caller then
builds afresh; a `load` that built on objects of the caller's leaves them to be rebuilt.

The resumable fits of the VAE and the prior checkpoint through `latentdd.fitting.fit_loop`; results kept
by content (the fitted VAE and prior, the judge, the teacher, the network bank, the forgetting counts)
are loaded or built by `latentdd.cache.cached`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from latentdd.io import atomic_write_bytes, checksum_path, file_sha256, stored_checksum, write_checksum

log = logging.getLogger(__name__)

T = TypeVar("T")


class StateRejected(Exception):
    """Raised by a `restore` loader: the stored state does not fit (the message says why)."""


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
    raise TypeError(f"cannot store a {type(value).__name__}")


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


def save_state(path: Path, state: dict) -> None:
    """Write `state` (nested dicts/lists of numbers, strings and tensors) atomically to `path`, and its
    checksum beside it. The checksum lands first, as the latent cache's: a state in place always has
    one, and a kill between the two writes leaves a state that fails it (ignored, with a warning)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    packed = _pack(state, tensors)
    data = save(tensors, metadata={"latentdd_state": json.dumps(packed)})
    write_checksum(path, hashlib.sha256(data).hexdigest())
    atomic_write_bytes(path, data)


def ignore(path: Path, reason: str, otherwise: str) -> None:
    """Warn that the stored state at `path` is not used, why, and what happens instead."""
    log.warning("ignoring %s: %s; %s", path, reason, otherwise)


def read_state(path: Path, *, otherwise: str) -> dict | None:
    """The state `save_state` wrote at `path`, or None: absent (silently), or without a checksum, failing
    it or unreadable (a warning naming the file and `otherwise`, what happens instead)."""
    if not path.is_file():
        return None
    expected = stored_checksum(path)
    if expected is None:
        ignore(path, f"it has no checksum beside it ({checksum_path(path).name}: written by an earlier latentdd, "
                     "or removed)", otherwise)
        return None
    if file_sha256(path) != expected:
        ignore(path, "it fails its checksum (truncated or altered)", otherwise)
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            packed = json.loads(f.metadata()["latentdd_state"])
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - a file, not a dict
        state = _unpack(packed, tensors)
        if not isinstance(state, dict):
            raise TypeError("not a latentdd state")
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file is not used
        ignore(path, f"it cannot be read ({err})", otherwise)
        return None
    return state


def all_finite(value) -> bool:
    """Whether every float and floating-point tensor in nested dicts/lists `value` is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    return True


def restore(path: Path, load: Callable[[dict], T], *, otherwise: str) -> T | None:
    """load(state) for the state stored at `path` (see the module docstring), or None when there is
    none or it cannot be used (a warning says why, naming the file, and `otherwise`)."""
    state = read_state(path, otherwise=otherwise)
    if state is None:
        return None
    try:
        if not all_finite(state):
            raise StateRejected("it holds NaN or infinite values")
        return load(state)
    except StateRejected as why:
        ignore(path, str(why), otherwise)
    except Exception as err:  # noqa: BLE001 - a state that does not load is not used
        ignore(path, f"it does not load ({type(err).__name__}: {err})", otherwise)
    return None


def check_count(value, most: int, what: str) -> int:
    """`value` if it is an integer in [0, most], else StateRejected."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise StateRejected(f"its {what} {value!r} is not in 0..{most}")
    return value


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict(state), then StateRejected unless each of its tensors (steps aside)
    has its parameter's shape: load_state_dict does not check, and the first step would fail."""
    optimizer.load_state_dict(state)
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                raise StateRejected(f"its optimizer's {name} has shape {tuple(value.shape)}, its parameter's is "
                                    f"{tuple(param.shape)}")
