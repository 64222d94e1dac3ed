"""IOR, HLR and LRS against numbers worked out by hand (DD-Ranking's definitions)."""

from __future__ import annotations

import pytest

from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig
from latentdd.evaluate.scores import hlr, ior, lrs, relative_scores


def test_ior_is_the_set_minus_the_mean_of_the_random_subsets_means():
    # set: (80 + 82) / 2 = 81; subsets: (70 + 72) / 2 = 71 and 74 -> (71 + 74) / 2 = 72.5; IOR = 8.5
    assert ior([80.0, 82.0], [[70.0, 72.0], [74.0]]) == pytest.approx(8.5)
    assert ior([60.0], [[65.0]]) == pytest.approx(-5.0)  # below random real: negative


def test_hlr_is_full_data_minus_the_set_under_hard_labels():
    assert hlr([93.5], [84.6, 84.6]) == pytest.approx(8.9)
    assert hlr([90.0], [90.0]) == 0.0


def test_lrs_by_hand():
    # a = 0.5 * 0.085 - 0.5 * 0.089 = -0.002; (e^-0.002 - e^-1) / (e - e^-1) = (0.998002 - 0.367879) / 2.350402
    assert lrs(8.5, 8.9) == pytest.approx(26.809, abs=1e-3)
    # a = 0.5 * 0.10 - 0.5 * 0.20 = -0.05: (0.951229 - 0.367879) / 2.350402 = 0.248192
    assert lrs(10.0, 20.0) == pytest.approx(24.819, abs=1e-3)
    assert lrs(100.0, 0.0, weight=1.0) == pytest.approx(100.0)  # a = 1: the top of the scale
    assert lrs(0.0, 100.0, weight=0.0) == pytest.approx(0.0)  # a = -1: the bottom
    assert lrs(0.0, 0.0) == pytest.approx(100 * (1 - 0.367879) / 2.350402, abs=1e-3)  # a = 0


def test_relative_scores_gathers_the_three_and_leaves_out_what_it_cannot_compute():
    scores = relative_scores([80.0, 82.0], [[70.0, 72.0], [74.0]], set_hard_accuracies=[84.6],
                             full_data_accuracies=[93.5])
    assert scores.ior == pytest.approx(8.5) and scores.hlr == pytest.approx(8.9)
    assert scores.lrs == pytest.approx(26.809, abs=1e-3)
    partial = relative_scores([80.0], [[70.0]])
    assert partial.ior == pytest.approx(10.0) and partial.hlr is None and partial.lrs is None


@pytest.mark.bad_input
def test_missing_inputs_are_refused():
    with pytest.raises(DataError, match="at least one random-real subset"):
        ior([80.0], [])
    with pytest.raises(DataError, match="no accuracies"):
        hlr([], [80.0])
    with pytest.raises(DataError, match="weight must lie"):
        lrs(1.0, 1.0, weight=2.0)


def test_a_run_s_rows_get_ior_against_its_random_subsets_and_hlr_lrs_from_a_calibration(tmp_path):
    import json

    from latentdd.pipelines.calibrate import full_data_accuracy
    from latentdd.pipelines.tables import Row, results_markdown, with_relative_scores

    real = "random-real (pixels)"
    rows = [Row("kmeans", "kmeans", 10, 80.0, 0.0, 1, None, weighted=True),
            Row("random", f"{real} s0", 10, 70.0, 0.0, 1, None, subset_of=real),
            Row("random", f"{real} s1", 10, 74.0, 0.0, 1, None, subset_of=real),
            Row("random", f"{real}, 2 subsets", 10, 72.0, 2.0, 2, None, training_std=0.0, subsets=("a", "b")),
            Row("kmeans", "kmeans", 1, 50.0, 0.0, 1, None, weighted=True)]
    reports = tmp_path / "cal" / "reports"
    reports.mkdir(parents=True)
    (reports / "full_data_10ep.json").write_text(json.dumps({"mean": 90.0, "record": {"dataset": {"name": "digits"}}}))
    full = full_data_accuracy(str(tmp_path / "cal"), "digits")
    rows = with_relative_scores(rows, full)
    assert rows[0].ior == pytest.approx(8.0) and rows[0].hlr == pytest.approx(10.0)
    assert rows[0].lrs == pytest.approx(lrs(8.0, 10.0))
    assert all(r.ior is None for r in rows[1:])  # random real itself, and an IPC without random real
    table = results_markdown(rows, "digits", EvalConfig(), {"name": "pixel"}, 1.0)
    assert "| IOR | HLR | LRS |" in table and f"| +8.00 | +10.00 | {lrs(8.0, 10.0):.2f} |" in table
    with pytest.raises(DataError, match="calibrated 'digits', not 'mnist'"):
        full_data_accuracy(str(tmp_path / "cal"), "mnist")
    with pytest.raises(DataError, match="found 0"):
        full_data_accuracy(str(tmp_path), "digits")
