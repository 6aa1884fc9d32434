"""The Monte Carlo stress engine and optimizer (keeper/optimizer/stress.py), pure NumPy, no chain.

The canonical case has a closed form: with no jumps, no oracle lag, no slippage and no discount, an account at
health 1 leaves bad debt iff S_τ/S_0 < lt, so lt* = exp(σ√τ·z_p − σ²τ/2). The optimizer must land within Monte
Carlo error of it. The other tests check each effect moves the answer the way it must, on common random numbers."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from keeper.optimizer import stress


def canonical(sigma: float, delay_s: float, paths: int, seed: int = 1, step_s: float = 60) -> stress.Simulation:
    return stress.Simulation(
        market=stress.Market(sigma=sigma),
        liquidation=stress.Liquidation(delay_s=delay_s, min_discount=0, max_discount=0),
        horizon_s=delay_s,
        step_s=step_s,
        paths=paths,
        seed=seed,
    )


def quantile_stderr(sigma: float, delay_s: float, p: float, paths: int) -> float:
    """Standard error of the MC p-quantile of S_τ: sqrt(p(1-p)/n) / density of S_τ at the quantile."""
    tau = delay_s / stress.SECONDS_PER_YEAR
    s = sigma * math.sqrt(tau)
    z = NormalDist().inv_cdf(p)
    q = math.exp(s * z - s * s / 2)
    density = NormalDist().pdf(z) / (s * q)
    return math.sqrt(p * (1 - p) / paths) / density


@pytest.mark.parametrize(
    ("sigma", "delay_s", "p"),
    # The one-day case simulates 1,440 steps of 400,000 paths (most of this file's time): `make test` runs it,
    # `make test-unit` leaves it out.
    [(0.8, 3600, 0.01), pytest.param(1.5, 86400, 0.001, marks=pytest.mark.slow), (0.5, 600, 0.05)],
)
def test_canonical_case_matches_theory(sigma: float, delay_s: float, p: float) -> None:
    paths = 400_000
    sim = canonical(sigma, delay_s, paths)
    out = stress.simulate(sim)
    choice = stress.optimize(out, stress.Targets(p_bad_debt=p, lt_max=0.999), sim.liquidation)
    theory = stress.theoretical_lt(sigma, delay_s, p)
    err = quantile_stderr(sigma, delay_s, p, paths)
    assert choice.binding == "probability"
    assert abs(choice.lt_by_probability - theory) < 4 * err, (choice.lt_by_probability, theory, err)
    assert choice.lt_ci[0] - 2 * err < theory < choice.lt_ci[1] + 2 * err
    # At the chosen lt the measured bad-debt probability is at most the target, and just above it exceeds it.
    assert choice.metrics.p_bad_debt <= p
    above = stress.evaluate(out, choice.lt_by_probability * (1 + 20 * err), choice.metrics.ltv, sim.liquidation)
    assert above.p_bad_debt > p


def test_canonical_bad_debt_iff_price_below_lt() -> None:
    """Per path: the recovery is exactly S_τ, so bad debt happens iff S_τ < lt."""
    sim = canonical(0.9, 3600, 20_000)
    out = stress.simulate(sim)
    # Independent reconstruction of S_τ from the same generator stream is not possible here, but the distribution of
    # log S_τ must be N(-σ²τ/2, σ²τ) (mean and variance within 5 standard errors).
    tau = 3600 / stress.SECONDS_PER_YEAR
    logs = np.log(out.recovery.astype(np.float64))
    mean, var = -0.81 * tau / 2, 0.81 * tau
    assert abs(logs.mean() - mean) < 5 * math.sqrt(var / logs.size)
    assert abs(logs.var() / var - 1) < 5 * math.sqrt(2 / logs.size)
    lt = 0.99
    m = stress.evaluate(out, lt, 0.9, sim.liquidation)
    assert m.p_bad_debt == pytest.approx(float(np.mean(out.recovery < lt)))


def test_results_do_not_depend_on_threads() -> None:
    sim = stress.Simulation(
        market=stress.Market(sigma=0.8, jump_intensity=50, jump_mean=-0.05, jump_vol=0.03),
        oracle=stress.Oracle(0.005, 3600),
        liquidation=stress.Liquidation(delay_s=120, slippage_depth_usd=2e7),
        horizon_s=6 * 3600,
        paths=3 * 4096 + 17,
        chunk=4096,
        seed=9,
    )
    one = stress.simulate(sim, threads=1)
    two = stress.simulate(sim, threads=2)
    for a, b in zip(
        (one.recovery, one.discount, one.liquidated, one.oracle_min),
        (two.recovery, two.discount, two.liquidated, two.oracle_min),
        strict=True,
    ):
        assert np.array_equal(a, b)
    assert one.paths == sim.paths
    other = stress.simulate(stress.Simulation(**{**sim.__dict__, "seed": 10}))
    assert not np.array_equal(one.recovery, other.recovery)


BASE = stress.Simulation(
    market=stress.Market(sigma=0.8),
    oracle=stress.Oracle(0.0, 0.0),
    liquidation=stress.Liquidation(delay_s=120),
    horizon_s=6 * 3600,
    paths=60_000,
    seed=3,
)
TARGETS = stress.Targets(p_bad_debt=0.01, shortfall=0.01, lt_max=0.999)


def lt_star(sim: stress.Simulation) -> float:
    return stress.optimize(stress.simulate(sim), TARGETS, sim.liquidation).lt_by_probability


def with_(sim: stress.Simulation, **parts: object) -> stress.Simulation:
    return stress.Simulation(**{**sim.__dict__, **parts})


def test_each_effect_lowers_the_safe_threshold() -> None:
    base = lt_star(BASE)
    jumps = lt_star(with_(BASE, market=stress.Market(sigma=0.8, jump_intensity=200, jump_mean=-0.06, jump_vol=0.02)))
    lag = lt_star(with_(BASE, oracle=stress.Oracle(0.02, 3600)))
    slow = lt_star(with_(BASE, liquidation=stress.Liquidation(delay_s=1800)))
    slip = lt_star(with_(BASE, liquidation=stress.Liquidation(delay_s=120, slippage_depth_usd=5e6)))
    vol = lt_star(with_(BASE, market=stress.Market(sigma=1.6)))
    for name, value in {"jumps": jumps, "oracle lag": lag, "delay": slow, "slippage": slip, "volatility": vol}.items():
        assert value < base - 0.002, (name, value, base)


def test_oracle_lag_is_a_push_oracle() -> None:
    """With a deviation threshold, O only moves when |S/O - 1| crosses it, so the running minimum of O never goes
    below what the market did, and with a 2 % threshold the oracle's minimum lags the market's by < 2 %."""
    sim = with_(BASE, oracle=stress.Oracle(0.02, 0.0), paths=20_000)
    out = stress.simulate(sim)
    free = stress.simulate(with_(BASE, paths=20_000))
    # Same random numbers, so the market paths are identical; the lagging oracle's minimum is never lower.
    assert np.all(out.oracle_min >= free.oracle_min * (1 - 1e-6))
    assert np.all(out.oracle_min <= free.oracle_min / (1 - 0.02) * (1 + 1e-6))
    assert np.any(out.oracle_min > free.oracle_min * 1.001)


def test_shortfall_bisection_matches_brute_force() -> None:
    out = stress.simulate(with_(BASE, market=stress.Market(sigma=2.0, jump_intensity=300, jump_mean=-0.1)))
    x = np.sort(out.recovery.astype(np.float64))
    budget = 0.002
    lt = stress._lt_by_shortfall(x, budget)
    es = lambda v: float(np.maximum(v - x, 0).mean()) / v  # noqa: E731
    assert es(lt) <= budget * (1 + 1e-9)
    assert es(lt * 1.001) > budget


def test_buffer_meets_the_liquidation_target() -> None:
    out = stress.simulate(with_(BASE, oracle=stress.Oracle(0.005, 3600)))
    for q in (0.01, 0.05, 0.2):
        c = stress.optimize(out, stress.Targets(p_liquidation=q, lt_max=0.9), BASE.liquidation)
        assert c.metrics.p_liquidation <= q
        tighter = stress.evaluate(out, c.metrics.lt, c.metrics.ltv * 1.002, BASE.liquidation)
        assert tighter.p_liquidation > q
        assert 0 < c.buffer < c.metrics.lt


def test_engine_cap_binds() -> None:
    out = stress.simulate(with_(BASE, paths=10_000))
    liq = stress.Liquidation(delay_s=120, max_discount=0.25)
    c = stress.optimize(out, stress.Targets(lt_max=0.999), liq)
    assert c.binding == "cap"
    assert c.metrics.lt * (1 + 0.25) < 1


def test_discount_is_the_engine_schedule() -> None:
    """Liquidations in the simulation pay min(max, min + 1 - health), never below min nor above max."""
    sim = with_(BASE, market=stress.Market(sigma=1.2, jump_intensity=100, jump_mean=-0.08, jump_vol=0.04))
    out = stress.simulate(sim)
    d = out.discount[out.liquidated]
    assert d.size > 100
    assert d.min() >= sim.liquidation.min_discount - 1e-7
    assert d.max() <= sim.liquidation.max_discount + 1e-7
    assert d.max() > sim.liquidation.min_discount + 0.01  # jumps push some liquidations deep below health 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"market": stress.Market(sigma=0.5), "step_s": 0}, "step"),
        ({"market": stress.Market(sigma=0.5), "paths": 0}, "paths"),
        ({"market": stress.Market(sigma=0.5), "horizon_s": 10}, "horizon"),
    ],
)
def test_bad_simulation_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(stress.StressError, match=message):
        stress.Simulation(**kwargs)  # type: ignore[arg-type]


def test_bad_model_input() -> None:
    with pytest.raises(stress.StressError, match="sigma"):
        stress.Market(sigma=-1)
    with pytest.raises(stress.StressError, match="deviation"):
        stress.Oracle(deviation=1.5)
    with pytest.raises(stress.StressError, match="discount"):
        stress.Liquidation(min_discount=0.2, max_discount=0.1)
    with pytest.raises(stress.StressError, match="probability"):
        stress.Targets(p_bad_debt=0)
