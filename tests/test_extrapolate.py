"""scripts/extrapolate_imagenet.py: per-unit costs read from the records, and the ImageNet-1K table built from them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "extrapolate_imagenet.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("extrapolate_imagenet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(tmp_path: Path, *, a: float, b: float):
    """A 1000-class run (20 images a class, IPC 1) and a 10-class bench (6000 a class, IPC 10) whose kmeans
    seconds follow t = a * classes + b * images * ipc."""
    run = tmp_path / "run"
    (run / "kmeans_ipc1").mkdir(parents=True)
    (run / "reports").mkdir()
    record = {"dataset": {"train_split": "train (20000 images)", "test_split": "test (5000 images)"},
              "stage_seconds": {"encode": 400.0, "distill": a * 1000 + b * 20000 * 1, "render": 20.0}}
    (run / "kmeans_ipc1" / "distill.json").write_text(json.dumps(
        {"ipc": 1, "record": record, "extras": {"quantization_error": [0.0] * 1000}}))
    for name, seconds in (("kmeans_ipc1", 500.0), ("random-real-s0_ipc1", 300.0)):
        (run / "reports" / f"{name}.json").write_text(json.dumps(
            {"train_seconds": [seconds], "wall_seconds": seconds + 10.0, "record": {"evaluator": {"epochs": 50}}}))
    scale = {"config": {"ipc": 10, "processes": 2, "image_size": 64},
             "rows": [{"n": 60000, "stage": "encode", "seconds_per_image": 0.012},
                      {"n": 60000, "stage": "distill", "classes": 10, "images": 60000, "seconds": a * 10 + b * 600000}]}
    diffusion = {"seconds": 40.0, "record": {"decoder": {"prior_fit": {"train_seconds": 130.0, "steps": 1500},
                                                         "denoising_steps": 25, "guidance_scale": 4.0}}}
    return scale, run, diffusion


def test_per_unit_costs_come_from_the_records_and_kmeans_splits_into_class_and_row_costs(script, tmp_path):
    scale, run, diffusion = _records(tmp_path, a=0.002, b=2e-5)
    m = script.measured(scale, run, diffusion)
    assert m["kmeans_per_class"] == pytest.approx(0.002) and m["kmeans_per_row"] == pytest.approx(2e-5)
    assert m["encode_1p"] == pytest.approx(400 / 20000) and m["encode_np"] == 0.012
    assert m["render_vae"] == pytest.approx(20 / 1000) and m["render_diffusion"] == pytest.approx(40 / 1000)
    assert m["image_epoch"] == pytest.approx(400 / (1000 * 50))  # the mean training over 1000 images x 50 epochs
    assert m["test_image"] == pytest.approx(10 / 5000) and m["guidance"] is True


def test_the_table_scales_each_stage_by_what_it_grows_with(script, tmp_path):
    m = script.measured(*_records(tmp_path, a=0.002, b=2e-5))
    f = {"encode": 2e9, "decode": 2e9, "unet_call": 1e7, "test_forward": 4e8, "train_step": 1.2e9}
    rows, text = script.table(m, f, images=1_000_000, classes=1000, ipcs=[10], epochs=300, held_out=50_000,
                              tflops=10.0, kmeans_iters=100, d=2048)
    cpu = {r["stage"]: r["cpu_s"] for r in rows}
    assert cpu["encode (1 process)"] == pytest.approx(0.02 * 1_000_000)
    assert cpu["kmeans, IPC 10"] == pytest.approx(0.002 * 1000 + 2e-5 * 1_000_000 * 10)
    assert cpu["render VAE, IPC 10"] == pytest.approx(0.02 * 10_000)
    assert cpu["evaluate ConvNet-4, IPC 10, 300 epochs, 1 training"] == pytest.approx(0.008 * 10_000 * 300 + 0.002 * 50_000)
    gpu = {r["stage"]: r["gpu_s"] for r in rows}
    assert gpu["encode (1 process)"] == pytest.approx(2e9 * 1_000_000 / 1e13)
    assert gpu["render diffusion, IPC 10"] == pytest.approx((1e7 * 25 * 2 + 2e9) * 10_000 / 1e13)  # guidance: 2 calls a step
    assert "assumed 10 TFLOP/s" in text and "(a)" in text
    assert all(r["ngpu_s"] is None or r["stage"].startswith("encode") for r in rows)  # no other efficiency given


def test_measured_gpu_rates_and_parallel_efficiencies_fill_the_one_and_n_gpu_columns(script, tmp_path):
    m = script.measured(*_records(tmp_path, a=0.002, b=2e-5))
    f = {"encode": 2e9, "decode": 2e9, "unet_call": 1e7, "test_forward": 4e8, "train_step": 1.2e9}
    parallel = {"processes": 2, "one_training": {"speedup": 1.6}, "run_table": {"trainings_speedup": 1.9}}
    distill = {"rows": [{"method": "kmeans", "processes": 1}, {"method": "kmeans", "processes": 2, "speedup": 1.5},
                        {"method": "dm", "processes": 2, "speedup": 1.8}]}
    eff = script.efficiencies(m, parallel, distill)
    assert eff["evaluate"]["value"] == pytest.approx(0.8) and eff["table"]["value"] == pytest.approx(0.95)
    assert eff["kmeans"]["value"] == pytest.approx(0.75)
    assert eff["encode"]["value"] == pytest.approx(0.02 / 0.012 / 2)  # the run's one-process encode, bench_scale's two
    suite = {"machine": {"gpu": "H100"}, "rows": [
        {"stage": "encode", "gpu": {"value": 5000.0}, "work": {}},
        {"stage": "evaluator", "gpu": {"value": 40.0}, "work": {"model": "convnet", "size": 64, "protocol": "dsa", "images": 100}},
        {"stage": "evaluator", "gpu": {"value": 99.0}, "work": {"model": "convnet", "size": 64, "protocol": "soft", "images": 100}},
        {"stage": "distill", "gpu": {"missing": "no CUDA device"}, "work": {"method": "kmeans", "latents": 60000, "ipc": 10}}]}
    rates = script.gpu_rates(suite)
    assert rates == {"device": "H100", "encode": pytest.approx(1 / 5000), "image_epoch": pytest.approx(1 / 4000)}
    rows, text = script.table(m, f, images=1_000_000, classes=1000, ipcs=[10], epochs=300, held_out=50_000,
                              tflops=10.0, kmeans_iters=100, d=2048, eff=eff, rates=rates, gpus=8, table_trainings=17)
    by = {r["stage"]: r for r in rows}
    assert by["encode (1 process)"]["gpu_s"] == pytest.approx(1_000_000 / 5000) and by["encode (1 process)"]["gpu_src"] == "m"
    one = by["evaluate ConvNet-4, IPC 10, 300 epochs, 1 training"]
    assert one["gpu_s"] == pytest.approx(10_000 * 300 / 4000 + 4e8 * 50_000 / 1e13) and one["gpu_src"] == "m"
    assert one["ngpu_s"] == pytest.approx(one["gpu_s"] / (8 * 0.8))
    many = by["evaluate, IPC 10: a table of 17 trainings"]
    assert many["gpu_s"] == pytest.approx(17 * one["gpu_s"]) and many["ngpu_s"] == pytest.approx(many["gpu_s"] / (8 * 0.95))
    kmeans = by["kmeans, IPC 10"]  # no measured GPU rate: FLOPs at the assumed rate, split at the measured efficiency
    assert kmeans["gpu_src"] == "a" and kmeans["ngpu_s"] == pytest.approx(kmeans["gpu_s"] / (8 * 0.75))
    assert by["render VAE, IPC 10"]["ngpu_s"] is None  # no efficiency measured for rendering: left out
    assert "H100" in text and "8 GPUs" in text and "kmeans 0.75 on 2 processes" in text
