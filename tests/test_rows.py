"""A run's typed rows (`latentdd.pipelines.tables.Row`): results.json's keys and back, and compare reading them."""

from __future__ import annotations

import json

import pytest

from latentdd.evaluate import EvalConfig
from latentdd.pipelines.compare import _with_costs, comparison_markdown
from latentdd.pipelines.tables import Row, over_subsets

REAL = "random-real (pixels)"


def _rows() -> list[Row]:
    kmeans = Row("kmeans", "kmeans-medoid", 10, 80.0, 0.5, 3, "/r/reports/kmeans-medoid_ipc10_weighted.json",
                 {"/other/run": 2}, weighted=True, quantization_error=7.5, class_consistency=93.0, ior=6.0)
    subsets = [Row("random", f"{REAL} s{seed}", 10, mean, 1.0, 1, f"/r/reports/random-real-s{seed}_ipc10.json",
                   subset_of=REAL, class_consistency=90.0) for seed, mean in ((0, 73.0), (1, 75.0))]
    return [kmeans, *subsets, over_subsets(subsets)]


def test_a_row_goes_to_the_keys_results_json_has_always_had_and_back():
    kmeans, subset, _, summary = _rows()
    assert list(kmeans.to_json()) == ["method", "ipc", "mean", "std", "n", "report", "lent_from", "quantization_error",
                                      "class_consistency", "ior", "hlr", "lrs"]
    assert kmeans.to_json()["method"] == "kmeans-medoid + weights" and kmeans.to_json()["lent_from"] == {"/other/run": 2}
    assert list(subset.to_json()) == ["method", "ipc", "mean", "std", "n", "report", "lent_from", "quantization_error",
                                      "subset_of", "class_consistency", "ior", "hlr", "lrs"]
    assert list(summary.to_json()) == ["method", "ipc", "mean", "std", "n", "quantization_error", "training_std",
                                       "subsets", "report", "lent_from", "ior", "hlr", "lrs"]
    assert summary.to_json() == {
        "method": f"{REAL}, 2 subsets", "ipc": 10, "mean": 74.0, "std": 1.0, "n": 2, "quantization_error": None,
        "training_std": 1.0, "subsets": [subset.report, "/r/reports/random-real-s1_ipc10.json"], "report": None,
        "lent_from": {}, "ior": None, "hlr": None, "lrs": None}
    for row in _rows():
        written = json.loads(json.dumps(row.to_json()))  # as results.json reads back
        assert Row.from_json(written, row.method) == row
        assert Row.from_json(written, row.method).to_json() == written


def test_compare_takes_the_method_from_the_row_not_from_its_label(tmp_path):
    """The published figure is the row's method's: a variant's label (or a label naming another method) does not
    choose it, and random real's subsets and its row over them are random's."""
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"wall_seconds": 5.0, "record": {"stage_seconds": {"distill": 1.0}}}))
    subsets = [Row("random", f"{REAL} s{seed}", 10, 74.0, 1.0, 1, str(report), subset_of=REAL) for seed in (0, 1)]
    rows = [Row("bacon", "bacon-reference_it250", 10, 77.8, 0.1, 3, str(report)),
            Row("kmeans", "herding", 10, 77.2, 0.2, 3, str(report), weighted=True), *subsets, over_subsets(subsets)]
    compared = [_with_costs(row, "fashion_mnist") for row in rows]
    assert [c.published and c.published.mean for c in compared] == [84.23, None, 73.8, 73.8, 73.8]
    table = comparison_markdown(compared, "fashion_mnist", EvalConfig())
    assert "| bacon-reference_it250 | 10 | 77.80 ± 0.10 (n=3) | 84.23 (IDM/BACON protocol" in table
    assert "| herding + weights | 10 | 77.20 ± 0.20 (n=3) |  |" in table
    assert compared[0].csv()["evaluate_s"] == pytest.approx(5.0) and compared[0].csv()["distill_s"] == 1.0
