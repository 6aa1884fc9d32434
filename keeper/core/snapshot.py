"""One block's view of the market and of each account (what the Lens returned, as plain values), and what the
risk mirror says of an account in it: the inputs both the liquidation strategy and the protection planner value
accounts with. Pure: no I/O (keeper/chain/reads.py fills these from the chain)."""

from __future__ import annotations

from dataclasses import dataclass

from keeper.core import risk
from keeper.core.units import Ray, Wad


@dataclass(frozen=True)
class PriceView:
    asset: str
    ok: bool
    price: Wad  # USD per whole token; 0 when not ok
    error: bytes  # the router's revert data when not ok


@dataclass(frozen=True)
class AssetView:
    address: str
    index: int
    decimals: int
    risk: risk.AssetRisk
    price: PriceView


@dataclass(frozen=True)
class Market:
    block: int
    timestamp: int
    index: Ray  # borrow index
    debt_asset: str
    debt_decimals: int
    debt_price: PriceView
    assets: tuple[AssetView, ...]
    params: risk.RiskParams
    # The engine's stored scenario grid at this block, columns keyed by asset index (`Lens.grid`); None: the
    # additive rule.
    grid: risk.GridRule | None = None

    def asset(self, address: str) -> AssetView:
        for a in self.assets:
            if a.address == address:
                return a
        raise KeyError(address)


@dataclass(frozen=True)
class Account:
    owner: str
    sub_id: int
    scaled_debt: int
    debt: int
    mask: int
    balances: tuple[int, ...]  # one per listed asset, in Market.assets order

    def held(self) -> list[int]:
        """Indexes of the assets this account holds."""
        return [i for i in range(len(self.balances)) if self.mask >> i & 1]


MirrorInputs = tuple[dict[int, int], dict[int, int], dict[int, risk.AssetRisk]]


def mirror_inputs(account: Account, market: Market) -> MirrorInputs | None:
    """Balances, prices and configs of the assets `account` holds, keyed by asset index in `assetList()` order
    (the order the engine walks them), or None when the router refuses a price the account needs."""
    if account.debt and not market.debt_price.ok:
        return None
    balances: dict[int, int] = {}
    prices: dict[int, int] = {}
    assets: dict[int, risk.AssetRisk] = {}
    for i in account.held():
        view = market.assets[i]
        if not view.price.ok:
            return None
        balances[i] = account.balances[i]
        prices[i] = view.price.price
        assets[i] = view.risk
    return balances, prices, assets


def liquidation_inputs(account: Account, market: Market) -> MirrorInputs | None:
    """What the engine's liquidation values an account with (its lenient valuation): balances and configs of every
    asset it holds, and the prices the router accepts; a held asset whose price is refused is left out of the
    prices and counts at zero. None only when the account has debt and the debt asset's price is refused."""
    if account.debt and not market.debt_price.ok:
        return None
    balances: dict[int, int] = {}
    prices: dict[int, int] = {}
    assets: dict[int, risk.AssetRisk] = {}
    for i in account.held():
        view = market.assets[i]
        balances[i] = account.balances[i]
        assets[i] = view.risk
        if view.price.ok:
            prices[i] = view.price.price
    return balances, prices, assets


def liquidation_valuation(account: Account, market: Market) -> risk.Valuation | None:
    """The account as `liquidate` values it (unpriceable collateral at zero), or None when it cannot be valued
    (the debt asset's price is refused, or the contract's arithmetic would overflow)."""
    inputs = liquidation_inputs(account, market)
    if inputs is None:
        return None
    balances, prices, assets = inputs
    try:
        return risk.valuation(
            balances,
            prices,
            assets,
            account.scaled_debt,
            market.index,
            market.debt_price.price if market.debt_price.ok else None,
            market.debt_decimals,
            market.params.min_discount,
            market.grid,
        )
    except risk.ContractRevert:
        return None


def health_of(account: Account, market: Market) -> risk.Health | None:
    """The account's health by the mirror, or None when a price it needs is one the router refuses."""
    figures = figures_of(account, market)
    return None if figures is None else figures[0]


def figures_of(account: Account, market: Market) -> tuple[risk.Health, int] | None:
    """`health_of` and the grid's binding scenario (-1 under the additive rule or without debt)."""
    inputs = mirror_inputs(account, market)
    if inputs is None:
        return None
    balances, prices, assets = inputs
    try:
        return risk.account_figures(
            balances,
            prices,
            assets,
            account.scaled_debt,
            market.index,
            market.debt_price.price,
            market.debt_decimals,
            market.grid,
        )
    except risk.ContractRevert:
        # The contract would revert too (an overflow on absurd balances): the account cannot be priced.
        return None
