"""MarginEngine user operations, views, governance and rounding, on a real Anvil node.

Every expected figure is recomputed here with plain integer math and the rounding documented on IMarginEngine and
RiskMath: collateral values and weights round down, debt and debt value round up, borrows create scaled debt
rounded up and repayments extinguish scaled debt rounded down.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import MAX_UINT, RAY, WAD, fund, norm_arg, open_position, reverts_with

USDC = 10**6
YEAR = 365 * 24 * 3600
MIN_DEBT = 10 * USDC
ZERO_ROLE = b"\x00" * 32
SYMBOLS = ("WETH", "WBTC", "LINK")

# The test market of conftest.TEST_CONFIG, written out as the integers the contracts should hold.
DEC = {"WETH": 18, "WBTC": 8, "LINK": 18}
LTV = {"WETH": 80 * 10**16, "WBTC": 75 * 10**16, "LINK": 60 * 10**16}
LT = {"WETH": 85 * 10**16, "WBTC": 80 * 10**16, "LINK": 70 * 10**16}
MAX_DISC = {"WETH": 10 * 10**16, "WBTC": 10 * 10**16, "LINK": 12 * 10**16}
CAP = {"WETH": 1_000_000 * 10**18, "WBTC": 100_000 * 10**8, "LINK": 10_000_000 * 10**18}
PRICE = {"WETH": 2000 * WAD, "WBTC": 60_000 * WAD, "LINK": 15 * WAD, "USDC": WAD}
FEED_DEC = {"WETH": 8, "WBTC": 8, "LINK": 18, "USDC": 8}
STALENESS = {"WETH": 3600, "WBTC": 3600, "LINK": 3600, "USDC": 86400}
SLOPE1 = 4 * 10**16
KINK = 80 * 10**16
RESERVE_FACTOR = 10**17


# --------------------------------------------------------------------------------------------- math


def div_up(x: int, d: int) -> int:
    return -(-x // d)


def value_down(amount: int, price: int, decimals: int) -> int:
    return amount * price // 10**decimals


def to_scaled_up(assets: int, index: int) -> int:
    return div_up(assets * RAY, index)


def to_scaled_down(assets: int, index: int) -> int:
    return assets * RAY // index


def to_assets_up(scaled: int, index: int) -> int:
    return div_up(scaled * index, RAY)


def debt_value(debt: int, debt_price: int) -> int:
    return div_up(debt * debt_price, USDC)


def borrowing_power(balances: dict[str, int], prices: dict[str, int]) -> int:
    return sum(value_down(b, prices[s], DEC[s]) * LTV[s] // WAD for s, b in balances.items())


def expected_health(balances: dict[str, int], prices: dict[str, int], debt: int) -> tuple[int, ...]:
    """(collateralValue, ltWeighted, ltvWeighted, debt, debtValue, health) by the documented formulas."""
    values = {s: value_down(b, prices[s], DEC[s]) for s, b in balances.items()}
    lt_w = sum(v * LT[s] // WAD for s, v in values.items())
    ltv_w = sum(v * LTV[s] // WAD for s, v in values.items())
    dv = debt_value(debt, prices["USDC"]) if debt else 0
    health = MAX_UINT if dv == 0 else lt_w * WAD // dv
    return (sum(values.values()), lt_w, ltv_w, debt, dv, health)


def health_tuple(h: Any) -> tuple[int, ...]:
    return (h.collateralValue, h.ltWeighted, h.ltvWeighted, h.debt, h.debtValue, h.health)


# --------------------------------------------------------------------------------------------- helpers


def events(tx: Any, event: Any) -> list[dict[str, Any]]:
    return [dict(log.event_arguments) for log in tx.decode_logs(event)]


def args(**kw: Any) -> dict[str, Any]:
    return {k: norm_arg(v) for k, v in kw.items()}


def set_price_wad(system: Any, symbol: str, price: int) -> Any:
    """Push an exact WAD price through the symbol's mock feed; returns the receipt."""
    scale = 10 ** (18 - FEED_DEC[symbol])
    assert price % scale == 0
    return system.feeds[symbol].setAnswer(price // scale, sender=system.admin)


def refresh_feeds(system: Any) -> dict[str, int]:
    """Push the default prices again; returns each feed's new `updatedAt`."""
    return {s: set_price_wad(system, s, PRICE[s]).timestamp for s in (*SYMBOLS, "USDC")}


def fine_usdc_feed(project: Any, system: Any, price: int) -> None:
    """Price USDC with an 18-decimal feed so that debt values in WAD divide inexactly and must round up."""
    feed = system.admin.deploy(project.MockAggregator, 18, price, "USDC / USD fine")
    system.router.setFeed(system.usdc, feed, 86400, WAD // 2, 2 * WAD, sender=system.admin)


def freeze_rates(system: Any) -> int:
    """Zero interest rates (accruing first): the borrow index stops where it is. Returns that index."""
    system.vault.setRateModel((0, 0, 0, KINK), RESERVE_FACTOR, sender=system.admin)
    return int(system.vault.borrowIndex())


def mask_of(*symbols: str) -> int:
    return sum(1 << SYMBOLS.index(s) for s in symbols)


@pytest.fixture
def frozen(system: Any) -> int:
    """Interest switched off on a fresh chain: the index stays exactly RAY."""
    index = freeze_rates(system)
    assert index == RAY
    return index


@pytest.fixture
def grown_index(system: Any, chain: Any, bob: Any) -> int:
    """Bob borrows half the vault for a year and a bit, then rates are frozen: a fixed borrow index above RAY.
    At 50 % utilisation the rate is slope1 * 0.5 / kink = 2.5 % a year, simple interest."""
    open_position(system, bob, 0, {"WETH": 5000 * 10**18})
    tx = system.engine.borrow(0, 5_000_000 * USDC, bob, sender=bob)
    elapsed = YEAR + 12_345
    chain.pending_timestamp = tx.timestamp + elapsed
    index = freeze_rates(system)
    assert index == RAY + RAY * (25 * 10**15 * elapsed) // (WAD * YEAR)
    refresh_feeds(system)
    return index


# --------------------------------------------------------------------------------------------- deposit


def test_deposit_for_self_books_balance_supply_mask_and_event(system: Any, alice: Any) -> None:
    """A deposit pulls the tokens, credits the sub-account, the supply and the mask bit, and emits Deposited."""
    eng, wbtc = system.engine, system.wbtc
    fund(system, alice, "WBTC", 3 * 10**8)
    tx = eng.deposit(alice, 0, wbtc, 2 * 10**8, sender=alice)
    assert wbtc.balanceOf(alice) == 10**8
    assert wbtc.balanceOf(eng) == 2 * 10**8
    assert eng.collateralOf(alice, 0, wbtc) == 2 * 10**8
    assert eng.assetSupply(wbtc).totalSupplied == 2 * 10**8
    assert eng.position(alice, 0).assetMask == mask_of("WBTC")
    assert events(tx, eng.Deposited) == [args(caller=alice, owner=alice, subId=0, asset=wbtc, amount=2 * 10**8)]
    fund(system, alice, "LINK", 5)
    eng.deposit(alice, 0, system.link, 5, sender=alice)
    assert eng.position(alice, 0).assetMask == mask_of("WBTC", "LINK")


def test_deposit_for_another_owner_and_sub_accounts_are_independent(system: Any, alice: Any, bob: Any) -> None:
    """Bob pays for a deposit into alice's sub-account 255; alice's sub-account 0 is untouched."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 7 * 10**18})
    fund(system, bob, "WETH", 3 * 10**18)
    tx = eng.deposit(alice, 255, weth, 3 * 10**18, sender=bob)
    assert weth.balanceOf(bob) == 0
    assert eng.collateralOf(alice, 255, weth) == 3 * 10**18
    assert eng.collateralOf(alice, 0, weth) == 7 * 10**18
    assert eng.collateralOf(bob, 255, weth) == 0
    assert eng.position(alice, 255).assetMask == mask_of("WETH")
    assert eng.position(bob, 255).assetMask == 0
    assert eng.assetSupply(weth).totalSupplied == 10 * 10**18
    assert events(tx, eng.Deposited) == [args(caller=bob, owner=alice, subId=255, asset=weth, amount=3 * 10**18)]


def test_deposit_refuses_zero_and_unlisted_assets(system: Any, project: Any, alice: Any) -> None:
    """A zero deposit is ZeroAmount; an unlisted token and the debt asset are AssetNotListed."""
    eng = system.engine
    fund(system, alice, "WETH", 10**18)
    with reverts_with(eng.ZeroAmount):
        eng.deposit(alice, 0, system.weth, 0, sender=alice)
    other = alice.deploy(project.MockERC20, "Other", "OTH", 18)
    other.mint(alice, 10**18, sender=alice)
    other.approve(eng, MAX_UINT, sender=alice)
    with reverts_with(eng.AssetNotListed, asset=other):
        eng.deposit(alice, 0, other, 10**18, sender=alice)
    fund(system, alice, "USDC", 100 * USDC)
    with reverts_with(eng.AssetNotListed, asset=system.usdc):
        eng.deposit(alice, 0, system.usdc, 100 * USDC, sender=alice)


def test_deposit_supply_cap_exactly_at_and_above(system: Any, alice: Any, bob: Any) -> None:
    """Deposits may fill the supply cap exactly; one unit more is SupplyCapExceeded(asset, total, cap)."""
    eng, wbtc = system.engine, system.wbtc
    cap = CAP["WBTC"]
    open_position(system, alice, 0, {"WBTC": cap - 5})
    fund(system, bob, "WBTC", 6)
    with reverts_with(eng.SupplyCapExceeded, asset=wbtc, totalSupplied=cap + 1, supplyCap=cap):
        eng.deposit(bob, 0, wbtc, 6, sender=bob)
    eng.deposit(bob, 0, wbtc, 5, sender=bob)
    assert eng.assetSupply(wbtc).totalSupplied == cap
    with reverts_with(eng.SupplyCapExceeded, asset=wbtc, totalSupplied=cap + 1, supplyCap=cap):
        eng.deposit(bob, 0, wbtc, 1, sender=bob)


# --------------------------------------------------------------------------------------------- withdraw


def test_withdraw_without_debt_needs_no_valid_price(system: Any, chain: Any, alice: Any, bob: Any) -> None:
    """With every feed stale, an account without debt still withdraws everything; the mask empties."""
    eng = system.engine
    amounts = {"WETH": 2 * 10**18, "WBTC": 10**7, "LINK": 40 * 10**18}
    open_position(system, alice, 3, amounts)
    updated = refresh_feeds(system)
    chain.pending_timestamp += 86400 + 1
    chain.mine()
    for sym in (*SYMBOLS, "USDC"):
        token = system.usdc if sym == "USDC" else system.tokens[sym]
        with reverts_with(system.router.StalePrice, asset=token, updatedAt=updated[sym], maxStaleness=STALENESS[sym]):
            system.router.price(token)
    for sym, amount in amounts.items():
        eng.withdraw(3, system.tokens[sym], amount, bob, sender=alice)
        assert system.tokens[sym].balanceOf(bob) == amount
    assert eng.position(alice, 3).assetMask == 0
    assert list(eng.balancesOf(alice, 3)) == [0, 0, 0]


def test_sequencer_down_blocks_new_risk_but_not_debt_free_withdrawals(
    system: Any, project: Any, chain: Any, admin: Any, alice: Any, bob: Any
) -> None:
    """With the sequencer down, a debt-free account withdraws; borrowing and a withdrawal with debt do not."""
    eng, router, weth = system.engine, system.router, system.weth
    open_position(system, alice, 0, {"WETH": 10**18})
    open_position(system, bob, 0, {"WETH": 10**18}, borrow=100 * USDC)
    seq = admin.deploy(project.MockAggregator, 0, 0, "L2 Sequencer Uptime")
    now = chain.pending_timestamp
    seq.setAnswerAt(1, now - 7200, now - 7200, sender=admin)
    router.setSequencerFeed(seq, 3600, sender=admin)
    with reverts_with(router.SequencerDown):
        router.checkSequencer()
    eng.withdraw(0, weth, 10**18, alice, sender=alice)
    assert weth.balanceOf(alice) == 10**18
    with reverts_with(router.SequencerDown):
        eng.borrow(0, 10 * USDC, bob, sender=bob)
    with reverts_with(router.SequencerDown):
        eng.withdraw(0, weth, 1, bob, sender=bob)


def test_withdraw_with_debt_keeps_initial_margin(system: Any, alice: Any, frozen: int) -> None:
    """1 WETH at $2000 backing 1000 USDC frees exactly 0.375 WETH; one wei more is InsufficientMargin."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1000 * USDC)
    free = 375 * 10**15
    left = 10**18 - free - 1
    power = borrowing_power({"WETH": left}, PRICE)
    dv = debt_value(1000 * USDC, WAD)
    assert power < dv
    with reverts_with(eng.InsufficientMargin, borrowingPower=power, debtValue=dv):
        eng.withdraw(0, weth, free + 1, alice, sender=alice)
    tx = eng.withdraw(0, weth, free, alice, sender=alice)
    assert weth.balanceOf(alice) == free
    assert eng.collateralOf(alice, 0, weth) == 10**18 - free
    assert eng.accountHealth(alice, 0).ltvWeighted == dv
    assert events(tx, eng.Withdrawn) == [args(owner=alice, subId=0, asset=weth, amount=free, receiver=alice)]


def test_withdraw_more_than_balance_and_zero(system: Any, alice: Any) -> None:
    """Withdrawing above the balance is InsufficientCollateral(asset, balance, requested); zero is ZeroAmount."""
    eng, link = system.engine, system.link
    open_position(system, alice, 1, {"LINK": 10 * 10**18})
    with reverts_with(eng.InsufficientCollateral, asset=link, balance=10 * 10**18, requested=10 * 10**18 + 1):
        eng.withdraw(1, link, 10 * 10**18 + 1, alice, sender=alice)
    with reverts_with(eng.InsufficientCollateral, asset=system.weth, balance=0, requested=1):
        eng.withdraw(1, system.weth, 1, alice, sender=alice)
    with reverts_with(eng.ZeroAmount):
        eng.withdraw(1, link, 0, alice, sender=alice)


def test_withdraw_to_receiver_clears_mask_bit_and_emits(system: Any, alice: Any, bob: Any) -> None:
    """A partial withdrawal keeps the bit; the last unit clears it; the receiver gets the tokens; supply drops."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 5 * 10**18, "LINK": 10**18})
    eng.withdraw(0, weth, 2 * 10**18, bob, sender=alice)
    assert eng.position(alice, 0).assetMask == mask_of("WETH", "LINK")
    tx = eng.withdraw(0, weth, 3 * 10**18, bob, sender=alice)
    assert eng.position(alice, 0).assetMask == mask_of("LINK")
    assert weth.balanceOf(bob) == 5 * 10**18
    assert weth.balanceOf(alice) == 0
    assert weth.balanceOf(eng) == 0
    assert eng.assetSupply(weth).totalSupplied == 0
    assert events(tx, eng.Withdrawn) == [args(owner=alice, subId=0, asset=weth, amount=3 * 10**18, receiver=bob)]


def test_stale_price_blocks_withdrawal_with_debt(system: Any, chain: Any, alice: Any) -> None:
    """With debt, a stale collateral feed makes withdraw revert with the router's StalePrice."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=100 * USDC)
    updated = set_price_wad(system, "WETH", PRICE["WETH"]).timestamp
    chain.pending_timestamp = updated + STALENESS["WETH"] + 1
    with reverts_with(system.router.StalePrice, asset=weth, updatedAt=updated, maxStaleness=STALENESS["WETH"]):
        eng.withdraw(0, weth, 1, alice, sender=alice)
    assert eng.collateralOf(alice, 0, weth) == 10**18


# --------------------------------------------------------------------------------------------- moveCollateral


def test_move_collateral_between_own_sub_accounts(system: Any, alice: Any, frozen: int) -> None:
    """The giving sub-account must keep its margin; the receiving one gets balance and mask bit; event emitted."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1000 * USDC)
    with reverts_with(eng.SameSubAccount):
        eng.moveCollateral(0, 0, weth, 1, sender=alice)
    free = 375 * 10**15
    power = borrowing_power({"WETH": 10**18 - free - 1}, PRICE)
    with reverts_with(eng.InsufficientMargin, borrowingPower=power, debtValue=1000 * WAD):
        eng.moveCollateral(0, 7, weth, free + 1, sender=alice)
    tx = eng.moveCollateral(0, 7, weth, free, sender=alice)
    assert eng.collateralOf(alice, 0, weth) == 10**18 - free
    assert eng.collateralOf(alice, 7, weth) == free
    assert eng.position(alice, 7).assetMask == mask_of("WETH")
    assert eng.position(alice, 7).scaledDebt == 0
    assert eng.assetSupply(weth).totalSupplied == 10**18
    assert events(tx, eng.CollateralMoved) == [args(owner=alice, fromSubId=0, toSubId=7, asset=weth, amount=free)]
    # The debt-free sub-account moves everything back and loses its mask bit.
    eng.moveCollateral(7, 0, weth, free, sender=alice)
    assert eng.position(alice, 7).assetMask == 0
    assert eng.collateralOf(alice, 0, weth) == 10**18


def test_move_collateral_only_acts_on_callers_sub_accounts(system: Any, alice: Any, stranger: Any) -> None:
    """A stranger naming alice's sub-account ids moves only its own collateral, never alice's."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 5 * 10**18})
    with reverts_with(eng.InsufficientCollateral, asset=weth, balance=0, requested=10**18):
        eng.moveCollateral(0, 1, weth, 10**18, sender=stranger)
    open_position(system, stranger, 0, {"WETH": 10**18})
    with reverts_with(eng.InsufficientCollateral, asset=weth, balance=10**18, requested=2 * 10**18):
        eng.moveCollateral(0, 1, weth, 2 * 10**18, sender=stranger)
    eng.moveCollateral(0, 1, weth, 10**18, sender=stranger)
    assert eng.collateralOf(stranger, 1, weth) == 10**18
    assert eng.collateralOf(alice, 0, weth) == 5 * 10**18
    assert eng.collateralOf(alice, 1, weth) == 0
    assert eng.position(alice, 1).assetMask == 0


# --------------------------------------------------------------------------------------------- borrow


def test_borrow_sends_usdc_to_receiver_and_emits(system: Any, alice: Any, bob: Any, frozen: int) -> None:
    """A borrow books scaled debt, sends the USDC to the receiver out of the vault's idle cash and emits Borrowed."""
    eng, vault, usdc = system.engine, system.vault, system.usdc
    open_position(system, alice, 2, {"WETH": 10**18})
    tx = eng.borrow(2, 1234 * USDC, bob, sender=alice)
    assert usdc.balanceOf(bob) == 1234 * USDC
    assert usdc.balanceOf(alice) == 0
    assert vault.idle() == 10_000_000 * USDC - 1234 * USDC
    assert vault.totalScaledDebt() == 1234 * USDC
    assert eng.position(alice, 2).scaledDebt == 1234 * USDC
    assert eng.debtOf(alice, 2) == 1234 * USDC
    assert events(tx, eng.Borrowed) == [
        args(owner=alice, subId=2, assets=1234 * USDC, scaled=1234 * USDC, receiver=bob)
    ]


def test_borrow_refuses_zero_and_dust(system: Any, alice: Any, frozen: int) -> None:
    """Zero is ZeroAmount; a debt below minDebt (10 USDC) is DebtBelowMinimum; exactly minDebt is allowed."""
    eng = system.engine
    open_position(system, alice, 0, {"WETH": 10**18})
    with reverts_with(eng.ZeroAmount):
        eng.borrow(0, 0, alice, sender=alice)
    with reverts_with(eng.DebtBelowMinimum, debt=MIN_DEBT - 1, minDebt=MIN_DEBT):
        eng.borrow(0, MIN_DEBT - 1, alice, sender=alice)
    eng.borrow(0, MIN_DEBT, alice, sender=alice)
    assert eng.debtOf(alice, 0) == MIN_DEBT


def test_borrow_without_collateral_is_insufficient_margin(system: Any, alice: Any, frozen: int) -> None:
    """An empty sub-account has no borrowing power."""
    with reverts_with(system.engine.InsufficientMargin, borrowingPower=0, debtValue=100 * WAD):
        system.engine.borrow(0, 100 * USDC, alice, sender=alice)


def test_borrow_ltv_boundary_multi_collateral(system: Any, project: Any, alice: Any, grown_index: int) -> None:
    """With WETH+WBTC+LINK at odd prices, an index above RAY and an 18-decimal USDC feed, borrowing exactly the
    largest amount the documented formula allows succeeds and one unit more is InsufficientMargin."""
    eng, index = system.engine, grown_index
    prices = {
        "WETH": 1987_65432101 * 10**10,
        "WBTC": 61234_56789012 * 10**10,
        "LINK": 14_321987654321987654,
        "USDC": 1_000123456789012345,
    }
    for sym in SYMBOLS:
        set_price_wad(system, sym, prices[sym])
    fine_usdc_feed(project, system, prices["USDC"])
    bal = {"WETH": 1_234567890123456789, "WBTC": 3456789, "LINK": 123_456789012345678901}
    open_position(system, alice, 9, bal)

    power = borrowing_power(bal, prices)
    for sym in SYMBOLS:  # each asset alone is not enough: the power really is the sum
        assert borrowing_power({sym: bal[sym]}, prices) < power // 2

    def debt_after(assets: int) -> int:
        return to_assets_up(to_scaled_up(assets, index), index)

    def fits(assets: int) -> bool:
        return debt_value(debt_after(assets), prices["USDC"]) <= power

    best = power * USDC // prices["USDC"]
    while not fits(best):
        best -= 1
    while fits(best + 1):
        best += 1
    assert debt_after(best) != best  # the index makes the scaled rounding matter here

    over = debt_value(debt_after(best + 1), prices["USDC"])
    with reverts_with(eng.InsufficientMargin, borrowingPower=power, debtValue=over):
        eng.borrow(9, best + 1, alice, sender=alice)
    tx = eng.borrow(9, best, alice, sender=alice)
    scaled = to_scaled_up(best, index)
    assert events(tx, eng.Borrowed) == [args(owner=alice, subId=9, assets=best, scaled=scaled, receiver=alice)]
    assert eng.position(alice, 9).scaledDebt == scaled
    assert system.usdc.balanceOf(alice) == best
    h = eng.accountHealth(alice, 9)
    assert h.ltvWeighted == power
    assert h.debtValue == debt_value(debt_after(best), prices["USDC"])
    assert h.debtValue <= power


def test_borrow_more_than_vault_cash(system: Any, alice: Any) -> None:
    """Borrowing beyond the vault's idle cash is the vault's InsufficientLiquidity; all of it is allowed."""
    eng, vault = system.engine, system.vault
    cash = 10_000_000 * USDC
    open_position(system, alice, 0, {"WETH": 10_000 * 10**18})
    with reverts_with(vault.InsufficientLiquidity, requested=cash + 1, idle=cash):
        eng.borrow(0, cash + 1, alice, sender=alice)
    eng.borrow(0, cash, alice, sender=alice)
    assert vault.idle() == 0
    assert system.usdc.balanceOf(alice) == cash


# --------------------------------------------------------------------------------------------- repay


def test_repay_by_anyone_partial_then_all(system: Any, alice: Any, bob: Any, frozen: int) -> None:
    """Bob repays part of alice's debt and then all of it with MAX_UINT; his USDC goes to the vault."""
    eng, vault, usdc = system.engine, system.vault, system.usdc
    open_position(system, alice, 4, {"WETH": 10**18}, borrow=500 * USDC)
    fund(system, bob, "USDC", 1000 * USDC)
    vault_before = usdc.balanceOf(vault)
    tx = eng.repay(alice, 4, 200 * USDC, sender=bob)
    assert tx.return_value == 200 * USDC
    assert events(tx, eng.Repaid) == [args(payer=bob, owner=alice, subId=4, assets=200 * USDC, scaled=200 * USDC)]
    assert eng.debtOf(alice, 4) == 300 * USDC
    assert usdc.balanceOf(bob) == 800 * USDC
    assert usdc.balanceOf(vault) == vault_before + 200 * USDC
    assert vault.idle() == 10_000_000 * USDC - 300 * USDC

    tx = eng.repay(alice, 4, MAX_UINT, sender=bob)
    assert tx.return_value == 300 * USDC
    assert events(tx, eng.Repaid) == [args(payer=bob, owner=alice, subId=4, assets=300 * USDC, scaled=300 * USDC)]
    assert eng.position(alice, 4).scaledDebt == 0
    assert eng.debtOf(alice, 4) == 0
    assert usdc.balanceOf(bob) == 500 * USDC
    assert usdc.balanceOf(vault) == vault_before + 500 * USDC
    assert vault.totalScaledDebt() == 0
    assert usdc.balanceOf(alice) == 500 * USDC  # the borrowed cash stayed with alice


def test_repay_all_with_interest_then_withdraw_everything(system: Any, alice: Any, bob: Any, grown_index: int) -> None:
    """MAX_UINT repays ceil(scaled * index / RAY) and zeroes the scaled debt; the owner then withdraws it all."""
    eng, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=777_777_777)
    scaled = to_scaled_up(777_777_777, grown_index)
    owed = to_assets_up(scaled, grown_index)
    fund(system, alice, "USDC", owed - 777_777_777)
    tx = eng.repay(alice, 0, MAX_UINT, sender=alice)
    assert events(tx, eng.Repaid) == [args(payer=alice, owner=alice, subId=0, assets=owed, scaled=scaled)]
    assert system.usdc.balanceOf(alice) == 0
    assert eng.position(alice, 0).scaledDebt == 0
    eng.withdraw(0, weth, 10**18, alice, sender=alice)
    assert weth.balanceOf(alice) == 10**18
    assert eng.position(alice, 0).assetMask == 0


def test_repay_refusals(system: Any, alice: Any, bob: Any, frozen: int) -> None:
    """ZeroAmount, NothingToRepay, and DebtBelowMinimum when a partial repay would leave dust."""
    eng = system.engine
    fund(system, bob, "USDC", 1000 * USDC)
    with reverts_with(eng.NothingToRepay):
        eng.repay(alice, 0, 10 * USDC, sender=bob)
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=100 * USDC)
    with reverts_with(eng.ZeroAmount):
        eng.repay(alice, 0, 0, sender=bob)
    with reverts_with(eng.DebtBelowMinimum, debt=MIN_DEBT - 1, minDebt=MIN_DEBT):
        eng.repay(alice, 0, 100 * USDC - MIN_DEBT + 1, sender=bob)
    eng.repay(alice, 0, 100 * USDC - MIN_DEBT, sender=bob)
    assert eng.debtOf(alice, 0) == MIN_DEBT
    with reverts_with(eng.DebtBelowMinimum, debt=MIN_DEBT - 1, minDebt=MIN_DEBT):
        eng.repay(alice, 0, 1, sender=bob)


