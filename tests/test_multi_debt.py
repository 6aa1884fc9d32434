"""Several debt assets on a real Anvil: WETH and WBTC listed as further debt assets (each lent by its own Vault),
beside the primary USDC. Listing and its refusals, borrowing and repaying in each, the margin over every debt, the
liquidation of any debt against any collateral, the write-off shared among the vaults in proportion to value, the
last collateral realising every debt in its own vault, the grid's coverage of the new assets, and the Lens.

References: closed forms in this file from chain-read prices, balances and debts (Σ value·lt over Σ debt value, the
seizure at the documented discount, the write-off's shares); the vaults' own books.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from conftest import MAX_UINT, WAD, fund, open_position, reverts_with

from keeper.core import grid as g
from keeper.core import risk

PCT = WAD // 100
DEC = {"USDC": 6, "WETH": 18, "WBTC": 8, "LINK": 18}
LT = {"WETH": 85 * PCT, "WBTC": 80 * PCT, "LINK": 70 * PCT}
LTV = {"WETH": 80 * PCT, "WBTC": 75 * PCT, "LINK": 60 * PCT}
MIN_DEBT = {"WETH": 10**15, "WBTC": 10**4}  # 0.001 WETH, 0.0001 WBTC
ZERO_RATE = (0, 0, 0, WAD // 2)


@dataclass
class Debts:
    system: Any
    vaults: dict[str, Any]  # symbol -> Vault, USDC included

    def token(self, symbol: str) -> Any:
        return self.system.usdc if symbol == "USDC" else self.system.tokens[symbol]


def _new_vault(project: Any, system: Any, symbol: str, lender: Any, liquidity: int) -> Any:
    token = system.tokens[symbol]
    vault = project.Vault.deploy(token, f"ck {symbol}", f"ck{symbol}", system.admin, ZERO_RATE, 0, sender=system.admin)
    vault.setEngine(system.engine, sender=system.admin)
    token.mint(lender, liquidity, sender=lender)
    token.approve(vault, MAX_UINT, sender=lender)
    vault.deposit(liquidity, lender, sender=lender)
    return vault


@pytest.fixture
def debts(project, system, lender) -> Debts:
    """WETH and WBTC listed as debt assets (WETH stays a collateral too); no interest anywhere, so figures read a
    block apart compare exactly."""
    system.vault.setRateModel(ZERO_RATE, 0, sender=system.admin)
    vaults = {"USDC": system.vault}
    for symbol, liquidity in (("WETH", 1_000 * 10**18), ("WBTC", 50 * 10**8)):
        vaults[symbol] = _new_vault(project, system, symbol, lender, liquidity)
        system.engine.listDebt(vaults[symbol], MIN_DEBT[symbol], sender=system.admin)
    return Debts(system, vaults)


def price(system: Any, symbol: str) -> int:
    return system.router.price(system.usdc if symbol == "USDC" else system.tokens[symbol])


def debt_of(d: Debts, who: Any, sub: int, symbol: str) -> int:
    return d.system.engine.debtOfAsset(who, sub, d.token(symbol))


def closed_form(d: Debts, who: Any, sub: int) -> tuple[int, int, int]:
    """(Σ value_down·lt, Σ value_down·ltv, Σ value_up(debt)) from chain-read balances, prices and debts."""
    s = d.system
    lt_sum = ltv_sum = debt_value = 0
    for symbol in ("WETH", "WBTC", "LINK"):
        bal = s.engine.collateralOf(who, sub, s.tokens[symbol])
        value = risk.value_down(bal, price(s, symbol), DEC[symbol])
        lt_sum += risk.w_mul_down(value, LT[symbol])
        ltv_sum += risk.w_mul_down(value, LTV[symbol])
    for symbol in ("USDC", "WETH", "WBTC"):
        debt_value += risk.value_up(debt_of(d, who, sub, symbol), price(s, symbol), DEC[symbol])
    return lt_sum, ltv_sum, debt_value


# ------------------------------------------------------------------------------------------------ listing


def test_listing_orders_the_debts_and_names_each_vault(debts):
    s = debts.system
    assert list(s.engine.debtAssets()) == [s.usdc.address, s.weth.address, s.wbtc.address]
    cfg = s.engine.debtConfig(s.wbtc)
    assert (cfg.vault, cfg.index, cfg.decimals, cfg.minDebt) == (debts.vaults["WBTC"].address, 2, 8, MIN_DEBT["WBTC"])
    primary = s.engine.debtConfig(s.usdc)
    assert (primary.vault, primary.index, primary.minDebt) == (s.vault.address, 0, s.engine.riskParams().minDebt)


def test_listing_refuses_what_it_cannot_lend_through(project, debts, lender, stranger):
    s = debts.system
    with reverts_with(s.engine.DebtAlreadyListed, asset=s.weth):
        s.engine.listDebt(debts.vaults["WETH"], 1, sender=s.admin)
    with reverts_with(s.engine.DebtAlreadyListed, asset=s.usdc):
        s.engine.listDebt(s.vault, 1, sender=s.admin)
    unbound = project.Vault.deploy(s.link, "ck LINK", "ckLINK", s.admin, ZERO_RATE, 0, sender=s.admin)
    with reverts_with(s.engine.VaultNotBound, vault=unbound):
        s.engine.listDebt(unbound, 1, sender=s.admin)
    unbound.setEngine(s.engine, sender=s.admin)
    with reverts_with(s.engine.AccessControlUnauthorizedAccount, account=stranger, neededRole=b"\x00" * 32):
        s.engine.listDebt(unbound, 1, sender=stranger)
    with reverts_with(s.engine.DebtNotListed, asset=s.link):
        s.engine.borrowAsset(0, s.link, 1, stranger, sender=stranger)


def test_at_most_eight_debt_assets(project, system, lender):
    """The primary and seven more fill the 8-bit debt mask; the ninth is refused."""
    s = system
    for k in range(7):
        token = project.MockERC20.deploy(f"D{k}", f"D{k}", 18, sender=s.admin)
        vault = project.Vault.deploy(token, f"v{k}", f"v{k}", s.admin, ZERO_RATE, 0, sender=s.admin)
        vault.setEngine(s.engine, sender=s.admin)
        s.engine.listDebt(vault, 0, sender=s.admin)
    token = project.MockERC20.deploy("D7", "D7", 18, sender=s.admin)
    vault = project.Vault.deploy(token, "v7", "v7", s.admin, ZERO_RATE, 0, sender=s.admin)
    vault.setEngine(s.engine, sender=s.admin)
    with reverts_with(s.engine.TooManyDebts):
        s.engine.listDebt(vault, 0, sender=s.admin)
    assert len(s.engine.debtAssets()) == 8


# --------------------------------------------------------------------------------------- borrow and repay


def test_the_margin_counts_every_debt(debts, alice):
    """Each borrow alone fits the account's borrowing power; together they do not, and the engine says by how much
    (the closed form's Σ value·ltv against Σ debt value)."""
    s = debts.system
    open_position(s, alice, 1, {"WBTC": 10**8})  # $60,000: power $45,000
    s.engine.borrow(1, 30_000 * 10**6, alice, sender=alice)
    weth_debt = 8 * 10**18  # $16,000: alone it would fit
    _lt, power, debt_value = closed_form(debts, alice, 1)
    would_be = debt_value + risk.value_up(weth_debt, price(s, "WETH"), 18)
    with reverts_with(s.engine.InsufficientMargin, borrowingPower=power, debtValue=would_be):
        s.engine.borrowAsset(1, s.weth, weth_debt, alice, sender=alice)
    s.engine.borrowAsset(1, s.weth, 7 * 10**18, alice, sender=alice)
    lt_sum, power, debt_value = closed_form(debts, alice, 1)
    h = s.engine.accountHealth(alice, 1)
    assert (h.ltWeighted, h.ltvWeighted, h.debtValue) == (lt_sum, power, debt_value)
    assert h.health == risk.w_div_down(lt_sum, debt_value)
    assert h.debt == 30_000 * 10**6  # the primary's, as before
    assert s.engine.position(alice, 1).debtMask == 0b10
    assert s.weth.balanceOf(alice) >= 7 * 10**18


def test_a_secondary_debt_alone_still_holds_the_collateral(debts, alice):
    """No primary debt, only WETH owed: a withdrawal that breaks the margin is refused (the account has debt)."""
    s = debts.system
    open_position(s, alice, 2, {"WBTC": 10**8})
    s.engine.borrowAsset(2, s.weth, 10 * 10**18, alice, sender=alice)  # $20,000 of $45,000 power
    assert s.engine.position(alice, 2).scaledDebt == 0
    power = risk.w_mul_down(risk.value_down(4 * 10**7, price(s, "WBTC"), 8), LTV["WBTC"])
    debt_value = risk.value_up(10 * 10**18, price(s, "WETH"), 18)
    with reverts_with(s.engine.InsufficientMargin, borrowingPower=power, debtValue=debt_value):
        s.engine.withdraw(2, s.wbtc, 6 * 10**7, alice, sender=alice)
    s.engine.withdraw(2, s.wbtc, 10**7, alice, sender=alice)
    lt_sum, _power, debt_value = closed_form(debts, alice, 2)
    assert s.engine.accountHealth(alice, 2).health == risk.w_div_down(lt_sum, debt_value)


def test_borrow_and_repay_move_each_vaults_cash_and_leave_no_dust(debts, alice, bob):
    s = debts.system
    vault = debts.vaults["WETH"]
    open_position(s, alice, 3, {"WBTC": 10**8})
    with reverts_with(s.engine.DebtBelowMinimum, debt=MIN_DEBT["WETH"] - 1, minDebt=MIN_DEBT["WETH"]):
        s.engine.borrowAsset(3, s.weth, MIN_DEBT["WETH"] - 1, alice, sender=alice)
    idle = vault.idle()
    s.engine.borrowAsset(3, s.weth, 5 * 10**18, alice, sender=alice)
    assert vault.idle() == idle - 5 * 10**18
    assert vault.totalDebt() == 5 * 10**18
    assert s.vault.totalDebt() == 0
    fund(s, bob, "WETH", 10 * 10**18)
    with reverts_with(s.engine.DebtBelowMinimum, debt=MIN_DEBT["WETH"] - 1, minDebt=MIN_DEBT["WETH"]):
        s.engine.repayAsset(alice, 3, s.weth, 5 * 10**18 - MIN_DEBT["WETH"] + 1, sender=bob)
    s.engine.repayAsset(alice, 3, s.weth, 2 * 10**18, sender=bob)
    assert debt_of(debts, alice, 3, "WETH") == 3 * 10**18
    assert s.engine.position(alice, 3).debtMask == 0b10
    s.engine.repayAsset(alice, 3, s.weth, MAX_UINT, sender=bob)
    assert s.engine.position(alice, 3).debtMask == 0
    assert vault.idle() == idle
    assert vault.totalDebt() == 0
    with reverts_with(s.engine.NothingToRepay):
        s.engine.repayAsset(alice, 3, s.weth, 1, sender=bob)
    assert s.engine.accountHealth(alice, 3).health == MAX_UINT
    s.engine.withdraw(3, s.wbtc, 10**8, alice, sender=alice)  # no debt left: everything comes back


# ------------------------------------------------------------------------------------------ liquidation


def _hedged(debts: Debts, who: Any, sub: int) -> None:
    """WETH and LINK collateral against USDC and WBTC debt."""
    s = debts.system
    open_position(s, who, sub, {"WETH": 20 * 10**18, "LINK": 1_000 * 10**18})  # $40,000 + $15,000
    s.engine.borrow(sub, 20_000 * 10**6, who, sender=who)
    s.engine.borrowAsset(sub, s.wbtc, 3 * 10**7, who, sender=who)  # 0.3 WBTC, $18,000


def test_liquidating_the_secondary_debt_seizes_at_the_documented_discount(debts, alice, liquidator):
    s = debts.system
    _hedged(debts, alice, 4)
    s.set_price("WBTC", 95_000)  # the borrowed asset rises: $28,500 of WBTC debt
    lt_sum, _p, debt_value = closed_form(debts, alice, 4)
    health = risk.w_div_down(lt_sum, debt_value)
    assert health < WAD
    assert s.engine.accountHealth(alice, 4).health == health
    params = s.engine.riskParams()
    discount = min(params.minDiscount + WAD - health, 10 * PCT, risk.neutral_discount(health, LT["WETH"]))
    repay = 10**7  # 0.1 WBTC
    seized = risk.amount_down(
        risk.w_mul_down(risk.value_down(repay, price(s, "WBTC"), 8), WAD + discount), price(s, "WETH"), 18
    )
    q = s.engine.previewLiquidationDebt(alice, 4, s.wbtc, s.weth, repay)
    assert (q.repaid, q.seized, q.discount) == (repay, seized, discount)
    fund(s, liquidator, "WBTC", repay)
    s.tokens["WBTC"].approve(s.engine, MAX_UINT, sender=liquidator)
    idle = debts.vaults["WBTC"].idle()
    weth_before = s.weth.balanceOf(liquidator)
    tx = s.engine.liquidateDebt(alice, 4, s.wbtc, s.weth, repay, seized, liquidator, b"", sender=liquidator)
    assert s.weth.balanceOf(liquidator) - weth_before == seized
    assert debts.vaults["WBTC"].idle() == idle + repay
    assert debt_of(debts, alice, 4, "WBTC") == 2 * 10**7
    assert debt_of(debts, alice, 4, "USDC") == 20_000 * 10**6
    assert s.engine.accountHealth(alice, 4).health >= health
    (event,) = tx.decode_logs(s.engine.LiquidatedDebt)
    assert (event.debtAsset, event.collateral, event.repaid, event.seized) == (
        s.wbtc.address,
        s.weth.address,
        repay,
        seized,
    )


def test_the_primary_liquidation_sees_every_debt(debts, alice, liquidator):
    """The account is liquidatable only through the WBTC debt's rise; repaying its USDC is allowed too, and the
    close factor's 50 % applies to the USDC debt."""
    s = debts.system
    _hedged(debts, alice, 5)
    s.set_price("WBTC", 85_000)
    health = s.engine.accountHealth(alice, 5).health
    assert 95 * PCT <= health < WAD
    q = s.engine.previewLiquidation(alice, 5, s.link, MAX_UINT)
    assert q.maxRepay == 10_000 * 10**6
    with reverts_with(s.engine.NothingToRepay):
        s.engine.previewLiquidationDebt(alice, 5, s.weth, s.link, 1)
    with reverts_with(s.engine.DebtNotListed, asset=s.link):
        s.engine.previewLiquidationDebt(alice, 5, s.link, s.link, 1)
    fund(s, liquidator, "USDC", q.repaid)
    s.engine.liquidate(alice, 5, s.link, q.repaid, 0, liquidator, b"", sender=liquidator)
    assert s.engine.accountHealth(alice, 5).health >= health


def test_no_liquidation_lowers_health_whichever_debt_it_repays(debts, alice, liquidator):
    """Every (debt, collateral, size) pair on a sick two-debt account: each liquidation either reverts or leaves
    health at least where it was (the chain's own accountHealth before and after)."""
    s = debts.system
    _hedged(debts, alice, 6)
    s.set_price("WBTC", 90_000)
    s.set_price("LINK", 9)
    for symbol in ("USDC", "WBTC"):
        fund(s, liquidator, symbol, 10**30 if symbol == "USDC" else 10**12)
    tried = 0
    for debt_symbol, collateral, repay in (
        ("WBTC", "LINK", 10**6),
        ("USDC", "WETH", 2_000 * 10**6),
        ("WBTC", "WETH", 3 * 10**6),
        ("USDC", "LINK", 1_000 * 10**6),
    ):
        before = s.engine.accountHealth(alice, 6).health
        if before >= WAD:
            break
        s.engine.liquidateDebt(
            alice, 6, debts.token(debt_symbol), s.tokens[collateral], repay, 0, liquidator, b"", sender=liquidator
        )
        tried += 1
        assert s.engine.accountHealth(alice, 6).health >= before
    assert tried >= 2


def test_a_write_off_is_shared_by_the_vaults_in_proportion_to_value(debts, alice, stranger):
    s = debts.system
    _hedged(debts, alice, 7)
    s.set_price("WETH", 700)
    s.set_price("LINK", 5)  # collateral $19,000 against $38,000 of debt
    h = s.engine.liquidationHealth(alice, 7)
    _lt_sum, _p, debt_value = closed_form(debts, alice, 7)
    assert h.debtValue == debt_value
    params = s.engine.riskParams()
    cover = 0
    for symbol in ("WETH", "LINK"):
        value = risk.value_down(s.engine.collateralOf(alice, 7, s.tokens[symbol]), price(s, symbol), 18)
        max_discount = s.engine.assetConfig(s.tokens[symbol]).maxDiscount
        cover += risk.w_div_down(value, WAD + min(params.minDiscount, max_discount))
    expected = {}
    for symbol in ("USDC", "WBTC"):
        amount = debt_of(debts, alice, 7, symbol)
        value = risk.value_up(amount, price(s, symbol), DEC[symbol])
        keep = risk.amount_up(risk.mul_div_up(cover, value, debt_value), price(s, symbol), DEC[symbol])
        expected[symbol] = (amount - keep, keep)
    wbtc_total = debts.vaults["WBTC"].totalDebt()
    tx = s.engine.writeOff(alice, 7, sender=stranger)
    assert debt_of(debts, alice, 7, "USDC") == expected["USDC"][1]
    assert debt_of(debts, alice, 7, "WBTC") == expected["WBTC"][1]
    assert debts.vaults["WBTC"].totalDebt() == wbtc_total - expected["WBTC"][0]
    (primary,) = tx.decode_logs(s.engine.BadDebtRealized)
    (other,) = tx.decode_logs(s.engine.BadDebtRealizedIn)
    assert primary.assets == expected["USDC"][0]
    assert (other.asset, other.assets) == (s.wbtc.address, expected["WBTC"][0])
    # Each kept debt is rounded up in its own asset: what is left is the cover, within one unit of each debt.
    left = s.engine.liquidationHealth(alice, 7).debtValue
    units = sum(risk.value_up(1, price(s, k), DEC[k]) for k in ("USDC", "WBTC"))
    assert cover <= left <= cover + units


def test_an_insolvent_account_liquidated_debt_by_debt_ends_with_no_debt_anywhere(debts, alice, liquidator):
    """The first liquidation writes both debts down first (each vault its share, in one transaction), then each
    debt is repaid in full in turn: the account ends owing nothing in either vault, and neither vault is owed."""
    s = debts.system
    open_position(s, alice, 8, {"LINK": 1_000 * 10**18})  # $15,000
    s.engine.borrow(8, 1_000 * 10**6, alice, sender=alice)
    s.engine.borrowAsset(8, s.weth, 4 * 10**18, alice, sender=alice)  # $8,000
    s.set_price("LINK", 6)  # $6,000 against $9,000
    fund(s, liquidator, "WETH", 10**20)
    fund(s, liquidator, "USDC", 10**12)
    first = s.engine.liquidateDebt(alice, 8, s.weth, s.link, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    (usdc_loss,) = first.decode_logs(s.engine.BadDebtRealized)
    (weth_loss,) = first.decode_logs(s.engine.BadDebtRealizedIn)
    # In proportion to value: $1,000 and $8,000 lose the same fraction (to the rounding of one unit each).
    usdc_fraction = usdc_loss.assets * WAD // (1_000 * 10**6)
    weth_fraction = weth_loss.assets * WAD // (4 * 10**18)
    assert abs(usdc_fraction - weth_fraction) < 10**13
    assert debt_of(debts, alice, 8, "WETH") == 0
    s.engine.liquidate(alice, 8, s.link, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    p = s.engine.position(alice, 8)
    assert (p.scaledDebt, p.debtMask) == (0, 0)
    assert debts.vaults["WETH"].totalDebt() == 0
    assert s.vault.totalDebt() == 0
    assert s.engine.accountHealth(alice, 8).health == MAX_UINT


# --------------------------------------------------------------------------------------------------- grid


def test_a_grid_must_cover_every_debt_and_prices_a_hedge(project, debts, alice):
    """setGrid without the WBTC debt's column is refused; with it, the engine's health is the closed-form minimum
    over the scenarios of long value over short value (keeper.core.grid's specification)."""
    s = debts.system
    sg = project.IScenarioGrid.at(s.engine.address)
    cols = {"WETH": [850_000, 700_000], "WBTC": [1_000_000, 1_300_000], "LINK": [700_000, 500_000]}
    cols_usdc = [1_000_000, 1_000_000]
    tokens = [s.weth, s.wbtc, s.link, s.usdc]
    packed = [g.pack(cols["WETH"]), g.pack(cols["WBTC"]), g.pack(cols["LINK"]), g.pack(cols_usdc)]
    # WBTC is a collateral and a debt: one column serves both; without WETH's it is refused.
    with reverts_with(s.engine.GridAssetsMismatch, asset="0x" + "00" * 20):
        sg.setGrid(2, WAD, tokens[1:], packed[1:], sender=s.admin)
    sg.setGrid(2, WAD, tokens, packed, sender=s.admin)
    open_position(s, alice, 9, {"WETH": 20 * 10**18, "LINK": 1_000 * 10**18})
    s.engine.borrow(9, 10_000 * 10**6, alice, sender=alice)
    s.engine.borrowAsset(9, s.wbtc, 2 * 10**7, alice, sender=alice)
    longs = {sym: g.Leg(s.engine.collateralOf(alice, 9, s.tokens[sym]), price(s, sym), 18) for sym in ("WETH", "LINK")}
    shorts = {
        "USDC": g.Leg(debt_of(debts, alice, 9, "USDC"), price(s, "USDC"), 6),
        "WBTC": g.Leg(debt_of(debts, alice, 9, "WBTC"), price(s, "WBTC"), 8),
    }
    every = {**cols, "USDC": cols_usdc}
    grid = g.Grid(tuple(g.Scenario({a: m[i] * 10**12 for a, m in every.items()}) for i in range(2)))
    spec = g.grid_health(g.Book(longs, shorts), grid)
    assert s.engine.accountHealth(alice, 9).health == spec.health
    lens_grid = s.lens.grid()
    assert len(lens_grid.columns) == 3 + 3  # three collaterals, then USDC, WETH, WBTC
    assert [list(g.unpack(c, 2)) for c in lens_grid.columns[3:]] == [cols_usdc, cols["WETH"], cols["WBTC"]]


def test_listing_across_roles_under_a_grid_is_refused(project, system, lender):
    """Under a grid one column per asset cannot be both a collateral's lt column and a debt's price move."""
    s = system
    sg = project.IScenarioGrid.at(s.engine.address)
    tokens = [s.weth, s.wbtc, s.link, s.usdc]
    sg.setGrid(1, WAD, tokens, [g.pack([m]) for m in (850_000, 800_000, 700_000, 1_000_000)], sender=s.admin)
    vault = _new_vault(project, s, "WETH", lender, 10**18)
    with reverts_with(s.engine.GridAssetsMismatch, asset=s.weth):
        s.engine.listDebt(vault, 0, sender=s.admin)


# --------------------------------------------------------------------------------------------------- lens


def test_the_lens_reads_every_debt(debts, alice):
    s = debts.system
    _hedged(debts, alice, 10)
    rows = s.lens.debts()
    assert [r.config.vault for r in rows] == [debts.vaults[k].address for k in ("USDC", "WETH", "WBTC")]
    assert [r.price.price for r in rows] == [price(s, k) for k in ("USDC", "WETH", "WBTC")]
    assert [r.borrowIndex for r in rows] == [debts.vaults[k].borrowIndex() for k in ("USDC", "WETH", "WBTC")]
    (scaled,) = s.lens.accountDebts([alice], [10])
    amounts = [risk.to_assets_up(sc, r.borrowIndex) for sc, r in zip(scaled, rows, strict=True)]
    assert amounts == [debt_of(debts, alice, 10, k) for k in ("USDC", "WETH", "WBTC")]
    assert list(scaled) == [s.engine.scaledDebtOf(alice, 10, debts.token(k)) for k in ("USDC", "WETH", "WBTC")]


# ------------------------------------------------------------------------------------------------- keeper


def test_the_keepers_reads_carry_every_debt(debts, system, alice):
    """`read_market` and `read_accounts` on a market with three debt assets: each further debt's vault, decimals,
    minimum, index and price, each account's scaled debts, and the health the snapshot computes from them equal to
    the engine's `accountHealth`."""
    from keeper.chain.reads import read_accounts, read_market
    from keeper.core.snapshot import health_of

    _hedged(debts, alice, 11)
    w3 = system.engine.provider.web3
    lens = w3.eth.contract(address=system.lens.address, abi=system.deployment.record()["abis"]["Lens"])
    market = read_market(lens)
    assert [(d.address, d.vault, d.decimals, d.min_debt) for d in market.other_debts] == [
        (s.address, debts.vaults[k].address, DEC[k], MIN_DEBT[k])
        for k, s in (("WETH", system.weth), ("WBTC", system.wbtc))
    ]
    assert [d.index for d in market.other_debts] == [debts.vaults[k].borrowIndex() for k in ("WETH", "WBTC")]
    (account,) = read_accounts(lens, [(alice.address, 11)], other_debts=len(market.other_debts))
    assert account.other_debts == (0, system.engine.scaledDebtOf(alice, 11, system.wbtc))
    h = system.engine.accountHealth(alice, 11)
    assert health_of(account, market) == risk.Health(*h)


def test_the_keeper_liquidates_each_debt_from_its_own_inventory(debts, system, chain, accounts, alice, bob, tmp_path):
    """The keeper's own code on a market with three debt assets: it reads every debt (Lens.debts/accountDebts),
    approves the engine for each debt token it holds, and when WBTC's rise makes two books unhealthy it repays the
    WBTC debts with `liquidateDebt` from its WBTC and the USDC one with `liquidate`, until both are healthy again;
    never an account that was healthy in the parent block. Checked from the chain's events and views."""
    from test_keeper_e2e import KEEPER_INDEX, _keeper, _mine, _rpc

    s = debts.system
    keeper_account = accounts[KEEPER_INDEX]
    fund(s, keeper_account, "USDC", 1_000_000 * 10**6)
    fund(s, keeper_account, "WBTC", 100 * 10**8)
    open_position(s, alice, 20, {"LINK": 2_000 * 10**18})  # $30,000
    s.engine.borrow(20, 5_000 * 10**6, alice, sender=alice)
    s.engine.borrowAsset(20, s.wbtc, 2 * 10**7, alice, sender=alice)  # 0.2 WBTC, $12,000
    open_position(s, bob, 21, {"WETH": 10 * 10**18})  # $20,000
    s.engine.borrowAsset(21, s.wbtc, 25 * 10**6, bob, sender=bob)  # 0.25 WBTC, $15,000
    keeper = _keeper(s, chain, tmp_path)
    w3 = chain.provider.web3
    engine = w3.eth.contract(address=s.engine.address, abi=keeper.dep.abis["MarginEngine"])

    def health(key: tuple[str, int], block: int) -> int:
        return int(engine.functions.accountHealth(*key).call(block_identifier=block)[5])

    books = [(alice.address, 20), (bob.address, 21)]
    _rpc(w3, "evm_setAutomine", False)
    try:
        _mine(w3)
        keeper.tick()  # discovers the accounts, approves the engine for USDC
        _mine(w3)
        keeper.tick()  # approves it for WETH and WBTC, the further debt assets
        _mine(w3)
        assert s.wbtc.allowance(keeper_account, s.engine) >= 2**255
        s.feeds["WBTC"].setAnswer(120_000 * 10**8, sender=s.admin)  # WBTC doubles
        price_block = _mine(w3)
        assert all(health(k, price_block) < WAD for k in books)
        repaid: dict[str, int] = {}
        for _ in range(10):
            keeper.tick()
            block = _mine(w3)
            for event, asset in ((engine.events.LiquidatedDebt, None), (engine.events.Liquidated, "USDC")):
                for log in event().get_logs(from_block=block, to_block=block):
                    key = (log.args.owner, log.args.subId)
                    assert health(key, block - 1) < WAD, key  # never a healthy account
                    name = asset or ("WBTC" if log.args.debtAsset == s.wbtc.address else log.args.debtAsset)
                    repaid[name] = repaid.get(name, 0) + log.args.repaid
            if all(health(k, block) >= WAD for k in books):
                break
        assert all(health(k, w3.eth.block_number) >= WAD for k in books)
        assert repaid.get("WBTC", 0) > 0  # the further debt was repaid from the keeper's WBTC
    finally:
        _rpc(w3, "evm_setAutomine", True)


# ------------------------------------------------------------------------------------------------- deploy


def test_a_deploy_config_lists_further_debt_assets_and_status_values_them(project, chain, admin, alice, tmp_path):
    """deployments/configs/local-multi.toml deploys, as `ape run deploy` does, a Vault per [[borrow]] entry, seeded,
    listed with its minimum, named in the record; `keeper status` on that record reports an account owing USDC and
    WETH at the engine's health and debt value."""
    import json

    from conftest import ROOT, ck_system
    from test_keeper_status import _config, _status

    cfg = ck_system.load_config(ROOT / "deployments" / "configs" / "local-multi.toml")
    dep = ck_system.deploy_system(project, chain, admin, cfg, "test")
    record = dep.record()
    engine = project.MarginEngine.at(record["contracts"]["MarginEngine"]["address"])
    tokens = {a["symbol"]: a["token"] for a in record["assets"]}
    assert list(engine.debtAssets()) == [record["debt_asset"]["token"], tokens["WETH"], tokens["WBTC"]]
    for entry, (symbol, min_debt, seeded) in zip(
        record["borrow"], (("WETH", 5 * 10**15, 5_000 * 10**18), ("WBTC", 2 * 10**4, 200 * 10**8)), strict=True
    ):
        vault = project.Vault.at(entry["vault"])
        assert (entry["symbol"], vault.asset(), vault.engine()) == (symbol, tokens[symbol], engine.address)
        assert record["contracts"][f"Vault:{symbol}"]["address"] == entry["vault"]
        assert engine.debtConfig(tokens[symbol]).minDebt == min_debt
        assert vault.totalAssets() == seeded
    link, weth = project.MockERC20.at(tokens["LINK"]), project.MockERC20.at(tokens["WETH"])
    link.mint(alice, 2_000 * 10**18, sender=alice)
    link.approve(engine, MAX_UINT, sender=alice)
    engine.deposit(alice, 0, link, 2_000 * 10**18, sender=alice)
    engine.borrow(0, 5_000 * 10**6, alice, sender=alice)
    engine.borrowAsset(0, weth, 3 * 10**18, alice, sender=alice)
    done = _status(_config(record, chain, tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["accounts"]
    h = engine.accountHealth(alice, 0)
    assert abs(row["health"] - h.health / WAD) < 1e-9
    assert abs(row["debt_usd"] - h.debtValue / WAD) < 1e-6
