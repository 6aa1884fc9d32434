"""Joint history, covariance, correlated Monte Carlo and reference books (keeper/optimizer/correlation.py and
basket.py), checked against references built independently here: hand-made alignments, NumPy's own multivariate
normal sampler, the closed form of a two-leg book, and the on-chain health mirror in keeper.core.risk."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from keeper.core import risk
from keeper.core.errors import KeeperError
from keeper.optimizer import basket as bk
from keeper.optimizer import correlation as corr
from keeper.optimizer.stress import SECONDS_PER_YEAR
from keeper.optimizer.volatility import Round

VOLS = np.array([0.6, 0.8, 0.3])
RHO = np.array([[1.0, 0.9, 0.3], [0.9, 1.0, 0.2], [0.3, 0.2, 1.0]])
COV = RHO * np.outer(VOLS, VOLS)
ASSETS = ("ETH", "stETH", "BTC")


def _rounds(times: list[int], prices: list[float], decimals: int = 8) -> list[Round]:
    return [
        Round(i + 1, round(p * 10**decimals), t, decimals) for i, (t, p) in enumerate(zip(times, prices, strict=True))
    ]


def _cov_se(cov: np.ndarray, n: float) -> np.ndarray:
    """Standard error of a covariance estimate from n normal draws: sqrt((Σii·Σjj + Σij²) / n)."""
    d = np.diag(cov)
    return np.sqrt((np.outer(d, d) + cov**2) / n)


def _minute_histories(n: int, seed: int, start: int = 1_700_000_000) -> dict[str, list[Round]]:
    """Three feeds updated every minute with GBM returns of covariance COV, drawn by NumPy's SVD-based sampler."""
    rng = np.random.default_rng(seed)
    dt = 60 / SECONDS_PER_YEAR
    r = rng.multivariate_normal(-0.5 * np.diag(COV) * dt, COV * dt, size=n)
    logp = np.vstack([np.zeros(3), np.cumsum(r, axis=0)])
    times = [start + 60 * i for i in range(n + 1)]
    base = [2000.0, 1990.0, 60000.0]
    return {a: _rounds(times, list(base[i] * np.exp(logp[:, i]))) for i, a in enumerate(ASSETS)}


# --------------------------------------------------------------------------------------------------- alignment


def test_alignment_on_uneven_timestamps_matches_a_hand_built_grid() -> None:
    a = _rounds([100, 130, 250, 400], [10, 11, 12, 13], decimals=2)
    b = _rounds([90, 160, 175, 175, 380], [1, 2, 2.5, 3, 4])  # two rounds at 175: the later round id wins
    b.append(Round(99, -5, 200, 8))  # a non-positive answer is dropped
    j = corr.align({"A": a, "B": b}, step_s=60)
    # Common window [max first, min last] = [100, 380]; grid every 60 s from 100.
    assert j.assets == ("A", "B")
    assert j.times.tolist() == [100, 160, 220, 280, 340]
    assert j.prices[:, 0].tolist() == pytest.approx([10, 11, 11, 12, 12])
    assert j.prices[:, 1].tolist() == pytest.approx([1, 2, 3, 3, 3])
    assert j.age_s[:, 0].tolist() == [0, 30, 90, 30, 90]
    assert j.age_s[:, 1].tolist() == [10, 0, 45, 105, 165]
    assert j.max_age_s == {"A": 90, "B": 165}
    assert j.fresh_share == {"A": pytest.approx(2 / 4), "B": pytest.approx(2 / 4)}  # new rounds in 2 of 4 steps
    expected = np.log(np.array([[11 / 10, 2 / 1], [1, 3 / 2], [12 / 11, 1], [1, 1]]))
    np.testing.assert_allclose(j.log_returns, expected)
    with pytest.raises(corr.StaleCarryError, match="B"):
        corr.align({"A": a, "B": b}, step_s=60, max_age_s=120)
    late = corr.align({"A": a, "B": b}, step_s=60, window_s=130)
    assert late.times.tolist() == [250, 310, 370]