# --------------------------------------------------------------------------------------------- rounding


def test_borrow_creates_scaled_debt_rounded_up(system: Any, alice: Any, grown_index: int) -> None:
    """At an index above RAY one more unit borrowed books ceil(RAY / index) = 1 scaled unit, not floor = 0."""
    eng, vault = system.engine, system.vault
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=20 * USDC)
    before = eng.position(alice, 0).scaledDebt
    total_before = vault.totalScaledDebt()
    assert RAY // grown_index == 0
    tx = eng.borrow(0, 1, alice, sender=alice)
    assert eng.position(alice, 0).scaledDebt == before + 1
    assert vault.totalScaledDebt() == total_before + 1
    assert events(tx, eng.Borrowed)[0]["scaled"] == 1
    # A larger inexact amount: still the ceiling.
    amount = 123_456_789
    assert amount * RAY % grown_index != 0
    tx = eng.borrow(0, amount, alice, sender=alice)
    assert events(tx, eng.Borrowed)[0]["scaled"] == amount * RAY // grown_index + 1
    assert eng.position(alice, 0).scaledDebt == before + 1 + amount * RAY // grown_index + 1


def test_repay_extinguishes_scaled_debt_rounded_down(system: Any, alice: Any, grown_index: int) -> None:
    """A partial repay removes floor(assets * RAY / index) scaled debt: 1 unit removes none at an index > RAY."""
    eng = system.engine
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=100 * USDC)
    scaled0 = to_scaled_up(100 * USDC, grown_index)
    assert eng.position(alice, 0).scaledDebt == scaled0
    fund(system, alice, "USDC", 0)
    idle = system.vault.idle()
    tx = eng.repay(alice, 0, 1, sender=alice)
    assert events(tx, eng.Repaid)[0]["scaled"] == 0
    assert eng.position(alice, 0).scaledDebt == scaled0
    assert system.vault.idle() == idle + 1
    amount = 33_333_333
    assert amount * RAY % grown_index != 0
    tx = eng.repay(alice, 0, amount, sender=alice)
    assert events(tx, eng.Repaid)[0]["scaled"] == to_scaled_down(amount, grown_index)
    assert eng.position(alice, 0).scaledDebt == scaled0 - to_scaled_down(amount, grown_index)


