"""One source of defaults: the shipped presets, their merge with overrides, decoders' own defaults, and help
text generated from the registries."""

from __future__ import annotations

import argparse

import pytest

from latentdd.cli import make_parser
from latentdd.distill import DISTILLERS, distiller_params, make_distiller
from latentdd.errors import DataError
from latentdd.presets import DEFAULT, REFERENCE, all_preset_names, preset_names, presets, resolve


@pytest.mark.parametrize("method, name, ipc", [(m, n, i) for m, named in presets().items() for n, p in named.items()
                                              for i in p["ipc"]])
def test_every_shipped_preset_builds_its_distiller(method, name, ipc):
    assert method in DISTILLERS
    distiller = make_distiller(method, **resolve(method, ipc, name).params)
    assert distiller.iterations < distiller_params(method)["iterations"]  # sized for a CPU, unlike the reference


def test_resolve_takes_the_largest_listed_ipc_not_above_and_merges_overrides():
    listed = {ipc: resolve("dm", ipc).params for ipc in presets()["dm"][DEFAULT]["ipc"]}
    assert resolve("dm", 20).preset_ipc == 10 and resolve("dm", 1000).preset_ipc == 50
    merged = resolve("dm", 10, DEFAULT, {"lr": 2.0})
    assert merged.params == listed[10] | {"lr": 2.0} and merged.overrides == {"lr": 2.0}
    assert merged.record() == {"name": DEFAULT, "ipc": 10, "overrides": {"lr": 2.0}}
    assert resolve("dm", 10, REFERENCE, {"lr": 2.0}).params == {"lr": 2.0}
    assert resolve("kmeans", 10).params == {} and preset_names("kmeans") == [DEFAULT, REFERENCE]
    with pytest.raises(DataError, match="no preset 'defualt'.*did you mean 'default'"):
        resolve("dm", 10, "defualt")


def test_each_decoder_owns_its_defaults_and_a_given_setting_overrides_them():
    from latentdd.pipelines.distill import DecoderConfig
    from latentdd.render.sd_img2img import StableDiffusionImg2ImgDecoder

    sd = DecoderConfig(name="sd-img2img")
    assert (sd.strength, sd.guidance_scale) == (StableDiffusionImg2ImgDecoder.strength, 8.0) == (0.7, 8.0)
    assert DecoderConfig(name="sd-img2img", strength=0.5).strength == 0.5
    diffusion = DecoderConfig(name="diffusion")
    assert (diffusion.strength, diffusion.guidance_scale, diffusion.batch_size) == (0.5, 4.0, 256)
    assert DecoderConfig(name="dit").strength == 0.7


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{command: its whole --help text}."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.format_help() for name, p in sub.choices.items()}


def test_help_lists_every_registered_name(monkeypatch):
    from latentdd.evaluate.protocols import PROTOCOLS
    from latentdd.nn.convnet import MODELS
    from latentdd.pipelines.cross_arch import STUDENT_PRESETS
    from latentdd.render import DECODERS

    monkeypatch.setenv("COLUMNS", "100000")  # argparse wraps at the terminal's width, hyphens included
    helps = _helps(make_parser())
    for command in ("distill", "run", "compare"):
        assert all(name in helps[command] for name in DISTILLERS), command
        assert all(name in helps[command] for name in DECODERS), command
    assert all(name in helps["distill"] for name in all_preset_names())
    for command in ("evaluate", "run", "compare"):
        assert all(f"{name}:" in helps[command] for name in PROTOCOLS), command
        assert all(name in helps[command] for name in MODELS), command
    assert all(name in helps["run"] for name in STUDENT_PRESETS)
    assert "latentdd.distill`" not in helps["distill"]  # no pointer to a help that does not exist


def test_the_default_presets_reproduce_the_requests_of_the_committed_sets(monkeypatch):
    """The presets moved out of the code without changing a set: on a machine that computes in bfloat16 (where
    the committed rows ran), a bare method's request equals the committed request of its val-chosen test row,
    so `latentdd run` reuses those folders and a re-run makes the same set."""
    import json
    from pathlib import Path

    from latentdd.distill import matching
    from latentdd.config import build
    from latentdd.pipelines.run import _distill_request, _with_defaults
    from latentdd.pipelines.run_config import RunConfig

    monkeypatch.setattr(matching.embedder, "native_bfloat16", lambda device: True)
    root = Path(__file__).resolve().parents[1] / "results" / "matching_fashion_mnist"
    rows = {("dm", 10): "matching_dm_fast_ipc10/distill/dm_ipc10.json",
            ("dm", 50): "search_ipc50_dm_b128/distill/dm_b128_it1000_ipc50.json"}
    for (method, ipc), path in rows.items():
        stored = json.loads((root / path).read_text())["request"]
        # Parameters added to the distiller since then read as their defaults, as `run` reads a stored request.
        stored["params"] = _with_defaults(stored["params"], distiller_params(method))
        spec = build(RunConfig, {"methods": [method], "ipcs": [ipc]}, section="run").specs()[0]
        request = _distill_request(spec, ipc, stored["seed"], stored["vae"])
        params = dict(request["params"])
        if "checkpoint_every" in stored["params"]:  # how often a run checkpoints changes no set
            params["checkpoint_every"] = stored["params"]["checkpoint_every"]
        assert params == stored["params"], (method, ipc)
