"""Vault (ERC-4626 lending pool) tests: share math per rounding direction, the donation attack, kinked interest
through the borrow index, the reserve, liquidity limits, bad debt, access control and events.

Every expected number is computed here from the formulas documented on IVault and in OpenZeppelin's ERC-4626
(`shares = assets * (supply + 10**6) / (totalAssets + 1)`), never copied from a run. Views answer at the latest
block's timestamp; `freeze` makes the next transaction run at that same timestamp so no interest accrues between
reading the state and acting on it.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pytest
from ape.exceptions import ContractLogicError
from conftest import MAX_UINT, RAY, WAD, fund, open_position, reverts_with

from keeper.core import risk

YEAR = 365 * 24 * 3600
DAY = 24 * 3600
USDC = 10**6
OFFSET = 10**6  # virtual shares: decimals offset 6
ZERO_ROLE = b"\x00" * 32
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
LENT_OUT = 10_000_000 * USDC  # the lender's deposit in the fixture vault


@dataclass(frozen=True)
class RateModel:
    """Kinked rate model and reserve factor, all WAD."""

    base: int
    slope1: int
    slope2: int
    kink: int
    reserve_factor: int

    def as_args(self) -> tuple[tuple[int, int, int, int], int]:
        return (self.base, self.slope1, self.slope2, self.kink), self.reserve_factor


# The fixture vault's configuration (tests/conftest.py TEST_CONFIG): 0 %, 4 %, 75 %, kink 80 %, reserve 10 %.
MODEL = RateModel(0, 4 * 10**16, 75 * 10**16, 8 * 10**17, 10**17)


# ---------------------------------------------------------------- independent integer math


def div_up(x: int, d: int) -> int:
    return -(-x // d)


def debt_up(scaled: int, index: int) -> int:
    return div_up(scaled * index, RAY)


def kinked_rate(debt: int, cash: int, m: RateModel) -> int:
    """Yearly rate (WAD) at utilisation debt / (debt + cash), rounded down."""
    util = 0 if debt == 0 else debt * WAD // (debt + cash)
    if util <= m.kink:
        return m.base + util * m.slope1 // m.kink
    return m.base + m.slope1 + (util - m.kink) * m.slope2 // (WAD - m.kink)


def accrual(index: int, scaled: int, cash: int, elapsed: int, m: RateModel) -> tuple[int, int, int]:
    """(new index, interest, reserve share) of simple interest over `elapsed` seconds."""
    if elapsed == 0 or scaled == 0:
        return index, 0, 0
    before = debt_up(scaled, index)
    new_index = index + index * (kinked_rate(before, cash, m) * elapsed) // (WAD * YEAR)
    interest = debt_up(scaled, new_index) - before
    return new_index, interest, interest * m.reserve_factor // WAD


def shares_down(assets: int, supply: int, total: int) -> int:
    return assets * (supply + OFFSET) // (total + 1)


def shares_up(assets: int, supply: int, total: int) -> int:
    return div_up(assets * (supply + OFFSET), total + 1)


def assets_down(shares: int, supply: int, total: int) -> int:
    return shares * (total + 1) // (supply + OFFSET)


def assets_up(shares: int, supply: int, total: int) -> int:
    return div_up(shares * (total + 1), supply + OFFSET)


# ---------------------------------------------------------------- chain helpers


@dataclass(frozen=True)
class VaultState:
    index: int
    scaled: int
    idle: int
    reserve: int
    total_assets: int
    supply: int
    timestamp: int


def state(vault: Any, chain: Any) -> VaultState:
    return VaultState(
        index=vault.borrowIndex(),
        scaled=vault.totalScaledDebt(),
        idle=vault.idle(),
        reserve=vault.reserve(),
        total_assets=vault.totalAssets(),
        supply=vault.totalSupply(),
        timestamp=chain.blocks.head.timestamp,
    )


def freeze(chain: Any) -> int:
    """Make the next block reuse the head's timestamp, so nothing accrues before the next transaction."""
    ts = chain.blocks.head.timestamp
    chain.pending_timestamp = ts
    return ts


def block_time(chain: Any, tx: Any) -> int:
    return chain.blocks[tx.block_number].timestamp


def only_event(tx: Any, event: Any) -> Any:
    logs = tx.events.filter(event)
    assert len(logs) == 1, f"expected one {event.name}, got {len(logs)}"
    return logs[0]


def approve_vault(system: Any, who: Any, amount: int, vault: Any | None = None) -> None:
    """Mint `amount` USDC to `who` and approve `vault` (the fixture vault by default) for everything."""
    system.usdc.mint(who, amount, sender=who)
    system.usdc.approve(vault or system.vault, MAX_UINT, sender=who)


def refresh_prices(system: Any, chain: Any, weth_usd: int) -> None:
    """Push fresh answers (after a long time skip every feed is stale) at the head's timestamp."""
    for symbol, usd in (("WETH", weth_usd), ("WBTC", 60_000), ("USDC", 1)):
        freeze(chain)
        system.set_price(symbol, usd)


