"""Stored state is checked before it is used (issue 32, defects 2 and 6): a checkpoint or cached training
result that fails its checksum, or whose contents do not fit the run (range, shape, NaN, a state that does
not load), is ignored with a warning naming the file, and the run starts afresh -- bit-identical to a run
that never had it -- or the cache entry is rebuilt."""

from __future__ import annotations

import logging
import re
import shutil
import struct

import pytest
import torch

from latentdd.distill import DistillContext, make_distiller, matching
from latentdd.errors import DataError
from latentdd.io import checksum_path
from latentdd.checkpoint import read_state, save_state

TINY = {"iterations": 4, "width": 8, "batch_real": 8, "checkpoint_every": 1, "embedding": "latent"}



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch on one thread for the whole module, the module-scoped fits included: a fit compared bit for bit with
    another must run on as many threads as it (the reductions' order depends on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def _flip_a_byte(path, offset=-5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _zero_the_tensors(path, most=4000) -> None:
    """Zero up to `most` bytes of a safetensors file's tensor data (after its header), as a bad disk might."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    end = min(len(data), start + most)
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _restate(path, change) -> None:
    """Rewrite the state at `path` after change(state), with a matching checksum: only the content checks stand."""
    state = read_state(path, otherwise="")
    change(state)
    save_state(path, state)


# ---------------------------------------------------------------------------------------
# The matching checkpoint


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """(latents, the uninterrupted 4-iteration DM set, a folder holding the checkpoint of its first 2 iterations)."""
    from latentdd.latents.types import Latents

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, 4, 4, generator=g) + torch.arange(3).repeat_interleave(20).view(-1, 1, 1, 1)
    latents = Latents(x, torch.arange(3).repeat_interleave(20), ["a", "b", "c"])
    whole = make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    folder = tmp_path_factory.mktemp("checkpoint")
    make_distiller("dm", **{**TINY, "iterations": 2}).distill(latents, 2, seed=0,
                                                             context=DistillContext(checkpoint_dir=folder))
    return latents, whole, folder


def _checkpoint_copy(stored_run, tmp_path):
    """A copy of the stored run's checkpoint folder -> (its checkpoint file, a context resuming from it)."""
    folder = shutil.copytree(stored_run[2], tmp_path / "ckpt")
    return folder / matching.CHECKPOINT_FILE, DistillContext(checkpoint_dir=folder)


def _momentum(state, shape):
    (saved,) = state["optimizer"]["state"].values()
    saved["momentum_buffer"] = torch.zeros(shape)


TAMPERED = {  # what the tester stored -> (change to the checkpoint's state, the reason the warning gives)
    "latents x 1e6": (lambda s: s["syn"].mul_(1e6), r"largest \|value\| .* is over 1000x the initial set's largest"),
    "a constant": (lambda s: s["syn"].fill_(0.5), "its synthetic set is constant"),
    "iteration -50": (lambda s: s.update(iteration=-50), r"its iteration -50 is not in 0\.\.4"),
    "a longer run's": (lambda s: s.update(iteration=60), "a longer run's .*cannot be rewound"),
    "a wrong shape": (lambda s: s.update(syn=s["syn"][:3]), r"its synthetic set is \(3, 2, 4, 4\)"),
    "an empty optimizer state": (lambda s: s.update(optimizer={}), r"it does not load \(KeyError: 'param_groups'\)"),
    "a wrongly shaped momentum": (lambda s: _momentum(s, (2,)), r"its optimizer's momentum_buffer has shape \(2,\)"),
    "a bad generator state": (lambda s: s.update(generator=torch.zeros(3, dtype=torch.uint8)), "it does not load"),
    "NaN latents": (lambda s: s["syn"].view(-1)[7:9].fill_(float("nan")), "it holds NaN or infinite values"),
}


@pytest.mark.parametrize("tamper", list(TAMPERED))
def test_a_checkpoint_that_does_not_fit_the_run_is_ignored_and_the_run_starts_afresh(stored_run, tmp_path, caplog,
                                                                                     tamper):
    latents, whole, _ = stored_run
    path, context = _checkpoint_copy(stored_run, tmp_path)
    change, reason = TAMPERED[tamper]
    _restate(path, change)
    syn = make_distiller("dm", **TINY).distill(latents, 2, seed=0, context=context)
    warned = _warnings(caplog)
    assert f"ignoring {path}: " in warned and "this run starts afresh" in warned
    assert re.search(reason, warned), warned
    assert syn.extras["resumed_from"] == 0 and torch.equal(syn.latents, whole.latents)  # as if it never existed
    assert read_state(path, otherwise="")["iteration"] == 4  # replaced by this run's checkpoint


@pytest.mark.parametrize("damage", ["bit flip", "truncated", "no checksum"])
def test_a_checkpoint_failing_its_checksum_is_ignored_and_the_run_starts_afresh(stored_run, tmp_path, caplog, damage):
    latents, whole, _ = stored_run
    path, context = _checkpoint_copy(stored_run, tmp_path)
    if damage == "bit flip":
        _flip_a_byte(path)  # in the tensors: still a readable safetensors file
    elif damage == "truncated":
        _truncate(path)
    else:  # a checkpoint written before checksums
        checksum_path(path).unlink()
    syn = make_distiller("dm", **TINY).distill(latents, 2, seed=0, context=context)
    warned = _warnings(caplog)
    assert f"ignoring {path}: " in warned and ("checksum" in warned) and "starts afresh" in warned
    assert syn.extras["resumed_from"] == 0 and torch.equal(syn.latents, whole.latents)


def test_an_untouched_checkpoint_still_resumes_bit_identically(stored_run, tmp_path, caplog):
    latents, whole, _ = stored_run
    _, context = _checkpoint_copy(stored_run, tmp_path)
    syn = make_distiller("dm", **TINY).distill(latents, 2, seed=0, context=context)
    assert syn.extras["resumed_from"] == 2 and torch.equal(syn.latents, whole.latents) and not _warnings(caplog)


def test_a_bacon_pool_checkpoint_that_does_not_load_restarts_the_pool_as_a_fresh_run(stored_run, tmp_path, caplog):
    """The in-loop pool draws its networks from the run's generator: a rejected checkpoint rebuilds it from the
    generator's fresh state, so the run equals one that never had a checkpoint."""
    latents = stored_run[0]
    params = {**TINY, "pool_start": 1, "pool_max": 2, "pool_add_every": 1, "train_steps": 1, "net_batch": 8}
    whole = make_distiller("bacon", **params).distill(latents, 1, seed=0)
    context = DistillContext(checkpoint_dir=tmp_path)
    make_distiller("bacon", **{**params, "iterations": 3}).distill(latents, 1, seed=0, context=context)
    path = tmp_path / matching.CHECKPOINT_FILE
    _restate(path, lambda s: s["source"]["pool"][1]["model"].popitem())  # pool networks are restored first
    syn = make_distiller("bacon", **params).distill(latents, 1, seed=0, context=context)
    assert f"ignoring {path}: it does not load (RuntimeError" in _warnings(caplog)
    assert syn.extras["resumed_from"] == 0 and torch.equal(syn.latents, whole.latents)


@pytest.mark.bad_input
def test_the_divergence_stop_measures_against_the_initial_set_and_names_the_checkpoint_resumed(stored_run, tmp_path):
    """A resumed set cannot raise the limit: values just under divergence x the initial set's largest resume,
    and the first Adam step past that limit stops, naming the checkpoint and how to start afresh."""
    latents = stored_run[0]
    params = {**TINY, "optimizer": "adam", "lr": 0.5, "divergence": 3.0}
    initial = make_distiller("dm", **{**params, "iterations": 1, "lr": 1e-30}).distill(latents, 2, seed=0).latents
    context = DistillContext(checkpoint_dir=tmp_path)
    make_distiller("dm", **{**params, "iterations": 2}).distill(latents, 2, seed=0, context=context)
    path = tmp_path / matching.CHECKPOINT_FILE
    near = 0.999 * 3.0 * float(initial.abs().max())
    signs = torch.randint(2, initial.shape, generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    _restate(path, lambda s: s["syn"].copy_(signs * near))
    with pytest.raises(DataError, match=rf"dm stopped at iteration 2: the synthetic set diverges .*over 3x the initial "
                                        rf"set's largest, {float(initial.abs().max()):.3g}\).*This run resumed from "
                                        rf"{re.escape(str(path))} at iteration 2: .*delete it and run again to start "
                                        "afresh"):
        make_distiller("dm", **params).distill(latents, 2, seed=0, context=context)


# ---------------------------------------------------------------------------------------
# The network bank

BANK = {"networks": "bank", "bank_nets": 1, "bank_steps": (0, 2), "bank_batch": 8}


def _bank_snapshot_weights(state):
    return state["snapshots"][1]["model"]


BANK_DAMAGE = {  # -> (damage to the bank file, the reason the warning gives)
    "4000 zeroed bytes": (_zero_the_tensors, "it fails its checksum"),
    "a snapshot of other shapes": (lambda p: _restate(p, lambda s: _bank_snapshot_weights(s).update(
        {k: torch.zeros(3) for k in list(_bank_snapshot_weights(s))[:1]})), "do not fit the networks"),
    "a NaN accuracy": (lambda p: _restate(p, lambda s: s["snapshots"][0].update(accuracy=float("nan"))),
                       "NaN or infinite"),
    "an accuracy of 250%": (lambda p: _restate(p, lambda s: s["snapshots"][0].update(accuracy=250.0)),
                            "not a percentage"),
}


@pytest.mark.parametrize("damage", list(BANK_DAMAGE))
def test_a_damaged_network_bank_is_trained_again(stored_run, tmp_path, caplog, damage):
    latents = stored_run[0]
    context = DistillContext(cache_dir=tmp_path)
    first = make_distiller("dm", **TINY, **BANK).distill(latents, 2, seed=0, context=context)
    (path,) = (tmp_path / "network_bank").glob("*.safetensors")
    harm, reason = BANK_DAMAGE[damage]
    harm(path)
    again = make_distiller("dm", **TINY, **BANK).distill(latents, 2, seed=0, context=context)
    warned = _warnings(caplog)
    assert f"ignoring {path}: " in warned and reason in warned and "the bank is trained again" in warned
    assert again.extras["bank_cached"] is False and torch.equal(again.latents, first.latents)
    assert make_distiller("dm", **TINY, **BANK).distill(latents, 2, seed=0, context=context).extras["bank_cached"]


# ---------------------------------------------------------------------------------------
# The forgetting counts, the VAE and prior fits, the consistency judge


def test_damaged_forgetting_counts_are_counted_again(stored_run, tmp_path, caplog):
    latents = stored_run[0]
    context = DistillContext(cache_dir=tmp_path)
    first = make_distiller("forgetting", epochs=1, width=8, batch=8).distill(latents, 2, seed=0, context=context)
    (path,) = (tmp_path / "forgetting").glob("*.safetensors")
    _restate(path, lambda s: s["counts"].neg_().sub_(1))
    again = make_distiller("forgetting", epochs=1, width=8, batch=8).distill(latents, 2, seed=0, context=context)
    assert f"ignoring {path}: its counts are not 60 non-negative integers; they are counted again" in _warnings(caplog)
    assert again.extras["counts_cached"] is False and again.extras["indices"] == first.extras["indices"]


def _fit_and_stop_after_the_first_checkpoint(fit) -> None:
    """Run fit() (of the VAE or the prior) until it writes its first checkpoint, then stop it as a kill would."""
    from latentdd import fitting as module

    real = module.save_state

    def save_then_stop(path, state):
        real(path, state)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "save_state", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            fit()


def _partial_checkpoint(cache):
    (path,) = (p for p in cache.glob(".partial-*/checkpoint.*") if p.suffix != ".sha256")
    return path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.fixture(scope="module")
def vae_fit(tmp_path_factory):
    """(digits train/test, a tiny fit's config, its uninterrupted VAE, a cache folder holding its step-2 checkpoint)."""
    from latentdd.data import load_dataset
    from latentdd.vae import fit as fit_module
    from tests.test_vae import tiny_fit_config

    digits = load_dataset("digits", "train").subset(range(64)), load_dataset("digits", "test").subset(range(16))
    config = tiny_fit_config(max_steps=4, checkpoint_every=2, batch_size=16, scale_images=32, log_every=2)
    whole, _ = fit_module.fit_vae(*digits, config, tmp_path_factory.mktemp("whole"), progress=False)
    cache = tmp_path_factory.mktemp("stopped")
    _fit_and_stop_after_the_first_checkpoint(lambda: fit_module.fit_vae(*digits, config, cache, progress=False))
    return digits, config, whole, cache


VAE_DAMAGE = {
    "truncated": (_truncate, "it fails its checksum"),
    "a flipped bit": (_flip_a_byte, "it fails its checksum"),
    "a weight of the wrong shape": (lambda p: _restate(p, lambda s: s["model"].update(
        {next(iter(s["model"])): torch.zeros(1)})), r"it does not load \(RuntimeError.*size mismatch"),
    "step -50": (lambda p: _restate(p, lambda s: s.update(step=-50)), r"its step -50 is not in 0\.\.3"),
}


@pytest.mark.parametrize("damage", list(VAE_DAMAGE))
def test_a_damaged_vae_fit_checkpoint_is_ignored_and_the_fit_starts_afresh(vae_fit, tmp_path, caplog, damage):
    from latentdd.vae.fit import fit_vae

    digits, config, whole, stopped = vae_fit
    cache = shutil.copytree(stopped, tmp_path / "cache")
    path = _partial_checkpoint(cache)
    harm, reason = VAE_DAMAGE[damage]
    harm(path)
    fitted, _ = fit_vae(*digits, config, cache, progress=False)
    warned = _warnings(caplog)
    assert f"ignoring {path}: " in warned and re.search(reason, warned, re.DOTALL) and "the fit starts afresh" in warned
    assert _same_weights(fitted.model, whole.model)


def test_a_damaged_prior_fit_checkpoint_is_ignored_and_the_fit_starts_afresh(tmp_path, caplog):
    from latentdd.prior import fit as prior_fit
    from tests.test_prior import learnable_latents, tiny_config

    config, latents = tiny_config(max_steps=4, checkpoint_every=2), learnable_latents(32)
    whole, _, _ = prior_fit.fit_prior(latents, config, tmp_path / "whole", progress=False)
    _fit_and_stop_after_the_first_checkpoint(lambda: prior_fit.fit_prior(latents, config, tmp_path, progress=False))
    path = _partial_checkpoint(tmp_path)
    _restate(path, lambda s: s["ema"]["shadow_params"].pop())
    fitted, _, _ = prior_fit.fit_prior(latents, config, tmp_path, progress=False)
    assert f"ignoring {path}: its EMA weights do not fit the UNet; the fit starts afresh" in _warnings(caplog)
    assert _same_weights(fitted, whole)


def test_a_damaged_consistency_judge_is_trained_again(tmp_path, caplog):
    from latentdd.data import ImageSet
    from latentdd.evaluate.consistency import JudgeConfig, fit_judge

    labels = torch.arange(2).repeat_interleave(16)
    images = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.2 +
              labels.view(-1, 1, 1, 1) * 0.5)
    data = ImageSet(images, labels, ["a", "b"], name="toy", split="train")
    config = JudgeConfig(width=8, epochs=2, batch_size=16)
    judge = fit_judge(data, data, config, tmp_path)
    (path,) = tmp_path.glob("*/judge.safetensors")
    _truncate(path)
    again = fit_judge(data, data, config, tmp_path)
    assert f"ignoring {path}: it fails its checksum" in _warnings(caplog)
    assert not again.report["cached"] and _same_weights(again.model, judge.model)
    assert fit_judge(data, data, config, tmp_path).report["cached"]
