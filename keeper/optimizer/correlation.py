"""Joint volatility and correlation from several feeds' round histories, and correlated Monte Carlo (issue 14;
docs/risk-model.md, "Correlation and joint Monte Carlo").

Feeds update at their own irregular times, so the histories are first put on one clock:

- **Alignment**: the common window runs from the latest first round to the earliest last round of the feeds (every
  asset has a reported price throughout, and no asset is extrapolated past its own last round). A regular grid of
  step `step_s` starts at the window's start; at each grid time every asset takes its last price at or before that
  time. A push oracle that has not updated is still the price the chain shows (its move stayed under the deviation
  threshold), so such a price is carried, and the age of every carried price is kept: `JointHistory.max_age_s`
  reports the stalest carry per asset, and `max_age_s=` refuses a history whose carries are older than that (a
  stopped feed, not a quiet market). Rounds are cleaned as `volatility.py` does (non-positive answers dropped,
  rounds sharing a timestamp collapse to the last one). Carries make returns asynchronous: with a step not much
  longer than the feeds' gaps between rounds, a move shows in one asset's return a step before the other's and the
  correlation comes out too low (the Epps effect; variances are barely affected). `JointHistory.fresh_share` reports,
  per asset, the share of steps with a new round, and `mean_age_s` the mean age of the carried prices. The
  attenuation is roughly the carries' age against the step, so choose `step_s` many times the mean age (20 times
  for about 5 %), or pass `lead_lag=True`: the covariances then also sum the cross products of returns one step
  apart (a Dimson / Scholes-Williams lead-lag correction), which recovers the co-movement a carry pushes into the
  next step, at the price of more noise (the result may need the PSD repair).
- **Covariance**: log returns per grid step. The sample covariance (demeaned, `n - 1`) and the RiskMetrics EWMA
  covariance, whose decay runs with elapsed time (`w = λ^(step / 1 day)`, λ = 0.94 per day) and which is seeded with
  the realised rate of the first day of returns (or the first tenth, whichever is shorter), as `volatility.ewma_vol`
  does for one asset. Both are annualised: a rate per second times seconds per year.
- **PSD repair**: a covariance assembled from estimates can lose positive semi-definiteness (rounding, or a
  correlation matrix edited by hand). `repair_psd` clips the eigenvalues at a floor and reports how much it changed
  the matrix (Frobenius norm, absolute and relative to the input's).
- **Monte Carlo** (`simulate`): terminal price ratios `S_τ / S_0` over a horizon τ (the keeper's delay). Diffusion:
  correlated GBM, the normals multiplied by the Cholesky factor of `Σ·τ`. Jumps: a common market jump (Poisson
  count, normal log size; asset `i` moves by `loading_i` times the common size) and idiosyncratic compound-Poisson
  jumps per asset. The compound-Poisson sums are drawn exactly (given `N` jumps, the sum of `N` normal sizes is
  normal), so a single step is exact at the horizon. Every asset gets a drift compensator, so `E[S_τ / S_0] = 1`
  (the same convention as `stress.py`). Vectorised over paths; seeded with a NumPy `Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from keeper.core.errors import KeeperError
from keeper.optimizer.stress import SECONDS_PER_YEAR
from keeper.optimizer.volatility import DAY_S, RISKMETRICS_LAMBDA, Round

F64 = npt.NDArray[np.float64]

MIN_RETURNS = 10  # the fewest common log returns an estimate accepts (and at least one more than the assets)
FLAT_SIGMA = 1e-6  # an annualised σ below this is a frozen feed


class CorrelationError(KeeperError):
    """Joint history or model input that cannot give a covariance or a simulation."""

    reason = "history"  # the label the risk job's failure metric uses, as for VolatilityError


class ShortHistoryError(CorrelationError):
    """The feeds' histories overlap too little (too few common grid steps) for a covariance."""


class FlatAssetError(CorrelationError):
    """An asset's price does not move over the common window: a frozen or hard-coded feed, not a calm market."""

    reason = "sigma"


class StaleCarryError(CorrelationError):
    """An asset's carried price is older than the allowed age at some grid time (the feed stopped)."""

    reason = "stale"


# ------------------------------------------------------------------------------------------------ alignment