@pytest.fixture
def priced(system: Any, alice: Any, chain: Any) -> VaultState:
    """The fixture vault after a borrow, 97 days of interest and a full repayment: no debt (so nothing accrues
    any more), a reserve, and a share price that is not a round number."""
    fund(system, alice, "USDC", 2_000_000 * USDC)
    open_position(system, alice, 0, {"WETH": 10_000 * 10**18}, borrow=8_500_000 * USDC)
    chain.pending_timestamp = chain.blocks.head.timestamp + 97 * DAY + 13
    system.engine.repay(alice, 0, MAX_UINT, sender=alice)
    s = state(system.vault, chain)
    assert s.scaled == 0
    assert s.reserve > 0
    assert s.total_assets > LENT_OUT
    return s


@pytest.fixture
def fresh_vault(project: Any, system: Any, admin: Any) -> Any:
    """A new, empty vault over the same USDC, without an engine."""
    model, reserve_factor = MODEL.as_args()
    return admin.deploy(project.Vault, system.usdc, "v", "v", admin, model, reserve_factor)


# ---------------------------------------------------------------- ERC-4626 share math


def test_deposit_and_mint_follow_the_share_formula(system: Any, priced: VaultState, bob: Any) -> None:
    """deposit rounds shares down and mint rounds assets up, both equal to their previews."""
    v = system.vault
    approve_vault(system, bob, 10**15)
    rounded = 0
    for amount in (1, 999_999, 123_456_789_012):
        total, supply = v.totalAssets(), v.totalSupply()
        expected = shares_down(amount, supply, total)
        rounded += amount * (supply + OFFSET) % (total + 1) != 0
        assert v.previewDeposit(amount) == expected
        before = v.balanceOf(bob)
        tx = v.deposit(amount, bob, sender=bob)
        assert tx.return_value == expected
        assert v.balanceOf(bob) - before == expected
        assert v.totalAssets() == total + amount
    for shares in (1, OFFSET + 1, 987_654_321_987_654):
        total, supply = v.totalAssets(), v.totalSupply()
        expected = assets_up(shares, supply, total)
        rounded += shares * (total + 1) % (supply + OFFSET) != 0
        assert v.previewMint(shares) == expected
        cash = system.usdc.balanceOf(bob)
        tx = v.mint(shares, bob, sender=bob)
        assert tx.return_value == expected
        assert cash - system.usdc.balanceOf(bob) == expected
        assert v.totalSupply() == supply + shares
    assert rounded == 6  # every case above actually had to round


def test_withdraw_and_redeem_follow_the_share_formula(system: Any, priced: VaultState, lender: Any) -> None:
    """withdraw rounds shares burned up and redeem rounds assets paid down, both equal to their previews."""
    v, usdc = system.vault, system.usdc
    rounded = 0
    for amount in (1, 777_777, 3_141_592_653_589):
        total, supply = v.totalAssets(), v.totalSupply()
        expected = shares_up(amount, supply, total)
        rounded += amount * (supply + OFFSET) % (total + 1) != 0
        assert v.previewWithdraw(amount) == expected
        shares, cash = v.balanceOf(lender), usdc.balanceOf(lender)
        tx = v.withdraw(amount, lender, lender, sender=lender)
        assert tx.return_value == expected
        assert shares - v.balanceOf(lender) == expected
        assert usdc.balanceOf(lender) - cash == amount
        assert v.idle() == total + priced.reserve - amount
    for shares in (1, OFFSET - 1, 2_718_281_828_459_045):
        total, supply = v.totalAssets(), v.totalSupply()
        expected = assets_down(shares, supply, total)
        rounded += shares * (total + 1) % (supply + OFFSET) != 0
        assert v.previewRedeem(shares) == expected
        cash = usdc.balanceOf(lender)
        tx = v.redeem(shares, lender, lender, sender=lender)
        assert tx.return_value == expected
        assert usdc.balanceOf(lender) - cash == expected
        assert v.totalAssets() == total - expected
    assert rounded == 6
    assert v.previewRedeem(1) == 0  # one share is worth less than one unit: redeeming it pays nothing


def test_round_trips_never_pay_back_more_than_paid_in(system: Any, priced: VaultState, bob: Any) -> None:
    """Without interest, deposit→redeem, mint→redeem and deposit→withdraw(max) return at most what went in, and
    lose at most one unit of rounding dust, which stays with the vault."""
    v, usdc = system.vault, system.usdc
    approve_vault(system, bob, 10**15)
    for amount in (1, 2, 1_000_001, 55_555_555_555):
        start = usdc.balanceOf(bob)
        shares = v.deposit(amount, bob, sender=bob).return_value
        back = v.redeem(shares, bob, bob, sender=bob).return_value
        assert amount - 1 <= back <= amount
        assert usdc.balanceOf(bob) == start - amount + back
    for shares in (1, 3 * OFFSET + 7, 44_444_444_444_444_444):
        paid = v.mint(shares, bob, sender=bob).return_value
        back = v.redeem(shares, bob, bob, sender=bob).return_value
        assert paid - 1 <= back <= paid
    for amount in (3, 9_999_999_999):
        v.deposit(amount, bob, sender=bob)
        most = v.maxWithdraw(bob)
        assert amount - 1 <= most <= amount
        v.withdraw(most, bob, bob, sender=bob)
        assert v.maxWithdraw(bob) <= 1  # what is left is rounding dust
        v.redeem(v.balanceOf(bob), bob, bob, sender=bob)
    # Whatever was lost to rounding was left to the other depositors: the vault never paid out more than it took.
    assert v.totalAssets() >= priced.total_assets


