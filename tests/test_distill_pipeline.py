"""`latentdd distill` / `encode` end to end on sklearn digits with a tiny fitted VAE."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from latentdd.cli import main

TINY_FIT = ["--set", "image_size=8", "--set", "block_out_channels=[8, 16]", "--set", "norm_num_groups=4",
            "--set", "latent_channels=2", "--set", "max_steps=20", "--set", "batch_size=64",
            "--set", "checkpoint_every=0", "--set", "scale_images=256"]


@pytest.fixture
def common(tmp_path):
    return ["--dataset", "digits", "--vae", "fit", "--cache-dir", str(tmp_path / "cache"), *TINY_FIT, "--quiet"]


def test_distill_writes_images_latents_and_record(tmp_path, common, capsys):
    out = tmp_path / "kmeans"
    assert main(["distill", *common, "--method", "kmeans", "--ipc", "2", "--seed", "0", "--out", str(out)]) == 0
    assert len(list((out / "images").glob("*/*.png"))) == 20
    from PIL import Image

    assert Image.open(out / "grid.png").size == (10 * 9 + 1, 10 * 9 + 1)  # 10 classes x 10 slots of 8 px
    tensors = load_file(str(out / "latents.safetensors"))
    assert tensors["latents"].shape == (20, 2, 4, 4) and tensors["labels"].tolist() == sum([[k] * 2 for k in range(10)], [])
    weights = tensors["weights"].view(10, 2).sum(1)
    assert torch.allclose(weights, torch.ones(10))  # Voronoi masses sum to 1 in every class
    info = json.loads((out / "distill.json").read_text())
    assert info["method"] == "kmeans" and len(info["extras"]["quantization_error"]) == 10
    record = json.loads((out / "images" / "manifest.json").read_text())["record"]
    assert record["vae"]["name"].startswith("fit:") and record["decoder"]["name"] == "vae"
    assert record["method"]["name"] == "kmeans" and record["ipc"] == 2
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["distill"]["method"] == "kmeans" and saved["latent"]["fit"]["max_steps"] == 20
    # the exported folder evaluates, with the kmeans weights
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--images", str(out / "images"), "--dataset", "digits", "--use-weights", "--epochs", "2",
                 "--width", "16", "--num-eval", "1", "--compile", "off", "--quiet", "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())
    assert evaluated["record"]["evaluator"]["sample_weights"] is True
    assert evaluated["record"]["vae"]["name"] == record["vae"]["name"]


def test_second_distill_reuses_vae_and_latents_and_is_identical(tmp_path, common, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["distill", *common, "--method", "herding", "--ipc", "3", "--out", str(a)]) == 0
    from latentdd.latents import cache
    from latentdd.vae import fit

    def fail(*args, **kwargs):
        raise AssertionError("cached stage ran again")

    import latentdd.pipelines.distill

    monkeypatch.setattr(fit, "_train", fail)
    monkeypatch.setattr(cache, "encode_split", fail)
    monkeypatch.setattr(latentdd.pipelines.distill, "encode_split", fail)  # the name prepare_latent_space calls
    assert main(["distill", *common, "--method", "herding", "--ipc", "3", "--out", str(b)]) == 0
    assert torch.equal(load_file(str(a / "latents.safetensors"))["latents"],
                       load_file(str(b / "latents.safetensors"))["latents"])
    assert json.loads((a / "images/manifest.json").read_text())["images"] == \
        json.loads((b / "images/manifest.json").read_text())["images"]


def test_distill_errors_are_actionable(tmp_path, common, capsys):
    assert main(["distill", *common, "--method", "kmeans", "--ipc", "1000", "--out", str(tmp_path / "x")]) == 2
    assert "lower --ipc" in capsys.readouterr().err
    assert main(["distill", *common, "--method", "nope", "--ipc", "1", "--out", str(tmp_path / "y")]) == 2
    assert "kmeans" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_encode_command_writes_a_finished_cache(tmp_path, common):
    from latentdd.latents.cache import load_latents

    out = tmp_path / "latents"
    assert main(["encode", *common, "--split", "test", "--out", str(out)]) == 0
    latents = load_latents(out)
    assert latents.latents.shape == (359, 2, 4, 4)


def test_two_process_accelerate_encode_equals_one_process(tmp_path, common):
    """`accelerate launch` with 2 CPU processes (gloo) encodes half the shards each; the cache
    equals the 1-process one bit for bit."""
    import os
    import subprocess
    import sys

    from latentdd.latents.cache import load_latents
    from latentdd.parallel import launch_args

    args = [*common, "--shard-size", "200"]
    assert main(["encode", *args, "--out", str(tmp_path / "one")]) == 0  # also fits the VAE once
    launch = [sys.executable, *launch_args(2), "-m", "latentdd", "encode", *args, "--out", str(tmp_path / "two")]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # launch_args picks a free port
    done = subprocess.run(launch, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("encoded 1438 images") == 1  # one process group, rank 0 reports
    assert torch.equal(load_latents(tmp_path / "one").latents, load_latents(tmp_path / "two").latents)


def test_run_main_job_tabulates_and_resumes(tmp_path, common, monkeypatch):
    out = tmp_path / "run"
    args = ["run", *common, "--methods", "kmeans,random", "--ipc", "2", "--epochs", "2", "--width", "16",
            "--compile", "off", "--out", str(out)]
    assert main(args) == 0
    table = (out / "results.md").read_text()
    for row in ("| kmeans + weights | 2 |", "| random | 2 |", "| random-real (pixels) s4 | 2 |",
                "| random-real (pixels), 5 subsets | 2 |"):
        assert row in table
    assert len(list((out / "reports").glob("*.json"))) == 2 + 5  # kmeans, random, 5 random-real subsets
    from latentdd.pipelines import evaluation
    from latentdd.pipelines import run as run_module

    def fail(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(evaluation, "evaluate_synthetic", fail)
    monkeypatch.setattr(run_module, "distill_to_folder", fail)
    assert main(args) == 0
    assert (out / "results.md").read_text().splitlines()[:-1] == table.splitlines()[:-1]


def test_run_reads_a_latent_cache_that_encode_wrote_and_refuses_another_vaes(tmp_path, common, monkeypatch, capsys):
    """`run --latents DIR` distils the cache `encode --out DIR` wrote (no encoding, recorded), and a cache
    made with another VAE is refused before any work."""
    import latentdd.pipelines.distill as distill_module

    cache = tmp_path / "latents"
    assert main(["encode", *common, "--out", str(cache)]) == 0
    monkeypatch.setattr(distill_module, "encode_split", lambda *a, **k: pytest.fail("run encoded again"))
    config = tmp_path / "run.yaml"
    config.write_text("run: {random_real: false}\n")
    out = tmp_path / "run"
    args = ["run", "--config", str(config), *common, "--methods", "kmeans", "--ipc", "1", "--epochs", "1",
            "--width", "8", "--compile", "off", "--latents", str(cache), "--out", str(out)]
    assert main(args) == 0
    record = json.loads(next((out / "reports").glob("*.json")).read_text())["record"]
    assert json.dumps(record).count(str(cache)) >= 1
    pixel = tmp_path / "pixel-latents"
    other = ["--dataset", "digits", "--vae", "pixel", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["encode", *other, "--out", str(pixel)]) == 0
    capsys.readouterr()
    assert main([*args[:-2], "--latents", str(pixel), "--out", str(tmp_path / "run2")]) == 2
    assert "encoded with another VAE" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "reports").exists()


def test_run_trains_each_random_real_subset_its_own_number_of_times(tmp_path, common):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"methods": ["kmeans"], "ipcs": [1], "random_real_subsets": 2, "random_real_num_eval": 1},
        "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 2}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), *common, "--out", str(out)]) == 0
    runs = {path.stem: len(json.loads(path.read_text())["accuracies"]) for path in (out / "reports").glob("*.json")}
    assert runs == {"kmeans_ipc1": 2, "random-real-s0_ipc1": 1, "random-real-s1_ipc1": 1}
    assert "| random-real (pixels), 2 subsets | 1 |" in (out / "results.md").read_text()


def test_run_reuses_finished_trainings_seed_by_seed(tmp_path, common, monkeypatch, capsys):
    """`run.reports_from`: another run's one training of the same set (and its random-real subset) becomes the
    first of this run's three, recorded with its report; a set that another method of the run already picked
    trains no more; a wrong folder is refused before any work."""
    import latentdd.evaluate.trainer as trainer

    evaluator = {"epochs": 1, "width": 8, "compile": "off"}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [1], "random_real_subsets": 1},
                                      "evaluator": evaluator | {"num_eval": 1}}))
    first = tmp_path / "first"
    assert main(["run", "--config", str(config), *common, "--out", str(first)]) == 0
    trained = []
    real_train = trainer.train_model
    monkeypatch.setattr(trainer, "train_model", lambda *a, **k: trained.append(k["seed"]) or real_train(*a, **k))
    config.write_text(yaml.safe_dump({
        "run": {"methods": ["random", {"method": "random", "label": "random-again"}], "ipcs": [1],
                "random_real_subsets": 1, "reports_from": [str(first)]},
        "evaluator": evaluator | {"num_eval": 3}}))
    second = tmp_path / "second"
    assert main(["run", "--config", str(config), *common, "--out", str(second)]) == 0
    assert trained == [1, 2, 1, 2]  # random, then the random-real subset; random-again trains nothing
    for name in ("random_ipc1", "random-real-s0_ipc1"):
        before = json.loads((first / "reports" / f"{name}.json").read_text())
        after = json.loads((second / "reports" / f"{name}.json").read_text())
        assert after["seeds"] == [0, 1, 2] and after["accuracies"][0] == before["accuracies"][0]
        assert after["record"]["reused_trainings"] == [
            {"seed": 0, "report": str(first / "reports" / f"{name}.json"), "compiled": False}]
    again = json.loads((second / "reports" / "random-again_ipc1.json").read_text())
    assert again["accuracies"] == json.loads((second / "reports" / "random_ipc1.json").read_text())["accuracies"]
    assert [r["report"] for r in again["record"]["reused_trainings"]] == [
        str(first / "reports" / "random_ipc1.json"), *[str(second / "reports" / "random_ipc1.json")] * 2]

    config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [1],
                                              "reports_from": [str(tmp_path / "nowhere")]}}))
    capsys.readouterr()
    assert main(["run", "--config", str(config), *common, "--out", str(tmp_path / "third")]) == 2
    assert "nowhere/reports is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "third" / "reports").exists()


def test_trainings_run_in_parallel_processes_assemble_into_one_report(tmp_path, common, monkeypatch, caplog):
    """Each part trains one seed (--seed S --num-eval 1 --no-random-real); the whole run, given the parts with
    --reports-from, trains nothing and reports the three trainings, each from its part: in the log, and in the
    table, which marks the row and lists the parts (issue 32, 3: lent results were taken without a word)."""
    import logging

    import latentdd.evaluate.trainer as trainer

    base = ["run", *common, "--methods", "random", "--ipc", "1", "--epochs", "1", "--width", "8", "--compile", "off"]
    parts = [tmp_path / f"seed{s}" for s in range(3)]
    for seed, part in enumerate(parts):
        assert main([*base, "--seed", str(seed), "--num-eval", "1", "--no-random-real", "--out", str(part)]) == 0
        assert not list(part.glob("random-real*"))
    monkeypatch.setattr(trainer, "train_model", lambda *a, **k: pytest.fail("a finished training ran again"))
    whole = tmp_path / "whole"
    with caplog.at_level(logging.INFO, logger="latentdd.pipelines.evaluation"):
        assert main([*base, "--num-eval", "3", "--no-random-real", "--reports-from", ",".join(map(str, parts)),
                     "--out", str(whole)]) == 0
    report = json.loads((whole / "reports" / "random_ipc1.json").read_text())
    assert report["seeds"] == [0, 1, 2] and [r["report"] for r in report["record"]["reused_trainings"]] == [
        str(part / "reports" / "random_ipc1.json") for part in parts]
    assert report["accuracies"] == [json.loads((part / "reports" / "random_ipc1.json").read_text())["accuracies"][0]
                                    for part in parts]
    for seed, part in enumerate(parts):
        assert f"random (IPC 1): the training of seed {seed} ({report['accuracies'][seed]:.2f} %) is taken from " \
               f"{part / 'reports' / 'random_ipc1.json'}" in caplog.text
    table = (whole / "results.md").read_text()
    assert "| random | 1 | " in table and " (n=3); 3 trainings lent [1][2][3] |" in table
    assert all(f"- [{i}] {part}\n" in table for i, part in enumerate(parts, 1))
    assert json.loads((whole / "results.json").read_text())[0]["lent_from"] == {str(part): 1 for part in parts}


def test_reports_that_do_not_match_their_content_hash_lend_nothing(tmp_path, monkeypatch, caplog):
    """Issue 32 (3): a copy of a run whose accuracies were edited to 99 was lent and tabulated as 99.00 for every
    random-real subset, and a --reports-from folder of junk was taken in silence. Now each report lends only if
    it matches its content hash (one without, written before reports carried one, neither), each that does not
    is warned about, naming it, and so is a folder that lends nothing; its trainings run again. The run's own
    report, edited, is evaluated again the same way."""
    import latentdd.evaluate.trainer as trainer

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [1], "random_real_subsets": 2,
                                              "random_real_num_eval": 1},
                                      "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    base = ["run", "--config", str(config), "--dataset", "digits", "--vae", "pixel", "--cache-dir",
            str(tmp_path / "cache"), "--quiet"]
    first = tmp_path / "first"
    assert main([*base, "--out", str(first)]) == 0
    edited, unhashed, junk = tmp_path / "edited", tmp_path / "unhashed", tmp_path / "junk"
    for copy, edit in ((edited, lambda r: r | {"accuracies": [99.0], "mean": 99.0}),
                       (unhashed, lambda r: {k: v for k, v in r.items() if k != "content_sha256"})):
        shutil.copytree(first, copy)
        for path in (copy / "reports").glob("*.json"):
            path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    (junk / "reports").mkdir(parents=True)
    for name, text in (("a.json", "{not json"), ("b.json", "[1, 2]"), ("c.json", '{"inputs": {}}')):
        (junk / "reports" / name).write_text(text)
    trained = []
    real_train = trainer.train_model
    monkeypatch.setattr(trainer, "train_model", lambda *a, **k: trained.append(k["seed"]) or real_train(*a, **k))
    second = tmp_path / "second"
    assert main([*base, "--reports-from", f"{edited},{unhashed},{junk}", "--out", str(second)]) == 0
    assert len(trained) == 3  # random, then both random-real subsets: nothing was lent
    table = (second / "results.md").read_text()
    assert "99.00" not in table and " lent " not in table
    for name in ("random_ipc1", "random-real-s0_ipc1", "random-real-s1_ipc1"):
        assert f"report {edited / 'reports' / name}.json does not match its content_sha256: it was edited or " \
               "damaged after latentdd wrote it; not used: its trainings run again" in caplog.text
        assert f"report {unhashed / 'reports' / name}.json holds no content_sha256" in caplog.text
    assert f"report {junk / 'reports' / 'a.json'} cannot be read" in caplog.text
    assert f"report {junk / 'reports' / 'b.json'} is not a report of latentdd's run" in caplog.text
    for folder in (edited, unhashed):
        assert f"run.reports_from: {folder} lends nothing: none of the 3 JSON files in its reports/ holds a " \
               "training that can be reused" in caplog.text
    assert f"run.reports_from: {junk} lends nothing: none of the 3 JSON files" in caplog.text

    path = second / "reports" / "random-real-s0_ipc1.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"accuracies": [99.0], "mean": 99.0}))
    caplog.clear()
    assert main([*base, "--out", str(second)]) == 0
    assert len(trained) == 4 and "99.00" not in (second / "results.md").read_text()  # that subset alone
    assert f"report {path} does not match its content_sha256" in caplog.text


def test_random_real_subsets_run_as_parts_of_their_own(tmp_path, common, monkeypatch, capsys):
    """--random-real-part K trains only subset K (seed + K) and no distilled set; the whole run lends each
    subset's training from its part; a subset the run does not draw is refused before any work."""
    import latentdd.evaluate.trainer as trainer

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": ["random"], "ipcs": [1], "random_real_subsets": 2,
                                              "random_real_num_eval": 1},
                                      "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    base = ["run", "--config", str(config), *common]
    parts = [tmp_path / f"subset{k}" for k in range(2)]
    for k, part in enumerate(parts):
        assert main([*base, "--random-real-part", str(k), "--out", str(part)]) == 0
        assert sorted(p.stem for p in (part / "reports").glob("*.json")) == [f"random-real-s{k}_ipc1"]
        assert not (part / "random_ipc1").exists()
        assert "| random-real (pixels), 1 subset |" in (part / "results.md").read_text()
    trained = []
    real_train = trainer.train_model
    monkeypatch.setattr(trainer, "train_model", lambda *a, **k: trained.append(k["seed"]) or real_train(*a, **k))
    whole = tmp_path / "whole"
    assert main([*base, "--reports-from", ",".join(map(str, parts)), "--out", str(whole)]) == 0
    assert trained == [0]  # the distilled set alone
    for k, part in enumerate(parts):
        report = json.loads((whole / "reports" / f"random-real-s{k}_ipc1.json").read_text())
        assert report["record"]["reused_trainings"] == [
            {"seed": 0, "report": str(part / "reports" / f"random-real-s{k}_ipc1.json"), "compiled": False}]
    capsys.readouterr()
    assert main([*base, "--random-real-part", "2", "--out", str(tmp_path / "beyond")]) == 2
    assert "run.random_real_part must name one of the run's 2 random-real subsets" in capsys.readouterr().err
    assert not (tmp_path / "beyond").exists()


