"""BACON (paper and reference variants) and DM losses: hand-worked values, parity, gradients, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentdd.distill.bacon_loss import LOSSES, BaconTerms, bacon_loss, dm_loss
from latentdd.errors import DataError

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# Paper variant: values worked out by hand.


def test_paper_terms_by_hand_scalar_sigma():
    # z~ = (1, 3); z_1 = (0, 0), z_2 = (3, 2); sigma = 2; d = 2, k = 2, m = 1.
    # z~ - z_1 = (1, 3)  -> u = (0.5, 1.5): |u|^2 = 2.5,  L1 = 4, outside [0,1]: (0, 0.5) -> 0.25
    # z~ - z_2 = (-2, 1) -> u = (-1, 0.5):  |u|^2 = 1.25, L1 = 3, outside [0,1]: (-1, 0) -> 1
    terms = bacon_loss(t64([[1.0, 3.0]]), t64([[0.0, 0.0], [3.0, 2.0]]), sigma=2.0)
    log_norm = 2 * (LOG_SQRT_2PI + math.log(2.0))  # d * log(sqrt(2 pi) sigma)
    likelihood = log_norm + (2.5 / 2 + 1.25 / 2) / 2
    tv = (0.5 * 4 + 0.5 * 3) / 2
    clip = (0.25 + 1.0) / 2
    assert isinstance(terms, BaconTerms)
    assert terms.likelihood.item() == pytest.approx(likelihood, abs=1e-12)
    assert terms.tv.item() == pytest.approx(1.75, abs=1e-12) and tv == 1.75
    assert terms.clip.item() == pytest.approx(0.625, abs=1e-12) and clip == 0.625
    assert terms.total.item() == pytest.approx(likelihood + 0.8 * tv + 0.2 * clip, abs=1e-12)
    for term in (terms.total, terms.likelihood, terms.tv, terms.clip):
        assert term.ndim == 0


def test_paper_terms_by_hand_per_point_sigma_and_two_synthetic_rows():
    # sigma = (1, 2) for z_1 = (0, 0), z_2 = (3, 2); z~_1 = (1, 3), z~_2 = (3, 2); mean over 4 pairs.
    #   pair        diff     u          |u|^2/2   L1/2   clip part
    #   (1,3)-z_1   (1, 3)   (1, 3)     5         2      (0, 2)  -> 4
    #   (1,3)-z_2   (-2, 1)  (-1, .5)   0.625     1.5    (-1, 0) -> 1
    #   (3,2)-z_1   (3, 2)   (3, 2)     6.5       2.5    (2, 1)  -> 5
    #   (3,2)-z_2   (0, 0)   (0, 0)     0         0      0
    z_syn, z_real = t64([[1.0, 3.0], [3.0, 2.0]]), t64([[0.0, 0.0], [3.0, 2.0]])
    terms = bacon_loss(z_syn, z_real, sigma=t64([1.0, 2.0]), lam=0.5)
    log_norm = (2 * (LOG_SQRT_2PI + math.log(1.0)) + 2 * (LOG_SQRT_2PI + math.log(2.0))) / 2
    likelihood = log_norm + (5 + 0.625 + 6.5 + 0) / 4
    tv, clip = (2 + 1.5 + 2.5 + 0) / 4, (4 + 1 + 5 + 0) / 4
    assert terms.likelihood.item() == pytest.approx(likelihood, abs=1e-12)
    assert terms.tv.item() == pytest.approx(tv, abs=1e-12)
    assert terms.clip.item() == pytest.approx(clip, abs=1e-12)
    assert terms.total.item() == pytest.approx(likelihood + 0.5 * tv + 0.5 * clip, abs=1e-12)


def test_paper_default_sigma_is_each_real_rows_std_over_features():
    # z_1 = (0, 2): unbiased std over its 2 entries = sqrt(((-1)^2 + 1^2) / 1) = sqrt(2);
    # z_2 = (1, 5): sqrt((2^2 + 2^2) / 1) = 2 sqrt(2). z~ = z_1, so only z_2 adds a quadratic:
    # |z~ - z_2|^2 / (2 sigma_2^2) = (1 + 9) / (2 * 8) = 0.625.
    z_real = t64([[0.0, 2.0], [1.0, 5.0]])
    terms = bacon_loss(t64([[0.0, 2.0]]), z_real)
    s1, s2 = math.sqrt(2), 2 * math.sqrt(2)
    likelihood = (2 * (LOG_SQRT_2PI + math.log(s1)) + 2 * (LOG_SQRT_2PI + math.log(s2)) + 0.625) / 2
    assert terms.likelihood.item() == pytest.approx(likelihood, abs=1e-12)
    assert terms.total.item() == pytest.approx(bacon_loss(t64([[0.0, 2.0]]), z_real, sigma=t64([s1, s2])).total.item())


def test_paper_constant_real_row_is_clamped_not_divided_by_zero():
    terms = bacon_loss(t64([[1.0, 1.0]]), t64([[0.0, 0.0], [1.0, 3.0]]), eps=1e-3)
    # z_1 = (0, 0) is constant: std 0 -> sigma_1 = eps = 1e-3, quadratic (1 + 1) / (2 eps^2) = 1e6.
    # z_2 = (1, 3): sigma_2 = sqrt(2), diff (0, -2), quadratic 4 / (2 * 2) = 1.
    likelihood = (2 * (LOG_SQRT_2PI + math.log(1e-3)) + 1e6 + 2 * (LOG_SQRT_2PI + math.log(math.sqrt(2))) + 1) / 2
    assert math.isfinite(terms.total.item())
    assert terms.likelihood.item() == pytest.approx(likelihood, rel=1e-12)


def test_paper_loss_ignores_the_order_of_real_rows():
    gen = torch.Generator().manual_seed(0)
    z_syn, z_real = torch.randn(3, 5, generator=gen), torch.randn(6, 5, generator=gen)
    perm = torch.randperm(6, generator=gen)
    a, b = bacon_loss(z_syn, z_real), bacon_loss(z_syn, z_real[perm])
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------
# Reference variant: parity with an independent numpy computation of the reference code.


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _reference_numpy(zs: np.ndarray, zr: np.ndarray, lam: float = 0.8) -> dict[str, float]:
    """The public BACON code's loss, written out in float64 numpy, log(pdf) and all."""
    ms, mr = zs.mean(axis=0), zr.mean(axis=0)
    sigma = np.exp(zr.std(axis=0, ddof=1))  # torch.std is unbiased by default
    pdf = 1.0 / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * ((ms - mr) / sigma) ** 2)
    nll = -np.sum(np.log(pdf))
    tv = 0.5 * np.sum(np.abs(ms - mr))
    p, q = _softmax(ms), _softmax(mr)
    t = (p.mean() - q.mean()) / q.std(ddof=1)
    clip = (t - np.clip(t, 0.0, 1.0)) ** 2
    return {"likelihood": nll, "tv": tv, "clip": clip, "total": nll + lam * tv + (1 - lam) * clip}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_matches_numpy_reference_code(dtype):
    rng = np.random.default_rng(0)
    zs = rng.normal(size=(4, 6))
    zr = 0.7 * rng.normal(size=(9, 6)) + 0.3
    expected = _reference_numpy(zs, zr)
    zs_t, zr_t = torch.tensor(zs, dtype=dtype), torch.tensor(zr, dtype=dtype)
    terms = bacon_loss(zs_t, zr_t, variant="reference")
    for name, value in expected.items():
        assert getattr(terms, name).item() == pytest.approx(value, abs=1e-5), name
    assert expected["likelihood"] > 1.0  # a test on non-trivial numbers


