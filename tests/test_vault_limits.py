"""The Vault's limits (issue 12, item 7, parts 3 and 4): maxDeposit/maxMint promise exactly what deposit/mint
accept, and the borrow index at the maximum rate over decades, on the fixture system and on fresh vaults filled to
the documented bound. Accruals are compared to the wei with the keeper's mirror (`keeper/core/risk.py`), read from the
vault's raw storage; the mirror's ceilings are also checked against closed forms.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import MAX_UINT, RAY, WAD, System
from debt_tokens import (
    DAY,
    FLAT_MAX_RATE,
    MAX_BOOKED,
    MAX_INDEX,
    OFFSET,
    USDC,
    YEAR,
    assert_reverted,
    caught,
    freeze,
    refresh_prices,
)

from keeper.core import risk

# ---------------------------------------------------------------- maxDeposit / maxMint (item 3)


@pytest.mark.parametrize("with_debt", [False, True], ids=["idle-only", "with-debt"])
def test_max_deposit_and_max_mint_are_exactly_what_is_accepted(
    system: System, chain: Any, alice: Any, bob: Any, with_debt: bool
) -> None:
    """maxDeposit and maxMint promise exactly what deposit and mint accept: depositing maxDeposit (minting maxMint)
    succeeds and fills the books to the documented bound, and one unit more is refused with OpenZeppelin's
    ERC4626ExceededMaxDeposit / ERC4626ExceededMaxMint carrying the limit."""
    v = system.vault
    if with_debt:
        system.tokens["WETH"].mint(alice, 10_000 * WAD, sender=alice)
        system.tokens["WETH"].approve(system.engine, MAX_UINT, sender=alice)
        system.engine.deposit(alice, 0, system.tokens["WETH"], 10_000 * WAD, sender=alice)
        system.engine.borrow(0, 7_000_000 * USDC, alice, sender=alice)
        chain.pending_timestamp = chain.blocks.head.timestamp + 100 * DAY
        chain.mine()  # interest pending: maxDeposit must count it
    system.usdc.mint(bob, MAX_UINT - system.usdc.totalSupply(), sender=bob)
    system.usdc.approve(v, MAX_UINT, sender=bob)

    snap = chain.snapshot()
    freeze(chain)
    most = v.maxDeposit(bob)
    assert 0 < most < MAX_BOOKED
    assert_reverted(
        caught(lambda: v.deposit(most + 1, bob, sender=bob)),
        v.ERC4626ExceededMaxDeposit,
        receiver=bob.address,
        assets=most + 1,
        max=most,
    )
    freeze(chain)
    v.deposit(most, bob, sender=bob)
    assert v.idle() + v.totalDebt() == MAX_BOOKED
    assert v.maxDeposit(bob) == 0
    assert v.maxMint(bob) == 0
    assert_reverted(
        caught(lambda: v.deposit(1, bob, sender=bob)),
        v.ERC4626ExceededMaxDeposit,
        receiver=bob.address,
        assets=1,
        max=0,
    )
    chain.restore(snap)

    freeze(chain)
    shares, room = v.maxMint(bob), v.maxDeposit(bob)
    assert v.previewMint(shares) <= room < v.previewMint(shares + 1)  # the largest mint the room allows
    assert_reverted(
        caught(lambda: v.mint(shares + 1, bob, sender=bob)),
        v.ERC4626ExceededMaxMint,
        receiver=bob.address,
        shares=shares + 1,
        max=shares,
    )
    freeze(chain)
    paid = v.mint(shares, bob, sender=bob).return_value
    assert v.idle() + v.totalDebt() == MAX_BOOKED - (room - paid)
    assert v.maxDeposit(bob) == room - paid


# ---------------------------------------------------------------- the borrow index at the maximum rate (item 4)


def stored_accrual(chain: Any, vault: Any) -> risk.StoredAccrual:
    word = chain.provider.web3.eth.get_storage_at(vault.address, risk.VAULT_ACCRUAL_SLOT)
    return risk.StoredAccrual.unpack(int.from_bytes(word, "big"))


def mirrored(chain: Any, vault: Any, now: int) -> risk.Accrual:
    """The keeper's mirror of the vault's pending accrual at `now`, from raw stored state."""
    stored = stored_accrual(chain, vault)
    (base, s1, s2, kink), rf = vault.rateModel()
    model = risk.RateModel(base, s1, s2, kink)
    return risk.pending(stored.index, now - stored.last_accrual, vault.totalScaledDebt(), vault.idle(), model, rf)


def test_thirty_years_at_the_maximum_rate_keep_repay_redeem_and_liquidation_working(
    system: System, chain: Any, admin: Any, alice: Any, bob: Any, liquidator: Any, lender: Any
) -> None:
    """At the largest rate the vault allows (1,000 %/yr), with interest accrued every quarter for eight years and
    once more twenty-two years later, the index compounds to its documented ceiling (2**128 - 1) in about five
    years and stays there. Every accrual
    equals the keeper's mirror to the wei; afterwards a liquidation (with bad debt), a full repayment and the
    lender's full redemption all work. (Before the fix the 128-bit index overflowed in year five and every accrual,
    hence every repay, liquidation and redemption, reverted for good.)"""
    v, eng = system.vault, system.engine
    for who, sub in ((alice, 0), (bob, 0)):
        system.tokens["WETH"].mint(who, 10 * WAD, sender=who)
        system.tokens["WETH"].approve(eng, MAX_UINT, sender=who)
        eng.deposit(who, sub, system.tokens["WETH"], 10 * WAD, sender=who)
        eng.borrow(sub, 1_000 * USDC, who, sender=who)
    v.setRateModel(*FLAT_MAX_RATE, sender=admin)
    last = v.borrowIndex()
    # Every quarter for eight years (the ceiling comes in the sixth), then once after twenty-two more.
    for step in [YEAR // 4] * 32 + [22 * YEAR]:
        now = chain.blocks.head.timestamp + step
        chain.pending_timestamp = now
        want = mirrored(chain, v, now)
        v.accrue(sender=lender)
        stored = stored_accrual(chain, v)
        assert stored.index == want.index
        assert last <= stored.index <= MAX_INDEX
        last = stored.index
    assert last == MAX_INDEX
    assert v.totalDebt() == -(-v.totalScaledDebt() * MAX_INDEX // RAY)  # rounded up
    assert v.idle() + v.totalDebt() < MAX_BOOKED

    refresh_prices(system, chain, 2_000)
    freeze(chain)
    bad = eng.debtOf(bob, 0)
    system.usdc.mint(liquidator, 10**9 * USDC, sender=liquidator)
    system.usdc.approve(eng, MAX_UINT, sender=liquidator)
    tx = eng.liquidate(bob, 0, system.tokens["WETH"], MAX_UINT, 0, liquidator, b"", sender=liquidator)
    assert eng.debtOf(bob, 0) == 0
    assert tx.events.filter(v.BadDebtRealized)[0].assets > bad // 2

    owed = eng.debtOf(alice, 0)
    assert owed == -(-eng.position(alice, 0).scaledDebt * MAX_INDEX // RAY)
    system.usdc.mint(alice, owed, sender=alice)
    system.usdc.approve(eng, MAX_UINT, sender=alice)
    freeze(chain)
    eng.repay(alice, 0, MAX_UINT, sender=alice)
    assert eng.debtOf(alice, 0) == 0
    assert v.totalScaledDebt() == 0

    shares = v.balanceOf(lender)
    assert v.maxRedeem(lender) == shares
    cash = system.usdc.balanceOf(lender)
    freeze(chain)
    paid = v.redeem(shares, lender, lender, sender=lender).return_value
    assert system.usdc.balanceOf(lender) - cash == paid > owed // 2
    assert v.totalSupply() == 0
    assert v.idle() >= v.reserve()


@pytest.mark.parametrize("filled", [1, 2], ids=["full-books", "half-full-books"])
def test_books_at_their_limit_keep_accruing_repaying_and_redeeming(
    project: Any, system: System, chain: Any, admin: Any, bob: Any, stranger: Any, filled: int
) -> None:
    """A fresh vault takes a deposit of the documented bound (2**127 units), or half of it, and lends all of it at
    1,000 %/yr. Over fifty years of accruals (yearly, then once after 45 years) the books never pass the bound:
    interest accrues until idle + debt reach it, then stops (full books: at once); every accrual equals the
    keeper's mirror to the wei. Then the whole debt is repaid and the lender redeems everything. (Before the fix
    the grown debt overflowed the 128-bit index or the idle counter, so the accruals or the repayment reverted for
    good.) The engine here is an account, so the vault's books are driven directly at sizes no collateral could
    back."""
    usdc = system.usdc
    model, rf = FLAT_MAX_RATE
    v = admin.deploy(project.Vault, usdc, "max", "max", admin, model, rf)
    v.setEngine(stranger, sender=admin)
    deposit = MAX_BOOKED // filled
    usdc.mint(bob, deposit, sender=bob)
    usdc.approve(v, MAX_UINT, sender=bob)
    freeze(chain)
    v.deposit(deposit, bob, sender=bob)

    freeze(chain)
    scaled = -(-deposit * RAY // v.borrowIndex())  # what the engine books for a borrow: rounded up
    v.lend(deposit, scaled, stranger, sender=stranger)
    for step in [YEAR] * 5 + [45 * YEAR]:
        now = chain.blocks.head.timestamp + step
        chain.pending_timestamp = now
        want = mirrored(chain, v, now)
        v.accrue(sender=bob)
        assert stored_accrual(chain, v).index == want.index
        assert v.idle() + v.totalDebt() <= MAX_BOOKED
    debt = v.totalDebt()
    assert v.idle() == 0
    assert debt == MAX_BOOKED  # full books: no interest at all; half-full: the debt doubled, then stopped
    assert v.borrowIndex() == filled * RAY

    usdc.mint(stranger, debt, sender=stranger)
    freeze(chain)
    usdc.transfer(v, debt, sender=stranger)  # the engine's order: tokens first, then the booking
    freeze(chain)
    v.noteRepayment(debt, scaled, sender=stranger)
    assert v.totalScaledDebt() == 0
    assert v.totalDebt() == 0
    shares, total = v.balanceOf(bob), v.totalAssets()
    assert total == debt - v.reserve()
    assert v.maxRedeem(bob) == shares == v.totalSupply()
    freeze(chain)
    paid = v.redeem(shares, bob, bob, sender=bob).return_value
    assert paid == shares * (total + 1) // (shares + OFFSET)  # OpenZeppelin's ERC-4626 with 10**6 virtual shares
    assert total - paid <= 1
    assert usdc.balanceOf(v) == v.idle() == v.reserve() + total - paid


# ---------------------------------------------------------------- the mirror's ceilings, closed forms


def test_mirror_saturates_the_index_at_its_ceiling() -> None:
    """risk.pending stops the index at 2**128 - 1: one year at 1,000 % from just below it."""
    flat = risk.RateModel(10 * WAD, 0, 0, 8 * 10**17)
    start = MAX_INDEX // 3
    acc = risk.pending(start, YEAR, 10**6, 0, flat, 0)
    assert acc.index == MAX_INDEX  # 11 * start would be above it
    assert acc.interest == -(-(10**6) * MAX_INDEX // RAY) - (-(-(10**6) * start // RAY))


def test_mirror_stops_interest_when_the_books_are_full() -> None:
    """risk.pending stops the index where idle + debt reach 2**127: with 2**125 idle and 2**125 scaled at index 1,
    the debt may grow to 3 * 2**125 (index 3), whatever the time elapsed; with full books it cannot grow at all."""
    flat = risk.RateModel(10 * WAD, 0, 0, 8 * 10**17)
    acc = risk.pending(RAY, 50 * YEAR, 2**125, 2**125, flat, 0)
    assert acc.index == 3 * RAY
    assert acc.interest == 2 * 2**125
    assert risk.pending(RAY, 50 * YEAR, 2**126, 2**126, flat, 10**17) == risk.Accrual(RAY, 0, 0)
    short = risk.pending(RAY, DAY, 2**125, 2**125, flat, 0)
    assert short.index == RAY + RAY * 10 * DAY // YEAR  # below the ceiling, plain simple interest
