"""The cross-architecture table: the run's sets, distilled with one network in the loop, trained on other students.

`run.students` lists the students (default: none, and `run` writes only its own table). Each
entry is a named preset (`STUDENT_PRESETS`: `resnet18`, `convnet-bn`, ...) or a mapping of
evaluator overrides with an optional label, e.g. `{model: convnet, norm: batchnorm, label:
convnet-bn}` or `{model: resnet18}`. A student is the run's evaluator with those overrides:
the same protocol, epochs, trainings and held-out split, so that a column differs from
another only in the architecture (and whatever else the entry sets). An entry naming another
model than the evaluator's drops the evaluator's width, depth and norm (each architecture
then has its own defaults, as in `latentdd.nn.convnet.MODELS`) unless it sets them.

Every set of the run and every random-real subset is evaluated under every student; each
cell is a full report (protocol record included) under reports/student-<label>/, keyed by
content as the run's own reports are, so a second run reuses them. A student identical to
the evaluator shares the run's reports/ (nothing is trained twice). Written:

    out/cross_arch.md     rows: sets; columns: students; mean ± std (n), and the IOR against the
                          random-real subsets trained on the same student; random real's row per IPC
    out/cross_arch.json   the students' resolved settings and every cell, subsets included
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentdd.config import check_key, check_mapping, coerce, plain
from latentdd.errors import DataError
from latentdd.evaluate.scores import relative_scores
from latentdd.evaluate.trainer import EvalConfig
from latentdd.io import atomic_write_json, atomic_write_text
from latentdd.pipelines.evaluation import EvaluatedSet, Evaluator
from latentdd.pipelines.tables import Row, subsets_text

# Named students for `--students a,b` and YAML strings: each is a mapping of evaluator overrides.
STUDENT_PRESETS: dict[str, dict] = {
    "convnet": {"model": "convnet"},
    "convnet-bn": {"model": "convnet", "norm": "batchnorm"},
    "convnet-w64": {"model": "convnet", "width": 64},
    "resnet18": {"model": "resnet18"},
    "resnetap10": {"model": "resnetap10"},
    "vgg11": {"model": "vgg11"},
    "alexnet": {"model": "alexnet"},
}

# Not a student's to change: the protocol is the table's (a student changing it would compare protocols, not
# architectures), and the soft protocol's teacher is resolved for the evaluator's loss only.
_FIXED = ("protocol", "loss")
# The evaluator's architecture options, meaningless for another model: dropped when an entry changes the model.
_ARCHITECTURE = ("width", "depth", "norm")


@dataclass(frozen=True)
class StudentSpec:
    """One column: a label and the evaluator overrides (coerced to EvalConfig's types)."""

    label: str
    overrides: dict

    @classmethod
    def parse(cls, entry: str | dict) -> StudentSpec:
        """A preset name or a mapping of EvalConfig fields (+ label); DataError naming the entry otherwise."""
        if isinstance(entry, str):
            check_key(entry, STUDENT_PRESETS, "run.students", what="student preset")
            return cls(entry, dict(STUDENT_PRESETS[entry]))
        where = f"run.students entry {entry!r}"
        entry = dict(check_mapping(entry, where))
        hints = typing.get_type_hints(EvalConfig)
        known = ["label", *(f.name for f in dataclasses.fields(EvalConfig) if f.name not in _FIXED)]
        overrides = {}
        for key, value in entry.items():
            key = str(key).replace("-", "_")
            if key in _FIXED:
                raise DataError(f"{where}: {key} is the evaluator's, shared by every student (set evaluator.{key})")
            check_key(key, known, where)
            if key != "label":
                overrides[key] = coerce(hints[key], value, f"{where}.{key}")
        if not overrides:
            raise DataError(f"{where}: give at least one evaluator setting, e.g. model: resnet18")
        label = entry.get("label") or "-".join(
            [str(overrides.get("model", "evaluator")), *(f"{k}={v}" for k, v in sorted(overrides.items()) if k != "model")])
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*", label):
            raise DataError(f"{where}: label {label!r} must be a plain folder name (letters, digits, _ . = + -)")
        return cls(label, overrides)

    def resolve(self, evaluator: EvalConfig) -> EvalConfig:
        """The evaluator with this student's overrides; DataError (naming the student) if they do not fit."""
        values = dict(self.overrides)
        if values.get("model", evaluator.model) != evaluator.model:
            for name in _ARCHITECTURE:
                values.setdefault(name, None)
        try:
            return dataclasses.replace(evaluator, **values)
        except DataError as err:
            raise DataError(f"run.students {self.label!r} ({self.overrides}): {err}") from None


@dataclass(frozen=True)
class ResolvedStudent:
    """A column of the table: its label and the complete evaluator settings it trains with (not to be
    confused with `latentdd.nn.convnet.Student`, an architecture in the registry)."""

    label: str
    config: EvalConfig


def parse_students(entries: list) -> list[StudentSpec]:
    """Every entry parsed; DataError for a bad one or a repeated label."""
    if not isinstance(entries, list):
        raise DataError(f"run.students must be a list of presets ({', '.join(STUDENT_PRESETS)}) or mappings; "
                        f"got {entries!r}")
    specs = [StudentSpec.parse(entry) for entry in entries]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise DataError(f"run.students labels must be distinct; got {labels} (give each variant a `label`)")
    return specs


def resolve_students(entries: list, evaluator: EvalConfig) -> list[ResolvedStudent]:
    """The students of `run.students` as evaluator settings, all checked (call before any work)."""
    return [ResolvedStudent(spec.label, spec.resolve(evaluator)) for spec in parse_students(entries)]


@dataclass(frozen=True)
class Cell:
    """A set's row on one student."""

    student: str
    row: Row

    def to_json(self) -> dict:
        """As cross_arch.json's `cells` hold it: the row's measurement, its student and subset_of."""
        return self.row.measured() | {"student": self.student, "subset_of": self.row.subset_of}


def evaluate_students(sets: list[EvaluatedSet], students: list[ResolvedStudent], evaluate: Evaluator,
                      reports: Path) -> list[Cell]:
    """A cell per (student, set): the run's evaluate-or-reuse with each student's settings and reports folder."""
    cells: list[Cell] = []
    for student in students:
        folder = reports if student.config == evaluate.settings else reports / f"student-{student.label}"
        for s in sets:
            cell = Cell(student.label, evaluate(s, student.config, folder))
            if cell not in cells:  # an unweighted set gives the same cell under both weight modes
                cells.append(cell)
    return cells


def cross_arch_table(cells: list[Cell], students: list[ResolvedStudent]) -> dict:
    """The table as JSON: the students, and a row per (set, IPC), random real's (over its subsets) last per IPC.

    A row's `cells[student]`: mean, std, n, report and `ior` (vs the mean of the random-real subsets of
    that IPC on that student); random real's: the mean and spread over subsets, `training_std` (the mean
    spread over trainings) and the subsets' reports.
    """
    rows = []
    for ipc in dict.fromkeys(c.row.ipc for c in cells):
        at = [c for c in cells if c.row.ipc == ipc]
        random = {s.label: [c.row for c in at if c.row.subset_of and c.student == s.label] for s in students}
        for name in dict.fromkeys(c.row.name for c in at if not c.row.subset_of):
            row = {"set": name, "ipc": ipc, "cells": {}}
            for c in (c for c in at if c.row.name == name and not c.row.subset_of):
                subsets = [[r.mean] for r in random[c.student]]
                row["cells"][c.student] = {"mean": c.row.mean, "std": c.row.std, "n": c.row.n,
                                           "report": c.row.report, "ior": relative_scores([c.row.mean], subsets).ior}
            rows.append(row)
        for base in dict.fromkeys(c.row.subset_of for c in at if c.row.subset_of):
            row = {"set": base, "ipc": ipc, "cells": {}, "subsets": True}
            for label, subsets in random.items():
                subsets = [r for r in subsets if r.subset_of == base]
                if not subsets:
                    continue
                means = [r.mean for r in subsets]
                row["cells"][label] = {"mean": float(np.mean(means)), "std": float(np.std(means)),
                                       "n": len(subsets), "training_std": float(np.mean([r.std for r in subsets])),
                                       "reports": [r.report for r in subsets]}
            rows.append(row)
    return {"students": [{"label": s.label, "settings": plain(s.config)} for s in students], "rows": rows,
            "cells": [c.to_json() for c in cells]}


def _student_text(student: ResolvedStudent, table: dict) -> str:
    """"convnet-bn: convnet width 128 depth 3 norm batchnorm, 300 epochs, 1 training per set; 41 s per
    training" from a report of that student (its record has the resolved architecture)."""
    reports = [cell["report"] for row in table["rows"] if not row.get("subsets")
               for label, cell in row["cells"].items() if label == student.label]
    reports += [p for row in table["rows"] if row.get("subsets") for p in row["cells"][student.label]["reports"]]
    loaded = [json.loads(Path(p).read_text()) for p in reports]
    record = loaded[0]["record"]["evaluator"] if loaded else {}
    arch = " ".join(f"{k} {record[k]}" for k in ("width", "depth", "norm") if record.get(k) is not None)
    cfg = student.config
    seconds = [r["wall_seconds"] / len(r["accuracies"]) for r in loaded if r.get("wall_seconds")]
    cost = f"; {np.mean(seconds):.3g} s per training" if seconds else ""
    folder = Path(reports[0]).parent.name if reports else "-"
    folder = folder if folder == "reports" else f"reports/{folder}"
    return (f"- **{student.label}**: {cfg.model} {arch}, {cfg.epochs or 'by-IPC'} epochs, {cfg.num_eval} "
            f"training(s) per set{cost}; reports in {folder}/")


def cross_arch_markdown(table: dict, students: list[ResolvedStudent], dataset: str, evaluator: EvalConfig,
                        eval_split: str) -> str:
    labels = [s.label for s in students]
    lines = [f"# latentdd cross-architecture table: {dataset}", "",
             f"The run's sets (distilled with their own networks in the loop; see results.md) trained on each "
             f"student under protocol {evaluator.protocol} ({'DSA' if evaluator.dsa else 'no DSA'}), accuracy on "
             f"the {eval_split} split, %: mean ± std over trainings (n). IOR: the set's mean minus the mean of the "
             "random-real subsets of its IPC trained on the SAME student, points. Each cell's full protocol record "
             "is its report (cross_arch.json names them); random real's row: the mean and spread over its subsets.",
             "", "Students:", *(_student_text(s, table) for s in students), "",
             "| set | IPC | " + " | ".join(f"{label} | IOR" for label in labels) + " | mean IOR |",
             "|---|---|" + "---|---|" * len(labels) + "---|"]
    for row in table["rows"]:
        parts, iors = [], []
        for label in labels:
            cell = row["cells"].get(label)
            if cell is None:
                parts += ["", ""]
            elif row.get("subsets"):
                parts += [f"{cell['mean']:.2f} ± {cell['std']:.2f} over {subsets_text(cell['n'])}", ""]
            else:
                parts += [f"{cell['mean']:.2f} ± {cell['std']:.2f} (n={cell['n']})",
                          "" if cell["ior"] is None else f"{cell['ior']:+.2f}"]
                if cell["ior"] is not None:
                    iors.append(cell["ior"])
        mean_ior = f"{np.mean(iors):+.2f}" if iors and len(iors) == len(labels) else ""
        lines.append(f"| {row['set']} | {row['ipc']} | " + " | ".join(parts) + f" | {mean_ior} |")
    return "\n".join(lines) + "\n"


def write_cross_arch(sets: list[EvaluatedSet], students: list[ResolvedStudent], evaluate: Evaluator, *, out: Path,
                     dataset: str, eval_split: str) -> dict:
    """Evaluate every set under every student (or reuse the reports) and write cross_arch.md / .json."""
    cells = evaluate_students(sets, students, evaluate, out / "reports")
    table = cross_arch_table(cells, students)
    atomic_write_json(out / "cross_arch.json", table)
    atomic_write_text(out / "cross_arch.md", cross_arch_markdown(table, students, dataset, evaluate.settings,
                                                                 eval_split))
    return table