def test_reference_clip_is_constant_with_exactly_zero_gradient():
    gen = torch.Generator().manual_seed(1)
    z_real = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    for shift in (0.0, 3.0, -7.0):
        z_syn = (torch.randn(2, 5, generator=gen, dtype=torch.float64) + shift).requires_grad_(True)
        terms = bacon_loss(z_syn, z_real, variant="reference")
        # mean(softmax) is 1/d for both vectors: the value is rounding noise, whatever z_syn is.
        assert abs(terms.clip.item()) < 1e-20
        assert not terms.clip.requires_grad
        (grad_total,) = torch.autograd.grad(terms.total, z_syn, retain_graph=True)
        (grad_no_clip,) = torch.autograd.grad(terms.likelihood + 0.8 * terms.tv, z_syn)
        torch.testing.assert_close(grad_total, grad_no_clip, rtol=0, atol=1e-15)
        assert grad_total.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# Gradients and numerics.


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_reaches_z_syn_and_not_z_real(name):
    gen = torch.Generator().manual_seed(2)
    z_syn = torch.randn(3, 5, generator=gen).requires_grad_(True)
    z_real = (torch.randn(8, 5, generator=gen) + 0.5).requires_grad_(True)
    loss = LOSSES[name](z_syn, z_real)
    assert loss.ndim == 0
    loss.backward()
    assert torch.isfinite(z_syn.grad).all() and z_syn.grad.abs().sum() > 0
    assert z_real.grad is None  # z_real is a constant: detached inside


