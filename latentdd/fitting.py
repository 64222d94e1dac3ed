"""What the fits of the VAE (`latentdd.vae.fit`) and the prior (`latentdd.prior.fit`) share: the check of
their diffusers blocks and their learning-rate schedule."""

from __future__ import annotations

import math

from latentdd.errors import DataError


def check_blocks(block_out_channels: tuple[int, ...], norm_num_groups: int, section: str) -> tuple[int, ...]:
    """The check across fields that FitVAEConfig and FitPriorConfig share (each field's own range is declared on
    it) -> block_out_channels as a tuple."""
    blocks = tuple(block_out_channels)
    if not blocks or any(c % norm_num_groups for c in blocks):
        raise DataError(f"{section}.block_out_channels {blocks} must be non-empty multiples of "
                        f"{section}.norm_num_groups {norm_num_groups}")
    return blocks


def learning_rate(config, step: int, total: int) -> float:
    """The learning rate of step `step` (0-based) of `total` under `config` (a FitVAEConfig or FitPriorConfig: its
    lr and lr_schedule); a function of the step alone, so resuming keeps it."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / total)))