def test_debt_rounds_up(system: Any, alice: Any, grown_index: int) -> None:
    """debtOf and accountHealth.debt are ceil(scaled * index / RAY), one above the floor when inexact."""
    eng = system.engine
    amount = 50 * USDC
    while to_scaled_up(amount, grown_index) * grown_index % RAY == 0:
        amount += 1
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=amount)
    scaled = eng.position(alice, 0).scaledDebt
    assert scaled == to_scaled_up(amount, grown_index)
    assert eng.debtOf(alice, 0) == scaled * grown_index // RAY + 1
    assert eng.accountHealth(alice, 0).debt == scaled * grown_index // RAY + 1


def test_collateral_value_rounds_down(system: Any, alice: Any) -> None:
    """value = floor(balance * price / 10**decimals): 3 wei LINK at $15.123456789012345678 is worth 45, not 45.37."""
    eng = system.engine
    link_price = 15_123456789012345678
    weth_price = 2000_00000001 * 10**10
    set_price_wad(system, "LINK", link_price)
    set_price_wad(system, "WETH", weth_price)
    open_position(system, alice, 0, {"LINK": 3})
    assert 3 * link_price % 10**18 != 0
    h = eng.accountHealth(alice, 0)
    assert h.collateralValue == 45
    assert h.ltWeighted == 45 * LT["LINK"] // WAD == 31
    assert h.ltvWeighted == 45 * LTV["LINK"] // WAD == 27
    open_position(system, alice, 1, {"WETH": 1})
    assert eng.accountHealth(alice, 1).collateralValue == 2000  # 2000.00000001 truncated


