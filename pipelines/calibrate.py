"""Calibrate the ruler: random-real subsets under the DC and DSA protocols, and full data.

Reproduces numbers nobody here produced (the published random-real baselines and the
full-data accuracy) so that every later figure is read on a checked scale. Each
(protocol, IPC) report, and each of its runs, is saved as it finishes, under a
`cachekey.content_key` of its resolved evaluator settings, IPC, seed and the train and test
splits' content, in `latentdd run`'s report store (`latentdd.pipelines.reports`: with its content
hash); re-running skips the finished ones whose key still matches and redoes the others.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from latentdd.cachekey import content_key, split_sha256
from latentdd.config import Checked, DataConfig, PositiveInt, build, save_resolved
from latentdd.data import dataset_info
from latentdd.errors import DataError
from latentdd.evaluate.trainer import (PROTOCOLS, EvalConfig, EvalReport, channel_stats, evaluate_synthetic, top1_accuracy,
                                       train_model)
from latentdd.io import atomic_write_json, atomic_write_text, claim_folder
from latentdd.nn.compile import CompileStatus
from latentdd.published import published
from latentdd.record import dataset_record, protocol_record
from latentdd.pipelines.baseline import random_real
from latentdd.pipelines.reports import StoredReport


@dataclass
class CalibrateConfig(Checked):
    """Which random-real evaluations to run (protocol name -> IPCs, number of runs)."""

    section: ClassVar[str] = "calibrate"

    runs: dict[Literal[tuple(PROTOCOLS)], list[PositiveInt]] = field(
        default_factory=lambda: {"dc": [1, 10, 50], "dsa": [1, 10]})
    num_eval: dict[str, PositiveInt] = field(default_factory=lambda: {"dc": 5, "dsa": 3})
    full_data_epochs: Annotated[int, Field(ge=0, description="0 skips")] = 10  # 0 skips training on the whole train split
    seed: int = 0
    evaluator: dict = field(default_factory=dict)  # EvalConfig overrides on top of each protocol (e.g. compile)
    teacher: dict = field(default_factory=dict)  # TeacherConfig settings for the soft protocol's teacher

    def __post_init__(self) -> None:
        super().__post_init__()
        for protocol in self.runs:
            if protocol not in self.num_eval:
                raise DataError(f"calibrate.num_eval has no entry for protocol {protocol!r}; add {protocol}: N")
        overrides = build(EvalConfig, self.evaluator, section="calibrate.evaluator")  # checks keys and values
        self.evaluator = {key: getattr(overrides, key) for key in (str(k).replace("-", "_") for k in self.evaluator)}
        from latentdd.evaluate.teacher import TeacherConfig

        build(TeacherConfig, self.teacher, section="calibrate.teacher")  # checks keys and values


def run_calibration(data: DataConfig, config: CalibrateConfig, out: Path, *, progress: bool = True) -> list[dict]:
    """Run every evaluation of `config` on dataset `data`; write reports and results under `out`."""
    out = claim_folder(Path(out), "calibrate")  # missing, empty or latentdd's, and writable: before any work
    (out / "reports").mkdir(exist_ok=True)
    save_resolved(out / "config.yaml", {"dataset": data, "calibrate": config})
    t0 = time.perf_counter()
    train, test = data.load("train"), data.load("test")
    mean, std = channel_stats(train)
    flip = dataset_info(data.name).flip_augment
    splits = {name: dict(zip(("images_sha256", "labels_sha256"), split_sha256(split.iter_batches(4096))[:2]))
              for name, split in (("train", train), ("test", test))}
    data_key = content_key("calibrate-data", **splits, flip=flip)
    load_seconds = time.perf_counter() - t0
    teacher = None
    if any(EvalConfig.preset(p, **config.evaluator).uses_teacher for p in config.runs):
        from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher

        teacher = resolve_teacher(build(TeacherConfig, config.teacher, section="calibrate.teacher"), train, test,
                                  progress=progress)
    rows = []
    for protocol, ipcs in config.runs.items():
        for ipc in ipcs:
            path = out / "reports" / f"random_{protocol}_ipc{ipc}.json"
            eval_cfg = EvalConfig.preset(protocol, **(config.evaluator | {"num_eval": config.num_eval[protocol]}))
            labeller = teacher if eval_cfg.uses_teacher else None
            # the teacher enters the data key of the soft runs only: the keys of the hard-label runs stay
            run_key = data_key if labeller is None else content_key("calibrate-data-teacher", data=data_key,
                                                                    teacher=labeller.record["key"])
            stored = StoredReport(path, "calibrate-random", {"evaluator": eval_cfg.identity(), "ipc": ipc,
                                                             "seed": config.seed, "data": run_key})
            report = stored.reusable()
            if report is None:
                dataset = dataset_record(data, train, test)
                result = _random_real_runs(train, test, ipc, eval_cfg, config.seed, mean, std, flip, dataset,
                                           path, run_key, progress, teacher=labeller)
                result.record["stage_seconds"]["load_data"] = load_seconds
                report = stored.write(result.to_dict())
            rows.append({"method": "random", "protocol": protocol, "ipc": ipc, "mean": report["mean"],
                         "std": report["std"], "n": len(report["accuracies"]),
                         "seconds": sum(report["train_seconds"]), "published": published(data.name, "random", ipc)}
                        | ({"teacher": labeller.record["name"], "teacher_test_accuracy": labeller.record["test_accuracy"]}
                           if labeller is not None else {}))
    if config.full_data_epochs > 0:
        rows.append(_full_data(train, test, mean, std, data, config, out, data_key, progress))
    atomic_write_json(out / "results.json", rows)
    atomic_write_text(out / "results.md", results_markdown(rows, data.name))
    return rows


def _random_real_runs(train, test, ipc, eval_cfg: EvalConfig, seed, mean, std, flip, dataset: dict, path: Path,
                      data_key: str, progress: bool, teacher=None) -> EvalReport:
    """Run i draws its own random subset (seed + i) and trains its own network (seed + i).

    The published random-real std (DC) spans different random selections, not only
    different initialisations, so each run re-draws the subset. Each run is kept as it
    finishes, the report of its one training (`<path>.run<i>.json`, under its own key), so an
    interrupted IPC-50 calibration resumes mid-way, and more runs (a larger num_eval) reuse the
    earlier ones.
    """
    runs = []
    for i in range(eval_cfg.num_eval):
        cfg = dataclasses.replace(eval_cfg, num_eval=1, seed=seed + i)
        stored = StoredReport(path.with_suffix(f".run{i}.json"), "calibrate-random-run",
                              {"evaluator": cfg.identity(), "ipc": ipc, "subset_seed": seed + i, "data": data_key})
        run = stored.reusable()
        if run is None:
            subset = random_real(train, ipc, seed + i)
            record = protocol_record(dataset=dataset, method=subset.meta["method"], ipc=ipc, evaluator={},
                                     num_eval=1, seeds=[])
            run = stored.write(evaluate_synthetic(subset, test, cfg, mean=mean, std=std, flip=flip, record=record,
                                                  progress=progress, teacher=teacher).to_dict())
        runs.append(run)
    record = runs[0]["record"]
    record["method"] = {"name": "random", "ipc": ipc, "subset_seeds": [seed + i for i in range(len(runs))],
                        "note": "run i evaluates its own random subset (seed + i) with its own network (seed + i)",
                        "train_indices": [r["record"]["method"]["train_indices"] for r in runs]}
    evaluators = [r["record"]["evaluator"] for r in runs]  # each run says whether it trained compiled
    record["evaluator"]["compiled"] = all(e.get("compiled", False) for e in evaluators)
    record["evaluator"]["compile_fallback"] = next((e["compile_fallback"] for e in evaluators
                                                    if e.get("compile_fallback")), None)
    record["num_eval"] = len(runs)
    record["seeds"] = [r["seeds"][0] for r in runs]
    record["stage_seconds"] = {"evaluate": sum(r["wall_seconds"] for r in runs)}
    return EvalReport([r["accuracies"][0] for r in runs], record["seeds"], [r["train_seconds"][0] for r in runs],
                      record["stage_seconds"]["evaluate"], record)


def _full_data(train, test, mean, std, data: DataConfig, config: CalibrateConfig, out: Path, data_key: str,
               progress: bool) -> dict:
    """One ConvNet-3 trained on the whole train split: SGD lr 0.01, no augmentation, short schedule."""
    path = out / "reports" / f"full_data_{config.full_data_epochs}ep.json"
    eval_cfg = EvalConfig(**(config.evaluator | {"epochs": config.full_data_epochs, "dsa": False, "num_eval": 1,
                                                  "seed": config.seed}))
    stored = StoredReport(path, "calibrate-full", {"evaluator": eval_cfg.identity(), "data": data_key})
    report = stored.reusable()
    if report is None:
        t0 = time.perf_counter()
        images, labels = train.load(torch.arange(len(train))), train.labels
        status = CompileStatus(eval_cfg.compile)
        model = train_model(images, labels, num_classes=len(train.class_names), config=eval_cfg, mean=mean, std=std,
                            seed=config.seed, progress=progress, compile_status=status)
        seconds = time.perf_counter() - t0
        acc = top1_accuracy(model, test, mean=mean, std=std, compile=eval_cfg.compile, compile_status=status)
        record = protocol_record(
            dataset=dataset_record(data, train, test), method={"name": "full", "train_images": len(train)},
            ipc=None, evaluator=eval_cfg.record(images.shape[-1], flip=False, has_weights=False, has_soft=False,
                                              compile_status=status),
            num_eval=1, seeds=[config.seed], stage_seconds={"train": seconds},
        )
        report = stored.write(EvalReport([acc], [config.seed], [seconds], seconds, record).to_dict())
    return {"method": "full", "protocol": f"{config.full_data_epochs} epochs, no aug", "ipc": 0,
            "mean": report["mean"], "std": report["std"], "n": 1, "seconds": report["wall_seconds"],
            "published": published(data.name, "full", 0)}


def full_data_accuracy(calibration: str, dataset: str) -> float:
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


def results_markdown(rows: list[dict], dataset: str) -> str:
    lines = [
        f"# Evaluator calibration on {dataset}",
        "",
        "| method | protocol | IPC | ours (mean ± std, n) | published | within 2 std | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = r["published"]
        pub_text = "—" if pub is None else (f"{pub[0]} ± {pub[1]}" if pub[1] is not None else f"{pub[0]}")
        within = "—"
        if r["protocol"] != "dc" and pub is not None:
            pub_text = f"— (DC protocol: {pub_text})"  # no random-real figure is published under DSA
        elif pub is not None and pub[1] is not None and r["protocol"] == "dc":
            within = "yes" if abs(r["mean"] - pub[0]) <= 2 * pub[1] else "no"
        ipc = r["ipc"] or "all"
        lines.append(f"| {r['method']} | {r['protocol']} | {ipc} | {r['mean']:.2f} ± {r['std']:.2f} (n={r['n']}) "
                     f"| {pub_text} | {within} | {r['seconds']:.0f} |")
    teachers = {(r["teacher"], r["teacher_test_accuracy"]) for r in rows if r.get("teacher")}
    lines += ["", "Published random-real figures use the DC protocol (300 epochs, no augmentation); "
              "rows of the other protocols (dsa: 1000 epochs, DSA; soft; minimax) have no published random-real "
              "counterpart.",
              *[f"Soft-label rows: teacher {name}, test accuracy {acc:.2f}%." for name, acc in sorted(teachers)],
              "Every report under reports/ carries its full protocol record."]
    return "\n".join(lines) + "\n"