@dataclass(frozen=True)
class JointHistory:
    """Prices of several assets on one regular grid, and their log returns per step."""

    assets: tuple[str, ...]
    step_s: float
    times: F64  # grid times (unix seconds), shape (T,)
    prices: F64  # shape (T, n): each asset's last price at or before the grid time
    age_s: F64  # shape (T, n): how old each carried price is at the grid time (0 when a round lands on it)
    fresh: F64  # shape (n,): share of grid steps in which the asset had at least one new round

    @property
    def fresh_share(self) -> dict[str, float]:
        """Per asset, the share of grid steps with a new round. Well below 1, the step is too short for the feed:
        the returns are asynchronous and the correlations come out too low (the Epps effect)."""
        return {a: float(f) for a, f in zip(self.assets, self.fresh, strict=True)}

    @property
    def log_returns(self) -> F64:
        """Shape (T - 1, n)."""
        return np.diff(np.log(self.prices), axis=0)

    @property
    def max_age_s(self) -> dict[str, float]:
        """The stalest carried price per asset, seconds."""
        return {a: float(self.age_s[:, i].max()) for i, a in enumerate(self.assets)}

    @property
    def mean_age_s(self) -> dict[str, float]:
        """The mean age of each asset's carried prices over the grid, seconds."""
        return {a: float(self.age_s[:, i].mean()) for i, a in enumerate(self.assets)}

    @property
    def span_s(self) -> float:
        return float(self.times[-1] - self.times[0]) if self.times.size else 0.0


def _clean(rounds: Sequence[Round]) -> tuple[F64, F64]:
    """Times and prices of the valid rounds, oldest first, one per timestamp (the last round id wins)."""
    good = sorted((r for r in rounds if r.answer > 0 and r.updated_at > 0), key=lambda r: (r.updated_at, r.round_id))
    t = np.array([r.updated_at for r in good], dtype=np.float64)
    p = np.array([r.price for r in good], dtype=np.float64)
    if t.size:
        last_of_time = np.append(t[1:] != t[:-1], True)
        t, p = t[last_of_time], p[last_of_time]
    return t, p


def align(
    histories: Mapping[str, Sequence[Round]],
    step_s: float,
    window_s: float | None = None,
    max_age_s: float | None = None,
) -> JointHistory:
    """Put several feeds on one grid of step `step_s` over their common window (the last `window_s` of it if
    given). ShortHistoryError when fewer than two grid times fit; StaleCarryError when `max_age_s` is given and a
    carried price is older than that at some grid time."""
    if not step_s > 0:
        raise CorrelationError("the grid step must be positive")
    if len(histories) < 1:
        raise CorrelationError("no feeds to align")
    cleaned = {a: _clean(rs) for a, rs in histories.items()}
    for a, (t, _) in cleaned.items():
        if t.size == 0:
            raise ShortHistoryError(f"{a}: no valid rounds")
    start = max(float(t[0]) for t, _ in cleaned.values())
    end = min(float(t[-1]) for t, _ in cleaned.values())
    if window_s is not None:
        start = max(start, end - window_s)
    if end - start < step_s:
        raise ShortHistoryError(
            f"the feeds' common window is {max(0.0, end - start):.0f} s, shorter than one grid step ({step_s:g} s)"
        )
    steps = math.floor((end - start) / step_s)
    grid = start + step_s * np.arange(steps + 1, dtype=np.float64)
    assets = tuple(cleaned)
    prices = np.empty((grid.size, len(assets)))
    age = np.empty_like(prices)
    fresh = np.empty(len(assets))
    for i, a in enumerate(assets):
        t, p = cleaned[a]
        k = np.searchsorted(t, grid, side="right") - 1  # the last round at or before each grid time; >= 0 here
        prices[:, i] = p[k]
        age[:, i] = grid - t[k]
        fresh[i] = float(np.mean(np.diff(k) > 0))
        if max_age_s is not None and age[:, i].max() > max_age_s:
            worst = int(np.argmax(age[:, i]))
            raise StaleCarryError(
                f"{a}: the price carried at grid time {grid[worst]:.0f} is {age[worst, i]:.0f} s old, over the "
                f"allowed {max_age_s:g} s (the feed stopped; shorten the window or check the feed)"
            )
    return JointHistory(assets, float(step_s), grid, prices, age, fresh)


