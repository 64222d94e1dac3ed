"""Regenerate every results table in README.md and docs/*.md from the committed records, and docs/cli.md's body.

A table lives between two markers in a Markdown file:

    <!-- table:NAME:start -->
    ... generated, never edited by hand ...
    <!-- table:NAME:end -->

docs/cli.md's reference between `<!-- cli:start -->` and `<!-- cli:end -->`, docs/config.md's between
`<!-- config:start -->` and `<!-- config:end -->`. Each table NAME is a function of TABLES below that reads run
folders under results/ (their `results.json` rows, the protocol record of every row's report under `reports/`,
`distill/*.json`, `cross_arch.json`, the calibration's `results.json`); the CLI reference is
`latentdd.cli.make_parser()`'s help, the config reference the config dataclasses' fields. No number in a table is
typed here: every one is read from a record (published figures from `latentdd.published`).

    python scripts/tables.py           # rewrite the stale regions in place
    python scripts/tables.py --check   # exit 1 and name the stale files (what tests/test_tables.py runs)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from latentdd.evaluate.scores import hlr, ior, lrs  # noqa: E402
from latentdd.published import PROTOCOL as PUBLISHED_PROTOCOLS  # noqa: E402
from latentdd.published import published  # noqa: E402

# The files whose marked regions this script owns (relative to the repository root).
DOC_FILES = ("README.md", "docs/*.md")
TABLE_RE = re.compile(r"(<!-- table:(?P<name>[a-z0-9_]+):start -->\n)(?P<body>.*?)(<!-- table:(?P=name):end -->)",
                      re.S)
BLOCK_RE = {name: re.compile(rf"(<!-- {name}:start -->\n)(?P<body>.*?)(<!-- {name}:end -->)", re.S)
            for name in ("cli", "config")}

MATCHING = "results/matching_fashion_mnist"  # the Fashion-MNIST campaign: every method, IPC 1 / 10 / 50
# A folder of that campaign without random-real rows of its own is compared with these subsets (test split, the
# same protocol). Its rows say so in the table's baseline column.
FALLBACK_BASELINE = f"{MATCHING}/matching_random_real"
# Part folders (one training seed, or one random-real subset) are gathered by another folder of the campaign,
# whose rows hold the same trainings: only the gathered rows are tabulated.
PART = re.compile(r"_(s|rr)\d+$")
# A bare method name takes, at each IPC, its `default` preset (latentdd/presets.yaml: the settings chosen on the
# val split). These are the records of those settings' test rows.
RUN_DEFAULT = {
    1: (f"{MATCHING}/matching_ipc1_decoded_tiles", "dm_f2_decoded_it250"),
    10: (f"{MATCHING}/matching_dm_fast_ipc10", "dm"),
    50: (f"{MATCHING}/ipc50_dm_long", "dm_b128_it1000"),
}
HEADLINE_MIN_N = 3  # the headline's "highest measured" row: only sets trained at least this many times
MATCHING_METHODS = ("dm", "dc", "dsa", "idm", "bacon")
CORESET_METHODS = ("kmeans", "kmeans-online", "random", "herding", "kcenter", "forgetting")


# ---------------------------------------------------------------------------------------------- records


@dataclass
class Entry:
    """One row of a run folder's results.json, with its report's protocol record."""

    folder: Path  # relative to ROOT
    row: dict
    report: dict | None = None
    distill: dict | None = None

    @property
    def label(self) -> str:
        return self.row["method"]

    @property
    def ipc(self) -> int:
        return self.row["ipc"]

    @property
    def record(self) -> dict:
        return (self.report or {}).get("record", {})

    @property
    def evaluator(self) -> dict:
        return self.record.get("evaluator", {})

    @property
    def method(self) -> dict:
        m = self.record.get("method")
        return m if isinstance(m, dict) else {"name": m}

    @property
    def split(self) -> str:
        data = self.record.get("dataset", {})
        return "val" if data.get("evaluated_on", "").startswith("val") else "test"

    @property
    def epochs(self) -> int | None:
        return self.evaluator.get("epochs")

    @property
    def space(self) -> str:
        vae = self.record.get("vae") or {}
        name = vae.get("name") or ""
        if name == "pixel":
            return "pixel"
        if name.startswith("fit:"):
            return "latent " + "x".join(map(str, vae.get("latent_shape", [])))
        if name.startswith("taesd:"):  # named by its weights' folder (TAEF2, TAESD, ...)
            return Path(name[len("taesd:"):]).name.upper() + " " + "x".join(map(str, vae.get("latent_shape", [])))
        return "real pixels" if not name else name


@dataclass
class Run:
    """A run folder: its sets, and its random-real subsets and their summary, by IPC."""

    folder: Path
    sets: list[Entry] = field(default_factory=list)
    subsets: dict[int, list[Entry]] = field(default_factory=dict)
    summary: dict[int, dict] = field(default_factory=dict)  # the "random-real ..., K subsets" row

    def baseline(self, ipc: int) -> Baseline | None:
        """The random-real subsets at `ipc`, or None."""
        subs = self.subsets.get(ipc)
        if not subs:
            return None
        means = [s.row["mean"] for s in subs]
        mean = sum(means) / len(means)
        if len(subs) == 1:  # one subset, trained n times (older runs): the spread is over trainings
            return Baseline(mean, subs[0].row["std"], 1, means, subs[0].row["n"])
        row = self.summary.get(ipc)
        std = row["std"] if row else (sum((m - mean) ** 2 for m in means) / len(means)) ** 0.5
        return Baseline(mean, std, len(means), means, 1)


@dataclass
class Baseline:
    mean: float
    std: float  # population std over the subsets (over one subset's trainings when k == 1)
    k: int  # subsets
    means: list[float]  # each subset's mean
    n: int  # trainings of each subset

    def cell(self) -> str:
        if self.k == 1:
            return f"{self.mean:.2f} ± {self.std:.2f} (1 subset, n={self.n})"
        return f"{self.mean:.2f} ± {self.std:.2f} ({self.k} subsets)"


def _json(path: Path):
    return json.loads(path.read_text())


def _local(folder: Path, path: str | None, kind: str) -> Path | None:
    """A record path as written by the run (e.g. runs/NAME/reports/x.json) inside the committed folder."""
    if not path:
        return None
    i = path.find(f"{kind}/")
    local = ROOT / folder / (path[i:] if i >= 0 else Path(path).name)
    return local if local.is_file() else None


@functools.lru_cache(maxsize=None)
def load_run(folder: str) -> Run:
    """The run folder `folder` (relative to the repository root)."""
    rel = Path(folder)
    run = Run(rel)
    for row in _json(ROOT / rel / "results.json"):
        report_path = _local(rel, row.get("report"), "reports")
        report = _json(report_path) if report_path else None
        distill_path = (ROOT / rel / "distill" / report_path.name.replace("_val.json", ".json")
                        if report_path else None)
        entry = Entry(rel, row, report, _json(distill_path) if distill_path and distill_path.is_file() else None)
        if row.get("subset_of"):
            run.subsets.setdefault(row["ipc"], []).append(entry)
        elif row.get("subsets"):
            run.summary[row["ipc"]] = row
        elif row["method"].startswith("random-real"):  # a single subset with no summary (older runs)
            run.subsets.setdefault(row["ipc"], []).append(entry)
        else:
            run.sets.append(entry)
    return run


def run_folders(group: str) -> list[str]:
    """Every run folder (holding results.json) under `group`, parts excluded, sorted."""
    return sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / group).glob("**/results.json")
                  if not PART.search(p.parent.name))


def baseline_for(entry: Entry, fallback: str | None = None) -> tuple[Run, Baseline] | None:
    """The random-real subsets an entry is compared with: its own run's, else `fallback`'s (a run folder of the
    same split and protocol; for the campaign's test rows at 1000 epochs, FALLBACK_BASELINE)."""
    own = load_run(str(entry.folder))
    if own.baseline(entry.ipc):
        return own, own.baseline(entry.ipc)
    if fallback is None and str(entry.folder).startswith(MATCHING) and entry.split == "test" and entry.epochs == 1000:
        fallback = FALLBACK_BASELINE
    if fallback is not None and load_run(fallback).baseline(entry.ipc):
        return load_run(fallback), load_run(fallback).baseline(entry.ipc)
    return None


def entry_ior(entry: Entry, fallback: str | None = None) -> float | None:
    """Points over random real (latentdd.evaluate.scores.ior over the subsets' means)."""
    base = baseline_for(entry, fallback)
    if base is None:
        return None
    return ior([entry.row["mean"]], [[m] for m in base[1].means])


# ---------------------------------------------------------------------------------------------- wording

DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "imagefolder": "an image folder"}
NAMES = {"dm": "DM", "dc": "DC", "dsa": "DSA", "idm": "IDM", "bacon": "BACON", "kmeans": "kmeans",
         "kmeans-online": "kmeans-online (D4M)", "random": "random latents", "herding": "herding",
         "kcenter": "k-center", "forgetting": "forgetting", "full": "whole train split"}


