"""benchmarks/bench_scale.py's pieces that need no subprocess: the size-N folders and the report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from latentdd.data import load_dataset
from latentdd.errors import DataError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_size_n_folders_link_a_balanced_prefix_of_each_class(bench, make_class_tree, tmp_path):
    root = tmp_path / "root"
    make_class_tree(root / "train", {"a": 5, "b": 7})
    make_class_tree(root / "val", {"a": 1, "b": 1})
    folder = bench.link_subset(root, 6, tmp_path / "n6")
    train = load_dataset("imagefolder", "train", root=folder)
    assert torch.equal(torch.bincount(train.labels), torch.tensor([3, 3]))
    assert [f.name for f in train.files[:3]] == sorted(p.name for p in (root / "train" / "a").iterdir())[:3]
    assert len(load_dataset("imagefolder", "test", root=folder)) == 2
    assert bench.link_subset(root, 6, tmp_path / "n6") == folder  # again: the links are reused
    with pytest.raises(DataError, match="needs 6 of each class"):
        bench.link_subset(root, 12, tmp_path / "n12")


def test_the_table_and_the_plot_hold_every_stage(bench):
    rows = [{"n": n, "stage": s, "wall_seconds": n / 100, "peak_rss_mb": 500.0} for n in (200, 400)
            for s in ("encode", "distill")]
    table = bench.markdown(rows)
    assert "| 400 | 4.0 | 500 | 4.0 | 500 |" in table and table.count("\n") == 3
    assert bench.plot(rows, "t")[:8] == b"\x89PNG\r\n\x1a\n"
