"""The `run:` section of `latentdd run` and `compare`: the methods (`MethodSpec`, each with its preset from
`latentdd.presets`) and how the run evaluates them (`RunConfig`), checked before any work."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from latentdd.config import Checked, PositiveInt
from latentdd.distill import coerce_params, make_distiller
from latentdd.errors import DataError
from latentdd.presets import DEFAULT, REFERENCE, Resolved, resolve
from latentdd.pipelines.cross_arch import parse_students

log = logging.getLogger(__name__)

_ENTRY_KEYS = ("method", "params", "preset", "label", "use_weights", "ipcs", "curve")


@dataclass(frozen=True)
class MethodSpec:
    """One row family of the table: a registered distiller with parameters, under a label.

    In YAML a method is a registry name (`dm`) or a mapping
    `{method: kmeans, params: {medoid: true}, label: kmeans-medoid, use_weights: true, preset: default}`.
    Its parameters are its preset's at each IPC (`latentdd.presets`: `default`, the settings chosen on val,
    unless the entry names another, e.g. `reference`), with the entry's `params` merged over them;
    the label names the output folder and the table row (default: the name, then
    `key=value` of each parameter given); use_weights (optional) overrides the run's; ipcs
    (optional) limits the method to those of the run's IPCs (e.g. a costly variant at
    IPC 10 only).

    curve (optional, iterative distillers such as bacon/idm): a list of increasing
    iteration counts, e.g. [250, 500, 1000]. One optimisation runs to the largest, and the
    set after each count becomes its own folder and row, `<label>_it<N>` (an accuracy vs.
    iterations curve for the price of the longest run: each point continues from the
    previous point's checkpoint, kept in `<label>_ipc<IPC>.checkpoint`).
    """

    method: str
    params: dict = field(default_factory=dict)
    label: str = ""
    use_weights: bool | str | None = None
    ipcs: tuple[int, ...] | None = None
    curve: tuple[int, ...] | None = None
    chain: str | None = None  # a curve point: the curve's label, which names the shared checkpoint
    preset: str = DEFAULT  # the preset `params` start from (latentdd.presets)
    overrides: dict = field(default_factory=dict)  # the entry's own params, merged over the preset

    def preset_record(self, ipc: int) -> dict:
        """The record of where the parameters at `ipc` came from: the preset, its entry's IPC, the overrides."""
        return resolve(self.method, ipc, self.preset, self.overrides).record()

    @classmethod
    def parse(cls, entry: str | dict, ipcs: list[int]) -> list[MethodSpec]:
        """The specs of one `run.methods` entry: one per group of `ipcs` (the entry's own `ipcs`, else the
        run's) whose preset entry is the same, each with the preset's parameters and the entry's over them."""
        if isinstance(entry, str):
            entry = {"method": entry, "label": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
            raise DataError(f"run.methods: each entry is a distiller name or a mapping with `method`; got {entry!r}")
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if unknown:
            raise DataError(f"run.methods entry {entry!r}: unknown key(s) {unknown}; known: {', '.join(_ENTRY_KEYS)}")
        if entry.get("ipcs") is not None:
            _check_counts(entry["ipcs"], f"run.methods entry {entry!r}: ipcs")
        _check_use_weights(entry.get("use_weights"), allow_none=True)
        preset = entry.get("preset", DEFAULT)
        if not isinstance(preset, str):
            raise DataError(f"run.methods entry {entry!r}: preset must be a name, e.g. {DEFAULT} or {REFERENCE}")
        # Unknown names and bad parameters fail here; values coerced (YAML's "1e-3" is 0.001).
        overrides = coerce_params(entry["method"], entry.get("params") or {})
        curve = entry.get("curve")
        if curve is not None:
            _check_counts(curve, f"run.methods entry {entry!r}: curve")
            if list(curve) != sorted(set(curve)):
                raise DataError(f"run.methods entry {entry!r}: curve must list iteration counts in increasing "
                                f"order, each once; got {curve}")
            distiller = make_distiller(entry["method"], **overrides)
            if not getattr(distiller, "uses_context", False) or "iterations" in overrides:
                raise DataError(f"run.methods entry {entry!r}: curve needs an iterative distiller (bacon, idm) "
                                "and sets `iterations` itself: drop it from params")
            if not getattr(distiller, "continuable", True):
                raise DataError(f"run.methods entry {entry!r}: curve continues one run to each point, and this "
                                "run's schedule spans its total iterations (mtt max_start_epoch_final): give "
                                "one entry per iteration count, each with params.iterations")
        label = entry.get("label") or "-".join([entry["method"], *(f"{k}={v}" for k, v in sorted(overrides.items()))])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*", label):
            raise DataError(f"run.methods label {label!r} must be a plain folder name (letters, digits, _ . = + -)")
        groups: dict[str, tuple[Resolved, list[int]]] = {}
        for ipc in entry.get("ipcs") or ipcs:
            resolved = resolve(entry["method"], ipc, preset, overrides)
            groups.setdefault(json.dumps(resolved.params, sort_keys=True), (resolved, []))[1].append(ipc)
        # An entry without a measured preset runs at every IPC it is asked at (ipcs None).
        single = entry.get("ipcs") is None and all(resolved.preset_ipc is None for resolved, _ in groups.values())
        return [cls(entry["method"], coerce_params(entry["method"], resolved.params), label, entry.get("use_weights"),
                    None if single else tuple(group), None if curve is None else tuple(curve),
                    preset=resolved.preset, overrides=overrides)
                for resolved, group in groups.values()]

    def points(self) -> list[MethodSpec]:
        """The spec itself, or one spec per curve point (`<label>_it<N>`, iterations N)."""
        if self.curve is None:
            return [self]
        return [replace(self, params=self.params | {"iterations": n}, label=f"{self.label}_it{n}", curve=None,
                        chain=self.label, overrides=self.overrides | {"iterations": n}) for n in self.curve]

    def runs_at(self, ipc: int) -> bool:
        return self.ipcs is None or ipc in self.ipcs


@dataclass
class RunConfig(Checked):
    """What the main job distils and how it evaluates.

    use_weights: true evaluates weighted methods (kmeans) with their weights, false
    without, "both" gives one row each.
    eval_split: "test", or "val" (the split `dataset.validation` holds out of train) for
        choosing settings (decoder strength, guidance, iterations) without the test split.
    latents_from: an earlier run's folder; where it holds a method's latents made with the
        same method, parameters, IPC, seed and VAE, they are rendered again (with this run's
        decoder) instead of distilled again. A folder of this run whose decoder changed is
        reused the same way.
    latents_dir: the train split's latent cache that `latentdd encode --out DIR` wrote (e.g. with several
        processes), read instead of encoding; DataError unless it holds this dataset's train split encoded
        with this VAE and input adapter. Default: the content-keyed cache under latent.cache_dir.
    consistency: also report each set's class consistency, the share of its images that a
        ConvNet trained on the whole real train split calls their class
        (`latentdd.evaluate.consistency`; the judge is cached under cache_dir/judge).
    calibration: a calibration folder of the same dataset; its full-data (hard-label) accuracy
        gives each set's HLR and LRS (`latentdd.evaluate.scores`) under a hard-label protocol.
        IOR (vs the random-real subsets of the same IPC and protocol) is always reported.
    random_real_num_eval: trainings per random-real subset (default: the evaluator's num_eval), e.g. 1
        beside 3 per distilled set: the baseline's spread is the subsets'.
    random_real_tiles: f > 1 adds a second random-real baseline, random real tiles: as many subsets, each stored
        image f x f random real images of its class average-pooled and tiled (`baseline.random_real`), trained on
        its tiles (factor f) like a set of f x f tiles (rded, matching with factor f). Each distilled set's IOR is
        then against the baseline of its own tiling (`tables.with_relative_scores`). Drawn only at the IPCs where
        a set is trained on f x f tiles (f**2 times a plain training's cost; elsewhere it compares nothing).
        1: none.
    random_real_part: this process evaluates only random-real subset K (0-based, seed seed + K) and no
        distilled set: one part of a run split across processes, which the whole run gathers with reports_from.
    reports_from: earlier run folders whose reports/ this run may reuse. A training is its seed's alone, so
        an evaluation there of the same images (content), data and evaluator settings, whatever its num_eval,
        gives its trainings seed by seed (e.g. a random-real baseline measured by another run, or a set's
        one training extended to three); the report lists each under record.reused_trainings with the
        report it came from. This run's own reports are reused the same way (two methods that pick the
        same images train once). Only trainings that ran as their settings asked (no compile fallback), from
        reports that match their content hash (see `latentdd.pipelines.reports`).
    students: the cross-architecture table (`latentdd.pipelines.cross_arch`): every set and random-real subset
        evaluated again on each of these students, presets (`resnet18`, `convnet-bn`, ...) or mappings of
        evaluator overrides (`{model: convnet, norm: batchnorm, label: convnet-bn}`), written to
        cross_arch.md / .json. Default none: only the evaluator's table.
    parallel: what the processes of `accelerate launch` (or torchrun) share. "trainings" (default): the first
        process distils every set and draws the random-real subsets, then each process takes whole trainings (a
        set's seeds, the subsets) in turn, each kept as it finishes; the first gathers the table, the same as one
        process's. "data": every training runs on all of them, each process on its shard of every batch
        (`latentdd.parallel.DataParallel`). One process: no difference.
    """

    section: ClassVar[str] = "run"

    methods: list = field(default_factory=lambda: ["dm", "kmeans"])  # each with its preset (latentdd.presets)
    ipcs: list[PositiveInt] = field(default_factory=lambda: [10])
    seed: int = 0
    use_weights: Literal[True, False, "both"] = True
    random_real: bool = True  # the pixel-space random-real baseline, same protocol
    random_real_subsets: PositiveInt = 5  # independently drawn subsets (seeds seed, seed + 1, ...), as DC reports it
    random_real_num_eval: PositiveInt | None = None  # trainings per random-real subset; None: the evaluator's num_eval
    random_real_part: int | None = None  # only subset K, no distilled set (a part of a run split across processes)
    random_real_tiles: PositiveInt = 1  # f > 1: also random real tiles, f x f composites of random real images (rded's, factorized sets' baseline)
    reports_from: list[str] = field(default_factory=list)  # earlier runs whose trainings are reused, seed by seed
    eval_split: Literal["test", "val"] = "test"
    latents_from: str | None = None
    latents_dir: str | None = None
    consistency: bool = False
    calibration: str | None = None  # a `latentdd calibrate --out` folder: its full-data accuracy gives HLR and LRS
    students: list = field(default_factory=list)  # cross-architecture table: see latentdd.pipelines.cross_arch
    parallel: Literal["trainings", "data"] = "trainings"  # under accelerate launch: whole trainings to each process | each training's batches split over them

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.ipcs, list) or not self.ipcs:
            raise DataError(f"run.ipcs must be a list of at least one IPC; got {self.ipcs!r}")
        if self.random_real_part is not None and not (self.random_real and
                                                      0 <= self.random_real_part < self.random_real_subsets):
            raise DataError(f"run.random_real_part must name one of the run's {self.random_real_subsets} random-real "
                            f"subsets (0 to {self.random_real_subsets - 1}) with run.random_real on; "
                            f"got {self.random_real_part!r}")
        if not isinstance(self.reports_from, list) or not all(isinstance(p, str) for p in self.reports_from):
            raise DataError(f"run.reports_from must be a list of run folders; got {self.reports_from!r}")
        idle = [spec.label for spec in self.specs() if not any(map(spec.runs_at, self.ipcs))]
        if idle and len(idle) == len(self.specs()):
            raise DataError(f"run.methods {idle}: their ipcs include none of run.ipcs {self.ipcs}")
        if idle:  # a config's per-IPC variants, with run.ipcs (--ipc) narrowed to the other IPCs
            log.warning("run.methods %s: their ipcs include none of run.ipcs %s; skipped", idle, self.ipcs)
        for ipc in self.ipcs:
            labels = [spec.label for spec in self.specs() if spec.runs_at(ipc)]
            if len(set(labels)) != len(labels):
                raise DataError(f"run.methods labels must be distinct; got {labels} (give each variant a `label`)")
        parse_students(self.students)

    def specs(self) -> list[MethodSpec]:
        """Every row family, a curve's points each on their own; an entry whose preset differs by IPC
        one spec per group of run.ipcs that share a preset entry."""
        return [point for entry in self.methods for spec in self._parse(entry) for point in spec.points()]

    def _parse(self, entry: str | dict) -> list[MethodSpec]:
        return MethodSpec.parse(entry, self.ipcs)

    def weight_modes(self, spec: MethodSpec) -> list[bool]:
        mode = self.use_weights if spec.use_weights is None else spec.use_weights
        return [True, False] if mode == "both" else [mode]


def _check_counts(value, what: str) -> None:
    """DataError unless `value` is a non-empty list of positive integers (IPCs, a curve's iteration counts)."""
    if not isinstance(value, list) or not value or \
            any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise DataError(f"{what} must be a list of positive integers; got {value!r}")


def _check_use_weights(value, allow_none: bool = False) -> None:
    if not (value is True or value is False or value == "both" or (allow_none and value is None)):
        raise DataError(f"use_weights must be true, false or both; got {value!r}")
