"""The diffusion prior (fit, cache, resume), the diffusion decoders (fitted prior, DiT, SD img2img)
and the ImageNet class lists, all on tiny randomly initialised components on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from latentdd.render.diffusion import DiffusionDecoder, denoising_steps
from latentdd.errors import DataError, LatentDDError
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.prior import FitPriorConfig, fit_prior, latents_identity, load_prior, prior_hash
from latentdd import fitting
from latentdd.prior import fit as prior_fit
from latentdd.data.imagenet import imagenet_class_index, load_imagenet_classes
from latentdd.render.dit import DiTDecoder, load_dit
from latentdd.render.img2img import latent_generators
from latentdd.render.sd_img2img import StableDiffusionImg2ImgDecoder, load_sd_img2img
from latentdd.render.vae import VAEDecoder
from latentdd.checkpoint import read_state
from latentdd.vae import DiffusersKL, VAEInputAdapter

diffusers = pytest.importorskip("diffusers")

LATENT_SHAPE = (4, 4, 4)  # what the tiny VAE makes of 1 x 8 x 8 images


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are so small that a second thread only adds synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- dummy components


@pytest.fixture(scope="module")
def vae() -> DiffusersKL:
    config = {
        "in_channels": 1,
        "out_channels": 1,
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "block_out_channels": [8, 8],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "sample_size": 8,
        "scaling_factor": 0.5,
    }
    return DiffusersKL.from_config(config, name="random:tiny-kl", seed=0)


@pytest.fixture(scope="module")
def adapter(vae) -> VAEInputAdapter:
    return VAEInputAdapter.for_vae(vae, (1, 8, 8))


def learnable_latents(n: int = 128, seed: int = 0) -> Latents:
    """Two classes, each a fixed pattern plus a little noise: a prior can learn them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, *LATENT_SHAPE, generator=g)  # (2, c, h, w)
    labels = torch.arange(n) % 2
    latents = centres[labels] + 0.05 * torch.randn(n, *LATENT_SHAPE, generator=g)  # (n, c, h, w)
    return Latents(latents, labels, ["shirt", "shoe"], vae={"name": "random:tiny-kl"})


def tiny_config(**overrides) -> FitPriorConfig:
    values = {
        "block_out_channels": (8, 16),
        "norm_num_groups": 4,
        "attention_head_dim": 8,
        "max_steps": 30,
        "batch_size": 32,
        "lr": 3e-3,
        "lr_schedule": "constant",
        "log_every": 1,
        "checkpoint_every": 0,
        "ema_decay": 0.9,
    }
    return FitPriorConfig(**{**values, **overrides})


def synthetic_latents(n_per_class: int = 2, seed: int = 1) -> SyntheticLatents:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2 * n_per_class) % 2
    weights = torch.full((2 * n_per_class,), 1.0 / n_per_class)
    return SyntheticLatents(torch.randn(2 * n_per_class, *LATENT_SHAPE, generator=g), labels, ["shirt", "shoe"],
                            method="kmeans", params={"ipc": n_per_class}, weights=weights)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    cache = tmp_path_factory.mktemp("prior_cache")
    unet, scheduler, report = fit_prior(learnable_latents(), tiny_config(), cache, progress=False)
    return unet, scheduler, report, cache


