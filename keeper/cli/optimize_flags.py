"""`keeper optimize`'s flags, and the `OptimizerInputs` they give. Kept apart from keeper/cli/optimize.py, which
loads NumPy and the chain: every `keeper` command builds this parser, `keeper --help` included."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from keeper.optimizer import inputs as opt


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `keeper optimize` flags, in five groups."""
    _market(p)
    _keeper(p)
    _targets(p)
    _live(p)
    _output(p)


def _market(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("market (a flag wins over a value measured with --asset)")
    g.add_argument("--sigma", type=float, metavar="S", help="annualised volatility, e.g. 0.8")
    g.add_argument(
        "--jump-intensity",
        type=float,
        metavar="N",
        help=f"jumps per year (0 = no jumps; default {opt.JUMP_INTENSITY:g})",
    )
    g.add_argument(
        "--jump-mean", type=float, metavar="M", help=f"mean log jump size, e.g. -0.08 (default {opt.JUMP_MEAN:g})"
    )
    g.add_argument(
        "--jump-vol",
        type=float,
        metavar="V",
        help=f"standard deviation of the log jump size (default {opt.JUMP_VOL:g})",
    )


def _keeper(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("oracle, keeper and liquidity")
    g.add_argument(
        "--oracle-deviation",
        type=float,
        default=opt.ORACLE_DEVIATION,
        metavar="F",
        help="deviation threshold (0 = no lag; %(default)s)",
    )
    g.add_argument("--heartbeat-s", type=float, metavar="S", help=f"heartbeat (0 = none; default {opt.HEARTBEAT_S:g})")
    g.add_argument(
        "--delay-s", type=float, metavar="S", help=f"keeper reaction delay in seconds (default {opt.DELAY_S:g})"
    )
    g.add_argument(
        "--slippage-depth-usd",
        type=float,
        default=opt.SLIPPAGE_DEPTH_USD,
        metavar="USD",
        help="liquidity depth (0 = no slippage)",
    )
    g.add_argument(
        "--position-usd",
        type=float,
        default=opt.POSITION_USD,
        metavar="USD",
        help=f"collateral sold at once (default {opt.POSITION_USD:,.0f})",
    )
    g.add_argument(
        "--min-discount", type=float, metavar="F", help=f"discount just below health 1 (default {opt.MIN_DISCOUNT:g})"
    )
    g.add_argument("--max-discount", type=float, metavar="F", help=f"discount cap (default {opt.MAX_DISCOUNT:.2f})")


def _targets(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("targets and simulation")
    g.add_argument(
        "--target-prob", type=float, default=opt.TARGET_PROB, metavar="P", help="max P(bad debt) (default %(default)s)"
    )
    g.add_argument(
        "--shortfall-budget",
        type=float,
        default=opt.SHORTFALL_BUDGET,
        metavar="F",
        help="max E[bad debt] per $ of debt (%(default)s)",
    )
    g.add_argument(
        "--liq-prob",
        type=float,
        default=opt.LIQ_PROB,
        metavar="P",
        help="max P(an account opened at ltv is liquidated within the horizon); sets the buffer (default %(default)s)",
    )
    g.add_argument(
        "--calm-sigma",
        type=float,
        metavar="S",
        help="set the ltv buffer in a calm market (this volatility, no jumps) instead of the stressed one",
    )
    g.add_argument(
        "--buffer-horizon-s",
        type=float,
        metavar="S",
        help=f"horizon of the calm-market buffer (default {opt.BUFFER_HORIZON_S:g})",
    )
    g.add_argument(
        "--lt-max", type=float, metavar="F", help=f"cap on lt (default: the on-chain bound, else {opt.LT_MAX:g})"
    )
    g.add_argument("--horizon-s", type=float, metavar="S", help=f"horizon (default {opt.HORIZON_S:g})")
    g.add_argument("--step-s", type=float, metavar="S", help=f"time step (default {opt.STEP_S:g})")
    g.add_argument("--paths", type=int, default=opt.PATHS, metavar="N", help="Monte Carlo paths (default %(default)s)")
    g.add_argument("--seed", type=int, default=opt.SEED, metavar="S", help="random seed (default %(default)s)")
    g.add_argument(
        "--from-scenario",
        metavar="NAME:SYMBOL",
        help="stress regime from a drill scenario's path: its moves of SYMBOL as jumps (intensity, mean, vol), its "
        "duration as the horizon, its block time as delay and step",
    )


def _live(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live chain")
    g.add_argument("--asset", metavar="SYMBOL", help="measure the inputs for this collateral from the chain")
    g.add_argument(
        "--window-s",
        type=float,
        default=opt.WINDOW_S,
        metavar="S",
        help=f"history window ({opt.WINDOW_S / 86400:g} days)",
    )
    g.add_argument(
        "--max-rounds", type=int, default=opt.MAX_ROUNDS, metavar="N", help="feed rounds to read at most (%(default)s)"
    )
    g.add_argument(
        "--min-rounds",
        type=int,
        default=opt.MIN_ROUNDS,
        metavar="N",
        help="refuse a volatility measured from fewer feed rounds (default %(default)s)",
    )
    g.add_argument(
        "--min-history-days",
        type=float,
        default=opt.MIN_HISTORY_DAYS,
        metavar="D",
        help="refuse a volatility measured over fewer days of rounds (default %(default)s)",
    )
    g.add_argument(
        "--min-sigma",
        type=float,
        default=opt.MIN_SIGMA,
        metavar="S",
        help="refuse a measured volatility below this: a frozen feed (default %(default)s)",
    )
    g.add_argument(
        "--grid",
        action="store_true",
        help="choose the engine's scenario grid for the whole market from the feeds' joint history "
        "(docs/portfolio-margin.md) instead of one asset's lt",
    )
    g.add_argument(
        "--joint-step-s",
        type=float,
        default=1800.0,
        metavar="S",
        help="--grid: time step the feeds are aligned on for their covariance (default %(default)s)",
    )
    g.add_argument(
        "--initial-scale",
        type=float,
        metavar="F",
        help="--grid: the initial-margin scale of a new grid (setGrid; default the engine's, else 0.9)",
    )
    g.add_argument("--apply", action="store_true", help="send the bounded on-chain update (needs the role)")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="show the transaction --apply would send (calldata, simulation) and send nothing",
    )


def _output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--plot", type=Path, metavar="PNG", help="write the bad-debt / borrowing-power plot here")


def inputs_from(args: argparse.Namespace) -> opt.OptimizerInputs:
    """The optimizer's inputs from parsed flags: every `OptimizerInputs` field has the flag of the same name."""
    return opt.OptimizerInputs(**{f.name: getattr(args, f.name) for f in fields(opt.OptimizerInputs)})
