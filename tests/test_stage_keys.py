"""One cache-key rule (`latentdd.cachekey.content_key`) for every stage: a changed input or
setting runs the stage again, an unchanged one reuses what it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from latentdd.config import DataConfig
from latentdd.data import load_dataset
from latentdd.latents.types import Latents

TINY_VAE = {"image_size": 8, "block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 2,
            "max_steps": 2, "batch_size": 64, "checkpoint_every": 0, "scale_images": 64}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").subset(range(200)), load_dataset("digits", "test").subset(range(50))


def _counting(monkeypatch, module, name):
    """Wrap module.name so that calls are counted; returns the list that grows by one per call."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _one_pixel_changed(data):
    from latentdd.data.base import ImageSet

    images = data.images.clone()
    images[7, 0, 3, 3] = 1.0 - images[7, 0, 3, 3]
    return ImageSet(images, data.labels, list(data.class_names), data.name, data.split, data.source)


def test_vae_fit_reruns_on_changed_images_or_settings_only(digits, tmp_path, monkeypatch):
    from latentdd.vae import FitVAEConfig, fit, fit_vae

    train, test = digits
    trained = _counting(monkeypatch, fit, "_train")
    fit_vae(train, test, FitVAEConfig(**TINY_VAE), tmp_path, progress=False)
    fit_vae(train, test, FitVAEConfig(**TINY_VAE, log_every=7), tmp_path, progress=False)  # same weights: reused
    assert len(trained) == 1
    fit_vae(_one_pixel_changed(train), test, FitVAEConfig(**TINY_VAE), tmp_path, progress=False)
    fit_vae(train, test, FitVAEConfig(**(TINY_VAE | {"lr": 2e-3})), tmp_path, progress=False)
    assert len(trained) == 3


def test_prior_fit_reruns_on_changed_latents_or_settings_only(tmp_path, monkeypatch):
    from latentdd.prior import FitPriorConfig, fit, fit_prior

    g = torch.Generator().manual_seed(0)
    latents = Latents(torch.randn(16, 2, 4, 4, generator=g), torch.arange(16) % 2, ["a", "b"])
    config = dict(block_out_channels=[8, 16], norm_num_groups=4, attention=False, max_steps=2, batch_size=8,
                  checkpoint_every=0, num_train_timesteps=10)
    trained = _counting(monkeypatch, fit, "_train")
    fit_prior(latents, FitPriorConfig(**config), tmp_path, progress=False)
    fit_prior(latents, FitPriorConfig(**config, log_every=3), tmp_path, progress=False)
    assert len(trained) == 1
    changed = latents.latents.clone()
    changed[3, 1, 2, 2] += 0.5
    fit_prior(Latents(changed, latents.labels, latents.class_names), FitPriorConfig(**config), tmp_path,
              progress=False)
    fit_prior(latents, FitPriorConfig(**(config | {"seed": 1})), tmp_path, progress=False)
    assert len(trained) == 3


def test_judge_reruns_on_changed_images_labels_or_settings_only(digits, tmp_path, monkeypatch):
    from latentdd.data.base import ImageSet
    from latentdd.evaluate import consistency
    from latentdd.evaluate.consistency import JudgeConfig, fit_judge

    train, test = digits
    trained = _counting(monkeypatch, consistency, "train_model")
    config = JudgeConfig(width=8, epochs=1)
    assert fit_judge(train, test, config, tmp_path).report["cached"] is False
    assert fit_judge(train, test, config, tmp_path).report["cached"] is True
    assert len(trained) == 1
    relabelled = ImageSet(train.images, train.labels.roll(1), list(train.class_names), train.name, train.split)
    fit_judge(relabelled, test, config, tmp_path)  # the images alone keyed it before: a stale judge was reused
    fit_judge(_one_pixel_changed(train), test, config, tmp_path)
    fit_judge(train, test, JudgeConfig(width=8, epochs=2), tmp_path)
    assert len(trained) == 4


def _write_tree(root, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / split / name / f"{i}.png")


def test_latent_cache_is_keyed_on_the_train_images_content(digits, tmp_path, monkeypatch):
    """A train image edited in place (same size, same count) is encoded again: the key is
    the images' content, not only the dataset's name and size."""
    import latentdd.pipelines.distill
    from latentdd.vae import FitVAEConfig, fit_vae
    from latentdd.pipelines.distill import LatentSpaceConfig, prepare_latent_space

    _, report = fit_vae(*digits, FitVAEConfig(**TINY_VAE), tmp_path / "vae", progress=False)
    root = tmp_path / "pets"
    _write_tree(root)
    data = DataConfig(name="imagefolder", root=str(root))
    space = LatentSpaceConfig(vae=str(tmp_path / "vae" / report["hash"][:16]), cache_dir=str(tmp_path / "cache"))
    encoded = _counting(monkeypatch, latentdd.pipelines.distill, "encode_split")
    first = prepare_latent_space(data, space, progress=False)
    assert torch.equal(prepare_latent_space(data, space, progress=False).latents.latents, first.latents.latents)
    assert len(encoded) == 1
    image = root / "train" / "dog" / "3.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[2, 2] = 255 - pixels[2, 2]
    Image.fromarray(pixels).save(image)
    again = prepare_latent_space(data, space, progress=False)
    assert len(encoded) == 2 and again.record["vae"]["cache"] != first.record["vae"]["cache"]
    assert not torch.equal(again.latents.latents, first.latents.latents)


