"""The report store of `latentdd run` and `latentdd calibrate`: evaluation reports on disk, and the trainings in them.

A report is an `EvalReport` as JSON with `inputs` (what it depends on, as JSON) and `key` (a
`cachekey.content_key` of them), written with its content hash (`content_sha256`,
`latentdd.io.json_sha256` over the rest of it). A report is reused -- whole, or lending its
trainings seed by seed -- only when it matches its hash. One that does not (edited, e.g. its
accuracies, or damaged), or that has none (written by a latentdd before reports carried one), is not
used, with a warning naming it: its trainings run again. A training is cheaper to run again than a
wrong table is to notice, and a hash that could be dropped to be let through would protect nothing.

Each training is kept as it finishes (`KeptTrainings`, reports/partial/), so an interrupted evaluation
resumes at its next; `Trainings` indexes the finished trainings of a run's reports and of the
run.reports_from folders, by what a training depends on, so that an evaluation takes the ones it
needs. A run.reports_from folder from which nothing can be reused is warned about; `lent_from` says
which other run folders lent a report's trainings (the tables mark those rows).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from latentdd.cachekey import content_key
from latentdd.errors import DataError
from latentdd.io import atomic_write_json, json_sha256_problem, with_json_sha256

log = logging.getLogger(__name__)

REPORT_SHA256 = "content_sha256"  # a report's own content hash (see the module docstring)


def write_report(path: Path, report: dict) -> dict:
    """Write `report` (a whole one, or the trainings of one kept while it runs) with its content hash -> as written."""
    report = with_json_sha256(report, REPORT_SHA256)
    atomic_write_json(path, report)
    return report


def read_report(path: Path, *, warn: bool = True) -> dict:
    """The report at `path` when latentdd wrote it and it matches its content hash; else {} -- with a warning
    (unless not `warn`) when the file exists: it lends nothing, and an evaluation's own report is made again."""
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problem = f"cannot be read ({err})"
    else:
        problem = _report_problem(report)
        if problem is None:
            return report
    if warn:
        log.warning("report %s %s; not used: its trainings run again", path, problem)
    return {}


@dataclass(frozen=True)
class StoredReport:
    """Where an evaluation's report is kept, and what it is made from: `inputs` (as JSON), under their content key
    in `kind` (a stage of `cachekey.content_key`)."""

    path: Path
    kind: str
    inputs: dict

    @property
    def key(self) -> str:
        return content_key(self.kind, **self.inputs)

    def reusable(self) -> dict | None:
        """The report at `path` if it was made from these inputs and matches its content hash, else None."""
        report = read_report(self.path)
        return report if report.get("key") == self.key else None

    def write(self, report: dict) -> dict:
        """Write `report` (an `EvalReport.to_dict()`) with the inputs, their key and its content hash -> as written."""
        return write_report(self.path, report | {"inputs": self.inputs, "key": self.key})


def _report_problem(report) -> str | None:
    """What makes a report read back unusable, as the end of a sentence naming its file; None if nothing."""
    lists = [report.get(name) for name in ("seeds", "accuracies", "train_seconds")] if isinstance(report, dict) else []
    if not lists or not isinstance(report.get("inputs"), dict) or not all(isinstance(v, list) for v in lists) or \
            len({len(v) for v in lists}) != 1:
        return ("is not a report of latentdd's run or calibrate (it lacks its inputs, or a seed, accuracy and time "
                "per training)")
    return json_sha256_problem(report, REPORT_SHA256)


def lending_folders(reports_from: list[str]) -> list[Path]:
    """The reports/ folders of run.reports_from's run folders; DataError for one that is not there (checked before
    any work)."""
    folders = [Path(folder).expanduser() / "reports" for folder in reports_from]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"run.reports_from: {folder} is not a folder; give run folders (with a reports/ "
                            "sub-folder) that `latentdd run` or `compare` wrote")
    return folders


