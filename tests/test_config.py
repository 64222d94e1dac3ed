"""Config resolution: values are coerced, defaults are saved, help defaults are true (shipped recipes: test_recipes.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from latentdd.cli import decoder_config, latent_config, main, make_parser
from latentdd.cli.settings import key_default
from latentdd.config import DataConfig, build
from latentdd.distill import make_distiller
from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig
from latentdd.evaluate.teacher import TeacherConfig
from latentdd.pipelines.distill import DecoderConfig, LatentSpaceConfig
from latentdd.pipelines.run_config import RunConfig


def test_numbers_in_any_notation_and_bool_strings_are_coerced():
    cfg = build(EvalConfig, {"lr": "1e-2", "dsa": "false", "epochs": "10"}, section="evaluator")
    assert (cfg.lr, cfg.dsa, cfg.epochs) == (0.01, False, 10)
    args = make_parser().parse_args(["distill", "--out", "x", "--set", "kl_weight=1e-4", "--prior-set", "lr=1e-3"])
    assert latent_config(args, {}).fit["kl_weight"] == 0.0001
    assert decoder_config(args, {}).prior["lr"] == 0.001


def test_nested_fit_and_prior_settings_hold_every_default():
    from latentdd.prior import FitPriorConfig
    from latentdd.vae import FitVAEConfig

    space = LatentSpaceConfig(fit={"max_steps": 30})
    assert space.fit["max_steps"] == 30 and space.fit["lr"] == FitVAEConfig.lr
    assert set(space.fit) == {f.name for f in dataclasses.fields(FitVAEConfig)}
    assert set(DecoderConfig().prior) == {f.name for f in dataclasses.fields(FitPriorConfig)}


def test_saved_baseline_config_holds_every_default(tmp_path):
    out = tmp_path / "o"
    assert main(["baseline", "--dataset", "digits", "--ipc", "1", "--out", str(out), "--quiet"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["dataset"]["resize"] == "pad" and saved["baseline"] == {"method": "random", "ipc": 1, "seed": 0}


def test_distill_passes_and_saves_the_distillers_resolved_parameters(monkeypatch, tmp_path):
    import latentdd.pipelines.distill as pd
    from latentdd.distill import distiller_params

    seen = {}
    monkeypatch.setattr(pd, "prepare_latent_space", lambda *a, **k: None)
    monkeypatch.setattr(pd, "make_decoder", lambda *a, **k: (None, {}))
    monkeypatch.setattr(pd, "distill_to_folder", lambda *a, **k: seen.update(k) or tmp_path)
    try:
        main(["distill", "--dataset", "digits", "--method", "bacon", "--ipc", "1", "--param", "ce_weight=1e-3",
              "--out", str(tmp_path / "o"), "--quiet"])
    except AttributeError:  # the success message reads the (skipped) latent space
        pass
    from latentdd.presets import resolve

    as_read = {k: list(v) if isinstance(v, tuple) else v for k, v in seen["params"].items()}  # YAML has no tuples
    preset = resolve("bacon", 1).params
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in (distiller_params("bacon") | preset).items()}
    assert as_read == defaults | {"ce_weight": 0.001}  # the override merged over the preset, the rest kept
    assert preset["iterations"] < distiller_params("bacon")["iterations"] and as_read["iterations"] == preset["iterations"]
    assert seen["config"]["distill"]["params"]["ce_weight"] == 0.001 and seen["config"]["distill"]["preset"] == "default"
    assert seen["preset"] == {"name": "default", "ipc": 1, "overrides": {"ce_weight": 0.001}}  # kept in the record


# dest -> the default the code uses, for each hand-written flag whose help names a default (a flag that sets a config
# key is checked against the key's field).
CODE_DEFAULTS = {"split": "train", "settings": None}


def _subparsers():
    import argparse

    parser = make_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices.items()


def test_every_help_default_is_the_default_the_code_uses():
    from latentdd.cli import COMPARE_DEFAULTS

    checked = 0
    for command, sub in _subparsers():
        per_command = {"run.methods": {"run": ",".join(RunConfig().methods),
                                       "compare": ",".join(COMPARE_DEFAULTS["methods"])},
                       "run.ipcs": {"run": ",".join(map(str, RunConfig().ipcs)),
                                    "compare": ",".join(map(str, COMPARE_DEFAULTS["ipcs"]))},
                       "evaluator.protocol": {c: "dsa" for c in ("evaluate", "run", "compare")},
                       "evaluator.model": {c: EvalConfig.model for c in ("evaluate", "run", "compare")},
                       "decoder.name": {c: DecoderConfig.name for c in ("distill", "render", "run", "compare")}}
        for action in sub._actions:
            match = re.search(r"\(default:? ([^;),]+(?:,[^;) ]+)*)", action.help or "")
            if not match or match.group(1).startswith(("the ", "by ", "refuse", "runs/")):
                continue
            key = getattr(action, "key", action.dest)
            code = per_command[key][command] if key in per_command else CODE_DEFAULTS[key] if key in CODE_DEFAULTS \
                else key_default(key)
            shown = match.group(1)
            assert shown == str(code) or (isinstance(code, float) and float(shown) == code), (command, action.dest)
            checked += 1
    assert checked >= 30


def test_run_method_params_are_coerced_before_work_and_merged_over_the_preset():
    from latentdd.distill import coerce_params
    from latentdd.presets import resolve

    config = build(RunConfig, {"methods": [{"method": "bacon", "params": {"ce_weight": "1e-3", "factor": "2"}}]},
                   section="run")
    spec = config.specs()[0]
    assert spec.overrides == {"ce_weight": 0.001, "factor": 2}
    assert spec.params == coerce_params("bacon", resolve("bacon", 10).params | {"ce_weight": 0.001, "factor": 2})


def test_a_bare_method_and_a_mapping_take_the_preset_and_a_mapping_merges_its_params_over_it():
    from latentdd.presets import resolve

    bare, mapped, reference, plain = build(RunConfig, {"methods": [
        "dm", {"method": "dm", "params": {"lr": "0.25"}}, {"method": "dm", "preset": "reference", "label": "dm-ref",
                                                          "params": {"iterations": 20}}, "kmeans"]},
        section="run").specs()
    dm10 = resolve("dm", 10).params
    assert (bare.label, bare.params, bare.ipcs, bare.preset) == ("dm", dm10, (10,), "default")
    assert dm10["iterations"] < make_distiller("dm").iterations  # the CPU's count, not the reference's
    assert (mapped.label, mapped.params) == ("dm-lr=0.25", dm10 | {"lr": 0.25})  # one key changed, the rest kept
    assert mapped.preset_record(10) == {"name": "default", "ipc": 10, "overrides": {"lr": 0.25}}
    assert (reference.params, reference.ipcs) == ({"iterations": 20}, None)
    assert (plain.label, plain.params) == ("kmeans", {})
    assert [spec.label for spec in RunConfig().specs()] == ["dm", "kmeans"]
    with pytest.raises(DataError, match="no preset 'fast'.*default, reference"):
        build(RunConfig, {"methods": [{"method": "dm", "preset": "fast"}]}, section="run")


def test_compares_bare_matching_methods_take_cpu_sized_measured_settings():
    """`compare`'s default methods (bacon, idm) and bare dc / dsa get the settings of their measured rows, each a valid
    distiller, at a fraction of their reference's iterations; a bare bacon takes the reference code's loss."""
    from latentdd.presets import resolve

    specs = build(RunConfig, {"methods": ["bacon", "idm", "dc", "dsa"], "ipcs": [1, 10]}, section="run").specs()
    assert [(spec.label, spec.ipcs) for spec in specs] == [
        (name, ipcs) for name in ("bacon", "idm", "dc", "dsa") for ipcs in ((1,), (10,))]
    for spec in specs:
        distiller = make_distiller(spec.method, **spec.params)
        assert distiller.iterations <= 300 < make_distiller(spec.method).iterations
    for ipc in (1, 10):
        assert resolve("bacon", ipc).params == {"loss": "bacon-reference", **resolve("idm", ipc).params}
        assert resolve("idm", ipc).params["networks"] == "bank" and resolve("dsa", ipc).params["outer_loop"] == 1


def test_a_bare_method_takes_the_settings_of_the_largest_measured_ipc_not_above_each_run_ipc():
    from latentdd.presets import presets, resolve

    specs = build(RunConfig, {"methods": ["dm", "kmeans"], "ipcs": [1, 5, 10, 50]}, section="run").specs()
    specs += build(RunConfig, {"methods": ["dm"], "ipcs": [10, 20, 50, 100]}, section="run").specs()
    assert [(spec.label, spec.ipcs) for spec in specs] == [("dm", (1, 5)), ("dm", (10,)), ("dm", (50,)),
                                                           ("kmeans", None), ("dm", (10, 20)), ("dm", (50, 100))]
    measured = {ipc: resolve("dm", ipc).params for ipc in presets()["dm"]["default"]["ipc"]}  # auto resolved
    dm = [spec.params for spec in specs if spec.method == "dm"]
    assert dm == [measured[ipc] for ipc in (1, 10, 50, 10, 50)]
    assert measured[1] != measured[10] != measured[50]
    assert resolve("dm", 3).params == measured[1] and resolve("dm", 3).preset_ipc == 1
    assert resolve("kmeans", 10).params == {} and resolve("kmeans", 10).preset_ipc is None
    with pytest.raises(DataError, match="labels must be distinct"):
        build(RunConfig, {"methods": ["dm", {"method": "dm", "label": "dm"}], "ipcs": [10]}, section="run")


def test_every_section_is_registered_once_under_the_name_its_class_reports():
    """latentdd.configs is the one registry: each class's own `section` (what its messages name) is its key, and
    every section a command reads (but the plain `out`) is registered."""
    from latentdd.cli import SECTIONS
    from latentdd.configs import CONFIG_SECTIONS, build_section, config_class

    for section in CONFIG_SECTIONS:
        assert config_class(section).section == section
    read = {name for sections in SECTIONS.values() for name in sections} - {"out"}
    assert read <= set(CONFIG_SECTIONS), read - set(CONFIG_SECTIONS)
    assert build_section("dataset", {"name": "digits"}, {"image-size": 32}).image_size == 32
    with pytest.raises(DataError, match="unknown section 'datset'.*did you mean 'dataset'"):
        config_class("datset")


@pytest.mark.bad_input
@pytest.mark.parametrize("make, message", [
    (lambda: DataConfig(resize="crop"),
     "dataset.resize must be one of pad, resize, center_crop; got 'crop' (did you mean 'center_crop'?)"),
    (lambda: DataConfig(channels=2), "dataset.channels must be one of 1, 3 (or null); got 2"),
    (lambda: DataConfig(channels=True), "dataset.channels must be one of 1, 3 (or null); got True"),
    (lambda: DataConfig(validation=1.0), "dataset.validation must lie in [0, 1); got 1.0"),
    (lambda: DataConfig(image_size=2.5), "dataset.image_size must be a positive integer (or null); got 2.5"),
    (lambda: EvalConfig(epochs=0), "evaluator.epochs must be a positive integer (or null); got 0"),
    (lambda: EvalConfig(lr=0), "evaluator.lr must be > 0; got 0"),
    (lambda: EvalConfig(milestones=(0.5, 1.5)), "evaluator.milestones[1] must lie in (0, 1); got 1.5"),
    (lambda: EvalConfig(factor=True),
     "evaluator.factor must be a positive integer (1: no factorization, 2: IDM's --aug); got True"),
    (lambda: TeacherConfig(epochs=0), "teacher.epochs must be a positive integer (or null); got 0"),
    (lambda: make_distiller("kmeans", niter=0), "kmeans niter must be a positive integer; got 0"),
    (lambda: make_distiller("dm", bank_steps=[0, -1]), "dm bank_steps[1] must be a non-negative integer; got -1"),
])
def test_a_config_built_in_python_is_checked_as_declared(make, message):
    """The checks are declared on the fields (latentdd.config.Checked): the library API refuses what a config file
    would, and the message names the key, what it may be and the value given."""
    with pytest.raises(DataError) as err:
        make()
    assert str(err.value) == message
