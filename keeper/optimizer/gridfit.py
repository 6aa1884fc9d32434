"""`keeper optimize --grid`: a scenario grid for the engine, from the feeds' joint history (docs/portfolio-margin.md,
"Choosing a grid"; docs/risk-model.md, "Correlation and joint Monte Carlo").

1. **Joint market.** Every listed collateral's feed and the debt asset's are read back over the window
   (`volatility.read_history`), put on one time grid, and their EWMA covariance estimated
   (`correlation.estimate_joint`), each volatility the larger of the EWMA and sample ones. A collateral whose feed
   barely moves is refused, as `keeper optimize --asset` refuses it: a frozen feed would get no haircut. A debt
   asset whose feed barely moves (a stablecoin) is held at 1 in every scenario and left out of the estimate.
2. **Template.** One scenario where every volatile asset falls together by one standard deviation over the horizon,
   and for each volatile asset one where it falls and one where it rises by one standard deviation while every other
   asset moves by its conditional mean (`cov(a, b) / var(a)` times the move). Joint scenarios are what give correlation
   credit: a stETH/ETH loop is priced by how far stETH falls *when ETH does*, not by the sum of two worst cases.
3. **Calibration.** The template's moves are scaled by one factor (`basket.calibrate_scale`), the smallest under
   which every reference book of the market (each collateral alone against the debt, and an equal-weighted basket
   of all of them), sized to grid health 1, ends the horizon insolvent on at most `--target-prob` of the correlated
   Monte Carlo paths (GBM with the measured covariance, plus a common jump from the jump flags).
4. **Columns.** Multipliers in whole millionths as the engine stores them, each rounded against the account
   (collateral down, the debt up), within the engine's bounds.
5. **Update.** `--apply` sends the risk keeper's `updateGrid`: each multiplier moves toward its target at most
   `maxStep` millionths, inside governance's bounds, no sooner than `minInterval`, and the engine ramps it in.
   The risk keeper cannot create a grid or change its size: with no grid, or a grid of another size, governance
   must call `setGrid` (`--dry-run` prints that call for the admin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.types import BlockIdentifier, TxParams

from keeper.chain.deployment import Deployment
from keeper.core.errors import KeeperError
from keeper.core.grid import pack, unpack
from keeper.optimizer import basket, correlation, volatility
from keeper.optimizer.correlation import F64, CommonJump, JointMarket
from keeper.optimizer.stress import SECONDS_PER_YEAR

MILLION = 1_000_000
MIN_MOVE = 100  # the engine's bounds, in millionths: 0.0001x ...
MAX_MOVE = 100 * MILLION  # ... to 100x
MAX_SCENARIOS = 32
DEAD_BAND = 1_000  # millionths: moves smaller than 0.1 % are not worth a transaction
# IScenarioGrid.GridView: count, config, limits, then the target, rampFrom, effective, lower and upper columns.
GRID_VIEW = "(uint8,(uint64,uint40,uint40,uint40),(uint32,uint32,uint32)" + ",uint256[4]" * 5 + ")"
_GRID_SELECTOR = bytes(Web3.keccak(text="grid(address)")[:4])
UPDATE_GRID = "updateGrid(address[],uint256[4][])"
SET_GRID = "setGrid(uint8,uint64,address[],uint256[4][])"


class GridFitError(KeeperError):
    """The grid cannot be chosen or applied from these inputs; the message says what to change."""


# ------------------------------------------------------------------------------------------ the joint market


@dataclass(frozen=True)
class Asset:
    symbol: str
    token: str
    feed: str
    debt: bool = False


@dataclass(frozen=True)
class JointInputs:
    """What the grid is chosen from: the market's assets, the joint estimate of the volatile ones, and the assets
    held at 1 (a flat debt asset)."""

    assets: tuple[Asset, ...]
    market: JointMarket
    estimate: correlation.JointEstimate
    held: tuple[str, ...] = ()
    rounds: Mapping[str, int] = field(default_factory=dict)


def market_assets(w3: Web3, dep: Deployment, block: BlockIdentifier) -> tuple[Asset, ...]:
    """The deployment's collaterals and its debt asset, each with the feed the router prices it by."""
    router = w3.eth.contract(address=Web3.to_checksum_address(dep.router), abi=dep.abis["OracleRouter"])
    out = []
    for a, debt in [*((a, False) for a in dep.assets), (dep.debt, True)]:
        feed = str(router.functions.feedConfig(Web3.to_checksum_address(a.token)).call(block_identifier=block)[0])
        if int(feed, 16) == 0:
            raise GridFitError(f"{a.symbol} has no feed on the router {dep.router}; governance sets it (setFeed)")
        out.append(Asset(a.symbol, Web3.to_checksum_address(a.token), feed, debt))
    return tuple(out)


