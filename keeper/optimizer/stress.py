"""Monte Carlo stress engine and the collateral-ratio optimizer (vectorised NumPy; docs/risk-model.md).

One collateral asset priced against a stable debt asset. Each path is a market price `S` (GBM, optionally with
Merton jumps) and the oracle's price `O` that the engine sees (a push only when the deviation threshold is crossed or
the heartbeat expires). Prices are normalised: `S_0 = O_0 = 1`, one unit of collateral.

Two accounts ride every path:

- **Boundary account** (health 1 at t = 0): debt `lt`, so it is liquidatable from the start. The keeper sees an
  on-chain health below 1, waits its reaction delay, then liquidates the whole debt at the oracle price with the
  engine's discount `d = min(maxDiscount, minDiscount + 1 - health)`, if the liquidator makes money selling the
  seized collateral at the market price less slippage; otherwise it retries every step. A recovery above health 1
  cancels the attempt until the next detection. The protocol recovers `X = O / (1 + d)` per unit of collateral, so
  the bad debt is `max(0, lt - X)`. A path never liquidated by the horizon is marked to market: `X = S_T·(1 - slip)`.
  Because this account's health is `O_t` whatever `lt` is, its liquidation time does not depend on `lt`, and one
  simulation prices every `lt` at once: `p_bad_debt(lt) = P(X < lt)`.
- **Account opened at the borrowing limit** (health `lt / ltv`): liquidatable as soon as `O_t < ltv / lt`, so the
  running minimum of `O` gives `p_liquidation(ltv / lt)` for every buffer at once.

The time loop runs over steps; every step is a handful of NumPy operations over a chunk of paths (no per-path Python).
Chunks run on a thread pool (NumPy releases the GIL) and each has its own generator spawned from the seed, so results
do not depend on the number of threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from keeper.optimizer.inputs import PATHS

SECONDS_PER_YEAR = 365 * 86400
DEFAULT_CHUNK = 1 << 16

F32 = npt.NDArray[np.float32]


class StressError(ValueError):
    """Invalid stress or optimizer input."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise StressError(message)


@dataclass(frozen=True)
class Market:
    """Log-price dynamics. Volatilities are annualised; jumps are per year with log sizes ~ N(mean, vol²)."""

    sigma: float
    jump_intensity: float = 0.0
    jump_mean: float = 0.0
    jump_vol: float = 0.0

    def __post_init__(self) -> None:
        _require(self.sigma >= 0, "sigma must be >= 0")
        _require(self.jump_intensity >= 0, "jump intensity must be >= 0")
        _require(self.jump_vol >= 0, "jump volatility must be >= 0")


@dataclass(frozen=True)
class Oracle:
    """A push oracle: updates when |S/O - 1| >= deviation or when heartbeat_s has passed. 0 turns either off; a
    deviation of 0 means the oracle follows every step."""

    deviation: float = 0.0
    heartbeat_s: float = 0.0

    def __post_init__(self) -> None:
        _require(0 <= self.deviation < 1, "oracle deviation must be in [0, 1)")
        _require(self.heartbeat_s >= 0, "heartbeat must be >= 0 seconds")


@dataclass(frozen=True)
class Liquidation:
    """How liquidations happen: the keeper's delay, the engine's discount schedule, and the market's depth."""

    delay_s: float = 0.0
    min_discount: float = 0.005
    max_discount: float = 0.10
    slippage_depth_usd: float = 0.0  # slippage = size / (size + depth); 0 = no slippage
    position_usd: float = 1_000_000.0  # collateral sold at once at S = 1

    def __post_init__(self) -> None:
        _require(self.delay_s >= 0, "delay must be >= 0 seconds")
        _require(0 <= self.min_discount <= self.max_discount < 1, "need 0 <= min discount <= max discount < 1")
        _require(self.slippage_depth_usd >= 0, "slippage depth must be >= 0 (0 turns slippage off)")
        _require(self.position_usd > 0, "position size must be > 0")


@dataclass(frozen=True)
class Simulation:
    market: Market
    oracle: Oracle = Oracle()
    liquidation: Liquidation = Liquidation()
    horizon_s: float = 86400.0
    step_s: float = 60.0
    paths: int = PATHS
    seed: int = 0
    chunk: int = DEFAULT_CHUNK

    def __post_init__(self) -> None:
        _require(self.step_s > 0, "step must be > 0 seconds")
        _require(self.horizon_s >= self.step_s, "horizon must be at least one step")
        _require(self.paths > 0, "paths must be > 0")
        _require(self.chunk > 0, "chunk must be > 0")

    @property
    def steps(self) -> int:
        return max(1, round(self.horizon_s / self.step_s))


