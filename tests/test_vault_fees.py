"""The Vault with a debt asset whose transfer fee can be switched on at any time (issue 12, item 7, part 2).

`SwitchableFeeToken` burns `amount * bps / 10_000` of every transfer; the expected figures come from that closed
form and from OpenZeppelin's documented ERC-4626 conversion, never from the Vault's own code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from conftest import MAX_UINT, WAD, System
from debt_tokens import (
    DAY,
    OFFSET,
    USDC,
    assert_reverted,
    books,
    caught,
    claim,
    deploy_over,
    error_name,
    freeze,
    refresh_prices,
)

# ---------------------------------------------------------------- fee-on-transfer token (item 2)


@dataclass
class Feed:
    system: System
    token: Any

    def fee(self, amount: int) -> int:
        """The token's closed form: `amount * bps / 10_000` is burnt, rounded down."""
        return amount * self.token.feeBps() // 10_000


# Unique in tests/: ape's isolation keys fixtures by name (see test_vault_hooks.py).
@pytest.fixture(scope="module")
def fee_market(
    project: Any, chain: Any, admin: Any, lender: Any, alice: Any, bob: Any, liquidator: Any, system: System
) -> Feed:
    """A system over SwitchableFeeToken (fee off at deployment) with the lender's 10M deposited. (Session fixtures it
    does not use are requested so they come first: ape isolates scopes in order.)"""
    token = admin.deploy(project.SwitchableFeeToken, 6, 0)
    s = deploy_over(project, chain, admin, token, "fee")
    token.mint(lender, 10_000_000 * USDC, sender=lender)
    token.approve(s.vault, MAX_UINT, sender=lender)
    s.vault.deposit(10_000_000 * USDC, lender, sender=lender)
    return Feed(s, token)


def fund(f: Feed, who: Any, amount: int) -> None:
    f.token.mint(who, amount, sender=who)
    f.token.approve(f.system.vault, MAX_UINT, sender=who)
    f.token.approve(f.system.engine, MAX_UINT, sender=who)


def borrow_against_weth(s: System, who: Any, sub: int, weth: int, amount: int) -> None:
    s.weth.mint(who, weth, sender=who)
    s.weth.approve(s.engine, MAX_UINT, sender=who)
    s.engine.deposit(who, sub, s.weth, weth, sender=who)
    s.engine.borrow(sub, amount, who, sender=who)


def test_fee_on_deposit_and_mint_is_refused(fee_market: Feed, chain: Any, bob: Any, lender: Any) -> None:
    """With a 1 % fee switched on after deployment, deposit and mint would deliver 1 % less than they book:
    ReceivedLess(asset, expected, received) with the token's own arithmetic, and nothing is booked or minted."""
    f, v = fee_market, fee_market.system.vault
    fund(f, bob, 10_000 * USDC)
    f.token.setFeeBps(100, sender=bob)
    before, lender_claim = books(f.system), claim(v, lender)
    amount = 1_000 * USDC + 1
    exc = caught(lambda: v.deposit(amount, bob, sender=bob))
    assert v.idle() <= f.token.balanceOf(v), "the vault booked more than it received"
    assert_reverted(
        exc,
        v.ReceivedLess,
        asset=f.token.address,
        expected=amount,
        received=amount - f.fee(amount),
    )
    shares = v.previewDeposit(amount)
    cost = v.previewMint(shares)
    assert_reverted(
        caught(lambda: v.mint(shares, bob, sender=bob)),
        v.ReceivedLess,
        asset=f.token.address,
        expected=cost,
        received=cost - f.fee(cost),
    )
    assert books(f.system) == before
    assert claim(v, lender) == lender_claim
    assert v.balanceOf(bob) == 0

    f.token.setFeeBps(0, sender=bob)  # switched off again: deposits work as before
    v.deposit(amount, bob, sender=bob)
    assert v.idle() == before[0] + amount == f.token.balanceOf(v)


