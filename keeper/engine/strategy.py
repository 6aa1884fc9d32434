"""Liquidation planning: for each liquidatable account, the collateral and repayment that maximise profit.

Pure: it takes a market and account snapshot (keeper.state) and returns plans; simulation and sending are the
runner's job. For a fixed account and collateral the liquidator's gain, `seized value - repaid value`, grows
linearly with the repayment (the discount depends on health only) until the seized amount hits the balance, so the
best request is the largest the close factor, the operator's `max_repay` and the keeper's inventory allow. Each held
collateral is quoted at that request with the exact mirror of the contract (keeper.core.risk) and the most profitable
one is chosen.

Under a scenario grid (docs/portfolio-margin.md) a liquidation must not lower the grid's health, and seizing one
collateral can make another scenario bind: a large request may then revert `LiquidationLowersHealth` where a smaller
one passes. For each scenario the health after a liquidation is monotone in the repayment, so the requests that keep
health form an interval from zero: the planner bisects for the largest (`_largest_safe_quote`).

Fees are bid by economics: a liquidation is worth `profit before gas - gas * fee * native price`, so it may pay any
fee up to the one at which that still equals `min_profit_usd` (its *fee ceiling*, `Plan.fee_ceiling_wei`), and no
fixed gwei cap holds it back in a gas spike (the operator's `max_fee_gwei`, when set, only lowers the ceiling). A
liquidation whose ceiling is below the current base fee cannot be mined without a loss and is skipped with reason
`fee`; it is planned again on the next block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from keeper.core import risk
from keeper.core.snapshot import Account, Market, debt_legs, liquidation_inputs, liquidation_valuation

# Gas of one liquidation used for profit estimates before the exact estimate (measured: 160-210k with one to
# three collateral assets; see docs/gas.md). The transaction itself is sent with eth_estimateGas.
LIQUIDATION_GAS_ESTIMATE = 230_000
# Under a grid, a bisected repayment is asked 1/EDGE_MARGIN inside the largest one that keeps health.
EDGE_MARGIN = 1000
# Blocks a position whose simulation failed is left alone before it is tried again (liquidations and protection).
COOLDOWN_BLOCKS = 5


WEI_PER_NATIVE = 10**18


@dataclass(frozen=True)
class Limits:
    min_profit_usd: int  # WAD USD
    max_repay: int | None  # debt-asset units per liquidation; None = no limit
    inventory: int  # debt-asset units the keeper holds
    base_fee_wei: int  # the base fee of the block the plan is made on
    priority_fee_wei: int  # the tip the keeper offers
    max_fee_cap_wei: int | None  # the operator's ceiling on maxFeePerGas (max_fee_gwei); None = no ceiling
    native_price_usd: int  # WAD USD per whole native token, to price gas; 0 = unknown
    native_price_required: bool = False  # True: an unknown native price stops liquidations (reason `price`)
    # Units the keeper holds of each further debt asset (`Market.other_debts`), by address.
    other_inventory: Mapping[str, int] = field(default_factory=dict)

    @property
    def gas_price_wei(self) -> int:
        """What one unit of gas is expected to cost if the transaction is mined now: base fee plus tip, within the
        operator's ceiling."""
        price = self.base_fee_wei + self.priority_fee_wei
        return price if self.max_fee_cap_wei is None else min(price, self.max_fee_cap_wei)


# Why a liquidatable account gets no liquidation this block (`Skip.code`), except `unpriced`: a price its health
# needs is refused, so it is not known to be liquidatable at all.
SkipCode = Literal["unpriced", "inventory", "profit", "fee", "price"]


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
    profit_usd: int  # WAD USD, net of gas at the expected fee (Limits.gas_price_wei, within the ceiling)
    profit_before_gas_usd: int = 0  # WAD USD: seized value minus repaid value
    fee_ceiling_wei: int | None = None  # the highest maxFeePerGas it may pay; None = no ceiling (gas not priced)
    debt_asset: str | None = None  # the further debt asset it repays (`liquidateDebt`); None: the primary
    state: str = ""  # every debt of the account as one key (`Account.state`); "" = `scaled_debt`

    @property
    def intent_key(self) -> str:
        """One intent per account state: while it is pending, the same state cannot be liquidated twice."""
        return f"liquidate:{self.owner}:{self.sub_id}:{self.state or self.scaled_debt}"


