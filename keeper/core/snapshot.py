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
class DebtView:
    """A debt asset beyond the primary (`Lens.debts`, from the second entry): its vault, decimals, the smallest
    debt a liquidation may leave in it, its vault's borrow index and the router's verdict on its price."""

    address: str
    vault: str
    decimals: int
    min_debt: int
    index: Ray
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
    # The debt assets beyond the primary (`listDebt`), in `debtAssets()` order; empty on a one-debt market.
    other_debts: tuple[DebtView, ...] = ()

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
    other_debts: tuple[int, ...] = ()  # scaled debt in each of Market.other_debts (empty: none owed)

    def owes(self) -> bool:
        """Whether the account owes anything, in any debt asset."""
        return self.scaled_debt != 0 or any(self.other_debts)

    def state(self) -> str:
        """Its debts as one key (an intent is per account state): the primary's scaled debt, then the others'."""
        if not any(self.other_debts):
            return str(self.scaled_debt)
        return ",".join(str(d) for d in (self.scaled_debt, *self.other_debts))

    def held(self) -> list[int]:
        """Indexes of the assets this account holds."""
        return [i for i in range(len(self.balances)) if self.mask >> i & 1]


MirrorInputs = tuple[dict[int, int], dict[int, int], dict[int, risk.AssetRisk]]


def debt_legs(account: Account, market: Market) -> dict[object, risk.DebtLeg]:
    """Every debt the account may owe, as `risk.valuation_of` takes them: the primary under `risk.DEBT_ASSET`, the
    others under their address; a refused price is None (the mirror raises PriceUnavailable if it is owed)."""
    p = market.debt_price
    legs: dict[object, risk.DebtLeg] = {
        risk.DEBT_ASSET: risk.DebtLeg(
            account.scaled_debt,
            market.index,
            p.price if p.ok else None,
            market.debt_decimals,
            market.params.min_debt,
        )
    }
    for view, scaled in zip(market.other_debts, account.other_debts, strict=False):
        price = view.price.price if view.price.ok else None
        legs[view.address] = risk.DebtLeg(scaled, view.index, price, view.decimals, view.min_debt)
    return legs


def _debt_prices_ok(account: Account, market: Market) -> bool:
    if account.scaled_debt and not market.debt_price.ok:
        return False
    return all(v.price.ok for v, s in zip(market.other_debts, account.other_debts, strict=False) if s)


def mirror_inputs(account: Account, market: Market) -> MirrorInputs | None:
    """Balances, prices and configs of the assets `account` holds, keyed by asset index in `assetList()` order
    (the order the engine walks them), or None when the router refuses a price the account needs."""
    if not _debt_prices_ok(account, market):
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
    prices and counts at zero. None only when the router refuses the price of a debt the account owes."""
    if not _debt_prices_ok(account, market):
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
    (the price of a debt it owes is refused, or the contract's arithmetic would overflow)."""
    inputs = liquidation_inputs(account, market)
    if inputs is None:
        return None
    balances, prices, assets = inputs
    try:
        legs = debt_legs(account, market)
        return risk.valuation_of(balances, prices, assets, legs, market.params.min_discount, market.grid)
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
        legs = debt_legs(account, market)
        v = risk.valuation_of(balances, prices, assets, legs, 0, market.grid, lenient=False)
    except risk.ContractRevert:
        # The contract would revert too (an overflow on absurd balances): the account cannot be priced.
        return None
    return v.health, v.binding
