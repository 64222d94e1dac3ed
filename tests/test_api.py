"""The Python API: each stage from `latentdd` itself, returning the typed artifacts; the README's example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import latentdd
from latentdd.data.base import SyntheticImages
from latentdd.latents.types import SyntheticLatents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return latentdd.encode(latentdd.DataConfig(name="digits"),
                           latentdd.LatentSpaceConfig(vae="pixel", cache_dir=str(cache)))


def test_stages_return_typed_artifacts_and_the_preset_is_recorded(space):
    synthetic = latentdd.distill(space, "kmeans", ipc=2, seed=0)
    assert isinstance(synthetic, SyntheticLatents) and len(synthetic) == 20
    assert synthetic.extras["preset"] == {"name": "default", "ipc": None, "overrides": {}}
    images = latentdd.render(synthetic, space)
    assert isinstance(images, SyntheticImages) and images.images.shape[1:] == space.train.load([0]).shape[1:]
    report = latentdd.evaluate(images, space, protocol="dc", epochs=2, num_eval=1, compile="off")
    assert len(report.accuracies) == 1 and 0 <= report.accuracies[0] <= 100
    assert report.record["evaluator"]["epochs"] == 2


def test_distill_merges_params_over_the_preset(space, monkeypatch):
    import latentdd.pipelines.distill as pd

    seen = {}
    monkeypatch.setattr(pd, "distill_latents", lambda *a, **k: seen.update(k) or SyntheticLatents(
        torch.zeros(10, *space.latents.latent_shape), torch.arange(10), list(space.latents.class_names), "dm"))
    synthetic = latentdd.distill(space, "dm", ipc=10, iterations="7")
    from latentdd.presets import resolve

    assert seen["params"] == resolve("dm", 10).params | {"iterations": 7}  # one key changed, the rest the preset's
    assert synthetic.extras["preset"] == {"name": "default", "ipc": 10, "overrides": {"iterations": 7}}
    latentdd.distill(space, "dm", ipc=10, preset="reference", iterations=7)
    assert seen["params"] == {"iterations": 7}


def test_a_stage_subpackage_is_both_module_and_function():
    import latentdd.distill

    assert callable(latentdd.distill) and latentdd.distill.make_distiller("kmeans").name == "kmeans"
    assert callable(latentdd.render) and "vae" in latentdd.render.DECODERS
    assert callable(latentdd.evaluate) and "dsa" in latentdd.evaluate.PROTOCOLS
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        latentdd.nothing  # noqa: B018


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", text, re.S)
    assert match, "README.md has no Python example between <!-- example:start --> and <!-- example:end -->"
    monkeypatch.setenv("HOME", str(tmp_path))  # its caches go to a fresh ~/.cache/latentdd
    exec(compile(match.group(1), "README.md example", "exec"), {})
    assert re.search(r"\d+\.\d+", capsys.readouterr().out)  # it printed an accuracy