# --------------------------------------------------------------------------------------------- views


def test_account_health_matches_independent_computation(
    system: Any, project: Any, alice: Any, grown_index: int
) -> None:
    """Every accountHealth figure equals the documented formula, with odd prices, an index above RAY and a
    debt value that must round up; with no debt, health is the maximum uint."""
    eng = system.engine
    prices = {
        "WETH": 2345_67891234 * 10**10,
        "WBTC": 58765_43210987 * 10**10,
        "LINK": 16_987654321987654321,
        "USDC": 999_876543210987653,
    }
    for sym in SYMBOLS:
        set_price_wad(system, sym, prices[sym])
    fine_usdc_feed(project, system, prices["USDC"])
    bal = {"WETH": 3_141592653589793238, "WBTC": 27182818, "LINK": 1_414_213562373095048801}
    open_position(system, alice, 200, bal)
    assert health_tuple(eng.accountHealth(alice, 200)) == expected_health(bal, prices, 0)
    assert eng.accountHealth(alice, 200).health == MAX_UINT

    borrowed = 4_321_987_653
    eng.borrow(200, borrowed, alice, sender=alice)
    debt = to_assets_up(to_scaled_up(borrowed, grown_index), grown_index)
    assert debt * prices["USDC"] % USDC != 0  # the debt value really rounds
    expected = expected_health(bal, prices, debt)
    assert health_tuple(eng.accountHealth(alice, 200)) == expected
    assert eng.debtOf(alice, 200) == debt
    # A price move is reflected at once.
    prices["WBTC"] = 40_000 * WAD
    set_price_wad(system, "WBTC", prices["WBTC"])
    assert health_tuple(eng.accountHealth(alice, 200)) == expected_health(bal, prices, debt)


