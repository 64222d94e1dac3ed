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
    short = make_distiller("mtt", iterations=1, epoch_steps=2, **TINY).distill(latents, 1, seed=0, context=context)
    assert short.extras["experts_cached"] == 0  # shorter epochs: another buffer
    assert len(list((tmp_path / "expert_buffer").iterdir())) == 2


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


def test_datm_s_window_of_start_epochs_rises_to_its_final_upper_bound():
    mtt = make_distiller("mtt", iterations=11, max_start_epoch=2, max_start_epoch_final=7, min_start_epoch=1,
                         buffer_epochs=10)
    assert [mtt.window(it) for it in (0, 5, 10)] == [(1, 2), (1, 4), (1, 7)]
    assert make_distiller("mtt", iterations=11).window(10) == (0, 10)  # no final bound: fixed
    with pytest.raises(DataError, match="max_start_epoch_final 9"):
        make_distiller("mtt", buffer_epochs=10, max_start_epoch_final=9)


def test_a_rising_window_spans_the_run_so_its_checkpoint_is_not_continued_to_more_iterations(space):
    from latentdd.pipelines.run_config import MethodSpec

    latents, _ = space
    key = lambda **kw: make_distiller("mtt", **kw)._checkpoint_key(latents, 1, 0)  # noqa: E731
    assert key(iterations=5) == key(iterations=9)  # a fixed window: 5 iterations continue into 9
    assert key(iterations=5, max_start_epoch_final=12) != key(iterations=9, max_start_epoch_final=12)
    with pytest.raises(DataError, match="spans its total iterations"):
        MethodSpec.parse({"method": "mtt", "params": {"max_start_epoch_final": 12}, "curve": [5, 9]}, [1])
    assert len(MethodSpec.parse({"method": "mtt", "curve": [5, 9]}, [1])[0].points()) == 2


def test_learned_labels_start_at_the_expert_s_logits_move_with_the_set_and_resume(space, tmp_path):
    latents, decode = space
    kw = TINY | {"learn_labels": True, "lr_labels": 5.0, "checkpoint_every": 2}
    cache = tmp_path / "cache"
    barely = make_distiller("mtt", iterations=1, **kw | {"lr_labels": 1e-12}).distill(
        latents, 1, seed=0, context=DistillContext(decode=decode, cache_dir=cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = make_distiller("mtt", iterations=4, **kw).distill(
            latents, 1, seed=0, context=DistillContext(decode=decode, cache_dir=cache))
        context = DistillContext(decode=decode, cache_dir=cache, checkpoint_dir=tmp_path / "chain")
        make_distiller("mtt", iterations=2, **kw).distill(latents, 1, seed=0, context=context)
        resumed = make_distiller("mtt", iterations=4, **kw).distill(latents, 1, seed=0, context=context)
    finally:
        torch.set_num_threads(threads)
    assert straight.soft_labels.shape == (10, 10)
    assert torch.allclose(straight.soft_labels.sum(1), torch.ones(10))
    assert not torch.allclose(straight.soft_labels, barely.soft_labels, atol=1e-5)  # they moved
    assert torch.equal(resumed.soft_labels, straight.soft_labels) and torch.equal(resumed.latents, straight.latents)
    with pytest.raises(DataError, match="use factor 1 to learn labels"):
        make_distiller("mtt", learn_labels=True, factor=2)


def test_init_correct_starts_from_real_latents_the_expert_classifies_right(space, tmp_path):
    from latentdd.checkpoint import read_state
    from latentdd.distill.matching import Inputs, NetSpec
    from latentdd.distill.mtt import ExpertBuffer

    latents, decode = space
    out = make_distiller("mtt", iterations=1, init="correct", **TINY | {"lr": 1e-12, "expert_lr": 0.05, "expert_batch": 16}).distill(
        latents, 2, seed=0, context=DistillContext(decode=decode, cache_dir=tmp_path / "cache"))
    (first,) = (tmp_path / "cache" / "expert_buffer").glob("*/expert_0.safetensors")
    spec = NetSpec(1, 10, 8, TINY["width"], out.extras["depth"], "instancenorm")
    judge = ExpertBuffer(spec, [read_state(first, otherwise="")["epochs"]], 0.0, 1).judge()  # expert 0, last epoch
    inputs = Inputs.make("pixel", latents, DistillContext(decode=decode))
    chosen_right = judge(inputs.syn(out.latents)).argmax(1) == out.labels
    all_right = judge(inputs.syn(latents.latents)).argmax(1) == latents.labels
    for k in range(10):  # as many of the class's correctly classified latents as it has, up to IPC 2
        assert int(chosen_right[out.labels == k].sum()) == min(2, int(all_right[latents.labels == k].sum()))
    assert int(chosen_right.sum()) > int(all_right.float().mean() * 20)  # more than a random draw would give
