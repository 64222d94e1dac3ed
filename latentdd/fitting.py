"""What the fits of the VAE (`latentdd.vae.fit`) and the prior (`latentdd.prior.fit`) share: the check of
their diffusers blocks, their learning-rate schedule and their resumable training loop (`fit_loop`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from latentdd.checkpoint import check_count, load_optimizer, restore, save_state
from latentdd.errors import DataError, LatentDDError
from latentdd.progress import progress_bar

T = TypeVar("T")


def check_blocks(block_out_channels: tuple[int, ...], norm_num_groups: int, section: str) -> tuple[int, ...]:
    """The check across fields that FitVAEConfig and FitPriorConfig share (each field's own range is declared on
    it) -> block_out_channels as a tuple."""
    blocks = tuple(block_out_channels)
    if not blocks or any(c % norm_num_groups for c in blocks):
        raise DataError(f"{section}.block_out_channels {blocks} must be non-empty multiples of "
                        f"{section}.norm_num_groups {norm_num_groups}")
    return blocks


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate of step `step` (0-based) of `total` as a multiple of the configured lr: 1 ("constant"),
    or a cosine decay from 1 to 0.1 ("cosine"). A function of the step alone, so resuming keeps it."""
    if schedule == "constant":
        return 1.0
    return 0.1 + 0.45 * (1 + math.cos(math.pi * step / total))


def total_steps(config, n: int) -> int:
    """The optimiser steps of a fit of `n` examples: config.max_steps, or ceil(epochs * (n // batch_size))."""
    steps_per_epoch = n // min(config.batch_size, n)
    return math.ceil(config.epochs * steps_per_epoch) if config.epochs is not None else config.max_steps


def fit_loop(
    config,
    n: int,
    build: Callable[[], tuple[T, torch.optim.Optimizer]],
    loss: Callable[[T, torch.Tensor, torch.Generator], torch.Tensor],
    *,
    checkpoint: Path,
    state: Callable[[T], dict],
    load: Callable[[T, dict], None],
    diverged: Callable[[float, int], str],
    update: Callable[[T, torch.optim.Optimizer], None] | None = None,
    desc: str,
    progress: bool,
) -> tuple[T, list[list[float]]]:
    """Train what `build` makes for `total_steps(config, n)` steps, resuming from `checkpoint` when it holds a
    usable state; returns (the trained parts, the loss curve [[step, mean loss over the steps since the last
    point], ...]).

    config: a FitVAEConfig or FitPriorConfig -- max_steps / epochs, batch_size, lr and lr_schedule (the
        optimizer's lr follows config.lr * lr_factor, by a LambdaLR), seed, checkpoint_every, log_every.
    n: the number of training examples; each epoch visits them in an order drawn from (seed, epoch),
        min(batch_size, n) at a time (a last partial batch is dropped).
    build(): fresh parts (modules in training mode) and their optimizer, built with lr=config.lr.
    loss(parts, index, draws): the scalar loss of the examples `index` (B,); its random draws come from
        `draws`, a generator seeded by (seed, step). Every draw is thus a function of (seed, epoch) or
        (seed, step), and a resumed fit ends with the same weights as an uninterrupted one.
    update(parts, optimizer): the update after the backward pass (None: optimizer.step()).
    state(parts), load(parts, state): what a checkpoint holds of the parts besides the optimizer, step and
        curve, and putting it back (StateRejected when it does not fit: the fit starts afresh, with a warning).
    diverged(loss, step): the message of the LatentDDError raised when a step's loss is not finite.
    """
    batch_size = min(config.batch_size, n)
    steps_per_epoch = n // batch_size
    total = total_steps(config, n)

    def resume(saved: dict):
        parts, optimizer = build()
        load(parts, saved)
        load_optimizer(optimizer, saved["optimizer"])
        step = check_count(saved["step"], total - 1, "step")  # none is written at the end
        # The losses since the last logged point travel with the checkpoint: a resumed fit logs the same curve.
        return parts, optimizer, step, list(saved["curve"]), [float(v) for v in saved["window"]]

    parts, optimizer, step, curve, window = (restore(checkpoint, resume, otherwise="the fit starts afresh")
                                             or (*build(), 0, [], []))
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr  # what the schedule scales (a checkpoint's optimizer holds the last step's lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config.lr_schedule, s, total), last_epoch=step - 1)

    bar = progress_bar(total=total, initial=step, disable=not progress, desc=desc, unit="step")
    order = None
    while step < total:
        epoch, i = divmod(step, steps_per_epoch)
        if order is None or i == 0:
            # Each epoch's order depends only on (seed, epoch), so a resumed fit sees the same batches.
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
        draws = torch.Generator().manual_seed(config.seed * 1_000_003 + 7919 * step + 1)
        value = loss(parts, order[i * batch_size : (i + 1) * batch_size], draws)
        if not torch.isfinite(value):
            raise LatentDDError(diverged(value.item(), step))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if update is None:
            optimizer.step()
        else:
            update(parts, optimizer)
        schedule.step()
        step += 1
        window.append(value.item())
        if step % config.log_every == 0 or step == total:
            curve.append([step, float(np.mean(window))])
            bar.set_postfix(loss=f"{curve[-1][1]:.5f}")
            window = []
        bar.update(1)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
            save_state(checkpoint, {**state(parts), "optimizer": optimizer.state_dict(), "step": step,
                                    "curve": curve, "window": window})
    bar.close()
    return parts, curve
