"""The keeper's protection strategies, run after liquidations on every block (docs/protection.md).

- Pre-liquidation: every opted-in account in its band (`1 <= health < preThreshold`) that is not liquidatable gets
  the most profitable allowed pre-liquidation, with the same rules as liquidations: simulated first, never sent when
  the node says it reverts, one open intent per account, a cool-down after a failure.
- Rebalancing: for every owner that authorised this keeper, the first move of `protection.plan_rebalances` (one move
  per owner per block, so each move is planned on fresh state).

Opt-ins and authorisations are read from the module's views and cached for `CACHE_BLOCKS`, so an owner's change is
seen within that many blocks while a block costs few extra calls.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from web3.contract import Contract

from keeper import protection as pr
from keeper import risk
from keeper.risk import WAD
from keeper.state import Account, Market
from keeper.strategy import COOLDOWN_BLOCKS

CACHE_BLOCKS = 20
PRE_LIQUIDATION_GAS = 220_000
REBALANCE_GAS = 180_000
SEIZE_SLIPPAGE_BPS = 50


class Protector:
    def __init__(self, keeper: Any, module: Contract, log: logging.Logger) -> None:
        self.k = keeper
        self.module = module
        self.log = log
        self.me = keeper.signer.address
        self._targets: dict[str, tuple[int, int]] = {}  # owner -> (target health, block read)
        self._optins: dict[tuple[str, int], tuple[pr.PreConfig, int]] = {}
        self._cooldown: dict[str, int] = {}  # intent key -> block until which it is not retried

    # ---------------------------------------------------------------- reads

    def book(self, market: Market) -> pr.Book | None:
        if not market.debt_price.ok:
            return None
        prices = {a.address: a.price.price for a in market.assets if a.price.ok}
        return pr.Book(
            prices=prices,
            assets={a.address: a.risk for a in market.assets if a.price.ok},
            index=market.index,
            debt_price=market.debt_price.price,
            debt_decimals=market.debt_decimals,
            min_debt=market.params.min_debt,
        )

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

    @staticmethod
    def _sub(market: Market, a: Account) -> pr.Sub:
        balances = {market.assets[i].address: a.balances[i] for i in a.held()}
        return pr.Sub(a.sub_id, balances, a.scaled_debt)

    # ---------------------------------------------------------------- the block

    def run(self, market: Market, accounts: list[Account], head: int, liquidatable: set[tuple[str, int]]) -> None:
        book = self.book(market)
        if book is None:
            return
        settings = self.k.settings
        if settings.pre_liquidation_enabled:
            self._pre_liquidations(book, market, accounts, head, liquidatable)
        if settings.rebalance_enabled:
            self._rebalances(book, market, accounts, head)

    def _gas_usd(self, gas: int) -> float:
        limits = self.k.last_limits
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
                self.k.metrics.pre_liquidations_sent.inc()
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

    def _rebalances(self, book: pr.Book, market: Market, accounts: list[Account], head: int) -> None:
        owners: dict[str, list[Account]] = defaultdict(list)
        for a in accounts:
            owners[a.owner].append(a)
        cap = None
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
            moves = pr.plan_rebalances(book, states, target, max_moves=1)
            if not moves:
                continue
            m = moves[0]
            data = self.module.encode_abi("rebalance", [owner, m.from_sub, m.to_sub, m.asset, m.amount])
            if self._send(f"rebalance:{owner}", data, head):
                self.k.metrics.rebalances_sent.inc()
                self.log.info(
                    "rebalancing %s: %d -> %d, %d of %s, receiver health -> %.4f, giver -> %.4f",
                    owner,
                    m.from_sub,
                    m.to_sub,
                    m.amount,
                    m.asset,
                    m.receiver_health_after / WAD,
                    m.giver_health_after / WAD,
                )

    def _send(self, key: str, data: str, head: int) -> bool:
        if self._cooldown.get(key, -1) > head:
            return False
        sub = self.k.txm.submit(key, {"to": self.module.address, "data": data, "value": 0}, simulate=True)
        if sub is None or sub.status != "pending":
            self._cooldown[key] = head + COOLDOWN_BLOCKS
            return False
        return True