@dataclass(frozen=True)
class Outcome:
    """Per-path results; 13 bytes per path."""

    recovery: F32  # X: collateral value the protocol recovers per unit of boundary debt's collateral
    discount: F32  # discount of the boundary liquidation (0 where none happened)
    liquidated: npt.NDArray[np.bool_]  # the boundary account was liquidated before the horizon
    oracle_min: F32  # min over the horizon of O_t / O_0

    @property
    def paths(self) -> int:
        return int(self.recovery.size)


# ---------------------------------------------------------------- simulation


def _chunk(sim: Simulation, n: int, rng: np.random.Generator) -> tuple[F32, F32, npt.NDArray[np.bool_], F32]:
    m, o, liq = sim.market, sim.oracle, sim.liquidation
    dt = sim.step_s / SECONDS_PER_YEAR
    kappa = math.exp(m.jump_mean + m.jump_vol**2 / 2) - 1 if m.jump_intensity else 0.0
    drift = np.float32((-(m.sigma**2) / 2 - m.jump_intensity * kappa) * dt)
    vol = np.float32(m.sigma * math.sqrt(dt))
    jump_rate = m.jump_intensity * dt * n
    up = np.float32(math.log1p(o.deviation))
    down = np.float32(math.log1p(-o.deviation))
    heartbeat = round(o.heartbeat_s / sim.step_s) if o.heartbeat_s else 0
    delay = round(liq.delay_s / sim.step_s)
    never = np.int32(np.iinfo(np.int32).max)
    min_disc = liq.min_discount
    slip_on = liq.slippage_depth_usd > 0

    x = np.zeros(n, np.float32)  # log S
    lo = np.zeros(n, np.float32)  # log O
    lo_min = np.zeros(n, np.float32)
    age = np.zeros(n, np.int32)  # steps since the oracle's last push
    due = np.full(n, delay, np.int32)  # step of the next liquidation attempt (boundary account)
    alive = np.ones(n, np.bool_)
    recovery = np.zeros(n, np.float32)
    discount = np.zeros(n, np.float32)
    z = np.empty(n, np.float32)
    diff = np.empty(n, np.float32)

    for t in range(1, sim.steps + 1):
        rng.standard_normal(n, dtype=np.float32, out=z)
        z *= vol
        z += drift
        x += z
        if jump_rate:
            k = rng.poisson(jump_rate)
            if k:
                # A Poisson number of jumps spread uniformly over the paths is an independent Poisson per path.
                idx = rng.integers(0, n, k)
                np.add.at(x, idx, rng.normal(m.jump_mean, m.jump_vol, k).astype(np.float32))
        # Oracle push: deviation crossed or heartbeat expired.
        if o.deviation == 0:
            lo[:] = x
        else:
            np.subtract(x, lo, out=diff)
            push = (diff >= up) | (diff <= down)
            if heartbeat:
                age += 1
                push |= age >= heartbeat
                age[push] = 0
            np.copyto(lo, x, where=push)
        np.minimum(lo_min, lo, out=lo_min)

        # Boundary account: detect on-chain health < 1 (O < 1), act `delay` steps later.
        unhealthy = lo < 0
        np.copyto(due, t + delay, where=alive & unhealthy & (due == never))
        attempt = alive & (due <= t)
        if not attempt.any():
            continue
        idx = np.flatnonzero(attempt)
        sick = unhealthy[idx]
        np.copyto(due, never, where=attempt & ~unhealthy)  # recovered: wait for the next detection
        idx = idx[sick]
        if idx.size == 0:
            continue
        oracle_px = np.exp(lo[idx])
        market_px = np.exp(x[idx])
        d = np.minimum(liq.max_discount, min_disc + 1 - oracle_px)
        sell = market_px
        if slip_on:
            size = liq.position_usd * market_px
            sell = market_px * (1 - size / (size + liq.slippage_depth_usd))
        # The liquidator pays min(debt, O/(1+d)) and receives collateral worth (seized)·sell; for a full close both
        # branches reduce to: profitable iff sell·(1 + d) >= O.
        ok = sell * (1 + d) >= oracle_px
        done = idx[ok]
        recovery[done] = oracle_px[ok] / (1 + d[ok])
        discount[done] = d[ok]
        alive[done] = False
        due[idx[~ok]] = t + 1
    # Never liquidated: mark to market at the horizon.
    rest = np.flatnonzero(alive)
    if rest.size:
        px = np.exp(x[rest])
        if slip_on:
            size = liq.position_usd * px
            px = px * (1 - size / (size + liq.slippage_depth_usd))
        recovery[rest] = px
    return recovery, discount, ~alive, np.exp(lo_min)


