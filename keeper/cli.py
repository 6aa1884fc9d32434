"""`keeper run` and `keeper status`. Both first check everything that can be wrong before doing any work: the
settings, the deployment record, the node, that all three agree on the chain, and (for `run`) the signing key.
Any KeeperError is printed as one `keeper: ...` message without a traceback; the exit code says what kind it was
(2 config/deployment/key, 3 chain mismatch, 4 node unreachable, 130 interrupted)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from web3 import Web3

from keeper import __version__
from keeper.config import Settings, load_settings
from keeper.deployment import Deployment, check_chain, connect, load_deployment
from keeper.errors import KeeperError
from keeper.signer import load_signer

log = logging.getLogger("keeper")

# LogRecord attributes that are not `extra=` fields.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any `extra=` fields, and exc for exceptions."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(settings: Settings) -> None:
    """Send log records to stderr as text or JSON lines, at settings.log_level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def _startup(config: Path | None) -> tuple[Settings, Deployment, Web3]:
    settings = load_settings(config)
    configure_logging(settings)
    dep = load_deployment(settings.deployment, settings.chain_id)
    w3 = connect(settings.rpc_url, settings.rpc_timeout_s)
    check_chain(w3, settings, dep)
    return settings, dep, w3


def cmd_run(args: argparse.Namespace) -> int:
    settings, dep, w3 = _startup(args.config)
    signer = load_signer(settings, dep.chain_id)
    log.info("signing as %s on chain %d", signer.address, dep.chain_id)
    from keeper import runner  # imported here: `keeper status` does not need the scheduler

    runner.run(settings, dep, w3, signer)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings, dep, w3 = _startup(args.config)
    from keeper import status

    return status.show(settings, dep, w3, args.json)


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
    return parser


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
