"""Volatility from a feed's own round history (docs/risk-model.md).

A push oracle updates at irregular times (a deviation threshold or a heartbeat), so every estimator here works with
the time between rounds: a log return `r_i` over `dt_i` seconds has variance `σ²·dt_i` under a diffusion.

- Realised volatility over a window: `σ² = Σ r_i² / Σ dt_i`, annualised. Summing squared returns and dividing by the
  elapsed time, rather than averaging per-round variances, weights each round by the time it covers, which is right
  for irregular sampling (and unbiased at the stopping times of a deviation trigger).
- EWMA (RiskMetrics style): a variance *rate* `v` decays with elapsed time, not with the number of rounds:
  `v_i = w_i·v_{i-1} + (1 - w_i)·r_i²/dt_i` with `w_i = λ^(dt_i / 1 day)` (λ = 0.94 per day by default).
- Jumps: returns beyond `k` standard deviations of the diffusion (iterated until stable) are counted as jumps; their
  count per year, mean and standard deviation feed the Merton model, and the rest give the diffusion's σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

from keeper.errors import KeeperError
from keeper.stress import SECONDS_PER_YEAR

DAY_S = 86400
RISKMETRICS_LAMBDA = 0.94


class VolatilityError(KeeperError):
    """Not enough usable history to estimate a volatility."""


@dataclass(frozen=True)
class Round:
    round_id: int
    answer: int
    updated_at: int


@dataclass(frozen=True)
class Returns:
    log_return: npt.NDArray[np.float64]
    dt_s: npt.NDArray[np.float64]

    @property
    def span_s(self) -> float:
        return float(self.dt_s.sum())


@dataclass(frozen=True)
class Estimate:
    rounds: int
    span_s: float
    realized: float
    ewma: float
    sigma: float  # diffusion σ with jumps removed
    jump_intensity: float
    jump_mean: float
    jump_vol: float


def returns(rounds: Sequence[Round], window_s: float | None = None) -> Returns:
    """Log returns between consecutive valid rounds, oldest first; rounds with a non-positive answer are skipped, and
    rounds sharing a timestamp collapse to the last one. `window_s` keeps the last window before the newest round."""
    good = sorted((r for r in rounds if r.answer > 0 and r.updated_at > 0), key=lambda r: (r.updated_at, r.round_id))
    if window_s is not None and good:
        start = good[-1].updated_at - window_s
        good = [r for r in good if r.updated_at >= start]
    t = np.array([r.updated_at for r in good], dtype=np.float64)
    p = np.array([r.answer for r in good], dtype=np.float64)
    if t.size:
        keep = np.append(t[1:] != t[:-1], True)
        t, p = t[keep], p[keep]
    if t.size < 3:
        raise VolatilityError(f"need at least 3 rounds at distinct times, have {t.size}")
    return Returns(np.diff(np.log(p)), np.diff(t))


def realized_vol(r: Returns) -> float:
    """Annualised realised volatility: sqrt(Σ r² / Σ dt · seconds per year)."""
    return math.sqrt(float(np.sum(r.log_return**2)) / r.span_s * SECONDS_PER_YEAR)


def ewma_vol(r: Returns, lam: float = RISKMETRICS_LAMBDA) -> float:
    """Annualised EWMA volatility with time-scaled decay, seeded with the realised rate of the first day of history
    (or the first tenth of it, whichever is shorter)."""
    if not 0 < lam < 1:
        raise VolatilityError("EWMA lambda must be in (0, 1)")
    rate = r.log_return**2 / r.dt_s
    warm = max(2, int(np.searchsorted(np.cumsum(r.dt_s), min(DAY_S, r.span_s / 10))) + 1)
    v = float(np.sum(r.log_return[:warm] ** 2) / np.sum(r.dt_s[:warm]))
    weights = lam ** (r.dt_s / DAY_S)
    for w, x in zip(weights[warm:], rate[warm:], strict=True):
        v = w * v + (1 - w) * x
    return math.sqrt(v * SECONDS_PER_YEAR)


def split_jumps(r: Returns, k: float = 4.0, max_iter: int = 20) -> tuple[float, npt.NDArray[np.bool_]]:
    """Diffusion σ (annualised) and the mask of returns counted as jumps: |r| > k·σ·√dt, iterated to a fixed point."""
    jumps = np.zeros(r.log_return.size, dtype=np.bool_)
    sigma = 0.0
    for _ in range(max_iter):
        keep = ~jumps
        span = float(r.dt_s[keep].sum())
        sigma = math.sqrt(float(np.sum(r.log_return[keep] ** 2)) / span * SECONDS_PER_YEAR) if span else 0.0
        limit = k * sigma * np.sqrt(r.dt_s / SECONDS_PER_YEAR)
        new = np.abs(r.log_return) > limit
        if np.array_equal(new, jumps):
            break
        jumps = new
    return sigma, jumps


def estimate(rounds: Sequence[Round], window_s: float | None = None, lam: float = RISKMETRICS_LAMBDA) -> Estimate:
    r = returns(rounds, window_s)
    sigma, jumps = split_jumps(r)
    sizes = r.log_return[jumps]
    years = r.span_s / SECONDS_PER_YEAR
    return Estimate(
        rounds=int(r.log_return.size + 1),
        span_s=r.span_s,
        realized=realized_vol(r),
        ewma=ewma_vol(r, lam),
        sigma=sigma,
        jump_intensity=float(sizes.size / years) if years else 0.0,
        jump_mean=float(sizes.mean()) if sizes.size else 0.0,
        jump_vol=float(sizes.std()) if sizes.size > 1 else 0.0,
    )


def read_rounds(feed: Any, max_rounds: int, since: int = 0, block: int | str = "latest") -> list[Round]:
    """Walk a feed back from its latest round with `getRoundData(id - 1)` until `max_rounds`, a round older than
    `since`, a missing round, or the start of the aggregator phase (Chainlink proxies number rounds
    `phase << 64 | n`; earlier phases are not followed)."""
    rid, answer, _started, updated, _answered = feed.functions.latestRoundData().call(block_identifier=block)
    out = [Round(int(rid), int(answer), int(updated))]
    phase = int(rid) >> 64
    while len(out) < max_rounds:
        prev = out[-1].round_id - 1
        if prev >> 64 != phase or prev & ((1 << 64) - 1) == 0:
            break
        try:
            rid, answer, _started, updated, _answered = feed.functions.getRoundData(prev).call(block_identifier=block)
        except (ContractLogicError, BadFunctionCallOutput):  # no such round: the history ends here
            break
        if int(updated) == 0 or int(updated) < since:
            break
        out.append(Round(int(rid), int(answer), int(updated)))
    out.reverse()
    return out
