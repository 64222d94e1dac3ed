"""Calibrate the ruler: random-real subsets under the DC and DSA protocols, and full data.

Reproduces numbers nobody here produced (the published random-real baselines and the
full-data accuracy) so that every later figure is read on a checked scale. Each
(protocol, IPC) report is saved as it finishes; re-running skips finished ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentdd.config import DataConfig, save_resolved
from latentdd.data import dataset_info, load_dataset
from latentdd.evaluate.trainer import EvalConfig, EvalReport, channel_stats, evaluate_synthetic, test_accuracy, train_model
from latentdd.io import atomic_write_json, atomic_write_text
from latentdd.published import published
from latentdd.record import protocol_record
from pipelines.baseline import random_real


@dataclass
class CalibrateConfig:
    """Which random-real evaluations to run (protocol name -> IPCs, number of runs)."""

    runs: dict[str, list[int]] = field(default_factory=lambda: {"dc": [1, 10, 50], "dsa": [1, 10]})
    num_eval: dict[str, int] = field(default_factory=lambda: {"dc": 5, "dsa": 3})
    full_data_epochs: int = 10  # 0 skips training on the whole train split
    seed: int = 0
    compile: str = "auto"


def _dataset_record(data: DataConfig, train, test) -> dict:
    return {"name": data.name, "train_split": f"train ({len(train)} images)", "test_split": f"test ({len(test)} images)",
            "image_shape": list(test.load([0]).shape[1:]), "resize": data.resize, "source": getattr(train, "source", "")}


def run_calibration(data: DataConfig, config: CalibrateConfig, out: Path, *, progress: bool = True) -> list[dict]:
    """Run every evaluation of `config` on dataset `data`; write reports and results under `out`."""
    out = Path(out)
    (out / "reports").mkdir(parents=True, exist_ok=True)
    save_resolved(out / "config.yaml", {"dataset": data, "calibrate": config})
    t0 = time.perf_counter()
    kw = dict(root=data.root, image_size=data.image_size, channels=data.channels, resize=data.resize,
              download=data.download)
    train, test = load_dataset(data.name, "train", **kw), load_dataset(data.name, "test", **kw)
    mean, std = channel_stats(train)
    flip = dataset_info(data.name).flip_augment
    load_seconds = time.perf_counter() - t0
    rows = []
    for protocol, ipcs in config.runs.items():
        for ipc in ipcs:
            path = out / "reports" / f"random_{protocol}_ipc{ipc}.json"
            if path.exists():
                report = json.loads(path.read_text())
            else:
                t_sel = time.perf_counter()
                subset = random_real(train, ipc, config.seed)
                eval_cfg = EvalConfig.preset(protocol, num_eval=config.num_eval[protocol], seed=config.seed,
                                             compile=config.compile)
                record = protocol_record(
                    dataset=_dataset_record(data, train, test), method=subset.meta["method"],
                    ipc=ipc, evaluator={}, num_eval=eval_cfg.num_eval, seeds=[],
                    stage_seconds={"load_data": load_seconds, "select": time.perf_counter() - t_sel},
                )
                result = evaluate_synthetic(subset, test, eval_cfg, mean=mean, std=std, flip=flip, record=record,
                                            progress=progress)
                result.record["stage_seconds"]["evaluate"] = result.wall_seconds
                result.save_json(path)
                report = result.to_dict()
            rows.append({"method": "random", "protocol": protocol, "ipc": ipc, "mean": report["mean"],
                         "std": report["std"], "n": len(report["accuracies"]),
                         "seconds": sum(report["train_seconds"]), "published": published(data.name, "random", ipc)})
    if config.full_data_epochs > 0:
        rows.append(_full_data(train, test, mean, std, data, config, out, progress))
    atomic_write_json(out / "results.json", rows)
    atomic_write_text(out / "results.md", results_markdown(rows, data.name))
    return rows


def _full_data(train, test, mean, std, data: DataConfig, config: CalibrateConfig, out: Path, progress: bool) -> dict:
    """One ConvNet-3 trained on the whole train split: SGD lr 0.01, no augmentation, short schedule."""
    path = out / "reports" / f"full_data_{config.full_data_epochs}ep.json"
    eval_cfg = EvalConfig(epochs=config.full_data_epochs, dsa=False, num_eval=1, seed=config.seed,
                          compile=config.compile)
    if not path.exists():
        t0 = time.perf_counter()
        images, labels = train.load(torch.arange(len(train))), train.labels
        model = train_model(images, labels, num_classes=len(train.class_names), config=eval_cfg, mean=mean, std=std,
                            seed=config.seed, progress=progress)
        seconds = time.perf_counter() - t0
        acc = test_accuracy(model, test, mean=mean, std=std, compile=config.compile)
        record = protocol_record(
            dataset=_dataset_record(data, train, test), method={"name": "full", "train_images": len(train)},
            ipc=None, evaluator=eval_cfg.record(images.shape[-1], flip=False, has_weights=False, has_soft=False),
            num_eval=1, seeds=[config.seed], stage_seconds={"train": seconds},
        )
        EvalReport([acc], [config.seed], [seconds], seconds, record).save_json(path)
    report = json.loads(path.read_text())
    return {"method": "full", "protocol": f"{config.full_data_epochs} epochs, no aug", "ipc": 0,
            "mean": report["mean"], "std": report["std"], "n": 1, "seconds": report["wall_seconds"],
            "published": published(data.name, "full", 0)}


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
        if pub is not None and pub[1] is not None and r["protocol"] == "dc":
            within = "yes" if abs(r["mean"] - pub[0]) <= 2 * pub[1] else "no"
        ipc = r["ipc"] or "all"
        lines.append(f"| {r['method']} | {r['protocol']} | {ipc} | {r['mean']:.2f} ± {r['std']:.2f} (n={r['n']}) "
                     f"| {pub_text} | {within} | {r['seconds']:.0f} |")
    lines += ["", "Published random-real figures use the DC protocol (300 epochs, no augmentation); "
              "DSA-protocol rows (1000 epochs, DSA) have no published random-real counterpart.",
              "Every report under reports/ carries its full protocol record."]
    return "\n".join(lines) + "\n"