# -------------------------------------------------------------------------------------------------- covariance


def test_sample_and_ewma_covariance_recover_a_known_covariance() -> None:
    n = 20 * 1440  # 20 days of minute returns
    j = corr.align(_minute_histories(n, seed=7), step_s=60)
    assert j.log_returns.shape == (n, 3)
    sample = corr.sample_covariance(j)
    assert np.all(np.abs(sample - COV) < 5 * _cov_se(COV, n))
    ewma = corr.ewma_covariance(j)
    # The EWMA weights fewer returns: about half of them effectively over 20 days at λ = 0.94 per day.
    assert np.all(np.abs(ewma - COV) < 5 * _cov_se(COV, n / 2))
    est = corr.estimate_joint(_minute_histories(n, seed=7), step_s=60)
    np.testing.assert_allclose(est.vols, VOLS, rtol=0.03)
    np.testing.assert_allclose(est.correlation, RHO, atol=0.03)
    assert not est.repair.changed
    assert est.returns == n


def test_ewma_follows_a_change_of_regime_and_the_sample_does_not() -> None:
    rng = np.random.default_rng(3)
    dt = 3600 / SECONDS_PER_YEAR
    calm = rng.standard_normal((24 * 60, 2)) * 0.3 * math.sqrt(dt)
    wild = rng.standard_normal((24 * 20, 2)) * 1.2 * math.sqrt(dt)  # the last 20 days at 4x the volatility
    logp = np.vstack([np.zeros(2), np.cumsum(np.vstack([calm, wild]), axis=0)])
    times = [1_700_000_000 + 3600 * i for i in range(logp.shape[0])]
    h = {a: _rounds(times, list(100 * np.exp(logp[:, i]))) for i, a in enumerate(("X", "Y"))}
    j = corr.align(h, step_s=3600)
    ewma_vol = np.sqrt(np.diag(corr.ewma_covariance(j)))
    sample_vol = np.sqrt(np.diag(corr.sample_covariance(j)))
    # Weight left on the calm regime after 20 days at 0.94 per day: 0.94^20; the sample weighs days equally.
    old = 0.94**20
    np.testing.assert_allclose(ewma_vol, math.sqrt(old * 0.3**2 + (1 - old) * 1.2**2), rtol=0.1)
    np.testing.assert_allclose(sample_vol, math.sqrt((60 * 0.3**2 + 20 * 1.2**2) / 80), rtol=0.1)


def test_psd_repair_clips_negative_eigenvalues_and_reports_the_change() -> None:
    bad = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]])  # not a correlation matrix
    assert np.linalg.eigvalsh(bad)[0] < 0
    fix = corr.repair_psd(bad, unit_diagonal=True)
    assert fix.changed
    assert fix.clipped == 1
    assert fix.min_eigenvalue == pytest.approx(np.linalg.eigvalsh(bad)[0])
    assert np.linalg.eigvalsh(fix.matrix)[0] > -1e-12
    np.testing.assert_allclose(np.diag(fix.matrix), 1.0)
    assert fix.size == pytest.approx(math.sqrt(float(np.sum((fix.matrix - bad) ** 2))))
    assert fix.relative == pytest.approx(fix.size / math.sqrt(float(np.sum(bad**2))))
    good = corr.repair_psd(COV)
    assert not good.changed
    assert good.size == 0.0
    np.testing.assert_array_equal(good.matrix, COV)