def describe(entry: Entry) -> str:
    """The set in words, from its protocol record (method and evaluator)."""
    m, ev = entry.method, entry.evaluator
    name = m.get("name")
    if name == "random" and entry.label.startswith("random-real"):
        return "random real images"
    words = [NAMES.get(name, str(name))]
    if name == "bacon":
        words[0] += ", reference loss" if m.get("loss") == "bacon-reference" else ", paper loss"
    if name == "kmeans" and m.get("medoid"):
        words[0] += " medoids"
    if name in MATCHING_METHODS:
        if m.get("networks") == "bank":
            words.append("network bank")
        if m.get("embedding") == "latent":
            words.append("latent embedding")
        if m.get("init"):
            words.append({"kmeans": "k-means init", "real": "real init"}.get(m["init"], f"{m['init']} init"))
        if m.get("batch_real"):
            words.append(f"{m['batch_real']} real a class")
        if name in ("dc", "dsa") and m.get("outer_loop"):
            words.append(f"{m['outer_loop']} outer round{'s' if m['outer_loop'] > 1 else ''}")
        if m.get("lr") is not None:
            words.append(f"lr {m['lr']:g}")
        if (m.get("factor") or 1) > 1:
            tiles = {"decoded": "whole-latent tiles", "latent": "quarter-latent tiles"}.get(m.get("tiles", "latent"))
            words.append(f"factorization {m['factor']}" + (f", {tiles}" if entry.space.startswith("latent") else ""))
        if m.get("compile") in ("auto", "on") and m.get("real_precision") == "bfloat16":
            words.append("fast forward")
        if m.get("iterations"):
            words.append(f"{m['iterations']} it")
        if m.get("weights") == "voronoi":
            words.append("Voronoi-mass weights in the loss and the evaluator")
            return ", ".join(words)
    if name == "forgetting":
        words.append(f"counts from a {m.get('embedding', 'latent')} ConvNet, {m.get('epochs')} epochs")
    if ev.get("sample_weights"):
        words.append("+ Voronoi-mass weights" if name == "kmeans" else "+ weights")
    return ", ".join(words)