def test_position_balances_and_collateral_views(system: Any, alice: Any, frozen: int) -> None:
    """position, balancesOf (assetList order) and collateralOf reflect deposits and the borrow."""
    eng = system.engine
    open_position(system, alice, 5, {"LINK": 11 * 10**18, "WETH": 2 * 10**18}, borrow=100 * USDC)
    p = eng.position(alice, 5)
    assert p.scaledDebt == 100 * USDC
    assert p.assetMask == mask_of("WETH", "LINK")
    assert list(eng.balancesOf(alice, 5)) == [2 * 10**18, 0, 11 * 10**18]
    assert list(eng.balancesOf(alice, 6)) == [0, 0, 0]
    assert eng.collateralOf(alice, 5, system.link) == 11 * 10**18
    assert eng.debtOf(alice, 5) == 100 * USDC
    assert eng.debtOf(alice, 6) == 0
    h = eng.accountHealth(alice, 6)
    assert health_tuple(h) == (0, 0, 0, 0, 0, MAX_UINT)


def test_market_configuration_views(system: Any) -> None:
    """Wiring, asset list, per-asset config and supply, and the risk parameters hold the deployed market."""
    eng = system.engine
    assert eng.vault() == system.vault.address
    assert eng.oracle() == system.router.address
    assert eng.debtAsset() == system.usdc.address
    assert eng.debtDecimals() == 6
    assert list(eng.assetList()) == [system.tokens[s].address for s in SYMBOLS]
    for i, sym in enumerate(SYMBOLS):
        cfg = eng.assetConfig(system.tokens[sym])
        assert (cfg.listed, cfg.index, cfg.decimals) == (True, i, DEC[sym])
        assert (cfg.ltv, cfg.lt, cfg.maxDiscount) == (LTV[sym], LT[sym], MAX_DISC[sym])
        supply = eng.assetSupply(system.tokens[sym])
        assert (supply.supplyCap, supply.totalSupplied) == (CAP[sym], 0)
    assert eng.assetConfig(system.usdc).listed is False
    rp = eng.riskParams()
    assert (rp.minDiscount, rp.fullCloseHealth, rp.fullCloseDebtValue, rp.minDebt) == (
        5 * 10**15,
        95 * 10**16,
        100 * WAD,
        MIN_DEBT,
    )


