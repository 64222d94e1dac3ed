"""VAEs: one `LatentVAE` interface, the dataset adapter, and `load_vae(spec)`.

Specs `load_vae` understands (also the CLI's --vae help, `VAE_SPEC_HELP`):

    pixel                      the identity latent space: latents are the images (latentdd.vae.pixel);
                               built by the caller from the dataset's image shape, not loaded here
    fit                        train a small AutoencoderKL on the dataset: not loaded here but by
                               the caller through `latentdd.vae.fit.fit_vae` (cached by content)
    taesd:PATH                 TAESD-family weights: a directory holding one *encoder.pth +
                               *decoder.pth pair (or .safetensors), or either file's path
    DIR                        a diffusers directory (config.json + weights from save_pretrained):
                               AutoencoderKL, AutoencoderTiny, a fitted VAE's cache directory,
                               or a pipeline directory with a vae/ subfolder; a directory of
                               TAESD .pth files works without the taesd: prefix
    ORG/NAME[/SUBFOLDER]       a Hugging Face hub id, e.g. stabilityai/sd-vae-ft-mse; read from
                               the local hub cache first, then the network
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from latentdd.errors import LatentDDError
from latentdd.vae.base import LatentVAE, VAEInputAdapter
from latentdd.vae.diffusers_kl import DiffusersKL
from latentdd.vae.fit import FIT_META_FILE, FitVAEConfig, fit_vae, load_fitted
from latentdd.vae.pixel import PixelVAE
from latentdd.vae.taesd import TAESD, DiffusersTiny, find_taesd_files, has_taesd_files

__all__ = [
    "DIFFUSERS_CLASSES",
    "DiffusersKL",
    "DiffusersTiny",
    "FitVAEConfig",
    "LatentVAE",
    "PixelVAE",
    "TAESD",
    "VAEInputAdapter",
    "VAE_SPEC_HELP",
    "fit_vae",
    "load_fitted",
    "load_vae",
]

VAE_SPEC_HELP = "fit | pixel | taesd:PATH | DIR (diffusers or TAESD weights) | ORG/NAME[/SUBFOLDER] (hub id)"

# diffusers config `_class_name` -> wrapper; `load_vae` dispatches on it.
DIFFUSERS_CLASSES: dict[str, type[LatentVAE]] = {"AutoencoderKL": DiffusersKL, "AutoencoderTiny": DiffusersTiny}

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)?")


def load_vae(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    local_files_only: bool = False,
) -> LatentVAE:
    """The VAE `spec` names (see the module docstring), frozen, in eval mode, on `device`.

    input_size: side of the images to encode; None -> the model's own (config.sample_size
        for diffusers models, 64 for TAESD, the fitted size for fitted VAEs).
    local_files_only: for hub ids, never touch the network (only the local hub cache).
    Raises LatentDDError saying what is missing and how to get it.
    """
    spec = str(spec)
    if spec == "fit":
        raise LatentDDError(
            "the 'fit' VAE is trained on the dataset, not loaded: call "
            "latentdd.vae.fit_vae(train, test, FitVAEConfig(), cache_dir) (the CLI does this for --vae fit), "
            "or pass the cache directory of a VAE fitted before"
        )
    if spec == "pixel":
        raise LatentDDError(
            "the 'pixel' space is built from the dataset's image shape, not loaded: "
            "latentdd.vae.PixelVAE(channels, size) (the CLI does this for --vae pixel)"
        )
    size = {} if input_size is None else {"input_size": input_size}
    if spec.startswith("taesd:"):
        encoder, decoder = find_taesd_files(spec[len("taesd:") :])
        return TAESD.from_files(encoder, decoder, **size).to(device)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_local(path, size).to(device)
    if _HUB_ID.fullmatch(spec):
        return _load_hub(spec, size, local_files_only).to(device)
    raise LatentDDError(f"VAE {spec!r} is neither an existing file or directory nor a hub id; expected {VAE_SPEC_HELP}")


def _load_local(path: Path, size: dict) -> LatentVAE:
    if path.is_file() or has_taesd_files(path):
        encoder, decoder = find_taesd_files(path)
        return TAESD.from_files(encoder, decoder, **size)
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"  # a pipeline directory
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LatentDDError(
            f"{path} holds neither a diffusers VAE (config.json + weights, as written by save_pretrained) "
            "nor TAESD weights (*encoder.pth + *decoder.pth)"
        )
    if (path / FIT_META_FILE).is_file():
        return load_fitted(path, **size)
    try:
        class_name = json.loads(config_file.read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise LatentDDError(f"cannot read {config_file}: {err}") from err
    try:
        return _from_pretrained(class_name, str(path), None, True, str(path.resolve()), size)
    except LatentDDError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise LatentDDError(f"cannot load the diffusers {class_name} in {path}: {err}") from err


def _load_hub(spec: str, size: dict, local_files_only: bool) -> LatentVAE:
    parts = spec.split("/")
    repo, subfolder = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)
    # The local hub cache first: offline, a network attempt would only retry and fail.
    attempts = [True] if local_files_only or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    error: Exception | None = None
    for cache_only in attempts:
        try:
            diffusers = _diffusers()
            config = diffusers.AutoencoderKL.load_config(repo, subfolder=subfolder, local_files_only=cache_only)
            return _from_pretrained(config.get("_class_name"), repo, subfolder, cache_only, spec, size)
        except LatentDDError:
            raise
        except (OSError, ValueError) as err:  # diffusers reports a missing / unreachable file as OSError
            error = err
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = f" --include '{subfolder}/*'" if subfolder else ""
    local = f"DIR/{subfolder}" if subfolder else "DIR"
    raise LatentDDError(
        f"cannot load VAE {spec!r} from the Hugging Face hub ({first_line}).\n"
        f"Download it on a machine with internet access:\n"
        f"    hf download {repo}{where} --local-dir DIR      (older huggingface_hub: huggingface-cli download ...)\n"
        f"then copy DIR here and pass {local} as the VAE (load_vae({local!r}) / --vae {local})."
    ) from error


def _from_pretrained(
    class_name: str | None, source: str, subfolder: str | None, cache_only: bool, name: str, size: dict
) -> LatentVAE:
    wrapper = DIFFUSERS_CLASSES.get(class_name)
    if wrapper is None:
        supported = ", ".join(DIFFUSERS_CLASSES)
        raise LatentDDError(f"{name} is a diffusers {class_name}; supported VAE classes: {supported}")
    if wrapper is DiffusersKL:
        return DiffusersKL.from_pretrained(source, subfolder=subfolder, local_files_only=cache_only, name=name, **size)
    model = _diffusers().AutoencoderTiny.from_pretrained(source, subfolder=subfolder, local_files_only=cache_only,
                                                        use_safetensors=True)  # never a pickled .bin
    return DiffusersTiny(model.float(), name=name, **size)


def _diffusers():
    from latentdd.vae.diffusers_kl import _require_diffusers

    return _require_diffusers()