def evaluator_words(ev: dict) -> str:
    """'ConvNet-3 (width 128, instancenorm), 1000 epochs, DSA augmentation, hard labels'."""
    arch = ev.get("architecture", "?")
    arch = {"convnet": f"ConvNet-{ev.get('depth')}", "resnet18": "ResNet-18"}.get(arch, arch)
    if "width" not in ev:
        return f"{arch}, {ev.get('epochs')} epochs, {_aug_labels(ev)}"
    return f"{arch} (width {ev.get('width')}, {ev.get('norm')}), {ev.get('epochs')} epochs, {_aug_labels(ev)}"


def _aug_labels(ev: dict) -> str:
    aug = ev.get("augmentation")
    aug = "DSA augmentation" if aug and "color_crop" in aug else "no augmentation" if aug in (None, "none") else aug
    labels = "hard labels" if ev.get("labels") == "hard" else "the teacher's soft labels"
    return f"{aug}, {labels}"


def protocol_name(ev: dict) -> str:
    if ev.get("protocol"):
        return ev["protocol"]
    aug = ev.get("augmentation") or "none"
    return "dsa" if "color_crop" in aug else "dc" if aug == "none" else "custom"


def acc(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f} (n={n})"


def signed(x: float | None) -> str:
    return "" if x is None else f"{round(x, 2) + 0.0:+.2f}"


def base_cell(entry: Entry, fallback: str | None = None) -> str:
    base = baseline_for(entry, fallback)
    if base is None:
        return ""
    run, b = base
    where = "" if run.folder == entry.folder else f" (`{run.folder.name}`)"
    return b.cell() + where


def seconds(entry: Entry) -> str:
    """Distillation seconds of the set: the loop, + setup, + the network bank's one-off training."""
    extras = (entry.distill or {}).get("extras") or {}
    if "seconds" not in extras:
        return ""
    parts = [f"{extras['seconds']:.0f}"]
    if extras.get("setup_seconds", 0) >= 0.5:
        parts.append(f"{extras['setup_seconds']:.0f} setup")
    if extras.get("bank_train_seconds"):
        parts.append(f"{extras['bank_train_seconds']:.0f} bank")
    return " + ".join(parts)


def caption_common(entries: Iterable[Entry], with_protocol: bool = True) -> str:
    """Dataset, split and evaluator shared by `entries` (each differing field is named as a column instead)."""
    entries = list(entries)
    data = {e.record.get("dataset", {}).get("name") for e in entries}
    splits = {e.record.get("dataset", {}).get("evaluated_on") or e.record.get("dataset", {}).get("test_split")
              for e in entries}
    evs = {evaluator_words(e.evaluator) for e in entries}
    protocols = {protocol_name(e.evaluator) for e in entries}
    data = [DATASETS.get(d, str(d)) for d in sorted(map(str, data))]
    text = f"{', '.join(data)}, scored on the {', '.join(sorted(map(str, splits)))} split"
    if with_protocol and len(evs) == 1:
        text += f"; protocol `{protocols.pop()}`: {evs.pop()}"
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def folders_line(entries: Iterable[Entry]) -> str:
    folders = sorted({str(e.folder) for e in entries})
    return "Records: " + ", ".join(f"`{f}/`" for f in folders) + "."


# ---------------------------------------------------------------------------------------------- tables

SCORE_WORDS = ("n: trainings of the one set (population std over them: training noise, not the spread over sets). "
               "Random real: the mean ± std over independently drawn subsets of real images, one training each, "
               "under the same protocol. IOR: the set's mean minus random real's, in points "
               "(`latentdd.evaluate.scores.ior`).")


def campaign_entries(split: str = "test") -> list[Entry]:
    """Every set row of the Fashion-MNIST campaign on `split`, in folder order."""
    return [e for f in run_folders(MATCHING) for e in load_run(f).sets if e.report and e.split == split]


