"""The main job: fit or load the VAE, encode (cached), distil, render, evaluate, tabulate.

Every stage is cached and resumable: the fitted VAE and the latent cache by content,
each method's folder by its request, the random-real subset and each evaluation report
by a `cachekey.content_key` of their inputs (the images' content, the data, the resolved
settings), so a second run only redoes what changed; within an evaluation, each finished
training (reports/partial/), so an interrupted one resumes at its next. The random-real baseline (real
pixels, no VAE) is evaluated under the same protocol in the same run, as every table
must have it.

Every report (reports/*.json, reports/partial/*.json) is written with its content hash
(`content_sha256`, `latentdd.io.json_sha256` over the rest of it), and a report is reused --
whole, or lending its trainings seed by seed to this run -- only when it matches it. One that
does not (edited, e.g. its accuracies, or damaged), or that has none (written by a latentdd before
reports carried one), is not used, with a warning naming it: its trainings run again. A
training is cheaper to run again than a wrong table is to notice, and a hash that could be
dropped to be let through would protect nothing. A run.reports_from folder from which nothing
can be reused is warned about; each training lent by one is logged with the report it comes
from, and the table marks the rows with lent trainings and lists the folders that lent them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from latentdd.cachekey import content_key, split_sha256
from latentdd.config import DataConfig, save_resolved
from latentdd.data import dataset_info
from latentdd.distill import coerce_params, distiller_params, make_distiller
from latentdd.errors import DataError, LatentDDError
from latentdd.presets import DEFAULT, REFERENCE, Resolved, resolve
from latentdd.evaluate.consistency import Judge, JudgeConfig, class_consistency, fit_judge
from latentdd.evaluate.trainer import EvalConfig, channel_stats, evaluate_synthetic
from latentdd.export import export_image_folder, load_image_folder, read_manifest
from latentdd.io import atomic_write_json, atomic_write_text, claim_folder, json_sha256_problem, with_json_sha256
from latentdd.record import protocol_record
from latentdd.pipelines.baseline import random_real
from latentdd.pipelines.cross_arch import EvaluatedSet, parse_students, resolve_students, subsets_text, write_cross_arch
from latentdd.pipelines.distill import DecoderConfig, LatentSpaceConfig, distill_to_folder, make_decoder, prepare_latent_space

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
            if not getattr(make_distiller(entry["method"]), "uses_context", False) or "iterations" in overrides:
                raise DataError(f"run.methods entry {entry!r}: curve needs an iterative distiller (bacon, idm) "
                                "and sets `iterations` itself: drop it from params")
        label = entry.get("label") or "-".join([entry["method"], *(f"{k}={v}" for k, v in sorted(overrides.items()))])
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*", label):
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
class RunConfig:
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
    random_real_part: this process evaluates only random-real subset K (0-based, seed seed + K) and no
        distilled set: one part of a run split across processes, which the whole run gathers with reports_from.
    reports_from: earlier run folders whose reports/ this run may reuse. A training is its seed's alone, so
        an evaluation there of the same images (content), data and evaluator settings, whatever its num_eval,
        gives its trainings seed by seed (e.g. a random-real baseline measured by another run, or a set's
        one training extended to three); the report lists each under record.reused_trainings with the
        report it came from. This run's own reports are reused the same way (two methods that pick the
        same images train once). Only trainings that ran as their settings asked (no compile fallback), from
        reports that match their content hash (see the module docstring).
    students: the cross-architecture table (`latentdd.pipelines.cross_arch`): every set and random-real subset
        evaluated again on each of these students, presets (`resnet18`, `convnet-bn`, ...) or mappings of
        evaluator overrides (`{model: convnet, norm: batchnorm, label: convnet-bn}`), written to
        cross_arch.md / .json. Default none: only the evaluator's table.
    """

    methods: list = field(default_factory=lambda: ["dm", "kmeans"])  # each with its preset (latentdd.presets)
    ipcs: list[int] = field(default_factory=lambda: [10])
    seed: int = 0
    use_weights: bool | str = True
    random_real: bool = True  # the pixel-space random-real baseline, same protocol
    random_real_subsets: int = 5  # independently drawn subsets (seeds seed, seed + 1, ...), as DC reports it
    random_real_num_eval: int | None = None  # trainings per random-real subset; None: the evaluator's num_eval
    random_real_part: int | None = None  # only subset K, no distilled set (a part of a run split across processes)
    reports_from: list[str] = field(default_factory=list)  # earlier runs whose trainings are reused, seed by seed
    eval_split: str = "test"
    latents_from: str | None = None
    latents_dir: str | None = None
    consistency: bool = False
    calibration: str | None = None  # a `latentdd calibrate --out` folder: its full-data accuracy gives HLR and LRS
    students: list = field(default_factory=list)  # cross-architecture table: see latentdd.pipelines.cross_arch

    def __post_init__(self) -> None:
        _check_use_weights(self.use_weights)
        if self.eval_split not in ("test", "val"):
            raise DataError(f"run.eval_split must be test or val; got {self.eval_split!r}")
        _check_counts(self.ipcs, "run.ipcs")
        _check_counts([self.random_real_subsets], "run.random_real_subsets")
        if self.random_real_num_eval is not None:
            _check_counts([self.random_real_num_eval], "run.random_real_num_eval")
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


