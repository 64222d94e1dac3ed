"""Every recipe validates: the ones a user starts from (configs/*.yaml) and every experiment's input config kept
beside its results (results/**/recipe.yaml, recipe_<name>.yaml, and an experiment's recipes/*.yaml).

Each is checked against the sections of the command it is for, and its typed settings are built the way that
command builds them -- data, latent space, decoder, evaluator, teacher, run (method parameters and students
included), calibrate, distill -- without loading data or running anything, so a key typo, a value of the wrong
type or a setting the code no longer has fails here rather than minutes into a run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from latentdd.cli import (
    COMPARE_DEFAULTS,
    SECTIONS,
    data_config,
    decoder_config,
    eval_config,
    latent_config,
    run_setup,
    teacher_config,
    make_parser,
)
from latentdd.config import BaselineConfig, DataConfig, DistillConfig, build, check_mapping, check_sections, load_yaml
from latentdd.distill import make_distiller
from latentdd.pipelines.calibrate import CalibrateConfig
from latentdd.pipelines.cross_arch import resolve_students
from latentdd.pipelines.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
MAX_CONFIGS = 12  # configs/ holds the recipes a user starts from; experiments keep theirs in results/

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
RECORDS = sorted({*(ROOT / "results").rglob("recipe*.yaml"), *(ROOT / "results").rglob("recipes/*.yaml")})

# The arguments a command requires besides --config (placeholders: nothing is read or written).
REQUIRED = {"evaluate": ["--images", "x"], "calibrate": ["--out", "x"], "baseline": ["--out", "x"],
            "distill": ["--out", "x"], "encode": ["--out", "x"], "render": ["--synthetic", "x", "--out", "x"]}
# Sections that name their command, most specific first; a recipe with none of them is an evaluate recipe
# (dataset, evaluator, teacher) or else a run.
COMMAND_SECTIONS = (("calibrate", "calibrate"), ("distill", "distill"), ("baseline", "baseline"),
                    ("run", "run"), ("latent", "run"), ("decoder", "run"), ("out", "run"))


def command_of(path: Path, raw: dict) -> str:
    """The command a recipe is for: the one its header runs it with (`latentdd <command> ... --config <this
    file>`), else inferred from its sections."""
    rel = re.escape(path.relative_to(ROOT).as_posix())
    header = "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
    named = re.search(rf"latentdd ([a-z-]+) [^\n]*--config {rel}(?![\w/.])", header)
    if named and named.group(1) in SECTIONS:
        return named.group(1)
    return next((command for section, command in COMMAND_SECTIONS if section in raw),
                "evaluate" if set(raw) <= set(SECTIONS["evaluate"]) else "run")


def build_recipe(path: Path) -> tuple[str, list]:
    """(command, the typed settings it builds) for the recipe at `path`; DataError for a bad section, key or value."""
    raw = load_yaml(path)
    command = command_of(path, raw)
    check_sections(raw, SECTIONS[command], command)
    args = make_parser().parse_args([command, *REQUIRED.get(command, []), "--config", str(path)])
    built: list = [data_config(args, raw)]
    if command in ("run", "compare"):
        defaults = COMPARE_DEFAULTS if command == "compare" else {}
        data, space, decoder, evaluator, config, out = run_setup(args, raw, run_defaults=defaults,
                                                                  out_default="runs/x")
        built += [space, decoder, evaluator, config, resolve_students(config.students, evaluator)]
    else:
        if "latent" in raw:
            built.append(latent_config(args, raw))
        if "decoder" in raw:
            built.append(decoder_config(args, raw))
        if "evaluator" in raw or command == "evaluate":
            built.append(eval_config(args, raw)[0])
        if "calibrate" in raw:
            built.append(build(CalibrateConfig, raw["calibrate"], section="calibrate"))
        if "baseline" in raw:
            built.append(build(BaselineConfig, raw["baseline"], section="baseline"))
        if "distill" in raw:
            section = dict(check_mapping(raw["distill"], "distill"))
            params = dict(check_mapping(section.pop("params", None), "distill.params"))
            job = build(DistillConfig, section, section="distill")
            built += [job, make_distiller(job.method, **params)]
    if "teacher" in raw:
        built.append(teacher_config(args, raw))
    return command, built


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", CONFIGS + RECORDS, ids=_id)
def test_every_recipe_validates_for_its_command(path, monkeypatch):
    def no_loading(self, split):
        raise AssertionError(f"validating {_id(path)} loaded the {split} split")

    monkeypatch.setattr(DataConfig, "load", no_loading)  # building settings reads no data
    command, built = build_recipe(path)
    assert isinstance(built[0], DataConfig) and all(obj is not None for obj in built)
    if command in ("run", "compare"):
        assert isinstance(built[4], RunConfig)  # every method entry parsed, its parameters checked by its distiller


def test_recipes_are_found_where_the_experiments_keep_them():
    assert CONFIGS and RECORDS, "no recipes found: the glob patterns no longer match the layout"
    for path in RECORDS:  # beside a run's outputs, or in an experiment's recipes/ folder
        folder = path.parent
        assert folder.name == "recipes" or (folder / "reports").is_dir() or (folder / "results.md").is_file(), \
            f"{_id(path)} is not beside a run's outputs (reports/ or results.md) nor in an experiment's recipes/"


def test_configs_holds_only_the_recipes_a_user_starts_from():
    names = sorted(p.name for p in (ROOT / "configs").iterdir() if p.suffix in (".yaml", ".yml"))
    assert len(names) <= MAX_CONFIGS, (
        f"configs/ holds {len(names)} YAML files (at most {MAX_CONFIGS}): keep an experiment's config beside its "
        f"results as recipe.yaml (see results/README.md); configs/: {', '.join(names)}")


@pytest.mark.parametrize(("command", "text", "expected"), [
    ("run", "#   latentdd run --config {path} --out runs/x\ndataset: {{}}\n", "run"),
    ("compare", "# latentdd compare --config {path}\nrun: {{}}\n", "compare"),
    ("evaluate", "dataset: {{name: digits}}\nevaluator: {{protocol: dc}}\n", "evaluate"),
    ("calibrate", "dataset: {{}}\ncalibrate: {{full_data_epochs: 0}}\n", "calibrate"),
    ("run", "# the latents of `latentdd compare --config other.yaml`\nrun: {{methods: [kmeans]}}\n", "run"),
])
def test_the_command_comes_from_the_header_or_the_sections(tmp_path, monkeypatch, command, text, expected):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(text.format(path="recipe.yaml"))
    assert command_of(path, load_yaml(path)) == expected
    assert build_recipe(path)[0] == expected


def test_a_typo_in_a_recipe_fails(tmp_path, monkeypatch):
    from latentdd.errors import DataError

    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / "recipe.yaml"
    for text, match in [("run: {methods: [kmeans], ipc: [10]}\n", "unknown key 'ipc'"),
                        ("evaluator: {protocol: dsa, epoch: 3}\n", "unknown key 'epoch'"),
                        ("run: {methods: [{method: dm, params: {iteratons: 5}}]}\n", "iteratons"),
                        ("# latentdd evaluate --config recipe.yaml\nrun: {}\n", "unknown section 'run'")]:
        path.write_text(text)
        with pytest.raises(DataError, match=match):
            build_recipe(path)