def t_headline() -> str:
    """Per IPC: `latentdd run`'s default set and the highest test row measured, against random real."""
    full = [e for e in campaign_entries() if e.epochs == 1000 and e.evaluator.get("labels") == "hard"
            and e.row["n"] >= HEADLINE_MIN_N and baseline_for(e)]
    rows, used = [], []
    for ipc, (folder, label) in RUN_DEFAULT.items():
        default = next(e for e in load_run(folder).sets if e.label == label)
        best = max((e for e in full if e.ipc == ipc), key=lambda e: e.row["mean"])
        for e, why in ((default, "`latentdd run` default (chosen on val)"), (best, "highest measured")):
            if why == "highest measured" and e is default:
                continue
            used.append(e)
            rows.append([str(ipc), describe(e), e.space, why, acc(e.row["mean"], e.row["std"], e.row["n"]),
                         base_cell(e), signed(entry_ior(e))])
    return (f"{caption_common(used)}. {SCORE_WORDS} Every setting was chosen on a val split held out of train; "
            f"\"highest measured\": the highest test row of {HEADLINE_MIN_N} or more trainings in "
            f"`{MATCHING}/`, in any space; it reports a row, it chose nothing.\n\n"
            + table(["IPC", "set", "space", "why listed", "accuracy %", "random real %", "IOR"], rows)
            + "\n\n" + folders_line(used))


def _campaign_table(methods: tuple[str, ...], with_published: bool, short: bool = False) -> str:
    entries = [e for e in campaign_entries() if e.method.get("name") in methods]
    entries.sort(key=lambda e: (e.ipc, e.space == "pixel", -e.row["mean"]))
    rows = []
    for e in entries:
        row = [str(e.ipc), describe(e), e.space, str(e.epochs), acc(e.row["mean"], e.row["std"], e.row["n"]),
               base_cell(e), signed(entry_ior(e)), seconds(e), f"`{e.folder.name}`"]
        if with_published:
            p = published(e.record["dataset"]["name"], e.method["name"], e.ipc)
            row.insert(7, f"{p.mean:g} ({p.protocol.split(':')[0].removesuffix(' protocol')})" if p else "")
        rows.append(row)
    header = ["IPC", "set", "space", "epochs", "accuracy %", "random real %", "IOR", "distill s", "record"]
    if with_published:
        header.insert(7, "published (pixel space)")
    ev = {protocol_name(e.evaluator) for e in entries}
    if short:
        return (f"{caption_common(entries, with_protocol=False)}, protocol `{'`, `'.join(sorted(ev))}` "
                "(ConvNet-3, DSA augmentation, hard labels) at the epochs given; columns as in "
                "[Results](results.md#every-matching-method).\n\n" + table(header, rows))
    return (f"{caption_common(entries)}; protocol `{'`, `'.join(sorted(ev))}` at the epochs given. {SCORE_WORDS} "
            "Published: the method's own paper, in pixel space, under its own protocol (`latentdd.published`: "
            f"{'; '.join(sorted(set(PUBLISHED_PROTOCOLS.values()) - {PUBLISHED_PROTOCOLS['full']}))}). "
            "A random-real cell naming a folder is that folder's subsets (same split and protocol). Distill s: the "
            "distillation loop's seconds on one CPU core, + its setup, + a network bank's one-off training, where "
            "the set's `distill.json` holds them. Each record folder under "
            f"`{MATCHING}/` holds the run's config, every report with its protocol record and the sets' "
            "`distill.json`.\n\n" + table(header, rows))


def t_matching() -> str:
    return _campaign_table(MATCHING_METHODS, with_published=True)


def t_coresets() -> str:
    return _campaign_table(CORESET_METHODS, with_published=True)


def t_val_searches() -> str:
    """Every set scored on the val split: the points settings were chosen from."""
    entries = campaign_entries("val")
    entries.sort(key=lambda e: (e.ipc, str(e.folder), natural(e.label)))
    rows = [[str(e.ipc), describe(e), e.space, str(e.epochs), f"{e.row['mean']:.2f}", base_cell(e),
             signed(entry_ior(e)), seconds(e), f"`{e.folder.name}`"] for e in entries]
    return (f"{caption_common(entries)}; one training a point (n=1). The val split is 10% of each class of the "
            "train split (seed 0), held out from distillation; the test split is not used. Random real: the same "
            "run's subsets on val, where it has any. Distill s as in the matching table (a curve's points are one "
            "optimisation: cumulative seconds).\n\n"
            + table(["IPC", "set", "space", "epochs", "val accuracy %", "random real %", "IOR", "distill s",
                     "record"], rows))


