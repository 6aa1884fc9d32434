"""The keeper's protection strategies (docs/protection.md).

- Rescue, before liquidations on every block: an owner who authorised this keeper and has a liquidatable
  sub-account gets the rebalancing moves that lift it back above health 1, as one `rebalanceBatch`, instead of a
  liquidation; the runner liquidates only what no rescue was sent for (or what a rescue could not save).
- After liquidations, rebalancing: for every owner that authorised this keeper, the moves of
  `protection.plan_rebalances` (at most `MAX_BATCH` in one transaction, one transaction per owner in flight),
  planned with `PLAN_HEADROOM` inside the module's rule; an account being liquidated receives nothing.
- Then pre-liquidation: every opted-in account in its band (`1 <= health < preThreshold`) that is neither
  liquidatable nor being lifted by a rebalance gets the most profitable allowed pre-liquidation, with the same rules
  as liquidations: simulated first, never sent when the node says it reverts, one open intent per account, a
  cool-down after a refusal or an on-chain revert.

Opt-ins and authorisations are read from the module's views and cached for `CACHE_BLOCKS`, so an owner's change is
seen within that many blocks while a block costs few extra calls.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

from web3.contract import Contract

from keeper.chain.txmanager import TxManager
from keeper.core import protection as pr
from keeper.core import risk
from keeper.core.snapshot import Account, Market
from keeper.core.units import WAD
from keeper.engine.metrics import Metrics
from keeper.engine.settings import Settings
from keeper.engine.strategy import COOLDOWN_BLOCKS, Limits

CACHE_BLOCKS = 20
PRE_LIQUIDATION_GAS = 220_000
MAX_BATCH = 4  # rebalancing moves per transaction
# Plans keep donors this far above the target and receivers this far below it (WAD health, 0.1 %): the interest
# accrued and the prices moved by the block a plan lands in would otherwise revert an exact plan at the boundary.
PLAN_HEADROOM = 10**15
SEIZE_SLIPPAGE_BPS = 50
# How long a sharp move keeps the keeper lifting banded sub-accounts instead of leaving them to their band: a day
# of chain time.
MOVE_MEMORY_S = 86_400


class Protector:
    def __init__(
        self,
        settings: Settings,
        module: Contract,
        txm: TxManager,
        metrics: Metrics,
        limits: Callable[[], Limits | None],
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self.module = module
        self.txm = txm
        self.metrics = metrics
        self._limits = limits  # the block's liquidation limits (fees, inventory, prices), once the block job has them
        self.log = log
        self.me = txm.address
        self._targets: dict[str, tuple[int, int]] = {}  # owner -> (target health, block read)
        self._optins: dict[tuple[str, int], tuple[pr.PreConfig, int]] = {}
        self._cooldown: dict[str, int] = {}  # intent key -> block until which it is not retried
        self.moves = pr.RecentMoves(MOVE_MEMORY_S)
        self._observed = -1  # the last block whose prices `moves` has seen
        # A module deployed before `rebalanceBatch` existed takes one move per transaction (its record's ABI says).
        batches = any(item.get("name") == "rebalanceBatch" for item in module.abi)
        self.max_moves = MAX_BATCH if batches else 1

    # ---------------------------------------------------------------- reads

    def book(self, market: Market) -> pr.Book | None:
        if not market.debt_price.ok:
            return None
        prices = {a.address: a.price.price for a in market.assets if a.price.ok}
        cols = {} if market.grid is None else market.grid.columns
        by_address = {a.address: cols[i] for i, a in enumerate(market.assets) if i in cols}
        return pr.Book(
            prices=prices,
            assets={a.address: a.risk for a in market.assets if a.price.ok},
            index=market.index,
            debt_price=market.debt_price.price,
            debt_decimals=market.debt_decimals,
            min_debt=market.params.min_debt,
            grid=None if market.grid is None else replace(market.grid, columns=by_address),
        )

    def observe(self, market: Market) -> None:
        """Feed the block's valid prices (collateral and debt asset) to the recent-moves memory, once per block."""
        if market.block <= self._observed:
            return
        self._observed = market.block
        prices = {a.address: a.price.price for a in market.assets if a.price.ok and a.price.price > 0}
        if market.debt_price.ok and market.debt_price.price > 0:
            prices[market.debt_asset] = market.debt_price.price
        self.moves.observe(market.timestamp, prices)

    def shock(self, market: Market) -> pr.Shock:
        return self.moves.shock([a.address for a in market.assets], market.debt_asset)

    def _optin(self, owner: str, sub: int, head: int) -> pr.PreConfig:
        cached = self._optins.get((owner, sub))
        if cached is not None and head - cached[1] < CACHE_BLOCKS:
            return cached[0]
        raw = self.module.functions.effectivePreLiquidation(owner, sub).call(block_identifier=head)
        cfg = pr.PreConfig(int(raw[0]), int(raw[1]), int(raw[2]))
        self._optins[(owner, sub)] = (cfg, head)
        return cfg

    def _target(self, owner: str, head: int) -> int:
        cached = self._targets.get(owner)
        if cached is not None and head - cached[1] < CACHE_BLOCKS:
            return cached[0]
        target = int(self.module.functions.rebalancerOf(owner, self.me).call(block_identifier=head))
        cap = int(self.module.functions.maxTargetHealth().call(block_identifier=head))
        target = min(target, cap)
        self._targets[owner] = (target, head)
        return target

    def _sub(self, market: Market, a: Account, head: int | None = None) -> pr.Sub:
        """The planner's view of a sub-account; with `head`, also its own band threshold (the module keeps a giver
        out of it), read only for sub-accounts with debt."""
        balances = {market.assets[i].address: a.balances[i] for i in a.held()}
        band = 0
        if head is not None and a.scaled_debt:
            cfg = self._optin(a.owner, a.sub_id, head)
            band = cfg.pre_threshold if cfg.active else 0
        return pr.Sub(a.sub_id, balances, a.scaled_debt, band)

    # ---------------------------------------------------------------- the block

    def rescue(
        self, market: Market, accounts: list[Account], head: int, liquidatable: set[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Send a rescue for every authorising owner whose liquidatable sub-accounts the owner's other sub-accounts
        can lift back above health 1; the accounts a rescue was sent for, which the caller does not liquidate."""
        self.observe(market)
        accounts = _one_debt_owners(accounts)
        if not self.settings.rebalance_enabled or not liquidatable:
            return set()
        book = self.book(market)
        if book is None:
            return set()
        owners = _by_owner(accounts)
        at_risk_of: dict[str, set[int]] = defaultdict(set)
        for o, sub_id in liquidatable:
            at_risk_of[o].add(sub_id)
        saved: set[tuple[str, int]] = set()
        for owner in sorted(at_risk_of):
            subs = owners.get(owner, [])
            if len(subs) < 2:
                continue
            target = self._target(owner, head)
            if target <= WAD:
                continue
            states = [self._sub(market, a, head) for a in subs]
            try:
                moves, rescued = pr.plan_rescue(book, states, target, at_risk_of[owner], self.max_moves, PLAN_HEADROOM)
            except (risk.PriceUnavailable, risk.AssetNotListed):  # the module could not price it either
                continue
            if rescued and self._send_moves(owner, moves, head, rescue=True):
                self.metrics.rescues_sent.inc()
                saved |= {(owner, i) for i in rescued}
        return saved

    def run(self, market: Market, accounts: list[Account], head: int, liquidatable: set[tuple[str, int]]) -> None:
        self.observe(market)
        accounts = _one_debt_owners(accounts)
        book = self.book(market)
        if book is None:
            return
        settings = self.settings
        lifted: set[tuple[str, int]] = set()
        if settings.rebalance_enabled:
            lifted = self._rebalances(book, market, accounts, head, liquidatable)
        if settings.pre_liquidation_enabled:
            # An account a rebalance is lifting is left alone: the owner's own collateral rescues it for free, and
            # a pre-liquidation landing first would push it over the target and revert the rebalance.
            self._pre_liquidations(book, market, accounts, head, liquidatable | lifted)

    def follow(self, intent_key: str, status: str, head: int) -> bool:
        """The outcome of one of this job's intents (False for any other): a reverted protection cools down."""
        if not intent_key.startswith(("rebalance:", "pre:")):
            return False
        if status == "reverted":
            self.metrics.protection_reverted.inc()
            self._cooldown[intent_key] = head + COOLDOWN_BLOCKS
        return True

    def _gas_usd(self, gas: int) -> float:
        limits = self._limits()
        if limits is None:
            return 0.0
        return float(gas * limits.gas_price_wei / 1e18 * limits.native_price_usd / 1e18)

    def _pre_liquidations(
        self, book: pr.Book, market: Market, accounts: list[Account], head: int, liquidatable: set[tuple[str, int]]
    ) -> None:
        bounds = self.module.functions.preLiquidationBounds().call(block_identifier=head)
        max_pre = int(bounds[0])
        usd = {a.address: a.price.price / WAD for a in market.assets if a.price.ok}
        for a in accounts:
            key = (a.owner, a.sub_id)
            if a.scaled_debt == 0 or key in liquidatable:
                continue
            sub = self._sub(market, a)
            try:
                h = book.health(sub.balances, sub.scaled_debt)
            except (risk.PriceUnavailable, risk.AssetNotListed):  # the module could not price it either
                continue
            if not WAD <= h.health < max_pre:
                continue
            cfg = self._optin(a.owner, a.sub_id, head)
            if not cfg.active:
                continue
            debt_usd = market.debt_price.price / WAD
            plan = pr.plan_pre_liquidation(book, sub, cfg, usd, debt_usd, self._gas_usd(PRE_LIQUIDATION_GAS))
            if plan is None:
                continue
            min_seized = plan.seized * (10_000 - SEIZE_SLIPPAGE_BPS) // 10_000
            data = self.module.encode_abi(
                "preLiquidate", [a.owner, a.sub_id, plan.collateral, plan.repaid, min_seized, self.me]
            )
            if self._send(f"pre:{a.owner}:{a.sub_id}", data, head):
                self.metrics.pre_liquidations_sent.inc()
                self.log.info(
                    "pre-liquidating %s/%d: repay %d seize %d, health %.4f -> %.4f, profit %.2f USD",
                    a.owner,
                    a.sub_id,
                    plan.repaid,
                    plan.seized,
                    plan.health_before / WAD,
                    plan.health_after / WAD,
                    plan.profit_usd,
                )

    def _rebalances(
        self, book: pr.Book, market: Market, accounts: list[Account], head: int, liquidatable: set[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Plan and send each authorising owner's moves; the receivers of what was sent."""
        lifted: set[tuple[str, int]] = set()
        owners = _by_owner(accounts)
        cap = None
        shock = self.shock(market)
        for owner, subs in owners.items():
            if len(subs) < 2:
                continue
            states = [self._sub(market, a) for a in subs]
            try:
                healths = [book.health(s.balances, s.scaled_debt).health for s in states]
            except (risk.PriceUnavailable, risk.AssetNotListed):  # the module could not price it either
                continue
            if cap is None:
                cap = int(self.module.functions.maxTargetHealth().call(block_identifier=head))
            if not any(s.scaled_debt and h < cap for s, h in zip(states, healths, strict=True)):
                continue
            target = self._target(owner, head)
            if target <= WAD:
                continue
            # An account being liquidated this block receives nothing: that would change the liquidation in flight.
            busy = frozenset(a.sub_id for a in subs if (owner, a.sub_id) in liquidatable)
            states = [self._sub(market, a, head) for a in subs]  # with each giver's own band threshold
            moves = pr.plan_rebalances(book, states, target, self.max_moves, PLAN_HEADROOM, busy, shock)
            if moves and self._send_moves(owner, moves, head, rescue=False):
                lifted |= {(owner, m.to_sub) for m in moves}
        return lifted

    def _send_moves(self, owner: str, moves: list[pr.Move], head: int, rescue: bool) -> bool:
        """One transaction for the owner's moves: `rebalance` for one, `rebalanceBatch` for several."""
        if len(moves) == 1:
            m = moves[0]
            data = self.module.encode_abi("rebalance", [owner, m.from_sub, m.to_sub, m.asset, m.amount])
        else:
            batch = [(m.from_sub, m.to_sub, m.asset, m.amount) for m in moves]
            data = self.module.encode_abi("rebalanceBatch", [owner, batch])
        if not self._send(f"rebalance:{owner}", data, head):
            return False
        self.metrics.rebalances_sent.inc()
        for m in moves:
            self.log.info(
                "%s %s: %d -> %d, %d of %s, receiver health -> %.4f, giver -> %.4f",
                "rescuing" if rescue else "rebalancing",
                owner,
                m.from_sub,
                m.to_sub,
                m.amount,
                m.asset,
                m.receiver_health_after / WAD,
                m.giver_health_after / WAD,
            )
        return True

    def _send(self, key: str, data: str, head: int) -> bool:
        """Simulate and send unless cooling down or already in flight; a refusal (the simulation reverts) cools
        the key down for COOLDOWN_BLOCKS, an intent still in flight does not."""
        if self._cooldown.get(key, -1) > head or self.txm.in_flight(key):
            return False
        sub = self.txm.submit(key, {"to": self.module.address, "data": data, "value": 0}, simulate=True)
        if sub is None or sub.status != "pending":
            self._cooldown[key] = head + COOLDOWN_BLOCKS
            return False
        return True


def _one_debt_owners(accounts: list[Account]) -> list[Account]:
    """The accounts of owners none of whose sub-accounts owes a further debt asset: the protection planner's book
    (and the module's pre-liquidation) covers the primary debt only, so such owners are left to liquidation."""
    several = {a.owner for a in accounts if any(a.other_debts)}
    return [a for a in accounts if a.owner not in several] if several else accounts


def _by_owner(accounts: list[Account]) -> dict[str, list[Account]]:
    owners: dict[str, list[Account]] = defaultdict(list)
    for a in accounts:
        owners[a.owner].append(a)
    return owners