def test_an_interrupted_evaluation_resumes_at_its_next_training(tmp_path, common, monkeypatch):
    """Each training is kept as it finishes (reports/partial/): after an interrupt in the second of three
    trainings, the same command trains only the second and third, and the report equals an uninterrupted one's."""
    import latentdd.evaluate.trainer as trainer

    args = ["run", *common, "--methods", "random", "--ipc", "1", "--epochs", "1", "--width", "8", "--compile", "off",
            "--num-eval", "3", "--no-random-real", "--out", str(tmp_path / "run")]
    trained = []
    real_train = trainer.train_model

    def interrupted(*a, **k):
        if k["seed"] == 1:
            raise KeyboardInterrupt
        trained.append(k["seed"])
        return real_train(*a, **k)

    monkeypatch.setattr(trainer, "train_model", interrupted)
    assert main(args) == 130  # the CLI's answer to an interrupt: re-run the same command to resume
    partial = tmp_path / "run" / "reports" / "partial" / "random_ipc1.json"
    first = json.loads(partial.read_text())
    assert trained == [0] and first["seeds"] == [0] and not (partial.parent.parent / "random_ipc1.json").exists()
    monkeypatch.setattr(trainer, "train_model", lambda *a, **k: trained.append(k["seed"]) or real_train(*a, **k))
    assert main(args) == 0
    assert trained == [0, 1, 2]
    report = json.loads((tmp_path / "run" / "reports" / "random_ipc1.json").read_text())
    assert report["seeds"] == [0, 1, 2] and report["accuracies"][0] == first["accuracies"][0]
    # Its own trainings are not lent: the report reads as an uninterrupted one's, and the kept file is gone.
    assert "reused_trainings" not in report["record"] and not partial.parent.exists()
    shutil.rmtree(tmp_path / "run" / "reports")
    assert main(args) == 0  # an uninterrupted evaluation
    whole = json.loads((tmp_path / "run" / "reports" / "random_ipc1.json").read_text())
    assert [path.name for path in (tmp_path / "run" / "reports").iterdir()] == ["random_ipc1.json"]
    assert whole["accuracies"] == report["accuracies"] and whole["record"] == report["record"]