def test_lead_lag_terms_match_a_loop_by_hand() -> None:
    rng = np.random.default_rng(8)
    r = rng.standard_normal((30, 3)) * 0.01
    prices = 100 * np.exp(np.vstack([np.zeros(3), np.cumsum(r, axis=0)]))
    times = np.arange(31, dtype=np.float64) * 600
    j = corr.JointHistory(("A", "B", "C"), 600.0, times, prices, np.zeros_like(prices), np.ones(3))
    d = r - r.mean(axis=0)
    expected = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            expected[a, b] = sum(d[k, a] * d[k, b] for k in range(30))
            if a != b:
                expected[a, b] += sum(d[k - 1, a] * d[k, b] + d[k, a] * d[k - 1, b] for k in range(1, 30))
    expected *= SECONDS_PER_YEAR / (600 * 29)
    np.testing.assert_allclose(corr.sample_covariance(j, lead_lag=True), expected, rtol=1e-9)
    plain = np.cov(r, rowvar=False) * SECONDS_PER_YEAR / 600
    np.testing.assert_allclose(corr.sample_covariance(j), plain, rtol=1e-9)


# ------------------------------------------------------------------------------------------------- Monte Carlo


def test_simulated_log_returns_have_the_cholesky_input_covariance() -> None:
    paths, horizon = 200_000, 3600.0
    tau = horizon / SECONDS_PER_YEAR
    market = corr.JointMarket(ASSETS, COV)
    x = corr.simulate_log_returns(market, horizon, paths, seed=11)
    assert x.shape == (paths, 3)
    assert np.all(np.abs(np.cov(x, rowvar=False) - COV * tau) < 5 * _cov_se(COV * tau, paths))
    mean_se = VOLS * math.sqrt(tau / paths)
    assert np.all(np.abs(x.mean(axis=0) + 0.5 * VOLS**2 * tau) < 5 * mean_se)
    again = corr.simulate(market, horizon, paths, seed=np.random.default_rng(11))
    np.testing.assert_array_equal(again, np.exp(x))  # seeded: the same draws from an int or a Generator


def test_jumps_add_their_variance_and_keep_prices_martingales() -> None:
    paths, horizon = 200_000, 86400.0
    tau = horizon / SECONDS_PER_YEAR
    common = corr.CommonJump(intensity=365.0, mean=-0.05, vol=0.03, loadings={"ETH": 1.0, "stETH": 1.1, "BTC": 0.7})
    idio = {"stETH": corr.Jumps(intensity=180.0, mean=-0.02, vol=0.01)}
    market = corr.JointMarket(ASSETS, COV, common, idio)
    x = corr.simulate_log_returns(market, horizon, paths, seed=5)
    # Compound Poisson with rate λτ and N(m, v²) sizes: variance λτ(m² + v²); a common one scales by the loadings.
    load = np.array([1.0, 1.1, 0.7])
    expected = COV * tau + np.outer(load, load) * 365 * tau * (0.05**2 + 0.03**2)
    expected[1, 1] += 180 * tau * (0.02**2 + 0.01**2)
    sample = np.cov(x, rowvar=False)
    np.testing.assert_allclose(sample, expected, rtol=0.02)
    ratios = np.exp(x)
    se = ratios.std(axis=0) / math.sqrt(paths)
    assert np.all(np.abs(ratios.mean(axis=0) - 1) < 5 * se)


# ------------------------------------------------------------------------------------------------------- books


def test_two_leg_insolvency_probability_matches_the_closed_form() -> None:
    sa, sb, rho = 0.8, 0.6, 0.7
    market = corr.JointMarket(("ETH", "BTC"), np.array([[sa**2, rho * sa * sb], [rho * sa * sb, sb**2]]))
    horizon = 10 * 86400.0
    tau = horizon / SECONDS_PER_YEAR
    paths = 200_000
    ratios = corr.simulate(market, horizon, paths, seed=21)
    book = bk.Book("ETH vs BTC", {"ETH": 100.0}, {"BTC": 70.0})
    grid = [{"ETH": 0.8}, {"ETH": 0.9, "BTC": 1.1}]
    # Sized to health 1: min(0.8·L/S, 0.9·L/(1.1·S)) = 1, so L/S = 1/0.8 (the first scenario binds).
    assert bk.binding_scenario(book, grid) == 0
    k = 1 / 0.8
    mu = -0.5 * (sa**2 - sb**2) * tau  # ln(S_ETH/S_BTC) at the horizon is normal
    s = math.sqrt((sa**2 + sb**2 - 2 * rho * sa * sb) * tau)
    p = NormalDist().cdf((math.log(1 / k) - mu) / s)
    got = bk.insolvency_probability(book, grid, ("ETH", "BTC"), ratios)
    assert abs(got - p) < 5 * math.sqrt(p * (1 - p) / paths)
    assert 0.005 < p < 0.2  # a probability the test can resolve


