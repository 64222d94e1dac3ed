"""Configuration: dataclass defaults < YAML file < command-line flags, resolved and saved.

A YAML file has one mapping per component (`dataset:`, `evaluator:`, ...); each
component receives only its own section. Every key and value is checked against the
section's dataclass before any work starts (`build`): an unknown key is an error naming
the closest known key, and values are coerced to the field's type by pydantic, so that
`1e-3` (which YAML reads as a string) is the float 0.001 and "false" / "true" / "yes" /
"no" / 0 / 1 are booleans; anything else ("maybe" for a bool, 1.5 for an int, true for a
number) is an error.

What a value may be is declared on the field, not checked by hand: `Literal[...]` for a
choice and the ranges below (`PositiveInt`, `Fraction`, ...: `Annotated` types with
pydantic's bounds). A config dataclass derives from `Checked`, whose `__post_init__` checks
every field against its annotation, so a config built in Python (`EvalConfig(epochs=0)`) is
refused as one read from YAML is, with a message naming the key, what it may be and the value
given. Checks that tie two fields together stay explicit, in the class's `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import operator
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

import pydantic
import yaml

from latentdd.errors import DataError
from latentdd.io import atomic_write_text

T = TypeVar("T")

# The ranges a field may declare (its message is derived from the bounds: see `check_value`).
PositiveInt = Annotated[int, pydantic.Field(ge=1)]
NonNegativeInt = Annotated[int, pydantic.Field(ge=0)]
PositiveFloat = Annotated[float, pydantic.Field(gt=0)]
NonNegativeFloat = Annotated[float, pydantic.Field(ge=0)]
Fraction = Annotated[float, pydantic.Field(ge=0, lt=1)]  # [0, 1)
Probability = Annotated[float, pydantic.Field(ge=0, le=1)]  # [0, 1]


class Checked:
    """Base of the config dataclasses: building one checks every field against its annotation
    (`check_value`), DataError naming `field_key(field)`.

    section: the YAML section the class reads (`evaluator`), so that messages name the dotted
    key (`evaluator.epochs`). A subclass with checks across fields overrides `__post_init__`,
    calling this one first.
    """

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _field_hints(type(self))
        for f in dataclasses.fields(self):
            check_value(hints[f.name], getattr(self, f.name), self.field_key(f.name))

    def field_key(self, name: str) -> str:
        """How messages name field `name`."""
        return f"{self.section}.{name}" if self.section else name


@functools.lru_cache(maxsize=None)
def _field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def check_value(tp: Any, value: Any, where: str, *, or_null: bool = False) -> None:
    """DataError naming `where` unless `value` is what annotation `tp` allows: one of a `Literal`'s
    values, a number within an `Annotated` type's bounds, None for an optional, each element of a
    tuple, list or dict so. Other types are not checked (`coerce` made file values the field's type).
    or_null: None is allowed too (the message says so)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    null = " (or null)" if or_null else ""
    if origin is Annotated:
        base, (bounds, finite, hint) = args[0], _constraints(args[1:])
        if (bounds or finite) and not (_is_number(base, value) and _within(value, bounds)
                                       and (not finite or math.isfinite(value))):
            hint = f" ({hint})" if hint else ""
            raise DataError(f"{where} must {_requirement(base, bounds, finite)}{null}{hint}; got {value!r}")
        check_value(base, value, where)
    elif origin is Literal:
        if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in args):
            hint = did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else ""
            raise DataError(f"{where} must be {_choices(args)}{null}; got {value!r}{hint}")
    elif origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return
        problems = []
        for option in options:
            try:
                return check_value(option, value, where, or_null=len(options) < len(args))
            except DataError as err:
                problems.append(err)
        raise problems[0]
    elif origin in (tuple, list) and isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            element = args[0] if origin is list or (len(args) == 2 and args[1] is Ellipsis) else \
                args[i] if i < len(args) else Any
            check_value(element, item, f"{where}[{i}]")
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for k, item in value.items():
            check_value(args[0], k, f"{where} keys")
            check_value(args[1], item, f"{where}.{k}")


def _constraints(metadata) -> tuple[dict[str, Any], bool, str]:
    """What `Annotated` metadata (pydantic.Field(...), or annotated_types' Ge, Gt, Le, Lt) asks of a number:
    its bounds ({"ge": 1, ...}), whether it must be finite (allow_inf_nan=False), and the description that the
    message gives in parentheses ("0: plain VAE decoding, 1: from almost pure noise")."""
    bounds, finite, hint = {}, False, ""
    for m in metadata:
        hint = getattr(m, "description", None) or hint
        for item in getattr(m, "metadata", [m]):
            bounds.update({name: getattr(item, name) for name in ("ge", "gt", "le", "lt")
                           if getattr(item, name, None) is not None})
            finite = finite or getattr(item, "allow_inf_nan", True) is False
    return bounds, finite, hint


def _is_number(base: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral if base is int else numbers.Real)


def _within(value: Any, bounds: dict[str, Any]) -> bool:
    return all(_OPERATORS[name][1](value, b) for name, b in bounds.items())


_OPERATORS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _range_text(bounds: dict[str, Any]) -> str:
    """"in [0, 1)" for a lower and an upper bound, ">= 1" for one."""
    low = [f"{'[' if name == 'ge' else '('}{b:g}" for name, b in bounds.items() if name in ("ge", "gt")]
    high = [f"{b:g}{']' if name == 'le' else ')'}" for name, b in bounds.items() if name in ("le", "lt")]
    if low and high:
        return f"in {low[0]}, {high[0]}"
    return " and ".join(f"{_OPERATORS[name][0]} {b:g}" for name, b in bounds.items())


