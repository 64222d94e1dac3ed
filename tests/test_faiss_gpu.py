"""Which faiss the kmeans distiller clusters with: the GPU index when faiss reports a GPU and the user has
not forced the CPU. Checked on the CPU: faiss.get_num_gpus is faked, and the "GPU" index is a CPU one
whose use is counted, so a wrong selection (or a GPU path that clusters differently) fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdd.distill import make_distiller
from latentdd.distill import quantize
from latentdd.errors import DataError
from latentdd.latents.types import Latents

faiss = pytest.importorskip("faiss")


@pytest.fixture
def latents() -> Latents:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(k * 3.0, 1.0, size=(40, 8)) for k in range(3)]).astype(np.float32)
    return Latents(torch.from_numpy(x).reshape(-1, 2, 2, 2), torch.arange(3).repeat_interleave(40), ["a", "b", "c"])


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make faiss report `gpus` GPUs; count the GPU indexes built (CPU IndexFlatL2s standing in)."""
    built = []

    def install(gpus: int):
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
        monkeypatch.setattr(quantize, "gpu_flat_index", lambda d: built.append(d) or faiss.IndexFlatL2(d))
        return built

    return install


def test_auto_and_faiss_take_the_gpu_when_faiss_reports_one(latents, fake_gpu):
    built = fake_gpu(1)
    for backend in ("auto", "faiss"):
        built.clear()
        syn = make_distiller("kmeans", backend=backend, restarts=2).distill(latents, 4, seed=0)
        assert (syn.extras["backend"], syn.extras["device"]) == ("faiss", "gpu")
        assert built == [8] * 6  # one index per run: 3 classes x 2 restarts, of dimension c*h*w = 8


def test_the_gpu_path_clusters_like_the_cpu_path(latents, fake_gpu):
    cpu = make_distiller("kmeans", backend="faiss-cpu", restarts=2).distill(latents, 4, seed=3)
    fake_gpu(1)
    gpu = make_distiller("kmeans", backend="faiss", restarts=2).distill(latents, 4, seed=3)
    assert torch.equal(cpu.latents, gpu.latents) and torch.equal(cpu.weights, gpu.weights)


@pytest.mark.parametrize("backend, expected", [("faiss-cpu", ("faiss", "cpu")), ("sklearn", ("sklearn", "cpu"))])
def test_forcing_the_cpu_never_builds_a_gpu_index(latents, fake_gpu, backend, expected):
    built = fake_gpu(2)
    syn = make_distiller("kmeans", backend=backend).distill(latents, 4, seed=0)
    assert (syn.extras["backend"], syn.extras["device"]) == expected and built == []


def test_without_a_gpu_auto_stays_on_the_cpu(latents, fake_gpu):
    built = fake_gpu(0)
    syn = make_distiller("kmeans").distill(latents, 4, seed=0)
    assert (syn.extras["backend"], syn.extras["device"]) == ("faiss", "cpu") and built == []


def test_a_faiss_without_get_num_gpus_counts_as_cpu(monkeypatch):
    monkeypatch.delattr(faiss, "get_num_gpus", raising=False)
    assert quantize.faiss_num_gpus() == 0


@pytest.mark.bad_input
def test_faiss_gpu_without_a_gpu_is_a_clear_error_before_any_work(latents, fake_gpu, monkeypatch):
    fake_gpu(0)
    monkeypatch.setattr(quantize, "kmeans_faiss", lambda *a, **k: pytest.fail("clustered without the GPU"))
    with pytest.raises(DataError, match=r"needs a faiss that sees a GPU.*latentdd\[gpu\]"):
        make_distiller("kmeans", backend="faiss-gpu").distill(latents, 4, seed=0)


def test_the_distill_record_says_where_kmeans_ran(tmp_path, fake_gpu):
    import json

    from latentdd.config import DataConfig
    from latentdd.pipelines.distill import LatentSpaceConfig, distill_to_folder, prepare_latent_space

    fake_gpu(1)
    space = prepare_latent_space(DataConfig(name="digits"), LatentSpaceConfig(vae="pixel", cache_dir=str(tmp_path)),
                                 progress=False)
    out = distill_to_folder(space, "kmeans", 1, 0, tmp_path / "out", params={"niter": 2})
    record = json.loads((out / "images" / "manifest.json").read_text())["record"]
    assert record["method"]["ran_on"] == {"backend": "faiss", "device": "gpu"}
    assert json.loads((out / "distill.json").read_text())["extras"]["device"] == "gpu"


def test_auto_without_faiss_says_how_to_get_it(latents, monkeypatch):
    monkeypatch.setattr(quantize, "faiss_available", lambda: False)
    with pytest.warns(UserWarning, match=r"pip install 'latentdd\[cpu\]'"):
        syn = make_distiller("kmeans").distill(latents, 4, seed=0)
    assert (syn.extras["backend"], syn.extras["device"]) == ("sklearn", "cpu")
