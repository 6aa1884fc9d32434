"""Liquidation planning: for each liquidatable account, the collateral and repayment that maximise profit.

Pure: it takes a market and account snapshot (keeper.state) and returns plans; simulation and sending are the
runner's job. For a fixed account and collateral the liquidator's gain, `seized value - repaid value`, grows
linearly with the repayment (the discount depends on health only) until the seized amount hits the balance, so the
best request is the largest the close factor, the operator's `max_repay` and the keeper's inventory allow. Each held
collateral is quoted at that request with the exact mirror of the contract (keeper.risk) and the most profitable
one, net of gas at the current fee, is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from keeper import risk
from keeper.state import Account, Market, liquidation_inputs, liquidation_valuation

# Gas of one liquidation used for profit estimates before the exact estimate (measured: 160-210k with one to
# three collateral assets; see docs/gas.md). The transaction itself is sent with eth_estimateGas.
LIQUIDATION_GAS_ESTIMATE = 230_000
# Blocks a position whose simulation failed is left alone before it is tried again (liquidations and protection).
COOLDOWN_BLOCKS = 5


@dataclass(frozen=True)
class Limits:
    min_profit_usd: int  # WAD USD
    max_repay: int | None  # debt-asset units per liquidation; None = no limit
    inventory: int  # debt-asset units the keeper holds
    gas_price_wei: int  # what one unit of gas costs now (max fee the keeper would pay)
    native_price_usd: int  # WAD USD per whole native token (ETH), to price gas


@dataclass(frozen=True)
class Plan:
    owner: str
    sub_id: int
    collateral: str  # token address
    collateral_index: int
    request: int  # repayAssets argument (MAX_UINT for "the whole debt at inclusion")
    scaled_debt: int  # the position this plan was made for
    quote: risk.Quote
    health: int
    profit_usd: int  # WAD USD, net of estimated gas; may be negative in `skipped`

    @property
    def intent_key(self) -> str:
        """One intent per account state: while it is pending, the same state cannot be liquidated twice."""
        return f"liquidate:{self.owner}:{self.sub_id}:{self.scaled_debt}"


@dataclass(frozen=True)
class Skip:
    owner: str
    sub_id: int
    reason: str


def gas_cost_usd(gas: int, limits: Limits) -> int:
    return risk.mul_div_up(gas * limits.gas_price_wei, limits.native_price_usd, 10**18)


def _request_cap(account: Account, market: Market, health: risk.Health, limits: Limits) -> int:
    cap = risk.max_repay(health, market.params)
    if limits.max_repay is not None:
        cap = min(cap, limits.max_repay)
    cap = min(cap, limits.inventory)
    remaining = health.debt - cap
    if 0 < remaining < market.params.min_debt:
        # A smaller request than the close factor allows must not leave dust: leave exactly minDebt.
        cap = health.debt - market.params.min_debt
    return cap


def plan_account(account: Account, market: Market, limits: Limits) -> Plan | Skip | None:
    """The best liquidation of one account, a Skip saying why there is none, or None when it is healthy."""
    if account.debt == 0:
        return None
    # Valued as `liquidate` values it: a held asset whose price the router refuses counts at zero, so a dust of it
    # cannot hide an account from the keeper (it cannot be seized itself).
    valuation = liquidation_valuation(account, market)
    if valuation is None:
        return Skip(account.owner, account.sub_id, "a price it needs is refused by the router")
    health = valuation.health
    if not risk.is_liquidatable(health):
        return None
    if valuation.unpriced is None and market.debt_price.ok:
        # An insolvent account is written off first: the close factor and the dust rule apply to what is left.
        _, health = risk.written_off(
            valuation, account.scaled_debt, market.index, market.debt_price.price, market.debt_decimals
        )
    request = _request_cap(account, market, health, limits)
    if request <= 0:
        return Skip(account.owner, account.sub_id, "no inventory or repay limit too small")
    # Repaying the whole debt: ask for "everything" on-chain, because interest accrues between the block read
    # here and the block that includes the transaction, and the exact figure read now would leave dust.
    onchain_request = risk.MAX_UINT if request == health.debt else request
    inputs = liquidation_inputs(account, market)
    assert inputs is not None  # the valuation succeeded, so the debt asset's price is valid
    balances, prices, assets = inputs
    best: Plan | None = None
    gas_usd = gas_cost_usd(LIQUIDATION_GAS_ESTIMATE, limits)
    for i in account.held():
        if i not in prices:
            continue  # no price to be seized at
        try:
            quote = risk.liquidation_quote(
                balances,
                prices,
                assets,
                account.scaled_debt,
                market.index,
                market.debt_price.price,
                market.debt_decimals,
                i,
                request,
                market.params,
            )
        except risk.ContractRevert:
            continue
        seized_usd = risk.value_down(quote.seized, prices[i], market.assets[i].decimals)
        repaid_usd = risk.value_up(quote.repaid, market.debt_price.price, market.debt_decimals)
        profit = seized_usd - repaid_usd - gas_usd
        if best is None or profit > best.profit_usd:
            best = Plan(
                owner=account.owner,
                sub_id=account.sub_id,
                collateral=market.assets[i].address,
                collateral_index=i,
                request=onchain_request,
                scaled_debt=account.scaled_debt,
                quote=quote,
                health=health.health,
                profit_usd=profit,
            )
    if best is None:
        if not any(i in prices for i in account.held()):
            return Skip(account.owner, account.sub_id, "a price it needs is refused by the router (no held collateral)")
        return Skip(account.owner, account.sub_id, "no collateral can be seized")
    if best.profit_usd < limits.min_profit_usd:
        return Skip(account.owner, account.sub_id, f"profit {best.profit_usd / 1e18:.2f} USD below minimum")
    return best


def plan_all(accounts: Iterable[Account], market: Market, limits: Limits) -> tuple[list[Plan], list[Skip]]:
    """Plans for every liquidatable account, most profitable first, within the keeper's inventory."""
    plans: list[Plan] = []
    skips: list[Skip] = []
    for account in accounts:
        result = plan_account(account, market, limits)
        if isinstance(result, Plan):
            plans.append(result)
        elif isinstance(result, Skip):
            skips.append(result)
    plans.sort(key=lambda p: p.profit_usd, reverse=True)
    return plans, skips