def test_losses_registry_uses_the_documented_defaults():
    gen = torch.Generator().manual_seed(3)
    z_syn, z_real = torch.randn(2, 4, generator=gen), torch.randn(6, 4, generator=gen)
    assert LOSSES["bacon"](z_syn, z_real).item() == bacon_loss(z_syn, z_real).total.item()
    assert LOSSES["bacon-reference"](z_syn, z_real).item() == (
        bacon_loss(z_syn, z_real, variant="reference").total.item()
    )
    assert LOSSES["dm"](z_syn, z_real).item() == dm_loss(z_syn, z_real).item()


def test_paper_log_density_is_finite_where_the_pdf_underflows():
    # Distance 1e3 at sigma 1e-2: |u|^2 / 2 = (1e5)^2 / 2 = 5e9, and exp(-5e9) is 0.0 in any float.
    assert math.exp(-5e9) == 0.0
    z_syn = torch.tensor([[1000.0, 0.0]], requires_grad=True)
    terms = bacon_loss(z_syn, torch.zeros(1, 2), sigma=1e-2)
    expected = 2 * (LOG_SQRT_2PI + math.log(1e-2)) + 5e9
    assert math.isfinite(terms.total.item())
    assert terms.likelihood.item() == pytest.approx(expected, rel=1e-6)
    terms.total.backward()
    assert torch.isfinite(z_syn.grad).all()


def test_reference_log_density_is_finite_where_log_pdf_is_not():
    z_real = torch.tensor([[0.0, 0.0], [0.01, 0.01]])
    z_syn = torch.tensor([[1000.0, 1000.0]], requires_grad=True)
    # The reference's own route, log(pdf), gives +inf here:
    ms, mr = z_syn.detach().mean(0), z_real.mean(0)
    sigma = torch.exp(z_real.std(0))
    naive = -torch.log(torch.exp(-0.5 * ((ms - mr) / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)).sum()
    assert torch.isinf(naive)
    terms = bacon_loss(z_syn, z_real, variant="reference")
    assert math.isfinite(terms.total.item()) and terms.likelihood.item() > 9e5
    terms.total.backward()
    assert torch.isfinite(z_syn.grad).all() and z_syn.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# DM.


def test_dm_loss_known_value_and_gradient():
    # mean(z_syn) = (2, 3), mean(z_real) = (1, 1): |(1, 2)|^2 = 5.
    z_syn = t64([[1.0, 2.0], [3.0, 4.0]]).requires_grad_(True)
    loss = dm_loss(z_syn, t64([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]]))
    assert loss.item() == pytest.approx(5.0, abs=1e-12)
    loss.backward()
    # d/dz_syn_j = 2 (mean_s - mean_r) / m = 2 * (1, 2) / 2 for each row j.
    torch.testing.assert_close(z_syn.grad, t64([[1.0, 2.0], [1.0, 2.0]]))