class Trainings:
    """The finished trainings in report folders, by what one depends on: the set's images, the data and the
    evaluator's settings but for num_eval and seed (training i of an evaluation runs with seed + i, alone).

    own: this run's reports/ (a report there that cannot be used is warned about when its evaluation reads it);
    lent: run.reports_from's reports/ folders, each report that cannot be used warned about, and a folder from
    which nothing can be used too."""

    def __init__(self, own: Path | None = None, lent: list[Path] = ()) -> None:
        self.own, self.lent = own, list(lent)
        self.found: dict[str, dict[int, dict]] = {}
        for folder in [own, *lent] if own is not None else lent:
            # Whole reports first, then the trainings kept one by one while an evaluation ran (KeptTrainings).
            paths = sorted(folder.glob("*.json")) + sorted(folder.glob("partial/*.json"))
            usable = sum(self.add(path, read_report(path, warn=folder != own)) for path in paths)
            if folder != own and not usable:
                log.warning("run.reports_from: %s lends nothing: %s", folder.parent,
                            f"none of the {len(paths)} JSON files in its reports/ holds a training that can be reused"
                            if paths else "its reports/ holds no report")

    @staticmethod
    def key(inputs: dict) -> str:
        evaluator = {k: v for k, v in inputs["evaluator"].items() if k not in ("num_eval", "seed")}
        return content_key("evaluate-training", **(inputs | {"evaluator": evaluator}))

    def add(self, path: Path, report: dict) -> bool:
        """Index a report's trainings (one of `evaluate`'s, that ran as its settings asked) -> whether it has any."""
        full = report.get("record", {})
        record = full.get("evaluator", {})
        if "inputs" not in report or not report.get("seeds") or record.get("compile_fallback"):
            return False
        found = self.found.setdefault(self.key(report["inputs"]), {})
        reused = {r["seed"]: r for r in full.get("reused_trainings", [])}
        for seed, accuracy, seconds in zip(report["seeds"], report["accuracies"], report["train_seconds"]):
            # A reused training keeps the report that trained it.
            source = reused.get(seed, {"report": str(path), "compiled": record.get("compiled")})
            found.setdefault(seed, {"accuracy": accuracy, "seconds": seconds} | source)
        return True

    def get(self, inputs: dict, seeds: list[int]) -> dict[int, dict]:
        found = self.found.get(self.key(inputs), {})
        return {seed: found[seed] for seed in seeds if seed in found}


class KeptTrainings:
    """The trainings of one evaluation, each kept on disk as it finishes, in the shape of a report (the Trainings
    index reads it), so that an interrupted evaluation resumes at its next. `path`: where they are kept, by default
    reports/partial/<the report's name> (a folder of latentdd's); a caller that keeps them beside a file of the
    user's checks first that nothing of the user's is there (`evaluate --json R` keeps them in R.trainings.json)."""

    def __init__(self, report: StoredReport, path: Path | None = None) -> None:
        self.report = report
        self.path = self.partial(report) / report.path.name if path is None else path
        kept = read_report(self.path)
        if kept.get("inputs") != report.inputs or kept.get("record", {}).get("evaluator", {}).get("compile_fallback"):
            kept = {"inputs": report.inputs, "seeds": [], "accuracies": [], "train_seconds": [], "record": {}}
        self.kept = kept

    @staticmethod
    def partial(report: StoredReport) -> Path:
        return report.path.parent / "partial"

    @classmethod
    def of_seed(cls, report: StoredReport, seed: int) -> KeptTrainings:
        """Where one training of the evaluation is kept when run on its own (one process of several, run.parallel
        trainings): reports/partial/<the report's name>.seed<seed>.json; the evaluation's `finish` takes it as its
        own."""
        return cls(report, cls.seed_path(report, seed))

    @classmethod
    def seed_path(cls, report: StoredReport, seed: int) -> Path:
        return cls.partial(report) / f"{report.path.stem}.seed{seed}.json"

    def finished(self, seeds: list[int]) -> dict[int, dict]:
        """The trainings of these seeds an interrupted invocation of this evaluation kept (`evaluate_synthetic`'s
        done)."""
        index = Trainings()
        index.add(self.path, self.kept)
        return index.get(self.report.inputs, seeds)

    def add(self, seed: int, accuracy: float, seconds: float, compile_record: dict) -> None:
        """Keep a finished training (`evaluate_synthetic`'s on_training)."""
        for name, value in (("seeds", seed), ("accuracies", accuracy), ("train_seconds", seconds)):
            self.kept[name].append(value)
        self.kept["record"] = {"evaluator": compile_record}
        write_report(self.path, self.kept)

    def finish(self, report: dict, *, write: bool = True) -> dict:
        """Write the evaluation's whole report and drop the kept trainings -> the report as written. Trainings kept by
        an interrupted invocation of this evaluation, or by processes that ran its seeds one by one (`of_seed`), are
        its own, not lent: the report reads as an uninterrupted one's. `write` False: only the report as it would be
        written (a process of a group whose first one writes it)."""
        mine = {str(self.path)} | {str(self.seed_path(self.report, seed)) for seed in report["seeds"]}
        reused = report["record"].get("reused_trainings", [])
        reused[:] = [r for r in reused if r["report"] not in mine]
        if not reused:
            report["record"].pop("reused_trainings", None)
        if not write:
            return with_json_sha256(report | {"inputs": self.report.inputs, "key": self.report.key}, REPORT_SHA256)
        written = self.report.write(report)
        for path in map(Path, mine):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder too, unless another training is kept there
            self.path.parent.rmdir()
        return written


def lent_from(report: dict, path: Path) -> dict[str, int]:
    """The other run folders whose trainings the report at `path` holds -> how many of them each lent."""
    own = _run_folder(path).resolve()
    sources = Counter(str(_run_folder(Path(r["report"]))) for r in report["record"].get("reused_trainings", []))
    return {folder: n for folder, n in sources.items() if Path(folder).resolve() != own}


def _run_folder(report: Path) -> Path:
    """The run folder a report belongs to: the folder that holds the report's `reports/`."""
    return next((p.parent for p in Path(report).parents if p.name == "reports"), Path(report).parent)
