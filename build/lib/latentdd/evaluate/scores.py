"""Scores relative to random real and to full data, as DD-Ranking defines them.

Source: DD-Ranking (NUS-HPC-AI-Lab/DD-Ranking), README "Label-Robust Score (LRS)" and
ddranking/metrics/hard_label.py / soft_label.py; PROTOCOLS.md section 8:

    HLR = Acc(real, hard) - Acc(syn, hard)            hard label recovery (lower is better)
    IOR = Acc(syn, any) - Acc(random, any)            improvement over random, same protocol
    a   = w * IOR - (1 - w) * HLR,  w = 0.5           accuracies as fractions in [0, 1]
    LRS = (e^a - e^-1) / (e - e^-1) * 100 %           label-robust score

Differences from DD-Ranking, on purpose: DD-Ranking pairs one synthetic and one random
training per seed, computes the three scores per pair and averages them, and by default
picks each set's learning rate (and epoch) on the test split. Here the random-real side is
several independently drawn subsets (each subset's mean over its trainings, then the mean
over subsets), the accuracies are the final-epoch means latentdd measured under one fixed
protocol, and LRS is computed from the mean IOR and HLR. Inputs are test accuracies in
percent, as every latentdd report holds them; IOR and HLR come back in percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from latentdd.errors import DataError


def _mean(values: Sequence[float], what: str) -> float:
    values = [float(v) for v in values]
    if not values:
        raise DataError(f"{what}: no accuracies given")
    return sum(values) / len(values)


def ior(set_accuracies: Sequence[float], random_subsets: Sequence[Sequence[float]]) -> float:
    """Mean accuracy (%) of the set minus the mean over random-real subsets of each subset's mean accuracy,
    all under the same protocol: percentage points."""
    if not random_subsets:
        raise DataError("IOR needs at least one random-real subset evaluated under the same protocol")
    random = _mean([_mean(s, "a random-real subset") for s in random_subsets], "random real")
    return _mean(set_accuracies, "the set") - random


def hlr(full_data_accuracies: Sequence[float], set_hard_accuracies: Sequence[float]) -> float:
    """Mean accuracy (%) of training on the full real train split minus the set's, both with hard labels:
    percentage points (0: the set recovers full data)."""
    return _mean(full_data_accuracies, "full data") - _mean(set_hard_accuracies, "the set (hard labels)")


def lrs(ior_points: float, hlr_points: float, weight: float = 0.5) -> float:
    """DD-Ranking's label-robust score in percent from IOR and HLR in percentage points (w = `weight`)."""
    if not 0.0 <= weight <= 1.0:
        raise DataError(f"the LRS weight must lie in [0, 1]; got {weight!r}")
    a = weight * ior_points / 100.0 - (1.0 - weight) * hlr_points / 100.0
    return 100.0 * (math.exp(a) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


@dataclass
class RelativeScores:
    """IOR and HLR in percentage points, LRS in percent (None where an input was missing)."""

    ior: float | None
    hlr: float | None
    lrs: float | None
    weight: float = 0.5


def relative_scores(set_accuracies: Sequence[float], random_subsets: Sequence[Sequence[float]] | None = None, *,
                    set_hard_accuracies: Sequence[float] | None = None,
                    full_data_accuracies: Sequence[float] | None = None, weight: float = 0.5) -> RelativeScores:
    """The three scores from one protocol's accuracies of the set and of random real, plus the set's and full
    data's hard-label accuracies (HLR's; for a hard-label protocol pass the set's own as set_hard_accuracies)."""
    i = ior(set_accuracies, random_subsets) if random_subsets else None
    h = hlr(full_data_accuracies, set_hard_accuracies) if full_data_accuracies and set_hard_accuracies else None
    return RelativeScores(i, h, lrs(i, h, weight) if i is not None and h is not None else None, weight)
