"""One training shared by several processes (latentdd.parallel.DataParallel): each trains on its shard of every
batch and the gradients are summed, so 2 gloo processes on the CPU end where one process does, up to the order
of floating-point sums."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from latentdd.data import load_dataset
from latentdd.evaluate import EvalConfig
from latentdd.evaluate.trainer import channel_stats, top1_accuracy, train_model
from latentdd.parallel import DataParallel, launch_args

# Settings that exercise every path of a step: DSA (hard labels) or crops, flips, CutMix and sample weights on
# soft labels; 33 images in batches of 16 leave a last batch of 1, so one process's shard is empty.
CASES = {
    "dsa": dict(epochs=4, batch_size=16, dsa=True),
    "soft": dict(epochs=4, batch_size=16, dsa=False, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                 schedule="cosine", crop_scale=(0.5, 1.0), hflip=True, cutmix=1.0, loss="static_kl"),
}


def _train(case: str, group: DataParallel | None = None) -> tuple[dict, float]:
    """The case's training on 33 digits (or this process's part of it) -> ({"logits": the model's on 200 test
    images, "weights": its state}, its test accuracy)."""
    torch.set_num_threads(1)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    images, labels = train.images[:33], train.labels[:33]
    config = EvalConfig(width=8, depth=2, compile="off", **CASES[case])
    mean, std = channel_stats(train)
    extra = {}
    if case == "soft":
        extra["weights"] = torch.linspace(0.5, 1.5, 33)
        extra["soft_labels"] = torch.softmax(torch.randn(33, 10, generator=torch.Generator().manual_seed(1)), 1)
    model = train_model(images, labels, num_classes=10, config=config, mean=mean, std=std, seed=3, flip=False,
                        group=group, **extra)
    accuracy = top1_accuracy(model, test, mean=mean, std=std, batch_size=100, group=group)
    with torch.no_grad():
        logits = model((test.images[:200] - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
    return {"logits": logits, **{k: v.detach().clone() for k, v in model.state_dict().items()}}, accuracy


def _worker(rank: int, size: int, init_file: str, case: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        weights, accuracy = _train(case, DataParallel.current())
        save_file(weights, f"{out}.{rank}.safetensors")
        Path(f"{out}.{rank}.json").write_text(json.dumps({"accuracy": accuracy}))
    finally:
        dist.destroy_process_group()


def test_a_shard_is_a_contiguous_part_and_the_parts_cover_the_batch():
    parts = [DataParallel(rank, 3).shard(10) for rank in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 4), (4, 7), (7, 10)]
    assert DataParallel(1, 2).shard(1) == slice(1, 1) and DataParallel().shard(5) == slice(0, 5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_train_as_one_does(case, tmp_path):
    one, one_accuracy = _train(case)
    out = str(tmp_path / "group")
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), case, out), nprocs=2, start_method="spawn")
    for rank in range(2):
        shared = load_file(f"{out}.{rank}.safetensors")
        assert shared.keys() == one.keys()
        # Measured: logits and weights differ by at most about 2e-8 after 4 epochs (sums in another order),
        # except under AdamW the biases of the convolutions an instance norm follows: their gradient is zero up
        # to rounding, which AdamW scales up to steps of lr, and they change no output.
        torch.testing.assert_close(shared["logits"], one["logits"], rtol=0, atol=1e-5)
        for name, value in one.items():
            cancelled = case == "soft" and name.endswith(("0.bias", "4.bias"))
            if not cancelled:
                torch.testing.assert_close(shared[name], value, rtol=0, atol=1e-5, msg=name)
        assert json.loads(Path(f"{out}.{rank}.json").read_text())["accuracy"] == one_accuracy


@pytest.mark.slow
def test_evaluate_under_accelerate_launch_reports_what_one_process_does(tmp_path):
    from latentdd.cli import main

    repo = Path(__file__).resolve().parents[1]
    common = ["--dataset", "digits", "--vae", "pixel", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["distill", *common, "--method", "random", "--ipc", "3", "--out", str(tmp_path / "set")]) == 0
    evaluate = ["evaluate", "--dataset", "digits", "--images", str(tmp_path / "set" / "images"), "--epochs", "3",
                "--width", "8", "--depth", "2", "--num-eval", "2", "--compile", "off", "--quiet"]
    assert main([*evaluate, "--json", str(tmp_path / "one.json")]) == 0
    two = _launch([*evaluate, "--json", str(tmp_path / "two.json")], repo, 2)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test accuracy") == 1  # one process speaks
    one_report, two_report = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two_report["record"]["evaluator"]["processes"] == 2 and one_report["record"]["evaluator"]["processes"] == 1
    assert two_report["accuracies"] == pytest.approx(one_report["accuracies"], abs=0.6)  # 1 test image of 180 or so


def _launch(args: list[str], cwd: Path, processes: int):
    """`latentdd ARGS` under `accelerate launch` with `processes` CPU processes (gloo)."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, *launch_args(processes), "-m", "latentdd", *args], cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_a_run_over_two_processes_gives_the_one_process_table(tmp_path):
    import yaml

    from latentdd.cli import main

    repo = Path(__file__).resolve().parents[1]
    rows = {}
    for parallel, processes in (("trainings", 1), ("trainings", 2), ("data", 2)):
        config = tmp_path / f"{parallel}.yaml"
        config.write_text(yaml.safe_dump({"run": {"methods": ["kmeans", "random"], "ipcs": [2],
                                                  "random_real_subsets": 2, "parallel": parallel}}))
        args = ["run", "--config", str(config), "--dataset", "digits", "--vae", "pixel", "--cache-dir",
                str(tmp_path / "cache"), "--epochs", "3", "--width", "8", "--depth", "2", "--compile", "off",
                "--num-eval", "2", "--quiet", "--out", str(tmp_path / f"{parallel}{processes}")]
        if processes == 1:
            assert main(args) == 0
        else:
            done = _launch(args, repo, processes)
            assert done.returncode == 0, done.stderr
        rows[parallel, processes] = json.loads((tmp_path / f"{parallel}{processes}" / "results.json").read_text())
    one = rows["trainings", 1]
    assert len(one) == 5  # kmeans, random, 2 subsets and their mean
    keys = ("method", "ipc", "n", "subset_of")
    for parallel in ("trainings", "data"):
        two = rows[parallel, 2]
        assert [{k: r.get(k) for k in keys} for r in two] == [{k: r.get(k) for k in keys} for r in one]
        if parallel == "trainings":  # each training ran whole in one process: the same numbers, bit for bit
            assert [r["mean"] for r in two] == [r["mean"] for r in one]
        else:  # each training's batches split over the two: the same up to the order of sums
            assert [r["mean"] for r in two] == pytest.approx([r["mean"] for r in one], abs=0.6)
        folder = tmp_path / f"{parallel}2" / "reports"
        reports = sorted(folder.glob("*.json"))
        assert len(reports) == 4 and not (folder / "partial").exists()  # every kept training taken
        for path in reports:
            report = json.loads(path.read_text())
            assert "reused_trainings" not in report["record"]  # its own trainings, not lent
            assert report["record"]["evaluator"]["processes"] == (2 if parallel == "data" else 1)