def run(data: DataConfig, space: LatentSpaceConfig, config: RunConfig, evaluator: EvalConfig, out: Path,
        *, decoder: DecoderConfig | None = None, progress: bool = True, teacher=None) -> list[dict]:
    """The main job (see the module docstring); `teacher` (a TeacherConfig): the soft protocol's teacher
    (default: fitted on the train split, cached)."""
    students = resolve_students(config.students, evaluator)  # each student's settings checked before any work
    earlier = [Path(folder).expanduser() / "reports" for folder in config.reports_from]
    for folder in earlier:
        if not folder.is_dir():
            raise DataError(f"run.reports_from: {folder} is not a folder; give run folders (with a reports/ "
                            "sub-folder) that `latentdd run` or `compare` wrote")
    # Missing, empty or latentdd's, and writable -- checked before any fitting (latentdd.io).
    out = claim_folder(Path(out), "run")
    decoder = decoder or DecoderConfig()
    save_resolved(out / "config.yaml",
                  {"dataset": data, "latent": space, "decoder": decoder, "run": config, "evaluator": evaluator})
    t0 = time.perf_counter()
    prepared = prepare_latent_space(data, space, latents_dir=config.latents_dir, progress=progress)
    renderer, decoder_record = make_decoder(decoder, prepared, space.cache_dir, progress=progress)
    # Folders rendered by the plain VAE before decoders were configurable keep their request (and reports).
    # The prior: the fitted prior's name (its content hash), or the pretrained model (hub id or folder).
    decoder_request = None if decoder.name == "vae" else dataclasses.asdict(decoder) | {
        "prior": decoder_record.get("prior") or decoder_record.get("model")}
    mean, std = channel_stats(prepared.train)
    flip = dataset_info(data.name).flip_augment
    held_out = prepared.test if config.eval_split == "test" else data.load("val")
    # What every report also depends on: the held-out split, and the train split (its channel stats).
    held_images, held_labels, _ = split_sha256(held_out.iter_batches(space.batch_size))
    data_key = content_key("evaluation-data", train=prepared.train_sha256, flip=flip,
                           held_out={"images_sha256": held_images, "labels_sha256": held_labels})
    labeller = None
    if evaluator.loss == "teacher_kl":  # the soft protocol: one teacher labels the batches of every set
        from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher

        labeller = resolve_teacher(teacher or TeacherConfig(cache_dir=space.cache_dir), prepared.train, prepared.test,
                                   progress=progress)
    full_data = _full_data_accuracy(config.calibration, data.name) if config.calibration else None
    trainings = Trainings(out / "reports", lent=earlier)
    evaluate = partial(_evaluate, test=held_out, evaluator=evaluator, mean=mean, std=std, flip=flip,
                       reports=out / "reports", data_key=data_key, progress=progress, teacher=labeller,
                       trainings=trainings)
    judge = fit_judge(prepared.train, prepared.test, JudgeConfig(), Path(space.cache_dir) / "judge",
                      progress=progress) if config.consistency else None
    consistency = {}
    rows = []
    sets: list[EvaluatedSet] = []  # what the cross-architecture table evaluates again on each student
    distilled = config.specs() if config.random_real_part is None else []  # a random-real part distils nothing
    for ipc in config.ipcs:
        for spec in filter(lambda s: s.runs_at(ipc), distilled):
            folder = out / f"{spec.label}_ipc{ipc}"
            request = _distill_request(spec, ipc, config.seed, prepared.record["vae"], decoder_request)
            if _stored_request(folder) != request:
                candidates = [folder] + ([Path(config.latents_from) / folder.name] if config.latents_from else [])
                reused = _same_latents(request, candidates)
                if config.latents_from and reused is None:
                    _say_why_not_reused(Path(config.latents_from) / folder.name, request)
                chain = out / f"{spec.chain}_ipc{ipc}.checkpoint" if spec.chain else None
                distill_to_folder(prepared, spec.method, ipc, config.seed, folder, params=spec.params,
                                  overwrite=True, request=request, decoder=renderer, decoder_record=decoder_record,
                                  latents_from=reused, checkpoint_dir=chain, preset=spec.preset_record(ipc),
                                  progress=progress)
            extras = json.loads((folder / "distill.json").read_text())["extras"]
            for use_weights in config.weight_modes(spec):
                # A factorized set (e.g. bacon with factor 2) trains on its tiles, whatever the evaluator's factor.
                row = evaluate(folder / "images", spec.label, ipc, use_weights=use_weights,
                               factor=spec.params.get("factor", evaluator.factor))
                row["quantization_error"] = _mean_or_none(extras.get("quantization_error"))
                sets.append(EvaluatedSet(folder / "images", spec.label, ipc, use_weights, spec.params.get("factor")))
                if judge is not None:
                    row["class_consistency"] = _consistency(judge, folder / "images", consistency)
                if row not in rows:  # an unweighted set gives the same row under both modes
                    rows.append(row)
        if config.random_real:
            subset_evaluator = replace(evaluator, num_eval=config.random_real_num_eval or evaluator.num_eval)
            subsets = []
            parts = range(config.random_real_subsets) if config.random_real_part is None else [config.random_real_part]
            for i in parts:  # DC's baseline: independently drawn subsets, seed + i
                seed = config.seed + i
                folder = out / f"random-real-s{seed}_ipc{ipc}"
                # Keyed on what draws the subset: the train split's content, the IPC and the seed.
                key = content_key("random-real", train=prepared.train_sha256, ipc=ipc, seed=seed)
                if _stored_key(folder) != key:
                    subset = random_real(prepared.train, ipc, seed)
                    subset.meta["key"] = key
                    record = protocol_record(dataset=prepared.record["dataset"], method=subset.meta["method"],
                                             ipc=ipc, evaluator={}, num_eval=0, seeds=[seed])
                    export_image_folder(subset, folder, record=record, overwrite=True)
                row = evaluate(folder, f"random-real (pixels) s{seed}", ipc, use_weights=False,
                               evaluator=subset_evaluator) | {"quantization_error": None,
                                                              "subset_of": "random-real (pixels)"}
                sets.append(EvaluatedSet(folder, f"random-real (pixels) s{seed}", ipc, False,
                                         subset_of="random-real (pixels)"))
                if judge is not None:
                    row["class_consistency"] = _consistency(judge, folder, consistency)
                subsets.append(row)
            rows += subsets + [_over_subsets(subsets, "random-real (pixels)", ipc)]
    if judge is not None:
        atomic_write_json(out / "consistency.json", {"judge": judge.report, "sets": consistency})
    _add_relative_scores(rows, full_data if evaluator.loss == "ce" and not evaluator.use_soft_labels else None)
    atomic_write_json(out / "results.json", rows)
    table = results_markdown(rows, data.name, evaluator, prepared.record["vae"], time.perf_counter() - t0,
                             eval_split=f"{config.eval_split} ({len(held_out)} images)")
    atomic_write_text(out / "results.md", table)
    if students:
        write_cross_arch(sets, students, evaluate, evaluator=evaluator, out=out, dataset=data.name,
                         eval_split=f"{config.eval_split} ({len(held_out)} images)")
    return rows