def test_fee_on_repay_is_refused(fee_market: Feed, chain: Any, alice: Any, bob: Any) -> None:
    """engine.repay measures what reaches the vault: with the fee on, a partial or a full repayment reverts
    ReceivedLess(asset, repaid, received) and the debt and the vault's books stay as they were."""
    f, s = fee_market, fee_market.system
    borrow_against_weth(s, alice, 0, 10 * WAD, 5_000 * USDC)
    fund(f, bob, 10_000 * USDC)
    f.token.setFeeBps(30, sender=bob)
    debt, before = s.engine.debtOf(alice, 0), books(s)
    part = 1_234 * USDC + 5
    for asked, repaid in ((part, part), (MAX_UINT, debt)):
        freeze(chain)  # the debt read above is the debt at the repayment's timestamp
        exc = caught(lambda asked=asked: s.engine.repay(alice, 0, asked, sender=bob))
        assert s.vault.idle() <= f.token.balanceOf(s.vault), "the vault booked more than it received"
        assert_reverted(
            exc,
            s.engine.ReceivedLess,
            asset=f.token.address,
            expected=repaid,
            received=repaid - f.fee(repaid),
        )
    assert s.engine.debtOf(alice, 0) == debt
    assert books(s) == before
    f.token.setFeeBps(0, sender=bob)
    freeze(chain)
    s.engine.repay(alice, 0, MAX_UINT, sender=bob)
    assert s.engine.debtOf(alice, 0) == 0
    assert s.vault.idle() == f.token.balanceOf(s.vault)


def test_any_sequence_keeps_idle_backed_and_the_last_lender_redeems(
    fee_market: Feed, chain: Any, accounts: Any, lender: Any
) -> None:
    """A seeded random sequence of deposits, mints, withdrawals, redemptions, borrows, repayments, donations, time
    skips and fee switches (0, 0.3 %, 1 %). After every step the vault holds at least the cash it books, and
    totalAssets + reserve = idle + totalDebt; an inflow under a fee reverts ReceivedLess with the token's own
    figures; an outflow under a fee costs the vault exactly the amount sent. At the end (fee on) every lender
    redeems everything, the last one in full: the vault's idle cash pays them all."""
    f, s = fee_market, fee_market.system
    v, t, eng = s.vault, f.token, s.engine
    rng = random.Random(71)
    lenders = [lender, accounts[6], accounts[7]]
    borrowers = [(accounts[8], 0), (accounts[8], 1), (accounts[9], 0)]
    for who in lenders + [b for b, _ in borrowers]:
        fund(f, who, 10**9 * USDC)
    for who, sub in borrowers:
        borrow_against_weth(s, who, sub, 1_000 * WAD, 100_000 * USDC)
    refused: dict[str, int] = {}
    stale = False  # feeds are stale after a time skip; borrowing needs fresh prices

    def check() -> None:
        assert v.idle() <= t.balanceOf(v), f"idle {v.idle()} > balance {t.balanceOf(v)}"
        assert v.totalAssets() + v.reserve() == v.idle() + v.totalDebt()

    def inflow(name: str, who: Any, expected: int, action: Callable[[], Any], refuser: Any) -> None:
        cash, booked = t.balanceOf(v), v.idle()
        exc = caught(action)
        check()
        arrived, noted = t.balanceOf(v) - cash, v.idle() - booked
        assert noted <= arrived, f"{name} booked {noted} but {arrived} arrived"
        if f.fee(expected):
            error = refuser.ReceivedLess
            assert_reverted(exc, error, asset=t.address, expected=expected, received=expected - f.fee(expected))
            refused[name] = refused.get(name, 0) + 1
        else:
            assert exc is None, f"{name} reverted: {exc}"
            assert t.balanceOf(v) == cash + expected

    for _ in range(50):
        op = rng.choice(["deposit", "mint", "withdraw", "redeem", "borrow", "repay", "donate", "skip", "fee"])
        who = rng.choice(lenders)
        freeze(chain)
        if op == "fee":
            t.setFeeBps(rng.choice([0, 0, 30, 100]), sender=who)
        elif op == "deposit":
            amount = rng.randint(1, 2_000_000 * USDC)
            inflow(op, who, amount, partial(v.deposit, amount, who, sender=who), v)
        elif op == "mint":
            shares = rng.randint(1, 2_000_000 * USDC * OFFSET)
            inflow(op, who, v.previewMint(shares), partial(v.mint, shares, who, sender=who), v)
        elif op in ("withdraw", "redeem"):
            cash, held = t.balanceOf(v), t.balanceOf(who)
            if op == "withdraw":
                amount = rng.randint(0, v.maxWithdraw(who))
                exc = caught(partial(v.withdraw, amount, who, who, sender=who))
            else:
                shares = rng.randint(0, v.maxRedeem(who))
                amount = v.previewRedeem(shares)
                exc = caught(partial(v.redeem, shares, who, who, sender=who))
            assert exc is None, f"{op} within max reverted: {exc}"
            assert cash - t.balanceOf(v) == amount  # the vault pays exactly what it books
            assert t.balanceOf(who) - held == amount - f.fee(amount)  # the fee is the receiver's loss
        elif op == "borrow":
            b, sub = rng.choice(borrowers)
            if v.idle() < 10 * USDC:
                continue
            amount = rng.randint(10 * USDC, min(200_000 * USDC, v.idle()))
            if stale:
                refresh_prices(s, chain, 2_000)
                stale = False
            freeze(chain)
            exc = caught(partial(eng.borrow, sub, amount, b, sender=b))
            assert exc is None or error_name(exc, eng) == "InsufficientMargin", exc
        elif op == "repay":
            b, sub = rng.choice(borrowers)
            debt = eng.debtOf(b, sub)
            if debt == 0:
                continue
            # A partial repayment leaves at least the 10 USDC minimum debt.
            amount = MAX_UINT if debt <= 10 * USDC + 1 or rng.random() < 0.3 else rng.randint(1, debt - 10 * USDC)
            repaid = min(amount, debt)
            inflow(op, b, repaid, partial(eng.repay, b, sub, amount, sender=b), eng)
        elif op == "donate":
            t.transfer(v, rng.randint(1, 10_000 * USDC), sender=who)
        else:
            chain.pending_timestamp = chain.blocks.head.timestamp + rng.randint(60, 20 * DAY)
            v.accrue(sender=who)
            stale = True
        check()
    assert refused.get("deposit", 0) + refused.get("mint", 0) > 0, refused
    assert refused.get("repay", 0) > 0, refused

    # Wind down: borrowers repay with the fee off (a repayment under a fee is refused), then with the fee on again
    # the lenders leave one by one; the last one takes everything but the reserve.
    t.setFeeBps(0, sender=lender)
    for b, sub in borrowers:
        if eng.debtOf(b, sub):
            freeze(chain)
            eng.repay(b, sub, MAX_UINT, sender=b)
    for who in lenders:
        if v.balanceOf(who) == 0:  # every lender leaves at the end, so every one holds shares
            freeze(chain)
            v.deposit(1_000 * USDC, who, sender=who)
    t.setFeeBps(100, sender=lender)
    holders = [w for w in lenders if v.balanceOf(w)]
    assert len(holders) == len(lenders)
    for i, who in enumerate(holders):
        freeze(chain)
        shares, total, supply = v.balanceOf(who), v.totalAssets(), v.totalSupply()
        assert v.maxRedeem(who) == shares
        owed = shares * (total + 1) // (supply + OFFSET)  # OpenZeppelin's ERC-4626 with 10**6 virtual shares
        cash = t.balanceOf(v)
        v.redeem(shares, who, who, sender=who)
        assert cash - t.balanceOf(v) == owed
        check()
        if i == len(holders) - 1:
            assert v.totalSupply() == 0
            assert total - owed <= 1  # the last lender got all of totalAssets but rounding dust
    assert v.idle() - v.reserve() <= 1
    assert t.balanceOf(v) >= v.idle()