def test_stable_debt_book_matches_the_single_asset_formula() -> None:
    sigma, lt = 0.9, 0.85
    market = corr.JointMarket(("ETH", "USDC"), np.diag([sigma**2, 0.0]))  # a riskless debt: singular covariance
    horizon = 7 * 86400.0
    tau = horizon / SECONDS_PER_YEAR
    paths = 200_000
    ratios = corr.simulate(market, horizon, paths, seed=2)
    book = bk.REFERENCE_BOOKS.by_name("single ETH/USDC")
    got = bk.insolvency_probability(book, bk.default_grid({"ETH": lt}), ("ETH", "USDC"), ratios)
    p = NormalDist().cdf((math.log(lt) + 0.5 * sigma**2 * tau) / (sigma * math.sqrt(tau)))  # docs/risk-model.md
    assert abs(got - p) < 5 * math.sqrt(p * (1 - p) / paths)


def test_default_grid_gives_the_additive_rule_of_the_health_mirror() -> None:
    rng = np.random.default_rng(9)
    names = ["WETH", "WBTC", "stETH", "LINK"]
    for _ in range(300):
        held = list(rng.choice(names, size=int(rng.integers(1, 5)), replace=False))
        assets = {
            a: risk.AssetRisk(
                decimals=int(rng.choice([6, 8, 18])),
                ltv=0,
                lt=int(rng.integers(50, 96)) * 10**16,
                max_discount=10**17,
            )
            for a in held
        }
        balances = {a: int(rng.integers(1, 10**6)) * 10 ** assets[a].decimals // 1000 for a in held}
        prices = {a: int(rng.integers(1, 10**5)) * 10**18 for a in held}
        debt = int(rng.integers(1, 10**12))  # USDC units, 6 decimals, index 1
        h = risk.account_health(balances, prices, assets, debt, 10**27, 10**18, 6)
        book = bk.Book(
            "random",
            {a: risk.value_down(balances[a], prices[a], assets[a].decimals) / 1e18 for a in held},
            {"USDC": h.debt_value / 1e18},
        )
        lt = {a: assets[a].lt / 1e18 for a in held}
        got = bk.grid_health(book, bk.default_grid(lt))
        assert got == pytest.approx(h.health / 1e18, rel=1e-9, abs=1e-15)
        assert got == pytest.approx(bk.additive_health(book, lt), rel=1e-12)


def test_reference_books_sized_to_health_one() -> None:
    grid = [{"ETH": 0.75, "stETH": 0.75, "BTC": 0.75}, {"stETH": 0.95}, {"ETH": 0.85, "BTC": 1.15}]
    names = {b.name for b in bk.REFERENCE_BOOKS.books}
    assert names == {"single ETH/USDC", "stETH/ETH loop", "ETH vs BTC debt", "three-leg basket"}
    for book in bk.REFERENCE_BOOKS.books:
        assert bk.grid_health(bk.at_health(book, grid), grid) == pytest.approx(1.0)
    loop = bk.REFERENCE_BOOKS.by_name("stETH/ETH loop")
    assert bk.binding_scenario(loop, grid) == 1  # the depeg binds, not the joint fall


# ------------------------------------------------------------------------------------------------------ errors


def test_errors_are_typed_keeper_errors() -> None:
    h = _minute_histories(50, seed=1)
    disjoint = {"A": _rounds([0, 60, 120], [1, 2, 3]), "B": _rounds([500, 560, 620], [1, 2, 3])}
    with pytest.raises(corr.ShortHistoryError, match="common window"):
        corr.align(disjoint, step_s=60)
    with pytest.raises(corr.ShortHistoryError, match="need at least 10"):
        corr.estimate_joint({a: rs[:6] for a, rs in h.items()}, step_s=60)
    flat = dict(h, BTC=_rounds([r.updated_at for r in h["BTC"]], [60000.0] * len(h["BTC"])))
    with pytest.raises(corr.FlatAssetError, match="BTC"):
        corr.estimate_joint(flat, step_s=60)
    with pytest.raises(corr.CorrelationError, match="lambda"):
        corr.ewma_covariance(corr.align(h, step_s=60), lam=1.0)
    with pytest.raises(corr.CorrelationError, match="step"):
        corr.align(h, step_s=0)
    with pytest.raises(corr.CorrelationError, match="outside the market"):
        corr.JointMarket(("ETH",), np.eye(1), corr.CommonJump(1.0, loadings={"BTC": 1.0}))
    with pytest.raises(corr.CorrelationError, match="no simulated prices"):
        bk.insolvency_probability(bk.REFERENCE_BOOKS.books[0], [{}], ("ETH",), np.ones((3, 1)))
    with pytest.raises(corr.CorrelationError, match="at least one scenario"):
        bk.grid_health(bk.REFERENCE_BOOKS.books[0], [])
    with pytest.raises(corr.CorrelationError, match="finite and positive"):
        bk.at_health(bk.REFERENCE_BOOKS.books[0], [{"ETH": 0.0}])
    with pytest.raises(corr.CorrelationError, match="positive value"):
        bk.Book("no debt", {"ETH": 1.0}, {})
    for e in (corr.ShortHistoryError, corr.FlatAssetError, corr.StaleCarryError):
        assert issubclass(e, KeeperError)
    assert corr.FlatAssetError("x").reason == "sigma"


def test_asynchronous_feeds_need_a_longer_step_and_fresh_share_says_so() -> None:
    """Each feed reports about every 20 minutes on its own clock: on a 5-minute grid most returns are zero for one
    asset while the other moves, and the correlation collapses (the Epps effect); on a 4-hour grid it is back."""
    rng = np.random.default_rng(4)
    n, rho, sigma = 45 * 1440, 0.95, 0.7
    dt = 60 / SECONDS_PER_YEAR
    cov = sigma**2 * dt * np.array([[1, rho], [rho, 1]])
    logp = np.vstack([np.zeros(2), np.cumsum(rng.multivariate_normal([0, 0], cov, n), axis=0)])
    h = {}
    for i, a in enumerate(("X", "Y")):
        idx = np.unique(np.minimum(np.cumsum(rng.integers(1, 40, n // 10)), n))  # 1 to 39 minutes apart
        h[a] = _rounds([1_700_000_000 + 60 * int(k) for k in idx], list(100 * np.exp(logp[idx, i])))
    fine = corr.estimate_joint(h, step_s=300)
    coarse = corr.estimate_joint(h, step_s=4 * 3600)
    assert max(fine.fresh_share.values()) < 0.35
    assert min(coarse.fresh_share.values()) == 1.0
    assert fine.correlation[0, 1] < 0.5
    assert coarse.correlation[0, 1] > 0.85
    np.testing.assert_allclose(fine.vols, sigma, rtol=0.1)  # the variances survive the carries
    # One hour, about 5 times the carries' mean age (~12.5 min): still attenuated; the lead-lag terms recover it.
    hourly = corr.align(h, step_s=3600)
    assert 600 < hourly.mean_age_s["X"] < 900
    plain, _ = corr.correlation(corr.sample_covariance(hourly))
    adjusted, _ = corr.correlation(corr.sample_covariance(hourly, lead_lag=True))
    assert plain[0, 1] < 0.88
    assert abs(adjusted[0, 1] - rho) < 0.1  # noisier than a plain estimate (seeds 0-7: 0.003 to 0.08 off)
    assert abs(adjusted[0, 1] - rho) < abs(plain[0, 1] - rho)


# ------------------------------------------------------------------------------------------- grid calibration


def test_calibrated_one_scenario_grid_matches_the_closed_form_lt() -> None:
    """One collateral against a riskless debt, no jumps, a grid of one scenario: the calibrated multiplier is the
    `lt` of docs/risk-model.md's closed form, lt* = exp(σ·√τ·z_p − σ²τ/2)."""
    sigma, horizon, p, paths = 0.8, 3600.0, 0.01, 200_000
    tau = horizon / SECONDS_PER_YEAR
    market = corr.JointMarket(("ETH", "USDC"), np.diag([sigma**2, 0.0]))
    ratios = corr.simulate(market, horizon, paths, seed=13)
    book = bk.REFERENCE_BOOKS.by_name("single ETH/USDC")
    cal = bk.calibrate_scale([{"ETH": 0.5}], [book], ("ETH", "USDC"), ratios, p)
    lt = cal.grid[0]["ETH"]
    z = NormalDist().inv_cdf(p)
    expected = math.exp(sigma * math.sqrt(tau) * z - 0.5 * sigma**2 * tau)
    density = math.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) / (expected * sigma * math.sqrt(tau))
    se = math.sqrt(p * (1 - p) / paths) / density  # standard error of a p-quantile
    assert abs(lt - expected) < 5 * se
    (row,) = cal.books
    assert row.p_insolvent <= p
    assert row.excess == pytest.approx(0.0, abs=1e-5)
    assert cal.binding == book.name


def test_calibrated_grid_keeps_every_reference_book_under_the_target() -> None:
    assets = ("ETH", "stETH", "BTC", "USDC")
    vols = np.array([0.7, 0.72, 0.55, 0.0])
    rho = np.array([[1, 0.98, 0.8, 0], [0.98, 1, 0.78, 0], [0.8, 0.78, 1, 0], [0, 0, 0, 1]])
    market = corr.JointMarket(
        assets,
        rho * np.outer(vols, vols),
        corr.CommonJump(20.0, mean=-0.06, vol=0.04, loadings={"ETH": 1.0, "stETH": 1.0, "BTC": 0.8}),
        {"stETH": corr.Jumps(10.0, mean=-0.03, vol=0.02)},
    )
    ratios = corr.simulate(market, 86400.0, 100_000, seed=17)
    template = [
        {"ETH": 0.6, "stETH": 0.6, "BTC": 0.6},
        {"ETH": 1.4, "stETH": 1.4, "BTC": 1.4},
        {"stETH": 0.9},
        {"ETH": 0.8, "stETH": 0.8, "BTC": 1.2},
        {"ETH": 1.2, "stETH": 1.2, "BTC": 0.8},
    ]
    books = bk.REFERENCE_BOOKS.books
    target = 0.01
    cal = bk.calibrate_scale(template, books, assets, ratios, target)
    assert all(row.safe for row in cal.books)
    assert all(row.p_insolvent <= target for row in cal.books)
    binding = next(row for row in cal.books if row.name == cal.binding)
    assert binding.excess == pytest.approx(0.0, abs=1e-4)
    tighter = bk.scale_grid(template, cal.scale * 0.9)  # a tenth less stress: the binding book breaks the target
    assert bk.insolvency_probability(bk.REFERENCE_BOOKS.by_name(cal.binding), tighter, assets, ratios) > target
    with pytest.raises(corr.CorrelationError, match="lacks a scenario"):
        bk.calibrate_scale([{"ETH": 0.8}], [bk.REFERENCE_BOOKS.by_name("stETH/ETH loop")], assets, ratios, target)
