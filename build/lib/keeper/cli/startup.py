"""What every command that talks to a node does first: load and check the settings, set up logging, load the
deployment record, connect, and check that the node, the record and the settings name the same chain."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from web3 import Web3

from keeper.chain.deployment import Deployment, check_chain, connect, load_deployment, native_source
from keeper.engine.settings import Settings, load_settings

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
    # APScheduler logs every run of every job ("Running job ...", "... executed successfully") at info: once a
    # second with the default poll interval. Those lines are for debugging the scheduler, not for operators.
    logging.getLogger("apscheduler.executors").setLevel(
        logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    )


def startup(config: Path | None, sending: bool = False) -> tuple[Settings, Deployment, Web3]:
    settings = load_settings(config)
    configure_logging(settings)
    dep = load_deployment(settings.deployment, settings.chain_id)
    if sending:
        native_source(settings.native_price, dep)  # gas must be priceable off a local chain: fail before connecting
    w3 = connect(settings.rpc_url, settings.rpc_timeout_s)
    check_chain(w3, settings, dep)
    return settings, dep, w3
