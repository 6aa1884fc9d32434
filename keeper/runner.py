"""The keeper loop: on every new block, discover → read → evaluate → plan → simulate → send → follow receipts.

APScheduler runs two jobs on one worker thread (so they never overlap and share the web3 connection and the store
safely): the block job (every `poll_interval_s`, `max_instances=1`, coalescing) and housekeeping (signer balance,
low-balance warning). Each job catches and reports its own errors. After `BREAKER_THRESHOLD` failures in a row the
circuit breaker pauses sending (reading goes on) and the job backs off exponentially; a stale node (no new block
for `stale_node_s`) raises an alert and stops sending until blocks flow again. SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.types import TxParams

from keeper import risk
from keeper.deployment import Deployment, connect, contract
from keeper.discovery import Discovery
from keeper.metrics import Metrics
from keeper.protectjob import Protector
from keeper.state import Market, read_accounts, read_market
from keeper.store import Store
from keeper.strategy import COOLDOWN_BLOCKS, Limits, Plan, plan_all
from keeper.txmanager import FeePolicy, TxManager

BREAKER_THRESHOLD = 5
MAX_BACKOFF_S = 30.0
# Slippage accepted on the seized amount between the read and the mined block.
SEIZE_SLIPPAGE_BPS = 100
GWEI = 10**9
# 0.1 % of a repayment kept in reserve for interest accrued between reading and inclusion.
INTEREST_HEADROOM_DIVISOR = 1_000


@dataclass
class LoopState:
    last_block: int = -1
    last_hash: bytes = b""
    last_block_seen_at: float = 0.0
    failures: int = 0
    next_attempt_at: float = 0.0
    breaker_open_until: float = 0.0
    stale: bool = False
    first_liquidatable: dict[tuple[str, int], int] = field(default_factory=dict)
    cooldown_until: dict[tuple[str, int], int] = field(default_factory=dict)
    pending: dict[str, tuple[tuple[str, int], int]] = field(default_factory=dict)  # intent -> (account, profit)


class Keeper:
    """One keeper process's logic, independent of scheduling (tests drive `tick` directly)."""

    def __init__(
        self,
        settings: Any,
        deployment: Deployment,
        w3: Web3,
        signer: LocalAccount,
        store: Any,
        txm: Any,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.dep = deployment
        self.w3 = w3
        self.signer = signer
        self.store = store
        self.txm = txm
        self.metrics = metrics
        self.clock = clock
        self.log = log or logging.getLogger("keeper")
        self.engine = contract(w3, deployment, "MarginEngine")
        self.lens = contract(w3, deployment, "Lens")
        self.debt_token = contract(w3, deployment, "MockERC20", deployment.debt.token)
        self.discovery = Discovery(
            w3,
            store,
            deployment.engine,
            deployment.abis["MarginEngine"],
            start_block=deployment.start_block,
            confirmations=settings.confirmations,
            log=self.log.getChild("discovery"),
        )
        self.state = LoopState(last_block_seen_at=clock())
        self.last_limits: Limits | None = None
        self.protector: Protector | None = None
        if deployment.protection and (settings.rebalance_enabled or settings.pre_liquidation_enabled):
            module = contract(w3, deployment, "ProtectionModule", deployment.protection)
            self.protector = Protector(self, module, self.log.getChild("protection"))

    # ------------------------------------------------------------------ jobs

    def tick(self) -> None:
        """The block job: does nothing until a new block arrives; never raises."""
        now = self.clock()
        if now < self.state.next_attempt_at:
            return
        try:
            latest = self.w3.eth.get_block("latest")
            head = int(latest["number"])
            head_hash = bytes(latest["hash"])
            # A new head, or a reorg that replaced the head at the same height.
            if head == self.state.last_block and head_hash == self.state.last_hash:
                self._check_stale(now)
                return
            self.state.last_block_seen_at = now
            self.state.stale = False
            self.metrics.node_stale.set(0)
            self.process_block(head)
            self.state.last_block = head
            self.state.last_hash = head_hash
            self.metrics.last_block.set(head)
            self.state.failures = 0
            self.state.breaker_open_until = 0.0
            self.metrics.circuit_open.set(0)
        except Exception as exc:
            self._failed(now, exc)

    def housekeeping(self) -> None:
        try:
            balance = self.w3.eth.get_balance(self.signer.address)
            self.metrics.signer_balance.set(balance / 1e18)
            if balance < int(self.settings.low_balance_eth * 1e18):
                self.log.warning(
                    "signer %s balance %.4f below %.4f: top it up or liquidations will stop",
                    self.signer.address,
                    balance / 1e18,
                    self.settings.low_balance_eth,
                )
        except Exception as exc:
            self.metrics.rpc_errors.inc()
            self.log.warning("housekeeping failed: %s", exc)

    def ensure_allowance(self) -> None:
        """Liquidations pull the repayment from the keeper: approve the engine once, through the journal."""
        allowance = self.debt_token.functions.allowance(self.signer.address, self.dep.engine).call()
        if allowance >= 2**255:
            return
        data = self.debt_token.encode_abi("approve", [self.dep.engine, 2**256 - 1])
        self.txm.submit("approve-engine", {"to": self.dep.debt.token, "data": data, "value": 0}, simulate=True)
        if self.protector is not None and self.settings.pre_liquidation_enabled:
            module = self.protector.module.address
            if self.debt_token.functions.allowance(self.signer.address, module).call() < 2**255:
                data = self.debt_token.encode_abi("approve", [module, 2**256 - 1])
                self.txm.submit("approve-protection", {"to": self.dep.debt.token, "data": data}, simulate=True)

    # ------------------------------------------------------------------ one block

    def process_block(self, head: int) -> None:
        self.discovery.scan()
        tracked = self.store.accounts()
        self.metrics.accounts_tracked.set(len(tracked))
        market = read_market(self.lens, head)
        accounts = read_accounts(self.lens, [(o, s) for o, s in tracked], head)
        limits = self._limits(market, head)
        self.last_limits = limits
        plans, skips = plan_all(accounts, market, limits)
        self.metrics.accounts_liquidatable.set(len(plans))
        self.metrics.accounts_unpriced.set(sum(1 for s in skips if "price" in s.reason))
        # When each account was first seen liquidatable, for the latency metric: forgotten once it no longer is
        # (it recovered, or was rescued) unless a liquidation of it is still in flight.
        liquidatable = {(p.owner, p.sub_id) for p in plans}
        current = liquidatable | {account for account, _ in self.state.pending.values()}
        seen = self.state.first_liquidatable
        self.state.first_liquidatable = {k: v for k, v in seen.items() if k in current}
        for plan in plans:
            self.state.first_liquidatable.setdefault((plan.owner, plan.sub_id), head)
        if self._sending_allowed():
            rescued: set[tuple[str, int]] = set()
            if self.protector is not None:
                try:
                    rescued = self.protector.rescue(market, accounts, head, liquidatable)
                except Exception:
                    self.metrics.rpc_errors.inc()
                    self.log.exception("rescue planning failed at block %d", head)
            inventory = limits.inventory
            for plan in plans:
                if (plan.owner, plan.sub_id) in rescued:
                    continue  # a rescue is on its way; liquidated next block if it does not land
                # Headroom for the interest that accrues before inclusion (a whole-debt repayment grows with it).
                if plan.quote.repaid + plan.quote.repaid // INTEREST_HEADROOM_DIVISOR + 1 > inventory:
                    continue
                if self._execute(plan, head):
                    inventory -= plan.quote.repaid
            if self.protector is not None:
                try:
                    self.protector.run(market, accounts, head, liquidatable)
                except Exception:
                    # Protection never holds up liquidations: its failure is logged and counted, and retried
                    # on the next block.
                    self.metrics.rpc_errors.inc()
                    self.log.exception("protection strategies failed at block %d", head)
        self._follow(head)

    def _limits(self, market: Market, head: int) -> Limits:
        block = self.w3.eth.get_block(head)
        base_fee = int(block.get("baseFeePerGas", 0))
        priority = int(self.settings.priority_fee_gwei * GWEI)
        cap = int(self.settings.max_fee_gwei * GWEI)
        gas_price = min(cap, 2 * base_fee + priority)
        native = next((a.price.price for a in market.assets if self._symbol(a.address) in ("WETH", "ETH")), 0)
        max_repay = None
        if self.settings.max_repay_usd is not None and market.debt_price.ok:
            max_repay = risk.amount_down(
                int(self.settings.max_repay_usd * 10**18), market.debt_price.price, market.debt_decimals
            )
        return Limits(
            min_profit_usd=int(self.settings.min_profit_usd * 10**18),
            max_repay=max_repay,
            inventory=int(self.debt_token.functions.balanceOf(self.signer.address).call(block_identifier=head)),
            gas_price_wei=gas_price,
            native_price_usd=native,
        )

    def _symbol(self, token: str) -> str:
        for a in self.dep.assets:
            if a.token == token:
                return a.symbol
        return ""

    def _execute(self, plan: Plan, head: int) -> bool:
        key = (plan.owner, plan.sub_id)
        if self.state.cooldown_until.get(key, -1) > head:
            return False
        min_seized = plan.quote.seized * (10_000 - SEIZE_SLIPPAGE_BPS) // 10_000
        data = self.engine.encode_abi(
            "liquidate", [plan.owner, plan.sub_id, plan.collateral, plan.request, min_seized, self.signer.address, b""]
        )
        payload: dict[str, Any] = {"to": self.dep.engine, "data": data, "value": 0}
        try:
            # Never send what the node says reverts; a position that fails cools down instead of being retried
            # every block (the transaction manager simulates again right before signing).
            self.w3.eth.call(cast(TxParams, {"from": self.signer.address, **payload}), block_identifier=head)
        except (ContractLogicError, ValueError) as exc:
            self.metrics.simulation_failures.inc()
            self.state.cooldown_until[key] = head + COOLDOWN_BLOCKS
            self.log.info("not sending liquidation of %s/%d: simulation reverts: %s", plan.owner, plan.sub_id, exc)
            return False
        submission = self.txm.submit(plan.intent_key, payload, simulate=True)
        if submission is None or submission.status != "pending":
            return False
        self.metrics.liquidations_sent.inc()
        self.state.pending[plan.intent_key] = (key, plan.profit_usd)
        self.log.info(
            "liquidating %s/%d: repay %d seize %d of %s, health %.4f, profit %.2f USD",
            plan.owner,
            plan.sub_id,
            plan.quote.repaid,
            plan.quote.seized,
            self._symbol(plan.collateral) or plan.collateral,
            plan.health / 1e18,
            plan.profit_usd / 1e18,
        )
        return True

    def _follow(self, head: int) -> None:
        for outcome in self.txm.poll(head):
            if self.protector is not None and self.protector.follow(outcome.intent_key, outcome.status, head):
                continue
            key_profit = self.state.pending.pop(outcome.intent_key, None)
            if outcome.status == "confirmed":
                self.metrics.liquidations_confirmed.inc()
                if key_profit is not None:
                    account, profit = key_profit
                    self.metrics.profit_usd.inc(max(profit, 0) / 1e18)
                    first = self.state.first_liquidatable.pop(account, None)
                    if first is not None and outcome.block is not None:
                        self.metrics.latency_blocks.observe(outcome.block - first)
            elif outcome.status == "reverted":
                self.metrics.liquidations_reverted.inc()
                if key_profit is not None:
                    account, _ = key_profit
                    self.state.cooldown_until[account] = head + COOLDOWN_BLOCKS
            else:
                # cancelled (the manager replaced a call that would now revert) or dropped (the nonce went to a
                # transaction that is not ours): the account is planned afresh from the next block's state.
                self.log.info("intent %s %s at nonce %d", outcome.intent_key, outcome.status, outcome.nonce)

    # ------------------------------------------------------------------ safety

    def _sending_allowed(self) -> bool:
        return self.clock() >= self.state.breaker_open_until

    def _check_stale(self, now: float) -> None:
        if now - self.state.last_block_seen_at > self.settings.stale_node_s and not self.state.stale:
            self.state.stale = True
            self.metrics.node_stale.set(1)
            self.log.error(
                "node stale: no new block for %.0f s (last %d); not sending until blocks resume",
                now - self.state.last_block_seen_at,
                self.state.last_block,
            )

    def _failed(self, now: float, exc: Exception) -> None:
        self.metrics.rpc_errors.inc()
        self.state.failures += 1
        backoff = min(MAX_BACKOFF_S, self.settings.poll_interval_s * 2 ** (self.state.failures - 1))
        self.state.next_attempt_at = now + backoff
        if self.state.failures >= BREAKER_THRESHOLD:
            self.state.breaker_open_until = now + MAX_BACKOFF_S
            self.metrics.circuit_open.set(1)
            self.log.error(
                "circuit breaker open after %d failures in a row (last: %s); sending paused",
                self.state.failures,
                exc,
            )
        else:
            self.log.warning("block job failed (%d in a row, retry in %.1f s): %s", self.state.failures, backoff, exc)


def build_keeper(
    settings: Any,
    deployment: Deployment,
    w3: Web3,
    signer: LocalAccount,
    *,
    submit_w3: Web3 | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.monotonic,
    log: logging.Logger | None = None,
) -> Keeper:
    """A Keeper with its store, fee policy and transaction manager wired from `settings`: what `keeper run`,
    the drills and the tests all use."""
    log = log or logging.getLogger("keeper")
    store = store or Store(settings.state_db)
    policy = FeePolicy(
        max_fee_cap_wei=int(settings.max_fee_gwei * GWEI), priority_fee_wei=int(settings.priority_fee_gwei * GWEI)
    )
    txm = TxManager(
        w3,
        submit_w3 or w3,
        signer,
        store,
        deployment.chain_id,
        policy,
        settings.confirmations,
        settings.replace_after_blocks,
        log.getChild("tx"),
    )
    return Keeper(settings, deployment, w3, signer, store, txm, Metrics(), clock=clock, log=log)


def run(settings: Any, deployment: Deployment, w3: Web3, signer: LocalAccount) -> None:
    """Run until SIGTERM or SIGINT: reconcile the journal with the chain, then the jobs."""
    log = logging.getLogger("keeper")
    submit_w3 = connect(settings.submit_url, settings.rpc_timeout_s) if settings.submit_url else None
    keeper = build_keeper(settings, deployment, w3, signer, submit_w3=submit_w3, log=log)
    if settings.metrics_port:
        keeper.metrics.serve(settings.metrics_port, settings.metrics_host)
    store, txm = keeper.store, keeper.txm
    for outcome in txm.reconcile():
        log.info("after restart: intent %s %s at nonce %d", outcome.intent_key, outcome.status, outcome.nonce)
    keeper.ensure_allowance()
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(1), "risk": ThreadPoolExecutor(1)})
    scheduler.add_job(
        keeper.tick, "interval", seconds=settings.poll_interval_s, max_instances=1, coalesce=True, id="block"
    )
    scheduler.add_job(keeper.housekeeping, "interval", seconds=15, max_instances=1, coalesce=True, id="housekeeping")
    if settings.optimize_interval_s > 0:
        from keeper.optimizechain import RiskJob  # NumPy and the optimizer load only when the job runs

        # Its own thread: a Monte Carlo run takes seconds and must not hold up the block job.
        scheduler.add_job(
            RiskJob(keeper, log.getChild("risk")),
            "interval",
            seconds=settings.optimize_interval_s,
            max_instances=1,
            coalesce=True,
            id="risk",
            executor="risk",
            next_run_time=datetime.now(UTC),
        )

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after the current job", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    keeper.housekeeping()
    log.info("keeper %s running on chain %d from block %d", signer.address, deployment.chain_id, w3.eth.block_number)
    try:
        scheduler.start()
    finally:
        store.close()
        log.info("keeper stopped")