# --- run and calibrate ---------------------------------------------------------------------

TINY_FIT = [a for k, v in TINY_VAE.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture
def run_args(tmp_path):
    def make(seed=0, epochs=1):
        config = tmp_path / f"run_{seed}_{epochs}.yaml"
        config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [2], "seed": seed,
                                                  "random_real_subsets": 1},
                                          "evaluator": {"epochs": epochs, "width": 8, "compile": "off"}}))
        return ["run", "--config", str(config), "--dataset", "digits", "--vae", "fit", "--cache-dir",
                str(tmp_path / "cache"), *TINY_FIT, "--quiet", "--out", str(tmp_path / "run")]
    return make


def test_run_seed_enters_the_random_real_subset_key(tmp_path, run_args, monkeypatch):
    from latentdd.cli import main
    from latentdd.pipelines import run as run_module

    def indices(seed):
        manifest = json.loads((tmp_path / "run" / f"random-real-s{seed}_ipc2" / "manifest.json").read_text())
        return manifest["meta"]["method"]["train_indices"]

    assert main(run_args(seed=0)) == 0
    first = indices(0)
    exported = _counting(monkeypatch, run_module, "export_image_folder")
    assert main(run_args(seed=0)) == 0  # unchanged: the subset is reused
    assert exported == [] and indices(0) == first
    assert main(run_args(seed=1)) == 0  # it was reused before, whatever the seed
    assert len(exported) == 1 and indices(1) != first
    # The key, not the folder's name, decides: a folder holding another draw is drawn again.
    (tmp_path / "run" / "random-real-s0_ipc2").rename(tmp_path / "run" / "random-real-s1_ipc2.tmp")
    import shutil

    shutil.rmtree(tmp_path / "run" / "random-real-s1_ipc2")
    (tmp_path / "run" / "random-real-s1_ipc2.tmp").rename(tmp_path / "run" / "random-real-s1_ipc2")
    assert indices(1) == first
    assert main(run_args(seed=1)) == 0
    assert len(exported) == 2 and indices(1) != first


def test_run_reuses_reports_of_a_redistilled_identical_set(tmp_path, run_args, monkeypatch):
    """The report key is the images' content and the evaluator, not manifest.json's bytes
    (which hold stage timings): a set distilled again to the same images is not evaluated again."""
    import shutil

    from latentdd.cli import main
    from latentdd.pipelines import evaluation
    from latentdd.pipelines import run as run_module

    assert main(run_args()) == 0
    shutil.rmtree(tmp_path / "run" / "random_ipc2")  # distilled again: same images, other timings
    evaluated = _counting(monkeypatch, evaluation, "evaluate_synthetic")
    distilled = _counting(monkeypatch, run_module, "distill_to_folder")
    assert main(run_args()) == 0
    assert len(distilled) == 1 and evaluated == []
    assert main(run_args(epochs=2)) == 0  # a changed evaluator setting evaluates both sets again
    assert len(evaluated) == 2


def test_calibrate_reruns_reports_whose_evaluator_settings_changed(tmp_path, monkeypatch):
    from latentdd.pipelines import calibrate
    from latentdd.pipelines.calibrate import CalibrateConfig, run_calibration

    def config(width):
        return CalibrateConfig(runs={"dc": [1]}, num_eval={"dc": 1}, full_data_epochs=1,
                               evaluator={"epochs": 1, "width": width, "compile": "off"})

    first = run_calibration(DataConfig(name="digits"), config(8), tmp_path, progress=False)
    evaluated = _counting(monkeypatch, calibrate, "evaluate_synthetic")
    trained = _counting(monkeypatch, calibrate, "train_model")
    assert run_calibration(DataConfig(name="digits"), config(8), tmp_path, progress=False) == first
    assert evaluated == [] and trained == []
    run_calibration(DataConfig(name="digits"), config(16), tmp_path, progress=False)  # reused before: path existed
    assert len(evaluated) == 1 and len(trained) == 1  # the random-real run and the full-data run
    report = json.loads((tmp_path / "reports" / "random_dc_ipc1.json").read_text())
    assert report["record"]["evaluator"]["width"] == 16


def test_latents_from_a_folder_it_cannot_reuse_says_why(tmp_path, caplog):
    """run.latents_from names an earlier run: a set made with another VAE or other parameters is distilled again,
    and the log says which of them differ instead of starting in silence."""
    import json
    import logging

    from latentdd.distill import distiller_params
    from latentdd.config import plain
    from latentdd.pipelines.run import _say_why_not_reused

    params = plain(distiller_params("kmeans"))  # a request holds every parameter
    request = {"method": "kmeans", "params": params | {"niter": 20}, "ipc": 1, "seed": 0, "vae": {"name": "fit:a"}}
    folder = tmp_path / "kmeans_ipc1"
    folder.mkdir()
    (folder / "distill.json").write_text(json.dumps({"request": request | {"params": params | {"niter": 5},
                                                                           "vae": {"name": "fit:b"}}}))
    with caplog.at_level(logging.WARNING):
        _say_why_not_reused(folder, request)
        _say_why_not_reused(tmp_path / "missing", request)
    assert "made with another params ['niter'], vae than this run's" in caplog.text
    assert "holds no distilled set" in caplog.text