def measure_joint(
    w3: Web3,
    assets: Sequence[Asset],
    window_s: float,
    max_rounds: int,
    step_s: float,
    min_rounds: int,
    min_sigma: float,
    min_days: float,
    common: CommonJump | None,
    block: int,
    now: int,
) -> JointInputs:
    """Read every feed's rounds over the window and estimate the joint market of the volatile assets. Refused
    (GridFitError) when a collateral has fewer than `min_rounds` rounds or a σ below `min_sigma`, or when the feeds'
    common history is shorter than `min_days`."""
    histories: dict[str, list[volatility.Round]] = {}
    rounds: dict[str, int] = {}
    held: list[str] = []
    for a in assets:
        try:
            h = volatility.read_history(w3, a.feed, max_rounds, since=now - int(window_s), block=block)
        except volatility.FeedError as exc:
            raise GridFitError(f"{a.symbol}: {exc}") from exc
        rs = list(h.rounds)
        rounds[a.symbol] = len(rs)
        sigma = volatility.estimate(rs).sigma if len(rs) >= 3 else 0.0
        if len(rs) < min_rounds:
            if a.debt and sigma < min_sigma:
                held.append(a.symbol)
                continue
            raise GridFitError(
                f"{a.symbol}'s feed {a.feed} has {len(rs)} rounds in the last {window_s / 86400:g} days; at least "
                f"{min_rounds} are needed to measure its co-movement: wait for more rounds, widen --window-s or "
                "lower --min-rounds"
            )
        if sigma < min_sigma:
            if a.debt:
                held.append(a.symbol)  # a stablecoin debt: held at 1
                continue
            raise GridFitError(
                f"{a.symbol}'s feed {a.feed} gives σ {sigma:.4f}, below --min-sigma {min_sigma:g}: a frozen feed would "
                "get no haircut; no grid is chosen from it"
            )
        histories[a.symbol] = rs
    if not histories:
        raise GridFitError("no asset of the market has a moving feed: nothing to calibrate a grid on")
    try:
        est = correlation.estimate_joint(histories, step_s, window_s)
    except correlation.CorrelationError as exc:
        raise GridFitError(f"the feeds' joint history: {exc}") from exc
    if est.span_s < min_days * 86_400:
        raise GridFitError(
            f"the feeds overlap for {est.span_s / 86_400:.2f} days, less than --min-history-days {min_days:g}: no grid "
            "is moved on thin data; wait for more rounds or lower --min-history-days"
        )
    loads = {a: 1.0 for a in est.assets}
    jump = None if common is None else CommonJump(common.intensity, common.mean, common.vol, loads)
    market = JointMarket(est.assets, conservative_covariance(est), jump)
    return JointInputs(tuple(assets), market, est, tuple(held), rounds)


def conservative_covariance(est: correlation.JointEstimate) -> F64:
    """The EWMA correlation with each asset's volatility the larger of its EWMA and sample estimates, as `keeper
    optimize --asset` takes the larger σ: a calm recent stretch must not loosen the grid. PSD, as the EWMA
    correlation is."""
    sample_vols = np.sqrt(np.maximum(np.diag(est.sample), 0.0))
    vols = np.maximum(est.vols, sample_vols)
    return np.asarray(est.correlation * np.outer(vols, vols), dtype=np.float64)


# ---------------------------------------------------------------------------------------- template and books


def template(market: JointMarket, horizon_s: float) -> list[dict[str, float]]:
    """The joint fall, and each asset's fall and rise with the others at their conditional mean (see the module
    docstring). Moves are one standard deviation of the log price over the horizon; calibration scales them."""
    cov = np.asarray(market.covariance, dtype=np.float64)
    tau = horizon_s / SECONDS_PER_YEAR
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0) * tau)
    names = market.assets
    grid: list[dict[str, float]] = [{a: math.exp(-float(sd[i])) for i, a in enumerate(names)}]
    for i in range(len(names)):
        if sd[i] <= 0:
            continue
        beta = cov[:, i] / cov[i, i]  # the conditional mean of each log move given asset i's
        for sign in (-1.0, 1.0):
            grid.append({b: math.exp(sign * float(beta[k] * sd[i])) for k, b in enumerate(names)})
    if len(grid) > MAX_SCENARIOS:
        raise GridFitError(f"{len(grid)} scenarios for {len(names)} assets: the engine takes at most {MAX_SCENARIOS}")
    return grid