def test_run_method_variants_weight_rows_and_stale_stages(tmp_path, common, monkeypatch):
    from latentdd.pipelines import evaluation
    from latentdd.pipelines import run as run_module

    config = tmp_path / "table.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"methods": ["kmeans", {"method": "kmeans", "params": {"medoid": True}, "label": "kmeans-medoid",
                                       "use_weights": True}, "random"],
                "ipcs": [2], "use_weights": "both", "random_real": False},
        "evaluator": {"epochs": 2, "width": 16, "compile": "off"},
    }))
    out = tmp_path / "run"
    args = ["run", "--config", str(config), *common, "--out", str(out)]
    assert main(args) == 0
    methods = [row["method"] for row in json.loads((out / "results.json").read_text())]
    assert methods == ["kmeans + weights", "kmeans", "kmeans-medoid + weights", "random"]
    medoid = json.loads((out / "kmeans-medoid_ipc2" / "distill.json").read_text())
    assert medoid["params"]["medoid"] is True and "medoid_indices" in medoid["extras"]

    calls = []
    real_evaluate = evaluation.evaluate_synthetic
    monkeypatch.setattr(evaluation, "evaluate_synthetic", lambda *a, **k: calls.append(1) or real_evaluate(*a, **k))
    # A changed evaluator re-evaluates every set (4 reports) but distils nothing again.
    monkeypatch.setattr(run_module, "distill_to_folder", lambda *a, **k: pytest.fail("distilled again"))
    assert main([*args, "--epochs", "1"]) == 0
    assert len(calls) == 4
    # A changed distillation seed redoes the distillations and their evaluations.
    monkeypatch.undo()
    data = yaml.safe_load(config.read_text())
    data["run"]["seed"] = 1
    config.write_text(yaml.safe_dump(data))
    before = (out / "random_ipc2" / "latents.safetensors").read_bytes()
    assert main([*args, "--epochs", "1"]) == 0
    assert (out / "random_ipc2" / "latents.safetensors").read_bytes() != before


