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
    assert "assumed 10 TFLOP/s" in text and "not measured" in text