def _distill_request(spec: MethodSpec, ipc: int, seed: int, vae: dict, decoder: dict | None = None) -> dict:
    """Everything a distilled folder depends on, in JSON form (compared on resume)."""
    params = distiller_params(spec.method) | spec.params
    vae = {k: v for k, v in vae.items() if k != "fit_report"}  # the fit report says whether it was cached
    request = {"method": spec.method, "params": params, "ipc": ipc, "seed": seed, "vae": vae}
    if decoder is not None:
        request["decoder"] = decoder
    return _as_json(request)


def _as_json(value):
    """`value` as it reads back from JSON (tuples become lists, ...), so that it compares with stored values."""
    return json.loads(json.dumps(value))


def _with_defaults(stored: dict, defaults: dict) -> dict:
    """Stored settings, with each setting added to the code since then read as its default (a new
    setting's default keeps the behaviour from before it existed)."""
    return _as_json(defaults) | stored


def _same_latents(request: dict, folders: list[Path]) -> Path | None:
    """The first folder whose synthetic latents `request` would reproduce (all but the decoder match)."""
    latents_only = {k: v for k, v in request.items() if k != "decoder"}
    for folder in folders:
        stored = _stored_request(folder)
        if (folder / "latents.safetensors").exists() and stored is not None and \
                {k: v for k, v in stored.items() if k != "decoder"} == latents_only:
            return folder
    return None