def natural(text: str) -> list:
    """Sort key that orders it100 before it1000 and it250."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def t_calibration() -> str:
    folder = Path("results/calibration_fashion_mnist")
    rows, records = [], []
    for r in _json(ROOT / folder / "results.json"):
        name = (f"full_data_{r['protocol'].split()[0]}ep.json" if r["method"] == "full"
                else f"random_{r['protocol']}_ipc{r['ipc']}.json")
        records.append(_json(ROOT / folder / "reports" / name)["record"])
        ev = records[-1]["evaluator"]
        pub = r.get("published")
        same_protocol = r["method"] == "full" or r["protocol"] == "dc"
        within = ""
        if pub and same_protocol and r["method"] != "full":
            within = "yes" if abs(r["mean"] - pub[0]) <= 2 * pub[1] else "no"
        pub_cell = f"{pub[0]:g} ± {pub[1]:g}" if pub else ""
        if pub and not same_protocol:
            pub_cell = f"none under this protocol (DC protocol: {pub_cell})"
        elif r["method"] == "full" and pub:
            pub_cell += " (a longer schedule)"
        set_name = "whole train split" if r["method"] == "full" else "random real"
        rows.append([set_name, evaluator_words(ev), "all" if r["method"] == "full" else str(r["ipc"]),
                     acc(r["mean"], r["std"], r["n"]), pub_cell, within])
    data = {(DATASETS.get(r["dataset"]["name"], r["dataset"]["name"]), r["dataset"]["test_split"]) for r in records}
    return (f"{', '.join(f'{d}, scored on the {split} split' for d, split in sorted(data))}; `latentdd calibrate`. "
            "Run i of a random-real row draws its own subset "
            "(seed i) and trains its own network (seed i), as the published std spans selections. Published: "
            "`latentdd.published` (DC's table). Within: |ours − published| ≤ 2 published std.\n\n"
            + table(["set", "evaluator", "IPC", "latentdd %", "published %", "within 2 std"], rows)
            + f"\n\nRecords: `{folder}/`.")


def t_soft_labels() -> str:
    """The same sets under `dsa` (hard labels) and `soft` (the teacher's labels), with IOR, HLR and LRS."""
    group = "results/label_table_fashion_mnist"
    hard = [load_run(f"{group}/{n}") for n in ("dsa", "dsa_rr10", "dsa_sets10")]
    soft = [load_run(f"{group}/{n}") for n in ("soft_ipc1", "soft_rr10", "soft_sets10")]
    full = _json(ROOT / "results/calibration_fashion_mnist/reports/full_data_10ep.json")["mean"]

    def gather(runs):
        sets = {(e.label, e.ipc): e for r in runs for e in r.sets}
        subs = {}
        for r in runs:
            for ipc, es in r.subsets.items():
                subs.setdefault(ipc, []).extend(es)
        return sets, subs

    hsets, hsubs = gather(hard)
    ssets, ssubs = gather(soft)
    teacher = next(iter(ssets.values())).evaluator.get("teacher") or {}
    rows = []
    for ipc in sorted({ipc for _, ipc in hsets}):
        hr = [[s.row["mean"]] for s in hsubs[ipc]]
        sr = [[s.row["mean"]] for s in ssubs[ipc]]
        hmean = sum(m[0] for m in hr) / len(hr)
        smean = sum(m[0] for m in sr) / len(sr)
        hstd = (sum((m[0] - hmean) ** 2 for m in hr) / len(hr)) ** 0.5
        sstd = (sum((m[0] - smean) ** 2 for m in sr) / len(sr)) ** 0.5
        h0 = hlr([full], [hmean])
        rows.append([f"random real, {len(hr)} / {len(sr)} subsets", str(ipc), f"{hmean:.2f} ± {hstd:.2f}", "",
                     f"{h0:.2f}", f"{lrs(0.0, h0):.2f}", f"{smean:.2f} ± {sstd:.2f}", "", f"{lrs(0.0, h0):.2f}"])
        for (label, i), h in sorted(hsets.items(), key=lambda kv: (kv[0][1], -kv[1].row["mean"])):
            if i != ipc:
                continue
            s = ssets.get((label, ipc))
            hi = ior([h.row["mean"]], hr)
            hl = hlr([full], [h.row["mean"]])
            si = ior([s.row["mean"]], sr) if s else None
            rows.append([describe(h), str(ipc), acc(h.row["mean"], h.row["std"], h.row["n"]), signed(hi), f"{hl:.2f}",
                         f"{lrs(hi, hl):.2f}", acc(s.row["mean"], s.row["std"], s.row["n"]) if s else "",
                         signed(si), f"{lrs(si, hl):.2f}" if s else ""])
    any_h = next(iter(hsets.values()))
    any_s = next(iter(ssets.values()))
    return (f"{caption_common([any_h], with_protocol=False)}. `dsa`: {evaluator_words(any_h.evaluator)}. `soft`: "
            f"{evaluator_words(any_s.evaluator)}; teacher `{teacher.get('name')}` ({teacher.get('test_accuracy')}% "
            f"on test). Sets in the fitted VAE's latent space, random real in pixels. IOR: points over random real "
            f"under the same protocol; HLR: full data's hard-label accuracy ({full:.2f}, "
            "`results/calibration_fashion_mnist/`) minus the set's; LRS (%): DD-Ranking's label-robust score from "
            "that protocol's IOR and the hard HLR (`latentdd.evaluate.scores`).\n\n"
            + table(["set", "IPC", "dsa %", "IOR", "HLR", "LRS", "soft %", "IOR", "LRS"], rows)
            + f"\n\nRecords: `{group}/` (`dsa*`, `soft*`).")


def t_cross_arch() -> str:
    group = "results/cross_arch_fashion_mnist"
    students, cells, random = {}, {}, {}
    sets_desc, heads = {}, {}
    for p in sorted((ROOT / group).glob("*/cross_arch.json")):
        data = _json(p)
        rel = p.parent.relative_to(ROOT)
        for s in data["students"]:
            students[s["label"]] = s["settings"]
        for c in data["cells"]:
            rep = _local(rel, c.get("report"), "reports")
            if rep and c["student"] not in heads:
                heads[c["student"]] = evaluator_words(_json(rep)["record"]["evaluator"]).split(", DSA")[0]
        run = load_run(str(rel))
        for e in run.sets:
            sets_desc[e.label] = describe(e)
        for row in data["rows"]:
            for student, c in row["cells"].items():
                if row.get("subsets"):
                    random[student] = c
                else:
                    cells[(row["set"], student)] = c
    order = sorted(students, key=lambda s: (students[s]["model"] != "convnet", s))

    rows = []
    for label in sorted({k[0] for k in cells}, key=lambda x: -cells.get((x, order[0]), {"mean": 0})["mean"]):
        r = [sets_desc.get(label, label)]
        for s in order:
            c = cells.get((label, s))
            base = random.get(s)
            r.append("" if c is None else f"{c['mean']:.2f} ({signed(c['mean'] - base['mean'])})" if base
                     else f"{c['mean']:.2f}")
        rows.append(r)
    rows.append([f"random real, {random[order[0]]['n']} subsets"]
                + [f"{random[s]['mean']:.2f} ± {random[s]['std']:.2f}" if s in random else "" for s in order])
    sets = [e for f in run_folders(group) for e in load_run(f).sets if e.report]
    any_set, ipcs = sets[0], sorted({e.ipc for e in sets})
    return (f"{caption_common([any_set], with_protocol=False)}, IPC {', '.join(map(str, ipcs))}; protocol "
            f"`{protocol_name(any_set.evaluator)}` ({_aug_labels(any_set.evaluator)}) on each student, one "
            "training a cell; sets distilled with ConvNet-3 (or none, for kmeans) in the fitted VAE's latent space. "
            "A cell: accuracy % (IOR against random real on the same student).\n\n"
            + table(["set"] + [heads[s] for s in order], rows) + f"\n\nRecords: `{group}/`.")


def _run_table(folders: list[str], note: str = "") -> str:
    """Whole run folders: every set and its random real; a folder without random real is compared with the first
    folder's (the same split and protocol)."""
    run = load_run(folders[0])
    entries = [e for f in folders for e in load_run(f).sets if e.report]
    has_cc = any("class_consistency" in e.row for e in entries)
    rows = []
    for e in entries:
        r = [str(e.ipc), describe(e), e.space, acc(e.row["mean"], e.row["std"], e.row["n"]), base_cell(e, folders[0]),
             signed(entry_ior(e, folders[0]))]
        if has_cc:
            r.append(f"{e.row['class_consistency']:.1f}" if e.row.get("class_consistency") is not None else "")
        rows.append((e.ipc, -e.row["mean"], r))
    for ipc, subs in run.subsets.items():
        if has_cc and len(subs) == 1 and subs[0].row.get("class_consistency") is not None:  # its consistency
            s = subs[0]
            rows.append((ipc, 0.0, [str(ipc), "random real images", "pixels", acc(s.row["mean"], s.row["std"],
                                    s.row["n"]), "", "", f"{s.row['class_consistency']:.1f}"]))
    rows = [r for *_, r in sorted(rows, key=lambda t: t[:2])]
    header = ["IPC", "set", "space", "accuracy %", "random real %", "IOR"] + (["class consistency %"] if has_cc else [])
    all_entries = entries + [s for subs in run.subsets.values() for s in subs]
    return (f"{caption_common(all_entries)}. {note}\n\n" + table(header, rows) + "\n\n" + folders_line(entries))


def t_decoder() -> str:
    return _run_table(["results/diffusion_decoder_fashion_mnist"],
                      "The sets are `compare`'s IPC-10 latents rendered by the diffusion decoder; the same latents "
                      "decoded by the VAE are in the `compare` table. Class consistency: the share of a set's images "
                      "that a ConvNet trained on the real train split calls their class.")


def t_compare() -> str:
    return _run_table(["results/compare_fashion_mnist"],
                      "`latentdd compare`: every method on the same cached latents (an earlier fitted VAE), VAE "
                      "decoding. Class consistency: the share of a set's images that a ConvNet trained on the real "
                      "train split calls their class.")


def t_taef2() -> str:
    return _run_table(["results/taef2_fashion_mnist64/taef2_fmnist64", "results/taef2_fashion_mnist64/taef2_fmnist64_dm"],
                      "Fashion-MNIST as 64 px RGB image folders in TAEF2's 32x8x8 latent space, one training a set.")


def t_protocols() -> str:
    """The evaluation presets of latentdd.evaluate.protocols, each resolved by EvalConfig.preset."""
    from latentdd.evaluate.protocols import MINIMAX_EPOCHS_BEYOND, PROTOCOL_SOURCES, PROTOCOLS
    from latentdd.evaluate.trainer import EvalConfig

    rows = []
    for name in PROTOCOLS:
        c = EvalConfig.preset(name)
        labels = {"teacher_kl": f"a teacher's, on every augmented batch (T²·KL, T = {c.temperature:g})",
                  "static_kl": f"static: one per image, the set's or the teacher's, once (T²·KL, T = {c.temperature:g})"
                  }.get(c.loss, "hard")
        opt = f"SGD lr {c.lr:g}, momentum {c.momentum:g}" if c.optimizer == "sgd" else f"AdamW lr {c.lr:g}"
        opt += f", wd {c.weight_decay:g}, batch {c.batch_size}"
        schedule = {"step": f"x{c.gamma:g} from epoch E/2 + 1",
                    "multistep": f"x{c.gamma:g} at {', '.join(f'{m:.3g}' for m in c.milestones)} of E",
                    "cosine": "cosine"}[c.schedule]
        if c.epochs is not None:
            epochs = str(c.epochs)
        else:
            epochs = ("by IPC: " + ", ".join(f"{e} up to {i}" for i, e in sorted(c.epochs_by_ipc.items()))
                      + f", then {MINIMAX_EPOCHS_BEYOND}")
        aug = []
        if c.dsa:
            aug.append("DSA")
        if c.crop_scale:
            aug.append(f"RandomResizedCrop {c.crop_scale[0]:g}-{c.crop_scale[1]:g}")
        if c.hflip:
            aug.append("flip")
        if c.cutmix:
            aug.append(f"CutMix (p {c.cutmix:g})")
        rows.append([f"`{name}`", labels, opt, schedule, epochs, ", ".join(aug) or "none",
                     PROTOCOL_SOURCES.get(name, "")])
    return ("Each protocol is a complete recipe, `EvalConfig.preset(name)` (`latentdd/evaluate/protocols.py`); "
            "every field of it goes into each report's record (`record.evaluator.settings`), and flags or the "
            "`evaluator:` section override single fields.\n\n"
            + table(["protocol", "labels", "optimiser", "schedule", "epochs", "augmentation", "source"], rows))


def t_presets() -> str:
    """Every named preset shipped in latentdd/presets.yaml, by method and IPC."""
    from latentdd.presets import presets

    rows = [[f"`{method}`", f"`{name}`", str(ipc), ", ".join(f"{k}={v}" for k, v in params.items()), preset["about"]
             if ipc == min(preset["ipc"]) else ""]
            for method, named in presets().items() for name, preset in named.items()
            for ipc, params in preset["ipc"].items()]
    return ("An IPC takes the entry of the largest listed IPC not above it; every other method's `default` is its "
            "`reference`, the public code's settings (the distiller's own defaults, listed with each method below).\n\n"
            + table(["method", "preset", "IPC", "parameters (over the reference's)", "how they were chosen"], rows))


def _method_table(*methods: str) -> Callable[[], str]:
    return lambda: _campaign_table(methods, with_published=True, short=True)


def t_latent_table() -> str:
    return _run_table(["results/latent_table_fashion_mnist"],
                      "`latentdd run --config` of every latent distiller at IPC 1 and 10 on one cached latent space (an "
                      "earlier fitted VAE), VAE decoding, random real images in the same run.")


def t_bacon_search() -> str:
    return _run_table(["results/bacon_search_fashion_mnist"],
                      "BACON's iterations (one optimisation scored at each count), factorization, k-means init and "
                      "the paper loss, next to kmeans and random real, each scored by one training on the val split "
                      "(an earlier fitted VAE, latent embedding).")


def t_scale_proc1000() -> str:
    return _run_table(["results/scale_proc1000"],
                      "A generated 1000-class image folder (64 px RGB, `scripts/make_scale_fixture.py procedural`) in "
                      "TAEF2's latent space; its val images stand in for a test split; "
                      "a short protocol, one training a set.")


# Every table: NAME -> function returning its Markdown body.
TABLES: dict[str, Callable[[], str]] = {
    "headline": t_headline,
    "protocols": t_protocols,
    "presets": t_presets,
    "method_dm": _method_table("dm"),
    "method_dc_dsa": _method_table("dc", "dsa"),
    "method_idm": _method_table("idm"),
    "method_bacon": _method_table("bacon"),
    "method_kmeans": _method_table("kmeans", "kmeans-online"),
    "method_coresets": _method_table("random", "herding", "kcenter", "forgetting"),
    "matching": t_matching,
    "coresets": t_coresets,
    "val_searches": t_val_searches,
    "calibration": t_calibration,
    "soft_labels": t_soft_labels,
    "cross_arch": t_cross_arch,
    "latent_table": t_latent_table,
    "bacon_search": t_bacon_search,
    "compare": t_compare,
    "decoder": t_decoder,
    "taef2": t_taef2,
    "scale_proc1000": t_scale_proc1000,
}


# ---------------------------------------------------------------------------------------------- CLI reference


def cli_markdown() -> str:
    """Every subcommand's --help, from latentdd.cli.make_parser() (at a fixed width, so the text is stable)."""
    import argparse

    from latentdd.cli import make_parser

    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS="100", NO_COLOR="1")  # argparse wraps at $COLUMNS; no colour codes (Python 3.14)
    try:
        parser = make_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parsers = {"": parser, **sub.choices}
        out = []
        for name, p in parsers.items():
            if hasattr(p, "color"):
                p.color = False
            if name:
                out += [f"## `latentdd {name}`", ""]
            out += ["```text", p.format_help().rstrip(), "```", ""]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- config reference