def _requirement(base: Any, bounds: dict[str, Any], finite: bool = False) -> str:
    """"be a positive integer", "lie in [0, 1)", "be finite and > 0": what `bounds` ask of a `base` number."""
    if base is int and bounds in ({"ge": 1}, {"ge": 0}):
        return f"be a {'positive' if bounds['ge'] else 'non-negative'} integer"
    text = _range_text(bounds)
    if base is int:
        return f"be an integer {text}"
    if finite:
        return f"be finite and {text}" if text else "be finite"
    return f"lie {text}" if text.startswith("in ") else f"be {text}"


def _choices(values) -> str:
    shown = [_yaml_text(v) for v in values]
    return f"one of {', '.join(shown)}" if len(shown) > 1 else shown[0]


def _yaml_text(value: Any) -> str:
    """`value` as YAML writes a scalar: true, false, null, the text of a string or number."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def type_text(tp: Any) -> str:
    """Annotation `tp` as the config reference shows it: `int >= 1 | None`, `pad | resize`, `float in [0, 1)`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        bounds = _constraints(args[1:])[0]
        return f"{type_text(args[0])} {_range_text(bounds)}" if bounds else type_text(args[0])
    if origin is Literal:
        return " | ".join(_yaml_text(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join('...' if a is Ellipsis else type_text(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def bare_type(tp: Any) -> Any:
    """Annotation `tp` without its value checks, what `coerce` converts to: `Annotated[int, ...]` -> int,
    `Literal["a", "b"]` -> str, recursively (`PositiveInt | None` -> int | None)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return bare_type(args[0])
    if origin is Literal:
        kinds = tuple(dict.fromkeys(type(a) for a in args))
        return Union[kinds] if len(kinds) > 1 else kinds[0]
    if origin in (Union, types.UnionType):
        return Union[tuple(bare_type(a) for a in args)]
    if origin is not None and args:
        try:
            return origin[tuple(a if a is Ellipsis else bare_type(a) for a in args)]
        except TypeError:
            return tp
    return tp


RESIZE_MODES = ("pad", "resize", "center_crop")


@dataclass
class DataConfig(Checked):
    """Which dataset, from where, at which size."""

    section: ClassVar[str] = "dataset"

    name: str = "fashion_mnist"
    root: str | None = None  # None: the standard places (see `latentdd datasets`)
    image_size: PositiveInt | None = None  # None: native size
    channels: Literal[1, 3] | None = None  # None: native channels
    resize: Literal[RESIZE_MODES] = "pad"  # how to reach image_size when it differs from native
    download: bool = False  # torchvision datasets only, and only when asked
    # Fraction of each class of the train split held out as the "val" split (fixed,
    # stratified, seed 0); "train" is then the rest. For choosing settings without ever
    # looking at the test split. 0: no validation split.
    validation: Fraction = 0.0

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
    naming `section`.key (default: the class's own, `Checked.section`). None values in a layer mean
    "not given" and are skipped, so argparse defaults of None never mask a YAML value.
    """
    section = section or getattr(cls, "section", "") or cls.__name__
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
    """`value` as type `tp` (pydantic's lax mode, but no booleans for numbers); DataError naming `where`.
    The value checks that `tp` declares (choices, ranges) are `check_value`'s, not done here."""
    tp = bare_type(tp)
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


def resolved_fields(cls: type, overrides: Mapping[str, Any] | None, section: str = "") -> dict[str, Any]:
    """Every field of dataclass `cls`, overridden by `overrides` (checked as by `build`), as plain values.

    For the nested settings kept as a dict (`latent.fit`, `decoder.prior`) so that the saved
    config holds every value used, not only the overrides.
    """
    return plain(build(cls, overrides, section=section))


class _WithIpc(Checked):
    """A section with a required `ipc`, which --ipc sets too."""

    def __post_init__(self) -> None:
        if self.ipc is None:
            raise DataError(f"the IPC (images per class) is required: pass --ipc N or set {self.section}.ipc")
        super().__post_init__()

    def field_key(self, name: str) -> str:
        return f"{self.section}.ipc (--ipc)" if name == "ipc" else super().field_key(name)


@dataclass
class BaselineConfig(_WithIpc):
    """The `baseline:` section: which real subset `latentdd baseline` exports."""

    section: ClassVar[str] = "baseline"

    method: Literal["random"] = "random"
    ipc: PositiveInt | None = None  # images per class; required
    seed: NonNegativeInt = 0


@dataclass
class DistillConfig(_WithIpc):
    """The `distill:` section: which distiller `latentdd distill` runs, with which parameters."""

    section: ClassVar[str] = "distill"

    method: str = "kmeans"  # a name in latentdd.distill.DISTILLERS
    ipc: PositiveInt | None = None  # latents per class; required
    seed: NonNegativeInt = 0
    preset: str = "default"  # the parameters' starting point (latentdd.presets): default (chosen on val) | reference
    params: dict = field(default_factory=dict)  # merged over the preset's parameters
    latents: str | None = None  # a latent cache (`latentdd encode --out DIR`) read instead of encoding


def save_resolved(path: str | Path, sections: dict[str, Any]) -> Path:
    """Write the resolved configuration (dataclasses or plain values) as YAML."""
    return atomic_write_text(path, yaml.safe_dump(plain(sections), sort_keys=False))
