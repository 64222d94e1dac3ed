"""Named presets: the one source of the settings a distiller runs with.

`presets.yaml` beside this module holds them as data. Every entry point reads them the same way:
`latentdd distill --method dm`, a bare `dm` in `latentdd run` / `compare`, a `{method: dm, params: ...}`
entry there and `latentdd.distill(space, "dm", ...)` all call `resolve`, which merges the user's
parameters over the preset (an override changes one key, not the whole set).

    default     the settings chosen on a val split (presets.yaml says where), by IPC; a method without
                measured settings takes its reference settings
    reference   the method's public code: the registered distiller's own defaults

    >>> resolve("dm", 10).params["iterations"]
    300
    >>> resolve("dm", 10).params["real_precision"] in ("bfloat16", "float32")   # a preset's auto, as it runs here
    True
    >>> resolve("dm", 10, "reference", {"iterations": 50}).params
    {'iterations': 50}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources

import yaml

from latentdd.config import did_you_mean
from latentdd.errors import DataError

DEFAULT = "default"
REFERENCE = "reference"


@functools.cache
def presets() -> dict[str, dict[str, dict]]:
    """{method: {preset name: {"about": str, "ipc": {ipc: params}}}} as shipped in presets.yaml."""
    data = yaml.safe_load(resources.files("latentdd").joinpath("presets.yaml").read_text())
    for method, named in data.items():
        for name, preset in named.items():
            if name == REFERENCE or set(preset) - {"about", "ipc"} or not preset.get("ipc"):
                raise DataError(f"presets.yaml: {method}.{name} must hold `about` and a non-empty `ipc` mapping "
                                f"(and `{REFERENCE}` is implied: the distiller's own defaults)")
    return data


def preset_names(method: str) -> list[str]:
    """The presets `method` can take: `default`, its other named ones, then `reference`."""
    return [DEFAULT, *(name for name in presets().get(method, {}) if name != DEFAULT), REFERENCE]


def all_preset_names() -> list[str]:
    """Every preset name some method has (listed in --preset's help)."""
    names = {DEFAULT, REFERENCE} | {name for named in presets().values() for name in named}
    return sorted(names)


@dataclass(frozen=True)
class Resolved:
    """A method's parameters as it will run: `params` = the preset's entry for the IPC, then `overrides`.

    preset_ipc: the IPC of the preset entry taken (None: the reference, which has no entries)."""

    method: str
    preset: str
    preset_ipc: int | None
    overrides: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def record(self) -> dict:
        """What a protocol record says of where the parameters came from."""
        return {"name": self.preset, "ipc": self.preset_ipc, "overrides": dict(self.overrides)}


def resolve(method: str, ipc: int, preset: str = DEFAULT, overrides: dict | None = None) -> Resolved:
    """The parameters `method` runs with at `ipc` under `preset`, `overrides` merged over them.

    DataError for a preset the method does not have (its names listed). The distiller checks the
    parameters themselves when it is built (`latentdd.distill.make_distiller`)."""
    overrides = dict(overrides or {})
    named = presets().get(method, {})
    if preset == REFERENCE or (preset == DEFAULT and DEFAULT not in named):
        return Resolved(method, preset, None, overrides, dict(overrides))
    if preset not in named:
        known = preset_names(method)
        raise DataError(f"method {method!r} has no preset {preset!r}; its presets: {', '.join(known)}"
                        f"{did_you_mean(preset, known)}")
    by_ipc = named[preset]["ipc"]
    below = [measured for measured in by_ipc if measured <= ipc]
    taken = max(below) if below else min(by_ipc)
    params = dict(by_ipc[taken])
    if params.get("real_precision") == "auto":  # what this machine runs, so that records and requests say it
        from latentdd.distill.matching import machine_real_precision

        params["real_precision"] = machine_real_precision()
    return Resolved(method, preset, taken, overrides, params | overrides)
