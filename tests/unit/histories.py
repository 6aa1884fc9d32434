"""Synthetic price-feed histories with a known volatility, for the estimator tests here and the on-chain ones in
tests/test_volatility.py (which import this module as `unit.histories`)."""

from __future__ import annotations

import numpy as np

from keeper.optimizer import volatility as vol
from keeper.optimizer.stress import SECONDS_PER_YEAR


def synthetic(
    sigma: float, n: int, seed: int, jumps: int = 0, jump_size: float = -0.1, start: int = 1_700_000_000
) -> list[vol.Round]:
    """A feed history: irregular gaps (30 s to 1 h), GBM log returns with variance σ²·dt, `jumps` extra moves."""
    rng = np.random.default_rng(seed)
    dt = rng.integers(30, 3600, n)
    r = rng.standard_normal(n) * sigma * np.sqrt(dt / SECONDS_PER_YEAR)
    if jumps:
        r[rng.choice(n, jumps, replace=False)] += jump_size
    t = start + np.concatenate([[0], np.cumsum(dt)])
    p = 2000e8 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    return [vol.Round(i + 1, int(p[i]), int(t[i])) for i in range(n + 1)]
