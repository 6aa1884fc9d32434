"""Joint estimation and correlated Monte Carlo throughput (keeper/optimizer/correlation.py, basket.py).

    python benchmarks/correlation.py --paths 1000000 --days 60

Builds synthetic feed histories for ETH, stETH, BTC and USDC (irregular rounds, 30 s to 30 min apart, correlated
GBM), aligns them on a one-hour grid, estimates the EWMA covariance, simulates terminal price ratios over the
keeper's delay with a common market jump and a stETH depeg jump, and prices every reference book under an example
grid. Prints each stage's time and the peak memory, and last, exactly:
`correlation paths=P assets=N estimate_s=X simulate_s=Y books_s=Z`."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keeper.optimizer import basket, correlation
from keeper.optimizer.stress import SECONDS_PER_YEAR
from keeper.optimizer.volatility import Round

ASSETS = ("ETH", "stETH", "BTC", "USDC")
VOLS = np.array([0.7, 0.72, 0.55, 0.002])
RHO = np.array(
    [
        [1.0, 0.98, 0.8, 0.0],
        [0.98, 1.0, 0.78, 0.0],
        [0.8, 0.78, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
START_PRICES = (3000.0, 2990.0, 90000.0, 1.0)
GRID = [
    {"ETH": 0.75, "stETH": 0.75, "BTC": 0.75},  # market down
    {"ETH": 1.25, "stETH": 1.25, "BTC": 1.25},  # market up (the debts rise)
    {"stETH": 0.93},  # depeg
    {"ETH": 0.85, "stETH": 0.85, "BTC": 1.15},  # ETH/BTC divergence (stETH follows ETH)
    {"ETH": 1.15, "stETH": 1.15, "BTC": 0.85},
]


def histories(days: int, seed: int) -> dict[str, list[Round]]:
    rng = np.random.default_rng(seed)
    step = 30
    n = days * 86400 // step
    cov = RHO * np.outer(VOLS, VOLS) * step / SECONDS_PER_YEAR
    logp = np.vstack([np.zeros(len(ASSETS)), np.cumsum(rng.multivariate_normal(np.zeros(len(ASSETS)), cov, n), 0)])
    t0 = 1_700_000_000
    out: dict[str, list[Round]] = {}
    for i, a in enumerate(ASSETS):
        gaps = rng.integers(1, 60, n // 20)  # each feed updates every 30 s to 30 min, on its own clock
        idx = np.unique(np.minimum(np.cumsum(gaps), n))
        prices = START_PRICES[i] * np.exp(logp[idx, i])
        out[a] = [
            Round(k + 1, int(p * 1e8), t0 + int(j) * step, 8) for k, (j, p) in enumerate(zip(idx, prices, strict=True))
        ]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--step-s", type=float, default=3600.0, help="grid step; keep it well above the gaps")
    p.add_argument("--horizon-s", type=float, default=3600.0, help="the keeper's delay")
    p.add_argument("--lead-lag", action="store_true", help="add the cross products one step apart")
    p.add_argument("--target", type=float, default=0.01, help="P(insolvent) target of the calibration")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    h = histories(a.days, a.seed)
    t = time.perf_counter()
    est = correlation.estimate_joint(h, step_s=a.step_s, lead_lag=a.lead_lag)
    estimate_s = time.perf_counter() - t
    print(f"{sum(len(r) for r in h.values())} rounds, {est.returns} common returns of {a.step_s:g} s")
    print("vols  ", " ".join(f"{x:.3f}" for x in est.vols), "(true", " ".join(f"{x:.3f}" for x in VOLS) + ")")
    print("corr\n", np.array2string(est.correlation, precision=3))
    print("fresh share", {k: round(v, 3) for k, v in est.fresh_share.items()})
    print("true corr\n", np.array2string(RHO, precision=3))
    print(f"PSD repair: {est.repair.clipped} eigenvalue(s) clipped, relative size {est.repair.relative:.2e}")

    market = correlation.JointMarket.from_estimate(
        est,
        common=correlation.CommonJump(
            intensity=4.0, mean=-0.08, vol=0.05, loadings={"ETH": 1.0, "stETH": 1.0, "BTC": 0.8}
        ),
        idiosyncratic={"stETH": correlation.Jumps(intensity=1.0, mean=-0.04, vol=0.02)},
    )
    t = time.perf_counter()
    ratios = correlation.simulate(market, a.horizon_s, a.paths, seed=a.seed)
    simulate_s = time.perf_counter() - t
    t = time.perf_counter()
    for book in basket.REFERENCE_BOOKS.books:
        prob = basket.insolvency_probability(book, GRID, est.assets, ratios)
        print(f"{book.name:18s} binding scenario {basket.binding_scenario(book, GRID)}  P(insolvent) {prob:.2e}")
    books_s = time.perf_counter() - t
    cal = basket.calibrate_scale(GRID, basket.REFERENCE_BOOKS.books, est.assets, ratios, a.target)
    print(f"grid scaled by {cal.scale:.3f} for P(insolvent) <= {a.target:g}; {cal.binding} binds")
    for row in cal.books:
        print(
            f"  {row.name:18s} safe health {row.safe_health:.4f} grid health {row.grid_health:.4f} "
            f"excess {row.excess:+.2%} P {row.p_insolvent:.2e}"
        )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"estimate {estimate_s:.3f} s, simulate {simulate_s:.3f} s, books {books_s:.3f} s, peak RSS {rss_mb:.0f} MB")
    print(
        f"correlation paths={a.paths} assets={len(est.assets)} estimate_s={estimate_s:.3f} "
        f"simulate_s={simulate_s:.3f} books_s={books_s:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