def test_run_config_errors_are_actionable(tmp_path, common, capsys):
    for methods, needle in [("kmeans,nope", "unknown distiller 'nope'"), ("kmeans,kmeans", "labels must be distinct")]:
        assert main(["run", *common, "--methods", methods, "--ipc", "2", "--out", str(tmp_path / "x")]) == 2
        assert needle in capsys.readouterr().err


def test_distill_with_the_diffusion_decoder_records_it(tmp_path, common):
    out = tmp_path / "diffusion"
    prior = ["--prior-set", "block_out_channels=[8, 16]", "--prior-set", "norm_num_groups=4",
             "--prior-set", "attention_head_dim=8", "--prior-set", "max_steps=5"]
    assert main(["distill", *common, "--method", "kmeans", "--ipc", "2", "--decoder", "diffusion", "--steps", "4",
                 "--strength", "0.5", *prior, "--out", str(out)]) == 0
    record = json.loads((out / "distill.json").read_text())["record"]
    assert record["decoder"]["name"] == "diffusion" and record["decoder"]["prior"].startswith("prior:")
    assert record["decoder"]["prior_fit"]["steps"] == 5
    assert len(list((out / "images").glob("*/*.png"))) == 20


def test_distill_bacon_through_the_cli_in_pixel_space(tmp_path, common):
    out = tmp_path / "bacon"
    params = ["iterations=2", "width=8", "pool_start=1", "batch_real=4", "net_batch=8", "train_steps=1",
              "embedding=pixel"]
    assert main(["distill", *common, "--method", "bacon", "--ipc", "1", *sum([["--param", p] for p in params], []),
                 "--out", str(out)]) == 0
    distilled = json.loads((out / "distill.json").read_text())
    assert distilled["params"]["embedding"] == "pixel" and distilled["extras"]["iterations"] == 2
    assert not (tmp_path / "bacon.checkpoint").exists()  # removed once the folder is written