def _say_why_not_reused(folder: Path, request: dict) -> None:
    """Warn that run.latents_from's `folder` is not reused, and why: a user who asked for it must not see a
    distillation start in silence."""
    stored = _stored_request(folder)
    if stored is None:
        log.warning("latents_from: %s holds no distilled set; distilling it here", folder)
        return
    differs = [k for k in _differences(stored, request) if k != "decoder"]
    if "params" in differs:
        differs[differs.index("params")] = f"params {_differences(stored['params'], request['params'])}"
    log.warning("latents_from: %s was made with another %s than this run's; distilling again here", folder,
                ", ".join(differs))


def _differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _stored_request(folder: Path) -> dict | None:
    """The request a folder was made for (its distiller's parameters added since, at their defaults)."""
    path = folder / "distill.json"
    request = json.loads(path.read_text()).get("request") if path.exists() else None
    if request is not None:
        request["params"] = _with_defaults(request["params"], distiller_params(request["method"]))
        if request.get("decoder") is not None:
            request["decoder"] = _with_defaults(request["decoder"], dataclasses.asdict(DecoderConfig()))
    return request


def _stored_key(folder: Path) -> str | None:
    """The content key an exported folder was written under (in its manifest's meta), if any."""
    try:
        return (read_manifest(folder).get("meta") or {}).get("key")
    except (LatentDDError, OSError, ValueError):  # missing or unreadable: made again
        return None


def images_key(manifest: dict) -> str:
    """Content key of an image folder's set: each image's sha256, label and weight in set order, the class
    names and soft labels -- not the manifest's bytes, whose record holds stage timings."""
    images = [[entry["sha256"], entry["label"], entry.get("weight")] for entry in manifest["images"]]
    return content_key("image-set", images=images, class_names=manifest["class_names"],
                       image_shape=manifest["image_shape"], soft_labels=manifest.get("soft_labels"))


_REPORT_SHA256 = "content_sha256"  # a report's own content hash (see the module docstring)


def _write_report(path: Path, report: dict) -> dict:
    """Write `report` (a whole one, or the trainings of one kept while it runs) with its content hash -> as written."""
    report = with_json_sha256(report, _REPORT_SHA256)
    atomic_write_json(path, report)
    return report


def _read_report(path: Path, *, warn: bool = True) -> dict:
    """The report at `path` when latentdd's run wrote it and it matches its content hash; else {} -- with a warning
    (unless not `warn`) when the file exists: it lends nothing, and an evaluation's own report is made again."""
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problem = f"cannot be read ({err})"
    else:
        problem = _report_problem(report)
        if problem is None:
            return report
    if warn:
        log.warning("report %s %s; not used: its trainings run again", path, problem)
    return {}


def _report_problem(report) -> str | None:
    """What makes a report read back unusable, as the end of a sentence naming its file; None if nothing."""
    lists = [report.get(name) for name in ("seeds", "accuracies", "train_seconds")] if isinstance(report, dict) else []
    if not lists or not isinstance(report.get("inputs"), dict) or not all(isinstance(v, list) for v in lists) or \
            len({len(v) for v in lists}) != 1:
        return "is not a report of latentdd's run (it lacks its inputs, or a seed, accuracy and time per training)"
    return json_sha256_problem(report, _REPORT_SHA256)


def _run_folder(report: Path) -> Path:
    """The run folder a report belongs to: the folder that holds the report's `reports/`."""
    return next((p.parent for p in Path(report).parents if p.name == "reports"), Path(report).parent)


