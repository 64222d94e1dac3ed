"""The `dit` decoder: img2img from each synthetic latent with a pretrained class-conditional DiT.

DiT (facebook/DiT-XL-2-256) was trained on ImageNet-1k latents of its own VAE at 256 px
(32x32x4 latents), so the latents must come from that VAE: encode with
`--vae DIR/vae` (`load_vae("facebook/DiT-XL-2-256/vae")`). `load_dit` gives the
transformer and its noise schedule, and `DiTDecoder` runs latentdd's DDIM img2img loop
(`latentdd.render.diffusion.LatentImg2Img`) with it. DiT predicts 2C channels (noise and
learned variance); the first C are the noise. Its null class is
config.num_embeds_ada_norm (1000), DiT's label-dropout class. Dataset classes map to
ImageNet indices through `class_map`, or through their WordNet ids and
`imagenet_class_index` with a user-supplied class list.

    latentdd distill --dataset imagefolder --root ~/imagenette --image-size 256 --vae DIR/vae \
        --decoder dit --prior DIR --imagenet-classes LOC_synset_mapping.txt ...

No weights can be downloaded where latentdd is tested: `load_dit` raises LatentDDError
saying what to download and how to pass the folder, and the tests run the decoder end to
end on a tiny randomly initialised DiT built from a config.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentdd.errors import DataError, LatentDDError
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.render.diffusion import LatentImg2Img
from latentdd.render.hub import dtype_kwargs, load_pretrained, source_name
from latentdd.vae.base import LatentVAE, VAEInputAdapter

DIT_DEFAULT = "facebook/DiT-XL-2-256"

_WNID = re.compile(r"n\d{8}")

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


def imagenet_indices(class_names: list[str], class_map, imagenet_classes, num_classes: int,
                     model: str, prefix: str = "") -> list[int] | None:
    """The ImageNet index of each dataset class, for a model with `num_classes` ImageNet outputs:
    `class_map` (one index per class), else the classes' WordNet ids looked up in `imagenet_classes`;
    None when the classes are not WordNet ids and there is no class_map (the caller says what to pass).
    DataError on a class_map of the wrong length or an index outside the model's classes."""
    if class_map is not None:
        index = [int(i) for i in class_map]
        if len(index) != len(class_names):
            raise DataError(f"{prefix}class_map has {len(index)} entries for {len(class_names)} classes")
    elif all(_WNID.fullmatch(name) for name in class_names):
        index = [imagenet_class_index(name, imagenet_classes) for name in class_names]
    else:
        return None
    bad = [i for i in index if not 0 <= i < num_classes]
    if bad:
        raise DataError(f"class indices {bad[:3]} are outside the {model}'s {num_classes} classes")
    return index


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


def load_dit(source: str = DIT_DEFAULT, *, device: str | torch.device = "cpu", torch_dtype: torch.dtype | None = None,
             local_files_only: bool = False) -> tuple[Any, dict]:
    """(DiTTransformer2DModel frozen in eval mode, its scheduler config) from a DiTPipeline layout.

    source: a hub id (facebook/DiT-XL-2-256) or a directory with transformer/ and scheduler/
    subfolders. The latents must come from its VAE: load_vae(f"{source}/vae").
    """
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    def load(where: str, cache_only: bool):
        transformer = DiTTransformer2DModel.from_pretrained(
            where, subfolder="transformer", local_files_only=cache_only, use_safetensors=True,
            **dtype_kwargs(torch_dtype))
        scheduler = DDIMScheduler.load_config(where, subfolder="scheduler", local_files_only=cache_only)
        return transformer, dict(scheduler)

    transformer, scheduler_config = load_pretrained(
        load, source, "DiT", local_files_only=local_files_only, subfolders="transformer/ and scheduler/",
        use="pass DIR as the DiT (--decoder dit --prior DIR, or decoder.prior: DIR in YAML; load_dit('DIR') "
            "in Python) and DIR/vae as the VAE (--vae DIR/vae)")
    return transformer.to(device).eval().requires_grad_(False), scheduler_config


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
        mapping = imagenet_indices(class_names, self.class_map, self.imagenet_classes, self.null_label, "DiT")
        if mapping is None:
            raise DataError(
                "DiT is conditioned on ImageNet classes: pass class_map (one ImageNet index per dataset class: "
                "--class-map 1,3,... or decoder.class_map) or name the classes by WordNet id (n01440764, ...) with an "
                f"imagenet_classes file (--imagenet-classes FILE); got {class_names[:3]}"
            )
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


def make_dit_decoder(config, vae: LatentVAE, adapter: VAEInputAdapter, latents: Latents, cache_dir, *,
                     progress: bool = True) -> tuple[DiTDecoder, dict]:
    """The DiT of `config.prior` (hub id or folder) -> (DiTDecoder, its record); `config` has the fields of
    `latentdd.render.config.DecoderConfig`. The train latents' shape and classes are checked now, before any distilling."""
    transformer, scheduler_config = load_dit(config.prior, device=vae.device)
    decoder = DiTDecoder(vae, adapter, transformer, scheduler_config, class_map=config.class_map,
                         imagenet_classes=config.imagenet_classes, strength=config.strength,
                         num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                         eta=config.eta, batch_size=config.batch_size, model=source_name(config.prior))
    decoder.check_model(latents)  # Latents carry .latents and .class_names as SyntheticLatents do
    decoder.resolve_class_map(list(latents.class_names))
    return decoder, decoder.record()
