"""The cross-architecture table (`run.students`): the run's sets and random-real subsets on several students."""

from __future__ import annotations

import json

import pytest
import yaml

from latentdd.cli import main
from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig
from latentdd.pipelines.cross_arch import STUDENT_PRESETS, StudentSpec, resolve_students

TINY_FIT = ["--set", "image_size=8", "--set", "block_out_channels=[8, 16]", "--set", "norm_num_groups=4",
            "--set", "latent_channels=2", "--set", "max_steps=20", "--set", "batch_size=64",
            "--set", "checkpoint_every=0", "--set", "scale_images=256"]
TINY_EVAL = {"epochs": 1, "width": 16, "compile": "off", "num_eval": 1}


@pytest.fixture
def common(tmp_path):
    return ["--dataset", "digits", "--vae", "fit", "--cache-dir", str(tmp_path / "cache"), *TINY_FIT, "--quiet"]


def _counting(monkeypatch) -> list:
    from latentdd.pipelines import evaluation

    calls = []
    real = evaluation.evaluate_synthetic
    monkeypatch.setattr(evaluation, "evaluate_synthetic", lambda *a, **k: calls.append(k.get("record")) or real(*a, **k))
    return calls


def test_a_student_is_the_evaluator_with_its_overrides():
    evaluator = EvalConfig(width=16, epochs=300, num_eval=2)
    bn, w64, resnet = resolve_students(["convnet-bn", "convnet-w64", {"model": "resnet18", "label": "rn18"}], evaluator)
    assert (bn.config.model, bn.config.norm, bn.config.width, bn.config.epochs) == ("convnet", "batchnorm", 16, 300)
    assert w64.config.width == 64 and w64.config.norm is None
    # Another model drops the evaluator's ConvNet width: ResNet-18 gets its own 64, not 16.
    assert resnet.label == "rn18" and resnet.config.arch_kwargs(28) == {"width": 64, "norm": "instancenorm"}
    assert (resnet.config.epochs, resnet.config.num_eval, resnet.config.protocol) == (300, 2, "dsa")
    assert resolve_students(["convnet"], evaluator)[0].config == evaluator  # shares the run's reports
    assert StudentSpec.parse({"model": "convnet", "width": "64"}).label == "convnet-width=64"  # coerced from YAML text
    assert set(STUDENT_PRESETS) == {"convnet", "convnet-bn", "convnet-w64", "resnet18", "resnetap10", "vgg11",
                                    "alexnet"}


def test_ior_is_against_random_real_on_the_same_student_and_ipc():
    from latentdd.pipelines.cross_arch import Cell, ResolvedStudent, cross_arch_table
    from latentdd.pipelines.tables import Row

    def cell(student, method, ipc, mean, subset_of=None):
        return Cell(student, Row(method, method, ipc, mean, 1.0, 3, f"{student}/{method}", subset_of=subset_of))

    real = "random-real (pixels)"
    cells = [cell("a", "dm", 10, 80.0), cell("b", "dm", 10, 70.0), cell("a", "dm", 1, 50.0),
             cell("a", "s0", 10, 76.0, real), cell("a", "s1", 10, 78.0, real),
             cell("b", "s0", 10, 72.0, real), cell("b", "s1", 10, 73.0, real), cell("a", "s0", 1, 40.0, real)]
    table = cross_arch_table(cells, [ResolvedStudent("a", EvalConfig()), ResolvedStudent("b", EvalConfig(norm="batchnorm"))])
    assert [(r["set"], r["ipc"]) for r in table["rows"]] == [("dm", 10), (real, 10), ("dm", 1), (real, 1)]
    dm10, real10, dm1, real1 = table["rows"]
    assert dm10["cells"]["a"]["ior"] == pytest.approx(3.0) and dm10["cells"]["b"]["ior"] == pytest.approx(-2.5)
    assert dm1["cells"]["a"]["ior"] == pytest.approx(10.0) and "b" not in dm1["cells"]
    assert real10["cells"]["b"] == {"mean": 72.5, "std": 0.5, "n": 2, "training_std": 1.0,
                                    "reports": ["b/s0", "b/s1"]}
    assert list(real1["cells"]) == ["a"] and real1["cells"]["a"]["mean"] == 40.0
    assert table["students"][1]["settings"]["norm"] == "batchnorm"