class Trainings:
    """The finished trainings in report folders, by what one depends on: the set's images, the data and the
    evaluator's settings but for num_eval and seed (training i of an evaluation runs with seed + i, alone).

    own: this run's reports/ (a report there that cannot be used is warned about when its evaluation reads it);
    lent: run.reports_from's reports/ folders, each report that cannot be used warned about, and a folder from
    which nothing can be used too."""

    def __init__(self, own: Path, lent: list[Path] = ()) -> None:
        self.found: dict[str, dict[int, dict]] = {}
        for folder in [own, *lent]:
            # Whole reports first, then the trainings kept one by one while an evaluation ran (_evaluate).
            paths = sorted(folder.glob("*.json")) + sorted(folder.glob("partial/*.json"))
            usable = sum(self.add(path, _read_report(path, warn=folder != own)) for path in paths)
            if folder != own and not usable:
                log.warning("run.reports_from: %s lends nothing: %s", folder.parent,
                            f"none of the {len(paths)} JSON files in its reports/ holds a training that can be reused"
                            if paths else "its reports/ holds no report")

    @staticmethod
    def key(inputs: dict) -> str:
        evaluator = {k: v for k, v in inputs["evaluator"].items() if k not in ("num_eval", "seed")}
        return content_key("evaluate-training", **(inputs | {"evaluator": evaluator}))

    def add(self, path: Path, report: dict) -> bool:
        """Index a report's trainings (one of `evaluate`'s, that ran as its settings asked) -> whether it has any."""
        full = report.get("record", {})
        record = full.get("evaluator", {})
        if "inputs" not in report or not report.get("seeds") or record.get("compile_fallback"):
            return False
        found = self.found.setdefault(self.key(report["inputs"]), {})
        reused = {r["seed"]: r for r in full.get("reused_trainings", [])}
        for seed, accuracy, seconds in zip(report["seeds"], report["accuracies"], report["train_seconds"]):
            # A reused training keeps the report that trained it.
            source = reused.get(seed, {"report": str(path), "compiled": record.get("compiled")})
            found.setdefault(seed, {"accuracy": accuracy, "seconds": seconds} | source)
        return True

    def get(self, inputs: dict, seeds: list[int]) -> dict[int, dict]:
        found = self.found.get(self.key(inputs), {})
        return {seed: found[seed] for seed in seeds if seed in found}


def _lent_from(report: dict, path: Path) -> dict[str, int]:
    """The other run folders whose trainings the report at `path` holds -> how many of them each lent."""
    own = _run_folder(path).resolve()
    sources = Counter(str(_run_folder(Path(r["report"]))) for r in report["record"].get("reused_trainings", []))
    return {folder: n for folder, n in sources.items() if Path(folder).resolve() != own}


def _evaluate(images: Path, label: str, ipc: int, *, use_weights: bool, test, evaluator: EvalConfig, mean, std, flip,
              reports: Path, progress: bool, trainings: Trainings, factor: int | None = None, data_key: str = "",
              teacher=None) -> dict:
    """Evaluate a folder (or reuse its report when the set's images, the evaluator and the data are unchanged;
    `trainings`: finished trainings of the same set, data and settings, reused seed by seed)."""
    synthetic = load_image_folder(images, class_names=list(test.class_names))
    # Equal weights train exactly like no weights; only a non-uniform set is "weighted".
    weights = synthetic.weights
    weighted = use_weights and weights is not None and not bool((weights == weights[0]).all())
    folder = images.parent if images.name == "images" else images
    split = getattr(test, "split", "test")
    on_val = split == "val"  # val reports sit beside the test ones, never in their place
    path = reports / f"{folder.name}{'_weighted' if weighted else ''}{'_val' if on_val else ''}.json"
    cfg = replace(evaluator, use_weights=weighted, factor=evaluator.factor if factor is None else factor)
    manifest = read_manifest(images)
    inputs = {"evaluator": cfg.identity(), "images": images_key(manifest), "data": data_key}
    if teacher is not None:
        inputs["teacher"] = teacher.record.get("key") or teacher.record["name"]
    if on_val:
        inputs["evaluated_on"] = f"val ({len(test)} images)"
    inputs = _as_json(inputs)
    key = content_key("evaluate", **inputs)
    report = _read_report(path)
    if report.get("key") != key:
        record = manifest.get("record") or {}
        if on_val:
            record.setdefault("dataset", {})["evaluated_on"] = inputs["evaluated_on"]
        seeds = [cfg.seed + i for i in range(cfg.num_eval)]
        done = trainings.get(inputs, seeds)
        for seed, training in done.items():
            log.info("%s (IPC %d): the training of seed %d (%.2f %%) is taken from %s", label, ipc, seed,
                     training["accuracy"], training["report"])
        # Each training this evaluation runs is kept on disk as it finishes, in the shape of a report (the
        # Trainings index reads it), so an interrupted evaluation resumes at its next training.
        kept_path = reports / "partial" / path.name
        kept = _read_report(kept_path)
        if kept.get("inputs") != inputs or kept.get("record", {}).get("evaluator", {}).get("compile_fallback"):  # not lent
            kept = {"inputs": inputs, "seeds": [], "accuracies": [], "train_seconds": [], "record": {}}

        def keep(seed: int, accuracy: float, seconds: float, compile_record: dict) -> None:
            for field, value in (("seeds", seed), ("accuracies", accuracy), ("train_seconds", seconds)):
                kept[field].append(value)
            kept["record"] = {"evaluator": compile_record}
            _write_report(kept_path, kept)

        result = evaluate_synthetic(synthetic, test, cfg, mean=mean, std=std, flip=flip, record=record,
                                    progress=progress, teacher=teacher, done=done, on_training=keep)
        # Trainings kept by an interrupted invocation of this evaluation are its own, not lent: the report
        # reads as an uninterrupted one's, and holds them, so the kept file goes.
        own = result.record.get("reused_trainings", [])
        own[:] = [r for r in own if r["report"] != str(kept_path)]
        if not own:
            result.record.pop("reused_trainings", None)
        report = _write_report(path, result.to_dict() | {"inputs": inputs, "key": key})
        kept_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder too, unless another training is kept there
            kept_path.parent.rmdir()
        trainings.add(path, report)
    return {"method": label + (" + weights" if weighted else ""), "ipc": ipc, "mean": report["mean"],
            "std": report["std"], "n": len(report["accuracies"]), "report": str(path),
            "lent_from": _lent_from(report, path)}


