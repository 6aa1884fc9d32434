"""Compatibility only, to be deleted when the engine composes the job itself: `keeper.engine.runner` still does
`RiskJob(keeper, log)` from here. The job lives in keeper/optimizer/job.py and takes its collaborators explicitly;
this factory hands it the keeper's parts."""

from __future__ import annotations

import logging
from typing import Protocol

from web3 import Web3

from keeper.chain.deployment import Deployment
from keeper.optimizer import job
from keeper.optimizer.inputs import OptimizerInputs
from keeper.optimizer.update import Submitter


class _Signer(Protocol):
    @property
    def address(self) -> str: ...


class _Settings(Protocol):
    def optimizer_inputs(self) -> OptimizerInputs: ...


class _KeeperParts(Protocol):
    @property
    def settings(self) -> _Settings: ...

    @property
    def dep(self) -> Deployment: ...

    @property
    def w3(self) -> Web3: ...

    @property
    def signer(self) -> _Signer: ...

    @property
    def txm(self) -> Submitter: ...

    @property
    def metrics(self) -> job.RiskMetrics: ...


def RiskJob(keeper: _KeeperParts, log: logging.Logger) -> job.RiskJob:  # noqa: N802 (the class name runner calls)
    return job.RiskJob(
        keeper.w3,
        keeper.dep,
        keeper.txm,
        keeper.metrics,
        keeper.signer.address,
        keeper.settings.optimizer_inputs(),
        log,
    )
