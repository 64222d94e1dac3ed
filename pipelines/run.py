"""The main job: fit or load the VAE, encode (cached), distil, render, evaluate, tabulate.

Every stage is cached and resumable: the fitted VAE and the latent cache by content,
each method's folder and each evaluation report by path, so a second run only redoes
what changed. The random-real baseline (real pixels, no VAE) is evaluated under the
same protocol in the same run, as every table must have it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from latentdd.config import DataConfig, save_resolved
from latentdd.data import dataset_info
from latentdd.evaluate.trainer import EvalConfig, channel_stats, evaluate_synthetic
from latentdd.export import load_image_folder, read_manifest
from latentdd.io import atomic_write_json, atomic_write_text
from latentdd.record import protocol_record
from pipelines.baseline import random_real
from pipelines.distill import LatentSpaceConfig, distill_to_folder, prepare_latent_space


@dataclass
class RunConfig:
    """What the main job distils and how it evaluates."""

    methods: list[str] = field(default_factory=lambda: ["kmeans", "random"])
    ipcs: list[int] = field(default_factory=lambda: [10])
    seed: int = 0
    use_weights: bool = True  # evaluate weighted methods (kmeans) with their weights
    random_real: bool = True  # the pixel-space random-real baseline, same protocol


def run(data: DataConfig, space: LatentSpaceConfig, config: RunConfig, evaluator: EvalConfig, out: Path,
        *, progress: bool = True) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(out / "config.yaml", {"dataset": data, "latent": space, "run": config, "evaluator": evaluator})
    t0 = time.perf_counter()
    prepared = prepare_latent_space(data, space, progress=progress)
    mean, std = channel_stats(prepared.train)
    flip = dataset_info(data.name).flip_augment
    rows = []
    for ipc in config.ipcs:
        for method in config.methods:
            folder = out / f"{method}_ipc{ipc}"
            if not (folder / "distill.json").exists():
                distill_to_folder(prepared, method, ipc, config.seed, folder, overwrite=True)
            rows.append(_evaluate(folder / "images", f"{method}", ipc, prepared.test, evaluator, mean, std, flip,
                                  out, config.use_weights, progress))
        if config.random_real:
            folder = out / f"random-real_ipc{ipc}"
            if not (folder / "manifest.json").exists():
                from latentdd.export import export_image_folder

                subset = random_real(prepared.train, ipc, config.seed)
                record = protocol_record(dataset=prepared.record["dataset"], method=subset.meta["method"], ipc=ipc,
                                         evaluator={}, num_eval=0, seeds=[config.seed])
                export_image_folder(subset, folder, record=record, overwrite=True)
            rows.append(_evaluate(folder, "random-real (pixels)", ipc, prepared.test, evaluator, mean, std, flip, out,
                                  False, progress))
    atomic_write_json(out / "results.json", rows)
    table = results_markdown(rows, data.name, evaluator, prepared.record["vae"], time.perf_counter() - t0)
    atomic_write_text(out / "results.md", table)
    return rows


def _evaluate(images: Path, label: str, ipc: int, test, evaluator: EvalConfig, mean, std, flip, out: Path,
              use_weights: bool, progress: bool) -> dict:
    synthetic = load_image_folder(images, class_names=list(test.class_names))
    # Equal weights train exactly like no weights; only a non-uniform set is "weighted".
    weights = synthetic.weights
    weighted = use_weights and weights is not None and not bool((weights == weights[0]).all())
    name = f"{images.parent.name if images.name == 'images' else images.name}{'_weighted' if weighted else ''}"
    path = out / "reports" / f"{name}.json"
    if not path.exists():
        from dataclasses import replace

        cfg = replace(evaluator, use_weights=weighted)
        record = read_manifest(images).get("record") or {}
        report = evaluate_synthetic(synthetic, test, cfg, mean=mean, std=std, flip=flip, record=record,
                                    progress=progress)
        report.save_json(path)
    report = json.loads(path.read_text())
    return {"method": label + (" + weights" if weighted else ""), "ipc": ipc, "mean": report["mean"],
            "std": report["std"], "n": len(report["accuracies"]), "report": str(path)}


def results_markdown(rows: list[dict], dataset: str, evaluator: EvalConfig, vae: dict, seconds: float) -> str:
    lines = [f"# latentdd run: {dataset}", "",
             f"VAE `{vae.get('name')}` (latents {vae.get('latent_shape')}); evaluator {evaluator.model}, "
             f"{evaluator.epochs} epochs, {'DSA' if evaluator.dsa else 'no augmentation'}, "
             f"{evaluator.num_eval} run(s) per set; full protocol records under reports/.", "",
             "| method | IPC | test accuracy % (mean ± std, n) |", "|---|---|---|"]
    lines += [f"| {r['method']} | {r['ipc']} | {r['mean']:.2f} ± {r['std']:.2f} (n={r['n']}) |" for r in rows]
    lines += ["", f"wall time of this invocation: {seconds:.0f} s"]
    return "\n".join(lines) + "\n"
