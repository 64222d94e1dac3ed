"""Configuration: dataclass defaults < YAML file < command-line flags, resolved and saved.

A YAML file has one mapping per component (`dataset:`, `evaluator:`, ...); each
component receives only its own section. Every key and value is checked against the
section's dataclass before any work starts (`build`): an unknown key is an error naming
the closest known key, and values are coerced to the field's type by pydantic, so that
`1e-3` (which YAML reads as a string) is the float 0.001 and "false" / "true" / "yes" /
"no" / 0 / 1 are booleans; anything else ("maybe" for a bool, 1.5 for an int, true for a
number) is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from latentdd.errors import DataError
from latentdd.io import atomic_write_text

T = TypeVar("T")


RESIZE_MODES = ("pad", "resize", "center_crop")


@dataclass
class DataConfig:
    """Which dataset, from where, at which size."""

    name: str = "fashion_mnist"
    root: str | None = None  # None: the standard places (see `latentdd datasets`)
    image_size: int | None = None  # None: native size
    channels: int | None = None  # None: native channels
    resize: str = "pad"  # pad | resize | center_crop, when image_size differs from native
    download: bool = False  # torchvision datasets only, and only when asked
    # Fraction of each class of the train split held out as the "val" split (fixed,
    # stratified, seed 0); "train" is then the rest. For choosing settings without ever
    # looking at the test split. 0: no validation split.
    validation: float = 0.0

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise DataError(f"dataset.resize must be one of {', '.join(RESIZE_MODES)}; got {self.resize!r}")
        if self.image_size is not None and self.image_size < 1:
            raise DataError(f"dataset.image_size must be a positive integer; got {self.image_size!r}")
        if self.channels not in (None, 1, 3):
            raise DataError(f"dataset.channels must be 1 or 3; got {self.channels!r}")
        if not 0.0 <= self.validation < 1.0:
            raise DataError(f"dataset.validation must lie in [0, 1); got {self.validation!r}")

    def load(self, split: str):
        """Split `split` (train, test, or val when `validation` > 0) with this config's size, channels and root."""
        from latentdd.data import load_dataset
        from latentdd.data.base import split_rows
        from latentdd.data.select import stratified_split

        if split == "val" and not self.validation:
            raise DataError("there is no val split: set dataset.validation (e.g. 0.1) to hold one out of train")
        load = lambda name: load_dataset(self.name, name, root=self.root, image_size=self.image_size,  # noqa: E731
                                         channels=self.channels, resize=self.resize, download=self.download)
        if split not in ("train", "val") or not self.validation:
            return load(split)
        train = load("train")
        keep, held = stratified_split(train.labels.numpy(), self.validation, seed=0)
        return split_rows(train, keep if split == "train" else held, split)


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML file ({} for None)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"config file {path} is not UTF-8 text ({err}); save it as UTF-8") from None
    except OSError as err:
        raise DataError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = safe_yaml(text) or {}
    except yaml.YAMLError as err:
        raise DataError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def safe_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`; yaml.YAMLError for any text it cannot read. (PyYAML's constructors raise
    ValueError or IndexError for an explicit tag with a bad value, such as `!!int ;` or `!!float`, and
    deep nesting raises RecursionError.)"""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except (ValueError, IndexError, TypeError, RecursionError) as err:
        raise yaml.YAMLError(f"{type(err).__name__}: {err}") from None


def build(cls: type[T], *layers: Mapping[str, Any] | None, section: str = "") -> T:
    """An instance of dataclass `cls` from layers of overrides, later layers winning.

    Each key must name a field of `cls` (dashes read as underscores) and each value must
    fit the field's type (coerced as the module docstring says); DataError otherwise,
    naming `section`.key. None values in a layer mean "not given" and are skipped, so
    argparse defaults of None never mask a YAML value.
    """
    section = section or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in check_mapping(layer, section).items():
            key = str(key).replace("-", "_")
            check_key(key, names, section)
            if value is not None:
                values[key] = coerce(hints[key], value, f"{section}.{key}")
    return cls(**values)


def check_sections(raw: Mapping[str, Any], accepted: Iterable[str], command: str) -> None:
    """DataError naming the first top-level section of `raw` that `command` does not read."""
    for key in raw:
        check_key(str(key), accepted, f"the config file of `latentdd {command}`", what="section")


def check_mapping(value: Any, section: str) -> Mapping:
    """`value` if it is a mapping ({} for None); DataError naming `section` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(f"{section} must be a mapping of key: value; got {type(value).__name__} {value!r}")
    return value


def check_key(key: str, known: Iterable[str], section: str, what: str = "key") -> None:
    """DataError naming `key`, the closest of `known` and all of them, unless `key` is known."""
    known = list(known)
    if key in known:
        return
    raise DataError(f"unknown {what} {key!r} in {section}; known: {', '.join(known) or '(none)'}{did_you_mean(key, known)}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `known` to `name`, or "" when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(tp: Any, value: Any, where: str) -> Any:
    """`value` as type `tp` (pydantic's lax mode, but no booleans for numbers); DataError naming `where`."""
    if isinstance(value, bool) and _numeric(tp):
        raise DataError(f"{where} must be a number; got {value!r}")
    try:
        return _adapter(tp).validate_python(value)
    except pydantic.ValidationError as err:
        problem = err.errors()[0]
        at = "".join(f"[{p!r}]" for p in problem["loc"])
        raise DataError(f"{where}{at} = {value!r}: {problem['msg']}") from None


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(tp)


def _numeric(tp: Any) -> bool:
    """True for int, float and their optionals (whose values must not be booleans)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return all(a in (int, float) for a in args)


def plain(value: Any) -> Any:
    """`value` (dataclasses, tuples, paths, nested) as plain JSON/YAML types."""
    def default(obj):
        if dataclasses.is_dataclass(obj):
            return dataclasses.asdict(obj)
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cannot save {type(obj).__name__} {obj!r} in a config")

    return json.loads(json.dumps(value, default=default))


def resolved_fields(cls: type, overrides: Mapping[str, Any] | None, section: str) -> dict[str, Any]:
    """Every field of dataclass `cls`, overridden by `overrides` (checked as by `build`), as plain values.

    For the nested settings kept as a dict (`latent.fit`, `decoder.prior`) so that the saved
    config holds every value used, not only the overrides.
    """
    return plain(build(cls, overrides, section=section))


def positive_int(value: Any, where: str, *, optional: bool = False) -> None:
    """DataError unless `value` is an integer >= 1 (or None when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{where} must be a positive integer; got {value!r}")


@dataclass
class BaselineConfig:
    """The `baseline:` section: which real subset `latentdd baseline` exports."""

    method: str = "random"
    ipc: int | None = None  # images per class; required
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method != "random":
            raise DataError(f"baseline.method must be random; got {self.method!r}")
        _check_ipc_seed(self, "baseline")


@dataclass
class DistillConfig:
    """The `distill:` section: which distiller `latentdd distill` runs, with which parameters."""

    method: str = "kmeans"  # a name in latentdd.distill.DISTILLERS
    ipc: int | None = None  # latents per class; required
    seed: int = 0
    preset: str = "default"  # the parameters' starting point (latentdd.presets): default (chosen on val) | reference
    params: dict = field(default_factory=dict)  # merged over the preset's parameters
    latents: str | None = None  # a latent cache (`latentdd encode --out DIR`) read instead of encoding

    def __post_init__(self) -> None:
        _check_ipc_seed(self, "distill")


def _check_ipc_seed(config, section: str) -> None:
    if config.ipc is None:
        raise DataError(f"the IPC (images per class) is required: pass --ipc N or set {section}.ipc")
    positive_int(config.ipc, f"{section}.ipc (--ipc)")
    if config.seed < 0:
        raise DataError(f"{section}.seed must be a non-negative integer; got {config.seed!r}")


def save_resolved(path: str | Path, sections: dict[str, Any]) -> Path:
    """Write the resolved configuration (dataclasses or plain values) as YAML."""
    return atomic_write_text(path, yaml.safe_dump(plain(sections), sort_keys=False))