def test_cross_arch_table_has_a_cell_per_set_and_student_and_a_rerun_reuses_them(tmp_path, common, monkeypatch):
    students = ["convnet", {"model": "convnet", "norm": "batchnorm", "label": "convnet-bn"},
                {"model": "resnet18", "width": 4}]
    config = tmp_path / "xarch.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"methods": ["kmeans"], "ipcs": [2], "random_real_subsets": 2, "students": students},
        "evaluator": TINY_EVAL}))
    out = tmp_path / "run"
    args = ["run", "--config", str(config), *common, "--out", str(out)]
    calls = _counting(monkeypatch)
    assert main(args) == 0
    # 3 sets (kmeans, 2 random-real subsets) x (the evaluator + 2 students); `convnet` IS the evaluator.
    assert len(calls) == 9
    table = json.loads((out / "cross_arch.json").read_text())
    labels = ["convnet", "convnet-bn", "resnet18-width=4"]
    assert [s["label"] for s in table["students"]] == labels
    assert [(r["set"], r["ipc"]) for r in table["rows"]] == [("kmeans + weights", 2), ("random-real (pixels)", 2)]
    assert all(list(r["cells"]) == labels for r in table["rows"])
    assert sorted((c["student"], c["method"]) for c in table["cells"]) == sorted(
        (s, m) for s in labels for m in ("kmeans + weights", "random-real (pixels) s0", "random-real (pixels) s1"))
    kmeans, random = table["rows"]
    main_report = json.loads((out / "results.json").read_text())[0]["report"]
    assert kmeans["cells"]["convnet"]["report"] == main_report
    for label, architecture, option in (("convnet-bn", "convnet", ("norm", "batchnorm")),
                                        ("resnet18-width=4", "resnet18", ("width", 4))):
        report = json.loads(open(kmeans["cells"][label]["report"]).read())
        assert report["record"]["evaluator"]["architecture"] == architecture
        assert report["record"]["evaluator"][option[0]] == option[1]
        assert report["record"]["method"]["name"] == "kmeans" and report["record"]["evaluator"]["sample_weights"]
        subsets = [json.loads(open(p).read())["mean"] for p in random["cells"][label]["reports"]]
        assert random["cells"][label]["mean"] == pytest.approx(sum(subsets) / 2)
        assert kmeans["cells"][label]["ior"] == pytest.approx(kmeans["cells"][label]["mean"] - sum(subsets) / 2)
    md = (out / "cross_arch.md").read_text()
    assert "| set | IPC | convnet | IOR | convnet-bn | IOR | resnet18-width=4 | IOR | mean IOR |" in md
    assert "| kmeans + weights | 2 | " in md and "over 2 subsets" in md and "**resnet18-width=4**: resnet18 width 4" in md

    before = {name: (out / name).read_text() for name in ("cross_arch.json", "cross_arch.md")}
    monkeypatch.undo()
    from latentdd.pipelines import evaluation
    from latentdd.pipelines import run as run_module

    monkeypatch.setattr(evaluation, "evaluate_synthetic", lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr(run_module, "distill_to_folder", lambda *a, **k: pytest.fail("distilled again"))
    assert main(args) == 0
    assert {name: (out / name).read_text() for name in before} == before


def test_default_run_is_unchanged_and_students_join_it_later(tmp_path, common, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [1], "random_real": False},
                                      "evaluator": TINY_EVAL}))
    out = tmp_path / "run"
    args = ["run", "--config", str(config), *common, "--out", str(out)]
    calls = _counting(monkeypatch)
    assert main(args) == 0
    assert len(calls) == 1  # only the evaluator's evaluation of the one set
    assert not (out / "cross_arch.md").exists() and not (out / "cross_arch.json").exists()
    assert [p.name for p in (out / "reports").iterdir()] == ["random_ipc1.json"]
    results = (out / "results.json").read_text()
    capsys.readouterr()
    # The CLI shorthand adds a student to the finished run: one new evaluation, the run's own table untouched.
    assert main([*args, "--students", "convnet-bn"]) == 0
    assert len(calls) == 2 and (out / "results.json").read_text() == results
    assert "latentdd cross-architecture table" in capsys.readouterr().out
    report = json.loads((out / "reports" / "student-convnet-bn" / "random_ipc1.json").read_text())
    assert report["record"]["evaluator"]["norm"] == "batchnorm" and report["record"]["evaluator"]["width"] == 16


@pytest.mark.bad_input
@pytest.mark.parametrize("students,needle", [
    ("convnet-bm", "unknown student preset 'convnet-bm'"),  # a string: the --students shorthand
    ("convnet,convnet", "labels must be distinct"),
    ([{"model": "convnet", "nrom": "batchnorm"}], "did you mean 'norm'"),
    ([{"model": "resnet18", "norm": "layernorm"}], "run.students 'resnet18-norm=layernorm'"),
    ([{"model": "resnet18", "depth": 3}], "depth applies to convnet only"),
    ([{"model": "vgg12"}], "evaluator.model must be one of"),
    ([{"protocol": "soft"}], "protocol is the evaluator's"),
    ([{"width": 0, "label": "w0"}], "evaluator.width must be a positive integer (or null); got 0"),
    ([{"model": "convnet", "label": "a b"}], "must be a plain folder name"),
    (["resnet18", {"model": "resnet18"}], "labels must be distinct"),
    ([{"label": "bare"}], "give at least one evaluator setting"),
    ([["resnet18"]], "must be a mapping"),
])
def test_a_bad_student_fails_before_any_work(tmp_path, common, capsys, students, needle):
    out = tmp_path / "x"
    common = [*common, "--epochs", "1", "--width", "16", "--compile", "off"]  # a check that came too late fails fast
    if isinstance(students, str):
        argv = ["run", *common, "--methods", "random", "--ipc", "1", "--students", students, "--out", str(out)]
    else:
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [1], "students": students}}))
        argv = ["run", "--config", str(config), *common, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "cache").exists()  # no VAE fitted, no folder claimed


@pytest.mark.bad_input
def test_a_student_is_checked_against_the_evaluator_it_overrides():
    student = [{"norm": "layernorm", "label": "ln"}]  # keeps the evaluator's model
    assert resolve_students(student, EvalConfig(model="convnet"))[0].config.norm == "layernorm"
    with pytest.raises(DataError, match="run.students 'ln'.*evaluator.norm must be one of .* for model resnet18"):
        resolve_students(student, EvalConfig(model="resnet18"))
