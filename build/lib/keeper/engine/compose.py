"""The composition root: the one place a keeper is built from its settings, for `keeper run`, the drills, the tests
and the benchmarks (its state file, fee policy, transaction manager, metrics)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3 import Web3

from keeper.chain.deployment import Deployment
from keeper.chain.index import AccountIndex, SqliteIndex
from keeper.chain.journal import SqliteJournal
from keeper.chain.sqlite import StateFile
from keeper.chain.txmanager import FeePolicy, TxManager
from keeper.core.units import GWEI
from keeper.engine.keeper import Keeper
from keeper.engine.metrics import Metrics
from keeper.engine.settings import Settings


def build_keeper(
    settings: Settings,
    deployment: Deployment,
    w3: Web3,
    signer: LocalAccount,
    *,
    submit_w3: Web3 | None = None,
    state: StateFile | None = None,
    index: AccountIndex | None = None,
    clock: Callable[[], float] = time.monotonic,
    log: logging.Logger | None = None,
) -> Keeper:
    """A Keeper with its state file (the discovery index and the journal), fee policy and transaction manager wired
    from `settings`: what `keeper run`, the drills and the tests all use. `state` replaces the file `state_db` names
    (a test's), and `index` the index on it (a test's instrumented one)."""
    log = log or logging.getLogger("keeper")
    state = state or StateFile(settings.state_db)
    journal = SqliteJournal(state)
    cap = settings.max_fee_gwei
    policy = FeePolicy(
        max_fee_cap_wei=None if cap is None else int(cap * GWEI),
        priority_fee_wei=int(settings.priority_fee_gwei * GWEI),
    )
    txm = TxManager(
        w3,
        submit_w3 or w3,
        signer,
        journal,
        deployment.chain_id,
        policy,
        settings.confirmations,
        settings.replace_after_blocks,
        log.getChild("tx"),
    )
    index = index or SqliteIndex(state)
    return Keeper(settings, deployment, w3, signer, index, txm, Metrics(), clock=clock, log=log, on_close=state.close)