def _consistency(judge: Judge, images: Path, results: dict) -> float:
    """The share (%) of the folder's images the judge calls their class; details go into `results`."""
    synthetic = load_image_folder(images, class_names=list(read_manifest(images)["class_names"]))
    name = images.parent.name if images.name == "images" else images.name
    results[name] = class_consistency(judge, synthetic.images, synthetic.labels)
    return results[name]["share"]


def _over_subsets(rows: list[dict], label: str, ipc: int) -> dict:
    """One row for several random subsets, as DC reports random real: mean ± std over the subsets'
    mean accuracies; `training_std` is the mean of the per-subset spreads over trainings."""
    means = [r["mean"] for r in rows]
    return {"method": f"{label}, {subsets_text(len(rows))}", "ipc": ipc, "mean": float(np.mean(means)),
            "std": float(np.std(means)), "n": len(rows), "quantization_error": None,
            "training_std": float(np.mean([r["std"] for r in rows])), "subsets": [r["report"] for r in rows],
            "report": None, "lent_from": dict(sum((Counter(r["lent_from"]) for r in rows), Counter()))}


def accuracy_text(row: dict) -> str:
    """"77.20 ± 0.31 (n=3)" over trainings; for random real over subsets, the subsets' spread and the
    mean training spread beside it."""
    if row.get("training_std") is None:
        return f"{row['mean']:.2f} ± {row['std']:.2f} (n={row['n']})"
    return (f"{row['mean']:.2f} ± {row['std']:.2f} over {subsets_text(row['n'])} (training spread "
            f"± {row['training_std']:.2f})")


def lent_sources(rows: list[dict]) -> list[str]:
    """The run folders (run.reports_from) that lent trainings to `rows`, in order of first use: source i is
    footnote [i + 1] of the table."""
    return list(dict.fromkeys(folder for r in rows for folder in r.get("lent_from") or {}))


def lent_mark(row: dict, sources: list[str]) -> str:
    """"; 2 trainings lent [1]" after the accuracy of a row with trainings lent by `sources`, else ""."""
    lent = row.get("lent_from") or {}
    if not lent:
        return ""
    total = sum(lent.values())
    return f"; {total} training{'s' if total != 1 else ''} lent {''.join(f'[{sources.index(f) + 1}]' for f in lent)}"


def lent_footnotes(sources: list[str]) -> list[str]:
    """The lines under a table that list the folders that lent trainings (none when nothing was lent)."""
    if not sources:
        return []
    return ["", "Lent trainings (run.reports_from) were not trained by this run: they were taken, seed by seed, from "
                "the verified reports of the runs listed here, as each report's record.reused_trainings says:", "",
            *(f"- [{i}] {folder}" for i, folder in enumerate(sources, 1))]