# ---------------------------------------------------------------- donation / inflation attack


def test_first_depositor_donation_cannot_steal_from_the_next_depositor(
    system: Any, fresh_vault: Any, admin: Any, bob: Any, alice: Any
) -> None:
    """The classic inflation attack fails: 1 unit deposited plus a 1M USDC donation neither moves totalAssets
    nor rounds the victim's shares down; the victim redeems their whole deposit, the attacker gains nothing,
    and the admin's skim recovers exactly the donation."""
    v, usdc = fresh_vault, system.usdc
    approve_vault(system, bob, 1 + 1_000_000 * USDC, v)
    approve_vault(system, alice, 1_000 * USDC, v)

    v.deposit(1, bob, sender=bob)
    assert v.balanceOf(bob) == shares_down(1, 0, 0) == OFFSET
    donation = 1_000_000 * USDC
    usdc.transfer(v, donation, sender=bob)
    assert v.totalAssets() == 1
    assert v.idle() == 1
    assert usdc.balanceOf(v) == 1 + donation

    deposit = 1_000 * USDC
    expected_shares = shares_down(deposit, OFFSET, 1)
    assert expected_shares == deposit * OFFSET  # not rounded down at all
    v.deposit(deposit, alice, sender=alice)
    assert v.balanceOf(alice) == expected_shares
    redeemable = assets_down(expected_shares, OFFSET + expected_shares, 1 + deposit)
    assert v.previewRedeem(expected_shares) == redeemable
    assert deposit - 1 <= redeemable <= deposit

    cash = usdc.balanceOf(alice)
    v.redeem(expected_shares, alice, alice, sender=alice)
    assert usdc.balanceOf(alice) - cash == redeemable
    cash = usdc.balanceOf(bob)
    v.redeem(OFFSET, bob, bob, sender=bob)
    attacker_back = usdc.balanceOf(bob) - cash
    assert attacker_back == assets_down(OFFSET, OFFSET, 1 + deposit - redeemable) <= 1  # at most their 1 unit
    assert v.totalSupply() == 0
    left = 1 + deposit - redeemable - attacker_back
    assert v.idle() == left
    assert usdc.balanceOf(v) == donation + left

    tx = v.skim(admin, sender=admin)
    assert only_event(tx, v.Skimmed).amount == donation
    assert usdc.balanceOf(v) == v.idle() == left


def test_skim_moves_only_the_donation_and_only_for_the_admin(
    system: Any, fresh_vault: Any, admin: Any, bob: Any, stranger: Any
) -> None:
    """skim sends exactly the tokens held beyond idle to the admin's chosen receiver; strangers are refused."""
    v, usdc = fresh_vault, system.usdc
    approve_vault(system, bob, 5_000 * USDC, v)
    v.deposit(3_000 * USDC, bob, sender=bob)
    donation = 1_234 * USDC + 5
    usdc.transfer(v, donation, sender=bob)
    with reverts_with(v.AccessControlUnauthorizedAccount, account=stranger.address, neededRole=ZERO_ROLE):
        v.skim(stranger, sender=stranger)

    before = usdc.balanceOf(stranger)
    tx = v.skim(stranger, sender=admin)
    log = only_event(tx, v.Skimmed)
    assert (log.to, log.amount) == (stranger.address, donation)
    assert usdc.balanceOf(stranger) - before == donation
    assert usdc.balanceOf(v) == v.idle() == v.totalAssets() == 3_000 * USDC


# ---------------------------------------------------------------- interest


