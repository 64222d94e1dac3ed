"""benchmarks/gpu_suite.py runs every row where there is no GPU: each GPU figure says why it is missing, each CPU
figure is measured, and the table is made from the JSON (the suite itself needs a GPU machine: issue 36)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_suite_measures_every_row_on_the_cpu_and_tabulates_the_json(suite, tmp_path, monkeypatch,
                                                                              torch_one_thread):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(suite, "EVALUATOR_MODELS", [("convnet", 28, 1)])  # the 64 px rows run the same code
    assert suite.main(["--budget", "quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    stages = [(r["stage"], r["setting"].split(",")[0]) for r in report["rows"]]
    assert stages == [("evaluator", "convnet 28 px"), ("evaluator", "convnet 28 px"), ("encode", "TAEF2"),
                      ("distill", "DM"), ("distill", "DM"), ("distill", "kmeans")]
    for row in report["rows"]:
        assert row["gpu"] == {"missing": "no CUDA device"} and row["gpu_speedup"] is None
        if row["stage"] != "encode" or (suite.TAEF2 / "taef2_encoder.pth").is_file():
            assert row["cpu"]["value"] > 0, row
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.count("\n| ") == 1 + len(report["rows"]) and "missing (no CUDA device)" in table
