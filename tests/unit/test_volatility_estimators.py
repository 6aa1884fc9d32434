"""Volatility estimators (optimizer.volatility) on synthetic histories with a known σ. Pure: no chain (reading a real
feed's rounds on Anvil and `keeper optimize --asset` are tests/test_volatility.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from histories import synthetic

from keeper.optimizer import volatility as vol
from keeper.optimizer.stress import SECONDS_PER_YEAR


@pytest.mark.parametrize("sigma", [0.3, 0.8, 2.0])
def test_realised_and_ewma_recover_sigma_with_irregular_times(sigma: float) -> None:
    est = vol.estimate(synthetic(sigma, 4000, seed=int(sigma * 10)))
    # Realised variance over n returns has relative standard error sqrt(2/n) ≈ 2.2 %; allow 4 of them on σ.
    assert est.realized == pytest.approx(sigma, rel=0.05)
    assert est.sigma == pytest.approx(sigma, rel=0.05)
    # The EWMA forgets fast (λ = 0.94 per day over ~80 days), so it is noisier.
    assert est.ewma == pytest.approx(sigma, rel=0.35)
    assert est.jump_intensity < 5  # a pure diffusion has (almost) no 4σ moves


def test_push_oracle_sampling_is_annualised_by_time() -> None:
    """A push oracle samples at stopping times (1 % deviation or a 1 h heartbeat), so quick rounds carry big moves.
    Weighting by time (Σr² / Σdt) recovers σ; averaging each round's own rate r²/dt does not (it over-weights the
    quick, large moves)."""
    rng = np.random.default_rng(4)
    sigma, step, n = 0.8, 10, 30 * 8640
    x = np.cumsum(rng.standard_normal(n) * sigma * np.sqrt(step / SECONDS_PER_YEAR))
    rounds, last, last_t = [vol.Round(1, 10**10, 0)], 0.0, 0
    for i in range(n):
        t = (i + 1) * step
        if abs(math.expm1(x[i] - last)) >= 0.01 or t - last_t >= 3600:
            rounds.append(vol.Round(len(rounds) + 1, int(1e10 * math.exp(x[i])), t))
            last, last_t = x[i], t
    r = vol.returns(rounds)
    assert vol.realized_vol(r) == pytest.approx(sigma, rel=0.08)
    per_round = math.sqrt(float(np.mean(r.log_return**2 / r.dt_s)) * SECONDS_PER_YEAR)
    assert per_round > sigma * 1.15


def test_jumps_are_separated_from_the_diffusion() -> None:
    rounds = synthetic(0.6, 4000, seed=11, jumps=12, jump_size=-0.12)
    est = vol.estimate(rounds)
    years = est.span_s / SECONDS_PER_YEAR
    assert est.jump_intensity * years == pytest.approx(12, abs=2)
    assert est.jump_mean == pytest.approx(-0.12, abs=0.02)
    assert est.sigma == pytest.approx(0.6, rel=0.06)
    assert est.realized > est.sigma * 1.3  # the jumps inflate the plain realised figure


def test_window_and_bad_rounds() -> None:
    rounds = synthetic(0.8, 200, seed=2)
    last = rounds[-1].updated_at
    windowed = vol.returns(rounds, window_s=6 * 3600)
    assert windowed.span_s <= 6 * 3600
    assert windowed.span_s > 3 * 3600
    broken = [*rounds[:50], vol.Round(999, 0, last + 10), vol.Round(1000, -5, last + 20)]
    assert vol.returns(broken).log_return.size == 49  # non-positive answers are skipped
    with pytest.raises(vol.VolatilityError, match="at least 3 rounds"):
        vol.returns(rounds[:2])
    same_time = [vol.Round(1, 100, 10), vol.Round(2, 101, 10), vol.Round(3, 102, 20), vol.Round(4, 103, 30)]
    assert vol.returns(same_time).log_return.size == 2