@dataclass(frozen=True)
class Skip:
    owner: str
    sub_id: int
    reason: str  # for people: what is wrong and what would change it
    code: SkipCode = "unpriced"
    scaled_debt: int = 0  # the account state it was decided for

    @property
    def liquidatable(self) -> bool:
        return self.code != "unpriced"


def gas_cost_usd(gas: int, limits: Limits, fee_wei: int | None = None) -> int:
    """WAD USD that `gas` units cost at `fee_wei` per gas (default: the expected price now), rounded up."""
    fee = limits.gas_price_wei if fee_wei is None else fee_wei
    return risk.mul_div_up(gas * fee, limits.native_price_usd, WEI_PER_NATIVE)


def fee_ceiling_down(profit_before_gas_usd: int, gas: int, limits: Limits) -> int | None:
    """The highest fee per gas at which a liquidation earning `profit_before_gas_usd` (WAD USD) before gas still
    clears `min_profit_usd` after `gas` units: (profit - min_profit) / (gas * native price), rounded down; then
    within the operator's ceiling. -1 when it cannot clear the minimum at any fee; None when gas is not priced
    (unknown native price) and no operator ceiling is set."""
    cap = limits.max_fee_cap_wei
    if limits.native_price_usd <= 0:
        return cap
    margin = profit_before_gas_usd - limits.min_profit_usd
    if margin < 0:
        return -1
    ceiling = margin * WEI_PER_NATIVE // (gas * limits.native_price_usd)
    return ceiling if cap is None else min(ceiling, cap)


def _usd(wad: int) -> str:
    return f"{wad / 1e18:,.2f}"


def _gwei(wei: int) -> str:
    return f"{wei / 1e9:,.2f}"


def _request_cap(debt: int, min_debt: int, health: risk.Health, market: Market, limit: int | None, held: int) -> int:
    """The largest request for one debt: its close factor, the operator's limit and what the keeper holds, never
    leaving dust."""
    cap = risk.max_repay_of(health, debt, min_debt, market.params)
    if limit is not None:
        cap = min(cap, limit)
    cap = min(cap, held)
    remaining = debt - cap
    if 0 < remaining < min_debt:
        # A smaller request than the close factor allows must not leave dust: leave exactly minDebt.
        cap = debt - min_debt
    return cap


@dataclass(frozen=True)
class _Debt:
    key: object  # risk.DEBT_ASSET or the further debt asset's address
    address: str | None  # None: the primary
    amount: int  # after the insolvency write-off
    min_debt: int
    price: int
    decimals: int
    limit: int | None  # the operator's max_repay (the primary only)
    held: int  # what the keeper holds of it


def _debts(market: Market, after: risk.Valuation, limits: Limits) -> list[_Debt]:
    """Every debt the account owes after the write-off, with what the keeper may repay of it."""
    out = []
    for o in after.owed:
        if o.key == risk.DEBT_ASSET:
            out.append(
                _Debt(o.key, None, o.amount, o.min_debt, o.price, o.decimals, limits.max_repay, limits.inventory)
            )
        else:
            address = str(o.key)
            held = limits.other_inventory.get(address, 0)
            out.append(_Debt(o.key, address, o.amount, o.min_debt, o.price, o.decimals, None, held))
    return out


