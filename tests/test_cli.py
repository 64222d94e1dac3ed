"""The `latentdd` command end to end on sklearn digits, and its error handling."""

from __future__ import annotations

import json

import pytest
import yaml

from latentdd.cli import main
from latentdd.config import DataConfig, build
from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig

FAST = ["--epochs", "2", "--width", "16", "--compile", "off", "--quiet"]


def test_baseline_then_evaluate_round_trip(tmp_path, capsys):
    out = tmp_path / "random"
    assert main(["baseline", "--dataset", "digits", "--ipc", "3", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    assert len(list(out.glob("*/*.png"))) == 30
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["baseline"] == {"method": "random", "ipc": 3, "seed": 1} and saved["dataset"]["name"] == "digits"
    report = tmp_path / "report.json"
    code = main(["evaluate", "--images", str(out), "--dataset", "digits", "--num-eval", "2", "--json", str(report), *FAST])
    assert code == 0
    data = json.loads(report.read_text())
    assert len(data["accuracies"]) == 2 and data["record"]["ipc"] == 3
    assert data["record"]["method"]["name"] == "random" and data["record"]["method"]["seed"] == 1
    assert data["record"]["evaluator"]["epochs"] == 2 and data["config"]["protocol"] == "dsa"
    assert "test accuracy" in capsys.readouterr().out


def test_same_seed_same_subset_and_existing_output_is_kept(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["baseline", "--dataset", "digits", "--ipc", "2", "--out", str(out), "--quiet"]) == 0
    assert json.loads((a / "manifest.json").read_text())["images"] == json.loads((b / "manifest.json").read_text())["images"]
    before = sorted(p.name for p in a.rglob("*"))
    assert main(["baseline", "--dataset", "digits", "--ipc", "4", "--out", str(a), "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in a.rglob("*")) == before


def test_bad_input_exits_2_with_an_actionable_message(tmp_path, capsys):
    assert main(["baseline", "--dataset", "digits", "--ipc", "1000", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "lower --ipc" in capsys.readouterr().err
    assert main(["baseline", "--dataset", "nope", "--ipc", "1", "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "known datasets" in capsys.readouterr().err
    assert main(["evaluate", "--images", str(tmp_path / "missing"), "--dataset", "digits", *FAST]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["baseline", "--dataset", "cifar10", "--ipc", "1", "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "--download" in capsys.readouterr().err


def test_yaml_config_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset:\n  name: digits\nbaseline:\n  ipc: 2\n  seed: 3\n")
    out = tmp_path / "o"
    assert main(["baseline", "--config", str(cfg), "--seed", "4", "--out", str(out), "--quiet"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["baseline"] == {"method": "random", "ipc": 2, "seed": 4}


def test_build_layers_and_rejects_unknown_keys():
    cfg = build(EvalConfig, {"epochs": 300, "dsa": False}, {"epochs": 10}, {"epochs": None, "num_eval": 7})
    assert (cfg.epochs, cfg.dsa, cfg.num_eval) == (10, False, 7)
    with pytest.raises(DataError, match="unknown key 'epoch'"):
        build(DataConfig, {"epoch": 3}, section="dataset")


def test_datasets_lists_every_registered_dataset(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("fashion_mnist", "mnist", "digits", "imagefolder", "cifar10", "cifar100", "svhn"):
        assert name in out


@pytest.mark.parametrize("path", ["configs/evaluate_dc.yaml", "configs/evaluate_dsa.yaml"])
def test_shipped_evaluate_configs_resolve(path):
    from pathlib import Path

    from latentdd.cli import eval_config, make_parser
    from latentdd.config import load_yaml

    root = Path(__file__).resolve().parents[1]
    args = make_parser().parse_args(["evaluate", "--images", "x", "--config", str(root / path)])
    cfg, protocol = eval_config(args, load_yaml(root / path))
    assert (protocol, cfg.epochs, cfg.dsa) == (("dc", 300, False) if "dc" in path else ("dsa", 1000, True))


def test_shipped_calibrate_config_resolves():
    from pathlib import Path

    from latentdd.config import load_yaml
    from latentdd.pipelines.calibrate import CalibrateConfig

    raw = load_yaml(Path(__file__).resolve().parents[1] / "configs/calibrate_fashion_mnist.yaml")
    cfg = build(CalibrateConfig, raw["calibrate"])
    assert cfg.runs == {"dc": [1, 10, 50], "dsa": [1, 10]} and cfg.full_data_epochs == 10


@pytest.mark.bad_input
def test_an_interrupted_evaluate_resumes_at_its_next_training(tmp_path, capsys, monkeypatch):
    """Issue 32: `evaluate --json R` killed after its first training keeps it in R.trainings.json; the
    re-run trains only the second, and its report equals an uninterrupted evaluation's but for timings."""
    import latentdd.evaluate.trainer as trainer

    out = tmp_path / "random"
    assert main(["baseline", "--dataset", "digits", "--ipc", "2", "--out", str(out), "--quiet"]) == 0
    evaluate = ["evaluate", "--images", str(out), "--dataset", "digits", "--num-eval", "2", *FAST, "--epochs", "20"]
    assert main([*evaluate, "--json", str(tmp_path / "whole.json")]) == 0
    report = tmp_path / "r.json"
    real_train, trained = trainer.train_model, []

    def train_then_die(*args, seed, **kwargs):
        if trained:
            raise KeyboardInterrupt  # killed during the second training
        trained.append(seed)
        return real_train(*args, seed=seed, **kwargs)

    monkeypatch.setattr(trainer, "train_model", train_then_die)
    assert main([*evaluate, "--json", str(report)]) == 130
    kept = tmp_path / "r.json.trainings.json"
    assert json.loads(kept.read_text())["seeds"] == [0] and not report.exists()
    trained.clear()
    monkeypatch.setattr(trainer, "train_model", lambda *a, seed, **k: trained.append(seed) or real_train(*a, seed=seed, **k))
    assert main([*evaluate, "--json", str(report)]) == 0
    assert trained == [1] and "resuming: 1 finished training(s)" in capsys.readouterr().out
    whole, resumed = json.loads((tmp_path / "whole.json").read_text()), json.loads(report.read_text())
    assert resumed["accuracies"] == whole["accuracies"] and not kept.exists()
    # Its own kept trainings are not lent ones: the report reads as the uninterrupted one's.
    assert "reused_trainings" not in resumed["record"] and resumed["key"] == whole["key"]


@pytest.mark.bad_input
def test_evaluate_never_overwrites_a_file_of_the_users_where_it_keeps_its_trainings(tmp_path, capsys):
    out = tmp_path / "random"
    assert main(["baseline", "--dataset", "digits", "--ipc", "1", "--out", str(out), "--quiet"]) == 0
    (tmp_path / "r.json.trainings.json").write_text("mine")
    code = main(["evaluate", "--images", str(out), "--dataset", "digits", "--json", str(tmp_path / "r.json"), *FAST])
    assert code == 2 and "is in the way" in capsys.readouterr().err
    assert (tmp_path / "r.json.trainings.json").read_text() == "mine"


def test_evaluate_on_a_folder_missing_classes_warns_and_records_them(tmp_path, capsys, caplog, make_class_tree):
    folder = tmp_path / "half"
    make_class_tree(folder, {str(k): 2 for k in range(5)}, size=(8, 8), rgb=False)  # digits 0-4 only
    report = tmp_path / "report.json"
    assert main(["evaluate", "--images", str(folder), "--dataset", "digits", "--num-eval", "1",
                 "--json", str(report), *FAST]) == 0
    assert "no images of 5 of its 10 classes (5, 6, 7, 8, 9)" in caplog.text
    assert json.loads(report.read_text())["record"]["missing_classes"] == ["5", "6", "7", "8", "9"]
    assert "no images of classes 5, 6, 7, 8, 9" in capsys.readouterr().out
    caplog.clear()
    make_class_tree(folder, {str(k): 2 for k in range(5, 10)}, size=(8, 8), rgb=False)  # now every class
    assert main(["evaluate", "--images", str(folder), "--dataset", "digits", "--num-eval", "1",
                 "--json", str(report), *FAST]) == 0
    assert "missing_classes" not in caplog.text and json.loads(report.read_text())["record"]["missing_classes"] == []
