"""BACON / IDM distillers on tiny latents: shapes, seeding, the loss falls, resume, pixel path, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentdd.distill import DistillContext, make_distiller
from latentdd.errors import DataError
from latentdd.latents.types import Latents

TINY = {"iterations": 6, "width": 8, "pool_start": 2, "pool_add_every": 2, "pool_max": 3, "batch_real": 8,
        "net_batch": 16, "train_steps": 1, "checkpoint_every": 1}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def latents():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, 4, 4, generator=g) + torch.arange(3).repeat_interleave(20).view(-1, 1, 1, 1)
    return Latents(x, torch.arange(3).repeat_interleave(20), ["a", "b", "c"])


def decode(z: torch.Tensor) -> torch.Tensor:
    """A fixed differentiable 'VAE decoder': (B, 2, 4, 4) -> (B, 1, 8, 8) in [0, 1]."""
    return torch.sigmoid(F.interpolate(z[:, :1] - z[:, 1:], scale_factor=2, mode="bilinear"))


@pytest.mark.parametrize("loss", ["bacon", "bacon-reference", "dm"])
def test_shapes_weights_and_same_seed_same_bits(latents, loss):
    a = make_distiller("bacon", loss=loss, **TINY).distill(latents, 2, seed=0)
    assert a.latents.shape == (6, 2, 4, 4) and a.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert a.weights.tolist() == [0.5] * 6 and a.extras["pool_size"] == 3
    assert [row["iteration"] for row in a.extras["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    b = make_distiller("bacon", loss=loss, **TINY).distill(latents, 2, seed=0)
    assert torch.equal(a.latents, b.latents)
    c = make_distiller("bacon", loss=loss, **TINY).distill(latents, 2, seed=1)
    assert not torch.equal(a.latents, c.latents)


def test_init_real_starts_from_class_members_and_kmeans_from_centroids(latents):
    start = make_distiller("bacon", **{**TINY, "iterations": 1, "lr": 1e-12}).distill(latents, 2, seed=0)
    for k in range(3):  # one step of lr 1e-12 leaves real latents of the right class
        rows = start.latents[start.labels == k].reshape(2, -1)
        real = latents.of_class(k).reshape(20, -1)
        assert torch.cdist(rows, real).min(dim=1).values.max() < 1e-6
    kmeans = make_distiller("kmeans").distill(latents, 2, seed=0).latents
    init = make_distiller("bacon", init="kmeans", **{**TINY, "iterations": 1, "lr": 1e-12}).distill(latents, 2, seed=0)
    torch.testing.assert_close(init.latents, kmeans, atol=1e-6, rtol=0)


def test_matching_loss_falls_with_a_fixed_network(latents):
    fixed = {**TINY, "iterations": 30, "pool_start": 1, "pool_max": 1, "train_nets": 0, "dsa": False,
             "ce_weight": 0.0, "lr": 0.5, "batch_real": 20, "loss": "dm"}  # whole classes: a fixed target
    curve = make_distiller("bacon", **fixed).distill(latents, 2, seed=0).extras["loss_curve"]
    first, last = np.mean([r["match"] for r in curve[:3]]), np.mean([r["match"] for r in curve[-3:]])
    assert last < 0.5 * first


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(latents, tmp_path):
    whole = make_distiller("bacon", **TINY).distill(latents, 2, seed=0)
    ckpt = DistillContext(checkpoint_dir=tmp_path)
    make_distiller("bacon", **{**TINY, "iterations": 3}).distill(latents, 2, seed=0, context=ckpt)  # "interrupted"
    resumed = make_distiller("bacon", **TINY).distill(latents, 2, seed=0, context=ckpt)
    assert resumed.extras["resumed_from"] == 3
    assert torch.equal(resumed.latents, whole.latents)
    assert resumed.extras["loss_curve"] == whole.extras["loss_curve"]
    other = make_distiller("bacon", **{**TINY, "lr": 0.1}).distill(latents, 2, seed=0, context=ckpt)
    assert other.extras["resumed_from"] == 0  # another configuration never resumes a foreign checkpoint


def test_pixel_embedding_decodes_and_moves_the_latents(latents):
    ctx = DistillContext(decode=decode)
    syn = make_distiller("bacon", embedding="pixel", **TINY).distill(latents, 2, seed=0, context=ctx)
    start = make_distiller("bacon", embedding="pixel", **{**TINY, "iterations": 1, "lr": 1e-12}).distill(
        latents, 2, seed=0, context=ctx)
    assert syn.extras["embedding_features"] == 8 * 1 * 1  # 8 px -> one 2x pooling per layer, depth 3
    assert (syn.latents - start.latents).abs().max() > 1e-4
    with pytest.raises(DataError, match="embedding 'pixel' needs the VAE decoder"):
        make_distiller("bacon", embedding="pixel", **TINY).distill(latents, 2, seed=0)


def test_divergence_stops_with_advice(latents, tmp_path):
    wild = {**TINY, "lr": 1e30, "loss": "dm", "ce_weight": 0.0}
    with pytest.raises(DataError, match="bacon stopped at iteration .*Lower lr"):
        make_distiller("bacon", **wild).distill(latents, 2, seed=0, context=DistillContext(checkpoint_dir=tmp_path))


def test_idm_is_bacon_with_mean_matching(latents):
    idm = make_distiller("idm", **TINY)
    assert idm.loss == "dm" and idm.name == "idm"
    assert idm.distill(latents, 2, seed=0).method == "idm"


def test_bad_parameters_are_refused():
    for params, needle in [({"loss": "mmd"}, "loss must be one of"), ({"embedding": "clip"}, "embedding must be"),
                           ({"iterations": 0}, "iterations must be a positive integer"),
                           ({"lam": 2.0}, "lam must lie in"), ({"pool_start": 5, "pool_max": 2}, "exceeds pool_max")]:
        with pytest.raises(DataError, match=needle):
            make_distiller("bacon", **params)
