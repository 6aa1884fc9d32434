"""Liquidation of the MarginEngine against an independent integer reference of the rules documented on
IMarginEngine.liquidate: the health boundary, the discount curve and its health-neutral cap, the close factor and
dust rule, collateral-limited seizures, the insolvency write-off, bad debt, the callback path and the bound on what
a liquidator can take. The reference works in debt-asset units with the borrow index held at RAY (the `no_interest`
fixture), so scaled debt and debt coincide."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest
from conftest import MAX_UINT, RAY, WAD, fund, open_position, reverts_with

USDC = 10**6  # one whole debt-asset token (6 decimals)
DEBT_DECIMALS = 6
HALF_CLOSE = WAD // 2
NEUTRAL_MARGIN = 10**12  # IMarginEngine.liquidate rule 3: 1e-6 below the health-neutral discount


# ---------------------------------------------------------------- reference model


@dataclass(frozen=True)
class Asset:
    """Risk configuration of one collateral asset, as documented in IMarginEngine.AssetConfig."""

    decimals: int
    ltv: int
    lt: int
    max_discount: int


@dataclass(frozen=True)
class Params:
    """Protocol-wide liquidation parameters (IMarginEngine.RiskParams)."""

    min_discount: int = 5 * 10**15  # 0.5 %
    full_close_health: int = 95 * 10**16  # 0.95
    full_close_debt_value: int = 100 * WAD  # $100
    min_debt: int = 10 * USDC


# The test market of tests/conftest.py.
ASSETS: dict[str, Asset] = {
    "WETH": Asset(18, 80 * 10**16, 85 * 10**16, 10 * 10**16),
    "WBTC": Asset(8, 75 * 10**16, 80 * 10**16, 10 * 10**16),
    "LINK": Asset(18, 60 * 10**16, 70 * 10**16, 12 * 10**16),
}
PARAMS = Params()


@dataclass(frozen=True)
class Holding:
    """A collateral balance with its asset's configuration and WAD price."""

    asset: Asset
    balance: int
    price: int


@dataclass(frozen=True)
class Health:
    lt_weighted: int
    ltv_weighted: int
    debt_value: int
    health: int


@dataclass(frozen=True)
class Quote:
    repaid: int
    seized: int
    discount: int
    max_repay: int
    bad_debt: int


class RefRevert(Exception):  # noqa: N818 - mirrors a contract revert, not a Python failure
    """The reference predicts a revert with this custom error and these arguments."""

    def __init__(self, name: str, **inputs: int) -> None:
        super().__init__(name, inputs)
        self.name = name
        self.inputs = inputs


