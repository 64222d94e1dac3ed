"""`--decoder dit` / `--decoder sd-img2img` end to end, from the CLI and from YAML, on sklearn digits.

The pretrained models are tiny randomly initialised ones built from configs (a 2-block
AutoencoderKL, a 1-layer DiT, a 2-block UNet2DConditionModel with a 1-layer CLIP text
encoder) and saved with save_pretrained(safe_serialization=True) into tmp_path, in the
layout `hf download` gives: the decoders load them through the folder path, as a user
passes a downloaded model. No network is used.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from latentdd.cli import decoder_config, main, make_parser
from latentdd.errors import LatentDDError
from latentdd.render import DECODERS
from latentdd.render.dit import load_dit

diffusers = pytest.importorskip("diffusers")

DIGITS = [str(d) for d in range(10)]
CLASS_MAP = ",".join(str(9 - d) for d in range(10))  # any ImageNet index below the tiny DiT's 10 classes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are so small that a second thread only adds synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vae():
    """1 x 8 x 8 digits -> (4, 4, 4) latents, SD's latent layout at a toy size."""
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8], layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=8, scaling_factor=0.5)


@pytest.fixture(scope="module")
def dit_dir(tmp_path_factory):
    """A DiTPipeline layout: transformer/, scheduler/, vae/."""
    root = tmp_path_factory.mktemp("dit")
    torch.manual_seed(0)
    diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1, sample_size=4,
        patch_size=2, num_embeds_ada_norm=10,
    ).save_pretrained(root / "transformer", safe_serialization=True)
    diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False).save_pretrained(root / "scheduler")
    tiny_vae().save_pretrained(root / "vae", safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A Stable Diffusion 1.x pipeline layout: unet/, vae/, text_encoder/, tokenizer/, scheduler/."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("sd")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    words = root / "words"
    words.mkdir()
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    tokenizer = CLIPTokenizer.from_pretrained(words, model_max_length=8)
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
    diffusers.StableDiffusionImg2ImgPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(root / "pipeline", safe_serialization=True)
    return root / "pipeline"


def distill_args(tmp_path, model_dir, out: str, *extra: str) -> list[str]:
    return ["distill", "--dataset", "digits", "--vae", str(model_dir / "vae"), "--cache-dir", str(tmp_path / "cache"),
            "--method", "kmeans", "--ipc", "1", "--seed", "0", "--out", str(tmp_path / out), "--quiet", *extra]


def images_of(folder) -> torch.Tensor:
    from latentdd.export import load_image_folder

    return load_image_folder(folder, class_names=DIGITS).images


def test_registry_holds_every_decoder_and_feeds_the_cli():
    assert {"vae", "diffusion", "dit", "sd-img2img"} <= set(DECODERS)
    assert all(name == cls.name and callable(cls.from_config) for name, cls in DECODERS.items())
    args = make_parser().parse_args(["distill", "--out", "x", "--decoder", "sd-img2img"])
    assert decoder_config(args, {}).name == "sd-img2img"


def test_distill_with_dit_from_the_cli(tmp_path, dit_dir):
    common = ["--steps", "4", "--strength", "0.5"]
    assert main(distill_args(tmp_path, dit_dir, "dit", "--decoder", "dit", "--prior", str(dit_dir),
                             "--class-map", CLASS_MAP, *common)) == 0
    out = tmp_path / "dit"
    record = json.loads((out / "distill.json").read_text())["record"]["decoder"]
    assert record["name"] == "dit" and record["model"] == str(dit_dir.resolve())
    assert record["denoising_steps"] == 2 and record["class_map"] == [9 - d for d in range(10)]
    saved = yaml.safe_load((out / "config.yaml").read_text())["decoder"]
    assert saved["prior"] == str(dit_dir) and saved["class_map"] == [9 - d for d in range(10)]
    # The same latents decoded by the VAE alone differ: the DiT ran.
    assert main(distill_args(tmp_path, dit_dir, "plain", *common)) == 0
    dit, plain = images_of(out / "images"), images_of(tmp_path / "plain" / "images")
    assert dit.shape == plain.shape == (10, 1, 8, 8) and not torch.allclose(dit, plain, atol=1e-3)


def test_distill_with_sd_img2img_from_yaml(tmp_path, sd_dir):
    config = tmp_path / "sd.yaml"
    config.write_text(yaml.safe_dump({"decoder": {"name": "sd-img2img", "prior": str(sd_dir), "strength": 0.5,
                                                  "num_inference_steps": 4, "guidance_scale": 8,
                                                  "prompt": "digit {}"}}))
    assert main(distill_args(tmp_path, sd_dir, "sd", "--config", str(config))) == 0
    record = json.loads((tmp_path / "sd" / "distill.json").read_text())["record"]["decoder"]
    assert record["name"] == "sd-img2img" and record["model"] == str(sd_dir.resolve())
    assert record["prompt"] == "digit {}" and record["denoising_steps"] == 2 and record["guidance_scale"] == 8
    assert len(list((tmp_path / "sd" / "images").glob("*/*.png"))) == 10


@pytest.mark.bad_input
@pytest.mark.parametrize("decoder", ["dit", "sd-img2img"])
def test_an_uncached_hub_id_offline_says_what_to_download(tmp_path, dit_dir, monkeypatch, capsys, decoder):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake = f"latentdd-tests/no-such-{decoder}"
    dit_only = ["--class-map", CLASS_MAP] if decoder == "dit" else []
    assert main(distill_args(tmp_path, dit_dir, "x", "--decoder", decoder, "--prior", fake, *dit_only)) == 2
    err = capsys.readouterr().err
    assert f"hf download {fake} --local-dir DIR" in err and f"--decoder {decoder} --prior DIR" in err
    assert "--vae DIR/vae" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("decoder", ["dit", "sd-img2img"])
@pytest.mark.parametrize("prior", ["ABSENT", "./no-such-folder", "a/b/c"])
def test_a_prior_folder_that_does_not_exist_says_so(tmp_path, dit_dir, monkeypatch, capsys, decoder, prior):
    """Issue 32: `--prior /nonexist` suggested `hf download /nonexist`; a path is no hub id."""
    monkeypatch.chdir(tmp_path)
    prior = str(tmp_path / "nonexist") if prior == "ABSENT" else prior
    dit_only = ["--class-map", CLASS_MAP] if decoder == "dit" else []
    assert main(distill_args(tmp_path, dit_dir, "x", "--decoder", decoder, "--prior", prior, *dit_only)) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "hf download" not in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


@pytest.mark.bad_input
def test_dit_refuses_classes_it_cannot_map_before_distilling(tmp_path, dit_dir, capsys, monkeypatch):
    import latentdd.pipelines.distill

    monkeypatch.setattr(latentdd.pipelines.distill, "distill_to_folder", lambda *a, **k: pytest.fail("distilled before the check"))
    assert main(distill_args(tmp_path, dit_dir, "x", "--decoder", "dit", "--prior", str(dit_dir))) == 2
    assert "--class-map" in capsys.readouterr().err
    assert main(distill_args(tmp_path, dit_dir, "x", "--decoder", "dit", "--prior", str(dit_dir),
                             "--class-map", "0,1")) == 2
    assert "class_map has 2 entries for 10 classes" in capsys.readouterr().err


@pytest.mark.bad_input
def test_prior_settings_that_do_not_fit_the_decoder_are_refused(tmp_path, dit_dir, capsys):
    assert main(distill_args(tmp_path, dit_dir, "x", "--decoder", "diffusion", "--prior", str(dit_dir))) == 2
    assert "--prior-set" in capsys.readouterr().err
    assert main(distill_args(tmp_path, dit_dir, "x", "--decoder", "dit", "--prior", str(dit_dir),
                             "--prior-set", "max_steps=3")) == 2
    assert "pretrained model" in capsys.readouterr().err
    assert main(distill_args(tmp_path, dit_dir, "x", "--class-map", CLASS_MAP)) == 2
    assert "setting of the dit decoder" in capsys.readouterr().err


def test_decoder_prior_resolves_to_the_model_or_the_fitted_prior_settings():
    from latentdd.config import build
    from latentdd.pipelines.distill import DecoderConfig

    assert build(DecoderConfig, {"name": "dit"}, section="decoder").prior == "facebook/DiT-XL-2-256"
    assert build(DecoderConfig, {"name": "sd-img2img", "prior": "a/b"}, section="decoder").prior == "a/b"
    # A saved config of the vae decoder (the fitted prior's defaults in full) can be reused with --decoder dit.
    saved = DecoderConfig().prior
    assert build(DecoderConfig, {"name": "dit", "prior": saved}, section="decoder").prior == "facebook/DiT-XL-2-256"
    assert build(DecoderConfig, {"name": "diffusion", "prior": {"max_steps": "3"}}, section="decoder").prior[
        "max_steps"] == 3


@pytest.mark.bad_input
def test_a_pickled_checkpoint_is_never_loaded(tmp_path, dit_dir):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(dit_dir / "scheduler", pickled / "scheduler")
    transformer, _ = load_dit(str(dit_dir))
    transformer.save_pretrained(pickled / "transformer", safe_serialization=False)  # a .bin: a pickle
    assert not list((pickled / "transformer").glob("*.safetensors"))
    with pytest.raises(LatentDDError, match="safetensors"):
        load_dit(str(pickled))


def test_run_with_dit_from_yaml_records_the_model_in_its_request(tmp_path, dit_dir):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "decoder": {"name": "dit", "prior": str(dit_dir), "class_map": [int(i) for i in CLASS_MAP.split(",")],
                    "num_inference_steps": 4},
        "run": {"methods": ["kmeans"], "ipcs": [1], "random_real": False},
        "evaluator": {"epochs": 1, "width": 8, "compile": "off", "num_eval": 1}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--dataset", "digits", "--vae", str(dit_dir / "vae"),
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet"]) == 0
    stored = json.loads((out / "kmeans_ipc1" / "distill.json").read_text())
    assert stored["request"]["decoder"]["prior"] == str(dit_dir.resolve())
    assert stored["record"]["decoder"]["name"] == "dit"
    assert json.loads((out / "results.json").read_text())[0]["method"].startswith("kmeans")
