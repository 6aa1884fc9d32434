"""`keeper optimize`: choose an asset's lt and ltv from its risk (docs/risk-model.md).

Inputs come from flags, or are measured from a live chain with `--asset SYMBOL` (the feed's round history for the
volatility and jumps, the engine for the discount schedule, the router for the heartbeat); a flag always wins over a
measured value. Prints a table, or one JSON object with `--json`; `--plot` draws the trade-off; `--apply` moves the
on-chain parameters one bounded step toward the choice through the keeper's transaction manager.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from keeper.core.errors import KeeperError
from keeper.optimizer import stress

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("market (a flag wins over a value measured with --asset)")
    g.add_argument("--sigma", type=float, metavar="S", help="annualised volatility, e.g. 0.8")
    g.add_argument("--jump-intensity", type=float, metavar="N", help="jumps per year (0 = no jumps; default 0)")
    g.add_argument("--jump-mean", type=float, metavar="M", help="mean log jump size, e.g. -0.08 (default 0)")
    g.add_argument("--jump-vol", type=float, metavar="V", help="standard deviation of the log jump size (default 0)")
    g = p.add_argument_group("oracle, keeper and liquidity")
    g.add_argument("--oracle-deviation", type=float, metavar="F", help="deviation threshold (0 = no lag; 0.005)")
    g.add_argument("--heartbeat-s", type=float, metavar="S", help="heartbeat (0 = none; default 3600)")
    g.add_argument("--delay-s", type=float, metavar="S", help="keeper reaction delay in seconds (default 60)")
    g.add_argument("--slippage-depth-usd", type=float, metavar="USD", help="liquidity depth (0 = no slippage)")
    g.add_argument("--position-usd", type=float, metavar="USD", help="collateral sold at once (default 1,000,000)")
    g.add_argument("--min-discount", type=float, metavar="F", help="discount just below health 1 (default 0.005)")
    g.add_argument("--max-discount", type=float, metavar="F", help="discount cap (default 0.10)")
    g = p.add_argument_group("targets and simulation")
    g.add_argument("--target-prob", type=float, default=0.01, metavar="P", help="max P(bad debt) (default 0.01)")
    g.add_argument(
        "--shortfall-budget", type=float, default=0.001, metavar="F", help="max E[bad debt] per $ of debt (0.001)"
    )
    g.add_argument(
        "--liq-prob",
        type=float,
        default=0.05,
        metavar="P",
        help="max P(an account opened at ltv is liquidated within the horizon); sets the buffer (default 0.05)",
    )
    g.add_argument(
        "--calm-sigma",
        type=float,
        metavar="S",
        help="set the ltv buffer in a calm market (this volatility, no jumps) instead of the stressed one",
    )
    g.add_argument(
        "--buffer-horizon-s", type=float, metavar="S", help="horizon of the calm-market buffer (default 86400)"
    )
    g.add_argument("--lt-max", type=float, metavar="F", help="cap on lt (default: the on-chain bound, else 0.99)")
    g.add_argument("--horizon-s", type=float, metavar="S", help="horizon (default 86400)")
    g.add_argument("--step-s", type=float, metavar="S", help="time step (default 60)")
    g.add_argument("--paths", type=int, default=200_000, metavar="N", help="Monte Carlo paths (default 200000)")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    g.add_argument(
        "--from-scenario",
        metavar="NAME:SYMBOL",
        help="stress regime from a drill scenario's path: its moves of SYMBOL as jumps (intensity, mean, vol), its "
        "duration as the horizon, its block time as delay and step",
    )
    g = p.add_argument_group("live chain")
    g.add_argument("--asset", metavar="SYMBOL", help="measure the inputs for this collateral from the chain")
    g.add_argument("--window-s", type=float, default=30 * 86400, metavar="S", help="history window (30 days)")
    g.add_argument("--max-rounds", type=int, default=5000, metavar="N", help="feed rounds to read at most (5000)")
    g.add_argument(
        "--min-rounds",
        type=int,
        default=_setting_default("optimize_min_rounds"),
        metavar="N",
        help="refuse a volatility measured from fewer feed rounds (default %(default)s)",
    )
    g.add_argument(
        "--min-history-days",
        type=float,
        default=_setting_default("optimize_min_history_days"),
        metavar="D",
        help="refuse a volatility measured over fewer days of rounds (default %(default)s)",
    )
    g.add_argument(
        "--min-sigma",
        type=float,
        default=_setting_default("optimize_min_sigma"),
        metavar="S",
        help="refuse a measured volatility below this: a frozen feed (default %(default)s)",
    )
    g.add_argument("--apply", action="store_true", help="send the bounded on-chain update (needs the role)")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="show the transaction --apply would send (calldata, simulation) and send nothing",
    )
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--plot", type=Path, metavar="PNG", help="write the bad-debt / borrowing-power plot here")


def _setting_default(name: str) -> Any:
    """The keeper setting's default, so `keeper optimize` and `keeper run`'s job ask for the same history."""
    from keeper.engine.settings import Settings

    return Settings.model_fields[name].default


CLI_ADVICE = (
    "wait for more rounds, widen --window-s, lower --min-rounds / --min-history-days / --min-sigma, or give --sigma"
)


def _pick(flag: float | None, measured: float | None, default: float) -> float:
    if flag is not None:
        return flag
    return measured if measured is not None else default


def scenario_regime(spec: str) -> dict[str, float]:
    """The stress inputs a scenario's price path implies for one asset: every change of its price is a jump."""
    from keeper.drills.scenario import load_scenario

    name, _, symbol = spec.rpartition(":")
    if not name or not symbol:
        raise OptimizeError(f"--from-scenario {spec!r}: expected NAME:SYMBOL, e.g. black-thursday:WETH")
    sc = load_scenario(name)
    collateral = [a.symbol for a in sc.assets if not a.quote]
    if symbol.upper() not in collateral:
        raise OptimizeError(f"--from-scenario: {sc.name} has no collateral {symbol!r}; it has {', '.join(collateral)}")
    path = sc.price_path(symbol.upper())
    moves = [math.log(b / a) for (_, a), (_, b) in itertools.pairwise(path) if a > 0 and b > 0 and b != a]
    if len(moves) < 2 or sc.duration_s <= 0:
        raise OptimizeError(f"--from-scenario: {sc.name} moves {symbol} fewer than twice; nothing to calibrate on")
    mean = sum(moves) / len(moves)
    return {
        "jump_intensity": len(moves) / sc.duration_s * stress.SECONDS_PER_YEAR,
        "jump_mean": mean,
        "jump_vol": math.sqrt(sum((m - mean) ** 2 for m in moves) / len(moves)),
        "horizon_s": float(sc.duration_s),
        "delay_s": float(sc.block_time_s),
        "step_s": float(sc.block_time_s),
    }