def test_interest_makes_debt_grow(system: Any, chain: Any, alice: Any) -> None:
    """After a time skip the vault's index follows the kinked-rate formula and debtOf = ceil(scaled*index/RAY)."""
    eng, vault = system.engine, system.vault
    borrowed = 5000 * USDC
    open_position(system, alice, 0, {"WETH": 10 * 10**18})
    tx = eng.borrow(0, borrowed, alice, sender=alice)
    assert eng.position(alice, 0).scaledDebt == borrowed  # first borrow on a fresh vault: index RAY
    idle = 10_000_000 * USDC - borrowed
    elapsed = 30 * 24 * 3600
    chain.mine(timestamp=tx.timestamp + elapsed)
    util = borrowed * WAD // (borrowed + idle)
    rate = util * SLOPE1 // KINK
    index = RAY + RAY * (rate * elapsed) // (WAD * YEAR)
    assert vault.borrowIndex() == index
    debt = to_assets_up(borrowed, index)
    assert debt > borrowed
    assert eng.debtOf(alice, 0) == debt
    refresh_feeds(system)
    assert eng.accountHealth(alice, 0).debt == to_assets_up(borrowed, vault.borrowIndex())


# --------------------------------------------------------------------------------------------- governance


def test_list_asset_emits_and_configures(system: Any, project: Any, admin: Any) -> None:
    """A new asset gets the next index, its token decimals and config, with AssetListed and AssetConfigSet."""
    eng = system.engine
    token = admin.deploy(project.MockERC20, "New", "NEW", 12)
    tx = eng.listAsset(token, 5 * 10**17, 6 * 10**17, 2 * 10**17, 777, sender=admin)
    assert events(tx, eng.AssetListed) == [args(asset=token, index=3, decimals=12)]
    assert events(tx, eng.AssetConfigSet) == [
        args(asset=token, ltv=5 * 10**17, lt=6 * 10**17, maxDiscount=2 * 10**17, supplyCap=777)
    ]
    cfg = eng.assetConfig(token)
    assert (cfg.listed, cfg.index, cfg.decimals, cfg.ltv, cfg.lt, cfg.maxDiscount) == (
        True,
        3,
        12,
        5 * 10**17,
        6 * 10**17,
        2 * 10**17,
    )
    assert eng.assetSupply(token).supplyCap == 777
    assert list(eng.assetList())[-1] == token.address


