"""What each command reads of a config (`SECTIONS`), and each section built from the YAML file and the flags:
dataclass defaults < --config file < flags (`latentdd.cli.settings`)."""

from __future__ import annotations

import argparse

from latentdd.cli.settings import flags
from latentdd.config import DataConfig, check_key, check_mapping
from latentdd.configs import build_section
from latentdd.errors import DataError

# `latentdd compare`'s run: settings where they differ from RunConfig's.
COMPARE_DEFAULTS = {"methods": ["dm", "kmeans", "bacon", "idm", "random", "herding"], "ipcs": [1, 10]}

# The top-level sections of a --config file each command reads; any other is an error.
_RUN_SECTIONS = ("dataset", "latent", "decoder", "evaluator", "teacher", "run", "out")
SECTIONS = {
    "datasets": (),
    "baseline": ("dataset", "baseline"),
    "evaluate": ("dataset", "evaluator", "teacher"),
    "fit-teacher": ("dataset", "teacher"),
    "fit-vae": ("dataset", "latent"),
    "fit-prior": ("dataset", "latent", "decoder"),
    "encode": ("dataset", "latent"),
    "distill": ("dataset", "latent", "decoder", "distill", "teacher"),
    "render": ("dataset", "latent", "decoder"),
    "run": _RUN_SECTIONS,
    "compare": _RUN_SECTIONS,
    "calibrate": ("dataset", "calibrate"),
}


def settings_of(args: argparse.Namespace, section: str) -> dict:
    """The keys of `section` that flags set (`--epochs`, `--evaluator.epochs`): {key: value}."""
    return flags(args, section, SECTIONS)


def data_config(args, raw: dict) -> DataConfig:
    return build_section("dataset", raw.get("dataset"), settings_of(args, "dataset"))


def eval_config(args, raw: dict):
    """EvalConfig from defaults < protocol preset < YAML `evaluator:` < flags; and the protocol name."""
    from latentdd.evaluate.trainer import PROTOCOLS

    settings = dict(check_mapping(raw.get("evaluator"), "evaluator")) | settings_of(args, "evaluator")
    protocol = settings.pop("protocol", None) or "dsa"
    check_key(protocol, PROTOCOLS, "evaluator.protocol (--protocol)", what="protocol")
    return build_section("evaluator", PROTOCOLS[protocol] | {"protocol": protocol}, settings), protocol


def teacher_config(args, raw: dict, more: dict | None = None):
    return build_section("teacher", raw.get("teacher"), settings_of(args, "teacher"), more)


def decoder_config(args, raw: dict):
    section = dict(check_mapping(raw.get("decoder"), "decoder"))
    flags = settings_of(args, "decoder")
    # prior: a pretrained model's hub id or folder (dit, sd-img2img; --prior), or the fitted prior's settings
    # (diffusion; a mapping, --decoder.prior.KEY / --prior-set).
    yaml_prior = section.pop("prior", None)
    prior = flags.pop("prior", None) or yaml_prior
    overrides = settings_of(args, "decoder.prior")
    if isinstance(prior, str):
        if overrides:
            raise DataError(f"--decoder.prior.KEY (--prior-set) sets the fitted prior of --decoder diffusion; the "
                            f"prior {prior!r} is a pretrained model (drop --prior-set, or the --prior / decoder.prior)")
    else:
        prior = dict(check_mapping(prior, "decoder.prior")) | overrides
    return build_section("decoder", section, flags, {"prior": prior})


def latent_config(args, raw: dict):
    section = dict(check_mapping(raw.get("latent"), "latent"))
    fit = dict(check_mapping(section.pop("fit", None), "latent.fit")) | settings_of(args, "latent.fit")
    return build_section("latent", section, settings_of(args, "latent"), {"fit": fit})