def calm_simulation(sim: stress.Simulation, sigma: float | None, horizon_s: float | None) -> stress.Simulation | None:
    """The calm market the ltv buffer is set in: the same oracle and keeper, `sigma`, no jumps."""
    if sigma is None:
        return None
    try:
        return replace(
            sim,
            market=stress.Market(sigma=sigma),
            horizon_s=horizon_s if horizon_s is not None else 86400.0,
            seed=sim.seed + 1,
        )
    except stress.StressError as exc:
        raise OptimizeError(f"calm market: {exc}") from exc


def build(args: argparse.Namespace, m: Measured | None) -> tuple[stress.Simulation, stress.Targets]:
    """The simulation and targets from flags, measured values and defaults, in that order of precedence."""
    sigma = args.sigma if args.sigma is not None else (max(m.sigma, m.ewma) if m else None)
    if sigma is None:
        raise OptimizeError("give the volatility with --sigma, or measure it from a chain with --asset SYMBOL")
    if args.paths < 1000:
        raise OptimizeError("--paths must be at least 1000 for a tail probability to mean anything")
    lt_max = _pick(args.lt_max, m.lt_max if m else None, 0.99)
    try:
        sim = stress.Simulation(
            market=stress.Market(
                sigma=sigma,
                jump_intensity=_pick(args.jump_intensity, m.jump_intensity if m else None, 0.0),
                jump_mean=_pick(args.jump_mean, m.jump_mean if m else None, 0.0),
                jump_vol=_pick(args.jump_vol, m.jump_vol if m else None, 0.0),
            ),
            oracle=stress.Oracle(
                deviation=_pick(args.oracle_deviation, None, 0.005),
                heartbeat_s=_pick(args.heartbeat_s, m.heartbeat_s if m else None, 3600.0),
            ),
            liquidation=stress.Liquidation(
                delay_s=_pick(args.delay_s, None, 60.0),
                min_discount=_pick(args.min_discount, m.min_discount if m else None, 0.005),
                max_discount=_pick(args.max_discount, m.max_discount if m else None, 0.10),
                slippage_depth_usd=_pick(args.slippage_depth_usd, None, 0.0),
                position_usd=_pick(args.position_usd, None, 1_000_000.0),
            ),
            horizon_s=_pick(args.horizon_s, None, 86400.0),
            step_s=_pick(args.step_s, None, 60.0),
            paths=args.paths,
            seed=args.seed,
        )
        targets = stress.Targets(
            p_bad_debt=args.target_prob,
            shortfall=args.shortfall_budget,
            p_liquidation=args.liq_prob,
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


def run(args: argparse.Namespace) -> int:
    measured: Measured | None = None
    current: tuple[float, float] | None = None
    chain: Any = None
    if args.plot is not None and not args.plot.resolve().parent.is_dir():
        raise OptimizeError(f"--plot {args.plot}: folder {args.plot.resolve().parent} does not exist; create it first")
    if args.apply and args.dry_run:
        raise OptimizeError("--apply and --dry-run exclude each other: --dry-run shows what --apply would send")
    for flag, wanted in (("--apply", args.apply), ("--dry-run", args.dry_run)):
        if wanted and not args.asset:
            raise OptimizeError(f"{flag} needs --asset SYMBOL (and a config for the chain)")
    need = history_need(args)
    if args.asset:
        from keeper.optimizer import onchain as optimizechain

        chain = optimizechain.open_chain(args.config)
        measured = optimizechain.measure(
            chain.w3, chain.dep, args.asset, args.window_s, args.max_rounds, need, need_history=args.sigma is None
        )
        current = (measured.lt, measured.ltv)
    if args.from_scenario:
        # The scenario fills what the flags left unset.
        for key, value in scenario_regime(args.from_scenario).items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    sim, targets = build(args, measured)
    calm = calm_simulation(sim, args.calm_sigma, args.buffer_horizon_s)
    result = solve(sim, targets, current, calm, with_curve=args.plot is not None)
    if result.curve is not None:
        source = args.asset or (args.from_scenario or "").replace(":", " ") or "flags"
        title = f"{source}: σ {sim.market.sigma:.2f}, delay {sim.liquidation.delay_s:g} s, horizon {sim.horizon_s:g} s"
        stress.plot(result.curve, result.choice, targets.p_bad_debt, args.plot, title)
    doc = to_json(result, measured)
    if args.apply:
        from keeper.optimizer import onchain as optimizechain

        doc["applied"] = optimizechain.apply(chain, args.asset, result.choice.metrics)
    if args.dry_run:
        from keeper.optimizer import onchain as optimizechain

        doc["dry_run"] = optimizechain.dry_run(chain, args.asset, result.choice.metrics)
    if args.json:
        print(json.dumps(doc, allow_nan=False))
    else:
        print(table(result, measured))
        if args.plot is not None:
            print(f"plot: {args.plot}")
        if "applied" in doc:
            print(optimizechain.describe(doc["applied"]))
        if "dry_run" in doc:
            print(optimizechain.describe(doc["dry_run"]))
    return 0


def history_need(args: argparse.Namespace) -> HistoryNeed:
    """The least history `--asset` measures from (`--min-rounds`, `--min-history-days`, `--min-sigma`), checked."""
    if args.min_rounds < 3:
        raise OptimizeError(f"--min-rounds {args.min_rounds}: at least 3 rounds are needed for any estimate")
    if args.max_rounds < args.min_rounds:
        raise OptimizeError(f"--max-rounds {args.max_rounds} is below --min-rounds {args.min_rounds}; raise it")
    for flag, value in (("--min-history-days", args.min_history_days), ("--min-sigma", args.min_sigma)):
        if not value >= 0:
            raise OptimizeError(f"{flag} {value:g}: must be 0 or more")
    if args.window_s <= 0:
        raise OptimizeError(f"--window-s {args.window_s:g}: must be positive")
    return HistoryNeed(args.min_rounds, args.min_history_days, args.min_sigma, CLI_ADVICE)