def market_books(collateral: Sequence[str], debt: str) -> list[basket.Book]:
    """The market's reference books: each collateral alone against the debt, and all of them in equal parts."""
    books = [basket.Book(f"{c}/{debt}", {c: 100_000.0}, {debt: 70_000.0}) for c in collateral if c != debt]
    if len(collateral) > 1:
        books.append(
            basket.Book(f"basket/{debt}", {c: 100_000.0 / len(collateral) for c in collateral}, {debt: 70_000.0})
        )
    return books


@dataclass(frozen=True)
class BookRow:
    name: str
    grid_health: float  # the calibrated grid's health of the book as given
    additive_health: float  # today's rule with the engine's lt
    p_insolvent: float  # sized to grid health 1
    collateral_vs_additive: float  # initial collateral the grid asks over what the additive rule asks, minus 1


@dataclass(frozen=True)
class GridChoice:
    scenarios: list[dict[str, float]]  # float multipliers by symbol (held assets at 1)
    columns: dict[str, list[int]]  # millionths by symbol, as the engine stores them
    scale: float
    binding_book: str
    books: tuple[BookRow, ...]
    paths: int
    horizon_s: float
    target: float


def calibrate(
    inputs: JointInputs, lt: Mapping[str, float], horizon_s: float, paths: int, seed: int, target: float
) -> GridChoice:
    """The calibrated grid (module docstring, steps 2-4) and how each reference book fares under it."""
    market = inputs.market
    debt = next(a.symbol for a in inputs.assets if a.debt)
    collateral = [a.symbol for a in inputs.assets if not a.debt]
    ratios = correlation.simulate(market, horizon_s, paths, seed)
    names = list(market.assets)
    sim_assets = [*names, *inputs.held]
    full = np.hstack([ratios, np.ones((ratios.shape[0], len(inputs.held)))]) if inputs.held else ratios
    books = market_books(collateral, debt)
    try:
        cal = basket.calibrate_scale(template(market, horizon_s), books, sim_assets, full, target)
    except correlation.CorrelationError as exc:
        raise GridFitError(f"no grid meets the target {target:g}: {exc}") from exc
    scenarios = [{**dict.fromkeys(inputs.held, 1.0), **s} for s in cal.grid]
    columns = to_columns(scenarios, [a.symbol for a in inputs.assets], debt)
    stored = [{a: m / MILLION for a, m in ((a, columns[a][i]) for a in columns)} for i in range(len(scenarios))]
    rows = []
    for book in books:
        h = basket.grid_health(book, stored)
        add = basket.additive_health(book, lt)
        rows.append(
            BookRow(
                book.name,
                h,
                add,
                basket.insolvency_probability(book, stored, sim_assets, full),
                add / h - 1 if h > 0 else math.inf,
            )
        )
    return GridChoice(scenarios, columns, cal.scale, cal.binding, tuple(rows), paths, horizon_s, target)


def to_columns(scenarios: Sequence[Mapping[str, float]], order: Sequence[str], debt: str) -> dict[str, list[int]]:
    """Whole millionths, rounded against the account: collateral down, the debt up; within the engine's bounds."""
    out: dict[str, list[int]] = {}
    for a in order:
        col = []
        for s in scenarios:
            m = s.get(a, 1.0) * MILLION
            col.append(min(MAX_MOVE, max(MIN_MOVE, math.ceil(m - 1e-6) if a == debt else math.floor(m + 1e-6))))
        out[a] = col
    return out


# ------------------------------------------------------------------------------------------------ on chain


@dataclass(frozen=True)
class OnchainGrid:
    count: int
    initial_scale: int
    ramp_end: int
    last_update: int
    max_step: int
    min_interval: int
    ramp_duration: int
    effective: dict[str, Sequence[int]]  # by symbol
    lower: dict[str, Sequence[int]]
    upper: dict[str, Sequence[int]]


def read_grid(w3: Web3, engine: str, assets: Sequence[Asset], block: BlockIdentifier = "latest") -> OnchainGrid:
    """`IScenarioGrid.grid(asset)` for every asset, at one block."""
    views = {}
    for a in assets:
        call: TxParams = {
            "to": Web3.to_checksum_address(engine),
            "data": _GRID_SELECTOR + abi_encode(["address"], [a.token]),
        }
        (views[a.symbol],) = abi_decode([GRID_VIEW], bytes(w3.eth.call(call, block)))
    first: Any = next(iter(views.values()))
    count = int(first[0])
    (scale, _start, end, last), (max_step, min_interval, ramp) = first[1], first[2]
    return OnchainGrid(
        count,
        int(scale),
        int(end),
        int(last),
        int(max_step),
        int(min_interval),
        int(ramp),
        {s: unpack(v[5], count) for s, v in views.items()},
        {s: unpack(v[6], count) for s, v in views.items()},
        {s: unpack(v[7], count) for s, v in views.items()},
    )


