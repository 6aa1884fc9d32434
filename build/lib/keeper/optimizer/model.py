"""The optimizer's model: from one `OptimizerInputs` and, when read from a chain, the `Measured` values, build the
stress simulation and targets (docs/risk-model.md), solve for an asset's lt and ltv, and say the answer as a
table or one JSON object. No argparse and no chain here: `keeper optimize` (keeper/cli/optimize.py) and
`keeper run`'s job (keeper/optimizer/job.py) fill the inputs and read the chain.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from keeper.core.errors import KeeperError
from keeper.optimizer import stress
from keeper.optimizer.inputs import (
    BUFFER_HORIZON_S,
    DELAY_S,
    HEARTBEAT_S,
    HORIZON_S,
    JUMP_INTENSITY,
    JUMP_MEAN,
    JUMP_VOL,
    LT_MAX,
    MAX_DISCOUNT,
    MIN_DISCOUNT,
    MIN_PATHS,
    STEP_S,
    OptimizerInputs,
)

WAD = 10**18
STATIC = (0.67, 0.60)  # the static baseline: 150 % collateral at the liquidation threshold


class OptimizeError(KeeperError):
    """Bad optimizer input."""


@dataclass(frozen=True)
class Measured:
    """What `--asset` read from the chain."""

    symbol: str
    rounds: int
    span_s: float
    realized: float
    ewma: float
    sigma: float
    jump_intensity: float
    jump_mean: float
    jump_vol: float
    heartbeat_s: float
    min_discount: float
    max_discount: float
    lt: float  # effective now
    ltv: float
    lt_max: float | None  # the on-chain bounds' ceiling, when set
    feed: str = ""  # the feed the router prices the asset with, whose rounds were read
    phases: tuple[int, ...] = ()  # its proxy phases read, newest first


@dataclass(frozen=True)
class HistoryNeed:
    """The least feed history a measured volatility is trusted from (docs/risk-model.md): `rounds` valid rounds at
    distinct times spanning `days`, and a σ (the larger of the EWMA and the jump-free σ) of at least `sigma`.
    `advice` says what the operator can do, in the caller's words (flags or settings)."""

    rounds: int
    days: float
    sigma: float
    advice: str


def _pick(given: float | None, measured: float | None, default: float) -> float:
    if given is not None:
        return given
    return measured if measured is not None else default


def calm_simulation(sim: stress.Simulation, inputs: OptimizerInputs) -> stress.Simulation | None:
    """The calm market the ltv buffer is set in (`inputs.calm_sigma`): the same oracle and keeper, no jumps."""
    if inputs.calm_sigma is None:
        return None
    try:
        return replace(
            sim,
            market=stress.Market(sigma=inputs.calm_sigma),
            horizon_s=_pick(inputs.buffer_horizon_s, None, BUFFER_HORIZON_S),
            seed=sim.seed + 1,
        )
    except stress.StressError as exc:
        raise OptimizeError(f"calm market: {exc}") from exc


def build(inputs: OptimizerInputs, m: Measured | None) -> tuple[stress.Simulation, stress.Targets]:
    """The simulation and targets from the given inputs, measured values and defaults, in that order of
    precedence."""
    sigma = inputs.sigma if inputs.sigma is not None else (max(m.sigma, m.ewma) if m else None)
    if sigma is None:
        raise OptimizeError("give the volatility with --sigma, or measure it from a chain with --asset SYMBOL")
    if inputs.paths < MIN_PATHS:
        raise OptimizeError(f"--paths must be at least {MIN_PATHS} for a tail probability to mean anything")
    lt_max = _pick(inputs.lt_max, m.lt_max if m else None, LT_MAX)
    try:
        sim = stress.Simulation(
            market=stress.Market(
                sigma=sigma,
                jump_intensity=_pick(inputs.jump_intensity, m.jump_intensity if m else None, JUMP_INTENSITY),
                jump_mean=_pick(inputs.jump_mean, m.jump_mean if m else None, JUMP_MEAN),
                jump_vol=_pick(inputs.jump_vol, m.jump_vol if m else None, JUMP_VOL),
            ),
            oracle=stress.Oracle(
                deviation=inputs.oracle_deviation,
                heartbeat_s=_pick(inputs.heartbeat_s, m.heartbeat_s if m else None, HEARTBEAT_S),
            ),
            liquidation=stress.Liquidation(
                delay_s=_pick(inputs.delay_s, None, DELAY_S),
                min_discount=_pick(inputs.min_discount, m.min_discount if m else None, MIN_DISCOUNT),
                max_discount=_pick(inputs.max_discount, m.max_discount if m else None, MAX_DISCOUNT),
                slippage_depth_usd=inputs.slippage_depth_usd,
                position_usd=inputs.position_usd,
            ),
            horizon_s=_pick(inputs.horizon_s, None, HORIZON_S),
            step_s=_pick(inputs.step_s, None, STEP_S),
            paths=inputs.paths,
            seed=inputs.seed,
        )
        targets = stress.Targets(
            p_bad_debt=inputs.target_prob,
            shortfall=inputs.shortfall_budget,
            p_liquidation=inputs.liq_prob,
            lt_max=lt_max,
        )
    except stress.StressError as exc:
        raise OptimizeError(str(exc)) from exc
    return sim, targets


