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

    @classmethod
    def of_run(cls, data: DataConfig, space: LatentSpaceConfig, prepared: LatentSpace, settings: EvalConfig, *,
               eval_split: str, reports: Path, lent: list[Path], teacher: TeacherConfig | None = None,
               progress: bool = True) -> Evaluator:
        """The evaluator of a run on `eval_split` ("test", or "val": the split dataset.validation holds out of
        train); `teacher` (a TeacherConfig): the soft protocol's (default: fitted on the train split, cached)."""
        mean, std = channel_stats(prepared.train)
        flip = dataset_info(data.name).flip_augment
        held_out = prepared.test if eval_split == "test" else data.load("val")
        held_images, held_labels, _ = split_sha256(held_out.iter_batches(space.batch_size))
        data_key = content_key("evaluation-data", train=prepared.train_sha256, flip=flip,
                               held_out={"images_sha256": held_images, "labels_sha256": held_labels})
        labeller = None
        if settings.uses_teacher:  # soft: one teacher labels the batches of every set; static: the sets' images
            from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher

            labeller = resolve_teacher(teacher or TeacherConfig(cache_dir=space.cache_dir), prepared.train,
                                       prepared.test, progress=progress)
        return cls(held_out, settings, mean, std, flip, data_key, reports, Trainings(reports, lent), labeller, progress)

    def __call__(self, s: EvaluatedSet, settings: EvalConfig | None = None, reports: Path | None = None) -> Row:
        """Evaluate `s` under `settings` (default: the run's), its report in `reports` (default: the run's
        reports/), or reuse that report; finished trainings of the same set, data and settings are reused seed by
        seed."""
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
        if on_val:
            inputs["evaluated_on"] = f"val ({len(self.held_out)} images)"
        stored = StoredReport(path, "evaluate", plain(inputs))
        report = stored.reusable()
        if report is None:
            record = manifest.get("record") or {}
            if on_val:
                record.setdefault("dataset", {})["evaluated_on"] = inputs["evaluated_on"]
            report = self._evaluate(synthetic, s, cfg, record, stored)
        return Row(s.method, s.label, s.ipc, report["mean"], report["std"], len(report["accuracies"]), str(path),
                   lent_from(report, path), weighted=weighted, subset_of=s.subset_of, tiles=cfg.factor)

    def _evaluate(self, synthetic, s: EvaluatedSet, cfg: EvalConfig, record: dict, stored: StoredReport) -> dict:
        """Train and test (taking the finished trainings there are) -> the report, as written."""
        done = self.trainings.get(stored.inputs, [cfg.seed + i for i in range(cfg.num_eval)])
        for seed, training in done.items():
            log.info("%s (IPC %d): the training of seed %d (%.2f %%) is taken from %s", s.label, s.ipc, seed,
                     training["accuracy"], training["report"])
        kept = KeptTrainings(stored)
        result = evaluate_synthetic(synthetic, self.held_out, cfg, mean=self.mean, std=self.std, flip=self.flip,
                                    record=record, progress=self.progress, teacher=self.teacher, done=done,
                                    on_training=kept.add)
        report = kept.finish(result.to_dict())
        self.trainings.add(stored.path, report)
        return report


def images_key(manifest: dict) -> str:
    """Content key of an image folder's set: each image's sha256, label and weight in set order, the class
    names and soft labels -- not the manifest's bytes, whose record holds stage timings."""
    images = [[entry["sha256"], entry["label"], entry.get("weight")] for entry in manifest["images"]]
    return content_key("image-set", images=images, class_names=manifest["class_names"],
                       image_shape=manifest["image_shape"], soft_labels=manifest.get("soft_labels"))
