"""MTT (issue 35): the unrolled loss against a hand-built unroll, the cached expert buffer, a run on digits that
resumes bit for bit with its learnable step size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentdd.data import load_dataset
from latentdd.distill import DistillContext, make_distiller
from latentdd.distill.mtt import unroll_loss
from latentdd.errors import DataError
from latentdd.latents.types import Latents
from latentdd.vae import PixelVAE


def test_the_unrolled_loss_and_its_gradients_equal_a_hand_built_unroll():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(6, 3)
    start = {"weight": torch.randn(3, 6, generator=g), "bias": torch.randn(3, generator=g)}
    target = {"weight": torch.randn(3, 6, generator=g), "bias": torch.randn(3, generator=g)}
    xs = [torch.randn(5, 6, generator=g, dtype=torch.float64).float().requires_grad_(True) for _ in range(3)]
    ys = [torch.randint(3, (5,), generator=g) for _ in range(3)]
    lr = torch.tensor(0.3, requires_grad=True)
    loss = unroll_loss(model, start, target, list(zip(xs, ys)), lr)
    got = torch.autograd.grad(loss, [*xs, lr])

    # By hand: three SGD steps of W x + b under cross-entropy, each gradient kept in the graph.
    xs2 = [x.detach().clone().requires_grad_(True) for x in xs]
    lr2 = lr.detach().clone().requires_grad_(True)
    w, b = start["weight"].clone().requires_grad_(True), start["bias"].clone().requires_grad_(True)
    for x, y in zip(xs2, ys):
        step = F.cross_entropy(x @ w.T + b, y)
        gw, gb = torch.autograd.grad(step, [w, b], create_graph=True)
        w, b = w - lr2 * gw, b - lr2 * gb
    want_loss = (((w - target["weight"]) ** 2).sum() + ((b - target["bias"]) ** 2).sum()) / (
        ((start["weight"] - target["weight"]) ** 2).sum() + ((start["bias"] - target["bias"]) ** 2).sum())
    want = torch.autograd.grad(want_loss, [*xs2, lr2])
    assert torch.allclose(loss, want_loss, atol=1e-6)
    for a, b_ in zip(got, want):
        assert torch.allclose(a, b_, atol=1e-6)
    assert all(float(g_.abs().sum()) > 0 for g_ in got)  # every input and the step size get a gradient


@pytest.fixture(scope="module")
def space():
    train = load_dataset("digits", "train")
    return Latents(train.images, train.labels, list(train.class_names)), PixelVAE(1, 8).decode


TINY = {"experts": 2, "buffer_epochs": 3, "max_start_epoch": 1, "expert_epochs": 2, "width": 8, "syn_steps": 3,
        "lr": 0.01, "syn_lr": 0.01, "lr_lr": 1e-4}


def test_the_expert_buffer_is_trained_once_and_then_read_from_its_cache(space, tmp_path):
    latents, decode = space
    context = DistillContext(decode=decode, cache_dir=tmp_path)
    first = make_distiller("mtt", iterations=1, **TINY).distill(latents, 1, seed=0, context=context)
    assert first.extras["networks"] == "expert trajectories" and first.extras["experts_cached"] == 0
    files = sorted((tmp_path / "expert_buffer").glob("*/expert_*.safetensors"))
    assert [f.name for f in files] == ["expert_0.safetensors", "expert_1.safetensors"]
    again = make_distiller("mtt", iterations=1, **TINY).distill(latents, 1, seed=0, context=context)
    assert again.extras["experts_cached"] == 2 and torch.equal(again.latents, first.latents)


def test_mtt_moves_the_set_learns_its_step_size_and_resumes_bit_for_bit(space, tmp_path):
    latents, decode = space
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = make_distiller("mtt", iterations=4, checkpoint_every=2, **TINY).distill(
            latents, 1, seed=0, context=DistillContext(decode=decode, cache_dir=tmp_path / "cache"))
        chain = tmp_path / "chain"
        context = DistillContext(decode=decode, cache_dir=tmp_path / "cache", checkpoint_dir=chain)
        make_distiller("mtt", iterations=2, checkpoint_every=2, **TINY).distill(latents, 1, seed=0, context=context)
        resumed = make_distiller("mtt", iterations=4, checkpoint_every=2, **TINY).distill(latents, 1, seed=0,
                                                                                          context=context)
    finally:
        torch.set_num_threads(threads)
    assert resumed.extras["resumed_from"] == 2
    assert torch.equal(resumed.latents, straight.latents)
    assert resumed.extras["syn_lr_final"] == straight.extras["syn_lr_final"] != TINY["syn_lr"]
    start = make_distiller("mtt", iterations=1, **TINY | {"lr": 1e-12}).distill(
        latents, 1, seed=0, context=DistillContext(decode=decode, cache_dir=tmp_path / "cache"))
    assert not torch.allclose(straight.latents, start.latents, atol=1e-4)
    assert all(torch.isfinite(torch.tensor(p["match"])) for p in straight.extras["loss_curve"])


def test_mtt_refuses_a_window_past_its_buffer_and_other_networks():
    with pytest.raises(DataError, match="max_start_epoch \\+ expert_epochs <= buffer_epochs"):
        make_distiller("mtt", buffer_epochs=5, max_start_epoch=4, expert_epochs=2)
    with pytest.raises(DataError, match="its expert trajectories"):
        make_distiller("mtt", networks="bank")