@dataclass(frozen=True)
class Result:
    sim: stress.Simulation
    targets: stress.Targets
    choice: stress.Choice
    baseline: stress.Metrics
    current: stress.Metrics | None
    seconds: float
    curve: stress.Curve | None  # only when asked for (the plot): 60 evaluations nobody else reads
    calm: stress.Simulation | None = None


def solve(
    sim: stress.Simulation,
    targets: stress.Targets,
    current: tuple[float, float] | None = None,
    calm: stress.Simulation | None = None,
    with_curve: bool = False,
) -> Result:
    started = time.perf_counter()
    out = stress.simulate(sim)
    calm_out = stress.simulate(calm) if calm is not None else None
    seconds = time.perf_counter() - started
    liq = sim.liquidation
    return Result(
        sim=sim,
        targets=targets,
        choice=stress.optimize(out, targets, liq, calm_out),
        baseline=stress.evaluate(out, STATIC[0], STATIC[1], liq, calm_out),
        current=stress.evaluate(out, current[0], current[1], liq, calm_out) if current else None,
        seconds=seconds,
        curve=stress.curve(out, targets, liq, calm_out) if with_curve else None,
        calm=calm,
    )


def to_json(r: Result, m: Measured | None) -> dict[str, Any]:
    c = r.choice
    doc: dict[str, Any] = {
        **asdict(c.metrics),
        "buffer": c.buffer,
        "binding": c.binding,
        "lt_by_probability": c.lt_by_probability,
        "lt_by_shortfall": c.lt_by_shortfall,
        "lt_ci95": list(c.lt_ci),
        "paths": c.paths,
        "steps": r.sim.steps,
        "seconds": round(r.seconds, 3),
        "inputs": {
            "market": asdict(r.sim.market),
            "oracle": asdict(r.sim.oracle),
            "liquidation": asdict(r.sim.liquidation),
            "horizon_s": r.sim.horizon_s,
            "step_s": r.sim.step_s,
            "seed": r.sim.seed,
            "targets": asdict(r.targets),
            "buffer_market": asdict(r.calm.market) if r.calm else None,
            "buffer_horizon_s": r.calm.horizon_s if r.calm else r.sim.horizon_s,
        },
        "baseline": asdict(r.baseline),
    }
    if m is not None:
        doc["measured"] = asdict(m)
    if r.current is not None:
        doc["current"] = asdict(r.current)
    return doc


def _pct(x: float) -> str:
    return f"{x * 100:.3g} %" if x else "0 %"