def plan_account(account: Account, market: Market, limits: Limits) -> Plan | Skip | None:
    """The best liquidation of one account, a Skip saying why there is none, or None when it is healthy. On a market
    with several debt assets every (debt, collateral) pair the keeper can repay is quoted."""
    if not account.owes():
        return None
    owner, sub, state = account.owner, account.sub_id, account.scaled_debt
    # Valued as `liquidate` values it: a held asset whose price the router refuses counts at zero, so a dust of it
    # cannot hide an account from the keeper (it cannot be seized itself).
    valuation = liquidation_valuation(account, market)
    if valuation is None:
        return Skip(owner, sub, "a price it needs is refused by the router", "unpriced", state)
    if not risk.is_liquidatable(valuation.health):
        return None
    # An insolvent account is written off first: the close factor and the dust rule apply to what is left.
    after = valuation if valuation.unpriced is not None else risk.written_off_valuation(valuation)
    health = after.health
    if limits.native_price_required and limits.native_price_usd <= 0:
        return Skip(owner, sub, "the native token's price is unknown, so gas cannot be priced", "price", state)
    inputs = liquidation_inputs(account, market)
    assert inputs is not None  # the valuation succeeded, so every owed debt's price is valid
    balances, prices, assets = inputs
    legs = debt_legs(account, market)
    best: Plan | None = None
    requests = []
    for debt in _debts(market, after, limits):
        request = _request_cap(debt.amount, debt.min_debt, health, market, debt.limit, debt.held)
        requests.append((debt, request))
        if request <= 0:
            continue
        # Repaying the whole debt: ask for "everything" on-chain, because interest accrues between the block read
        # here and the block that includes the transaction, and the exact figure read now would leave dust.
        onchain_request = risk.MAX_UINT if request == debt.amount else request
        for i in account.held():
            if i not in prices:
                continue  # no price to be seized at

            def quote_at(amount: int, collateral: int = i, key: object = debt.key) -> risk.Quote:
                return risk.liquidation_of(
                    balances, prices, assets, legs, key, collateral, amount, market.params, market.grid
                ).quote

            found = _largest_safe_quote(quote_at, request, onchain_request)
            if found is None:
                continue
            quote, asked = found
            seized_usd = risk.value_down(quote.seized, prices[i], market.assets[i].decimals)
            repaid_usd = risk.value_up(quote.repaid, debt.price, debt.decimals)
            profit = seized_usd - repaid_usd
            if best is None or profit > best.profit_before_gas_usd:
                best = Plan(
                    owner=account.owner,
                    sub_id=account.sub_id,
                    collateral=market.assets[i].address,
                    collateral_index=i,
                    request=asked,
                    scaled_debt=account.scaled_debt,
                    quote=quote,
                    health=health.health,
                    profit_usd=profit,
                    profit_before_gas_usd=profit,
                    debt_asset=debt.address,
                    state=account.state(),
                )
    if best is None:
        if all(request <= 0 for _, request in requests):
            if len(requests) == 1 and requests[0][0].address is None:
                empty = limits.inventory <= 0
                why = "the keeper holds none of the debt asset" if empty else "the repay limit is too small"
            else:
                why = "the keeper holds none of the debt assets it owes"
            return Skip(owner, sub, why, "inventory", state)
        if not any(i in prices for i in account.held()):
            reason = "a price it needs is refused by the router (no held collateral has one)"
            return Skip(owner, sub, reason, "unpriced", state)
        return Skip(owner, sub, "no collateral can be seized", "profit", state)
    gas = LIQUIDATION_GAS_ESTIMATE
    ceiling = fee_ceiling_down(best.profit_before_gas_usd, gas, limits)
    if ceiling is not None and ceiling < 0:
        return Skip(
            owner,
            sub,
            f"it earns {_usd(best.profit_before_gas_usd)} USD before gas, below the minimum profit "
            f"{_usd(limits.min_profit_usd)} USD",
            "profit",
            state,
        )
    if ceiling is not None and ceiling < limits.base_fee_wei:
        return Skip(
            owner,
            sub,
            f"the base fee {_gwei(limits.base_fee_wei)} gwei is above the {_gwei(ceiling)} gwei it can pay "
            f"(it earns {_usd(best.profit_before_gas_usd)} USD before gas)",
            "fee",
            state,
        )
    expected_fee = limits.gas_price_wei if ceiling is None else min(limits.gas_price_wei, ceiling)
    profit_after = best.profit_before_gas_usd - gas_cost_usd(gas, limits, expected_fee)
    return replace(best, profit_usd=profit_after, fee_ceiling_wei=ceiling)


def _largest_safe_quote(
    quote_at: Callable[[int], risk.Quote], request: int, onchain_request: int
) -> tuple[risk.Quote, int] | None:
    """The quote at `request` (asked on-chain as `onchain_request`), or when that would lower health (possible
    only under a grid), just inside the largest smaller request that does not; None when nothing passes."""
    try:
        return quote_at(request), onchain_request
    except risk.LiquidationLowersHealth:
        pass
    except risk.ContractRevert:
        return None

    def keeps_health(amount: int) -> bool:
        try:
            quote_at(amount)
        except risk.LiquidationLowersHealth:
            return False
        except risk.ContractRevert:
            return True  # another failure (a seizure that rounds to nothing) lies below the boundary
        return True

    if not keeps_health(1):
        return None
    edge = risk.largest(1, request - 1, keeps_health)
    # A tenth of a percent inside the edge: the debt accrues between this block and the one that includes the
    # liquidation, and the exact edge would then lower health.
    amount = max(1, edge - edge // EDGE_MARGIN)
    try:
        return quote_at(amount), amount
    except risk.ContractRevert:
        return None


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