def ceil_div(x: int, d: int) -> int:
    return -(-x // d)


def wad(usd: str | int) -> int:
    """A decimal USD figure as an exact WAD integer."""
    return int(Decimal(str(usd)) * WAD)


def account_health(holdings: dict[str, Holding], debt: int, debt_price: int) -> Health:
    """health = Σ floor(value_down(c)·lt) / debtValue (down); debtValue rounded up; max uint without debt."""
    lt_w = ltv_w = 0
    for h in holdings.values():
        value = h.balance * h.price // 10**h.asset.decimals
        lt_w += value * h.asset.lt // WAD
        ltv_w += value * h.asset.ltv // WAD
    debt_value = ceil_div(debt * debt_price, 10**DEBT_DECIMALS)
    health = MAX_UINT if debt_value == 0 else lt_w * WAD // debt_value
    return Health(lt_w, ltv_w, debt_value, health)


def cover_value(holdings: dict[str, Holding], params: Params = PARAMS) -> int:
    """Σ value_down(c) / (1 + min(minDiscount, maxDiscount_c)), each rounded down."""
    return sum(
        (h.balance * h.price // 10**h.asset.decimals) * WAD // (WAD + min(params.min_discount, h.asset.max_discount))
        for h in holdings.values()
    )


def write_off(holdings: dict[str, Holding], debt: int, debt_price: int, params: Params = PARAMS) -> int:
    """Debt an insolvency write-off removes: down to the cover value (rounded up), 0 when covered."""
    cover = cover_value(holdings, params)
    if cover >= ceil_div(debt * debt_price, 10**DEBT_DECIMALS):
        return 0
    target = ceil_div(cover * 10**DEBT_DECIMALS, debt_price)
    return max(debt - target, 0)


def quote(
    holdings: dict[str, Holding],
    debt: int,
    debt_price: int,
    collateral: str,
    requested: int,
    params: Params = PARAMS,
) -> Quote:
    """What a liquidation must do under the documented rules, or the RefRevert it must raise (all prices valid)."""
    h = account_health(holdings, debt, debt_price)
    if debt == 0 or h.health >= WAD:
        raise RefRevert("NotLiquidatable", health=h.health)
    coll = holdings[collateral]
    if coll.balance == 0:
        raise RefRevert("NothingSeized")
    written_off = write_off(holdings, debt, debt_price, params)
    debt -= written_off
    h = account_health(holdings, debt, debt_price)
    neutral = h.health * WAD // coll.asset.lt
    neutral = neutral - WAD - NEUTRAL_MARGIN if neutral > WAD + NEUTRAL_MARGIN else 0
    discount = min(coll.asset.max_discount, params.min_discount + WAD - h.health, neutral)
    full = h.health < params.full_close_health or h.debt_value <= params.full_close_debt_value
    max_repay = debt if full else ceil_div(debt * HALF_CLOSE, WAD)
    if debt - max_repay < params.min_debt:
        max_repay = debt
    repaid = min(requested, max_repay)
    if repaid == 0:
        raise RefRevert("ZeroAmount")
    dec = 10**coll.asset.decimals
    seize_value = (repaid * debt_price // 10**DEBT_DECIMALS) * (WAD + discount) // WAD
    seized = seize_value * dec // coll.price
    if seized > coll.balance:
        pay_value = ceil_div(ceil_div(coll.balance * coll.price, dec) * WAD, WAD + discount)
        repaid = min(ceil_div(pay_value * 10**DEBT_DECIMALS, debt_price), repaid)
        seized = coll.balance
    if seized == 0:
        raise RefRevert("NothingSeized")
    remaining = debt - repaid
    last_collateral = seized == coll.balance and all(
        other.balance == 0 for name, other in holdings.items() if name != collateral
    )
    # The dust rule binds a repayment that leaves part of the collateral; one that takes a whole balance may leave
    # less than minDebt, and the last collateral realises the rest as bad debt.
    if seized < coll.balance and 0 < remaining < params.min_debt:
        raise RefRevert("LiquidationLeavesDust", remainingDebt=remaining, minDebt=params.min_debt)
    bad_debt = written_off + (remaining if last_collateral else 0)
    if remaining and not last_collateral:
        left = dict(holdings)
        left[collateral] = replace(coll, balance=coll.balance - seized)
        health_after = account_health(left, remaining, debt_price).health
        if health_after < h.health:
            raise RefRevert("LiquidationLowersHealth", healthBefore=h.health, healthAfter=health_after)
        bad_debt += write_off(left, remaining, debt_price, params)  # what the rest cannot cover, at once
    return Quote(repaid, seized, discount, max_repay, bad_debt)


def after(holdings: dict[str, Holding], debt: int, collateral: str, q: Quote) -> tuple[dict[str, Holding], int]:
    """The position the reference expects after liquidation `q`."""
    new = dict(holdings)
    new[collateral] = replace(holdings[collateral], balance=holdings[collateral].balance - q.seized)
    return new, debt - q.repaid - q.bad_debt


def usd_value(amount: int, price: int, decimals: int) -> int:
    return amount * price // 10**decimals


# ---------------------------------------------------------------- chain helpers


def expect_ref(system: Any, ref: RefRevert) -> Any:
    return reverts_with(getattr(system.engine, ref.name), **ref.inputs)


class Market:
    """Sets prices on the mock feeds and remembers them as WAD integers for the reference."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.prices: dict[str, int] = {"WETH": wad(2000), "WBTC": wad(60000), "LINK": wad(15), "USDC": wad(1)}

    def set(self, symbol: str, usd: str | int) -> None:
        self.system.set_price(symbol, usd)
        self.prices[symbol] = wad(usd)

    def holdings(self, balances: dict[str, int]) -> dict[str, Holding]:
        return {s: Holding(ASSETS[s], b, self.prices[s]) for s, b in balances.items()}

    def quote(self, balances: dict[str, int], debt: int, collateral: str, requested: int, **kw: Any) -> Quote:
        return quote(self.holdings(balances), debt, self.prices["USDC"], collateral, requested, **kw)


def chain_quote(system: Any, owner: Any, sub_id: int, symbol: str, requested: int) -> Quote:
    q = system.engine.previewLiquidation(owner, sub_id, system.tokens[symbol], requested)
    return Quote(q.repaid, q.seized, q.discount, q.maxRepay, q.badDebt)


def liquidate(
    system: Any,
    caller: Any,
    owner: Any,
    symbol: str,
    requested: int,
    *,
    sub_id: int = 0,
    receiver: Any = None,
    min_seized: int = 0,
) -> Any:
    return system.engine.liquidate(
        owner, sub_id, system.tokens[symbol], requested, min_seized, receiver or caller, b"", sender=caller
    )


@pytest.fixture(autouse=True)
def no_interest(system: Any, admin: Any) -> None:
    """Zero borrow rates so debts stay exactly what was borrowed while blocks advance (index stays RAY)."""
    system.vault.setRateModel((0, 0, 0, 8 * 10**17), 10**17, sender=admin)
    assert system.vault.borrowIndex() == RAY


@pytest.fixture
def market(system: Any) -> Market:
    return Market(system)


@pytest.fixture
def payer(system: Any, liquidator: Any, no_interest: None) -> Any:
    """The liquidator with plenty of USDC, engine approved."""
    fund(system, liquidator, "USDC", 10_000_000 * USDC)
    return liquidator


# ---------------------------------------------------------------- configuration


def test_reference_matches_deployed_configuration(system: Any) -> None:
    """The reference uses the deployed asset configs and risk parameters (guards every test below)."""
    for symbol, asset in ASSETS.items():
        cfg = system.engine.assetConfig(system.tokens[symbol])
        assert (cfg.decimals, cfg.ltv, cfg.lt, cfg.maxDiscount) == (
            asset.decimals,
            asset.ltv,
            asset.lt,
            asset.max_discount,
        )
    rp = system.engine.riskParams()
    assert (rp.minDiscount, rp.fullCloseHealth, rp.fullCloseDebtValue, rp.minDebt) == (
        PARAMS.min_discount,
        PARAMS.full_close_health,
        PARAMS.full_close_debt_value,
        PARAMS.min_debt,
    )
    assert system.engine.debtDecimals() == DEBT_DECIMALS


# ---------------------------------------------------------------- who is liquidatable


def test_healthy_account_reverts_not_liquidatable(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """A healthy account cannot be previewed or liquidated: NotLiquidatable carries its health."""
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * USDC)
    health = account_health(market.holdings({"WETH": WAD}), 1500 * USDC, market.prices["USDC"]).health
    assert health == 1700 * WAD // 1500
    with reverts_with(system.engine.NotLiquidatable, health=health):
        system.engine.previewLiquidation(alice, 0, system.weth, MAX_UINT)
    with reverts_with(system.engine.NotLiquidatable, health=health):
        liquidate(system, payer, alice, "WETH", MAX_UINT)


def test_account_without_debt_is_not_liquidatable(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Collateral without debt has infinite health, even at a crashed price."""
    open_position(system, alice, 0, {"WETH": WAD})
    market.set("WETH", 2)
    with reverts_with(system.engine.NotLiquidatable, health=MAX_UINT):
        liquidate(system, payer, alice, "WETH", 1000 * USDC)
    assert system.engine.collateralOf(alice, 0, system.weth) == WAD


def test_health_exactly_one_is_not_liquidatable(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """At health == 1 exactly the account is safe; one feed tick lower it is liquidatable at minDiscount + gap."""
    open_position(system, alice, 0, {"WETH": WAD}, borrow=0)
    market.set("WETH", 2200)
    system.engine.borrow(0, 1700 * USDC, alice, sender=alice)
    market.set("WETH", 2000)  # 2000 * 0.85 = 1700 = debt value
    assert account_health(market.holdings({"WETH": WAD}), 1700 * USDC, market.prices["USDC"]).health == WAD
    with reverts_with(system.engine.NotLiquidatable, health=WAD):
        liquidate(system, payer, alice, "WETH", 100 * USDC)

    market.set("WETH", "1999.99999999")
    ref = market.quote({"WETH": WAD}, 1700 * USDC, "WETH", 100 * USDC)
    h = account_health(market.holdings({"WETH": WAD}), 1700 * USDC, market.prices["USDC"]).health
    assert h == WAD - 5 * 10**6  # floor(1699.9999999915e18 * 1e18 / 1700e18)
    assert ref.discount == PARAMS.min_discount + 5 * 10**6
    assert chain_quote(system, alice, 0, "WETH", 100 * USDC) == ref


def test_liquidation_boundary_price(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """The lowest feed answer with health >= 1 is safe and the answer one unit below it is liquidatable."""
    debt = 1500 * USDC
    open_position(system, alice, 0, {"WETH": WAD}, borrow=debt)

    def healthy(answer: int) -> bool:
        holding = {"WETH": Holding(ASSETS["WETH"], WAD, answer * 10**10)}
        return account_health(holding, debt, wad(1)).health >= WAD

    lo, hi = 1, 2000 * 10**8  # feed answers (8 decimals): unhealthy at lo, healthy at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if healthy(mid) else (mid, hi)
    boundary = hi
    assert boundary == ceil_div(debt * 10**12 * WAD, ASSETS["WETH"].lt * 10**10)  # 1500 / 0.85 per 1e-8 tick

    market.set("WETH", str(Decimal(boundary) / 10**8))
    h = account_health(market.holdings({"WETH": WAD}), debt, market.prices["USDC"]).health
    with reverts_with(system.engine.NotLiquidatable, health=h):
        system.engine.previewLiquidation(alice, 0, system.weth, debt)
    market.set("WETH", str(Decimal(boundary - 1) / 10**8))
    ref = market.quote({"WETH": WAD}, debt, "WETH", 200 * USDC)
    assert chain_quote(system, alice, 0, "WETH", 200 * USDC) == ref
    liquidate(system, payer, alice, "WETH", 200 * USDC)
    assert system.engine.debtOf(alice, 0) == debt - ref.repaid


# ---------------------------------------------------------------- discount curve


def test_discount_grows_as_health_falls_then_follows_the_health_neutral_cap(
    system: Any, market: Market, alice: Any
) -> None:
    """WETH: discount = minDiscount + (1 - health), small just below 1 and growing as health falls, until the
    health-neutral cap health / lt - 1 binds (about health 0.92 for lt 0.85): then it falls with health, so no
    liquidation lowers health; an insolvent account is written off to its cover value first and pays about
    minDiscount. The 10 % cap is never reached for WETH."""
    balances, debt = {"WETH": 10 * WAD}, 15_000 * USDC
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=debt)
    discounts = []
    for usd in ["1764", "1700", "1650", "1600", "1590", "1500", "1400"]:
        market.set("WETH", usd)
        ref = market.quote(balances, debt, "WETH", 1000 * USDC)
        assert chain_quote(system, alice, 0, "WETH", 1000 * USDC) == ref
        discounts.append(ref.discount)
    assert discounts[0] < PARAMS.min_discount + 10**15  # health 0.9996: 0.5 % + 0.04 %
    assert discounts[0] < discounts[1] < discounts[2]  # the Dutch auction binds
    assert discounts[2] > discounts[3] > discounts[4]  # the health-neutral cap binds
    assert max(discounts) < ASSETS["WETH"].max_discount
    # Insolvent (collateral $15,000 / $14,000 against $15,000 of debt): written off to the cover value, where the
    # health-neutral discount is minDiscount less the rounding margin (and less the one debt unit the write-off
    # keeps for the lenders).
    for d in discounts[5:]:
        assert PARAMS.min_discount - NEUTRAL_MARGIN - 10**9 < d <= PARAMS.min_discount - NEUTRAL_MARGIN


def test_discount_cap_is_per_asset_link(system: Any, market: Market, alice: Any) -> None:
    """LINK's discount keeps growing past WETH's 10 % cap and stops at its own 12 %."""
    balances, debt = {"LINK": 1000 * WAD}, 8000 * USDC
    open_position(system, alice, 0, {"LINK": 1000 * WAD}, borrow=debt)
    seen = []
    for usd in ["11", "10.2", "10", "9"]:
        market.set("LINK", usd)
        ref = market.quote(balances, debt, "LINK", 500 * USDC)
        assert chain_quote(system, alice, 0, "LINK", 500 * USDC) == ref
        seen.append(ref.discount)
    assert seen[0] < ASSETS["WETH"].max_discount < seen[1] < ASSETS["LINK"].max_discount
    assert seen[2:] == [ASSETS["LINK"].max_discount] * 2


# (symbol, deposit, borrow, crash price, repay request)
SEIZE_CASES = [
    ("WETH", 10 * WAD, 15_000 * USDC, "1700", 3_333_333_333),
    ("WBTC", 5 * 10**7, 22_000 * USDC, "53000", 7_777_777_777),
    ("LINK", 1000 * WAD, 8000 * USDC, "11", 1_234_567_891),
]


@pytest.mark.parametrize(
    ("symbol", "deposit", "borrow", "price", "repay"), SEIZE_CASES, ids=[c[0] for c in SEIZE_CASES]
)
def test_exact_seized_amounts_event_and_transfers(
    system: Any,
    market: Market,
    alice: Any,
    payer: Any,
    stranger: Any,
    symbol: str,
    deposit: int,
    borrow: int,
    price: str,
    repay: int,
) -> None:
    """Seized/repaid equal the reference exactly; the caller pays repaid USDC to the vault, the receiver gets
    seized collateral, and Liquidated carries the same figures."""
    open_position(system, alice, 0, {symbol: deposit}, borrow=borrow)
    market.set(symbol, price)
    ref = market.quote({symbol: deposit}, borrow, symbol, repay)
    assert ref.repaid == repay
    assert ref.bad_debt == 0
    token = system.tokens[symbol]
    usdc_payer, usdc_vault, idle = (
        system.usdc.balanceOf(payer),
        system.usdc.balanceOf(system.vault),
        system.vault.idle(),
    )

    receipt = liquidate(system, payer, alice, symbol, repay, receiver=stranger)

    assert system.usdc.balanceOf(payer) == usdc_payer - ref.repaid
    assert system.usdc.balanceOf(system.vault) == usdc_vault + ref.repaid
    assert system.vault.idle() == idle + ref.repaid
    assert token.balanceOf(stranger) == ref.seized
    assert token.balanceOf(payer) == 0
    assert system.engine.collateralOf(alice, 0, token) == deposit - ref.seized
    assert system.engine.assetSupply(token).totalSupplied == deposit - ref.seized
    assert system.engine.debtOf(alice, 0) == borrow - ref.repaid
    logs = receipt.events.filter(system.engine.Liquidated)
    assert len(logs) == 1
    assert dict(logs[0].event_arguments) == {
        "liquidator": payer.address,
        "owner": alice.address,
        "subId": 0,
        "collateral": token.address,
        "repaid": ref.repaid,
        "seized": ref.seized,
        "discount": ref.discount,
    }
    assert receipt.events.filter(system.engine.BadDebtRealized) == []


# ---------------------------------------------------------------- close factor and dust


def test_close_factor_half_near_health_one_caps_request(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Near health 1 with a large debt only half (rounded up) may be repaid; a larger request is capped."""
    debt = 15_000 * USDC + 1  # odd: the half rounds up
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=debt)
    market.set("WETH", 1700)
    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", MAX_UINT)
    assert ref.max_repay == ref.repaid == 7_500_000_001
    assert chain_quote(system, alice, 0, "WETH", MAX_UINT) == ref
    before = system.usdc.balanceOf(payer)
    liquidate(system, payer, alice, "WETH", MAX_UINT)
    assert before - system.usdc.balanceOf(payer) == ref.repaid
    assert system.engine.debtOf(alice, 0) == debt - ref.repaid
    assert system.weth.balanceOf(payer) == ref.seized


def test_close_factor_switches_at_full_close_health(system: Any, market: Market, alice: Any) -> None:
    """At the lowest price with health >= 0.95 the close factor is 50 %; one feed tick lower it is 100 %."""
    debt = 15_000 * USDC
    balances = {"WETH": 10 * WAD}
    open_position(system, alice, 0, balances, borrow=debt)

    def health_at(answer: int) -> int:
        return account_health({"WETH": Holding(ASSETS["WETH"], 10 * WAD, answer * 10**10)}, debt, wad(1)).health

    lo, hi = 1000 * 10**8, 2000 * 10**8
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if health_at(mid) >= PARAMS.full_close_health else (mid, hi)

    market.set("WETH", str(Decimal(hi) / 10**8))
    half = market.quote(balances, debt, "WETH", 100 * USDC)
    assert half.max_repay == debt // 2
    assert chain_quote(system, alice, 0, "WETH", 100 * USDC) == half
    market.set("WETH", str(Decimal(lo) / 10**8))
    full = market.quote(balances, debt, "WETH", 100 * USDC)
    assert full.max_repay == debt
    assert chain_quote(system, alice, 0, "WETH", 100 * USDC) == full


def test_close_factor_full_below_full_close_health(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Below health 0.95 more than half of a large debt may be repaid in one call."""
    debt = 15_000 * USDC
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=debt)
    market.set("WETH", 1600)
    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", 12_000 * USDC)
    assert ref.max_repay == debt
    assert ref.repaid == 12_000 * USDC
    liquidate(system, payer, alice, "WETH", 12_000 * USDC)
    assert system.engine.debtOf(alice, 0) == 3000 * USDC
    assert system.weth.balanceOf(payer) == ref.seized


def test_close_factor_full_for_small_position(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """A debt worth <= $100 closes fully even near health 1; one unit more and the 50 % limit applies."""
    open_position(system, alice, 0, {"WETH": 625 * 10**14}, borrow=100 * USDC)  # 0.0625 WETH = $125
    open_position(system, alice, 1, {"WETH": 626 * 10**14}, borrow=100 * USDC + 1)
    market.set("WETH", 1870)
    small = market.quote({"WETH": 625 * 10**14}, 100 * USDC, "WETH", MAX_UINT)
    assert small.max_repay == small.repaid == 100 * USDC
    h = account_health(market.holdings({"WETH": 625 * 10**14}), 100 * USDC, market.prices["USDC"]).health
    assert PARAMS.full_close_health < h < WAD
    larger = market.quote({"WETH": 626 * 10**14}, 100 * USDC + 1, "WETH", MAX_UINT)
    assert larger.max_repay == 50 * USDC + 1
    assert chain_quote(system, alice, 1, "WETH", MAX_UINT) == larger

    liquidate(system, payer, alice, "WETH", MAX_UINT)
    assert system.engine.debtOf(alice, 0) == 0
    assert system.engine.position(alice, 0).scaledDebt == 0
    assert system.engine.collateralOf(alice, 0, system.weth) == 625 * 10**14 - small.seized


def test_liquidation_cannot_leave_dust(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Leaving 0 < debt < minDebt reverts LiquidationLeavesDust(remaining, minDebt); exactly minDebt is allowed."""
    open_position(system, alice, 0, {"WETH": 5 * 10**16}, borrow=80 * USDC)
    market.set("WETH", 1860)
    with pytest.raises(RefRevert) as ref:
        market.quote({"WETH": 5 * 10**16}, 80 * USDC, "WETH", 75 * USDC)
    assert ref.value.inputs == {"remainingDebt": 5 * USDC, "minDebt": PARAMS.min_debt}
    with expect_ref(system, ref.value):
        system.engine.previewLiquidation(alice, 0, system.weth, 75 * USDC)
    with expect_ref(system, ref.value):
        liquidate(system, payer, alice, "WETH", 75 * USDC)
    with reverts_with(system.engine.LiquidationLeavesDust, remainingDebt=1, minDebt=PARAMS.min_debt):
        liquidate(system, payer, alice, "WETH", 80 * USDC - 1)

    ok = market.quote({"WETH": 5 * 10**16}, 80 * USDC, "WETH", 70 * USDC)
    liquidate(system, payer, alice, "WETH", 70 * USDC)
    assert system.engine.debtOf(alice, 0) == PARAMS.min_debt
    assert system.weth.balanceOf(payer) == ok.seized


def test_half_close_raised_to_full_debt_when_remainder_below_min_debt(
    system: Any, market: Market, admin: Any, alice: Any, payer: Any
) -> None:
    """When 50 % would leave less than minDebt, the limit becomes the whole debt (and not when it leaves exactly
    minDebt)."""
    debt = 15_000 * USDC
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=debt)
    market.set("WETH", 1700)

    exact = replace(PARAMS, min_debt=7500 * USDC)
    system.engine.setRiskParams(
        (exact.min_discount, exact.full_close_health, exact.full_close_debt_value, exact.min_debt), sender=admin
    )
    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", MAX_UINT, params=exact)
    assert ref.max_repay == 7500 * USDC
    assert chain_quote(system, alice, 0, "WETH", MAX_UINT) == ref

    raised = replace(PARAMS, min_debt=7500 * USDC + 1)
    system.engine.setRiskParams(
        (raised.min_discount, raised.full_close_health, raised.full_close_debt_value, raised.min_debt), sender=admin
    )
    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", MAX_UINT, params=raised)
    assert ref.max_repay == ref.repaid == debt
    assert chain_quote(system, alice, 0, "WETH", MAX_UINT) == ref
    liquidate(system, payer, alice, "WETH", MAX_UINT)
    assert system.engine.debtOf(alice, 0) == 0
    assert system.weth.balanceOf(payer) == ref.seized


# ---------------------------------------------------------------- collateral-limited and bad debt


def test_collateral_limited_then_second_collateral(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Seizing a whole balance lowers the repayment to its discounted value rounded up; the other collateral is
    untouched and can be liquidated in a second call."""
    balances, debt = {"WETH": WAD, "WBTC": 10**7}, 6000 * USDC
    open_position(system, alice, 0, balances, borrow=debt)
    market.set("WETH", 1000)

    ref = market.quote(balances, debt, "WETH", MAX_UINT)
    assert ref.seized == WAD
    assert ref.bad_debt == 0
    assert ref.repaid < ref.max_repay == debt
    pay_value = ceil_div(1000 * WAD * WAD, WAD + ref.discount)
    assert ref.repaid == ceil_div(pay_value, 10**12)
    assert pay_value % 10**12 != 0  # the repayment really was rounded up
    assert chain_quote(system, alice, 0, "WETH", MAX_UINT) == ref
    receipt = liquidate(system, payer, alice, "WETH", MAX_UINT)
    assert receipt.events.filter(system.engine.BadDebtRealized) == []
    assert system.weth.balanceOf(payer) == WAD
    assert system.engine.collateralOf(alice, 0, system.weth) == 0
    assert system.engine.collateralOf(alice, 0, system.wbtc) == 10**7
    assert system.engine.position(alice, 0).assetMask == 1 << system.engine.assetConfig(system.wbtc).index
    balances, debt = {"WBTC": 10**7}, debt - ref.repaid
    assert system.engine.debtOf(alice, 0) == debt

    second = market.quote(balances, debt, "WBTC", MAX_UINT)
    assert second.repaid == debt
    assert second.seized < 10**7
    assert chain_quote(system, alice, 0, "WBTC", MAX_UINT) == second
    liquidate(system, payer, alice, "WBTC", MAX_UINT)
    assert system.engine.debtOf(alice, 0) == 0
    assert system.wbtc.balanceOf(payer) == second.seized
    assert system.engine.collateralOf(alice, 0, system.wbtc) == 10**7 - second.seized


def test_whole_collateral_may_leave_dust_and_the_next_settles_it(
    system: Any, market: Market, alice: Any, payer: Any
) -> None:
    """A seizure limited by the balance takes a whole collateral and may leave 0 < debt < minDebt while other
    collateral remains (a repayment the liquidator chose may not): the next liquidation, or the owner, settles it.
    Before, such a liquidation reverted LiquidationLeavesDust and small accounts could not be liquidated at all."""
    balances, debt = {"LINK": 100 * WAD, "WBTC": 10**6}, 1300 * USDC
    open_position(system, alice, 0, balances, borrow=debt)
    market.set("LINK", "14.5")
    market.set("WBTC", 5000)
    ref = market.quote(balances, debt, "LINK", MAX_UINT)
    assert ref.seized == 100 * WAD
    assert 0 < debt - ref.repaid < PARAMS.min_debt
    assert ref.bad_debt == 0
    assert chain_quote(system, alice, 0, "LINK", MAX_UINT) == ref
    liquidate(system, payer, alice, "LINK", MAX_UINT)
    assert system.engine.debtOf(alice, 0) == debt - ref.repaid
    assert system.engine.collateralOf(alice, 0, system.link) == 0


def test_bad_debt_realised_when_last_collateral_seized(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Two collaterals, solvent: seizing all of the first leaves the debt (no bad debt); when the price of the last
    falls so far that it cannot cover what is left, the liquidation writes the shortfall off first and the last
    seizure realises whatever remains."""
    balances, debt = {"WETH": WAD, "WBTC": 10**7}, 3800 * USDC
    open_position(system, alice, 0, balances, borrow=debt)
    market.set("WETH", 1000)
    market.set("WBTC", 30000)
    first = market.quote(balances, debt, "WBTC", MAX_UINT)  # WBTC's lower lt makes it the one to seize
    assert first.seized == 10**7
    assert first.bad_debt == 0
    assert chain_quote(system, alice, 0, "WBTC", MAX_UINT) == first
    receipt = liquidate(system, payer, alice, "WBTC", MAX_UINT)
    assert receipt.events.filter(system.engine.BadDebtRealized) == []
    debt -= first.repaid
    assert system.engine.debtOf(alice, 0) == debt

    market.set("WETH", 700)
    total_debt, total_assets, reserve = system.vault.totalDebt(), system.vault.totalAssets(), system.vault.reserve()
    last = market.quote({"WETH": WAD}, debt, "WETH", MAX_UINT)
    written = write_off(market.holdings({"WETH": WAD}), debt, market.prices["USDC"])
    assert 0 < written <= last.bad_debt
    assert chain_quote(system, alice, 0, "WETH", MAX_UINT) == last
    receipt = liquidate(system, payer, alice, "WETH", MAX_UINT)
    engine_logs = receipt.events.filter(system.engine.BadDebtRealized)
    assert [dict(log.event_arguments) for log in engine_logs] == [
        {"owner": alice.address, "subId": 0, "assets": last.bad_debt}
    ]
    covered = min(reserve, last.bad_debt)
    vault_logs = receipt.events.filter(system.vault.BadDebtRealized)
    assert [dict(log.event_arguments) for log in vault_logs] == [
        {"assets": last.bad_debt, "coveredByReserve": covered, "socialized": last.bad_debt - covered}
    ]
    assert system.engine.debtOf(alice, 0) == 0
    assert system.vault.totalDebt() == total_debt - debt
    assert system.vault.totalAssets() == total_assets - (last.bad_debt - covered)


def test_no_bad_debt_while_the_collateral_covers_the_debt(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """A solvent account (collateral worth more than its debt x (1 + minDiscount)) is never written off: seizing a
    whole collateral leaves the rest of the debt in place."""
    balances, debt = {"WETH": WAD, "WBTC": 10**7}, 3000 * USDC
    open_position(system, alice, 0, balances, borrow=debt)
    market.set("WETH", 500)
    market.set("WBTC", 30000)
    assert cover_value(market.holdings(balances)) > debt * 10**12
    first = market.quote(balances, debt, "WBTC", MAX_UINT)
    assert first.seized == 10**7
    assert first.bad_debt == 0
    assert chain_quote(system, alice, 0, "WBTC", MAX_UINT) == first
    receipt = liquidate(system, payer, alice, "WBTC", MAX_UINT)
    assert receipt.events.filter(system.engine.BadDebtRealized) == []
    assert receipt.events.filter(system.vault.BadDebtRealized) == []
    _, debt = after(market.holdings(balances), debt, "WBTC", first)
    assert system.engine.debtOf(alice, 0) == debt > 0


def test_liquidation_with_accrued_interest_uses_rounded_up_debt(
    system: Any, chain: Any, market: Market, admin: Any, alice: Any, payer: Any
) -> None:
    """With interest, the limits and seizure use debt = ceil(scaledDebt * index / RAY) at the liquidation block; a
    partial repayment extinguishes floor(repaid * RAY / index) scaled debt and a full one clears it exactly."""
    system.vault.setRateModel((5 * 10**17, 0, 0, 8 * 10**17), 10**17, sender=admin)  # a flat 50 % a year
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=15_000 * USDC)
    chain.pending_timestamp = chain.blocks.head.timestamp + 30 * 86400
    market.set("USDC", 1)  # refresh the feeds after a month
    market.set("WETH", 1700)
    at = chain.blocks.head.timestamp + 7
    chain.mine(timestamp=at)
    scaled, index = system.engine.position(alice, 0).scaledDebt, system.vault.borrowIndex()
    debt = ceil_div(scaled * index, RAY)
    assert system.engine.debtOf(alice, 0) == debt
    assert debt > 15_000 * USDC * 104 // 100  # about 4 % of interest in 30 days

    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", 5000 * USDC + 1)
    chain.pending_timestamp = at  # same block time: the index the engine accrues to is `index`
    liquidate(system, payer, alice, "WETH", 5000 * USDC + 1)
    scaled -= ref.repaid * RAY // index
    assert system.engine.position(alice, 0).scaledDebt == scaled
    assert system.weth.balanceOf(payer) == ref.seized
    balances = {"WETH": 10 * WAD - ref.seized}
    debt = ceil_div(scaled * index, RAY)
    assert system.engine.debtOf(alice, 0) == debt

    rest = market.quote(balances, debt, "WETH", MAX_UINT)
    assert rest.repaid == debt
    paid = system.usdc.balanceOf(payer)
    chain.pending_timestamp = at
    liquidate(system, payer, alice, "WETH", MAX_UINT)
    assert paid - system.usdc.balanceOf(payer) == debt
    assert system.engine.position(alice, 0).scaledDebt == 0
    assert system.weth.balanceOf(payer) == ref.seized + rest.seized


# ---------------------------------------------------------------- argument errors


def test_seized_below_minimum(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """minSeized above the quote reverts SeizedBelowMinimum(seized, minSeized); equal to it passes."""
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=15_000 * USDC)
    market.set("WETH", 1700)
    ref = market.quote({"WETH": 10 * WAD}, 15_000 * USDC, "WETH", 1000 * USDC)
    with reverts_with(system.engine.SeizedBelowMinimum, seized=ref.seized, minSeized=ref.seized + 1):
        liquidate(system, payer, alice, "WETH", 1000 * USDC, min_seized=ref.seized + 1)
    liquidate(system, payer, alice, "WETH", 1000 * USDC, min_seized=ref.seized)
    assert system.weth.balanceOf(payer) == ref.seized


def test_zero_repay_and_nothing_seized(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """A zero request reverts ZeroAmount; a 1-unit repay against WBTC at a high price seizes 0 → NothingSeized,
    and the smallest repay that buys one satoshi is accepted."""
    open_position(system, alice, 0, {"WBTC": 5 * 10**7}, borrow=22_000 * USDC)
    market.set("WBTC", 53000)
    with reverts_with(system.engine.ZeroAmount):
        liquidate(system, payer, alice, "WBTC", 0)
    with pytest.raises(RefRevert) as ref:
        market.quote({"WBTC": 5 * 10**7}, 22_000 * USDC, "WBTC", 1)
    assert ref.value.name == "NothingSeized"
    with reverts_with(system.engine.NothingSeized):
        liquidate(system, payer, alice, "WBTC", 1)
    smallest = next(r for r in range(1, 10**4) if _seizes(market, r))
    assert chain_quote(system, alice, 0, "WBTC", smallest).seized == 1
    with reverts_with(system.engine.NothingSeized):
        system.engine.previewLiquidation(alice, 0, system.wbtc, smallest - 1)


def _seizes(market: Market, repay: int) -> bool:
    try:
        market.quote({"WBTC": 5 * 10**7}, 22_000 * USDC, "WBTC", repay)
    except RefRevert:
        return False
    return True


def test_collateral_not_held_seizes_nothing(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """Liquidating a listed asset the account does not hold seizes min(seized, balance = 0) = 0: NothingSeized."""
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * USDC)
    market.set("WETH", 1500)
    with pytest.raises(RefRevert) as ref:
        quote(
            {**market.holdings({"WETH": WAD}), "LINK": Holding(ASSETS["LINK"], 0, market.prices["LINK"])},
            1500 * USDC,
            market.prices["USDC"],
            "LINK",
            100 * USDC,
        )
    assert ref.value.name == "NothingSeized"
    with reverts_with(system.engine.NothingSeized):
        system.engine.previewLiquidation(alice, 0, system.link, 100 * USDC)
    with reverts_with(system.engine.NothingSeized):
        liquidate(system, payer, alice, "LINK", 100 * USDC)


def test_unlisted_collateral(system: Any, project: Any, market: Market, admin: Any, alice: Any, payer: Any) -> None:
    """An unlisted collateral reverts AssetNotListed(asset), even for a liquidatable account."""
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * USDC)
    market.set("WETH", 1500)
    other = admin.deploy(project.MockERC20, "Other", "OTH", 18)
    with reverts_with(system.engine.AssetNotListed, asset=other.address):
        system.engine.liquidate(alice, 0, other, 100 * USDC, 0, payer, b"", sender=payer)
    with reverts_with(system.engine.AssetNotListed, asset=system.usdc.address):
        system.engine.previewLiquidation(alice, 0, system.usdc, 100 * USDC)


# ---------------------------------------------------------------- callback


def test_callback_liquidator_without_inventory(
    system: Any, project: Any, market: Market, admin: Any, alice: Any
) -> None:
    """With data, the collateral arrives before the callback and the repayment is pulled after it, so a
    liquidator holding no USDC can liquidate."""
    debt = 15_000 * USDC
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=debt)
    market.set("WETH", 1700)
    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", 2000 * USDC)
    bot = admin.deploy(project.MockLiquidator, system.engine)
    assert system.usdc.balanceOf(bot) == 0
    idle = system.vault.idle()

    receipt = bot.liquidate(alice, 0, system.weth, 2000 * USDC, sender=admin)

    assert bot.callbacks() == 1
    assert bot.collateralSeenInCallback() >= ref.seized
    assert bot.collateralSeenInCallback() == ref.seized  # it held none before
    assert system.weth.balanceOf(bot) == ref.seized
    assert system.usdc.balanceOf(bot) == 0  # minted repaid in the callback, all pulled after
    assert system.vault.idle() == idle + ref.repaid
    assert system.engine.debtOf(alice, 0) == debt - ref.repaid
    logs = receipt.events.filter(system.engine.Liquidated)
    assert [(log.liquidator, log.repaid, log.seized) for log in logs] == [(bot.address, ref.repaid, ref.seized)]


def test_no_callback_without_data(system: Any, project: Any, market: Market, admin: Any, alice: Any) -> None:
    """With empty data the engine never calls back: a contract caller without onLiquidation liquidates fine."""
    debt = 15_000 * USDC
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=debt)
    market.set("WETH", 1700)
    ref = market.quote({"WETH": 10 * WAD}, debt, "WETH", 1000 * USDC)
    caller = admin.deploy(project.ReentrancyAttacker)  # has execute() but no onLiquidation
    system.usdc.mint(caller, ref.repaid, sender=admin)
    caller.execute(system.usdc, system.usdc.approve.encode_input(system.engine, ref.repaid), sender=admin)
    call = system.engine.liquidate.encode_input(alice, 0, system.weth, 1000 * USDC, 0, caller, b"")
    caller.execute(system.engine, call, sender=admin)
    assert system.usdc.balanceOf(caller) == 0
    assert system.weth.balanceOf(caller) == ref.seized
    assert system.engine.debtOf(alice, 0) == debt - ref.repaid


# ---------------------------------------------------------------- economic bounds


@pytest.mark.parametrize(
    ("symbol", "deposit", "borrow", "prices"),
    [
        ("WETH", 10 * WAD, 15_000 * USDC, ["1764", "1720", "1680", "1620", "1560", "1450", "1300", "1100", "800"]),
        ("LINK", 1000 * WAD, 8000 * USDC, ["11.4", "10.9", "10.3", "9.7", "8.8", "7.5", "5"]),
    ],
    ids=["WETH", "LINK"],
)
def test_seized_value_never_exceeds_repaid_plus_max_discount(
    system: Any, market: Market, alice: Any, symbol: str, deposit: int, borrow: int, prices: list[str]
) -> None:
    """Across a sweep of prices (partial and collateral-limited), seized value <= repaid value * (1 + maxDiscount),
    and the quote equals the reference."""
    open_position(system, alice, 0, {symbol: deposit}, borrow=borrow)
    asset = ASSETS[symbol]
    for usd in prices:
        market.set(symbol, usd)
        for requested in (borrow // 7, MAX_UINT):
            ref = market.quote({symbol: deposit}, borrow, symbol, requested)
            q = chain_quote(system, alice, 0, symbol, requested)
            assert q == ref
            seized_value = usd_value(q.seized, market.prices[symbol], asset.decimals)
            repaid_value = q.repaid * market.prices["USDC"] // 10**DEBT_DECIMALS
            assert seized_value <= repaid_value * (WAD + asset.max_discount) // WAD
            assert seized_value <= repaid_value * (WAD + q.discount) // WAD


def test_partial_liquidation_improves_health(system: Any, market: Market, alice: Any, payer: Any) -> None:
    """After a 50 % liquidation of a single-collateral account at moderate health, health rises as predicted."""
    balances, debt = {"WETH": 10 * WAD}, 15_000 * USDC
    open_position(system, alice, 0, balances, borrow=debt)
    market.set("WETH", 1700)
    before = system.engine.accountHealth(alice, 0).health
    assert before == account_health(market.holdings(balances), debt, market.prices["USDC"]).health
    ref = market.quote(balances, debt, "WETH", MAX_UINT)
    liquidate(system, payer, alice, "WETH", MAX_UINT)
    holdings, debt = after(market.holdings(balances), debt, "WETH", ref)
    expected = account_health(holdings, debt, market.prices["USDC"]).health
    h = system.engine.accountHealth(alice, 0)
    assert h.health == expected
    assert h.health > before
    assert h.health > WAD  # back to safety at this moderate discount
