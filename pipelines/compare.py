"""`latentdd compare`: several distillers on the same latents, renderer and evaluator, side by side.

It is `latentdd run` (same caching and resumption: a second call skips every finished
stage) plus what a comparison needs:

    out/results.csv            a row per (method, IPC): accuracy, latent W2, seconds per stage
    out/results.md             the table next to the published pixel-space figures
    out/accuracy_vs_ipc.png    mean ± std per method over IPC (random real dashed)
    out/grid_<label>.png       each method's synthetic images at its largest IPC, a row per class
    out/<label>_ipc<N>/        each method's folder (images/, latents, distill.json)
    out/cross_arch.md, .json   with run.students: every set on each student (latentdd.pipelines.cross_arch)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


from latentdd.config import DataConfig
from latentdd.evaluate.trainer import EvalConfig
from latentdd.export import image_grid, load_image_folder, read_manifest
from latentdd.io import atomic_write_bytes, atomic_write_text
from latentdd.published import published
from latentdd.pipelines.distill import DecoderConfig, LatentSpaceConfig
from latentdd.pipelines.run import RunConfig, accuracy_text, lent_footnotes, lent_mark, lent_sources, run

CSV_FIELDS = ("method", "ipc", "mean", "std", "n", "latent_w2", "class_consistency", "published_mean",
              "published_protocol", "distill_s", "render_s", "evaluate_s", "report")


def compare(data: DataConfig, space: LatentSpaceConfig, config: RunConfig, evaluator: EvalConfig, out: Path, *,
            decoder: DecoderConfig | None = None, progress: bool = True, teacher=None) -> list[dict]:
    """Run every method (see `latentdd.pipelines.run.run`), then write the comparison's tables and figures."""
    out = Path(out)
    rows = [_with_costs(row, data.name) for row in run(data, space, config, evaluator, out, decoder=decoder,
                                                        progress=progress, teacher=teacher)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    atomic_write_text(out / "results.md", comparison_markdown(rows, data.name, evaluator))
    atomic_write_bytes(out / "accuracy_vs_ipc.png", accuracy_plot(rows, data.name))
    for spec in config.specs():
        folder = out / f"{spec.label}_ipc{max(filter(spec.runs_at, config.ipcs))}" / "images"
        synthetic = load_image_folder(folder, class_names=list(read_manifest(folder)["class_names"]))
        atomic_write_bytes(out / f"grid_{spec.label}.png", image_grid(synthetic))
    return rows


def _with_costs(row: dict, dataset: str) -> dict:
    """Add the stage seconds (from the folder's record and the report) and the published figure."""
    report = json.loads(Path(row["report"]).read_text()) if row["report"] else {}  # None: over subsets
    stages = report.get("record", {}).get("stage_seconds", {})
    base = row["method"].removesuffix(" + weights")
    pub = published(dataset, "random" if base.startswith("random-real") else base, row["ipc"])
    return row | {"latent_w2": row.get("quantization_error"), "published_mean": pub.mean if pub else None,
                  "published_protocol": pub.protocol if pub else None,
                  "distill_s": stages.get("distill"), "render_s": stages.get("render"),
                  "evaluate_s": report.get("wall_seconds")}


def comparison_markdown(rows: list[dict], dataset: str, evaluator: EvalConfig) -> str:
    lines = [f"# latentdd compare: {dataset}", "",
             f"Evaluator {evaluator.model}, {evaluator.epochs} epochs, {'DSA' if evaluator.dsa else 'no augmentation'}, "
             f"{evaluator.num_eval} run(s) per set; every method distils the same cached latents and is rendered by "
             "the same decoder; full protocol records in the reports/ folder. Published figures are PIXEL-space "
             "methods (PROTOCOLS.md section 2), each with the protocol it was measured under, which need not be "
             "this table's: compare a row with its published figure only where the protocols match.", "",
             "| method | IPC | accuracy % (mean ± std, n) | published (pixel space, its protocol) | latent W2 | "
             "class consistency % | "
             "distill s | render s | evaluate s |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    sources = lent_sources(rows)
    for r in rows:
        lines.append(f"| {r['method']} | {r['ipc']} | {accuracy_text(r)}{lent_mark(r, sources)} | "
                     f"{_published_text(r)} | {fmt(r['latent_w2'], '.3f')} | "
                     f"{fmt(r.get('class_consistency'), '.1f')} | {fmt(r['distill_s'], '.1f')} | "
                     f"{fmt(r['render_s'], '.1f')} | {fmt(r['evaluate_s'], '.0f')} |")
    return "\n".join([*lines, *lent_footnotes(sources)]) + "\n"


def _published_text(row: dict) -> str:
    """The published figure as printed, with its protocol: "73.8 (DC protocol: 300 ep, no aug)"."""
    return "" if row["published_mean"] is None else f"{row['published_mean']:g} ({row['published_protocol']})"


def accuracy_plot(rows: list[dict], dataset: str) -> bytes:
    """PNG bytes: test accuracy (mean ± std) against IPC, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    rows = [r for r in rows if not r.get("subset_of")]  # random real: the line over its subsets
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["ipc"], r["mean"], r["std"]) for r in rows if r["method"] == method)
        ipcs, means, stds = zip(*points)
        ax.errorbar(ipcs, means, yerr=stds, marker="o", capsize=3, label=method,
                    linestyle="--" if method.startswith("random-real") else "-")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["ipc"] for r in rows}), labels=[str(v) for v in sorted({r["ipc"] for r in rows})])
    ax.set(xlabel="images per class", ylabel="test accuracy (%)", title=f"{dataset}: latentdd compare")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
