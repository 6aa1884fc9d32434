"""The keeper's logic, independent of scheduling: on every new block, discover → read → evaluate → plan → simulate →
send → follow receipts (`Keeper.tick`), and housekeeping (signer balance and debt-asset inventory, low-balance and
low-inventory warnings, share-rate refreshes). `keeper.engine.lifecycle` schedules both; tests drive them directly.
Each job catches and reports its own errors. After
`BREAKER_THRESHOLD` failures in a row the circuit breaker pauses sending (reading goes on) and the job backs off
exponentially; a stale node (no new block for `stale_node_s`) raises an alert and stops sending until blocks flow
again, except on a local chain that mines only when it gets a transaction (automine), where an idle chain is not a
stale one. SIGTERM and SIGINT stop it cleanly.

The keeper is never silent when it cannot act: every account the mirror finds liquidatable is counted
(`keeper_accounts_liquidatable`), each one no liquidation was sent for in a block is counted by reason
(`keeper_accounts_skipped{reason=...}`), and the reason is logged once per account and state, not every block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint, TxParams

from keeper.chain.deployment import Deployment, NativeSource, contract, native_source, standard_contract
from keeper.chain.discovery import Discovery
from keeper.chain.index import AccountIndex
from keeper.chain.journal import Journal
from keeper.chain.reads import read_accounts, read_market
from keeper.chain.txmanager import TxManager, TxRequest
from keeper.core import risk
from keeper.core.networks import is_local_chain
from keeper.core.snapshot import Account as AccountView
from keeper.core.snapshot import Market, liquidation_valuation
from keeper.core.units import GWEI, WAD
from keeper.engine.metrics import SKIP_REASONS, Metrics
from keeper.engine.protect import Protector
from keeper.engine.settings import Settings
from keeper.engine.strategy import COOLDOWN_BLOCKS, Limits, Plan, plan_all

BREAKER_THRESHOLD = 5
MAX_BACKOFF_S = 30.0
# Slippage accepted on the seized amount between the read and the mined block.
SEIZE_SLIPPAGE_BPS = 100
# 0.1 % of a repayment kept in reserve for interest accrued between reading and inclusion.
INTEREST_HEADROOM_DIVISOR = 1_000
LIQUIDATION_PREFIX = "liquidate:"
WRITE_OFF_PREFIX = "writeoff:"
SHARE_LIST_REFRESH_S = 3600  # how often housekeeping looks again for ERC-4626 shares among the listed assets
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# Skip reasons logged as warnings (the operator must do something); the others are logged at info.
WARN_REASONS = frozenset({"inventory", "price", "rejected"})

Account = tuple[str, int]


@dataclass
class LoopState:
    last_block: int = -1
    last_hash: bytes = b""
    last_block_seen_at: float = 0.0
    failures: int = 0
    next_attempt_at: float = 0.0
    breaker_open_until: float = 0.0
    stale: bool = False
    automine_noted: bool = False
    first_liquidatable: dict[Account, int] = field(default_factory=dict)
    cooldown_until: dict[Account, int] = field(default_factory=dict)
    pending: dict[str, tuple[Account, int]] = field(default_factory=dict)  # intent -> (account, profit)
    skip_logged: dict[Account, tuple[str, int]] = field(default_factory=dict)  # account -> (reason, scaled debt)


@dataclass(frozen=True)
class NotSent:
    """Why no liquidation of a liquidatable account was sent in this block (a reason of SKIP_REASONS)."""

    reason: str
    detail: str
    scaled_debt: int


class NativePrice:
    """The native token's USD price (WAD), read on every block from its source (a listed asset's router price, or an
    AggregatorV3Interface feed). When the source has no valid answer in a block, the last valid one is used; 0 until
    there has been one, or when there is no source (a local chain whose deployment names none)."""

    def __init__(self, w3: Web3, source: NativeSource | None) -> None:
        self.source = source
        self.last = 0
        self._feed: Contract | None = None
        self._decimals: int | None = None
        if source is not None and source.feed is not None:
            self._feed = standard_contract(w3, "AggregatorV3Interface", source.feed)

    def read(self, market: Market, block: int) -> int:
        price = 0
        if self.source is not None and self.source.token is not None:
            try:
                view = market.asset(self.source.token).price
            except KeyError:
                view = None
            if view is not None and view.ok:
                price = view.price
        elif self._feed is not None:
            try:
                if self._decimals is None:
                    self._decimals = int(self._feed.functions.decimals().call(block_identifier=block))
                answer = int(self._feed.functions.latestRoundData().call(block_identifier=block)[1])
            except Exception:
                answer = 0
            if answer > 0:
                price = answer * WAD // 10**self._decimals if self._decimals is not None else 0
        if price > 0:
            self.last = price
        return self.last


class Keeper:
    """One keeper process's logic, independent of scheduling (tests drive `tick` directly)."""

    def __init__(
        self,
        settings: Settings,
        deployment: Deployment,
        w3: Web3,
        signer: LocalAccount,
        index: AccountIndex,
        txm: TxManager,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._on_close = on_close
        self.settings = settings
        self.dep = deployment
        self.w3 = w3
        self.signer = signer
        self.index = index
        self.txm = txm
        self.metrics = metrics
        self.clock = clock
        self.log = log or logging.getLogger("keeper")
        self.engine = contract(w3, deployment, "MarginEngine")
        self.lens = contract(w3, deployment, "Lens")
        self.router = contract(w3, deployment, "OracleRouter")
        self._grid_count = -1  # the margin grid's size last seen (0: additive); -1 before the first block
        self._approved_debts: set[str] = set()  # further debt assets whose engine allowance is set or asked for
        self._debt_tokens: dict[str, Contract] = {}  # further debt assets' ERC-20s, by address
        self._share_due: dict[str, int] = {}  # share asset -> unix time its snapshot may next be refreshed
        self._shares_listed_at = -SHARE_LIST_REFRESH_S
        self.debt_token = standard_contract(w3, "ERC20", deployment.debt.token)
        self.native = NativePrice(w3, native_source(settings.native_price, deployment))
        if self.native.source is None:
            self.log.warning(
                "no price for the native token on local chain %d (the deployment names none and native_price is "
                "unset): gas is not priced, so liquidations are not bid by economics and only max_fee_gwei bounds "
                "their fees",
                deployment.chain_id,
            )
        self.discovery = Discovery(
            w3,
            index,
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
            self.protector = Protector(
                settings, module, txm, metrics, lambda: self.last_limits, self.log.getChild("protection")
            )

    @property
    def journal(self) -> Journal:
        """The transaction journal the keeper's transaction manager writes."""
        return self.txm.journal

    def close(self) -> None:
        """Release the keeper's state (its file, when the composition root opened one)."""
        if self._on_close is not None:
            self._on_close()

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
            inventory = int(self.debt_token.functions.balanceOf(self.signer.address).call())
            self._inventory(inventory)
            if inventory < int(self.settings.low_inventory * 10**self.dep.debt.decimals):
                self.log.warning(
                    "signer %s holds %s %s, below low_inventory %s: liquidations repay debt from this balance; "
                    "send %s to %s (docs/keeper.md, Funding a keeper)",
                    self.signer.address,
                    self._tokens(inventory),
                    self.dep.debt.symbol,
                    f"{self.settings.low_inventory:,.2f}",
                    self.dep.debt.symbol,
                    self.signer.address,
                )
            self._refresh_shares()
        except Exception as exc:
            self.metrics.rpc_errors.inc()
            self.log.warning("housekeeping failed: %s", exc)

    def _refresh_shares(self) -> None:
        """ERC-4626 collateral is priced under a cap measured from a snapshot of its exchange rate, which anyone may
        move once a day (`OracleRouter.refreshShareRate`, to min(rate, cap)): the older the snapshot, the larger a
        donation the cap lets through at once. The keeper refreshes every listed share's snapshot once it may, so
        the cap stays one day's allowed growth above the real rate (docs/contracts.md)."""
        if not any(item.get("name") == "refreshShareRate" for item in self.router.abi):
            return  # a router deployed before the refresh existed: its cap ages as it always did
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        if now >= self._shares_listed_at + SHARE_LIST_REFRESH_S:  # which listed assets are shares, hourly
            self._shares_listed_at = now
            for asset in self.engine.functions.assetList().call():
                if self.router.functions.shareConfig(asset).call()[0] != ZERO_ADDRESS:
                    self._share_due.setdefault(asset, 0)
        for asset, due in list(self._share_due.items()):
            if now < due:
                continue
            snapshot_time = int(self.router.functions.shareConfig(asset).call()[3])
            interval = int(self.router.functions.SHARE_REFRESH_INTERVAL().call())
            self._share_due[asset] = snapshot_time + interval
            if now < snapshot_time + interval:
                continue
            data = self.router.encode_abi("refreshShareRate", [asset])
            intent = f"refresh-share:{asset}:{now // interval}"
            submission = self.txm.submit(intent, {"to": self.router.address, "data": data, "value": 0})
            if submission is not None and submission.status == "pending":
                self.log.info("refreshing the share-rate snapshot of %s (taken %d s ago)", asset, now - snapshot_time)

    def _ensure_other_allowances(self, market: Market) -> None:
        """The further debt assets (`listDebt`) are repaid from the keeper's balance of each too: approve the engine
        once per asset, through the journal, when the keeper first sees the asset."""
        for view in market.other_debts:
            if view.address in self._approved_debts:
                continue
            token = self._debt_token(view.address)
            if token.functions.allowance(self.signer.address, self.dep.engine).call() < 2**255:
                data = token.encode_abi("approve", [self.dep.engine, 2**256 - 1])
                intent = f"approve-engine:{view.address}"
                self.txm.submit(intent, {"to": view.address, "data": data, "value": 0}, simulate=True)
            self._approved_debts.add(view.address)

    def _debt_token(self, address: str) -> Contract:
        token = self._debt_tokens.get(address)
        if token is None:
            token = self._debt_tokens[address] = standard_contract(self.w3, "ERC20", address)
        return token

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
        tracked = self.index.accounts()
        self.metrics.accounts_tracked.set(len(tracked))
        market = read_market(self.lens, head)
        self._note_rule(market, head)
        self._ensure_other_allowances(market)
        accounts = read_accounts(self.lens, [(o, s) for o, s in tracked], head, other_debts=len(market.other_debts))
        limits = self._limits(market, head)
        self.last_limits = limits
        plans, skips = plan_all(accounts, market, limits)
        skipped = [s for s in skips if s.liquidatable]
        # Every account the mirror finds liquidatable, whether or not a liquidation can be sent for it.
        liquidatable = {(p.owner, p.sub_id) for p in plans} | {(s.owner, s.sub_id) for s in skipped}
        self.metrics.accounts_liquidatable.set(len(liquidatable))
        self.metrics.accounts_unpriced.set(sum(1 for s in skips if not s.liquidatable))
        not_sent = {(s.owner, s.sub_id): NotSent(s.code, s.reason, s.scaled_debt) for s in skipped}
        # When each account was first seen liquidatable, for the latency metric: forgotten once it no longer is
        # (it recovered, or was rescued) unless a liquidation of it is still in flight.
        current = liquidatable | {account for account, _ in self.state.pending.values()}
        seen = self.state.first_liquidatable
        self.state.first_liquidatable = {k: v for k, v in seen.items() if k in current}
        for account in liquidatable:
            self.state.first_liquidatable.setdefault(account, head)
        if not self._sending_allowed():
            for plan in plans:
                not_sent[(plan.owner, plan.sub_id)] = NotSent(
                    "paused", "sending is paused by the circuit breaker after repeated failures", plan.scaled_debt
                )
        else:
            rescued: set[Account] = set()
            if self.protector is not None:
                try:
                    rescued = self.protector.rescue(market, accounts, head, liquidatable)
                except Exception:
                    self.metrics.rpc_errors.inc()
                    self.log.exception("rescue planning failed at block %d", head)
            inventory: dict[str | None, int] = {None: limits.inventory}
            inventory.update(limits.other_inventory)
            for plan in plans:
                key = (plan.owner, plan.sub_id)
                if key in rescued:  # a rescue is on its way; liquidated next block if it does not land
                    not_sent[key] = NotSent(
                        "rescued", "a rebalance from its owner's other sub-accounts is on its way", plan.scaled_debt
                    )
                    continue
                # Headroom for the interest that accrues before inclusion (a whole-debt repayment grows with it).
                need = plan.quote.repaid + plan.quote.repaid // INTEREST_HEADROOM_DIVISOR + 1
                left = inventory.get(plan.debt_asset, 0)
                if need > left:
                    units = self._units_of(market, plan.debt_asset)
                    not_sent[key] = NotSent(
                        "inventory",
                        f"it needs {need / units:,.2f} {self._debt_symbol(plan.debt_asset)} and the keeper has "
                        f"{left / units:,.2f} left to repay with",
                        plan.scaled_debt,
                    )
                    continue
                refusal = self._execute(plan, head)
                if refusal is None:
                    inventory[plan.debt_asset] = left - plan.quote.repaid
                else:
                    not_sent[key] = refusal
            if self.settings.write_off_enabled:
                try:
                    self._write_offs(market, accounts, not_sent)
                except Exception:
                    self.metrics.rpc_errors.inc()
                    self.log.exception("write-offs failed at block %d", head)
            if self.protector is not None:
                try:
                    self.protector.run(market, accounts, head, liquidatable)
                except Exception:
                    # Protection never holds up liquidations: its failure is logged and counted, and retried
                    # on the next block.
                    self.metrics.rpc_errors.inc()
                    self.log.exception("protection strategies failed at block %d", head)
        self._report_not_sent(not_sent, head)
        self._follow(head)

    def _note_rule(self, market: Market, head: int) -> None:
        """Say which margin rule the mirror follows, at start-up and whenever governance changes it."""
        count = 0 if market.grid is None else market.grid.count
        if count == self._grid_count:
            return
        self._grid_count = count
        self.metrics.grid_scenarios.set(count)
        if count:
            self.log.info(
                "block %d: the engine margins by a scenario grid of %d scenarios; the mirror follows it", head, count
            )
        else:
            self.log.info("block %d: the engine margins by the additive rule", head)

    def _write_offs(self, market: Market, accounts: list[AccountView], not_sent: dict[Account, NotSent]) -> None:
        """An insolvent account that gets no liquidation this block (no inventory, unprofitable, fee, cooldown...)
        is written off at once with `writeOff`: the loss its collateral cannot cover lands on every lender pro rata
        now, before any of them can redeem ahead of it. A liquidation does the same itself, so accounts being
        liquidated are left to it. Only with every held price valid (the engine refuses otherwise)."""
        if not not_sent:
            return
        by_key = {(a.owner, a.sub_id): a for a in accounts}
        for key in not_sent:
            a = by_key.get(key)
            valuation = None if a is None else liquidation_valuation(a, market)
            if a is None or valuation is None or valuation.unpriced is not None:
                continue
            after = risk.written_off_valuation(valuation)
            if not any(o.off for o in after.owed):
                continue
            off = next((o.off for o in after.owed if o.key == risk.DEBT_ASSET), 0)
            intent = f"{WRITE_OFF_PREFIX}{a.owner}:{a.sub_id}:{a.state()}"
            data = self.engine.encode_abi("writeOff", [a.owner, a.sub_id])
            submission = self.txm.submit(intent, {"to": self.dep.engine, "data": data, "value": 0}, simulate=True)
            if submission is not None and submission.status == "pending":
                self.metrics.write_offs_sent.inc()
                self.log.info(
                    "writing off %s/%d: %s %s its collateral cannot cover%s",
                    a.owner,
                    a.sub_id,
                    self._tokens(risk.to_assets_up(off, market.index)),
                    self.dep.debt.symbol,
                    " (and its share of each further debt)" if any(a.other_debts) else "",
                )

    def _limits(self, market: Market, head: int) -> Limits:
        block = self.w3.eth.get_block(head)
        cap = self.settings.max_fee_gwei
        max_repay = None
        if self.settings.max_repay_usd is not None and market.debt_price.ok:
            max_repay = risk.amount_down(
                int(self.settings.max_repay_usd * 10**18), market.debt_price.price, market.debt_decimals
            )
        inventory = int(self.debt_token.functions.balanceOf(self.signer.address).call(block_identifier=head))
        self._inventory(inventory)
        others = {
            view.address: int(
                self._debt_token(view.address).functions.balanceOf(self.signer.address).call(block_identifier=head)
            )
            for view in market.other_debts
        }
        return Limits(
            min_profit_usd=int(self.settings.min_profit_usd * 10**18),
            max_repay=max_repay,
            inventory=inventory,
            base_fee_wei=int(block.get("baseFeePerGas", 0)),
            priority_fee_wei=int(self.settings.priority_fee_gwei * GWEI),
            max_fee_cap_wei=None if cap is None else int(cap * GWEI),
            native_price_usd=self.native.read(market, head),
            native_price_required=self.native.source is not None,
            other_inventory=others,
        )

    def _units_of(self, market: Market, debt_asset: str | None) -> int:
        decimals = self.dep.debt.decimals
        if debt_asset is not None:
            decimals = next(v.decimals for v in market.other_debts if v.address == debt_asset)
        return int(10**decimals)

    def _debt_symbol(self, debt_asset: str | None) -> str:
        return self.dep.debt.symbol if debt_asset is None else debt_asset

    def _inventory(self, units: int) -> None:
        self.metrics.debt_inventory.set(units / 10**self.dep.debt.decimals)

    def _tokens(self, units: int) -> str:
        return f"{units / 10**self.dep.debt.decimals:,.2f}"

    def _symbol(self, token: str) -> str:
        for a in self.dep.assets:
            if a.token == token:
                return a.symbol
        return ""

    def _execute(self, plan: Plan, head: int) -> NotSent | None:
        """Simulate and send one liquidation; None when it was sent, else why not."""
        key = (plan.owner, plan.sub_id)
        until = self.state.cooldown_until.get(key, -1)
        if until > head:
            return NotSent("cooldown", f"its liquidation reverted; tried again from block {until}", plan.scaled_debt)
        if self.txm.in_flight(plan.intent_key):
            return NotSent("pending", "a liquidation of it is in flight", plan.scaled_debt)
        min_seized = plan.quote.seized * (10_000 - SEIZE_SLIPPAGE_BPS) // 10_000
        tail = [plan.collateral, plan.request, min_seized, self.signer.address, b""]
        if plan.debt_asset is None:
            data = self.engine.encode_abi("liquidate", [plan.owner, plan.sub_id, *tail])
        else:
            data = self.engine.encode_abi("liquidateDebt", [plan.owner, plan.sub_id, plan.debt_asset, *tail])
        payload: TxRequest = {"to": self.dep.engine, "data": data, "value": 0}
        try:
            # Never send what the node says reverts; a position that fails cools down instead of being retried
            # every block (the transaction manager simulates again right before signing).
            self.w3.eth.call(cast(TxParams, {"from": self.signer.address, **payload}), block_identifier=head)
        except (ContractLogicError, ValueError) as exc:
            self.metrics.simulation_failures.inc()
            self.state.cooldown_until[key] = head + COOLDOWN_BLOCKS
            return NotSent("simulation", f"its simulation reverts ({exc})", plan.scaled_debt)
        submission = self.txm.submit(plan.intent_key, payload, simulate=True, max_fee_wei=plan.fee_ceiling_wei)
        if submission is None:
            return NotSent(
                "simulation", "the transaction manager's simulation or gas estimate reverts", plan.scaled_debt
            )
        if submission.status != "pending":
            return NotSent("rejected", f"the node refused it: {submission.error}", plan.scaled_debt)
        self.metrics.liquidations_sent.inc()
        self.state.pending[plan.intent_key] = (key, plan.profit_usd)
        self.log.info(
            "liquidating %s/%d: repay %d seize %d of %s, health %.4f, profit %.2f USD, fee ceiling %s gwei",
            plan.owner,
            plan.sub_id,
            plan.quote.repaid,
            plan.quote.seized,
            self._symbol(plan.collateral) or plan.collateral,
            plan.health / 1e18,
            plan.profit_usd / 1e18,
            "none" if plan.fee_ceiling_wei is None else f"{plan.fee_ceiling_wei / GWEI:,.2f}",
        )
        return None

    def _report_not_sent(self, not_sent: dict[Account, NotSent], head: int) -> None:
        """The skipped gauge by reason, and one log line per account and (reason, state): when an account starts
        being skipped, or for another reason, or in another state (its debt changed), never again every block."""
        counts = dict.fromkeys(SKIP_REASONS, 0)
        for ns in not_sent.values():
            counts[ns.reason] = counts.get(ns.reason, 0) + 1
        for reason, n in counts.items():
            self.metrics.accounts_skipped.labels(reason=reason).set(n)
        logged = self.state.skip_logged
        for account in [a for a in logged if a not in not_sent]:
            del logged[account]
        for account, ns in not_sent.items():
            if logged.get(account) == (ns.reason, ns.scaled_debt):
                continue
            logged[account] = (ns.reason, ns.scaled_debt)
            log = self.log.warning if ns.reason in WARN_REASONS else self.log.info
            hint = ""
            if ns.reason == "inventory":
                hint = f"; fund {self.signer.address} with {self.dep.debt.symbol} (docs/keeper.md, Funding a keeper)"
            log(
                "liquidatable %s/%d not liquidated at block %d (%s): %s%s",
                account[0],
                account[1],
                head,
                ns.reason,
                ns.detail,
                hint,
            )

    def _follow(self, head: int) -> None:
        for outcome in self.txm.poll(head):
            if self.protector is not None and self.protector.follow(outcome.intent_key, outcome.status, head):
                continue
            key_profit = self.state.pending.pop(outcome.intent_key, None)
            if not outcome.intent_key.startswith(LIQUIDATION_PREFIX):
                # An approval, a risk update or a nonce filler: not a liquidation, whatever its outcome.
                if outcome.status != "confirmed":
                    self.log.info("intent %s %s at nonce %d", outcome.intent_key, outcome.status, outcome.nonce)
                continue
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
        if now - self.state.last_block_seen_at <= self.settings.stale_node_s or self.state.stale:
            return
        if self._automining():
            # A local chain that mines only when it gets a transaction: no traffic, no block. Not staleness.
            if not self.state.automine_noted:
                self.state.automine_noted = True
                self.log.info(
                    "no new block for %.0f s, but the node mines only on transactions (automine): not stale",
                    now - self.state.last_block_seen_at,
                )
            self.state.last_block_seen_at = now
            return
        self.state.stale = True
        self.metrics.node_stale.set(1)
        self.log.error(
            "node stale: no new block for %.0f s (last %d); not sending until blocks resume",
            now - self.state.last_block_seen_at,
            self.state.last_block,
        )

    def _automining(self) -> bool:
        """True on a local chain whose node says it mines a block for every transaction (Anvil's
        anvil_getAutomine, Hardhat's hardhat_getAutomine). Never on other chains, and False when the node does not
        know either method."""
        if not is_local_chain(self.dep.chain_id):
            return False
        for method in ("anvil_getAutomine", "hardhat_getAutomine"):
            try:
                reply = self.w3.provider.make_request(RPCEndpoint(method), [])
            except Exception:
                return False
            if isinstance(reply, dict) and "error" not in reply and "result" in reply:
                return bool(reply["result"])
        return False

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