# ---------------------------------------------------------------------------------------
# Distillation split by class


@pytest.mark.parametrize("method", ["kmeans", "kmeans-online", "random", "herding", "kcenter"])
@pytest.mark.parametrize("processes", [2, 3])
def test_shares_of_the_classes_gather_into_the_whole_set(method, processes):
    from latentdd.distill import make_distiller
    from latentdd.distill.base import class_share, gather_parts
    from latentdd.latents.types import Latents

    train = load_dataset("digits", "train")
    latents = Latents(train.images, train.labels, list(train.class_names))
    distiller = make_distiller(method)
    assert distiller.splits_by_class
    whole = distiller.distill(latents, 3, seed=4)
    shares = [class_share(10, rank, processes) for rank in range(processes)]
    assert sum(shares, []) == list(range(10))
    gathered = gather_parts([distiller.distill(latents, 3, seed=4, classes=share) for share in shares])
    for name in ("latents", "labels", "weights"):
        assert torch.equal(getattr(gathered, name), getattr(whole, name)), name
    assert gathered.extras == whole.extras


def _decode(z: torch.Tensor) -> torch.Tensor:
    """A fixed differentiable 'decoder' for digits' 8x8 images seen as (1, 8, 8) latents."""
    return torch.sigmoid(z)


MATCHING_SPLITS = {
    "dm latent, init real": ("dm", dict(embedding="latent")),
    "dm pixel, init kmeans": ("dm", dict(embedding="pixel", init="kmeans")),
    "dm pixel, 2x2 decoded tiles": ("dm", dict(embedding="pixel", factor=2, tiles="decoded")),
    "bacon on the teacher's features": ("bacon", dict(embedding="pixel", networks="teacher", loss="bacon-reference")),
}


