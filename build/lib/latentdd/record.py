"""The protocol record every reported number carries (PROTOCOLS.md section 6)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (absent ones are skipped)."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("latentdd", "torch", "torchvision", "numpy", "diffusers", "scikit-learn", "faiss-cpu",
                 "faiss-gpu-cu12"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        versions["torch_threads"] = str(torch.get_num_threads())
        versions["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a record must never fail because of a probe
        pass
    return versions


def dataset_record(data, train, test) -> dict:
    """The dataset part of a record: `data` a DataConfig, `train`/`test` its loaded splits."""
    record = {"name": data.name, "train_split": f"train ({len(train)} images)",
              "test_split": f"test ({len(test)} images)", "image_shape": list(train.load([0]).shape[1:]),
              "resize": data.resize, "source": getattr(train, "source", "")}
    if getattr(data, "validation", 0):  # train is the rest after holding out the val split
        record["validation"] = f"{data.validation} of each class of the train split held out as val (seed 0)"
    return record


def protocol_record(
    *,
    dataset: dict,
    method: dict,
    ipc: int | None,
    evaluator: dict,
    num_eval: int,
    seeds: list[int],
    vae: dict | None = None,
    decoder: dict | None = None,
    stage_seconds: dict[str, float] | None = None,
) -> dict:
    """Assemble the record; every field of section 6 is present, `None` meaning not used."""
    return {
        "dataset": dataset,  # name, train/test split, image size, channels, source
        "vae": vae or {"name": None, "note": "pixel space: no VAE"},
        "method": method,  # name and parameters
        "ipc": ipc,
        "decoder": decoder or {"name": None, "note": "no decoder: images are used as they are"},
        "evaluator": evaluator,
        "num_eval": num_eval,
        "seeds": seeds,
        "versions": library_versions(),
        "stage_seconds": stage_seconds or {},
        "selection": "final epoch of every evaluation run; nothing is chosen by test accuracy",
    }
