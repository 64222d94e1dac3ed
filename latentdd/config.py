"""Configuration: dataclass defaults < YAML file < command-line flags, resolved and saved.

A YAML file has one mapping per component (`dataset:`, `evaluator:`, ...); each
component receives only its own section. Unknown keys are errors, not silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from latentdd.errors import DataError
from latentdd.io import atomic_write_text

T = TypeVar("T")


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
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DataError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def build(cls: type[T], *layers: dict[str, Any] | None, section: str = "") -> T:
    """An instance of dataclass `cls` from layers of overrides, later layers winning.

    None values in a layer mean "not given" and are skipped, so argparse defaults of
    None never mask a YAML value.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            key = key.replace("-", "_")
            if key not in names:
                raise DataError(f"unknown key {key!r} in config section {section or cls.__name__}; known: {sorted(names)}")
            if value is not None:
                values[key] = value
    return cls(**values)


def save_resolved(path: str | Path, sections: dict[str, Any]) -> Path:
    """Write the resolved configuration (dataclasses or plain values) as YAML."""
    plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in sections.items()}
    return atomic_write_text(path, yaml.safe_dump(plain, sort_keys=False))
