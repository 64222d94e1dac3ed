"""Entering the flow at an artifact: `distill --latents DIR` reads the cache `encode --out DIR` wrote,
and `SyntheticLatents.save` / `load` round-trip the distilled latents."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from latentdd.cli import main

diffusers = pytest.importorskip("diffusers")


def save_tiny_vae(folder, scaling_factor: float = 0.5):
    """A 2-block AutoencoderKL: 1 x 8 x 8 digits -> (4, 4, 4) latents, saved as a diffusers folder."""
    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8], layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=8, scaling_factor=scaling_factor,
    ).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """(vae folder, the train split's latent cache written by `latentdd encode`)."""
    root = tmp_path_factory.mktemp("encoded")
    vae = save_tiny_vae(root / "vae")
    assert main(["encode", "--dataset", "digits", "--vae", str(vae), "--cache-dir", str(root / "cache"),
                 "--out", str(root / "latents"), "--quiet"]) == 0
    return vae, root / "latents"


def distill(tmp_path, vae, out: str, *extra: str) -> int:
    return main(["distill", "--dataset", "digits", "--vae", str(vae), "--cache-dir", str(tmp_path / "cache"),
                 "--method", "kmeans", "--ipc", "2", "--out", str(tmp_path / out), "--quiet", *extra])


def test_distill_reads_an_encoded_cache_without_encoding(tmp_path, encoded, monkeypatch):
    import latentdd.pipelines.distill

    vae, latents = encoded
    assert distill(tmp_path, vae, "encoded_here") == 0  # encodes into its own content-keyed cache
    monkeypatch.setattr(latentdd.pipelines.distill, "encode_split", lambda *a, **k: pytest.fail("encoded again"))
    assert distill(tmp_path / "other", vae, "from_cache", "--latents", str(latents)) == 0
    out = tmp_path / "other" / "from_cache"
    record = json.loads((out / "distill.json").read_text())["record"]
    assert record["vae"]["cache"] == str(latents)
    a, b = (load_file(str(folder / "latents.safetensors")) for folder in (tmp_path / "encoded_here", out))
    assert torch.equal(a["latents"], b["latents"])  # the same train latents, the same kmeans
    assert main(["distill", "--config", str(_yaml(tmp_path, {"distill": {"latents": str(latents)}})), "--dataset",
                 "digits", "--vae", str(vae), "--cache-dir", str(tmp_path / "c2"), "--ipc", "2", "--out",
                 str(tmp_path / "yaml"), "--quiet"]) == 0


def _yaml(tmp_path, sections: dict):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.mark.bad_input
def test_distill_refuses_a_cache_of_another_vae(tmp_path, encoded, capsys):
    vae, latents = encoded
    other = save_tiny_vae(tmp_path / "other_vae", scaling_factor=0.25)
    assert distill(tmp_path, other, "x", "--latents", str(latents)) == 2
    err = capsys.readouterr().err
    assert "encoded with another VAE" in err and "name" in err and "scaling_factor" in err and "--vae" in err
    assert distill(tmp_path, vae, "x", "--vae-input-size", "16", "--latents", str(latents)) == 2
    assert "adapter" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.bad_input
def test_distill_refuses_a_cache_of_another_split_or_no_cache(tmp_path, encoded, capsys):
    vae, _ = encoded
    assert main(["encode", "--dataset", "digits", "--vae", str(vae), "--cache-dir", str(tmp_path / "cache"),
                 "--split", "test", "--out", str(tmp_path / "test_latents"), "--quiet"]) == 0
    assert distill(tmp_path, vae, "x", "--latents", str(tmp_path / "test_latents")) == 2
    assert "needs its train split" in capsys.readouterr().err
    assert distill(tmp_path, vae, "x", "--latents", str(tmp_path / "nothing_here")) == 2
    assert "not a finished latent cache" in capsys.readouterr().err


def synthetic_latents(*, soft: bool = True):
    from latentdd.latents.types import SyntheticLatents

    g = torch.Generator().manual_seed(0)
    soft_labels = torch.softmax(torch.randn(6, 3, generator=g), dim=1) if soft else None
    return SyntheticLatents(torch.randn(6, 4, 2, 2, generator=g), torch.tensor([0, 0, 1, 1, 2, 2]), ["a", "b", "c"],
                            "kmeans", {"weights_mode": "mass", "medoid": False},
                            weights=torch.tensor([0.25, 0.75, 0.5, 0.5, 1.0, 0.0]),
                            extras={"quantization_error": [0.5, 0.25, 0.125], "backend": "faiss"},
                            soft_labels=soft_labels)


@pytest.mark.parametrize("soft", [True, False])
def test_synthetic_latents_save_load_round_trip(tmp_path, soft):
    from latentdd.latents.types import SyntheticLatents

    synthetic = synthetic_latents(soft=soft)
    path = synthetic.save(tmp_path / "deep" / "latents.safetensors")
    loaded = SyntheticLatents.load(path)
    for name in ("latents", "labels", "weights", "soft_labels"):
        a, b = getattr(synthetic, name), getattr(loaded, name)
        assert (a is None and b is None) or (torch.equal(a, b) and a.dtype == b.dtype), name
    assert (loaded.class_names, loaded.method, loaded.params, loaded.extras) == \
        (synthetic.class_names, synthetic.method, synthetic.params, synthetic.extras)
    assert [p.name for p in path.parent.iterdir()] == ["latents.safetensors"]  # no temporary file left


def test_the_saved_file_keeps_no_run_dependent_extras_and_files_that_hold_them_still_load(tmp_path):
    """Issue 32, defect 7: timings, the resumed-from iteration and cache hits are not part of the result."""
    from safetensors.torch import save_file

    from latentdd.latents.types import SyntheticLatents

    synthetic = synthetic_latents()
    run = {"seconds": 3.2, "setup_seconds": 0.4, "iterations_per_second": 9.1, "resumed_from": 20,
           "bank_cached": True, "bank_train_seconds": 51.0, "counts_cached": False}
    synthetic.extras = {**synthetic.extras, **run,
                        "loss_curve": [{"iteration": 5, "seconds": 1.5, "loss": 0.25}], "depth": 3}
    loaded = SyntheticLatents.load(synthetic.save(tmp_path / "latents.safetensors"))
    assert loaded.extras == {"quantization_error": [0.5, 0.25, 0.125], "backend": "faiss",
                             "loss_curve": [{"iteration": 5, "loss": 0.25}], "depth": 3}
    # A file written before: its timings load as they were stored.
    fields = {"format": "latentdd-synthetic-latents", "format_version": 1, "class_names": ["a", "b", "c"],
              "method": "dm", "params": {}, "extras": run}
    save_file({"latents": synthetic.latents, "labels": synthetic.labels}, str(tmp_path / "old.safetensors"),
              metadata={"latentdd": json.dumps(fields)})
    assert SyntheticLatents.load(tmp_path / "old.safetensors").extras == run
    # A distill folder's distill.json gives the timings back, unless it disagrees with the file on the rest.
    full = {**synthetic.extras}
    assert SyntheticLatents.load(tmp_path / "latents.safetensors", recorded_extras=full).extras == full
    other = {**full, "depth": 4}
    assert SyntheticLatents.load(tmp_path / "latents.safetensors", recorded_extras=other).extras == loaded.extras


@pytest.mark.bad_input
def test_synthetic_latents_load_refuses_missing_and_damaged_files(tmp_path):
    from safetensors.torch import save_file

    from latentdd.errors import DataError
    from latentdd.latents.types import SyntheticLatents

    with pytest.raises(DataError, match="do not exist"):
        SyntheticLatents.load(tmp_path / "missing.safetensors")
    path = synthetic_latents().save(tmp_path / "latents.safetensors")
    data = path.read_bytes()
    for damaged in (data[: len(data) // 2], b"not a safetensors file at all", b""):
        path.write_bytes(damaged)
        with pytest.raises(DataError, match="damaged"):
            SyntheticLatents.load(path)
    save_file({"latents": torch.zeros(2, 1, 1, 1), "labels": torch.zeros(2, dtype=torch.long)}, str(path))
    with pytest.raises(DataError, match="not written by SyntheticLatents.save"):
        SyntheticLatents.load(path)
    save_file({"latents": torch.zeros(2, 1, 1, 1)}, str(path), metadata={"latentdd": "{not json"})
    with pytest.raises(DataError, match="unreadable metadata"):
        SyntheticLatents.load(path)
    fields = {"format": "latentdd-synthetic-latents", "format_version": 1, "class_names": ["a"], "method": "kmeans"}
    save_file({"latents": torch.zeros(2, 1, 1, 1)}, str(path), metadata={"latentdd": json.dumps(fields)})
    with pytest.raises(DataError, match="lack labels"):
        SyntheticLatents.load(path)


def test_distill_folders_store_synthetic_latents_that_load_and_old_tensors_only_folders_are_refused(tmp_path, encoded):
    from safetensors.torch import save_file

    from latentdd.errors import DataError
    from latentdd.latents.types import SyntheticLatents
    from latentdd.pipelines.distill import load_synthetic

    vae, latents = encoded
    assert distill(tmp_path, vae, "k", "--latents", str(latents)) == 0
    folder = tmp_path / "k"
    stored = SyntheticLatents.load(folder / "latents.safetensors")
    info = json.loads((folder / "distill.json").read_text())
    assert stored.method == "kmeans" and stored.extras == info["extras"] and stored.params == info["params"]
    digits = [str(d) for d in range(10)]
    again, _ = load_synthetic(folder, digits)
    assert torch.equal(again.latents, stored.latents) and torch.equal(again.weights, stored.weights)
    # A folder written before SyntheticLatents.save (tensors only, the rest in distill.json) is no longer read:
    # a DataError that says what to do, not a traceback.
    save_file({"latents": stored.latents, "labels": stored.labels, "weights": stored.weights},
              str(folder / "latents.safetensors"))
    with pytest.raises(DataError, match=r"no latentdd metadata.*no longer reads.*distil again, or delete the folder"):
        load_synthetic(folder, digits)