def simulate(sim: Simulation, threads: int | None = None) -> Outcome:
    """Run the paths in chunks (memory bounded by the chunk size) on `threads` threads (default: the CPU count)."""
    sizes = [sim.chunk] * (sim.paths // sim.chunk)
    if sim.paths % sim.chunk:
        sizes.append(sim.paths % sim.chunk)
    seeds = np.random.SeedSequence(sim.seed).spawn(len(sizes))
    work: list[Callable[[], tuple[F32, F32, npt.NDArray[np.bool_], F32]]] = [
        partial(_chunk, sim, n, np.random.default_rng(s)) for n, s in zip(sizes, seeds, strict=True)
    ]
    workers = max(1, threads or os.cpu_count() or 1)
    if workers == 1 or len(work) == 1:
        parts = [w() for w in work]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda w: w(), work))
    return Outcome(
        recovery=np.concatenate([p[0] for p in parts]),
        discount=np.concatenate([p[1] for p in parts]),
        liquidated=np.concatenate([p[2] for p in parts]),
        oracle_min=np.concatenate([p[3] for p in parts]),
    )


# ---------------------------------------------------------------- measures and optimizer


@dataclass(frozen=True)
class Metrics:
    lt: float
    ltv: float
    p_bad_debt: float  # P(the boundary account leaves bad debt)
    p_bad_debt_stderr: float
    expected_shortfall: float  # E[bad debt] per $ of the boundary account's debt
    p_liquidation: float  # P(an account opened at the borrowing limit is liquidated within the horizon)
    expected_penalty: float  # E[discount paid] per $ of debt of an account opened at the limit
    borrowing_power: float  # $ borrowable per $ of collateral (= ltv)


@dataclass(frozen=True)
class Targets:
    p_bad_debt: float = 0.01  # bad-debt probability at most this over the horizon
    shortfall: float = 0.001  # expected shortfall per $ of debt at most this
    p_liquidation: float = 0.05  # an account opened at the limit is liquidated within the horizon at most this often
    lt_max: float = 0.99  # hard cap, e.g. the on-chain bounds; the engine also needs lt·(1 + maxDiscount) < 1

    def __post_init__(self) -> None:
        _require(0 < self.p_bad_debt < 1, "target bad-debt probability must be in (0, 1)")
        _require(self.shortfall > 0, "shortfall budget must be > 0")
        _require(0 < self.p_liquidation < 1, "target liquidation probability must be in (0, 1)")
        _require(0 < self.lt_max < 1, "lt cap must be in (0, 1)")


@dataclass(frozen=True)
class Choice:
    metrics: Metrics
    lt_by_probability: float  # the largest lt the bad-debt target allows
    lt_by_shortfall: float  # the largest lt the shortfall budget allows
    lt_ci: tuple[float, float]  # 95 % interval of lt_by_probability from the order statistics
    buffer: float  # lt - ltv
    paths: int
    binding: str  # which constraint set lt: "probability", "shortfall" or "cap"


def evaluate(out: Outcome, lt: float, ltv: float, liq: Liquidation, buffer_out: Outcome | None = None) -> Metrics:
    """Every measure of one parameter set: solvency from `out`, the liquidation risk of an account opened at ltv
    from `buffer_out` (a calm-market simulation) when given, else from `out`."""
    n = out.paths
    loss = np.maximum(lt - out.recovery.astype(np.float64), 0.0)
    p_bad = float(np.count_nonzero(loss > 0)) / n
    calm = buffer_out or out
    p_liq = float(np.count_nonzero(calm.oracle_min < ltv / lt)) / calm.paths
    liquidated = out.discount[out.liquidated]
    mean_discount = float(liquidated.mean()) if liquidated.size else liq.min_discount
    return Metrics(
        lt=lt,
        ltv=ltv,
        p_bad_debt=p_bad,
        p_bad_debt_stderr=math.sqrt(p_bad * (1 - p_bad) / n),
        expected_shortfall=float(loss.mean()) / lt,
        p_liquidation=p_liq,
        expected_penalty=p_liq * mean_discount,
        borrowing_power=ltv,
    )


