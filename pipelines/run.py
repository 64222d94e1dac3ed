"""The main job: fit or load the VAE, encode (cached), distil, render, evaluate, tabulate.

Every stage is cached and resumable: the fitted VAE and the latent cache by content, each method's
folder by its request, the random-real subset and each evaluation report by a `cachekey.content_key`
of their inputs (the images' content, the data, the resolved settings), so a second run only redoes
what changed; within an evaluation, each finished training, so an interrupted one resumes at its
next. Reports, and the trainings they lend -- to this run's other evaluations and, through
run.reports_from, to other runs -- are kept by `latentdd.pipelines.reports`, and read back only when
they match their content hash. The random-real baseline (real pixels, no VAE) is evaluated under the
same protocol in the same run, as every table must have it.

    run_config   the run: section (RunConfig, MethodSpec)
    evaluation   each set evaluated, or its report reused (Evaluator)
    reports      the report store, shared with `latentdd calibrate`
    tables       the rows (Row), the relative scores, results.md
    cross_arch   the students' table (run.students)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from latentdd.cachekey import content_key
from latentdd.config import DataConfig, plain, save_resolved
from latentdd.distill import distiller_params, make_distiller
from latentdd.errors import LatentDDError
from latentdd.evaluate.consistency import Judge, JudgeConfig, class_consistency, fit_judge
from latentdd.evaluate.trainer import EvalConfig
from latentdd.export import export_image_folder, load_image_folder, read_manifest
from latentdd.io import atomic_write_json, atomic_write_text, claim_folder
from latentdd.parallel import DataParallel, process_state
from latentdd.record import protocol_record
from latentdd.pipelines.baseline import random_real
from latentdd.pipelines.calibrate import full_data_accuracy
from latentdd.pipelines.cross_arch import resolve_students, write_cross_arch
from latentdd.pipelines.distill import (DecoderConfig, LatentSpace, LatentSpaceConfig, distill_to_folder, make_decoder,
                                        prepare_latent_space)
from latentdd.pipelines.evaluation import EvaluatedSet, Evaluator
from latentdd.pipelines.reports import lending_folders
from latentdd.pipelines.run_config import MethodSpec, RunConfig
from latentdd.pipelines.tables import Row, over_subsets, results_markdown, with_relative_scores

log = logging.getLogger(__name__)

RANDOM_REAL = "random-real (pixels)"  # the baseline's label in the tables


def run(data: DataConfig, space: LatentSpaceConfig, config: RunConfig, evaluator: EvalConfig, out: Path,
        *, decoder: DecoderConfig | None = None, progress: bool = True, teacher=None) -> list[Row]:
    """The main job (see the module docstring) -> the table's rows; `teacher` (a TeacherConfig): the teacher of
    the soft and static protocols and of teacher-aware methods (default: fitted on the train split, cached)."""
    students = resolve_students(config.students, evaluator)  # each student's settings checked before any work
    lent = lending_folders(config.reports_from)
    state = process_state()  # under accelerate launch: these processes share the run (run.parallel)
    group = DataParallel.current()
    progress = progress and state.is_main_process
    decoder = decoder or DecoderConfig()
    t0 = time.perf_counter()
    with state.main_process_first():  # the first process writes and fits what is cached; the others read it
        # Missing, empty or latentdd's, and writable -- checked before any fitting (latentdd.io).
        out = claim_folder(Path(out), "run")
        if state.is_main_process:
            save_resolved(out / "config.yaml",
                          {"dataset": data, "latent": space, "decoder": decoder, "run": config, "evaluator": evaluator})
        prepared = prepare_latent_space(data, space, latents_dir=config.latents_dir, progress=progress)
        sets = _Sets(prepared, config, decoder, space.cache_dir, out, progress=progress, teacher=teacher)
        consistency = _Consistency(fit_judge(prepared.train, prepared.test, JudgeConfig(),
                                             Path(space.cache_dir) / "judge", progress=progress)
                                   if config.consistency else None)
    split = group.size > 1 and config.parallel == "data"
    evaluate = Evaluator.of_run(data, space, prepared, evaluator, eval_split=config.eval_split,
                                reports=out / "reports", lent=lent, teacher=teacher, progress=progress,
                                device=str(state.device), group=group if split else None)
    full_data = full_data_accuracy(config.calibration, data.name) if config.calibration else None
    subset_settings = replace(evaluator, num_eval=config.random_real_num_eval or evaluator.num_eval)
    if group.size > 1:
        with state.main_process_first():  # the first process distils every set and draws the subsets
            evaluations = [(s, None) for ipc in config.ipcs for s in sets.distilled(ipc)]
            evaluations += [(s, subset_settings) for ipc in config.ipcs if config.random_real
                            for s in sets.random_real(ipc)]
        if not split:
            _share_trainings(evaluate, evaluations, group)
            state.wait_for_everyone()
            if not state.is_main_process:
                return []  # the first process gathers the table from the trainings kept on disk
            evaluate.refresh()
    rows: list[Row] = []
    evaluated: list[EvaluatedSet] = []  # what the cross-architecture table evaluates again on each student
    for ipc in config.ipcs:
        for s in sets.distilled(ipc):
            row = replace(evaluate(s), quantization_error=_quantization_error(s.images.parent),
                          class_consistency=consistency(s.images))
            evaluated.append(s)
            if row not in rows:  # an unweighted set gives the same row under both modes
                rows.append(row)
        if config.random_real:
            baselines: dict[str, list[Row]] = {}  # random real, and random real tiles
            for s in sets.random_real(ipc):
                baselines.setdefault(s.subset_of, []).append(
                    replace(evaluate(s, subset_settings), class_consistency=consistency(s.images)))
                evaluated.append(s)
            for subsets in baselines.values():
                rows += subsets + [over_subsets(subsets)]
    # HLR (and LRS) compare hard-label accuracies: full data's is used under a hard-label protocol only.
    rows = with_relative_scores(rows, full_data if evaluator.loss == "ce" and not evaluator.use_soft_labels else None)
    if not state.is_main_process:  # run.parallel data: every process trained every set; the first writes
        return rows
    consistency.write(out / "consistency.json")
    eval_split = f"{config.eval_split} ({len(evaluate.held_out)} images)"
    atomic_write_json(out / "results.json", [row.to_json() for row in rows])
    atomic_write_text(out / "results.md", results_markdown(rows, data.name, evaluator, prepared.record["vae"],
                                                           time.perf_counter() - t0, eval_split=eval_split))
    if students:  # under several processes, in the first alone
        write_cross_arch(evaluated, students, replace(evaluate, group=None), out=out, dataset=data.name,
                         eval_split=eval_split)
    return rows


def _share_trainings(evaluate: Evaluator, evaluations: list[tuple[EvaluatedSet, EvalConfig | None]],
                     group: DataParallel) -> None:
    """run.parallel trainings: the trainings still to run of every evaluation (a set's seeds, each random-real
    subset's), the same training once however many rows share it, dealt to the processes in turn; each runs its
    own, kept on disk as it finishes (`Evaluator.train_one`)."""
    todo = {}
    for s, settings in evaluations:
        for key, seed in evaluate.pending(s, settings):
            todo.setdefault((key, seed), (s, settings))
    mine = list(todo.items())[group.rank :: group.size]
    log.info("process %d of %d: %d of the run's %d trainings still to run", group.rank, group.size, len(mine),
             len(todo))
    for (_, seed), (s, settings) in mine:
        evaluate.train_one(s, seed, settings)


class _Sets:
    """The run's sets in their folders under `out`: each method's, distilled (or kept, when its request is
    unchanged), and the random-real subsets, drawn (or kept, when their key is unchanged)."""

    def __init__(self, prepared: LatentSpace, config: RunConfig, decoder: DecoderConfig, cache_dir: str, out: Path,
                 *, progress: bool, teacher=None) -> None:
        from latentdd.evaluate.teacher import TeacherConfig

        self.prepared, self.config, self.out, self.progress = prepared, config, out, progress
        self.teacher = teacher or TeacherConfig(cache_dir=cache_dir)  # the teacher-aware methods' (rded, ...)
        self.specs = config.specs() if config.random_real_part is None else []  # a random-real part distils nothing
        self.renderer, self.decoder_record = make_decoder(decoder, prepared, cache_dir, progress=progress)
        # Folders rendered by the plain VAE before decoders were configurable keep their request (and reports).
        # The prior: the fitted prior's name (its content hash), or the pretrained model (hub id or folder).
        self.decoder_request = None if decoder.name == "vae" else dataclasses.asdict(decoder) | {
            "prior": self.decoder_record.get("prior") or self.decoder_record.get("model")}

    def distilled(self, ipc: int) -> Iterator[EvaluatedSet]:
        """Each method's set at `ipc` (distilled as it comes), once per weight mode (run.use_weights)."""
        for spec in filter(lambda s: s.runs_at(ipc), self.specs):
            folder = self._distil(spec, ipc)
            for use_weights in self.config.weight_modes(spec):
                yield EvaluatedSet(folder / "images", spec.method, spec.label, ipc, use_weights, _tiles(spec))

    def _distil(self, spec: MethodSpec, ipc: int) -> Path:
        """The folder of `spec`'s set at `ipc`, distilled unless it holds the set its request asks for (or rendered
        again from the latents of a folder that does, e.g. run.latents_from's)."""
        config = self.config
        folder = self.out / f"{spec.label}_ipc{ipc}"
        request = _distill_request(spec, ipc, config.seed, self.prepared.record["vae"], self.decoder_request,
                                   self.teacher)
        if _stored_request(folder) != request:
            candidates = [folder] + ([Path(config.latents_from) / folder.name] if config.latents_from else [])
            reused = _same_latents(request, candidates)
            if config.latents_from and reused is None:
                _say_why_not_reused(Path(config.latents_from) / folder.name, request)
            chain = self.out / f"{spec.chain}_ipc{ipc}.checkpoint" if spec.chain else None
            distill_to_folder(self.prepared, spec.method, ipc, config.seed, folder, params=spec.params,
                              overwrite=True, request=request, decoder=self.renderer,
                              decoder_record=self.decoder_record, latents_from=reused, checkpoint_dir=chain,
                              preset=spec.preset_record(ipc), progress=self.progress, teacher=self.teacher)
        return folder

    def random_real(self, ipc: int) -> Iterator[EvaluatedSet]:
        """The random-real subsets at `ipc` (DC's baseline: independently drawn subsets, seed + i), or the one
        subset of a random-real part; then, with run.random_real_tiles f > 1, the random-real tiles subsets."""
        config = self.config
        parts = range(config.random_real_subsets) if config.random_real_part is None else [config.random_real_part]
        f = config.random_real_tiles
        tiled = any(_tiles(spec) == f for spec in config.specs() if spec.runs_at(ipc))
        if f > 1 and not tiled:
            log.info("no set at IPC %d is trained on %dx%d tiles: no random real tiles there", ipc, f, f)
        for tiles in [1, f] if f > 1 and tiled else [1]:
            baseline = RANDOM_REAL if tiles == 1 else f"{RANDOM_REAL} tiles {tiles}x{tiles}"
            for i in parts:
                seed = config.seed + i
                folder = self.out / (f"random-real-s{seed}_ipc{ipc}" if tiles == 1 else
                                     f"random-real-tiles{tiles}-s{seed}_ipc{ipc}")
                # Keyed on what draws the subset: the train split's content, the IPC, the seed (and the tiling).
                key = content_key("random-real", train=self.prepared.train_sha256, ipc=ipc, seed=seed,
                                  **({"tiles": tiles} if tiles > 1 else {}))
                if _stored_key(folder) != key:
                    subset = random_real(self.prepared.train, ipc, seed, tiles)
                    subset.meta["key"] = key
                    record = protocol_record(dataset=self.prepared.record["dataset"], method=subset.meta["method"],
                                             ipc=ipc, evaluator={}, num_eval=0, seeds=[seed])
                    export_image_folder(subset, folder, record=record, overwrite=True)
                yield EvaluatedSet(folder, "random", f"{baseline} s{seed}", ipc, False,
                                   factor=None if tiles == 1 else tiles, subset_of=baseline)


def _tiles(spec: MethodSpec) -> int | None:
    """f when `spec`'s set is trained on f x f tiles (a distiller's factor, rded's default too, or the evaluator
    factor its params give), else None."""
    factor = getattr(make_distiller(spec.method, **spec.params), "factor", 1)
    return factor if factor > 1 else spec.params.get("factor")


class _Consistency:
    """run.consistency: the share (%) of each set's images that `judge`, a ConvNet trained on the real train split,
    calls their class, with the details per set (consistency.json); None for every set without a judge."""

    def __init__(self, judge: Judge | None) -> None:
        self.judge = judge
        self.sets: dict[str, dict] = {}

    def __call__(self, images: Path) -> float | None:
        if self.judge is None:
            return None
        synthetic = load_image_folder(images, class_names=list(read_manifest(images)["class_names"]))
        name = images.parent.name if images.name == "images" else images.name
        self.sets[name] = class_consistency(self.judge, synthetic.images, synthetic.labels)
        return self.sets[name]["share"]

    def write(self, path: Path) -> None:
        if self.judge is not None:
            atomic_write_json(path, {"judge": self.judge.report, "sets": self.sets})


def _quantization_error(folder: Path) -> float | None:
    """A distilled set's latent W2 (its distill.json's quantization error, the mean over classes), if it has one."""
    values = json.loads((folder / "distill.json").read_text())["extras"].get("quantization_error")
    return float(sum(values) / len(values)) if values else None


def _distill_request(spec: MethodSpec, ipc: int, seed: int, vae: dict, decoder: dict | None = None,
                     teacher=None) -> dict:
    """Everything a distilled folder depends on, in JSON form (compared on resume); a teacher-aware method's
    includes its teacher's settings (`teacher`, a TeacherConfig)."""
    params = distiller_params(spec.method) | spec.params
    vae = {k: v for k, v in vae.items() if k != "fit_report"}  # the fit report says whether it was cached
    request = {"method": spec.method, "params": params, "ipc": ipc, "seed": seed, "vae": vae}
    if teacher is not None and getattr(make_distiller(spec.method, **spec.params), "uses_teacher", False):
        request["teacher"] = {"source": teacher.source, "preset": teacher.preset, **teacher.fit_settings()}
    if decoder is not None:
        request["decoder"] = decoder
    return plain(request)  # as it reads back from JSON (tuples become lists, ...): it compares with stored ones


def _with_defaults(stored: dict, defaults: dict) -> dict:
    """Stored settings, with each setting added to the code since then read as its default (a new
    setting's default keeps the behaviour from before it existed)."""
    return plain(defaults) | stored


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

