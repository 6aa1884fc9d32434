"""`keeper run` and `keeper status`. Both first check everything that can be wrong before doing any work: the
settings, the deployment record, the node, that all three agree on the chain, and (for `run`) the signing key.
Any KeeperError is printed as one `keeper: ...` message without a traceback; the exit code says what kind it was
(2 config/deployment/key, 3 chain mismatch, 4 node unreachable, 130 interrupted)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from keeper import __version__
from keeper.chain.signer import load_signer
from keeper.cli import optimize_flags
from keeper.cli.startup import startup
from keeper.core.errors import KeeperError

log = logging.getLogger("keeper")

# The optional extras and the third-party packages each brings (pyproject.toml).
EXTRAS = {"numpy": "optimize", "matplotlib": "drill"}


def _needs_extra(exc: ModuleNotFoundError, command: str) -> KeeperError:
    """A command whose optional extra is not installed: say which extra, not a traceback."""
    extra = EXTRAS.get((exc.name or "").split(".")[0])
    if extra is None:
        raise exc
    return KeeperError(
        f"`keeper {command}` needs {exc.name}, which the base install leaves out: "
        f"pip install 'collateral-keeper[{extra}]' (or run `make setup` in a checkout)"
    )


def cmd_run(args: argparse.Namespace) -> int:
    settings, dep, w3 = startup(args.config, sending=True)
    signer = load_signer(settings, dep.chain_id)
    log.info("signing as %s on chain %d", signer.address, dep.chain_id)
    from keeper.cli import run  # imported here: `keeper status` and `--help` need neither the scheduler nor NumPy

    try:
        return run.run(settings, dep, w3, signer)
    except ModuleNotFoundError as exc:  # the optimizer's risk job, asked for by optimize_interval_s
        raise _needs_extra(exc, "run with optimize_interval_s > 0") from None


def cmd_status(args: argparse.Namespace) -> int:
    _, dep, w3 = startup(args.config)
    from keeper.engine import status

    return status.show(dep, w3, args.json)


def cmd_drill(args: argparse.Namespace) -> int:
    try:
        from keeper.cli import drill as drillcli
    except ModuleNotFoundError as exc:
        raise _needs_extra(exc, "drill") from None
    return drillcli.drill(args)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from keeper.cli import drill as drillcli
    except ModuleNotFoundError as exc:
        raise _needs_extra(exc, "demo") from None
    return drillcli.demo(args)


def cmd_optimize(args: argparse.Namespace) -> int:
    try:
        from keeper.cli import optimize  # imported here: it loads NumPy, which no other command needs
    except ModuleNotFoundError as exc:
        raise _needs_extra(exc, "optimize") from None
    return optimize.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keeper", description="Keep collateral ratios enforced: watch every account and liquidate the unhealthy."
    )
    parser.add_argument("--version", action="version", version=f"keeper {__version__}")
    config_help = "settings file (default: $KEEPER_CONFIG, else ./keeper.toml if present); see docs/keeper.md"
    parser.add_argument("--config", type=Path, default=None, metavar="PATH", help=config_help)
    # --config is accepted after the subcommand too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=config_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", parents=[common], help="run the keeper until stopped (SIGINT/SIGTERM)")
    run.set_defaults(func=cmd_run)
    status = commands.add_parser("status", parents=[common], help="list every account by health, then exit")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=cmd_status)
    drill = commands.add_parser(
        "drill", help="replay a crash scenario against the contracts and the keeper on a local node; write a report"
    )
    drill.add_argument(
        "scenario", metavar="SCENARIO", nargs="?", help="a library scenario name (e.g. black-thursday) or a TOML path"
    )
    _drill_options(drill)
    target = drill.add_mutually_exclusive_group()
    target.add_argument("--rpc-url", metavar="URL", help="drill a running Anvil that already holds a deployment")
    target.add_argument("--fork-url", metavar="URL", help="start an Anvil forking this node and take over its feeds")
    drill.add_argument(
        "--deployment",
        type=Path,
        metavar="PATH",
        help="the deployment record for --rpc-url/--fork-url (default deployments/<chainId>.json)",
    )
    drill.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a missed or healthy liquidation or a duplicate submission was measured",
    )
    drill.add_argument("--list", action="store_true", help="list the library's scenarios and exit")
    drill.set_defaults(func=cmd_drill)
    demo = commands.add_parser(
        "demo", help="the main job on a fresh local Anvil: deploy, seed ~200 accounts, replay a crash, report"
    )
    demo.add_argument("--scenario", default="black-thursday", help="library name or TOML path (default %(default)s)")
    _drill_options(demo, accounts_default=200)
    demo.set_defaults(func=cmd_demo)
    optimize = commands.add_parser(
        "optimize",
        parents=[common],
        help="choose an asset's lt and ltv by Monte Carlo from its volatility, jumps, oracle lag and keeper delay",
    )
    optimize_flags.add_arguments(optimize)
    optimize.set_defaults(func=cmd_optimize)
    return parser


def _drill_options(parser: argparse.ArgumentParser, accounts_default: int | None = None) -> None:
    parser.add_argument("--out", type=Path, metavar="DIR", help="report folder (default drills/<name>-<timestamp>/)")
    parser.add_argument(
        "--accounts",
        type=int,
        default=accounts_default,
        metavar="N",
        help="borrower sub-accounts to seed (default: the scenario's [accounts] count)"
        if accounts_default is None
        else "borrower sub-accounts to seed (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, metavar="S", help="seed for the accounts (default: the scenario's)")
    parser.add_argument("--settle-blocks", type=int, metavar="N", help="blocks after the last step (default 30+)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    margin = parser.add_mutually_exclusive_group()
    margin.add_argument(
        "--additive",
        action="store_true",
        help="ignore the scenario's [margin] grid: the same drill under the additive rule, for a side-by-side run",
    )
    margin.add_argument(
        "--margin",
        type=Path,
        metavar="PATH",
        help="drill under the [margin] grid of this TOML file instead of the scenario's (deployments/grids/)",
    )
    parser.add_argument(
        "--risk",
        action="append",
        metavar="SYMBOL=LTV/LT",
        help="embedded target: deploy this collateral with these ratios instead of the template's (repeatable)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a setting of the keeper under drill, e.g. max_fee_gwei=200 (repeatable; KEEPER_* variables are not read)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed what it had to say
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        code: int = args.func(args)
    except KeeperError as exc:
        print(f"keeper: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code
