"""What the fits of the VAE (`latentdd.vae.fit`) and the prior (`latentdd.prior.fit`) share: the check of
their diffusers blocks and their learning-rate schedule."""

from __future__ import annotations

import math

from latentdd.errors import DataError


def check_blocks(block_out_channels, norm_num_groups: int, lr_schedule: str) -> tuple[int, ...]:
    """The checks FitVAEConfig and FitPriorConfig share -> block_out_channels as a tuple of ints."""
    blocks = tuple(int(c) for c in block_out_channels)
    if norm_num_groups < 1 or any(c < 1 for c in blocks):
        raise DataError(f"norm_num_groups ({norm_num_groups}) and block_out_channels {blocks} must be positive")
    if not blocks or any(c % norm_num_groups for c in blocks):
        raise DataError(f"block_out_channels {blocks} must be non-empty multiples of norm_num_groups {norm_num_groups}")
    if lr_schedule not in ("constant", "cosine"):
        raise DataError(f"lr_schedule must be 'constant' or 'cosine'; got {lr_schedule!r}")
    return blocks


def learning_rate(config, step: int, total: int) -> float:
    """The learning rate of step `step` (0-based) of `total` under `config` (a FitVAEConfig or FitPriorConfig: its
    lr and lr_schedule); a function of the step alone, so resuming keeps it."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / total)))