def _lt_by_shortfall(sorted_x: npt.NDArray[np.float64], budget: float) -> float:
    """Largest lt with E[max(lt - X, 0)] / lt <= budget; the left side grows with lt, so bisect on the sorted X."""
    n = sorted_x.size
    prefix = np.concatenate([[0.0], np.cumsum(sorted_x)])

    def shortfall(lt: float) -> float:
        k = int(np.searchsorted(sorted_x, lt, side="left"))
        return float(k * lt - prefix[k]) / n / lt

    lo, hi = 1e-9, 1.0
    if shortfall(hi) <= budget:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        if shortfall(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def buffer_ratio(out: Outcome, p_liquidation: float) -> float:
    """The q-quantile of min O_t / O_0: the largest ltv / lt with P(an account opened at ltv is liquidated) <= q."""
    return min(float(np.quantile(out.oracle_min, p_liquidation, method="inverted_cdf")), 1.0)


def optimize(out: Outcome, targets: Targets, liq: Liquidation, buffer_out: Outcome | None = None) -> Choice:
    """The highest lt meeting the bad-debt and shortfall targets in `out`, then the ltv buffer that keeps an account
    opened at the limit from being liquidated within the horizon more often than `targets.p_liquidation`, measured
    in `buffer_out` (a calm market) when given, else in `out`."""
    x = np.sort(out.recovery.astype(np.float64))
    n = x.size
    # P(X < lt) <= p holds for every lt up to the (floor(p·n)+1)-th smallest X.
    k = math.floor(targets.p_bad_debt * n)
    by_prob = float(x[min(k, n - 1)])
    half = 1.96 * math.sqrt(n * targets.p_bad_debt * (1 - targets.p_bad_debt))
    ci = (float(x[max(0, math.floor(k - half))]), float(x[min(n - 1, math.ceil(k + half))]))
    by_es = _lt_by_shortfall(x, targets.shortfall)
    engine_cap = math.nextafter(1 / (1 + liq.max_discount), 0)
    cap = min(targets.lt_max, engine_cap)
    lt = min(by_prob, by_es, cap)
    binding = "cap" if lt == cap else "probability" if lt == by_prob else "shortfall"
    ltv = lt * buffer_ratio(buffer_out or out, targets.p_liquidation)
    return Choice(
        metrics=evaluate(out, lt, ltv, liq, buffer_out),
        lt_by_probability=by_prob,
        lt_by_shortfall=by_es,
        lt_ci=ci,
        buffer=lt - ltv,
        paths=n,
        binding=binding,
    )


def theoretical_lt(sigma: float, delay_s: float, target_prob: float) -> float:
    """The canonical case (no jumps, no oracle lag, no slippage, no discount): an account at health 1 leaves bad debt
    iff S_τ/S_0 < lt, so lt* = exp(σ·√τ·z_p − σ²·τ/2), τ in years."""
    tau = delay_s / SECONDS_PER_YEAR
    z = NormalDist().inv_cdf(target_prob)
    return math.exp(sigma * math.sqrt(tau) * z - sigma**2 * tau / 2)


@dataclass(frozen=True)
class Curve:
    lt: list[float]
    p_bad_debt: list[float]
    borrowing_power: list[float]
    expected_penalty: list[float] = field(default_factory=list)


def curve(
    out: Outcome, targets: Targets, liq: Liquidation, buffer_out: Outcome | None = None, points: int = 60
) -> Curve:
    """p_bad_debt and borrowing power (with the buffer the liquidation target picks) across lt, for the plot."""
    ratio = buffer_ratio(buffer_out or out, targets.p_liquidation)
    grid = np.linspace(0.40, min(0.99, 1 / (1 + liq.max_discount)), points)
    ms = [evaluate(out, float(lt), float(lt) * ratio, liq, buffer_out) for lt in grid]
    return Curve(
        lt=[m.lt for m in ms],
        p_bad_debt=[m.p_bad_debt for m in ms],
        borrowing_power=[m.borrowing_power for m in ms],
        expected_penalty=[m.expected_penalty for m in ms],
    )


def plot(c: Curve, choice: Choice, target_prob: float, path: str | os.PathLike[str], title: str) -> None:
    """Bad-debt probability and borrowing power against lt, the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    # Zero estimates have no place on a log axis: they are left out, not drawn at a made-up floor.
    ax.semilogy(c.lt, [p if p > 0 else math.nan for p in c.p_bad_debt], color="tab:red", label="P(bad debt)")
    ax.axhline(target_prob, color="tab:red", linestyle=":", linewidth=1, label=f"target {target_prob:g}")
    ax.set_xlabel("liquidation threshold lt")
    ax.set_ylabel("probability of bad debt (boundary account)")
    ax2 = ax.twinx()
    ax2.plot(c.lt, c.borrowing_power, color="tab:blue", label="borrowing power (ltv)")
    ax2.set_ylabel(r"borrowing power, \$ per \$ of collateral")
    m = choice.metrics
    ax.axvline(m.lt, color="black", linewidth=1)
    ax2.plot([m.lt], [m.ltv], "o", color="black")
    ax2.annotate(f"lt {m.lt:.3f}, ltv {m.ltv:.3f}", (m.lt, m.ltv), textcoords="offset points", xytext=(-110, 8))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
