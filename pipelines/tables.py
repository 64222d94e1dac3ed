"""A run's table: its rows (`Row`, as results.json holds them), the relative scores, and results.md."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from latentdd.evaluate.scores import relative_scores
from latentdd.evaluate.trainer import EvalConfig

WEIGHTED = " + weights"  # after the label of a set evaluated with its weights (labels hold no spaces)


@dataclass(frozen=True)
class Row:
    """One row of a run's table: a set's evaluation, or random real's over its subsets.

    method: the distiller the set comes from (its registry name), or "random" for random real; label: the
    set's name (run.methods' label, a curve point's, "random-real (pixels) s0"); weighted: trained with the
    set's weights (the table names the row "<label> + weights"); n: trainings, or subsets for a row over
    subsets; report: the evaluation's report (None over subsets); lent_from: the other run folders whose
    trainings the report holds -> how many each lent; subset_of: a random-real subset's baseline;
    training_std and subsets (the subsets' reports): a row over subsets; ior, hlr, lrs: `with_relative_scores`;
    tiles: f when the set's stored images were trained on as f x f tiles (factorization), else 1.
    """

    method: str
    label: str
    ipc: int
    mean: float
    std: float
    n: int
    report: str | None
    lent_from: dict[str, int] = field(default_factory=dict)
    weighted: bool = False
    subset_of: str | None = None
    quantization_error: float | None = None  # latent W2: the class's latents to the set's nearest points
    class_consistency: float | None = None  # % (run.consistency)
    training_std: float | None = None
    subsets: tuple[str, ...] | None = None
    ior: float | None = None
    hlr: float | None = None
    lrs: float | None = None
    tiles: int = 1

    @property
    def name(self) -> str:
        """The row's name in the tables: "kmeans + weights"."""
        return self.label + (WEIGHTED if self.weighted else "")

    def measured(self) -> dict:
        """What its evaluation measured, under the keys of results.json (and of cross_arch.json's cells)."""
        return {"method": self.name, "ipc": self.ipc, "mean": self.mean, "std": self.std, "n": self.n,
                "report": self.report, "lent_from": dict(self.lent_from)}

    def to_json(self) -> dict:
        """The row as results.json holds it: the keys, in the order, `latentdd run` has always written them."""
        if self.subsets is None:
            row = self.measured() | {"quantization_error": self.quantization_error}
            if self.subset_of is not None:
                row["subset_of"] = self.subset_of
        else:
            row = {"method": self.name, "ipc": self.ipc, "mean": self.mean, "std": self.std, "n": self.n,
                   "quantization_error": self.quantization_error, "training_std": self.training_std,
                   "subsets": list(self.subsets), "report": self.report, "lent_from": dict(self.lent_from)}
        if self.class_consistency is not None:
            row["class_consistency"] = self.class_consistency
        if self.tiles > 1:
            row["tiles"] = self.tiles
        return row | {"ior": self.ior, "hlr": self.hlr, "lrs": self.lrs}

    @classmethod
    def from_json(cls, row: dict, method: str) -> Row:
        """A row of results.json (`to_json`'s keys); `method`: the distiller, which results.json does not name."""
        weighted = row["method"].endswith(WEIGHTED)
        subsets = row.get("subsets")
        return cls(method, row["method"].removesuffix(WEIGHTED), row["ipc"], row["mean"], row["std"], row["n"],
                   row["report"], dict(row["lent_from"]), weighted=weighted, subset_of=row.get("subset_of"),
                   quantization_error=row.get("quantization_error"), class_consistency=row.get("class_consistency"),
                   training_std=row.get("training_std"), subsets=None if subsets is None else tuple(subsets),
                   ior=row.get("ior"), hlr=row.get("hlr"), lrs=row.get("lrs"), tiles=row.get("tiles", 1))


def subsets_text(n: int) -> str:
    """"1 subset", "5 subsets": how many random-real subsets a row is over."""
    return f"{n} subset" if n == 1 else f"{n} subsets"


def over_subsets(rows: list[Row]) -> Row:
    """One row for the random subsets of one baseline and IPC, as DC reports random real: mean ± std over the
    subsets' mean accuracies; `training_std` is the mean of the per-subset spreads over trainings."""
    means = [r.mean for r in rows]
    first = rows[0]
    return Row(first.method, f"{first.subset_of}, {subsets_text(len(rows))}", first.ipc, float(np.mean(means)),
               float(np.std(means)), len(rows), None, dict(sum((Counter(r.lent_from) for r in rows), Counter())),
               training_std=float(np.mean([r.std for r in rows])), subsets=tuple(r.report for r in rows),
               tiles=first.tiles)


def with_relative_scores(rows: list[Row], full_data: float | None) -> list[Row]:
    """The rows with each set's IOR against the random-real subsets of its IPC (same protocol) -- of its tiling, for
    a set trained on f x f tiles when the run has random real tiles of f (run.random_real_tiles), else plain random
    real --, and its HLR and LRS when `full_data` (the full-data accuracy, for a hard-label protocol):
    `latentdd.evaluate.scores`."""
    random: dict[tuple[int, int], list[list[float]]] = {}
    for r in rows:
        if r.subset_of is not None:
            random.setdefault((r.ipc, r.tiles), []).append([r.mean])

    def scored(r: Row) -> Row:
        baseline = random.get((r.ipc, r.tiles)) or random.get((r.ipc, 1))
        if r.subset_of is not None or r.subsets is not None or baseline is None:
            return r
        scores = relative_scores([r.mean], baseline, set_hard_accuracies=[r.mean],
                                 full_data_accuracies=None if full_data is None else [full_data])
        return replace(r, ior=scores.ior, hlr=scores.hlr, lrs=scores.lrs)

    return [scored(r) for r in rows]


def optional(value: float | None, spec: str) -> str:
    """A table cell: `value` formatted, or empty when there is none."""
    return "" if value is None else format(value, spec)


def accuracy_text(row: Row) -> str:
    """"77.20 ± 0.31 (n=3)" over trainings; for random real over subsets, the subsets' spread and the
    mean training spread beside it."""
    if row.training_std is None:
        return f"{row.mean:.2f} ± {row.std:.2f} (n={row.n})"
    return f"{row.mean:.2f} ± {row.std:.2f} over {subsets_text(row.n)} (training spread ± {row.training_std:.2f})"


def lent_sources(rows: list[Row]) -> list[str]:
    """The run folders (run.reports_from) that lent trainings to `rows`, in order of first use: source i is
    footnote [i + 1] of the table."""
    return list(dict.fromkeys(folder for r in rows for folder in r.lent_from))


def lent_mark(row: Row, sources: list[str]) -> str:
    """"; 2 trainings lent [1]" after the accuracy of a row with trainings lent by `sources`, else ""."""
    if not row.lent_from:
        return ""
    total = sum(row.lent_from.values())
    marks = "".join(f"[{sources.index(f) + 1}]" for f in row.lent_from)
    return f"; {total} training{'s' if total != 1 else ''} lent {marks}"


def lent_footnotes(sources: list[str]) -> list[str]:
    """The lines under a table that list the folders that lent trainings (none when nothing was lent)."""
    if not sources:
        return []
    return ["", "Lent trainings (run.reports_from) were not trained by this run: they were taken, seed by seed, from "
                "the verified reports of the runs listed here, as each report's record.reused_trainings says:", "",
            *(f"- [{i}] {folder}" for i, folder in enumerate(sources, 1))]


def _departures_text(evaluator: EvalConfig) -> list[str]:
    """A line saying where the evaluator departs from its protocol (e.g. a light evaluation), or none."""
    changed = evaluator.departures()
    if not changed:
        return []
    what = ", ".join(f"{key} {ours} (the protocol's: {theirs})" for key, (ours, theirs) in changed.items())
    return [f"**Not the full {evaluator.protocol} protocol:** {what}.", ""]


def results_markdown(rows: list[Row], dataset: str, evaluator: EvalConfig, vae: dict, seconds: float, *,
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
        lines.append(f"| {r.name} | {r.ipc} | {accuracy_text(r)}{lent_mark(r, sources)} | "
                     f"{optional(r.quantization_error, '.3f')} | {optional(r.class_consistency, '.1f')} | "
                     f"{optional(r.ior, '+.2f')} | {optional(r.hlr, '+.2f')} | {optional(r.lrs, '.2f')} |")
    lines += [*lent_footnotes(sources), "", f"wall time of this invocation: {seconds:.0f} s"]
    return "\n".join(lines) + "\n"
