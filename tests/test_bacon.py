"""BACON / IDM distillers on tiny latents: shapes, seeding, the loss falls, resume, pixel path, factorization, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentdd.distill import DistillContext, make_distiller, matching
from latentdd.errors import DataError
from latentdd.nn.factorization import tile

TINY = {"iterations": 6, "width": 8, "pool_start": 2, "pool_add_every": 2, "pool_max": 3, "batch_real": 8,
        "net_batch": 16, "train_steps": 1, "checkpoint_every": 1}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


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
    def losses(curve):  # every point but its wall-clock seconds
        return [{k: v for k, v in point.items() if k != "seconds"} for point in curve]

    assert losses(resumed.extras["loss_curve"]) == losses(whole.extras["loss_curve"])
    other = make_distiller("bacon", **{**TINY, "lr": 0.1}).distill(latents, 2, seed=0, context=ckpt)
    assert other.extras["resumed_from"] == 0  # another configuration never resumes a foreign checkpoint


def test_a_checkpoint_past_the_requested_iterations_is_not_rewound(latents, tmp_path):
    ckpt = DistillContext(checkpoint_dir=tmp_path)
    make_distiller("bacon", **TINY).distill(latents, 2, seed=0, context=ckpt)  # leaves iteration 6 behind
    short = make_distiller("bacon", **{**TINY, "iterations": 3}).distill(latents, 2, seed=0, context=ckpt)
    assert short.extras["resumed_from"] == 0 and short.extras["loss_curve"][-1]["iteration"] == 3
    fresh = make_distiller("bacon", **{**TINY, "iterations": 3}).distill(latents, 2, seed=0)
    assert torch.equal(short.latents, fresh.latents)


def test_pixel_embedding_decodes_and_moves_the_latents(latents):
    ctx = DistillContext(decode=decode)
    syn = make_distiller("bacon", embedding="pixel", **TINY).distill(latents, 2, seed=0, context=ctx)
    start = make_distiller("bacon", embedding="pixel", **{**TINY, "iterations": 1, "lr": 1e-12}).distill(
        latents, 2, seed=0, context=ctx)
    assert syn.extras["embedding_features"] == 8 * 1 * 1  # 8 px -> one 2x pooling per layer, depth 3
    assert (syn.latents - start.latents).abs().max() > 1e-4
    with pytest.raises(DataError, match="embedding 'pixel' needs the VAE decoder"):
        make_distiller("bacon", embedding="pixel", **TINY).distill(latents, 2, seed=0)


def test_pixel_inputs_decode_every_real_latent_once(latents, monkeypatch):
    monkeypatch.setattr(matching.inputs, "_DECODE_BATCH", 7)  # 60 latents: several batches and a ragged last one
    inputs = matching.Inputs.make("pixel", latents, DistillContext(decode=decode))
    pixels = decode(latents.latents)  # (60, 1, 8, 8)
    mean, std = pixels.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), pixels.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    idx = torch.tensor([5, 0, 59, 5])
    expected = (pixels[idx] - mean) / std
    torch.testing.assert_close(inputs.real(idx), expected)
    z = latents.latents[idx].clone().requires_grad_(True)
    x = inputs.syn(z)  # the synthetic side still decodes, with gradients to the latents
    torch.testing.assert_close(x, expected)
    x.sum().backward()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("factor", [1, 2])
def test_pixel_embedding_decodes_real_latents_once_and_synthetic_ones_every_iteration(latents, factor):
    decoded = []

    def counting(z):
        decoded.append(len(z))
        return decode(z)

    make_distiller("bacon", embedding="pixel", factor=factor, **TINY).distill(
        latents, 2, seed=0, context=DistillContext(decode=counting))
    # a 1-latent shape probe, the 60 real latents once, then 3 classes x IPC 2 stored latents per iteration
    # (with factor 2 too: the whole stored latent is decoded, and its pixels split into tiles)
    assert sum(decoded) == 1 + 60 + TINY["iterations"] * 3 * 2


def test_pixel_cache_over_the_limit_is_refused_with_advice(latents, monkeypatch):
    monkeypatch.setattr(matching.inputs, "PIXEL_CACHE_MAX_BYTES", 60 * 64 * 4 - 1)
    with pytest.raises(DataError, match="use embedding 'latent', or distil a smaller subset"):
        make_distiller("bacon", embedding="pixel", **TINY).distill(latents, 2, seed=0,
                                                                  context=DistillContext(decode=decode))


@pytest.mark.parametrize("embedding", ["latent", "pixel"])
def test_factor_2_runs_and_records_itself(latents, embedding):
    syn = make_distiller("bacon", embedding=embedding, factor=2, **TINY).distill(
        latents, 2, seed=0, context=DistillContext(decode=decode))
    assert syn.latents.shape == (6, 2, 4, 4) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert syn.params["factor"] == 2
    assert syn.extras["factorization"] == {"factor": 2, "tiles": "latent", "latents_matched_per_class": 8}
    assert len(syn.extras["loss_curve"]) == TINY["iterations"]
    plain = make_distiller("bacon", embedding=embedding, **TINY)
    assert plain.distill(latents, 2, seed=0, context=DistillContext(decode=decode)).extras["factorization"] is False
    assert make_distiller("bacon", factor=2)._checkpoint_key(latents, 2, 0) != plain._checkpoint_key(latents, 2, 0)


def test_factor_2_starts_from_four_pooled_class_members_per_latent(latents):
    start = make_distiller("bacon", factor=2, **{**TINY, "iterations": 1, "lr": 1e-12}).distill(latents, 2, seed=0)
    sources = []
    for k in range(3):
        pooled = F.avg_pool2d(latents.of_class(k), 2).reshape(20, -1)  # (20, 2*2*2)
        rows = start.latents[start.labels == k]  # (2, 2, 4, 4)
        quadrants = rows.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(8, -1)  # 4 per latent
        dist, which = torch.cdist(quadrants, pooled).min(dim=1)
        assert dist.max() < 1e-5  # every quadrant is a pooled member of its own class ...
        sources.append(len(set(which.tolist())))
    assert sources == [8, 8, 8]  # ... and the 8 quadrants of a class are 8 different members
    kmeans = make_distiller("kmeans").distill(latents, 8, seed=0).latents  # 4 x IPC centroids per class
    init = make_distiller("bacon", init="kmeans", factor=2, **{**TINY, "iterations": 1, "lr": 1e-12}).distill(
        latents, 2, seed=0)
    torch.testing.assert_close(init.latents, torch.cat([tile(c, 2) for c in kmeans.split(8)]), atol=1e-6, rtol=0)


def test_factor_needs_divisible_latents_and_enough_members(latents):
    with pytest.raises(DataError, match="must be multiples of 3"):
        make_distiller("bacon", factor=3, **TINY).distill(latents, 1, seed=0)
    with pytest.raises(DataError, match="starts each class from 24 latents .* lower --ipc"):
        make_distiller("bacon", factor=2, **TINY).distill(latents, 6, seed=0)


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
                           ({"lam": 2.0}, "lam must lie in"), ({"pool_start": 5, "pool_max": 2}, "exceeds pool_max"),
                           ({"factor": 0}, "factor must be a positive integer")]:
        with pytest.raises(DataError, match=needle):
            make_distiller("bacon", **params)
