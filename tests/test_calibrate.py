"""The calibration pipeline on sklearn digits: results, records, and resuming."""

from __future__ import annotations

import json

from latentdd.config import DataConfig
from latentdd.pipelines import calibrate
from latentdd.pipelines.calibrate import CalibrateConfig, run_calibration


def test_calibration_writes_results_and_resumes(tmp_path, monkeypatch):
    # A small network and few epochs keep the test fast; the flow is what is tested here.
    cfg = CalibrateConfig(runs={"dc": [1, 2]}, num_eval={"dc": 2}, full_data_epochs=1,
                          evaluator={"epochs": 3, "width": 16, "compile": "off"})
    rows = run_calibration(DataConfig(name="digits"), cfg, tmp_path, progress=False)
    assert [(r["method"], r["ipc"]) for r in rows] == [("random", 1), ("random", 2), ("full", 0)]
    assert all(0 <= r["mean"] <= 100 for r in rows)
    report = json.loads((tmp_path / "reports" / "random_dc_ipc2.json").read_text())
    method = report["record"]["method"]
    assert method["ipc"] == 2 and method["subset_seeds"] == [0, 1] and report["seeds"] == [0, 1]
    first, second = method["train_indices"]
    assert len(first) == 20 and first != second  # each run draws its own subset
    assert report["record"]["selection"].startswith("final epoch")
    full = json.loads((tmp_path / "reports" / "full_data_1ep.json").read_text())
    for record in (report["record"], full["record"]):  # compile off: eager, and the record says so
        assert {k: record["evaluator"][k] for k in ("compile", "compiled", "compile_fallback")} == \
            {"compile": "off", "compiled": False, "compile_fallback": None}
    assert "| random | dc | 2 |" in (tmp_path / "results.md").read_text()

    def fail(*a, **k):
        raise AssertionError("a finished evaluation was run again")

    monkeypatch.setattr(calibrate, "evaluate_synthetic", fail)
    monkeypatch.setattr(calibrate, "train_model", fail)
    assert run_calibration(DataConfig(name="digits"), cfg, tmp_path, progress=False) == rows


def test_calibration_keeps_its_reports_in_the_run_s_report_store(tmp_path, monkeypatch, caplog):
    """Each report, and each run's, carries its inputs, key and content hash (latentdd.pipelines.reports): a larger
    num_eval trains only the new runs, and an edited run's report is not used (with a warning): it trains again."""
    import logging

    def config(num_eval):
        return CalibrateConfig(runs={"dc": [1]}, num_eval={"dc": num_eval}, full_data_epochs=0,
                               evaluator={"epochs": 1, "width": 8, "compile": "off"})

    run_calibration(DataConfig(name="digits"), config(1), tmp_path, progress=False)
    reports = tmp_path / "reports"
    for name in ("random_dc_ipc1.json", "random_dc_ipc1.run0.json"):
        report = json.loads((reports / name).read_text())
        assert {"inputs", "key", "content_sha256"} <= set(report)
    trained = []
    real = calibrate.evaluate_synthetic
    monkeypatch.setattr(calibrate, "evaluate_synthetic", lambda *a, **k: trained.append(a[2].seed) or real(*a, **k))
    rows = run_calibration(DataConfig(name="digits"), config(2), tmp_path, progress=False)
    assert trained == [1] and rows[0]["n"] == 2  # run 0 kept, run 1 new
    edited = reports / "random_dc_ipc1.run1.json"
    edited.write_text(json.dumps(json.loads(edited.read_text()) | {"accuracies": [99.0]}))
    (reports / "random_dc_ipc1.json").unlink()
    with caplog.at_level(logging.WARNING):
        run_calibration(DataConfig(name="digits"), config(2), tmp_path, progress=False)
    assert trained == [1, 1] and f"report {edited} does not match its content_sha256" in caplog.text