def state_of(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------- fitting the prior


def test_fit_prior_learns_saves_and_reports(fitted):
    unet, scheduler, report, cache = fitted
    losses = [loss for _, loss in report["loss_curve"]]
    assert report["cached"] is False and report["steps"] == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5  # epsilon MSE falls on a learnable set (seeded: 0.65x)
    assert unet.config.num_class_embeds == 3 and report["null_class"] == 2  # 2 classes + the null class
    assert unet.config.in_channels == 4 and unet.config.sample_size == 4
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    assert scheduler.config.prediction_type == "epsilon" and scheduler.config.clip_sample is False
    entry = cache / report["hash"][:16]
    assert report["name"] == f"prior:{report['hash'][:16]}"
    for name in ("unet/config.json", "scheduler/scheduler_config.json", "latentdd_prior.json", "loss_curve.png"):
        assert (entry / name).is_file(), name
    assert (entry / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary or partial dirs left


def test_fit_prior_second_call_hits_the_cache(fitted, monkeypatch):
    unet, scheduler, report, cache = fitted

    def no_training(*args, **kwargs):
        raise AssertionError("fit_prior trained again instead of loading the cache")

    monkeypatch.setattr(prior_fit, "_train", no_training)
    again, again_scheduler, again_report = fit_prior(learnable_latents(), tiny_config(checkpoint_every=7), cache,
                                               progress=False)
    assert again_report["cached"] is True and again_report["hash"] == report["hash"]
    assert again_report["loss_curve"] == report["loss_curve"]
    assert_same_weights(unet, again)
    assert dict(again_scheduler.config) == dict(scheduler.config)
    loaded, _, _ = load_prior(cache / report["hash"][:16])
    assert_same_weights(unet, loaded)


def test_prior_hash_follows_weights_and_data():
    latents = learnable_latents()
    data = latents_identity(latents)
    key = prior_hash(tiny_config(), data)
    assert prior_hash(tiny_config(checkpoint_every=5, log_every=3), data) == key  # same weights
    assert prior_hash(tiny_config(seed=1), data) != key
    assert prior_hash(tiny_config(label_dropout=0.2), data) != key
    relabelled = Latents(latents.latents, 1 - latents.labels, latents.class_names)
    assert prior_hash(tiny_config(), latents_identity(relabelled)) != key
    renamed = Latents(latents.latents, latents.labels, ["a", "b"])
    assert prior_hash(tiny_config(), latents_identity(renamed)) != key


def test_fit_prior_resumes_from_a_checkpoint_to_the_same_weights(fitted, tmp_path, monkeypatch):
    unet, _, report, _ = fitted
    config = tiny_config(checkpoint_every=10)
    saves = []
    real_save = fitting.save_state

    def save_then_crash(path, state):
        real_save(path, state)
        saves.append(state["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt  # stop right after the step-20 checkpoint

    monkeypatch.setattr(fitting, "save_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        fit_prior(learnable_latents(), config, tmp_path, progress=False)
    checkpoint = tmp_path / f".partial-{report['hash'][:16]}" / "checkpoint.safetensors"
    assert saves == [10, 20] and checkpoint.is_file()
    ema = read_state(checkpoint, otherwise="")["ema"]  # EMAModel's state, no pickle needed
    assert ema["optimization_step"] == 20 and len(ema["shadow_params"]) == len(list(unet.parameters()))
    monkeypatch.setattr(fitting, "save_state", real_save)
    resumed, _, resumed_report = fit_prior(learnable_latents(), config, tmp_path, progress=False)
    assert resumed_report["cached"] is False and resumed_report["loss_curve"] == report["loss_curve"]
    assert_same_weights(unet, resumed)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fit_prior_rejects_bad_latents(tmp_path):
    empty = Latents(torch.zeros(0, *LATENT_SHAPE), torch.zeros(0, dtype=torch.long), ["a"])
    with pytest.raises(DataError, match="empty"):
        fit_prior(empty, tiny_config(), tmp_path, progress=False)
    bad = learnable_latents(8)
    bad.latents[3, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 of 8 latents hold NaN"):
        fit_prior(bad, tiny_config(), tmp_path, progress=False)
    odd = Latents(torch.randn(8, 4, 5, 5), torch.arange(8) % 2, ["a", "b"])
    with pytest.raises(DataError, match="multiples of 2; got 5x5"):
        fit_prior(odd, tiny_config(), tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


def test_fit_prior_config_errors():
    with pytest.raises(DataError, match="norm_num_groups"):
        FitPriorConfig(block_out_channels=(8, 12), norm_num_groups=8)
    with pytest.raises(DataError, match="label_dropout"):
        tiny_config(label_dropout=1.0)
    with pytest.raises(DataError, match="beta_schedule"):
        tiny_config(beta_schedule="cosine")
    with pytest.raises(DataError, match="attention_head_dim"):
        tiny_config(attention_head_dim=12)


def test_default_config_builds_the_documented_unet():
    config = FitPriorConfig()
    unet_config = config.unet_config((4, 8, 8), 10)
    assert unet_config["num_class_embeds"] == 11 and unet_config["sample_size"] == 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(**unet_config)
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(0.70e6, rel=0.01)


# ---------------------------------------------------------------- the diffusion decoder


@pytest.fixture(scope="module")
def decoder(fitted, vae, adapter):
    unet, scheduler, report, _ = fitted
    return DiffusionDecoder(vae, adapter, unet, dict(scheduler.config), strength=0.5, num_inference_steps=10,
                            guidance_scale=2.0, batch_size=4, prior=report["name"])


def test_diffusion_render_keeps_shapes_labels_weights(decoder):
    synthetic = synthetic_latents()
    images = decoder.render(synthetic, seed=0)
    assert images.images.shape == (4, 1, 8, 8) and images.images.dtype == torch.float32
    assert 0 <= images.images.min() and images.images.max() <= 1
    assert torch.equal(images.labels, synthetic.labels) and images.class_names == ["shirt", "shoe"]
    assert torch.equal(images.weights, synthetic.weights)
    assert images.meta["method"] == {"name": "kmeans", "ipc": 2}
    plain = VAEDecoder(decoder.vae, decoder.adapter).render(synthetic)
    assert not torch.allclose(images.images, plain.images, atol=1e-3)  # the prior did change the latents


def test_diffusion_render_is_deterministic_per_seed_and_batch_size_free(decoder):
    synthetic = synthetic_latents()
    first = decoder.render(synthetic, seed=3).images
    assert torch.equal(first, decoder.render(synthetic, seed=3).images)
    assert not torch.allclose(first, decoder.render(synthetic, seed=4).images, atol=1e-4)
    one_by_one = DiffusionDecoder(**{**decoder.__dict__, "batch_size": 1}).render(synthetic, seed=3).images
    torch.testing.assert_close(one_by_one, first, atol=1e-5, rtol=1e-5)
    # Latent i's noise depends on (seed, i) only: the first two render alike alone.
    head = SyntheticLatents(synthetic.latents[:2], synthetic.labels[:2], synthetic.class_names, method="kmeans")
    torch.testing.assert_close(decoder.render(head, seed=3).images, first[:2], atol=1e-5, rtol=1e-5)
    stochastic = DiffusionDecoder(**{**decoder.__dict__, "eta": 1.0})
    assert torch.equal(stochastic.render(synthetic, seed=3).images, stochastic.render(synthetic, seed=3).images)


def test_strength_zero_is_exactly_vae_decoding(decoder):
    synthetic = synthetic_latents()
    plain = VAEDecoder(decoder.vae, decoder.adapter, decoder.batch_size).render(synthetic, seed=0)
    for strength in (0.0, 0.04):  # 0.04 * 10 steps rounds to no step at all
        params = {**decoder.__dict__, "strength": strength}
        images = DiffusionDecoder(**params).render(synthetic, seed=5)
        assert torch.equal(images.images, plain.images)
        assert torch.equal(images.labels, plain.labels) and torch.equal(images.weights, plain.weights)


def test_denoising_steps_and_record(decoder):
    assert denoising_steps(0.7, 50) == 35 and denoising_steps(0.29, 100) == 29 and denoising_steps(0.04, 10) == 0
    record = decoder.record()
    assert record["name"] == "diffusion" and record["prior"].startswith("prior:")
    assert record["denoising_steps"] == 5 and record["start_timestep"] == 400  # leading spacing: 900, 800, ...
    assert record["guidance_scale"] == 2.0 and record["null_label"] == 2
    assert record["noise_schedule"]["beta_schedule"] == "scaled_linear"
    json.dumps(record)


def test_latent_generators_depend_on_seed_and_index_only():
    a = [torch.randn(3, generator=g) for g in latent_generators(7, 0, 3)]
    b = [torch.randn(3, generator=g) for g in latent_generators(7, 2, 4)]
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], torch.randn(3, generator=latent_generators(8, 0, 1)[0]))


def test_diffusion_decoder_rejects_bad_parameters_and_mismatches(decoder, fitted):
    params = dict(decoder.__dict__)
    for key, value, message in [("strength", 1.5, "strength"), ("num_inference_steps", 0, "num_inference_steps"),
                                ("guidance_scale", -1.0, "guidance_scale"), ("eta", 2.0, "eta"),
                                ("batch_size", 0, "batch_size")]:
        with pytest.raises(DataError, match=message):
            DiffusionDecoder(**{**params, key: value})
    with pytest.raises(DataError, match="exceeds"):
        DiffusionDecoder(**{**params, "num_inference_steps": 2000}).render(synthetic_latents())
    three = SyntheticLatents(torch.randn(3, *LATENT_SHAPE), torch.arange(3), ["a", "b", "c"], method="kmeans")
    with pytest.raises(DataError, match="knows 2 classes"):
        decoder.render(three)
    big = SyntheticLatents(torch.randn(2, 4, 8, 8), torch.arange(2), ["shirt", "shoe"], method="kmeans")
    with pytest.raises(DataError, match=r"trained on latents of shape \(4, 4, 4\); got \(4, 8, 8\)"):
        decoder.render(big)
    unconditional = diffusers.UNet2DModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                          norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(DataError, match="class-conditional"):
        DiffusionDecoder(**{**params, "unet": unconditional})


def test_diffusion_decoder_from_prior_directory(fitted, vae, adapter, decoder):
    _, _, report, cache = fitted
    loaded = DiffusionDecoder.from_prior(cache / report["hash"][:16], vae, adapter, strength=0.5,
                                         num_inference_steps=10, guidance_scale=2.0)
    synthetic = synthetic_latents()
    assert loaded.prior == report["name"]
    torch.testing.assert_close(loaded.render(synthetic).images, decoder.render(synthetic).images)


# ---------------------------------------------------------------- DiT


def tiny_dit(num_classes: int = 5):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return diffusers.DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1,
            sample_size=4, patch_size=2, num_embeds_ada_norm=num_classes,
        )


def dit_scheduler_config() -> dict:
    return dict(diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False).config)


@pytest.fixture
def imagenet_list(tmp_path):
    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_text("n00000001 thing\nn01440764 tench, Tinca tinca\nn00000002 other\nn01443537 goldfish\n")
    return path


def wnid_latents() -> SyntheticLatents:
    synthetic = synthetic_latents()
    return SyntheticLatents(synthetic.latents, synthetic.labels, ["n01440764", "n01443537"], method="kmeans",
                            weights=synthetic.weights)


def test_dit_decoder_runs_end_to_end(vae, adapter, imagenet_list):
    transformer = tiny_dit()
    dit = DiTDecoder(vae, adapter, transformer, dit_scheduler_config(), imagenet_classes=str(imagenet_list),
                     num_inference_steps=4, strength=0.75, model="random:tiny-dit")
    synthetic = wnid_latents()
    assert dit.null_label == 5
    assert dit.model_labels(synthetic).tolist() == [1, 3, 1, 3]  # via the WordNet ids
    x = torch.randn(2, *LATENT_SHAPE)
    assert transformer(x, timestep=torch.tensor([10, 10]), class_labels=torch.tensor([0, 1])).sample.shape[1] == 8
    assert dit.predict_noise(x, torch.tensor(10), torch.tensor([0, 1])).shape == (2, *LATENT_SHAPE)  # noise half only
    images = dit.render(synthetic, seed=0)
    assert images.images.shape == (4, 1, 8, 8) and torch.equal(images.labels, synthetic.labels)
    assert torch.equal(images.images, dit.render(synthetic, seed=0).images)
    assert not torch.equal(images.images, dit.render(synthetic, seed=1).images)
    explicit = DiTDecoder(**{**dit.__dict__, "class_map": [1, 3], "imagenet_classes": None})
    assert torch.equal(explicit.render(synthetic, seed=0).images, images.images)
    plain = VAEDecoder(vae, adapter).render(synthetic)
    assert torch.equal(DiTDecoder(**{**dit.__dict__, "strength": 0.0}).render(synthetic).images, plain.images)
    assert dit.record()["name"] == "dit" and dit.record()["denoising_steps"] == 3


def test_dit_decoder_errors(vae, adapter):
    dit = DiTDecoder(vae, adapter, tiny_dit(), dit_scheduler_config(), num_inference_steps=4)
    with pytest.raises(DataError, match="pass class_map"):
        dit.render(synthetic_latents())  # classes named shirt / shoe, no class_map
    with pytest.raises(LatentDDError, match="imagenet_class_index.json"):
        dit.render(wnid_latents())  # WordNet ids but no class list
    with pytest.raises(DataError, match="outside the DiT's 5 classes"):
        DiTDecoder(**{**dit.__dict__, "class_map": [0, 9]}).render(synthetic_latents())
    with pytest.raises(DataError, match="class_map has 1 entries for 2 classes"):
        DiTDecoder(**{**dit.__dict__, "class_map": [0]}).render(synthetic_latents())
    big = SyntheticLatents(torch.randn(2, 4, 8, 8), torch.arange(2), ["a", "b"], method="kmeans")
    with pytest.raises(DataError, match=r"takes latents of shape \(4, 4, 4\)"):
        DiTDecoder(**{**dit.__dict__, "class_map": [0, 1]}).render(big)


def test_load_dit_from_a_directory_and_offline_hub_error(tmp_path):
    tiny_dit().save_pretrained(tmp_path / "dit" / "transformer")
    diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False).save_pretrained(
        tmp_path / "dit" / "scheduler")
    transformer, scheduler_config = load_dit(str(tmp_path / "dit"))
    assert_same_weights(transformer, tiny_dit())
    assert scheduler_config["beta_schedule"] == "linear" and not transformer.training
    with pytest.raises(LatentDDError, match=r"(?s)hf download latentdd-tests/no-such-dit --local-dir DIR.*DIR/vae"):
        load_dit("latentdd-tests/no-such-dit", local_files_only=True)
    with pytest.raises(LatentDDError, match="transformer/ and scheduler/"):
        load_dit(str(tmp_path))  # a directory without the DiT layout


# ---------------------------------------------------------------- ImageNet class lists


def test_imagenet_class_index_formats(tmp_path, imagenet_list):
    assert imagenet_class_index("n01443537", imagenet_list) == 3
    keras = tmp_path / "imagenet_class_index.json"
    keras.write_text(json.dumps({"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}))
    assert imagenet_class_index("n01443537", keras) == 1
    by_wnid = tmp_path / "by_wnid.json"
    by_wnid.write_text(json.dumps({"n01440764": 7}))
    assert imagenet_class_index("n01440764", by_wnid) == 7
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(["n01443537", "n01440764"]))
    assert load_imagenet_classes(as_list) == {"n01443537": 0, "n01440764": 1}
    train = tmp_path / "train"
    for i in range(1000):
        (train / f"n{99999999 - i:08d}").mkdir(parents=True)
    assert imagenet_class_index(f"n{99999999 - 999:08d}", train) == 0  # sorted WordNet ids


def test_imagenet_class_index_errors(tmp_path, imagenet_list):
    with pytest.raises(LatentDDError, match="LOC_synset_mapping.txt"):
        imagenet_class_index("n01440764")
    with pytest.raises(DataError, match="not among the 4 classes"):
        imagenet_class_index("n09999999", imagenet_list)
    with pytest.raises(LatentDDError, match="does not exist"):
        imagenet_class_index("n01440764", tmp_path / "missing.txt")
    subset = tmp_path / "imagenette"
    for wnid in ("n01440764", "n02102040"):
        (subset / wnid).mkdir(parents=True)
    with pytest.raises(DataError, match="holds 2 WordNet-id folders"):
        imagenet_class_index("n01440764", subset)
    junk = tmp_path / "junk.txt"
    junk.write_text("tench\ngoldfish\n")
    with pytest.raises(DataError, match="bad WordNet ids"):
        imagenet_class_index("n01440764", junk)


# ---------------------------------------------------------------- Stable Diffusion img2img


def tiny_sd_pipeline(vae: DiffusersKL, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per letter
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer", model_max_length=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        unet = diffusers.UNet2DConditionModel(
            sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4)
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return diffusers.StableDiffusionImg2ImgPipeline(
        vae=vae.model, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_sd_img2img_runs_end_to_end_from_latents(vae, adapter, tmp_path):
    pipeline = tiny_sd_pipeline(vae, tmp_path)
    sd = StableDiffusionImg2ImgDecoder(vae, adapter, pipeline, num_inference_steps=4, strength=0.5, batch_size=3,
                                       model="random:tiny-sd")
    synthetic = synthetic_latents()
    assert sd.prompts(synthetic.class_names) == ["shirt", "shoe"] and sd.denoising_steps == 2
    images = sd.render(synthetic, seed=0)
    assert images.images.shape == (4, 1, 8, 8) and torch.equal(images.labels, synthetic.labels)
    assert torch.equal(images.weights, synthetic.weights)
    assert torch.equal(images.images, sd.render(synthetic, seed=0).images)
    assert not torch.equal(images.images, sd.render(synthetic, seed=1).images)
    plain = VAEDecoder(vae, adapter).render(synthetic)
    assert not torch.allclose(images.images, plain.images, atol=1e-3)
    one_by_one = StableDiffusionImg2ImgDecoder(**{**sd.__dict__, "batch_size": 1}).render(synthetic, seed=0)
    torch.testing.assert_close(one_by_one.images, images.images, atol=1e-5, rtol=1e-5)
    # Decoding uses the decoder's batch size, and VAE outputs differ in the last bits between batch sizes.
    same_batches = VAEDecoder(vae, adapter, batch_size=3).render(synthetic)
    assert torch.equal(StableDiffusionImg2ImgDecoder(**{**sd.__dict__, "strength": 0.0}).render(synthetic).images,
                       same_batches.images)
    record = sd.record()
    assert record["name"] == "sd-img2img" and record["guidance_scale"] == 8.0 and "DDIMScheduler" in record["sampler"]
    json.dumps(record)


def test_sd_img2img_checks_the_latent_space(vae, adapter, tmp_path):
    pipeline = tiny_sd_pipeline(vae, tmp_path)
    shifted = DiffusersKL(vae.model, name="shifted")
    shifted.shift_factor = 0.1
    with pytest.raises(DataError, match="unshifted"):
        StableDiffusionImg2ImgDecoder(shifted, adapter, pipeline, num_inference_steps=4).render(synthetic_latents())
    rescaled = DiffusersKL(vae.model, name="rescaled")
    rescaled.scaling_factor = 0.18215
    with pytest.raises(DataError, match="scales by 0.5"):
        StableDiffusionImg2ImgDecoder(rescaled, adapter, pipeline, num_inference_steps=4).render(synthetic_latents())
    with pytest.raises(DataError, match="class_prompts has 1 prompts"):
        StableDiffusionImg2ImgDecoder(vae, adapter, pipeline, class_prompts=["x"]).render(synthetic_latents())


def test_load_sd_img2img_from_a_directory_and_offline_hub_error(vae, tmp_path):
    tiny_sd_pipeline(vae, tmp_path).save_pretrained(tmp_path / "sd")
    pipeline = load_sd_img2img(str(tmp_path / "sd"))
    assert isinstance(pipeline, diffusers.StableDiffusionImg2ImgPipeline) and pipeline.safety_checker is None
    with pytest.raises(LatentDDError, match="hf download latentdd-tests/no-such-sd --local-dir DIR"):
        load_sd_img2img("latentdd-tests/no-such-sd", local_files_only=True)