@dataclass(frozen=True)
class GridStep:
    """One bounded `updateGrid`: the columns to send (by symbol: the assets the risk keeper may move) and how far
    each moved."""

    columns: dict[str, list[int]]
    target: dict[str, list[int]]
    largest_move: int  # millionths
    clamped: int  # multipliers held back by governance's bounds or steps


def plan_step(choice: GridChoice, on: OnchainGrid, now: int) -> GridStep | str:
    """The risk keeper's next step toward the choice, or why there is none."""
    count = len(choice.scenarios)
    if on.count == 0:
        return (
            "the engine has no grid (additive rule): the risk keeper cannot create one; governance sets it with "
            f"setGrid ({count} scenarios; --dry-run prints the call)"
        )
    if on.count != count:
        return (
            f"the engine's grid has {on.count} scenarios and this market's calibrated grid {count}: the risk keeper "
            "cannot change the size; governance sets the new grid with setGrid (--dry-run prints the call)"
        )
    if on.max_step == 0:
        return "governance has not set the grid's bounds (setGridBounds): the risk keeper may not move it"
    if now < on.last_update + on.min_interval:
        return f"too soon: the next grid update is allowed at {on.last_update + on.min_interval} (now {now})"
    if now < on.ramp_end:
        # The column in force moves every second while it ramps: a step sized now could exceed maxStep by the
        # block that includes it.
        return f"the last grid update is still ramping in, until {on.ramp_end} (now {now})"
    columns: dict[str, list[int]] = {}
    largest = clamped = 0
    for symbol, target in choice.columns.items():
        lows, highs = on.lower[symbol], on.upper[symbol]
        if any(lo == 0 and hi == 0 for lo, hi in zip(lows, highs, strict=True)):
            # Governance left some scenario of this asset without bounds: the engine lets the risk keeper move
            # none of its column, so it is not sent and keeps the value in force.
            clamped += sum(w != c for w, c in zip(target, on.effective[symbol], strict=True))
            continue
        col = []
        for s, want in enumerate(target):
            cur, lo, hi = on.effective[symbol][s], lows[s], highs[s]
            goal = min(hi, max(lo, want))
            step = max(-on.max_step, min(on.max_step, goal - cur))
            clamped += cur + step != want
            largest = max(largest, abs(step))
            col.append(cur + step)
        columns[symbol] = col
    if largest < DEAD_BAND:
        return f"the grid in force is within {DEAD_BAND / MILLION:.1%} of the choice (or bounds hold it there)"
    return GridStep(columns, dict(choice.columns), largest, clamped)


def update_calldata(assets: Sequence[Asset], step: GridStep) -> str:
    """`updateGrid` of the assets the step moves (the others keep their column)."""
    moved = [a for a in assets if a.symbol in step.columns]
    data = bytes(Web3.keccak(text=UPDATE_GRID)[:4]) + abi_encode(
        ["address[]", "uint256[4][]"], [[a.token for a in moved], [pack(step.columns[a.symbol]) for a in moved]]
    )
    return "0x" + data.hex()


def set_grid_calldata(tokens: Sequence[str], columns: Sequence[Sequence[int]], initial_scale: int) -> str:
    """Governance's `setGrid` (the admin sends it; the risk keeper cannot): `columns[i]` is `tokens[i]`'s
    multipliers in whole millionths, one per scenario."""
    data = bytes(Web3.keccak(text=SET_GRID)[:4]) + abi_encode(
        ["uint8", "uint64", "address[]", "uint256[4][]"],
        [len(columns[0]), initial_scale, list(tokens), [pack(c) for c in columns]],
    )
    return "0x" + data.hex()


def covariance_table(inputs: JointInputs) -> list[str]:
    """The volatilities used and the correlations, for the report."""
    est = inputs.estimate
    lines = ["asset      σ (annual)  " + "  ".join(f"{a:>8}" for a in est.assets)]
    corr: F64 = est.correlation
    for i, a in enumerate(est.assets):
        row = "  ".join(f"{corr[i, k]:8.3f}" for k in range(len(est.assets)))
        lines.append(f"{a:<10} {math.sqrt(inputs.market.covariance[i, i]):10.3f}  {row}")
    return lines