def test_list_asset_refusals(system: Any, project: Any, admin: Any) -> None:
    """AssetAlreadyListed; InvalidConfig for the debt asset, address(0), >36 decimals and bad ratios."""
    eng = system.engine
    with reverts_with(eng.AssetAlreadyListed, asset=system.weth):
        eng.listAsset(system.weth, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=admin)
    with reverts_with(eng.InvalidConfig):
        eng.listAsset(system.usdc, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=admin)
    with reverts_with(eng.InvalidConfig):
        eng.listAsset("0x" + "00" * 20, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=admin)
    odd = admin.deploy(project.MockERC20, "Odd", "ODD", 37)
    with reverts_with(eng.InvalidConfig):
        eng.listAsset(odd, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=admin)
    fresh = admin.deploy(project.MockERC20, "Fresh", "FRS", 18)
    with reverts_with(eng.InvalidConfig):
        eng.listAsset(fresh, 6 * 10**17, 6 * 10**17, 10**17, 1, sender=admin)
    assert len(eng.assetList()) == 3


def test_list_asset_stops_at_32(system: Any, project: Any, admin: Any) -> None:
    """Up to 32 assets can be listed (indices 0..31); the 33rd is TooManyAssets."""
    eng = system.engine
    last = None
    for _ in range(32 - len(SYMBOLS)):
        last = admin.deploy(project.MockERC20, "Filler", "FIL", 18)
        eng.listAsset(last, 5 * 10**17, 6 * 10**17, 10**17, 10**18, sender=admin)
    assert last is not None
    assert eng.assetConfig(last).index == 31
    assert len(eng.assetList()) == 32
    extra = admin.deploy(project.MockERC20, "Extra", "EXT", 18)
    with reverts_with(eng.TooManyAssets):
        eng.listAsset(extra, 5 * 10**17, 6 * 10**17, 10**17, 10**18, sender=admin)