def table(r: Result, m: Measured | None) -> str:
    s, c = r.sim, r.choice
    mk, orc, liq = s.market, s.oracle, s.liquidation
    lines = []
    if m is not None:
        phases = f", phases {', '.join(map(str, m.phases))}" if len(m.phases) > 1 else ""
        lines.append(
            f"{m.symbol}: {m.rounds} rounds over {m.span_s / 86400:.1f} days (feed {m.feed}{phases}); realised σ "
            f"{m.realized:.3f}, EWMA σ {m.ewma:.3f}, diffusion σ {m.sigma:.3f}, {m.jump_intensity:.1f} jumps/year"
        )
    jumps = (
        f"{mk.jump_intensity:g}/year of mean {mk.jump_mean:+.3f}, vol {mk.jump_vol:.3f}" if mk.jump_intensity else "off"
    )
    lag = f"{_pct(orc.deviation)} deviation, {orc.heartbeat_s:g} s heartbeat" if orc.deviation else "none (follows)"
    slip = f"depth ${liq.slippage_depth_usd:,.0f} for ${liq.position_usd:,.0f}" if liq.slippage_depth_usd else "off"
    lines += [
        f"σ {mk.sigma:.3f}; jumps {jumps}; oracle lag {lag}",
        f"keeper delay {liq.delay_s:g} s; discount {_pct(liq.min_discount)}..{_pct(liq.max_discount)}; slippage {slip}",
        f"{c.paths:,} paths × {s.steps:,} steps of {s.step_s:g} s (horizon {s.horizon_s / 3600:g} h), seed {s.seed}, "
        f"{r.seconds:.1f} s",
        "",
        f"{'':10} {'lt':>7} {'ltv':>7} {'P(bad debt)':>12} {'E[shortfall]':>13} {'P(liq)':>8} {'E[penalty]':>11}"
        f" {'power':>7}",
    ]
    rows = [("chosen", c.metrics), ("static", r.baseline)]
    if r.current is not None:
        rows.append(("on-chain", r.current))
    for name, mt in rows:
        lines.append(
            f"{name:10} {mt.lt:7.4f} {mt.ltv:7.4f} {_pct(mt.p_bad_debt):>12} {_pct(mt.expected_shortfall):>13} "
            f"{_pct(mt.p_liquidation):>8} {_pct(mt.expected_penalty):>11} {mt.borrowing_power:7.4f}"
        )
    buffer_h = (r.calm.horizon_s if r.calm else s.horizon_s) / 3600
    calm_note = f" in a calm market (σ {r.calm.market.sigma:g}, no jumps)" if r.calm else ""
    why = {
        "probability": f"P(bad debt) <= {r.targets.p_bad_debt:g}",
        "shortfall": f"E[shortfall] <= {r.targets.shortfall:g} per $",
        "cap": f"the cap min(lt max {r.targets.lt_max:g}, 1/(1 + max discount))",
    }[c.binding]
    lines += [
        "",
        f"lt set by {why}; by probability alone {c.lt_by_probability:.4f} (95 % {c.lt_ci[0]:.4f}..{c.lt_ci[1]:.4f}),"
        f" by shortfall alone {c.lt_by_shortfall:.4f}",
        f"buffer lt - ltv = {c.buffer:.4f}: P(liquidated within {buffer_h:g} h | opened at ltv) <= "
        f"{r.targets.p_liquidation:g}{calm_note}; borrowing power "
        f"{c.metrics.borrowing_power / STATIC[1] - 1:+.0%} vs static",
    ]
    return "\n".join(lines)


def history_need(inputs: OptimizerInputs, advice: str) -> HistoryNeed:
    """The least history a volatility is measured from (`--min-rounds`, `--min-history-days`, `--min-sigma`),
    checked with the window it is read from."""
    if inputs.min_rounds < 3:
        raise OptimizeError(f"--min-rounds {inputs.min_rounds}: at least 3 rounds are needed for any estimate")
    if inputs.max_rounds < inputs.min_rounds:
        raise OptimizeError(f"--max-rounds {inputs.max_rounds} is below --min-rounds {inputs.min_rounds}; raise it")
    for flag, value in (("--min-history-days", inputs.min_history_days), ("--min-sigma", inputs.min_sigma)):
        if not value >= 0:
            raise OptimizeError(f"{flag} {value:g}: must be 0 or more")
    if inputs.window_s <= 0:
        raise OptimizeError(f"--window-s {inputs.window_s:g}: must be positive")
    return unchecked_need(inputs, advice)


def unchecked_need(inputs: OptimizerInputs, advice: str) -> HistoryNeed:
    """The history need as given, for callers whose inputs were validated already (the keeper's settings)."""
    return HistoryNeed(inputs.min_rounds, inputs.min_history_days, inputs.min_sigma, advice)