# ---------------------------------------------------------------------------------------------- covariance


def _checked_returns(j: JointHistory, min_returns: int) -> F64:
    r = j.log_returns
    need = max(min_returns, len(j.assets) + 1)
    if r.shape[0] < need:
        raise ShortHistoryError(
            f"{r.shape[0]} common returns of {j.step_s:g} s for {len(j.assets)} assets; need at least {need} "
            "(a longer window, a smaller step, or feeds that overlap longer)"
        )
    sigma = np.sqrt(np.sum(r**2, axis=0) / (r.shape[0] * j.step_s) * SECONDS_PER_YEAR)
    for a, s in zip(j.assets, sigma, strict=True):
        if s < FLAT_SIGMA:
            raise FlatAssetError(f"{a}: σ {s:.2e} over the common window; the feed looks frozen")
    return r


def _weighted_products(r: F64, weights: F64, lead_lag: bool) -> F64:
    """`Σ_k w_k·r_k·r_kᵀ`; with `lead_lag` the off-diagonal entries also get `Σ_k w_k·(r_(k-1)·r_kᵀ + r_k·r_(k-1)ᵀ)`:
    the cross products one step apart, which hold the co-movement that carried prices move into the next step."""
    c = (r * weights[:, None]).T @ r
    if lead_lag and r.shape[0] > 1:
        lag = (r[:-1] * weights[1:, None]).T @ r[1:]
        cross = lag + lag.T
        np.fill_diagonal(cross, 0.0)
        c = c + cross
    return np.asarray(c, dtype=np.float64)


def sample_covariance(j: JointHistory, min_returns: int = MIN_RETURNS, lead_lag: bool = False) -> F64:
    """The sample covariance of the log returns (demeaned, divided by n - 1), annualised. `lead_lag` adds the
    cross products one step apart to the covariances (not the variances): for feeds whose carries are not small
    against the step (module docstring)."""
    r = _checked_returns(j, min_returns)
    r = r - r.mean(axis=0)
    c = _weighted_products(r, np.ones(r.shape[0]), lead_lag) / (r.shape[0] - 1)
    return np.asarray(c / j.step_s * SECONDS_PER_YEAR, dtype=np.float64)


def ewma_covariance(
    j: JointHistory, lam: float = RISKMETRICS_LAMBDA, min_returns: int = MIN_RETURNS, lead_lag: bool = False
) -> F64:
    """RiskMetrics EWMA covariance, annualised: the rate matrix `V ← w·V + (1 - w)·r·rᵀ / step` with
    `w = λ^(step / 1 day)`, seeded with the realised rate over the first day of returns (or the first tenth of the
    window if shorter). Not demeaned, as RiskMetrics (over minutes to days the mean is noise). `lead_lag` as for
    `sample_covariance`."""
    if not 0 < lam < 1:
        raise CorrelationError("EWMA lambda must be in (0, 1)")
    r = _checked_returns(j, min_returns)
    n = r.shape[0]
    warm = min(n, max(2, math.ceil(min(DAY_S, n * j.step_s / 10) / j.step_s)))
    w = lam ** (j.step_s / DAY_S)
    m = n - warm
    # The recursion unrolled: V_n = w^m·V_0 + Σ_k (1 - w)·w^(m - 1 - k)·x_k over the m returns after the warm-up,
    # with V_0 the plain average of the first `warm` products.
    weights = np.concatenate([np.full(warm, w**m / warm), (1 - w) * w ** np.arange(m - 1, -1, -1, dtype=np.float64)])
    v = _weighted_products(r, weights, lead_lag) / j.step_s
    return np.asarray(v * SECONDS_PER_YEAR, dtype=np.float64)


def correlation(cov: F64) -> tuple[F64, F64]:
    """(correlation matrix, volatilities) of a covariance matrix. CorrelationError for a zero or negative variance."""
    d = np.diag(cov)
    if np.any(d <= 0):
        raise CorrelationError("a variance is zero or negative: no correlation for that asset")
    vols = np.sqrt(d)
    corr = cov / np.outer(vols, vols)
    np.fill_diagonal(corr, 1.0)
    return np.asarray(corr, dtype=np.float64), np.asarray(vols, dtype=np.float64)