def _full_data_accuracy(calibration: str, dataset: str) -> float:
    """The full-data accuracy (%) a `latentdd calibrate` folder measured (reports/full_data_<E>ep.json)."""
    reports = sorted(Path(calibration).expanduser().glob("reports/full_data_*ep.json"))
    if len(reports) != 1:
        raise DataError(f"run.calibration {calibration}: expected one reports/full_data_<E>ep.json (from `latentdd "
                        f"calibrate` with full_data_epochs > 0), found {len(reports)}")
    report = json.loads(reports[0].read_text())
    name = report.get("record", {}).get("dataset", {}).get("name")
    if name != dataset:
        raise DataError(f"run.calibration {calibration} calibrated {name!r}, not {dataset!r}")
    return float(report["mean"])


def _add_relative_scores(rows: list[dict], full_data: float | None) -> None:
    """IOR of every set vs the random-real subsets of its IPC (same protocol); HLR and LRS when `full_data`."""
    from latentdd.evaluate.scores import hlr, ior, lrs

    random = {r["ipc"]: [s["mean"] for s in rows if s.get("subset_of") and s["ipc"] == r["ipc"]]
              for r in rows if r.get("subset_of")}
    for r in rows:
        r["ior"] = r["hlr"] = r["lrs"] = None
        if r.get("subset_of") or r.get("subsets") or r["ipc"] not in random:
            continue
        r["ior"] = ior([r["mean"]], [[m] for m in random[r["ipc"]]])
        if full_data is not None:
            r["hlr"] = hlr([full_data], [r["mean"]])
            r["lrs"] = lrs(r["ior"], r["hlr"])


def _mean_or_none(values) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _departures_text(evaluator: EvalConfig) -> list[str]:
    """A line saying where the evaluator departs from its protocol (e.g. a light evaluation), or none."""
    changed = evaluator.departures()
    if not changed:
        return []
    what = ", ".join(f"{key} {ours} (the protocol's: {theirs})" for key, (ours, theirs) in changed.items())
    return [f"**Not the full {evaluator.protocol} protocol:** {what}.", ""]


def results_markdown(rows: list[dict], dataset: str, evaluator: EvalConfig, vae: dict, seconds: float, *,
                     eval_split: str = "test") -> str:
    lines = [f"# latentdd run: {dataset}", "",
             f"VAE `{vae.get('name')}` (latents {vae.get('latent_shape')}); evaluator {evaluator.model}, "
             f"protocol {evaluator.protocol}, {evaluator.epochs or 'by-IPC'} epochs, "
             f"{'DSA' if evaluator.dsa else 'no DSA'}, {evaluator.num_eval} run(s) per set, accuracy on the {eval_split} split; "
             "full protocol records under reports/. "
             "Latent W2: the class's latents to the set's nearest points, mean over classes. Class consistency: "
             "the share of the set's images a ConvNet trained on the real train split calls their class "
             "(consistency.json). IOR: the accuracy minus random real's (the mean over its subsets, same IPC and "
             "protocol), points; HLR: full data's (run.calibration) minus the set's, points; LRS: DD-Ranking's "
             "label-robust score, % (latentdd.evaluate.scores).", "", *_departures_text(evaluator),
             f"| method | IPC | {eval_split.split()[0]} accuracy % (mean ± std, n) | latent W2 | class consistency % "
             "| IOR | HLR | LRS |",
             "|---|---|---|---|---|---|---|---|"]
    sources = lent_sources(rows)
    for r in rows:
        w2 = "" if r["quantization_error"] is None else f"{r['quantization_error']:.3f}"
        consistent = "" if r.get("class_consistency") is None else f"{r['class_consistency']:.1f}"
        scores = [("" if r.get(k) is None else f"{r[k]:+.2f}") for k in ("ior", "hlr")]
        scores.append("" if r.get("lrs") is None else f"{r['lrs']:.2f}")
        lines.append(f"| {r['method']} | {r['ipc']} | {accuracy_text(r)}{lent_mark(r, sources)} | {w2} | {consistent} "
                     f"| {' | '.join(scores)} |")
    lines += [*lent_footnotes(sources), "", f"wall time of this invocation: {seconds:.0f} s"]
    return "\n".join(lines) + "\n"
