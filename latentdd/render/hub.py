"""Loading a pretrained diffusers model by hub id or folder, with download steps when it is not there.

Weights load from safetensors only (`use_safetensors=True` on every from_pretrained): a
pickled `.bin` beside them is never read, so a downloaded folder cannot run code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from latentdd.errors import LatentDDError

T = TypeVar("T")

# What from_pretrained takes for a hub id: "name" or "org/name". Anything else that is not on disk
# ("/abs/path", "./rel", "~/x", "a/b/c") was meant as a folder: no download can help.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def load_pretrained(load: Callable[[str, bool], T], source: str, what: str, *, local_files_only: bool,
                    use: str, subfolders: str) -> T:
    """load(source, cache_only) for a directory or a hub id; LatentDDError with download steps on failure.

    A hub id is tried in the local hub cache first and on the network second, unless
    local_files_only or HF_HUB_OFFLINE=1 (offline, a network attempt only retries and fails).
    use: how to pass the downloaded folder DIR, completing "then copy DIR here and ...".
    subfolders: what a folder must hold, for the error on a folder that does not.
    """
    path = Path(source).expanduser()
    if path.exists():
        try:
            return load(str(path), True)
        except (OSError, ValueError, RuntimeError) as err:
            raise LatentDDError(f"cannot load {what} from {path}: {first_line(err)}; expected a diffusers "
                                f"directory with {subfolders} with safetensors weights (as written by "
                                "save_pretrained or hf download)") from err
    if not _HUB_ID.fullmatch(source):
        raise LatentDDError(f"cannot load {what} from {source!r}: the folder {path} does not exist; pass an existing "
                            f"diffusers directory (with {subfolders}), or a Hugging Face hub id (org/name)")
    attempts = [True] if local_files_only or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    error: Exception | None = None
    for cache_only in attempts:
        try:
            return load(source, cache_only)
        except (OSError, ValueError) as err:  # diffusers reports missing / unreachable files as OSError
            error = err
    raise LatentDDError(
        f"cannot load {what} {source!r}: it is not a local directory and not in the Hugging Face cache "
        f"({first_line(error)}).\nDownload it on a machine with internet access:\n"
        f"    hf download {source} --local-dir DIR      (older huggingface_hub: huggingface-cli download ...)\n"
        f"then copy DIR here and {use}."
    ) from error


def dtype_kwargs(torch_dtype: torch.dtype | None) -> dict:
    """from_pretrained's dtype argument, only when one is asked for (None: the weights load as float32);
    diffusers >= 0.42 calls it `dtype` and warns about `torch_dtype`, older versions know only `torch_dtype`."""
    return {} if torch_dtype is None else {"torch_dtype": torch_dtype}


def first_line(err: Exception | None) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def source_name(source: str) -> str:
    """The name a record gives `source`: a folder's absolute path, else the hub id as given."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source