@dataclass(frozen=True)
class PsdRepair:
    """A matrix made positive semi-definite by clipping its eigenvalues."""

    matrix: F64
    clipped: int  # how many eigenvalues were raised to the floor
    min_eigenvalue: float  # the smallest eigenvalue before the repair
    size: float  # Frobenius norm of (repaired - input)
    relative: float  # size / Frobenius norm of the input

    @property
    def changed(self) -> bool:
        return self.clipped > 0


def repair_psd(m: F64, floor: float = 0.0, unit_diagonal: bool = False) -> PsdRepair:
    """Clip the eigenvalues of the symmetric part of `m` at `floor` and rebuild it. With `unit_diagonal` (a
    correlation matrix) the result is rescaled to ones on the diagonal afterwards. Reports the size of the change."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise CorrelationError(f"a square matrix is needed, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise CorrelationError("the matrix has non-finite entries")
    sym = (m + m.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    low = vals < floor
    fixed = sym
    if np.any(low):
        fixed = (vecs * np.maximum(vals, floor)) @ vecs.T
        fixed = (fixed + fixed.T) / 2
        if unit_diagonal:
            d = np.sqrt(np.diag(fixed))
            fixed = fixed / np.outer(d, d)
            np.fill_diagonal(fixed, 1.0)
    size = float(np.linalg.norm(fixed - m))
    norm = float(np.linalg.norm(m))
    return PsdRepair(fixed, int(low.sum()), float(vals[0]), size, size / norm if norm else 0.0)


@dataclass(frozen=True)
class JointEstimate:
    """Annualised covariance (EWMA, PSD-repaired), its correlation and volatilities, and the sample covariance."""

    assets: tuple[str, ...]
    returns: int
    span_s: float
    step_s: float
    covariance: F64
    sample: F64
    correlation: F64
    vols: F64
    repair: PsdRepair
    max_age_s: dict[str, float] = field(default_factory=dict)
    fresh_share: dict[str, float] = field(default_factory=dict)


def estimate_joint(
    histories: Mapping[str, Sequence[Round]],
    step_s: float,
    window_s: float | None = None,
    lam: float = RISKMETRICS_LAMBDA,
    max_age_s: float | None = None,
    min_returns: int = MIN_RETURNS,
    lead_lag: bool = False,
) -> JointEstimate:
    """Align the feeds, estimate the EWMA and sample covariances, repair the EWMA one to PSD, and give the
    correlation. The EWMA covariance is what the simulation uses (the recent regime, like `volatility.ewma_vol`)."""
    j = align(histories, step_s, window_s, max_age_s)
    ewma = ewma_covariance(j, lam, min_returns, lead_lag)
    sample = sample_covariance(j, min_returns, lead_lag)
    repair = repair_psd(ewma)
    corr, vols = correlation(repair.matrix)
    return JointEstimate(
        assets=j.assets,
        returns=int(j.log_returns.shape[0]),
        span_s=j.span_s,
        step_s=j.step_s,
        covariance=repair.matrix,
        sample=sample,
        correlation=corr,
        vols=vols,
        repair=repair,
        max_age_s=j.max_age_s,
        fresh_share=j.fresh_share,
    )


# -------------------------------------------------------------------------------------------- Monte Carlo


@dataclass(frozen=True)
class Jumps:
    """Compound-Poisson jumps: `intensity` per year, log sizes ~ N(mean, vol²)."""

    intensity: float
    mean: float = 0.0
    vol: float = 0.0

    def __post_init__(self) -> None:
        if not (self.intensity >= 0 and self.vol >= 0 and math.isfinite(self.mean)):
            raise CorrelationError("jump intensity and volatility must be >= 0, the mean finite")


@dataclass(frozen=True)
class CommonJump(Jumps):
    """A market-wide jump: asset `a` moves by `loadings[a]` times the common log size (assets not named: 0)."""

    loadings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JointMarket:
    """Correlated log-price dynamics of several assets: annualised covariance, a common jump, idiosyncratic jumps."""

    assets: tuple[str, ...]
    covariance: F64
    common: CommonJump | None = None
    idiosyncratic: Mapping[str, Jumps] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.assets)
        if n == 0 or len(set(self.assets)) != n:
            raise CorrelationError("the market needs distinct asset names")
        if np.shape(self.covariance) != (n, n):
            raise CorrelationError(f"covariance shape {np.shape(self.covariance)} does not fit {n} assets")
        unknown = set(self.idiosyncratic) | (set(self.common.loadings) if self.common else set())
        unknown -= set(self.assets)
        if unknown:
            raise CorrelationError(f"jumps name assets outside the market: {sorted(unknown)}")

    @classmethod
    def from_estimate(
        cls, e: JointEstimate, common: CommonJump | None = None, idiosyncratic: Mapping[str, Jumps] | None = None
    ) -> JointMarket:
        return cls(e.assets, e.covariance, common, dict(idiosyncratic or {}))

    def loading_vector(self) -> F64:
        if self.common is None:
            return np.zeros(len(self.assets))
        return np.array([self.common.loadings.get(a, 0.0) for a in self.assets], dtype=np.float64)


def cholesky(cov: F64) -> F64:
    """Lower Cholesky factor of a covariance, after a PSD repair; a singular matrix (perfectly correlated assets)
    gets a jitter of 1e-12 of its largest variance on the diagonal so the factor exists."""
    fixed = repair_psd(cov).matrix
    try:
        return np.asarray(np.linalg.cholesky(fixed), dtype=np.float64)
    except np.linalg.LinAlgError:
        jitter = 1e-12 * max(float(np.max(np.diag(fixed))), 1e-300)
        return np.asarray(np.linalg.cholesky(fixed + jitter * np.eye(fixed.shape[0])), dtype=np.float64)


def _compound(rng: np.random.Generator, j: Jumps, tau: float, shape: tuple[int, ...]) -> F64:
    """Sum of a Poisson(λτ) number of N(mean, vol²) sizes, drawn exactly."""
    if j.intensity == 0:
        return np.zeros(shape)
    count = rng.poisson(j.intensity * tau, shape).astype(np.float64)
    return np.asarray(count * j.mean + np.sqrt(count) * j.vol * rng.standard_normal(shape), dtype=np.float64)


def _compensator(j: Jumps, loading: F64 | float, tau: float) -> F64:
    """λτ·(E[e^(a·J)] - 1) for J ~ N(mean, vol²): what the drift gives back so the jumps add no expected return."""
    a = np.asarray(loading, dtype=np.float64)
    return np.asarray(j.intensity * tau * (np.exp(a * j.mean + 0.5 * (a * j.vol) ** 2) - 1), dtype=np.float64)


def simulate_log_returns(market: JointMarket, horizon_s: float, paths: int, seed: int | np.random.Generator = 0) -> F64:
    """Terminal log price ratios `ln(S_τ / S_0)`, shape (paths, assets), over `horizon_s` seconds."""
    if not horizon_s > 0:
        raise CorrelationError("the horizon must be positive")
    if paths < 1:
        raise CorrelationError("paths must be at least 1")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tau = horizon_s / SECONDS_PER_YEAR
    n = len(market.assets)
    cov = np.asarray(market.covariance, dtype=np.float64)
    lower = cholesky(cov * tau)
    x = rng.standard_normal((paths, n)) @ lower.T
    drift = -0.5 * np.diag(cov) * tau
    if market.common is not None and market.common.intensity > 0:
        load = market.loading_vector()
        x += _compound(rng, market.common, tau, (paths, 1)) * load
        drift -= _compensator(market.common, load, tau)
    for i, a in enumerate(market.assets):
        j = market.idiosyncratic.get(a)
        if j is not None and j.intensity > 0:
            x[:, i] += _compound(rng, j, tau, (paths,))
            drift[i] -= float(_compensator(j, 1.0, tau))
    return np.asarray(x + drift, dtype=np.float64)


def simulate(market: JointMarket, horizon_s: float, paths: int, seed: int | np.random.Generator = 0) -> F64:
    """Terminal price ratios `S_τ / S_0`, shape (paths, assets); `E[S_τ / S_0] = 1` for every asset."""
    return np.asarray(np.exp(simulate_log_returns(market, horizon_s, paths, seed)), dtype=np.float64)