def test_set_asset_config_bounds(system: Any, project: Any, admin: Any) -> None:
    """InvalidConfig for ltv >= lt, maxDiscount > 25 % and lt * (1 + maxDiscount) >= 1 (rounded up);
    AssetNotListed for an unknown asset; accepted values are stored and emitted."""
    eng, weth = system.engine, system.weth
    with reverts_with(eng.InvalidConfig):
        eng.setAssetConfig(weth, 7 * 10**17, 7 * 10**17, 10**17, 1, sender=admin)
    with reverts_with(eng.InvalidConfig):
        eng.setAssetConfig(weth, 4 * 10**17, 5 * 10**17, 25 * 10**16 + 1, 1, sender=admin)
    with reverts_with(eng.InvalidConfig):  # 0.8 * 1.25 == 1 exactly
        eng.setAssetConfig(weth, 7 * 10**17, 8 * 10**17, 25 * 10**16, 1, sender=admin)
    # (0.8e18 - 1) * 1.25 = 1e18 - 1.25, rounded up to 1e18 - 1: just below 1, accepted.
    lt = 8 * 10**17 - 1
    assert div_up(lt * (WAD + 25 * 10**16), WAD) == WAD - 1
    tx = eng.setAssetConfig(weth, 7 * 10**17, lt, 25 * 10**16, 42, sender=admin)
    assert events(tx, eng.AssetConfigSet) == [
        args(asset=weth, ltv=7 * 10**17, lt=lt, maxDiscount=25 * 10**16, supplyCap=42)
    ]
    cfg = eng.assetConfig(weth)
    assert (cfg.ltv, cfg.lt, cfg.maxDiscount, cfg.index, cfg.decimals) == (7 * 10**17, lt, 25 * 10**16, 0, 18)
    assert eng.assetSupply(weth).supplyCap == 42
    other = admin.deploy(project.MockERC20, "Other", "OTH", 18)
    with reverts_with(eng.AssetNotListed, asset=other):
        eng.setAssetConfig(other, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=admin)


def test_set_risk_params_bounds(system: Any, admin: Any) -> None:
    """minDiscount above 5 % and fullCloseHealth above 1 are InvalidConfig; the bounds themselves are accepted."""
    eng = system.engine
    with reverts_with(eng.InvalidConfig):
        eng.setRiskParams((5 * 10**16 + 1, 9 * 10**17, 0, 0), sender=admin)
    with reverts_with(eng.InvalidConfig):
        eng.setRiskParams((10**16, WAD + 1, 0, 0), sender=admin)
    tx = eng.setRiskParams((5 * 10**16, WAD, 250 * WAD, 25 * USDC), sender=admin)
    assert events(tx, eng.RiskParamsSet) == [
        args(minDiscount=5 * 10**16, fullCloseHealth=WAD, fullCloseDebtValue=250 * WAD, minDebt=25 * USDC)
    ]
    rp = eng.riskParams()
    assert (rp.minDiscount, rp.fullCloseHealth, rp.fullCloseDebtValue, rp.minDebt) == (
        5 * 10**16,
        WAD,
        250 * WAD,
        25 * USDC,
    )


def test_governance_is_admin_only(system: Any, project: Any, stranger: Any) -> None:
    """listAsset, setAssetConfig and setRiskParams revert for a stranger with AccessControlUnauthorizedAccount."""
    eng = system.engine
    token = stranger.deploy(project.MockERC20, "Mine", "MIN", 18)
    with reverts_with(eng.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        eng.listAsset(token, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=stranger)
    with reverts_with(eng.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        eng.setAssetConfig(system.weth, 5 * 10**17, 6 * 10**17, 10**17, 1, sender=stranger)
    with reverts_with(eng.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        eng.setRiskParams((10**16, 9 * 10**17, 0, 0), sender=stranger)
    assert len(eng.assetList()) == 3
    assert eng.riskParams().minDebt == MIN_DEBT
