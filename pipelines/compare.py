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
from dataclasses import dataclass
from pathlib import Path

from latentdd.config import DataConfig
from latentdd.evaluate.trainer import EvalConfig
from latentdd.export import image_grid, load_image_folder, read_manifest
from latentdd.io import atomic_write_bytes, atomic_write_text
from latentdd.parallel import process_state
from latentdd.published import Published, published
from latentdd.pipelines.distill import DecoderConfig, LatentSpaceConfig
from latentdd.pipelines.run import run
from latentdd.pipelines.run_config import RunConfig
from latentdd.pipelines.tables import Row, accuracy_text, lent_footnotes, lent_mark, lent_sources, optional

CSV_FIELDS = ("method", "ipc", "mean", "std", "n", "latent_w2", "class_consistency", "published_mean",
              "published_protocol", "distill_s", "render_s", "evaluate_s", "report")


@dataclass(frozen=True)
class Compared:
    """A row of the comparison: the run's row, the published figure of its method (pixel space), and the seconds
    of its stages (from the set's record and the report; None for random real over its subsets)."""

    row: Row
    published: Published | None
    distill_s: float | None
    render_s: float | None
    evaluate_s: float | None

    def csv(self) -> dict:
        """The results.csv row (CSV_FIELDS of it)."""
        return self.row.to_json() | {
            "latent_w2": self.row.quantization_error,
            "published_mean": self.published.mean if self.published else None,
            "published_protocol": self.published.protocol if self.published else None,
            "distill_s": self.distill_s, "render_s": self.render_s, "evaluate_s": self.evaluate_s}


def compare(data: DataConfig, space: LatentSpaceConfig, config: RunConfig, evaluator: EvalConfig, out: Path, *,
            decoder: DecoderConfig | None = None, progress: bool = True, teacher=None) -> list[Compared]:
    """Run every method (see `latentdd.pipelines.run.run`), then write the comparison's tables and figures."""
    out = Path(out)
    rows = run(data, space, config, evaluator, out, decoder=decoder, progress=progress, teacher=teacher)
    compared = [_with_costs(row, data.name) for row in rows]
    if not process_state().is_main_process:  # under accelerate launch the first process writes the comparison
        return compared
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(c.csv() for c in compared)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    atomic_write_text(out / "results.md", comparison_markdown(compared, data.name, evaluator))
    atomic_write_bytes(out / "accuracy_vs_ipc.png", accuracy_plot(rows, data.name))
    for spec in config.specs():
        folder = out / f"{spec.label}_ipc{max(filter(spec.runs_at, config.ipcs))}" / "images"
        synthetic = load_image_folder(folder, class_names=list(read_manifest(folder)["class_names"]))
        atomic_write_bytes(out / f"grid_{spec.label}.png", image_grid(synthetic))
    return compared


def _with_costs(row: Row, dataset: str) -> Compared:
    """The row with the published figure of its method and the stage seconds (from the folder's record and the
    report)."""
    report = json.loads(Path(row.report).read_text()) if row.report else {}  # None: over subsets
    stages = report.get("record", {}).get("stage_seconds", {})
    return Compared(row, published(dataset, row.method, row.ipc), stages.get("distill"), stages.get("render"),
                    report.get("wall_seconds"))


def comparison_markdown(compared: list[Compared], dataset: str, evaluator: EvalConfig) -> str:
    lines = [f"# latentdd compare: {dataset}", "",
             f"Evaluator {evaluator.model}, {evaluator.epochs} epochs, {'DSA' if evaluator.dsa else 'no augmentation'}, "
             f"{evaluator.num_eval} run(s) per set; every method distils the same cached latents and is rendered by "
             "the same decoder; full protocol records in the reports/ folder. Published figures are PIXEL-space "
             "methods (PROTOCOLS.md section 2), each with the protocol it was measured under, which need not be "
             "this table's: compare a row with its published figure only where the protocols match.", "",
             "| method | IPC | accuracy % (mean ± std, n) | published (pixel space, its protocol) | latent W2 | "
             "class consistency % | "
             "distill s | render s | evaluate s |", "|---|---|---|---|---|---|---|---|---|"]
    sources = lent_sources([c.row for c in compared])
    for c in compared:
        r = c.row
        lines.append(f"| {r.name} | {r.ipc} | {accuracy_text(r)}{lent_mark(r, sources)} | "
                     f"{_published_text(c.published)} | {optional(r.quantization_error, '.3f')} | "
                     f"{optional(r.class_consistency, '.1f')} | {optional(c.distill_s, '.1f')} | "
                     f"{optional(c.render_s, '.1f')} | {optional(c.evaluate_s, '.0f')} |")
    return "\n".join([*lines, *lent_footnotes(sources)]) + "\n"


def _published_text(figure: Published | None) -> str:
    """The published figure as printed, with its protocol: "73.8 (DC protocol: 300 ep, no aug)"."""
    return "" if figure is None else f"{figure.mean:g} ({figure.protocol})"


def accuracy_plot(rows: list[Row], dataset: str) -> bytes:
    """PNG bytes: test accuracy (mean ± std) against IPC, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    rows = [r for r in rows if r.subset_of is None]  # random real: the line over its subsets
    for name in dict.fromkeys(r.name for r in rows):
        line = [r for r in rows if r.name == name]
        x, means, stds = zip(*sorted((r.ipc, r.mean, r.std) for r in line))
        ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=name,
                    linestyle="--" if line[0].subsets is not None else "-")
    ax.set_xscale("log")
    ipcs = sorted({r.ipc for r in rows})
    ax.set_xticks(ipcs, labels=[str(v) for v in ipcs])
    ax.set(xlabel="images per class", ylabel="test accuracy (%)", title=f"{dataset}: latentdd compare")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
