"""Pretrained diffusion decoders: DiT (class-conditional, ImageNet) and Stable Diffusion img2img (D4M).

Both start from the synthetic LATENT, never from an image, so the latents must come from
the diffusion model's own VAE (same latent channels and scaling factor):

    DiT   facebook/DiT-XL-2-256: encode with `load_vae("facebook/DiT-XL-2-256/vae")` at
          256 px (32x32 latents); `load_dit` gives the transformer and its noise schedule,
          `DiTDecoder` runs latentdd's img2img loop (`latentdd.render.diffusion`) with it.
          DiT predicts 2C channels (noise and learned variance); the first C are the noise.
          Its null class is config.num_embeds_ada_norm (1000), DiT's label-dropout class.
          Dataset classes map to ImageNet indices through `class_map`, or through their
          WordNet ids and `imagenet_class_index` with a user-supplied class list.
    SD    a Stable Diffusion 1.x pipeline directory or hub id: `load_sd_img2img` gives a
          diffusers StableDiffusionImg2ImgPipeline, `StableDiffusionImg2ImgDecoder` calls it
          with `image=` the (B, 4, h, w) latents (diffusers' img2img treats a 4-channel
          `image` as latents that are already scaled), the class name as the prompt, and
          output_type="latent"; latentdd's VAE and adapter then decode, as VAEDecoder does.
          D4M's recipe: strength 0.7 (35 of 50 steps), guidance 8.

No weights can be downloaded where latentdd is tested: the loaders raise LatentDDError
saying what to download and where to put it, and the tests run both paths end to end on
tiny randomly initialised components built from configs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from latentdd.data.base import SyntheticImages
from latentdd.render.diffusion import (
    NOISE_NOTE,
    LatentImg2Img,
    check_img2img_params,
    latent_generators,
)
from latentdd.errors import DataError, LatentDDError
from latentdd.latents.types import SyntheticLatents
from latentdd.render.vae import VAEDecoder
from latentdd.vae.base import LatentVAE, VAEInputAdapter

DIT_DEFAULT = "facebook/DiT-XL-2-256"
SD_DEFAULT = "stable-diffusion-v1-5/stable-diffusion-v1-5"

_WNID = re.compile(r"n\d{8}")
T = TypeVar("T")

IMAGENET_CLASSES_HELP = """\
an ImageNet-1k class list, one of:
  - imagenet_class_index.json (Keras / PyTorch examples): {"0": ["n01440764", "tench"], ...}
  - a JSON object {"n01440764": 0, ...} or a JSON list ["n01440764", ...] (index = position)
  - a text file with one class per line in index order, the WordNet id first
    (LOC_synset_mapping.txt of the ILSVRC devkit: "n01440764 tench, Tinca tinca", or synsets.txt)
  - the ImageNet train/ (or val/) folder with all 1000 <wnid>/ subfolders: the standard
    index of a class is its position among the sorted WordNet ids, which is how DiT's
    ImageFolder numbered them"""


# ---------------------------------------------------------------- ImageNet class indices


def imagenet_class_index(wnid: str, mapping: str | Path | None = None) -> int:
    """The ImageNet-1k class index (0..999) of WordNet id `wnid` (e.g. "n01440764" -> 0).

    mapping: a class list in one of the formats of `IMAGENET_CLASSES_HELP`. No package
    installed here ships the 1000 WordNet ids (torchvision has only Imagenette's 10), so
    without one this raises LatentDDError saying what to pass.
    """
    if mapping is None:
        raise LatentDDError(f"cannot map WordNet id {wnid!r} to an ImageNet class index without {IMAGENET_CLASSES_HELP}")
    classes = load_imagenet_classes(mapping)
    if wnid not in classes:
        raise DataError(f"WordNet id {wnid!r} is not among the {len(classes)} classes listed in {mapping}")
    return classes[wnid]


def load_imagenet_classes(mapping: str | Path) -> dict[str, int]:
    """{wnid: index} read from a class list (see `IMAGENET_CLASSES_HELP`)."""
    return dict(_load_imagenet_classes(str(Path(mapping).expanduser().resolve())))


@functools.lru_cache(maxsize=8)
def _load_imagenet_classes(path: str) -> tuple[tuple[str, int], ...]:
    source = Path(path)
    if source.is_dir():
        wnids = sorted(p.name for p in source.iterdir() if p.is_dir() and _WNID.fullmatch(p.name))
        if len(wnids) != 1000:
            raise DataError(
                f"{source} holds {len(wnids)} WordNet-id folders; the sorted order gives ImageNet-1k indices only "
                "with all 1000 (a subset such as Imagenette would be numbered 0..K-1, which DiT does not know)"
            )
        pairs = list(zip(wnids, range(1000)))
    elif source.is_file():
        try:
            text = source.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read the ImageNet class list {source}: {err}") from err
        pairs = _parse_json_classes(text, source) if source.suffix.lower() == ".json" else _parse_text_classes(text)
    else:
        raise LatentDDError(f"ImageNet class list {source} does not exist; expected {IMAGENET_CLASSES_HELP}")
    bad = [w for w, _ in pairs if not _WNID.fullmatch(w)]
    if bad or not pairs:
        raise DataError(f"{source} is not an ImageNet class list (bad WordNet ids such as {bad[:3]}); "
                        f"expected {IMAGENET_CLASSES_HELP}")
    indices = [i for _, i in pairs]
    if len(set(indices)) != len(indices) or len({w for w, _ in pairs}) != len(pairs) or min(indices) < 0:
        raise DataError(f"{source} lists a WordNet id or class index twice, or a negative index")
    return tuple(pairs)


def _parse_json_classes(text: str, source: Path) -> list[tuple[str, int]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise DataError(f"{source} is not valid JSON: {err}") from err
    try:
        if isinstance(data, list):
            return [(str(w), i) for i, w in enumerate(data)]
        if all(isinstance(v, (list, tuple)) for v in data.values()):  # {"0": ["n01440764", "tench"]}
            return [(str(v[0]), int(k)) for k, v in data.items()]
        return [(str(k), int(v)) for k, v in data.items()]  # {"n01440764": 0}
    except (AttributeError, TypeError, ValueError, IndexError) as err:
        raise DataError(f"{source} is not an ImageNet class list: {err}; expected {IMAGENET_CLASSES_HELP}") from err


def _parse_text_classes(text: str) -> list[tuple[str, int]]:
    lines = [line.split()[0] for line in text.splitlines() if line.strip()]
    return [(w, i) for i, w in enumerate(lines)]


# ---------------------------------------------------------------- loading by hub id or directory


def _load_pretrained(load: Callable[[str, bool], T], source: str, what: str, *, local_files_only: bool,
                     use: str, subfolders: str) -> T:
    """load(source, cache_only) for a directory or a hub id; LatentDDError with download steps on failure.

    A hub id is tried in the local hub cache first and on the network second, unless
    local_files_only or HF_HUB_OFFLINE=1 (offline, a network attempt only retries and fails).
    """
    path = Path(source).expanduser()
    if path.exists():
        try:
            return load(str(path), True)
        except (OSError, ValueError, RuntimeError) as err:
            raise LatentDDError(f"cannot load {what} from {path}: {_first_line(err)}; expected a diffusers "
                                f"directory with {subfolders} (as written by save_pretrained or hf download)") from err
    attempts = [True] if local_files_only or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    error: Exception | None = None
    for cache_only in attempts:
        try:
            return load(source, cache_only)
        except (OSError, ValueError) as err:  # diffusers reports missing / unreachable files as OSError
            error = err
    raise LatentDDError(
        f"cannot load {what} {source!r}: it is not a local directory and not in the Hugging Face cache "
        f"({_first_line(error)}).\nDownload it on a machine with internet access:\n"
        f"    hf download {source} --local-dir DIR      (older huggingface_hub: huggingface-cli download ...)\n"
        f"then copy DIR here and {use}."
    ) from error


def _dtype(torch_dtype: torch.dtype | None) -> dict:
    """from_pretrained's dtype argument, only when one is asked for (None: the weights load as float32);
    diffusers >= 0.42 calls it `dtype` and warns about `torch_dtype`, older versions know only `torch_dtype`."""
    return {} if torch_dtype is None else {"torch_dtype": torch_dtype}


def _first_line(err: Exception | None) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_dit(source: str = DIT_DEFAULT, *, device: str | torch.device = "cpu", torch_dtype: torch.dtype | None = None,
             local_files_only: bool = False) -> tuple[Any, dict]:
    """(DiTTransformer2DModel frozen in eval mode, its scheduler config) from a DiTPipeline layout.

    source: a hub id (facebook/DiT-XL-2-256) or a directory with transformer/ and scheduler/
    subfolders. The latents must come from its VAE: load_vae(f"{source}/vae").
    """
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    def load(where: str, cache_only: bool):
        transformer = DiTTransformer2DModel.from_pretrained(
            where, subfolder="transformer", local_files_only=cache_only, **_dtype(torch_dtype))
        scheduler = DDIMScheduler.load_config(where, subfolder="scheduler", local_files_only=cache_only)
        return transformer, dict(scheduler)

    transformer, scheduler_config = _load_pretrained(
        load, source, "DiT", local_files_only=local_files_only, subfolders="transformer/ and scheduler/",
        use="pass DIR as the DiT (load_dit('DIR')) and DIR/vae as the VAE (--vae DIR/vae)")
    return transformer.to(device).eval().requires_grad_(False), scheduler_config


def load_sd_img2img(source: str = SD_DEFAULT, *, device: str | torch.device = "cpu",
                    torch_dtype: torch.dtype | None = None, local_files_only: bool = False):
    """A StableDiffusionImg2ImgPipeline (no safety checker: the outputs are training data, not shown to users).

    source: a hub id or a Stable Diffusion 1.x pipeline directory (unet/, vae/,
    text_encoder/, tokenizer/, scheduler/). The latents must come from its VAE: load_vae(f"{source}/vae").
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    def load(where: str, cache_only: bool):
        return StableDiffusionImg2ImgPipeline.from_pretrained(
            where, local_files_only=cache_only, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, **_dtype(torch_dtype))

    pipeline = _load_pretrained(
        load, source, "Stable Diffusion", local_files_only=local_files_only,
        subfolders="unet/, vae/, text_encoder/, tokenizer/ and scheduler/",
        use="pass DIR as the Stable Diffusion model (load_sd_img2img('DIR')) and DIR/vae as the VAE (--vae DIR/vae)")
    return pipeline.to(device)


# ---------------------------------------------------------------- DiT


@dataclass
class DiTDecoder(LatentImg2Img):
    """Img2img with a class-conditional DiT (`load_dit`), then latentdd's VAE.

    transformer: DiTTransformer2DModel (learned sigma: out_channels = 2 * in_channels; the
        first in_channels are the noise). scheduler_config: its schedule (sampling uses a
        DDIMScheduler built from it).
    class_map: the ImageNet index of each dataset class (len K), or None to look each
        class name up as a WordNet id in `imagenet_classes` (see `imagenet_class_index`).
    strength 0.7 as D4M; guidance_scale 4.0, DiTPipeline's default; the guidance mixes
        all C noise channels (as diffusers does; the original DiT code guided only 3).
    model: the DiT's name for the record.
    """

    vae: LatentVAE
    adapter: VAEInputAdapter
    transformer: torch.nn.Module
    scheduler_config: dict
    class_map: list[int] | None = None
    imagenet_classes: str | None = None
    strength: float = 0.7
    num_inference_steps: int = 50
    guidance_scale: float = 4.0
    eta: float = 0.0
    batch_size: int = 32
    model: str = DIT_DEFAULT
    name = "dit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if getattr(self.transformer.config, "num_embeds_ada_norm", None) is None:
            raise DataError("the DiT decoder needs a class-conditional DiT (config.num_embeds_ada_norm is None)")
        self.transformer.eval().requires_grad_(False)

    @property
    def null_label(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    @property
    def model_device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        timestep = t.reshape(1).to(x.device).expand(len(x))  # DiT embeds one timestep per sample
        out = self.transformer(x.to(self.transformer.dtype), timestep=timestep, class_labels=labels).sample
        return out[:, :c].float()  # (B, c, h, w): drop the learned variance channels

    def resolve_class_map(self, class_names: list[str]) -> list[int]:
        """The DiT class index of each dataset class."""
        if self.class_map is not None:
            mapping = [int(i) for i in self.class_map]
            if len(mapping) != len(class_names):
                raise DataError(f"class_map has {len(mapping)} entries for {len(class_names)} classes")
        elif all(_WNID.fullmatch(name) for name in class_names):
            mapping = [imagenet_class_index(name, self.imagenet_classes) for name in class_names]
        else:
            raise DataError(
                "DiT is conditioned on ImageNet classes: pass class_map (one ImageNet index per dataset class) "
                f"or name the classes by WordNet id (n01440764, ...) with an imagenet_classes file; got {class_names[:3]}"
            )
        bad = [i for i in mapping if not 0 <= i < self.null_label]
        if bad:
            raise DataError(f"class indices {bad[:3]} are outside the DiT's {self.null_label} classes")
        return mapping

    def model_labels(self, synthetic: SyntheticLatents) -> torch.Tensor:
        return torch.tensor(self.resolve_class_map(list(synthetic.class_names)), dtype=torch.long)[synthetic.labels]

    def check_model(self, synthetic: SyntheticLatents) -> None:
        config = self.transformer.config
        expected = (config.in_channels, config.sample_size, config.sample_size)
        if tuple(synthetic.latents.shape[1:]) != expected:
            raise DataError(
                f"{self.model} takes latents of shape {expected} (images of {config.sample_size * 8} px through its VAE); "
                f"got {tuple(synthetic.latents.shape[1:])}"
            )

    def record(self) -> dict:
        return {"name": self.name, "model": self.model, "class_map": self.class_map,
                "imagenet_classes": self.imagenet_classes, **self.sampler_record()}


# ---------------------------------------------------------------- Stable Diffusion img2img (D4M)


@dataclass
class StableDiffusionImg2ImgDecoder:
    """D4M's decoder: Stable Diffusion img2img from each synthetic latent, prompted with its class name.

    vae / adapter: latentdd's VAE that encoded the latents (the pipeline's VAE: same
        scaling factor, 4 latent channels, no shift) and the dataset adapter; they decode.
    pipeline: a StableDiffusionImg2ImgPipeline (`load_sd_img2img`); its own scheduler runs
        (PNDM for SD 1.5, as in D4M); eta reaches it only if it is a DDIM-like scheduler.
    strength, num_inference_steps, guidance_scale: D4M's 0.7, 50, 8; diffusers runs
        int(strength * num_inference_steps) steps.
    prompt: format string of a class's prompt ("{}" -> the class name, as D4M);
        class_prompts: one prompt per class instead. negative_prompt: None -> "".
    model: the pipeline's name for the record.
    """

    vae: LatentVAE
    adapter: VAEInputAdapter
    pipeline: Any
    strength: float = 0.7
    num_inference_steps: int = 50
    guidance_scale: float = 8.0
    eta: float = 0.0
    batch_size: int = 16
    prompt: str = "{}"
    class_prompts: list[str] | None = None
    negative_prompt: str | None = None
    model: str = SD_DEFAULT
    name = "sd-img2img"

    def __post_init__(self) -> None:
        check_img2img_params(self.strength, self.num_inference_steps, self.guidance_scale, self.eta, self.batch_size)
        self.pipeline.set_progress_bar_config(disable=True)  # one bar per batch would only be noise

    @property
    def denoising_steps(self) -> int:
        """What diffusers' img2img runs: int(strength * steps), rounding down."""
        return min(int(self.num_inference_steps * self.strength), self.num_inference_steps)

    def prompts(self, class_names: list[str]) -> list[str]:
        if self.class_prompts is not None:
            if len(self.class_prompts) != len(class_names):
                raise DataError(f"class_prompts has {len(self.class_prompts)} prompts for {len(class_names)} classes")
            return list(self.class_prompts)
        return [self.prompt.format(name) for name in class_names]

    def check_model(self, synthetic: SyntheticLatents) -> None:
        c = synthetic.latents.shape[1]
        unet_channels = self.pipeline.unet.config.in_channels
        if c != 4 or unet_channels != 4:
            raise DataError(
                f"Stable Diffusion img2img takes 4-channel latents (diffusers reads a 4-channel `image` as latents); "
                f"got {c}-channel latents for a {unet_channels}-channel UNet"
            )
        if self.vae.shift_factor != 0:
            raise DataError(f"{self.vae.name} shifts its latents by {self.vae.shift_factor}; SD 1.x latents are unshifted")
        sd_vae = getattr(self.pipeline, "vae", None)
        if sd_vae is not None and abs(float(sd_vae.config.scaling_factor) - self.vae.scaling_factor) > 1e-6:
            raise DataError(
                f"the latents were scaled by {self.vae.scaling_factor} ({self.vae.name}) but the pipeline's VAE "
                f"scales by {sd_vae.config.scaling_factor}; encode with the pipeline's VAE (DIR/vae)"
            )

    @torch.no_grad()
    def render(self, synthetic: SyntheticLatents, *, seed: int = 0) -> SyntheticImages:
        """(M, 4, h, w) latents -> (M, C, H, W) images in [0, 1]; latent i's noise depends on (seed, i) only."""
        plain = VAEDecoder(self.vae, self.adapter, self.batch_size)
        if self.denoising_steps == 0:
            return plain.render(synthetic, seed=seed)
        self.check_model(synthetic)
        prompts = self.prompts(list(synthetic.class_names))
        parts = []
        for start in range(0, len(synthetic), self.batch_size):
            stop = min(start + self.batch_size, len(synthetic))
            labels = synthetic.labels[start:stop].tolist()
            out = self.pipeline(
                prompt=[prompts[k] for k in labels],
                negative_prompt=None if self.negative_prompt is None else [self.negative_prompt] * len(labels),
                image=synthetic.latents[start:stop].to(self.pipeline.device),  # (B, 4, h, w): taken as latents
                strength=self.strength,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                eta=self.eta,
                generator=latent_generators(seed, start, stop),
                output_type="latent",
            ).images  # (B, 4, h, w) scaled latents
            parts.append(out.float().cpu())
        denoised = torch.cat(parts) if parts else synthetic.latents.float()
        return plain.render(dataclasses.replace(synthetic, latents=denoised), seed=seed)

    def record(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "vae": self.vae.name,
            "adapter": self.adapter.identity(),
            "sampler": f"diffusers StableDiffusionImg2ImgPipeline from the synthetic latent, "
                       f"{type(self.pipeline.scheduler).__name__}",
            "strength": self.strength,
            "num_inference_steps": self.num_inference_steps,
            "denoising_steps": self.denoising_steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
            "prompt": self.prompt if self.class_prompts is None else self.class_prompts,
            "negative_prompt": self.negative_prompt,
            "noise": NOISE_NOTE,
        }
