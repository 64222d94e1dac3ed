"""The pure losses of BACON and DM/IDM on embeddings of one class.

Every function takes z_syn (m, d), the embeddings of a class's m synthetic points (the
variables being optimised), and z_real (k, d), embeddings of k real points of the same
class (a constant: detached here), and returns 0-d tensors differentiable w.r.t. z_syn.

BACON, paper vs. reference code (docs PROTOCOLS.md section 3):

- paper ("paper"): every synthetic z~ is scored against every real z_i with
  p(z~ | z_i) = N(z_i, sigma_i^2 I): a Gaussian negative log-likelihood, an L1 (total
  variation) term and a CLIP term that penalises standardised differences outside
  [0, 1]; each averaged over the k reals and then over the m synthetic points.
- reference ("reference"): what the public BACON code (IDM with one loss line changed)
  optimises: the same three names on batch MEANS only, with a per-dimension scale
  sigma_d = exp(std_d(z_real)), computed there as log(pdf), which underflows to -inf once
  a distance is large; here it is the log-density written out. Its CLIP term is applied
  to softmax vectors and averaged over a 1-D vector, so it is (up to rounding) zero and
  has no gradient: reproduced faithfully as a value computed from detached inputs.
- sign: PROTOCOLS writes L_LH with a leading minus; that is the log-likelihood, which
  must be maximised. Both variants here return the NEGATIVE log-likelihood, to minimise.

DM/IDM (`dm_loss`) matches means: ||mean(z_syn) - mean(z_real)||^2.

`LOSSES` maps a name to a callable (z_syn, z_real) -> 0-d total loss with default
parameters, so a distiller can swap the methods behind one name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentdd.errors import DataError

VARIANTS = ("paper", "reference")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)  # log(sqrt(2 pi)): the Gaussian's normaliser, per dimension


@dataclass(frozen=True)
class BaconTerms:
    """The BACON loss and its parts, each a 0-d tensor: total = likelihood + lam*tv + (1-lam)*clip."""

    total: torch.Tensor
    likelihood: torch.Tensor  # the negative log-likelihood (to minimise), in nats
    tv: torch.Tensor
    clip: torch.Tensor


def bacon_loss(
    z_syn: torch.Tensor,
    z_real: torch.Tensor,
    *,
    sigma: float | torch.Tensor | None = None,
    lam: float = 0.8,
    variant: str = "paper",
    eps: float = 1e-6,
) -> BaconTerms:
    """BACON's loss for one class: z_syn (m, d), z_real (k, d) -> BaconTerms of 0-d tensors.

    variant "paper" (per synthetic row z~, averaged over the k reals z_i, then over the m
    synthetic rows):

        L_LH   = (1/k) sum_i [ d * log(sqrt(2 pi) sigma_i) + ||z~ - z_i||^2 / (2 sigma_i^2) ]
        L_TV   = (1/k) sum_i 1/2 ||z~ - z_i||_1
        L_CLIP = (1/k) sum_i || u_i - clip(u_i, 0, 1) ||^2,   u_i = (z~ - z_i) / sigma_i

    L_LH is the exact negative log-density of N(z_i, sigma_i^2 I) in d dimensions. The
    paper (and PROTOCOLS) writes the normaliser as 1/2 log(2 pi sigma_i), which is not the
    Gaussian's: per dimension it is 1/2 log(2 pi sigma_i^2) = log(sqrt(2 pi) sigma_i). The
    two differ by a term that depends only on sigma (a constant w.r.t. z_syn), so the
    gradient is the same; the reported value is the true NLL in nats, comparable with the
    reference variant, which uses the same log(sqrt(2 pi) sigma) per dimension.

    sigma (paper only): None (default) estimates a per-real-point scale, sigma_i = the
    standard deviation of z_i's d entries (torch.std, unbiased; needs d >= 2), which
    makes the quadratic and CLIP terms invariant to rescaling the embeddings. A positive
    float (one scale for all) or a positive (k,) tensor overrides it. sigma is a constant
    (detached) and clamped below at eps, so a constant real row cannot divide by zero.

    variant "reference" (the public code, on means; sigma is ignored; needs k >= 2, d >= 2):

        mu_s = mean_j z_syn_j, mu_r = mean_i z_i, s_d = std_d(z_real) (over the k rows,
        unbiased, as torch.std), sigma_d = exp(s_d)
        L_LH   = sum_d [ log(sqrt(2 pi) sigma_d) + 1/2 ((mu_s_d - mu_r_d) / sigma_d)^2 ]
        L_TV   = 1/2 ||mu_s - mu_r||_1
        L_CLIP = (t - clip(t, 0, 1))^2,  t = (mean(p) - mean(q)) / std(q),
                 p = softmax(mu_s), q = softmax(mu_r)   (means and std over the d entries)

    mean(p) = mean(q) = 1/d, so the reference's CLIP is zero up to rounding and its
    gradient is zero; here it is computed from detached inputs, so its gradient is
    exactly zero and it contributes nothing to the update, as in the reference. std(q) is
    clamped below at eps (the reference divides 0 by 0 when mu_r is constant).

    total = L_LH + lam * L_TV + (1 - lam) * L_CLIP, 0 <= lam <= 1 (0.8 in BACON).
    Raises DataError on bad shapes, empty or non-finite inputs, or a bad sigma.
    Memory (paper): O(m * k * d) for the pairwise differences.
    """
    z_syn, z_real = _check_pair(z_syn, z_real)
    if variant not in VARIANTS:
        raise DataError(f"unknown BACON variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    if not 0.0 <= lam <= 1.0:
        raise DataError(f"lam weights TV against CLIP and must lie in [0, 1]; got {lam}")
    if not eps > 0.0:
        raise DataError(f"eps must be > 0; got {eps}")

    if variant == "paper":
        sig = _paper_sigma(sigma, z_real, eps)
        likelihood, tv, clip = _paper_terms(z_syn, z_real, sig)
    else:
        likelihood, tv, clip = _reference_terms(z_syn, z_real, eps)
    total = likelihood + lam * tv + (1.0 - lam) * clip
    return BaconTerms(total=total, likelihood=likelihood, tv=tv, clip=clip)


def dm_loss(z_syn: torch.Tensor, z_real: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """DM/IDM mean matching: z_syn (m, d), z_real (k, d) -> 0-d ||mean(z_syn) - mean(z_real)||^2.

    The squared Euclidean norm (a sum over the d features, not a mean), as in DM's code.
    weights (m,) >= 0 make the synthetic mean a weighted one, sum_i w_i z_i / sum_i w_i: the
    mean of the distribution the weighted set stands for (DDOQ's Voronoi masses).
    """
    z_syn, z_real = _check_pair(z_syn, z_real)
    if weights is None:
        mean_syn = z_syn.mean(dim=0)
    else:
        if weights.shape != z_syn.shape[:1] or not (weights >= 0).all() or not weights.sum() > 0:
            raise DataError(f"dm_loss weights must be ({len(z_syn)},), non-negative with a positive sum; got "
                            f"{tuple(weights.shape)}")
        w = weights.to(z_syn.dtype)
        mean_syn = (w[:, None] * z_syn).sum(dim=0) / w.sum()
    return (mean_syn - z_real.mean(dim=0)).square().sum()


def bacon_paper_total(z_syn: torch.Tensor, z_real: torch.Tensor) -> torch.Tensor:
    """`bacon_loss(..., variant="paper")` with default parameters -> its 0-d total."""
    return bacon_loss(z_syn, z_real, variant="paper").total


def bacon_reference_total(z_syn: torch.Tensor, z_real: torch.Tensor) -> torch.Tensor:
    """`bacon_loss(..., variant="reference")` with default parameters -> its 0-d total."""
    return bacon_loss(z_syn, z_real, variant="reference").total


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "bacon": bacon_paper_total,
    "bacon-reference": bacon_reference_total,
    "dm": dm_loss,
}


# ---------------------------------------------------------------------------------------
# Terms and checks.


def _paper_terms(
    z_syn: torch.Tensor, z_real: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z_syn (m, d), z_real (k, d), sigma (k,) -> (L_LH, L_TV, L_CLIP), each 0-d."""
    d = z_syn.shape[1]
    diff = z_syn[:, None, :] - z_real[None, :, :]  # (m, k, d)
    u = diff / sigma[None, :, None]  # (m, k, d): standardised differences
    # The log-density written out: log(pdf) would underflow to -inf for distant points.
    log_norm = d * (_HALF_LOG_2PI + torch.log(sigma))  # (k,)
    likelihood = (log_norm[None, :] + 0.5 * u.square().sum(dim=-1)).mean()  # mean over (m, k)
    tv = 0.5 * diff.abs().sum(dim=-1).mean()
    clip = (u - u.clamp(0.0, 1.0)).square().sum(dim=-1).mean()
    return likelihood, tv, clip


def _reference_terms(
    z_syn: torch.Tensor, z_real: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z_syn (m, d), z_real (k, d) -> the reference code's (NLL, TV, CLIP), each 0-d."""
    k, d = z_real.shape
    if k < 2 or d < 2:
        raise DataError(
            f"the reference variant takes standard deviations over the k real rows and over the d "
            f"features, so it needs k >= 2 and d >= 2; got z_real of shape {tuple(z_real.shape)}"
        )
    mu_s, mu_r = z_syn.mean(dim=0), z_real.mean(dim=0)  # (d,), (d,)
    log_sigma = z_real.std(dim=0)  # (d,): the reference's sigma_d = exp(std_d), so log sigma_d = std_d
    # ((mu_s - mu_r) / exp(s)) as a product with exp(-s) <= 1: no overflow for large std.
    z = (mu_s - mu_r) * torch.exp(-log_sigma)  # (d,)
    likelihood = (_HALF_LOG_2PI + log_sigma + 0.5 * z.square()).sum()
    tv = 0.5 * (mu_s - mu_r).abs().sum()

    # The reference's CLIP, on detached inputs: mean(softmax) is 1/d for both vectors, so the
    # value is rounding noise and the reference's gradient through it is zero; detaching
    # makes that exact.
    p = torch.softmax(mu_s.detach(), dim=0)
    q = torch.softmax(mu_r, dim=0)
    t = (p.mean() - q.mean()) / q.std().clamp_min(eps)  # 0-d
    clip = (t - t.clamp(0.0, 1.0)).square()
    return likelihood, tv, clip


def _paper_sigma(sigma: float | torch.Tensor | None, z_real: torch.Tensor, eps: float) -> torch.Tensor:
    """The per-real-point scale: sigma as given (float, 0-d or (k,)) or estimated -> (k,), >= eps."""
    k, d = z_real.shape
    if sigma is None:
        if d < 2:
            raise DataError(
                "the default sigma is the std of each real row's d entries, which needs d >= 2; "
                f"got d={d}: pass sigma explicitly"
            )
        return z_real.std(dim=1).clamp_min(eps)  # (k,)
    if isinstance(sigma, torch.Tensor):
        sig = sigma.detach().to(dtype=z_real.dtype, device=z_real.device)
    else:  # straight to z_real's dtype: a float64 run must not see sigma rounded to float32
        sig = torch.as_tensor(sigma, dtype=z_real.dtype, device=z_real.device)
    if sig.ndim == 0:
        sig = sig.expand(k)
    if sig.shape != (k,):
        raise DataError(f"sigma must be a float or a tensor of shape (k,) = ({k},); got shape {tuple(sig.shape)}")
    if not bool(torch.isfinite(sig).all()) or not bool((sig > 0).all()):
        raise DataError("sigma must be finite and > 0 everywhere")
    return sig.clamp_min(eps)


def _check_pair(z_syn: torch.Tensor, z_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check z_syn (m, d) and z_real (k, d) -> (z_syn, z_real detached, in z_syn's dtype)."""
    for name, z in (("z_syn", z_syn), ("z_real", z_real)):
        if not isinstance(z, torch.Tensor):
            raise DataError(f"{name} must be a torch.Tensor of shape (n, d); got {type(z).__name__}")
        if z.ndim != 2:
            raise DataError(f"{name} must be 2-D (n, d) flattened embeddings; got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise DataError(f"{name} must be a floating-point tensor; got {z.dtype}")
        if z.numel() == 0:
            raise DataError(f"{name} is empty (shape {tuple(z.shape)}); need at least one row and one feature")
    if z_syn.shape[1] != z_real.shape[1]:
        raise DataError(
            f"z_syn and z_real must have the same number of features d; "
            f"got z_syn {tuple(z_syn.shape)} and z_real {tuple(z_real.shape)}"
        )
    for name, z in (("z_syn", z_syn), ("z_real", z_real)):
        if not bool(torch.isfinite(z).all()):
            raise DataError(f"{name} contains NaN or inf values")
    return z_syn, z_real.detach().to(dtype=z_syn.dtype)
