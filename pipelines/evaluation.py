"""A run's evaluations: each set of the run trained under the run's protocol (or a student's) and tested on its
held-out split, or its report reused (`latentdd.pipelines.reports`) when the set's images, the data and the
evaluator's settings are those it was made for."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from latentdd.cachekey import content_key, split_sha256
from latentdd.config import DataConfig, plain
from latentdd.data import LabelledImages, dataset_info
from latentdd.evaluate.trainer import EvalConfig, channel_stats, evaluate_synthetic
from latentdd.export import load_image_folder, read_manifest
from latentdd.parallel import DataParallel, process_state
from latentdd.pipelines.distill import LatentSpace, LatentSpaceConfig
from latentdd.pipelines.reports import KeptTrainings, StoredReport, Trainings, lent_from
from latentdd.pipelines.tables import Row

if TYPE_CHECKING:
    from latentdd.evaluate.teacher import Teacher, TeacherConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatedSet:
    """A set of the run, as it is evaluated (under the run's evaluator, and again under each student).

    images: its image folder; method and label: its row's (`Row`); factor: the set's own factorization (a
    factorized distiller's, e.g. bacon with factor 2, trains on its tiles whatever the evaluator's factor), None
    for the evaluator's; subset_of: a random-real subset's baseline name (None for a distilled set).
    """

    images: Path
    method: str
    label: str
    ipc: int
    use_weights: bool
    factor: int | None = None
    subset_of: str | None = None


@dataclass
class Evaluator:
    """What every evaluation of a run shares: the held-out split, the evaluator's settings, the train split's
    channel statistics, the content key of the data, the soft protocol's teacher, the reports folder and the index
    of finished trainings. Call it with a set -> the set's row."""

    held_out: LabelledImages
    settings: EvalConfig
    mean: torch.Tensor
    std: torch.Tensor
    flip: bool
    data_key: str  # what every report also depends on: the held-out split, and the train split (its channel stats)
    reports: Path
    trainings: Trainings
    teacher: Teacher | None = None  # the soft protocol's (latentdd.evaluate.teacher)
    progress: bool = True
    device: str = "cpu"  # where the trainings run
    relabel_dir: Path | None = None  # evaluator.relabel: where the teacher's stored labels are cached
    group: DataParallel | None = None  # run.parallel "data": the processes every training is split over

    @classmethod
    def of_run(cls, data: DataConfig, space: LatentSpaceConfig, prepared: LatentSpace, settings: EvalConfig, *,
               eval_split: str, reports: Path, lent: list[Path], teacher: TeacherConfig | None = None,
               progress: bool = True, device: str = "cpu", group: DataParallel | None = None) -> Evaluator:
        """The evaluator of a run on `eval_split` ("test", or "val": the split dataset.validation holds out of
        train); `teacher` (a TeacherConfig): the soft protocol's (default: fitted on the train split, cached);
        `device`, `group`: where the trainings run, and the processes each is split over (`train_model`)."""
        mean, std = channel_stats(prepared.train)
        flip = dataset_info(data.name).flip_augment
        held_out = prepared.test if eval_split == "test" else data.load("val")
        held_images, held_labels, _ = split_sha256(held_out.iter_batches(space.batch_size))
        data_key = content_key("evaluation-data", train=prepared.train_sha256, flip=flip,
                               held_out={"images_sha256": held_images, "labels_sha256": held_labels})
        labeller = None
        if settings.uses_teacher:  # soft: one teacher labels the batches of every set; static: the sets' images
            from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher

            with process_state().main_process_first():  # the first process fits it; the others load its cache
                labeller = resolve_teacher(teacher or TeacherConfig(cache_dir=space.cache_dir), prepared.train,
                                           prepared.test, progress=progress).to(device)
        return cls(held_out, settings, mean, std, flip, data_key, reports, Trainings(reports, lent), labeller, progress,
                   device, Path(space.cache_dir).expanduser() if space.cache_dir else None, group)

    def __call__(self, s: EvaluatedSet, settings: EvalConfig | None = None, reports: Path | None = None) -> Row:
        """Evaluate `s` under `settings` (default: the run's), its report in `reports` (default: the run's
        reports/), or reuse that report; finished trainings of the same set, data and settings are reused seed by
        seed."""
        job = self._job(s, settings, reports)
        report = job.stored.reusable()
        if report is None:
            report = self._evaluate(job)
        return Row(s.method, s.label, s.ipc, report["mean"], report["std"], len(report["accuracies"]),
                   str(job.stored.path), lent_from(report, job.stored.path), weighted=job.weighted,
                   subset_of=s.subset_of, tiles=job.settings.factor)

    def pending(self, s: EvaluatedSet, settings: EvalConfig | None = None) -> list[tuple[str, int]]:
        """The trainings of `s`'s evaluation still to run, as (what they depend on: `Trainings.key`, seed): none
        when its report can be reused, else those no report (or kept training) holds."""
        job = self._job(s, settings)
        if job.stored.reusable() is not None:
            return []
        done = self.trainings.get(job.stored.inputs, job.seeds)
        return [(Trainings.key(job.stored.inputs), seed) for seed in job.seeds if seed not in done]

    def train_one(self, s: EvaluatedSet, seed: int, settings: EvalConfig | None = None) -> None:
        """Run the training of `seed` of `s`'s evaluation alone, kept in reports/partial/ (`KeptTrainings.of_seed`)
        where the evaluation (in this or another process) takes it."""
        job = self._job(s, settings)
        kept = KeptTrainings.of_seed(job.stored, seed)
        evaluate_synthetic(job.synthetic, self.held_out, replace(job.settings, seed=seed, num_eval=1),
                           mean=self.mean, std=self.std, flip=self.flip, record=job.record, progress=self.progress,
                           teacher=self.teacher, on_training=kept.add, device=self.device,
                           relabel_dir=self.relabel_dir)

    def refresh(self) -> None:
        """Index the trainings on disk again (those other processes kept since)."""
        self.trainings = Trainings(self.reports, self.trainings.lent)

    def _job(self, s: EvaluatedSet, settings: EvalConfig | None = None, reports: Path | None = None) -> _Job:
        settings = self.settings if settings is None else settings
        reports = self.reports if reports is None else reports
        synthetic = load_image_folder(s.images, class_names=list(self.held_out.class_names))
        # Equal weights train exactly like no weights; only a non-uniform set is "weighted".
        weights = synthetic.weights
        weighted = s.use_weights and weights is not None and not bool((weights == weights[0]).all())
        folder = s.images.parent if s.images.name == "images" else s.images
        on_val = getattr(self.held_out, "split", "test") == "val"  # val reports sit beside the test ones
        path = reports / f"{folder.name}{'_weighted' if weighted else ''}{'_val' if on_val else ''}.json"
        cfg = replace(settings, use_weights=weighted, factor=settings.factor if s.factor is None else s.factor)
        manifest = read_manifest(s.images)
        inputs = {"evaluator": cfg.identity(), "images": images_key(manifest), "data": self.data_key}
        if self.teacher is not None:
            inputs["teacher"] = self.teacher.record.get("key") or self.teacher.record["name"]
        record = manifest.get("record") or {}
        if on_val:
            inputs["evaluated_on"] = f"val ({len(self.held_out)} images)"
            record.setdefault("dataset", {})["evaluated_on"] = inputs["evaluated_on"]
        return _Job(s, synthetic, cfg, weighted, record, StoredReport(path, "evaluate", plain(inputs)))

    def _evaluate(self, job: _Job) -> dict:
        """Train and test (taking the finished trainings there are) -> the report, as written (by the first process
        of a group that shares each training; the others get it as it would be written)."""
        s, stored = job.set, job.stored
        done = self.trainings.get(stored.inputs, job.seeds)
        for seed, training in done.items():
            log.info("%s (IPC %d): the training of seed %d (%.2f %%) is taken from %s", s.label, s.ipc, seed,
                     training["accuracy"], training["report"])
        kept = KeptTrainings(stored)
        main = self.group is None or self.group.is_main
        result = evaluate_synthetic(job.synthetic, self.held_out, job.settings, mean=self.mean, std=self.std,
                                    flip=self.flip, record=job.record, progress=self.progress, teacher=self.teacher,
                                    done=done, on_training=kept.add, device=self.device, group=self.group,
                                    relabel_dir=self.relabel_dir)
        report = kept.finish(result.to_dict(), write=main)
        self.trainings.add(stored.path, report)
        return report


@dataclass(frozen=True)
class _Job:
    """One evaluation as it will run: the set, its images, its settings (weights and factor resolved), its record
    so far and where its report is kept."""

    set: EvaluatedSet
    synthetic: object
    settings: EvalConfig
    weighted: bool
    record: dict
    stored: StoredReport

    @property
    def seeds(self) -> list[int]:
        return [self.settings.seed + i for i in range(self.settings.num_eval)]


def images_key(manifest: dict) -> str:
    """Content key of an image folder's set: each image's sha256, label and weight in set order, the class
    names and soft labels -- not the manifest's bytes, whose record holds stage timings."""
    images = [[entry["sha256"], entry["label"], entry.get("weight")] for entry in manifest["images"]]
    return content_key("image-set", images=images, class_names=manifest["class_names"],
                       image_shape=manifest["image_shape"], soft_labels=manifest.get("soft_labels"))