@pytest.mark.parametrize("case", list(MATCHING_SPLITS))
def test_a_matching_method_s_shares_of_the_classes_gather_into_the_whole_set(case, tmp_path):
    """Each share replays every other class's draws (real batch, DSA), so its classes see the unsplit run's."""
    from latentdd.distill import DistillContext, make_distiller
    from latentdd.distill.base import class_share, gather_parts
    from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher
    from latentdd.latents.types import Latents

    train = load_dataset("digits", "train")
    latents = Latents(train.images[:400] * 4 - 2, train.labels[:400], list(train.class_names))
    method, params = MATCHING_SPLITS[case]
    distiller = make_distiller(method, iterations=3, width=8, batch_real=16, checkpoint_every=2, **params)
    assert distiller.splits_by_class
    teacher = None
    if distiller.uses_teacher:
        teacher = resolve_teacher(TeacherConfig(width=8, depth=2, epochs=1, cache_dir=str(tmp_path)), train,
                                  load_dataset("digits", "test"), progress=False)
    context = lambda share: DistillContext(decode=_decode, teacher=teacher,  # noqa: E731
                                           checkpoint_dir=tmp_path / f"ckpt-{share}")
    whole = distiller.distill(latents, 2, seed=4, context=context("whole"))
    shares = [class_share(10, rank, 3) for rank in range(3)]
    gathered = gather_parts([distiller.distill(latents, 2, seed=4, classes=share, context=context(share[0]))
                             for share in shares])
    for name in ("latents", "labels", "weights"):
        assert torch.equal(getattr(gathered, name), getattr(whole, name)), name
    assert gathered.extras["quantization_error"] == whole.extras["quantization_error"]
    assert [c["classes"] for c in gathered.extras["loss_curve"]] == shares


def test_a_matching_method_whose_networks_learn_from_every_class_stays_whole():
    from latentdd.distill import make_distiller
    from latentdd.errors import DataError
    from latentdd.latents.types import Latents

    assert make_distiller("dm").splits_by_class and make_distiller("dm", embedding="pixel", networks="teacher").splits_by_class
    for name, params in [("bacon", {}), ("idm", {}), ("dm", {"networks": "bank"}), ("dc", {}), ("dsa", {}),
                         ("mtt", {})]:
        assert not make_distiller(name, **params).splits_by_class, name
    train = load_dataset("digits", "train")
    latents = Latents(train.images[:200], train.labels[:200], list(train.class_names))
    with pytest.raises(DataError, match="couples its classes"):
        make_distiller("bacon", iterations=1).distill(latents, 1, seed=0, classes=[0, 1])
    with pytest.raises(DataError, match="ascending"):
        make_distiller("dm", iterations=1).distill(latents, 1, seed=0, classes=[3, 1])


@pytest.mark.slow
@pytest.mark.parametrize("method", [["kmeans"], ["dm", "--param", "iterations=3", "--param", "width=8",
                                                 "--param", "batch_real=16"]])
def test_distill_under_accelerate_launch_splits_the_classes_and_writes_the_one_process_set(method, tmp_path):
    from safetensors.torch import load_file as load

    repo = Path(__file__).resolve().parents[1]
    common = ["distill", "--dataset", "digits", "--vae", "pixel", "--cache-dir", str(tmp_path / "cache"), "--quiet",
              "--method", *method, "--ipc", "3"]
    from latentdd.cli import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two = _launch([*common, "--out", str(tmp_path / "two")], repo, 2)
    assert two.returncode == 0, two.stderr
    a, b = (load(tmp_path / n / "latents.safetensors") for n in ("one", "two"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((tmp_path / "two" / "distill.json").read_text())
    assert record["extras"]["split_by_class"] == {"processes": 2, "classes": [5, 5]}
    assert not list(tmp_path.glob(".*distill-parts"))  # the parts are gone
    assert not list(tmp_path.glob("*.checkpoint"))  # and the matching shares' checkpoints
