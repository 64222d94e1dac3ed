"""The matching engine and DM: DM's update against a hand-built one, fresh networks, optimisers,
resume, content-keyed checkpoints, the divergence stop, and the identity (pixel) latent space."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentdd.distill import DistillContext, make_distiller, matching
from latentdd.errors import DataError, LatentDDError
from latentdd.latents.types import Latents
from latentdd.nn.convnet import ConvNet
from latentdd.vae import PixelVAE, load_vae

TINY = {"iterations": 4, "width": 8, "batch_real": 8, "checkpoint_every": 1, "embedding": "latent"}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _capture_networks(monkeypatch) -> list[ConvNet]:
    seen: list[ConvNet] = []
    original = matching.FreshNetworks.next

    def next_(self, it):
        net = original(self, it)
        seen.append(net.model)
        return net

    monkeypatch.setattr(matching.FreshNetworks, "next", next_)
    return seen


@pytest.mark.parametrize("extra", [{}, {"init": "kmeans", "weights": "voronoi"}])
def test_one_dm_step_is_sgd_on_the_summed_squared_mean_gaps(latents, monkeypatch, extra):
    """DM's update by hand: lr * grad of sum_k ||mean e(real_k) - mean e(syn_k)||^2 through the same network,
    the synthetic mean weighted by the set's weights (uniform, or the Voronoi masses of its initial points).

    batch_real 20 takes every member of each class, whose mean does not depend on the draw."""
    nets = _capture_networks(monkeypatch)
    params = {**TINY, "iterations": 1, "batch_real": 20, "dsa": False, "lr": 0.5, "momentum": 0.0, **extra}
    first = make_distiller("dm", **{**params, "iterations": 1, "lr": 1e-30}).distill(latents, 2, seed=3)
    start, w = first.latents, first.weights
    nets.clear()
    after = make_distiller("dm", **params).distill(latents, 2, seed=3)
    (net,) = nets
    syn = start.clone().requires_grad_(True)
    loss = sum(((w[2 * k : 2 * k + 2, None] * net.embed(syn[2 * k : 2 * k + 2])).sum(0) / w[2 * k : 2 * k + 2].sum()
                - net.embed(latents.latents[20 * k : 20 * k + 20]).mean(0)).square().sum() for k in range(3))
    loss.backward()
    torch.testing.assert_close(after.latents, start - 0.5 * syn.grad, rtol=1e-5, atol=1e-6)
    assert not torch.equal(after.latents, start) and torch.equal(after.weights, w)


def test_dm_voronoi_weights_are_the_masses_of_the_initial_points(latents):
    """From k-means centroids they are kmeans's own (DDOQ) weights; from real latents, their cells' masses."""
    kinit = make_distiller("dm", **TINY, init="kmeans", weights="voronoi").distill(latents, 2, seed=0)
    torch.testing.assert_close(kinit.weights, make_distiller("kmeans").distill(latents, 2, seed=0).weights)
    uniform = make_distiller("dm", **TINY, init="kmeans").distill(latents, 2, seed=0)
    assert torch.equal(uniform.weights, torch.full((6,), 0.5)) and not torch.equal(uniform.latents, kinit.latents)
    real = make_distiller("dm", **TINY, weights="voronoi").distill(latents, 2, seed=0)
    sums = real.weights.reshape(3, 2).sum(1)
    torch.testing.assert_close(sums, torch.ones(3))
    assert real.params["weights"] == "voronoi"
    assert not torch.equal(real.weights, torch.full((6,), 0.5))  # 20 latents a class rarely split 10 / 10


def test_dm_draws_a_fresh_untrained_network_every_iteration(latents, monkeypatch):
    nets = _capture_networks(monkeypatch)
    syn = make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    assert len(nets) == 4 and syn.extras["networks"].startswith("fresh")
    firsts = [n.features[0].weight.detach() for n in nets]
    assert all(not torch.equal(a, b) for a, b in zip(firsts, firsts[1:]))
    # Nothing trains them: each still holds the weights its seed gives a new ConvNet.
    again = _capture_networks(monkeypatch)
    make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    assert all(torch.equal(a.features[0].weight, b.features[0].weight) for a, b in zip(nets, again))


def test_dm_same_seed_same_bits_other_seed_other_set_and_adam_differs(latents):
    a = make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    b = make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    assert torch.equal(a.latents, b.latents) and a.method == "dm" and a.latents.shape == (6, 2, 4, 4)
    assert not torch.equal(a.latents, make_distiller("dm", **TINY).distill(latents, 2, seed=1).latents)
    adam = make_distiller("dm", **TINY, optimizer="adam", lr=0.01).distill(latents, 2, seed=0)
    assert not torch.equal(adam.latents, a.latents) and adam.params["optimizer"] == "adam"
    assert [p["iteration"] for p in a.extras["loss_curve"]] == [1, 2, 3, 4]
    assert all("match" in p and p["seconds"] >= 0 for p in a.extras["loss_curve"])


def test_dm_resume_equals_an_uninterrupted_run_and_other_latents_never_resume(latents, tmp_path):
    whole = make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    ckpt = DistillContext(checkpoint_dir=tmp_path)
    make_distiller("dm", **{**TINY, "iterations": 2}).distill(latents, 2, seed=0, context=ckpt)
    resumed = make_distiller("dm", **TINY).distill(latents, 2, seed=0, context=ckpt)
    assert resumed.extras["resumed_from"] == 2 and torch.equal(resumed.latents, whole.latents)
    # Same shape, same sums, other content: the content key tells them apart.
    x = latents.latents.clone()
    x[0, 0, 0, 0], x[0, 0, 0, 1] = x[0, 0, 0, 1].item(), x[0, 0, 0, 0].item()
    swapped = Latents(x, latents.labels, latents.class_names)
    make_distiller("dm", **{**TINY, "iterations": 2}).distill(swapped, 2, seed=0, context=ckpt)
    assert make_distiller("dm", **TINY).distill(latents, 2, seed=0, context=ckpt).extras["resumed_from"] == 0


@pytest.mark.bad_input
def test_a_diverging_set_stops_with_advice_before_anything_is_written(latents, tmp_path):
    with pytest.raises(DataError, match=r"dm stopped at iteration \d+: the synthetic set diverges .*Lower lr"):
        make_distiller("dm", **{**TINY, "lr": 1e6}).distill(latents, 2, seed=0)
    with pytest.raises(DataError, match="bacon stopped at iteration .*diverges.*Lower lr .* or ce_weight"):
        make_distiller("bacon", **{**TINY, "lr": 1e6, "loss": "dm", "ce_weight": 0.0, "pool_start": 1,
                                   "train_steps": 1, "net_batch": 8}).distill(latents, 2, seed=0)


@pytest.mark.bad_input
@pytest.mark.parametrize("params, needle", [({"optimizer": "lbfgs"}, "optimizer must be one of sgd, adam"),
                                            ({"divergence": 0.5}, "divergence must be > 1"),
                                            ({"batch_real": 0}, "batch_real must be a positive integer"),
                                            ({"embedding": "clip"}, "embedding must be one of"),
                                            ({"weights": "sqrt"}, "dm weights must be one of uniform, voronoi"),
                                            ({"weights": "voronoi", "factor": 2}, "use factor 1"),
                                            ({"tiles": "pixels"}, "tiles must be one of latent, decoded"),
                                            ({"tiles": "decoded", "factor": 2, "embedding": "latent"}, "needs embedding 'pixel'"),
                                            ({"compile": "yes"}, "compile must be one of off, auto, on"),
                                            ({"real_precision": "float16"},
                                             "real_precision must be one of float32, bfloat16")])
def test_bad_engine_parameters_are_refused(params, needle):
    with pytest.raises(DataError, match=needle):
        make_distiller("dm", **params)


@pytest.mark.bad_input
def test_dc_refuses_the_embedding_speed_ups_it_does_not_use():
    with pytest.raises(DataError, match="dc matches parameter gradients.*leave them at off / float32"):
        make_distiller("dc", compile="auto")
    with pytest.raises(DataError, match="dsa matches parameter gradients"):
        make_distiller("dsa", real_precision="bfloat16")


# ---------------------------------------------------------------------------------------
# The fast embedding forward


def _spec(size=8, channels=2, depth=2):
    return matching.NetSpec(channels=channels, num_classes=3, size=size, width=8, depth=depth, norm="instancenorm")


def test_the_compiled_embedder_follows_each_loaded_network_as_eager_does():
    """One module compiled once serves every network: after each load its output is that network's own
    (weights are inputs of the compiled graph, not constants baked in at the first call)."""
    spec = _spec()
    x = torch.randn(5, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    embedder = matching.Embedder(spec, "on", "float32")
    outputs = []
    for seed in (1, 2):
        net = spec.build(torch.Generator().manual_seed(seed))
        embedder.load(net)
        with torch.no_grad():
            expected = net.embed(x)
        torch.testing.assert_close(embedder.real(x), expected, rtol=1e-4, atol=1e-5)
        syn = x.clone().requires_grad_(True)
        embedder.syn(syn).square().sum().backward()
        eager = x.clone().requires_grad_(True)
        net.requires_grad_(False).embed(eager).square().sum().backward()
        torch.testing.assert_close(syn.grad, eager.grad, rtol=1e-4, atol=1e-5)
        outputs.append(expected)
    assert not torch.allclose(outputs[0], outputs[1])
    assert embedder.record()["embedding_forward"] == {"compile": "on", "compiled": True, "compile_fallback": None,
                                                      "real_precision": "float32"}


def test_the_compiled_embedder_takes_one_channel_inputs_of_any_strides():
    """(n, 1, S, S) tensors come with stride 1 or S*S on the channel axis (both contiguous): one result."""
    spec = _spec(channels=1)
    net = spec.build(torch.Generator().manual_seed(0))
    embedder = matching.Embedder(spec, "on", "float32")
    embedder.load(net)
    x = torch.randn(5, 8, 8, 1, generator=torch.Generator().manual_seed(1)).permute(0, 3, 1, 2)  # stride 1 on C
    assert x.is_contiguous() and x.stride(1) == 1
    with torch.no_grad():
        torch.testing.assert_close(embedder.syn(x), net.embed(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(embedder.syn(x.contiguous().clone()), net.embed(x), rtol=1e-4, atol=1e-5)


def test_bfloat16_real_embeddings_are_float32_without_gradient_and_close_to_float32():
    spec = _spec(size=16, channels=1, depth=3)
    net = spec.build(torch.Generator().manual_seed(0))
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    full, half = matching.Embedder(spec, "off", "float32"), matching.Embedder(spec, "off", "bfloat16")
    full.load(net)
    half.load(net)
    e32, e16 = full.real(x), half.real(x)
    assert e16.dtype == torch.float32 and not e16.requires_grad and not torch.equal(e16, e32)
    # What DM matches, the mean embedding, moves by well under 1% of its norm.
    assert float((e16.mean(0) - e32.mean(0)).norm() / e32.mean(0).norm()) < 1e-2
    assert half.syn(x).dtype == torch.float32 and torch.equal(half.syn(x), full.syn(x))  # synthetic: float32


def test_auto_compile_falls_back_to_eager_and_records_why(monkeypatch):
    def broken(fn, **kw):
        def call(x):
            raise RuntimeError("inductor is not available\nmore")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    spec = _spec()
    net = spec.build(torch.Generator().manual_seed(0))
    x = torch.randn(3, 2, 8, 8)
    auto = matching.Embedder(spec, "auto", "float32")
    auto.load(net)
    with torch.no_grad():
        torch.testing.assert_close(auto.real(x), net.embed(x))
    assert auto.record()["embedding_forward"]["compiled"] is False
    assert auto.record()["embedding_forward"]["compile_fallback"] == "embedding call 1: inductor is not available"
    strict = matching.Embedder(spec, "on", "float32")
    with pytest.raises(RuntimeError, match="inductor"):
        strict.real(x)


def test_dm_compiled_in_bfloat16_is_repeatable_close_to_eager_and_recorded(latents):
    fast = {**TINY, "compile": "on", "real_precision": "bfloat16"}
    a = make_distiller("dm", **fast).distill(latents, 2, seed=0)
    b = make_distiller("dm", **fast).distill(latents, 2, seed=0)
    eager = make_distiller("dm", **TINY).distill(latents, 2, seed=0)
    assert torch.equal(a.latents, b.latents)  # same seed, same settings, same machine: same bits
    torch.testing.assert_close(a.latents, eager.latents, rtol=0.05, atol=0.05)
    assert a.extras["embedding_forward"] == {"compile": "on", "compiled": True, "compile_fallback": None,
                                             "real_precision": "bfloat16"}
    assert eager.extras["embedding_forward"]["compile"] == "off"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_takes_bfloat16_only_where_the_hardware_computes_in_it(latents, monkeypatch, native):
    """auto: bfloat16 where it is native (else emulated, many times slower than float32); the record names what ran."""
    monkeypatch.setattr(matching.embedder, "native_bfloat16", lambda device: native)
    auto = make_distiller("dm", **TINY, real_precision="auto").distill(latents, 2, seed=0)
    ran = "bfloat16" if native else "float32"
    same = make_distiller("dm", **TINY, real_precision=ran).distill(latents, 2, seed=0)
    assert torch.equal(auto.latents, same.latents)
    assert auto.extras["embedding_forward"]["real_precision"] == ran
    assert auto.extras["embedding_forward"]["requested"] == "auto"


# ---------------------------------------------------------------------------------------
# The identity latent space


def test_pixel_space_is_the_identity_with_straight_through_clamping():
    vae = PixelVAE(1, 8)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(vae.encode(x), x) and torch.equal(vae.decode(x), x)
    assert vae.latent_shape == (1, 8, 8) and vae.scaling_factor == 1.0 and vae.num_parameters == 0
    z = torch.tensor([[[[-0.5, 0.5], [1.5, 0.25]]]], requires_grad=True)
    out = PixelVAE(1, 2).decode(z)
    assert out.tolist() == [[[[0.0, 0.5], [1.0, 0.25]]]]
    out.sum().backward()
    assert z.grad.tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]  # a clamped pixel keeps its gradient
    with pytest.raises(DataError, match=r"decodes \(B, 1, 8, 8\)"):
        vae.decode(torch.zeros(1, 1, 4, 4))
    with pytest.raises(LatentDDError, match="built from the dataset's image shape"):
        load_vae("pixel")


def test_cli_distils_dm_in_the_pixel_space_and_exports_the_optimised_pixels(tmp_path):
    from latentdd.cli import main

    out = tmp_path / "dm"
    main(["distill", "--dataset", "digits", "--vae", "pixel", "--method", "dm", "--ipc", "2", "--quiet",
          "--preset", "reference",  # the default preset factorizes at IPC 2 (IPC 1's settings): 4 latents an image
          "--param", "iterations=3", "--param", "width=8", "--param", "lr=0.05",
          "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    record = json.loads((out / "distill.json").read_text())
    assert record["method"] == "dm" and record["record"]["vae"]["class"] == "PixelVAE"
    from safetensors.torch import load_file

    pixels = load_file(out / "latents.safetensors")["latents"]  # (20, 1, 8, 8), the optimised images
    assert pixels.shape == (20, 1, 8, 8)
    first = sorted((out / "images" / "0").glob("*.png"))[0]
    png = np.asarray(Image.open(first), dtype=np.float32) / 255.0
    assert np.abs(png - pixels[0, 0].clamp(0, 1).numpy()).max() <= 0.5 / 255 + 1e-6


def _decode(z: torch.Tensor) -> torch.Tensor:
    """A stand-in decoder: (n, 2, 4, 4) latents -> (n, 1, 8, 8) images in [0, 1]."""
    return torch.sigmoid(torch.nn.functional.interpolate(z.sum(1, keepdim=True), scale_factor=2))


def test_decoded_tiles_are_whole_latents_and_the_matching_sees_what_the_evaluator_trains_on(latents):
    """tiles "decoded": factor**2 whole latents a stored image; each class's synthetic batch is the evaluator's
    upsampled tiles of the image that rendering tiles from the decoded latents (`tile_set`)."""
    from latentdd.data.base import SyntheticImages
    from latentdd.nn.factorization import tile_set, untile

    context = DistillContext(decode=_decode)
    out = make_distiller("dm", **{**TINY, "embedding": "pixel", "factor": 2, "tiles": "decoded"}).distill(
        latents, 1, seed=0, context=context)
    assert out.latents.shape == (12, 2, 4, 4) and out.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert out.extras["factorization"] == {"factor": 2, "tiles": "decoded", "latents_matched_per_class": 4}
    assert out.params["ipc"] == 1 and out.params["tiles"] == "decoded"
    assert out.tile_factor == 2  # what the renderer reads: the set carries it, in its saved file too
    stored = tile_set(SyntheticImages(_decode(out.latents), out.labels, list(out.class_names),
                                      weights=out.weights), 2)
    assert stored.images.shape == (3, 1, 8, 8) and stored.labels.tolist() == [0, 1, 2]
    assert torch.allclose(stored.weights, torch.ones(3))  # each class's four tile weights, summed
    inputs = matching.Inputs.make("pixel", latents, context)
    members = [np.arange(20 * k, 20 * (k + 1)) for k in range(3)]
    run = matching.Run(inputs, members, torch.arange(60), latents.labels, 1, 2, 8, None, torch.Generator(),
                       tiles="decoded")
    for k in range(3):
        seen = run.syn_batch(out.latents, k)  # (4, 1, 8, 8), normalised
        trained = (untile(stored.images[k : k + 1], 2) - inputs.mean.view(1, -1, 1, 1)) / inputs.std.view(1, -1, 1, 1)
        assert torch.allclose(seen, trained, atol=1e-5)
    # The latent tiles of the same factor: one stored latent a stored image.
    plain = make_distiller("dm", **{**TINY, "embedding": "pixel", "factor": 2}).distill(latents, 1, seed=0,
                                                                                        context=context)
    assert plain.latents.shape == (3, 2, 4, 4) and plain.extras["factorization"]["tiles"] == "latent"
    assert plain.tile_factor == 1


@pytest.mark.bad_input
def test_tiling_a_set_refuses_soft_labels_and_classes_that_do_not_fill_their_tiles():
    from latentdd.data.base import SyntheticImages
    from latentdd.nn.factorization import tile_set

    images = torch.rand(6, 1, 4, 4)
    with pytest.raises(DataError, match="class 'b' has 2 images, not a multiple of 4"):
        tile_set(SyntheticImages(images, torch.tensor([0, 0, 0, 0, 1, 1]), ["a", "b"]), 2)
    with pytest.raises(DataError, match="keeps hard labels only"):
        tile_set(SyntheticImages(images[:4], torch.zeros(4), ["a", "b"], soft_labels=torch.full((4, 2), 0.5)), 2)


def test_cli_renders_decoded_tiles_into_stored_images_of_the_ipc(tmp_path):
    """In the pixel space a decoded tile is its own (clamped) pixels: each stored PNG is its class's 4 optimised
    images, average-pooled and tiled; the folder holds IPC images a class, the latents file 4x as many; `latentdd
    render` of the folder writes the same images."""
    from safetensors.torch import load_file

    from latentdd.cli import main
    from latentdd.nn.factorization import tile

    out = tmp_path / "dm"
    assert main(["distill", "--dataset", "digits", "--vae", "pixel", "--method", "dm", "--ipc", "1", "--quiet",
                 "--param", "iterations=2", "--param", "width=8", "--param", "lr=0.05", "--param", "factor=2",
                 "--param", "tiles=decoded", "--param", "embedding=pixel",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    pixels = load_file(out / "latents.safetensors")["latents"]
    assert pixels.shape == (40, 1, 8, 8)
    manifest = json.loads((out / "images" / "manifest.json").read_text())
    assert len(manifest["images"]) == 10
    first = sorted((out / "images" / "0").glob("*.png"))[0]
    png = np.asarray(Image.open(first), dtype=np.float32) / 255.0
    assert np.abs(png - tile(pixels[:4].clamp(0, 1), 2)[0, 0].numpy()).max() <= 0.5 / 255 + 1e-6
    # `latentdd render` reads the tiling from the latents file too: the distill folder's images, byte for byte.
    assert main(["render", "--dataset", "digits", "--vae", "pixel", "--synthetic", str(out), "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "render")]) == 0
    pngs = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}  # noqa: E731
    assert pngs(tmp_path / "render" / "images") == pngs(out / "images")
    rendered = json.loads((tmp_path / "render" / "images" / "manifest.json").read_text())
    assert rendered["record"]["ipc"] == 1


# ---------------------------------------------------------------------------------------
# DC / DSA


def test_gradient_distance_by_hand():
    from latentdd.distill.dc import gradient_distance

    # linear (2 units): unit 0 parallel (1 - cos = 0), unit 1 orthogonal (1); the bias is left out
    g_syn = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([5.0, -5.0])]
    g_real = [torch.tensor([[3.0, 0.0], [1.0, 0.0]]), torch.tensor([1.0, 1.0])]
    assert float(gradient_distance(g_syn, g_real)) == pytest.approx(1.0, abs=1e-5)
    # conv (2, 1, 1, 2): each output channel flattened; opposite -> 2, parallel -> 0
    conv_s = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 1.0]]]])
    conv_r = torch.tensor([[[[-2.0, -2.0]]], [[[0.0, 3.0]]]])
    assert float(gradient_distance([conv_s], [conv_r])) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(DataError, match="gradient shapes differ"):
        gradient_distance([conv_s], [conv_r[:1]])


def test_one_dc_round_is_sgd_on_the_summed_gradient_distance(latents, monkeypatch):
    """IPC 1, one outer round, no inner loop: the update is lr * d/dsyn of sum_k D(grad_syn_k, grad_real_k)."""
    from latentdd.distill.dc import gradient_distance

    nets = _capture_networks(monkeypatch)
    params = {**TINY, "iterations": 1, "batch_real": 20, "dsa": False, "momentum": 0.0, "outer_loop": 1,
              "inner_loop": 1}
    start = make_distiller("dc", **{**params, "lr": 1e-30}).distill(latents, 1, seed=5).latents
    fresh = [n for n in nets]
    nets.clear()
    after = make_distiller("dc", **{**params, "lr": 0.3}).distill(latents, 1, seed=5).latents
    net = fresh[0]  # the same seed builds the same network; the first run's copy is untouched by the step
    weights = list(net.parameters())
    syn = start.clone().requires_grad_(True)
    loss = 0
    for k in range(3):
        y = torch.full((20,), k)
        g_real = torch.autograd.grad(torch.nn.functional.cross_entropy(net(latents.latents[20 * k : 20 * k + 20]), y),
                                     weights)
        g_syn = torch.autograd.grad(torch.nn.functional.cross_entropy(net(syn[k : k + 1]), torch.tensor([k])), weights,
                                    create_graph=True)
        loss = loss + gradient_distance(list(g_syn), [g.detach() for g in g_real])
    (grad,) = torch.autograd.grad(loss, syn)
    torch.testing.assert_close(after, start - 0.3 * grad, rtol=1e-4, atol=1e-6)
    assert not torch.equal(after, start)


def test_dc_loops_follow_the_reference_table_and_dsa_is_dc_with_augmentation(latents):
    dc = make_distiller("dc", **{**TINY, "iterations": 1})
    assert dc.loops(1) == (1, 1) and dc.loops(10) == (10, 50) and dc.loops(50) == (50, 10)
    assert dc.loops(7) == (7, 71) and dc.loops(100) == (100, 5)
    syn = make_distiller("dsa", **{**TINY, "iterations": 2, "outer_loop": 2, "inner_loop": 1}).distill(latents, 2, seed=0)
    assert syn.method == "dsa" and syn.params["dsa"] is True and syn.extras["dsa_strategy"]
    assert syn.extras["outer_loop"] == 2 and syn.extras["inner_loop"] == 1
    assert make_distiller("dc").dsa is False and make_distiller("dsa").dsa is True


# ---------------------------------------------------------------------------------------
# Forgetting


def test_forgetting_events_by_hand():
    from latentdd.distill.forgetting import _NEVER_LEARNED, forgetting_events

    correct = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 1, 1]], dtype=bool)  # (T=4, N=4)
    # example 0: 1->0, 1->0: 2 events; 1: never correct; 2: one 1->0; 3: learned, never forgotten
    assert forgetting_events(correct).tolist() == [2, _NEVER_LEARNED, 1, 0]


def test_forgetting_keeps_the_most_forgotten_members_and_caches_the_counts(latents, tmp_path, monkeypatch):
    from latentdd.distill import forgetting

    counts = np.arange(60) % 7  # a known statistic: the class's largest counts must be chosen
    monkeypatch.setattr(forgetting.ForgettingDistiller, "_train", lambda self, *a: counts.copy())
    ctx = DistillContext(cache_dir=tmp_path)
    syn = make_distiller("forgetting", epochs=1, width=8).distill(latents, 3, seed=0, context=ctx)
    assert syn.extras["counts_cached"] is False
    for k in range(3):
        chosen = syn.extras["indices"][3 * k : 3 * k + 3]
        assert all(20 * k <= i < 20 * k + 20 for i in chosen)
        assert sorted(counts[chosen].tolist(), reverse=True) == sorted(counts[20 * k : 20 * k + 20].tolist())[-3:][::-1]
        torch.testing.assert_close(syn.latents[3 * k : 3 * k + 3], latents.latents[chosen])
    monkeypatch.setattr(forgetting.ForgettingDistiller, "_train", lambda self, *a: pytest.fail("trained again"))
    again = make_distiller("forgetting", epochs=1, width=8).distill(latents, 2, seed=1, context=ctx)
    assert again.extras["counts_cached"] is True


def test_forgetting_trains_a_real_network_and_counts_events(latents):
    syn = make_distiller("forgetting", epochs=3, width=8, batch=8).distill(latents, 2, seed=0)
    assert syn.method == "forgetting" and len(syn.extras["indices"]) == 6
    assert syn.extras["forgetting_events"] and syn.extras["never_learned"] >= 0


# ---------------------------------------------------------------------------------------
# Network bank


def test_network_bank_trains_once_snapshots_and_is_reused_from_its_cache(latents, tmp_path, monkeypatch):
    bank = {"networks": "bank", "bank_nets": 2, "bank_steps": (0, 2, 4), "bank_batch": 8}
    ctx = DistillContext(cache_dir=tmp_path)
    first = make_distiller("bacon", **{**TINY, **bank, "pool_start": 1, "net_batch": 8}).distill(
        latents, 2, seed=0, context=ctx)
    assert first.extras["networks"] == "network bank" and first.extras["bank_snapshots"] == 6
    assert first.extras["bank_cached"] is False and len(list((tmp_path / "network_bank").glob("*.safetensors"))) == 1
    monkeypatch.setattr(matching.InLoopPool, "_train", lambda *a: pytest.fail("the bank trained again"))
    again = make_distiller("bacon", **{**TINY, **bank, "pool_start": 1, "net_batch": 8}).distill(
        latents, 2, seed=0, context=ctx)
    assert again.extras["bank_cached"] is True and torch.equal(again.latents, first.latents)
    # the training time is measured once and carried by the cache (time to accuracy includes it)
    assert first.extras["bank_train_seconds"] > 0
    assert first.extras["setup_seconds"] >= first.extras["bank_train_seconds"]  # setup: inputs, init, bank
    assert again.extras["bank_train_seconds"] == first.extras["bank_train_seconds"]
    dm = make_distiller("dm", **TINY, **bank).distill(latents, 2, seed=0, context=ctx)  # same bank, another method
    assert dm.extras["bank_cached"] is True
    with pytest.raises(DataError, match="networks must be one of method, bank, teacher; got"):
        make_distiller("dm", networks="pool")


def test_bank_snapshots_differ_along_training(latents, monkeypatch):
    drawn = []
    original = matching.NetworkBank.next

    def next_(self, it):
        net = original(self, it)
        drawn.append(tuple(net.model.features[0].weight.flatten()[:4].tolist()))
        return net

    monkeypatch.setattr(matching.NetworkBank, "next", next_)
    syn = make_distiller("dm", **{**TINY, "iterations": 6}, networks="bank", bank_nets=1, bank_steps=(0, 5),
                         bank_batch=8).distill(latents, 2, seed=0)
    assert syn.extras["bank_snapshots"] == 2
    assert len(set(drawn)) == 2  # both the untrained and the trained snapshot were drawn, and they differ


def test_two_identical_dm_runs_write_byte_identical_latents_files(tmp_path):
    """Issue 32, defect 7: the file held wall-clock seconds and it/s, so its sha256 differed between re-runs.
    The timings stay in distill.json."""
    import hashlib

    from safetensors import safe_open

    from latentdd.cli import main

    def distill(out):
        assert main(["distill", "--dataset", "digits", "--vae", "pixel", "--method", "dm", "--ipc", "1", "--quiet",
                     "--param", "iterations=3", "--param", "width=8", "--param", "lr=0.05",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
        return hashlib.sha256((out / "latents.safetensors").read_bytes()).hexdigest()

    assert distill(tmp_path / "a") == distill(tmp_path / "b")
    with safe_open(str(tmp_path / "a" / "latents.safetensors"), framework="pt") as f:
        extras = json.loads(f.metadata()["latentdd"])["extras"]
    assert not {"seconds", "setup_seconds", "iterations_per_second", "resumed_from"} & set(extras)
    assert extras["loss_curve"] and all("seconds" not in point for point in extras["loss_curve"])
    kept = json.loads((tmp_path / "a" / "distill.json").read_text())["extras"]
    assert {"seconds", "setup_seconds", "iterations_per_second", "resumed_from"} <= set(kept)
    assert all("seconds" in point for point in kept["loss_curve"])


def test_mtt_says_it_runs_on_the_cpu_only_when_given_a_device():
    latents = Latents(torch.randn(40, 1, 8, 8), torch.arange(40) % 2, ["a", "b"])
    with pytest.raises(DataError, match="mtt runs on the CPU only"):
        make_distiller("mtt", embedding="latent", iterations=1).distill(
            latents, 1, seed=0, context=DistillContext(device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dm_on_a_gpu_distils_what_it_does_on_the_cpu_within_float_tolerance():
    latents = Latents(torch.randn(200, 2, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(200) % 4,
                      list("abcd"))
    dm = make_distiller("dm", embedding="latent", iterations=3, width=8, batch_real=16)
    cpu = dm.distill(latents, 2, seed=0)
    gpu = dm.distill(latents, 2, seed=0, context=DistillContext(device="cuda"))
    assert gpu.latents.device.type == "cpu"
    torch.testing.assert_close(gpu.latents, cpu.latents, rtol=1e-4, atol=1e-4)