def test_fee_on_liquidation_repayment_is_refused(fee_market: Feed, chain: Any, alice: Any, liquidator: Any) -> None:
    """With the fee on, a liquidation's repayment would reach the vault 1 % short; it reverts ReceivedLess(asset,
    repaid, received) (liquidate pulls the repayment measured before booking it, as repay does), so the vault never
    books cash it lacks."""
    f, s = fee_market, fee_market.system
    borrow_against_weth(s, alice, 0, WAD, 1_500 * USDC)
    s.set_price("WETH", 1_700)
    fund(f, liquidator, 10_000 * USDC)
    f.token.setFeeBps(100, sender=liquidator)
    freeze(chain)
    quote = s.engine.previewLiquidation(alice, 0, s.weth, MAX_UINT)
    before = books(s)
    freeze(chain)
    exc = caught(lambda: s.engine.liquidate(alice, 0, s.weth, MAX_UINT, 0, liquidator, b"", sender=liquidator))
    assert s.vault.idle() <= f.token.balanceOf(s.vault), "the vault booked more than it received"
    assert_reverted(
        exc,
        s.engine.ReceivedLess,
        asset=f.token.address,
        expected=quote.repaid,
        received=quote.repaid - f.fee(quote.repaid),
    )
    assert books(s) == before