def test_compare_writes_table_csv_plot_grids_and_resumes(tmp_path, common, monkeypatch):
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"methods": [{"method": "bacon", "label": "bacon", "params": {
            "iterations": 2, "width": 8, "pool_start": 1, "batch_real": 4, "net_batch": 8, "train_steps": 1}},
            "kmeans", {"method": "random", "ipcs": [2]}], "ipcs": [1, 2], "consistency": True,
            "random_real_subsets": 2},
        "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1},
    }))
    out = tmp_path / "compare"
    args = ["compare", "--config", str(config), *common, "--out", str(out)]
    assert main(args) == 0
    import csv

    rows = list(csv.DictReader((out / "results.csv").open()))
    real = [("random-real (pixels) s0", "1"), ("random-real (pixels) s1", "1"), ("random-real (pixels), 2 subsets", "1")]
    assert [(r["method"], r["ipc"]) for r in rows] == [
        ("bacon", "1"), ("kmeans", "1"), *real,
        ("bacon", "2"), ("kmeans + weights", "2"), ("random", "2"), *[(m, "2") for m, _ in real]]
    assert float(rows[0]["distill_s"]) > 0 and float(rows[0]["evaluate_s"]) > 0
    # Two independently drawn subsets; the row over them is their mean, with the spread between them.
    s0, s1 = (json.loads((out / f"random-real-s{i}_ipc1" / "manifest.json").read_text()) for i in (0, 1))
    assert s0["record"]["method"]["seed"] == 0 and s1["record"]["method"]["seed"] == 1
    assert s0["record"]["method"]["train_indices"] != s1["record"]["method"]["train_indices"]
    means = [float(rows[i]["mean"]) for i in (2, 3)]
    assert float(rows[4]["mean"]) == pytest.approx(sum(means) / 2)
    assert float(rows[4]["std"]) == pytest.approx(abs(means[0] - means[1]) / 2)
    assert "over 2 subsets (training spread" in (out / "results.md").read_text()
    assert all(0 <= float(r["class_consistency"]) <= 100 for r in rows if r["class_consistency"])
    consistency = json.loads((out / "consistency.json").read_text())
    assert consistency["judge"]["test_accuracy"] > 50 and len(consistency["sets"]["kmeans_ipc2"]["per_class"]) == 10
    assert float(rows[2]["class_consistency"]) == consistency["sets"]["random-real-s0_ipc1"]["share"]
    assert not (out / "random_ipc1").exists()  # random runs at IPC 2 only
    assert "| bacon | 1 |" in (out / "results.md").read_text()
    for name in ("accuracy_vs_ipc.png", "grid_bacon.png", "grid_kmeans.png", "grid_random.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(out / "grid_kmeans.png").size == (10 * 9 + 1, 10 * 9 + 1)  # 10 classes x 10 slots of 8 px
    from latentdd.pipelines import evaluation
    from latentdd.pipelines import run as run_module

    monkeypatch.setattr(evaluation, "evaluate_synthetic", lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr(run_module, "distill_to_folder", lambda *a, **k: pytest.fail("distilled again"))
    assert main(args) == 0


def test_run_on_a_validation_split_held_out_of_train(tmp_path, common):
    from latentdd.config import DataConfig

    train, val = DataConfig(name="digits", validation=0.2).load("train"), DataConfig(name="digits", validation=0.2).load("val")
    assert len(train) + len(val) == len(DataConfig(name="digits").load("train")) and val.split == "val"
    assert torch.bincount(val.labels).min() >= 28  # about a fifth of each class (143-146 per class)
    out = tmp_path / "run"
    args = ["run", *common, "--validation", "0.2", "--eval-split", "val", "--methods", "random", "--ipc", "2",
            "--epochs", "1", "--width", "8", "--compile", "off", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "reports" / "random_ipc2_val.json").read_text())
    assert report["record"]["dataset"]["evaluated_on"] == f"val ({len(val)} images)"
    assert "validation" in report["record"]["dataset"] and "accuracy on the val" in (out / "results.md").read_text()
    assert main(["run", *common, "--eval-split", "val", "--methods", "random", "--ipc", "2", "--out",
                 str(tmp_path / "x")]) == 2  # no val split without --validation


def test_run_renders_an_earlier_runs_latents_with_another_decoder(tmp_path, common, monkeypatch):
    import latentdd.distill

    bacon = {"method": "bacon", "label": "bacon", "params": {
        "iterations": 2, "width": 8, "pool_start": 1, "batch_real": 4, "net_batch": 8, "train_steps": 1}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": [bacon, "kmeans"], "ipcs": [1], "random_real": False},
                                      "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    first = tmp_path / "vae"
    assert main(["run", "--config", str(config), *common, "--out", str(first)]) == 0
    # Distilling again would fail: every set must come from the first run's latents.
    monkeypatch.setattr(latentdd.distill, "make_distiller", lambda *a, **k: pytest.fail("distilled again"))
    second = tmp_path / "diffusion"
    prior = ["--prior-set", "block_out_channels=[8, 16]", "--prior-set", "norm_num_groups=4",
             "--prior-set", "attention_head_dim=8", "--prior-set", "max_steps=5"]
    assert main(["run", "--config", str(config), *common, "--decoder", "diffusion", "--steps", "4", *prior,
                 "--latents-from", str(first), "--out", str(second)]) == 0
    for label in ("bacon_ipc1", "kmeans_ipc1"):
        a, b = (load_file(str(run / label / "latents.safetensors")) for run in (first, second))
        assert torch.equal(a["latents"], b["latents"])
        redone = json.loads((second / label / "distill.json").read_text())
        assert redone["record"]["decoder"]["name"] == "diffusion"
        assert redone["record"]["method"]["latents_from"] == str(first / label)
        assert redone["extras"] == json.loads((first / label / "distill.json").read_text())["extras"]
    # The same folder re-rendered with yet another decoder setting also reuses its own latents.
    assert main(["run", "--config", str(config), *common, "--decoder", "diffusion", "--steps", "4", "--strength",
                 "0.3", *prior, "--out", str(second)]) == 0
    assert json.loads((second / "bacon_ipc1" / "distill.json").read_text())["request"]["decoder"]["strength"] == 0.3


def test_run_evaluates_a_factorized_set_on_its_tiles(tmp_path, common):
    bacon = {"method": "bacon", "label": "bacon-f2", "params": {
        "iterations": 2, "width": 8, "pool_start": 1, "batch_real": 4, "net_batch": 8, "train_steps": 1, "factor": 2}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": [bacon, "random"], "ipcs": [1], "random_real": False},
                                      "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), *common, "--out", str(out)]) == 0
    factorized = json.loads((out / "reports" / "bacon-f2_ipc1.json").read_text())["record"]["evaluator"]
    assert factorized["factorization"] == {"factor": 2, "images_trained": 40}
    assert json.loads((out / "reports" / "random_ipc1.json").read_text())["record"]["evaluator"]["factorization"] is False
    assert json.loads((out / "bacon-f2_ipc1" / "distill.json").read_text())["extras"]["factorization"]["factor"] == 2


def test_run_method_ipcs_must_meet_the_runs(tmp_path, common, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": [{"method": "random", "ipcs": [50]}], "ipcs": [1, 10]}}))
    assert main(["run", "--config", str(config), *common, "--out", str(tmp_path / "x")]) == 2
    assert "include none of run.ipcs" in capsys.readouterr().err


def test_a_variant_for_other_ipcs_is_skipped_when_the_run_is_narrowed_to_some(tmp_path, common, caplog):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": ["random", {"method": "random", "label": "late",
                                                                     "ipcs": [2]}], "ipcs": [1, 2],
                                              "random_real": False},
                                      "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    out = tmp_path / "x"
    assert main(["run", "--config", str(config), *common, "--ipc", "1", "--out", str(out)]) == 0
    assert (out / "random_ipc1").is_dir() and not list(out.glob("late_*"))
    assert "['late']: their ipcs include none of run.ipcs [1]; skipped" in caplog.text


def test_run_curve_evaluates_one_optimisation_at_each_iteration_count(tmp_path, common, capsys):
    params = {"width": 8, "pool_start": 1, "batch_real": 4, "net_batch": 8, "train_steps": 1, "checkpoint_every": 1}
    curve = {"method": "bacon", "label": "bacon", "params": params, "curve": [2, 3]}
    straight = {"method": "bacon", "label": "straight", "params": params | {"iterations": 3}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"methods": [curve, straight], "ipcs": [1], "random_real": False},
                                      "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), *common, "--out", str(out)]) == 0
    assert [r["method"] for r in json.loads((out / "results.json").read_text())] == ["bacon_it2", "bacon_it3",
                                                                                     "straight"]
    last = json.loads((out / "bacon_it3_ipc1" / "distill.json").read_text())
    assert last["extras"]["resumed_from"] == 2 and last["params"]["iterations"] == 3
    assert last["record"]["stage_seconds"]["distill"] == last["extras"]["seconds"]  # all 3 iterations' time
    a, b = (load_file(str(out / f / "latents.safetensors")) for f in ("bacon_it3_ipc1", "straight_ipc1"))
    assert torch.equal(a["latents"], b["latents"])  # continuing equals running straight through
    assert (out / "bacon_ipc1.checkpoint").is_dir()  # kept, so a longer curve continues from it
    assert not (out / "straight_ipc1.checkpoint").exists()

    bad = [{"method": "kmeans", "curve": [2, 3]}, {"method": "bacon", "curve": [3, 2]},
           {"method": "bacon", "curve": [2], "params": {"iterations": 5}}]
    for entry in bad:
        config.write_text(yaml.safe_dump({"run": {"methods": [entry], "ipcs": [1]}}))
        assert main(["run", "--config", str(config), *common, "--out", str(tmp_path / "x")]) == 2
        assert "curve" in capsys.readouterr().err


def test_the_decoded_real_latents_are_decoded_once_cached_by_content_and_distil_the_same(tmp_path, monkeypatch,
                                                                                          caplog):
    """The matching methods' pixel embedding reads LatentSpace.decoded_latents (DistillContext.decoded): the train
    latents decoded once per latent space and cached by content, the same bytes as decoding them in the run."""
    import latentdd.distill.matching.inputs as inputs
    from latentdd.config import DataConfig
    from latentdd.distill import DistillContext, make_distiller
    from latentdd.io import checksum_path
    from latentdd.pipelines.distill import LatentSpaceConfig, distill_latents, prepare_latent_space

    fit = {"image_size": 8, "block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 2,
           "max_steps": 2, "batch_size": 64, "checkpoint_every": 0, "scale_images": 64}
    config = LatentSpaceConfig(vae="fit", fit=fit, cache_dir=str(tmp_path / "cache"))
    space = prepare_latent_space(DataConfig(name="digits"), config, progress=False)
    decoded = space.decoded_latents()
    assert torch.equal(decoded, inputs.decode_latents(space.decode, space.latents.latents))
    entries = list((tmp_path / "cache" / "decoded").glob("*.safetensors"))
    assert len(entries) == 1 and checksum_path(entries[0]).is_file()

    dm = dict(embedding="pixel", iterations=2, batch_real=8, width=8, compile="off", checkpoint_every=1)
    alone = make_distiller("dm", **dm).distill(space.latents, 1, seed=0, context=DistillContext(decode=space.decode))
    calls, decode_latents = [], inputs.decode_latents
    monkeypatch.setattr(inputs, "decode_latents", lambda *a: calls.append(a) or decode_latents(*a))
    again = prepare_latent_space(DataConfig(name="digits"), config, progress=False)  # a new process, say
    assert torch.equal(distill_latents(again, "dm", 1, 0, params=dm).latents, alone.latents)
    assert calls == []  # read from the cache, not decoded

    data = bytearray(entries[0].read_bytes())
    data[-5] ^= 0xFF
    entries[0].write_bytes(bytes(data))
    third = prepare_latent_space(DataConfig(name="digits"), config, progress=False)
    assert torch.equal(third.decoded_latents(), decoded) and len(calls) == 1
    assert "ignoring" in caplog.text and "the latents are decoded again" in caplog.text