def test_weighted_dm_loss_known_value_and_gradient():
    # weights (3, 1): weighted mean (1.5, 2.5), real mean (1, 1): |(0.5, 1.5)|^2 = 2.5.
    z_syn = t64([[1.0, 2.0], [3.0, 4.0]]).requires_grad_(True)
    loss = dm_loss(z_syn, t64([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]]), t64([3.0, 1.0]))
    assert loss.item() == pytest.approx(2.5, abs=1e-12)
    loss.backward()
    # d/dz_syn_j = 2 (mean_s - mean_r) w_j / sum(w).
    torch.testing.assert_close(z_syn.grad, t64([[0.75, 2.25], [0.25, 0.75]]))
    # Equal weights are the plain mean.
    assert dm_loss(z_syn, t64([[1.0, 1.0]]), t64([0.2, 0.2])).item() == pytest.approx(5.0, abs=1e-12)
    with pytest.raises(DataError, match="weights must be"):
        dm_loss(z_syn, t64([[1.0, 1.0]]), t64([1.0, -1.0]))


def test_dm_loss_is_zero_when_means_match():
    assert dm_loss(t64([[1.0, 1.0], [3.0, 3.0]]), t64([[2.0, 2.0]])).item() == 0.0
    assert dm_loss(t64([[1.0, 5.0], [3.0, -1.0]]), t64([[0.0, 2.0], [4.0, 2.0], [2.0, 2.0]])).item() == 0.0


# ---------------------------------------------------------------------------------------
# Bad input.

_GOOD = torch.zeros(2, 4)

BAD_PAIRS = [
    (torch.zeros(4), _GOOD, "z_syn must be 2-D"),
    (_GOOD, torch.zeros(2, 2, 2), "z_real must be 2-D"),
    (_GOOD, torch.zeros(3, 5), "same number of features"),
    (torch.zeros(0, 4), _GOOD, "z_syn is empty"),
    (_GOOD, torch.zeros(0, 4), "z_real is empty"),
    (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), _GOOD, "z_syn contains NaN"),
    (_GOOD, torch.tensor([[0.0, 0.0, float("inf"), 0.0], [0.0] * 4]), "z_real contains NaN or inf"),
    (torch.zeros(2, 4, dtype=torch.int64), _GOOD, "z_syn must be a floating-point"),
    (_GOOD, np.zeros((2, 4)), "z_real must be a torch.Tensor"),
]


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(("z_syn", "z_real", "message"), BAD_PAIRS)
def test_bad_input_raises_data_error(name, z_syn, z_real, message):
    with pytest.raises(DataError, match=message):
        LOSSES[name](z_syn, z_real)


@pytest.mark.parametrize(
    ("kwargs", "z_real", "message"),
    [
        ({"variant": "idm"}, torch.randn(3, 4), "unknown BACON variant 'idm'"),
        ({"lam": 1.5}, torch.randn(3, 4), r"lam .* \[0, 1\]"),
        ({"eps": 0.0}, torch.randn(3, 4), "eps must be > 0"),
        ({"sigma": torch.ones(2)}, torch.randn(3, 4), r"sigma must be .* shape \(k,\) = \(3,\)"),
        ({"sigma": -1.0}, torch.randn(3, 4), "sigma must be finite and > 0"),
        ({"sigma": torch.tensor([1.0, float("nan"), 1.0])}, torch.randn(3, 4), "sigma must be finite"),
        ({}, torch.randn(3, 1), "default sigma .* needs d >= 2"),
        ({"variant": "reference"}, torch.randn(1, 4), "needs k >= 2 and d >= 2"),
    ],
)
def test_bacon_bad_parameters_raise_data_error(kwargs, z_real, message):
    z_syn = torch.randn(2, z_real.shape[1])
    with pytest.raises(DataError, match=message):
        bacon_loss(z_syn, z_real, **kwargs)