@pytest.mark.parametrize(
    ("borrow", "util", "rate"),
    [
        pytest.param(1_000_000 * USDC, WAD // 10, WAD // 10 * (4 * WAD // 100) // (8 * WAD // 10), id="below-kink"),
        pytest.param(8_000_000 * USDC, 8 * WAD // 10, 4 * WAD // 100, id="at-kink"),
        pytest.param(
            9_000_000 * USDC,
            9 * WAD // 10,
            4 * WAD // 100 + (WAD // 10) * (75 * WAD // 100) // (2 * WAD // 10),
            id="above-kink",
        ),
    ],
)
def test_utilization_rate_and_accrual(
    system: Any, chain: Any, alice: Any, stranger: Any, borrow: int, util: int, rate: int
) -> None:
    """utilization() and borrowRate() follow the kinked model; accruing grows the index by exactly
    index * rate * dt / YEAR (down), totalAssets by interest minus the reserve share, reserve by that share."""
    v = system.vault
    assert v.rateModel() == (MODEL.as_args()[0], MODEL.reserve_factor)
    assert v.utilization() == 0
    assert v.borrowRate() == MODEL.base
    open_position(system, alice, 0, {"WETH": 10_000 * 10**18}, borrow=borrow)
    s0 = state(v, chain)
    assert s0.index == RAY
    assert s0.scaled == borrow
    assert s0.idle == LENT_OUT - borrow
    assert v.utilization() == util
    assert v.borrowRate() == rate == kinked_rate(borrow, LENT_OUT - borrow, MODEL)

    dt = 30 * DAY + 7
    chain.pending_timestamp = s0.timestamp + dt
    tx = v.accrue(sender=stranger)
    assert block_time(chain, tx) == s0.timestamp + dt
    index = RAY + RAY * (rate * dt) // (WAD * YEAR)
    interest = debt_up(borrow, index) - borrow
    to_reserve = interest * MODEL.reserve_factor // WAD
    assert interest > 0
    assert to_reserve > 0
    log = only_event(tx, v.Accrued)
    assert (log.borrowIndex, log.interest, log.reserveAdded) == (index, interest, to_reserve)
    assert tx.return_value == index
    assert v.borrowIndex() == index
    assert v.totalDebt() == borrow + interest
    assert v.reserve() == s0.reserve + to_reserve
    assert v.totalAssets() == s0.total_assets + interest - to_reserve
    assert v.utilization() == (borrow + interest) * WAD // (borrow + interest + s0.idle)

    # A second period starts from the new, higher utilisation and index.
    s1 = state(v, chain)
    chain.pending_timestamp = s1.timestamp + 11 * DAY
    tx = v.accrue(sender=stranger)
    expected = accrual(s1.index, s1.scaled, s1.idle, 11 * DAY, MODEL)
    log = only_event(tx, v.Accrued)
    assert (log.borrowIndex, log.interest, log.reserveAdded) == expected
    assert v.totalAssets() == s1.total_assets + expected[1] - expected[2]


def test_accrue_without_debt_changes_nothing(system: Any, chain: Any, stranger: Any) -> None:
    """With no borrower, time passes without interest: the index stays at 1 RAY and Accrued reports zeros."""
    v = system.vault
    chain.pending_timestamp = chain.blocks.head.timestamp + YEAR
    tx = v.accrue(sender=stranger)
    log = only_event(tx, v.Accrued)
    assert (log.borrowIndex, log.interest, log.reserveAdded) == (RAY, 0, 0)
    assert v.totalAssets() == LENT_OUT
    assert v.reserve() == 0


def test_share_price_and_index_never_decrease(system: Any, chain: Any, alice: Any, bob: Any, lender: Any) -> None:
    """Across deposits, mints, withdrawals, redemptions, borrows, repayments and time, neither the share price
    ((totalAssets + 1) / (supply + 10**6), what a share redeems for) nor the borrow index ever goes down."""
    v, eng = system.vault, system.engine
    approve_vault(system, bob, 10**13)
    fund(system, alice, "USDC", 10**13)
    last = first = state(v, chain)
    steps = 0

    def check() -> None:
        nonlocal last, steps
        now = state(v, chain)
        assert now.index >= last.index
        assert (now.total_assets + 1) * (last.supply + OFFSET) >= (last.total_assets + 1) * (now.supply + OFFSET)
        last, steps = now, steps + 1

    def wait(seconds: int) -> None:
        chain.pending_timestamp = chain.blocks.head.timestamp + seconds
        chain.mine()

    open_position(system, alice, 0, {"WETH": 10_000 * 10**18}, borrow=7_777_777 * USDC + 1)
    check()
    wait(45 * DAY + 1)
    check()
    v.deposit(123_456_789, bob, sender=bob)
    check()
    v.mint(987_654_321_123, bob, sender=bob)
    check()
    eng.repay(alice, 0, 1_234_567 * USDC + 3, sender=alice)
    check()
    wait(200 * DAY)
    check()
    v.withdraw(99_999_999, bob, bob, sender=bob)
    check()
    v.redeem(3_333_333_333_333_333, lender, lender, sender=lender)
    check()
    refresh_prices(system, chain, weth_usd=2_000)  # the feeds went stale while time passed
    check()
    eng.borrow(0, 1_500_000 * USDC + 9, alice, sender=alice)
    check()
    wait(3 * DAY + 17)
    check()
    eng.repay(alice, 0, MAX_UINT, sender=alice)
    check()
    v.redeem(v.balanceOf(bob), bob, bob, sender=bob)
    check()
    wait(YEAR)
    check()
    assert steps == 14
    assert last.index > RAY
    # Interest was earned, so over the whole run the price went strictly up.
    assert (last.total_assets + 1) * (first.supply + OFFSET) > (first.total_assets + 1) * (last.supply + OFFSET)
    assert last.scaled == 0


# ---------------------------------------------------------------- liquidity limits


def test_withdrawals_are_limited_to_idle_cash(system: Any, chain: Any, alice: Any, bob: Any, lender: Any) -> None:
    """With 99 % lent out, maxWithdraw/maxRedeem are capped by idle cash and asking for more reverts with OZ's
    ERC4626ExceededMax* carrying the cap (the max check runs before the vault's own InsufficientLiquidity,
    which is the ERC-4626 contract: withdraw reverts above maxWithdraw)."""
    v = system.vault
    open_position(system, alice, 0, {"WETH": 10_000 * 10**18}, borrow=9_900_000 * USDC)
    approve_vault(system, bob, 10_000 * USDC)
    v.deposit(1_000 * USDC, bob, sender=bob)

    s = state(v, chain)
    cash = 100_000 * USDC + 1_000 * USDC
    assert s.idle == cash
    assert v.maxWithdraw(lender) == cash
    cap = shares_down(cash, s.supply, s.total_assets)
    assert v.maxRedeem(lender) == cap < v.balanceOf(lender)
    bob_assets = assets_down(v.balanceOf(bob), s.supply, s.total_assets)
    assert v.maxWithdraw(bob) == bob_assets <= 1_000 * USDC  # a small holder is not capped
    assert v.maxRedeem(bob) == v.balanceOf(bob)

    freeze(chain)
    with reverts_with(v.ERC4626ExceededMaxWithdraw, owner=lender.address, assets=cash + 1, max=cash):
        v.withdraw(cash + 1, lender, lender, sender=lender)
    freeze(chain)
    with reverts_with(v.ERC4626ExceededMaxRedeem, owner=lender.address, shares=cap + 1, max=cap):
        v.redeem(cap + 1, lender, lender, sender=lender)

    freeze(chain)
    paid = v.redeem(cap, lender, lender, sender=lender).return_value
    assert paid == assets_down(cap, s.supply, s.total_assets) <= cash
    freeze(chain)
    v.withdraw(v.idle(), lender, lender, sender=lender)
    assert v.idle() == 0
    assert v.maxWithdraw(bob) == 0
    assert v.maxRedeem(bob) == 0
    freeze(chain)
    with reverts_with(v.ERC4626ExceededMaxWithdraw, owner=bob.address, assets=1, max=0):
        v.withdraw(1, bob, bob, sender=bob)

    # A repayment brings cash back and bob can leave in full.
    fund(system, alice, "USDC", 500_000 * USDC)
    system.engine.repay(alice, 0, 500_000 * USDC, sender=alice)
    assert v.idle() == 500_000 * USDC
    assert v.maxRedeem(bob) == v.balanceOf(bob)
    assert v.maxWithdraw(bob) == v.previewRedeem(v.balanceOf(bob)) >= 1_000 * USDC - 1


def test_lend_beyond_idle_cash_reverts(system: Any, alice: Any, bob: Any, lender: Any) -> None:
    """The vault lends only idle cash: a borrow of one unit more than idle reverts with
    InsufficientLiquidity(requested, idle) from the vault, and borrowing exactly idle empties it."""
    open_position(system, alice, 0, {"WETH": 10_000 * 10**18}, borrow=6_000_000 * USDC)
    open_position(system, bob, 0, {"WETH": 10_000 * 10**18})
    cash = system.vault.idle()
    assert cash == LENT_OUT - 6_000_000 * USDC
    with reverts_with(system.vault.InsufficientLiquidity, requested=cash + 1, idle=cash):
        system.engine.borrow(0, cash + 1, bob, sender=bob)
    system.engine.borrow(0, cash, bob, sender=bob)
    assert system.vault.idle() == 0
    assert system.vault.utilization() == WAD
    assert system.vault.maxWithdraw(lender) == 0
    assert system.vault.maxRedeem(lender) == 0


# ---------------------------------------------------------------- reserve and bad debt


def grow_reserve(system: Any, chain: Any, bob: Any, weth_usd: int) -> None:
    """Bob borrows 9.5M of the 10M against WBTC (utilisation 95 %, ~60 % a year); a year later the reserve holds
    ~570k USDC, more than the ~500k idle. Prices are refreshed and interest accrued at the frozen head time."""
    open_position(system, bob, 0, {"WBTC": 500 * 10**8}, borrow=9_500_000 * USDC)
    chain.pending_timestamp = chain.blocks.head.timestamp + YEAR
    chain.mine()
    refresh_prices(system, chain, weth_usd)
    freeze(chain)
    system.vault.accrue(sender=system.admin)


def liquidate_underwater(system: Any, chain: Any, alice: Any, liquidator: Any) -> tuple[Any, VaultState, int, int]:
    """Liquidates all of alice's 1 WETH (now worth $1000) at the frozen time; returns the tx, the vault state just
    before, and alice's scaled debt and debt just before."""
    eng, v = system.engine, system.vault
    scaled, debt = eng.position(alice, 0).scaledDebt, eng.debtOf(alice, 0)
    before = state(v, chain)
    freeze(chain)
    tx = eng.liquidate(alice, 0, system.weth, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    assert block_time(chain, tx) == before.timestamp
    assert not tx.events.filter(v.Accrued)  # frozen time: the index used is `before.index`
    return tx, before, scaled, debt


def expected_bad_debt(debt: int, scaled: int, index: int) -> tuple[int, int, int, int, int]:
    """(repaid, scaled repaid, bad debt, scaled written off, seized) for liquidating 1 WETH worth $1000 (lt 85 %,
    max discount 10 %) from a $`debt` account priced with USDC at $1: insolvent, so the debt is first written off
    to the cover value $1000 / 1.005 and the rest repaid at the health-neutral discount. Figures from keeper.risk,
    the engine's integer mirror (checked against it to the wei by tests/test_risk_differential.py); this file
    checks what the vault books of them."""
    weth = risk.AssetRisk(decimals=18, ltv=80 * WAD // 100, lt=85 * WAD // 100, max_discount=WAD // 10)
    params = risk.RiskParams(5 * WAD // 1000, 95 * WAD // 100, 100 * WAD, 10 * USDC)
    assert debt == risk.to_assets_up(scaled, index)
    s = risk.liquidation({"WETH": 10**18}, {"WETH": 1_000 * WAD}, {"WETH": weth}, scaled, index, WAD, 6, "WETH",
                         MAX_UINT, params)  # fmt: skip
    assert s.scaled_written_off > 0  # the account is insolvent
    return s.quote.repaid, s.scaled_repaid, s.quote.bad_debt, s.scaled_written_off, s.quote.seized


def check_write_off(
    system: Any, alice: Any, tx: Any, before: VaultState, scaled: int, debt: int
) -> tuple[int, int, int]:
    """Asserts the engine's and the vault's events and the vault's books after the write-off."""
    v, eng = system.vault, system.engine
    repaid, scaled_repaid, bad, scaled_off, seized = expected_bad_debt(debt, scaled, before.index)
    covered = min(bad, before.reserve)
    assert bad > 0
    noted = only_event(tx, v.RepaymentNoted)
    assert (noted.assets, noted.scaled) == (repaid, scaled_repaid)
    engine_log = only_event(tx, eng.BadDebtRealized)
    assert (engine_log.owner, engine_log.subId, engine_log.assets) == (alice.address, 0, bad)
    vault_log = only_event(tx, v.BadDebtRealized)
    assert (vault_log.assets, vault_log.coveredByReserve, vault_log.socialized) == (bad, covered, bad - covered)
    assert eng.position(alice, 0).scaledDebt == scaled - scaled_repaid - scaled_off
    assert eng.collateralOf(alice, 0, system.weth) == 10**18 - seized
    left = before.scaled - scaled_repaid - scaled_off
    assert v.totalScaledDebt() == left
    assert v.idle() == before.idle + repaid
    assert v.reserve() == before.reserve - covered
    assert v.totalAssets() == before.idle + repaid + debt_up(left, before.index) - (before.reserve - covered)
    return repaid, bad, covered


def test_bad_debt_is_covered_by_a_large_reserve(
    system: Any, chain: Any, alice: Any, bob: Any, liquidator: Any, lender: Any
) -> None:
    """An account left with debt and no collateral is written off from the reserve when it is large enough:
    depositors' totalAssets and share price stay put (up to rounding dust) and only the reserve shrinks."""
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1_500 * USDC)
    fund(system, liquidator, "USDC", 10_000 * USDC)
    grow_reserve(system, chain, bob, weth_usd=1_000)
    lender_claim = system.vault.convertToAssets(system.vault.balanceOf(lender))

    tx, before, scaled, debt = liquidate_underwater(system, chain, alice, liquidator)
    _, bad, covered = check_write_off(system, alice, tx, before, scaled, debt)
    assert before.reserve > bad
    assert covered == bad
    assert abs(system.vault.totalAssets() - before.total_assets) <= 2
    assert abs(system.vault.convertToAssets(system.vault.balanceOf(lender)) - lender_claim) <= 2


def test_bad_debt_beyond_the_reserve_is_socialised(
    system: Any, chain: Any, alice: Any, liquidator: Any, lender: Any
) -> None:
    """With a reserve smaller than the bad debt, the reserve is emptied and the rest lowers totalAssets (the
    depositors' share price) by the socialised amount, up to rounding dust in favour of the vault's books."""
    v = system.vault
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1_500 * USDC)
    fund(system, liquidator, "USDC", 10_000 * USDC)
    chain.pending_timestamp = chain.blocks.head.timestamp + YEAR
    chain.mine()
    refresh_prices(system, chain, weth_usd=1_000)
    freeze(chain)
    v.accrue(sender=lender)
    lender_shares = v.balanceOf(lender)

    tx, before, scaled, debt = liquidate_underwater(system, chain, alice, liquidator)
    assert scaled == before.scaled  # alice is the only borrower
    _, bad, covered = check_write_off(system, alice, tx, before, scaled, debt)
    assert system.engine.debtOf(alice, 0) == 0  # what the write-off left was repaid in full
    socialised = bad - covered
    assert 0 < covered == before.reserve < bad
    assert v.reserve() == 0
    drop = before.total_assets - v.totalAssets()
    assert 0 <= socialised - drop <= 2
    assert v.totalSupply() == before.supply == lender_shares
    assert v.convertToAssets(lender_shares) == assets_down(lender_shares, before.supply, before.total_assets - drop)


def test_withdraw_reserve(system: Any, chain: Any, admin: Any, bob: Any, stranger: Any) -> None:
    """withdrawReserve is admin only, bounded by the reserve (ReserveTooSmall) and by idle cash
    (InsufficientLiquidity), and moves reserve and idle down together, leaving totalAssets unchanged."""
    v, usdc = system.vault, system.usdc
    grow_reserve(system, chain, bob, weth_usd=2_000)
    s = state(v, chain)
    assert s.reserve > s.idle > 0

    freeze(chain)
    with reverts_with(v.AccessControlUnauthorizedAccount, account=stranger.address, neededRole=ZERO_ROLE):
        v.withdrawReserve(1, stranger, sender=stranger)
    freeze(chain)
    with reverts_with(v.ReserveTooSmall, requested=s.reserve + 1, reserve=s.reserve):
        v.withdrawReserve(s.reserve + 1, admin, sender=admin)
    freeze(chain)
    with reverts_with(v.InsufficientLiquidity, requested=s.reserve, idle=s.idle):
        v.withdrawReserve(s.reserve, admin, sender=admin)

    part = 123_456 * USDC + 789
    cash = usdc.balanceOf(stranger)
    freeze(chain)
    tx = v.withdrawReserve(part, stranger, sender=admin)
    log = only_event(tx, v.ReserveWithdrawn)
    assert (log.to, log.assets) == (stranger.address, part)
    assert usdc.balanceOf(stranger) - cash == part
    assert v.reserve() == s.reserve - part
    assert v.idle() == s.idle - part
    assert v.totalAssets() == s.total_assets


# ---------------------------------------------------------------- access control and configuration


@pytest.mark.parametrize("call", ["lend", "noteRepayment", "realizeBadDebt"])
def test_engine_entry_points_refuse_anyone_else(system: Any, admin: Any, stranger: Any, call: str) -> None:
    """lend, noteRepayment and realizeBadDebt revert with NotEngine(caller) for anyone but the engine, admin too."""
    v = system.vault
    args: dict[str, tuple[Any, ...]] = {
        "lend": (1, 1, stranger),
        "noteRepayment": (1, 1),
        "realizeBadDebt": (1,),
    }
    for who in (stranger, admin):
        with reverts_with(v.NotEngine, caller=who.address):
            getattr(v, call)(*args[call], sender=who)


def test_engine_is_set_once(system: Any, fresh_vault: Any, admin: Any) -> None:
    """setEngine refuses address(0), emits EngineSet once, then EngineAlreadySet for good."""
    assert fresh_vault.engine() == ZERO_ADDRESS
    with reverts_with(fresh_vault.InvalidConfig):
        fresh_vault.setEngine(ZERO_ADDRESS, sender=admin)
    tx = fresh_vault.setEngine(system.engine, sender=admin)
    assert only_event(tx, fresh_vault.EngineSet).engine == system.engine.address
    assert fresh_vault.engine() == system.engine.address
    with reverts_with(fresh_vault.EngineAlreadySet):
        fresh_vault.setEngine(admin, sender=admin)
    with reverts_with(system.vault.EngineAlreadySet):
        system.vault.setEngine(admin, sender=admin)
    assert system.vault.engine() == system.engine.address


@pytest.mark.parametrize("call", ["setEngine", "setRateModel", "withdrawReserve", "skim"])
def test_admin_functions_refuse_strangers(system: Any, fresh_vault: Any, stranger: Any, call: str) -> None:
    """Governance calls revert with AccessControlUnauthorizedAccount(caller, DEFAULT_ADMIN_ROLE)."""
    args: dict[str, tuple[Any, ...]] = {
        "setEngine": (stranger,),
        "setRateModel": MODEL.as_args(),
        "withdrawReserve": (0, stranger),
        "skim": (stranger,),
    }
    for v in (system.vault, fresh_vault):
        with reverts_with(v.AccessControlUnauthorizedAccount, account=stranger.address, neededRole=ZERO_ROLE):
            getattr(v, call)(*args[call], sender=stranger)
    assert fresh_vault.engine() == ZERO_ADDRESS


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(RateModel(0, 4 * 10**16, 75 * 10**16, 0, 10**17), id="kink-zero"),
        pytest.param(RateModel(0, 4 * 10**16, 75 * 10**16, WAD, 10**17), id="kink-one"),
        pytest.param(RateModel(0, 4 * 10**16, 75 * 10**16, 3 * WAD, 10**17), id="kink-above-one"),
        pytest.param(RateModel(0, 4 * 10**16, 75 * 10**16, 8 * 10**17, WAD // 2 + 1), id="reserve-factor"),
        pytest.param(RateModel(WAD, WAD, 8 * WAD + 1, 8 * 10**17, 10**17), id="rate-above-1000pct"),
    ],
)
def test_set_rate_model_rejects_invalid_configs(system: Any, admin: Any, model: RateModel) -> None:
    """kink outside (0, 1), a reserve factor above 50 % or a top rate above 1,000 % is InvalidConfig."""
    with reverts_with(system.vault.InvalidConfig):
        system.vault.setRateModel(*model.as_args(), sender=admin)
    assert system.vault.rateModel() == (MODEL.as_args()[0], MODEL.reserve_factor)


def test_set_rate_model_accrues_at_the_old_rate_then_switches(
    system: Any, chain: Any, admin: Any, alice: Any, stranger: Any
) -> None:
    """setRateModel first accrues with the old model, emits RateModelSet with the new values, and the next
    accrual uses the new slopes and reserve factor; the boundary values (kink just below 1, reserve factor 50 %,
    top rate exactly 1,000 %) are accepted."""
    v = system.vault
    open_position(system, alice, 0, {"WETH": 10_000 * 10**18}, borrow=6_000_000 * USDC)
    s0 = state(v, chain)
    new = RateModel(10**16, 5 * 10**16, 10**18, 9 * 10**17, 2 * 10**17)
    chain.pending_timestamp = s0.timestamp + 50 * DAY
    tx = v.setRateModel(*new.as_args(), sender=admin)
    accrued = only_event(tx, v.Accrued)
    assert (accrued.borrowIndex, accrued.interest, accrued.reserveAdded) == accrual(
        s0.index, s0.scaled, s0.idle, 50 * DAY, MODEL
    )
    log = only_event(tx, v.RateModelSet)
    assert (log.baseRate, log.slope1, log.slope2, log.kink, log.reserveFactor) == (
        new.base,
        new.slope1,
        new.slope2,
        new.kink,
        new.reserve_factor,
    )
    assert v.rateModel() == (new.as_args()[0], new.reserve_factor)
    s1 = state(v, chain)
    assert v.borrowRate() == kinked_rate(debt_up(s1.scaled, s1.index), s1.idle, new)

    chain.pending_timestamp = s1.timestamp + 20 * DAY
    tx = v.accrue(sender=stranger)
    accrued = only_event(tx, v.Accrued)
    assert (accrued.borrowIndex, accrued.interest, accrued.reserveAdded) == accrual(
        s1.index, s1.scaled, s1.idle, 20 * DAY, new
    )

    edge = RateModel(2 * WAD, 3 * WAD, 5 * WAD, WAD - 1, WAD // 2)
    tx = v.setRateModel(*edge.as_args(), sender=admin)
    assert only_event(tx, v.RateModelSet).kink == WAD - 1
    assert v.rateModel() == (edge.as_args()[0], edge.reserve_factor)


# ---------------------------------------------------------------- engine-facing events


def test_lent_and_repayment_noted_events(system: Any, chain: Any, priced: VaultState, alice: Any) -> None:
    """A borrow emits Lent(receiver, assets, assets*RAY/index up); a partial repayment RepaymentNoted(assets,
    assets*RAY/index down); a full repayment RepaymentNoted(debt, all remaining scaled debt)."""
    v, eng = system.vault, system.engine
    index = priced.index
    assert index > RAY
    refresh_prices(system, chain, weth_usd=2_000)
    borrow = 2_345_678 * USDC + 1
    freeze(chain)
    tx = eng.borrow(0, borrow, alice, sender=alice)
    lent = only_event(tx, v.Lent)
    scaled = div_up(borrow * RAY, index)
    assert (lent.receiver, lent.assets, lent.scaled) == (alice.address, borrow, scaled)
    assert v.totalScaledDebt() == scaled
    assert v.idle() == priced.idle - borrow

    s = state(v, chain)
    chain.pending_timestamp = s.timestamp + 40 * DAY
    part = 1_000_000 * USDC + 7
    tx = eng.repay(alice, 0, part, sender=alice)
    new_index = accrual(s.index, s.scaled, s.idle, 40 * DAY, MODEL)[0]
    assert only_event(tx, v.Accrued).borrowIndex == new_index
    noted = only_event(tx, v.RepaymentNoted)
    assert (noted.assets, noted.scaled) == (part, part * RAY // new_index)
    assert v.idle() == s.idle + part

    remaining = scaled - part * RAY // new_index
    freeze(chain)
    tx = eng.repay(alice, 0, MAX_UINT, sender=alice)
    noted = only_event(tx, v.RepaymentNoted)
    assert (noted.assets, noted.scaled) == (debt_up(remaining, new_index), remaining)
    assert v.totalScaledDebt() == 0
    assert v.totalDebt() == 0


# ---------------------------------------------------------------- robustness


def test_huge_deposit_is_never_booked_as_less_cash(system: Any, bob: Any, lender: Any) -> None:
    """A deposit too large for the 128-bit idle counter must be refused or booked in full: it may never mint
    shares for assets the books do not hold, which would dilute every other depositor to nothing."""
    v, usdc = system.vault, system.usdc
    amount = 2**128
    approve_vault(system, bob, amount)
    claim = v.convertToAssets(v.balanceOf(lender))
    assert claim == LENT_OUT
    with suppress(ContractLogicError):  # refusing it is a correct outcome
        v.deposit(amount, bob, sender=bob)
    assert usdc.balanceOf(v) == v.idle()
    assert v.convertToAssets(v.balanceOf(lender)) >= claim - 1
