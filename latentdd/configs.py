"""Every section of a config file, by its YAML name, and the dataclass that reads it: the one place a section is
registered. The command line builds each section from here (`build_section`) and `scripts/tables.py` documents
them (docs/config.md); a class's `section`, which its messages name, is its name here. Nested mappings
(`latent.fit`, `decoder.prior`) follow their section. Classes are named by module and imported when asked for,
so that importing this module imports no component.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from latentdd.config import build, check_key

CONFIG_SECTIONS: dict[str, str] = {
    "dataset": "latentdd.config:DataConfig",
    "latent": "latentdd.vae.config:LatentSpaceConfig",
    "latent.fit": "latentdd.vae.fit:FitVAEConfig",
    "decoder": "latentdd.render.config:DecoderConfig",
    "decoder.prior": "latentdd.prior.fit:FitPriorConfig",
    "evaluator": "latentdd.evaluate.trainer:EvalConfig",
    "teacher": "latentdd.evaluate.teacher:TeacherConfig",
    "distill": "latentdd.config:DistillConfig",
    "baseline": "latentdd.config:BaselineConfig",
    "run": "latentdd.pipelines.run_config:RunConfig",
    "calibrate": "latentdd.pipelines.calibrate:CalibrateConfig",
}


def config_class(section: str) -> type:
    """The dataclass that reads `section`; DataError naming the registered sections for another."""
    check_key(section, CONFIG_SECTIONS, "the registered config sections (latentdd.configs)", what="section")
    module, name = CONFIG_SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


def build_section(section: str, *layers: Mapping[str, Any] | None) -> Any:
    """Section `section` built from layers of overrides, later layers winning (`latentdd.config.build`)."""
    return build(config_class(section), *layers, section=section)