def _field_notes(cls: type) -> dict[str, str]:
    """Each field's comment in the class source (the same line's, the lines just above and the continuation lines
    just below), else the paragraph of the class docstring that starts with `name:`."""
    import ast
    import inspect
    import textwrap

    lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    src = source.splitlines()
    tree = ast.parse(source).body[0]
    notes = {}
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts, i, above = [], node.lineno - 2, []
        while i >= 0 and src[i].strip().startswith("#"):
            above.insert(0, src[i].strip().lstrip("#").strip())
            i -= 1
        if above and i >= 0 and "  # " in src[i] and above[0][:1].islower():  # continues the field above's comment
            above = []
        last = src[node.end_lineno - 1]
        if "  # " in last:
            parts.append(last.split("  # ", 1)[1].strip())
        j = node.end_lineno
        while parts and j < len(src) and src[j].strip().startswith("#") and \
                (j > node.end_lineno or src[j].strip().lstrip("#").strip()[:1].islower()):
            parts.append(src[j].strip().lstrip("#").strip())
            j += 1
        notes[node.target.id] = " ".join(above + parts)
    doc = inspect.getdoc(cls) or ""
    for para in re.split(r"\n(?=[a-z_, ]+:\s)", doc):
        m = re.match(r"([a-z_, ]+):\s+(.*)", para, re.S)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            for k, name in enumerate(names):
                if name in notes and not notes[name]:
                    notes[name] = " ".join(m.group(2).split()) if k == 0 else f"see `{names[0]}`"
    return notes


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_markdown() -> str:
    """Every config section (`latentdd.configs.CONFIG_SECTIONS`): its dataclass's fields with type, default and
    meaning."""
    import dataclasses
    import inspect

    from latentdd.cli import SECTIONS
    from latentdd.config import type_text
    from latentdd.configs import CONFIG_SECTIONS, config_class

    out = []
    for section, where in CONFIG_SECTIONS.items():
        cls = config_class(section)
        module, name = where.split(":")
        top = section.split(".")[0]
        readers = [f"`{c}`" for c, secs in SECTIONS.items() if top in secs]
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
        notes = _field_notes(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        out += [f"### `{section}:`", "", f"`{module}.{name}`: {' '.join(doc.split())}", "",
                f"Read by {', '.join(readers)}." if readers else "", ""]
        rows = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            shown = "(required)" if default == "(required)" else json.dumps(default) if not isinstance(
                default, tuple) else json.dumps(list(default))
            rows.append([f"`{f.name}`", _cell(type_text(hints[f.name])), _cell(f"`{shown}`"), _cell(notes.get(f.name, ""))])
        out += [table(["key", "type", "default", "meaning"], rows), ""]
    return "\n".join(out)


# The generated blocks that are not tables: the CLI reference (docs/cli.md) and the config reference (docs/config.md).
BLOCKS: dict[str, Callable[[], str]] = {"cli": cli_markdown, "config": config_markdown}


# ---------------------------------------------------------------------------------------------- regions


class UnknownTable(KeyError):
    pass


def render(text: str, tables: dict[str, str] | None = None, blocks: dict[str, str] | None = None) -> str:
    """`text` with each marked region's body replaced by its generated content.

    `tables` maps a table NAME to its body and `blocks` maps `cli` / `config` to theirs; whatever is missing is
    generated on demand. An unknown table name raises UnknownTable.
    """
    tables = {} if tables is None else dict(tables)
    blocks = {} if blocks is None else dict(blocks)

    def table_body(m: re.Match) -> str:
        name = m.group("name")
        if name not in tables:
            if name not in TABLES:
                raise UnknownTable(f"no table named {name!r}; known: {', '.join(TABLES)}")
            tables[name] = TABLES[name]()
        return m.group(1) + tables[name].rstrip("\n") + "\n" + m.group(4)

    text = TABLE_RE.sub(table_body, text)
    for name, pattern in BLOCK_RE.items():
        def block_body(m: re.Match, name=name) -> str:
            if name not in blocks:
                blocks[name] = BLOCKS[name]()
            return m.group(1) + blocks[name].rstrip("\n") + "\n" + m.group(3)

        text = pattern.sub(block_body, text)
    return text


def doc_files(root: Path = ROOT) -> list[Path]:
    files = []
    for pattern in DOC_FILES:
        files += sorted(root.glob(pattern))
    return files


def stale(files: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, regenerated text) of each file whose marked regions differ from what the records give."""
    out = []
    for path in files:
        text = path.read_text()
        new = render(text)
        if new != text:
            out.append((path, new))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each stale file")
    p.add_argument("files", nargs="*", type=Path, help=f"Markdown files (default {', '.join(DOC_FILES)})")
    args = p.parse_args(argv)
    files = args.files or doc_files()
    changed = stale(files)
    if args.check:
        for path, _ in changed:
            print(f"stale: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                  "(run `python scripts/tables.py`)")
        return 1 if changed else 0
    for path, new in changed:
        path.write_text(new)
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
