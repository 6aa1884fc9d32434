"""`keeper run`: the keeper built by the composition root, the optimizer's risk job beside it when the settings ask
for one, scheduled until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount
from web3 import Web3

from keeper.chain.deployment import Deployment, connect
from keeper.engine.compose import build_keeper
from keeper.engine.keeper import Keeper
from keeper.engine.lifecycle import Job
from keeper.engine.lifecycle import run as run_keeper
from keeper.engine.settings import Settings

if TYPE_CHECKING:  # the job's module loads NumPy: only when the job is asked for
    from keeper.optimizer.job import RiskJob


def risk_job(keeper: Keeper, log: logging.Logger) -> RiskJob:
    """The optimizer's risk job over the keeper's parts: its node, deployment, transaction manager, metrics and
    signer, with the optimizer inputs its settings give."""
    from keeper.optimizer.job import RiskJob  # NumPy and the optimizer load only when the job is asked for

    return RiskJob(
        keeper.w3,
        keeper.dep,
        keeper.txm,
        keeper.metrics,
        keeper.signer.address,
        keeper.settings.optimizer_inputs(),
        log,
    )


def run(settings: Settings, dep: Deployment, w3: Web3, signer: LocalAccount) -> int:
    log = logging.getLogger("keeper")
    submit_w3 = connect(settings.submit_url, settings.rpc_timeout_s) if settings.submit_url else None
    keeper = build_keeper(settings, dep, w3, signer, submit_w3=submit_w3, log=log)
    if settings.metrics_port:
        keeper.metrics.serve(settings.metrics_port, settings.metrics_host)
    jobs: list[Job] = []
    if settings.optimize_interval_s > 0:
        jobs.append(Job("risk", risk_job(keeper, log.getChild("risk")), settings.optimize_interval_s))
    run_keeper(keeper, jobs)
    return 0
