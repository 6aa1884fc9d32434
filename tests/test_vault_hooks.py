"""The Vault with a debt asset that has ERC-777-style transfer hooks (issue 12, item 7, part 1).

`HookedERC20` calls the sender's registered hook before any balance moves and the receiver's after; the attacker
registers itself and re-enters the vault (or the engine) from either hook, along every path the vault's asset moves:
deposit, mint, withdraw, redeem, lend (borrow), the engine's repay and liquidation pulls, withdrawReserve and skim.
Expected outcomes come from the chain itself: the exact custom error, or the same calls made without re-entry from
the same state (ape snapshots), never from the Vault's formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from conftest import MAX_UINT, WAD, System
from debt_tokens import (
    DAY,
    FLAT_MAX_RATE,
    USDC,
    ZERO_RATE,
    assert_reverted,
    books,
    caught,
    claim,
    deploy_over,
    freeze,
)

# ---------------------------------------------------------------- hook token (item 1)


@dataclass
class Hooked:
    system: System
    token: Any
    attacker: Any

    def run(self, to: Any, data: bytes) -> Any:
        return self.attacker.execute(to, data, sender=self.system.admin)


# Unique in tests/: ape's isolation keys fixtures by name, and a function-scoped `hooked` in test_tokens.py
# named like this one stopped being reverted.
@pytest.fixture(scope="module")
def hook_market(project: Any, chain: Any, admin: Any, lender: Any, alice: Any, system: System) -> Hooked:
    """A system over HookedERC20 with zero interest (so a transaction's outcome does not depend on when it is mined).
    The lender has 10M deposited. The attacker, registered as its own hook, has 10M deposited too, 30M more in
    hand, everything approved, and 100 WETH of collateral in sub-account 0. (Session fixtures it does not use are
    requested so they come first: ape isolates scopes in order.)"""
    token = admin.deploy(project.HookedERC20, 6)
    s = deploy_over(project, chain, admin, token, "hook_market")
    s.vault.setRateModel(*ZERO_RATE, sender=admin)
    token.mint(lender, 10_000_000 * USDC, sender=lender)
    token.approve(s.vault, MAX_UINT, sender=lender)
    s.vault.deposit(10_000_000 * USDC, lender, sender=lender)

    attacker = admin.deploy(project.HookAttacker)
    h = Hooked(s, token, attacker)
    h.run(token, token.setHook.encode_input(attacker))
    token.mint(attacker, 40_000_000 * USDC, sender=admin)
    h.run(token, token.approve.encode_input(s.vault, MAX_UINT))
    h.run(token, token.approve.encode_input(s.engine, MAX_UINT))
    h.run(s.vault, s.vault.deposit.encode_input(10_000_000 * USDC, attacker))
    s.weth.mint(attacker, 100 * WAD, sender=admin)
    h.run(s.weth, s.weth.approve.encode_input(s.engine, MAX_UINT))
    h.run(s.engine, s.engine.deposit.encode_input(attacker, 0, s.weth, 100 * WAD))
    assert token.hookOf(attacker) == attacker.address
    return h


def vault_payload(h: Hooked, name: str) -> bytes:
    """A re-entrant vault call by the attacker for about a million units (redeem: all its shares)."""
    v, a = h.system.vault, h.attacker
    return {
        "deposit": lambda: v.deposit.encode_input(1_000_000 * USDC, a),
        "mint": lambda: v.mint.encode_input(v.previewDeposit(1_000_000 * USDC), a),
        "withdraw": lambda: v.withdraw.encode_input(1_000_000 * USDC, a, a),
        "redeem": lambda: v.redeem.encode_input(v.balanceOf(a), a, a),
    }[name]()


REENTRIES = ["deposit", "mint", "withdraw", "redeem"]


@pytest.mark.parametrize("inner", REENTRIES)
@pytest.mark.parametrize("outer", ["deposit", "mint"])
def test_reentry_before_a_deposit_moves_tokens_is_refused(
    hook_market: Hooked, lender: Any, outer: str, inner: str
) -> None:
    """The depositor's `tokensToSend` hook runs while the vault pulls its deposit, before any balance moves.
    Re-entering deposit/mint/withdraw/redeem from there must not move the other lender's claim, and is refused
    with ReentrancyGuardReentrantCall, leaving every book as it was. (Before the fix the vault booked the deposit
    as idle cash before pulling it, so a re-entrant redeem was priced on cash that had not arrived: the attacker
    took part of the lender's deposit.)"""
    h, v = hook_market, hook_market.system.vault
    amount = 5_000_000 * USDC
    call = (
        v.deposit.encode_input(amount, h.attacker)
        if outer == "deposit"
        else v.mint.encode_input(v.previewDeposit(amount), h.attacker)
    )
    h.attacker.arm(v, vault_payload(h, inner), True, sender=h.system.admin)
    lender_claim, before = claim(v, lender), books(h.system)
    attacker_cash = h.token.balanceOf(h.attacker)

    exc = caught(lambda: h.run(v, call))

    assert claim(v, lender) == lender_claim, f"the re-entrant {inner} moved the lender's claim by " + str(
        claim(v, lender) - lender_claim
    )
    assert_reverted(exc, v.ReentrancyGuardReentrantCall)
    assert books(h.system) == before
    assert h.token.balanceOf(h.attacker) == attacker_cash
    assert h.attacker.armed()


@pytest.mark.parametrize("inner", REENTRIES)
@pytest.mark.parametrize("outer", ["withdraw", "redeem"])
def test_reentry_after_a_withdrawal_pays_is_refused(hook_market: Hooked, lender: Any, outer: str, inner: str) -> None:
    """The receiver's `tokensReceived` hook runs after a withdrawal paid it; re-entering the vault from there is
    refused with ReentrancyGuardReentrantCall and the withdrawal is undone."""
    h, v = hook_market, hook_market.system.vault
    amount = 2_000_000 * USDC
    call = (
        v.withdraw.encode_input(amount, h.attacker, h.attacker)
        if outer == "withdraw"
        else v.redeem.encode_input(v.previewWithdraw(amount), h.attacker, h.attacker)
    )
    h.attacker.arm(v, vault_payload(h, inner), False, sender=h.system.admin)
    lender_claim, before = claim(v, lender), books(h.system)

    exc = caught(lambda: h.run(v, call))

    assert claim(v, lender) == lender_claim
    assert_reverted(exc, v.ReentrancyGuardReentrantCall)
    assert books(h.system) == before


@pytest.mark.parametrize("inner", REENTRIES)
def test_reentry_from_a_borrow_payout_is_refused(hook_market: Hooked, lender: Any, inner: str) -> None:
    """`lend` pays the borrower (engine.borrow's last step); the borrower's `tokensReceived` hook re-entering the
    vault is refused with ReentrancyGuardReentrantCall and the borrow is undone."""
    h, s = hook_market, hook_market.system
    h.attacker.arm(s.vault, vault_payload(h, inner), False, sender=s.admin)
    lender_claim, before = claim(s.vault, lender), books(s)

    exc = caught(lambda: h.run(s.engine, s.engine.borrow.encode_input(0, 50_000 * USDC, h.attacker)))

    assert_reverted(exc, s.vault.ReentrancyGuardReentrantCall)
    assert claim(s.vault, lender) == lender_claim
    assert books(s) == before
    assert s.engine.position(h.attacker, 0).scaledDebt == 0


def observe(h: Hooked, lender: Any) -> tuple[int, ...]:
    s = h.system
    return (
        *books(s),
        claim(s.vault, lender),
        s.vault.balanceOf(h.attacker),
        h.token.balanceOf(h.attacker),
        s.engine.position(h.attacker, 0).scaledDebt,
    )


@pytest.mark.parametrize("inner", REENTRIES)
def test_reentry_while_a_repayment_is_pulled_is_refused(hook_market: Hooked, lender: Any, inner: str) -> None:
    """engine.repay pulls the repayment into the vault, measured, before the vault books it. The payer's
    `tokensToSend` hook runs during that pull, outside any vault call, so a vault call from there runs; but it moves
    the vault's cash, and the measurement refuses the repayment: ReceivedLess(asset, repaid, what the vault's
    balance grew by, 0 when it fell), nothing changed. (Before the fix the vault booked the repayment first and
    measured nothing.)"""
    h, s = hook_market, hook_market.system
    v = s.vault
    h.run(s.engine, s.engine.borrow.encode_input(0, 60_000 * USDC, h.attacker))
    repaid = 25_000 * USDC
    moved = {
        "deposit": 1_000_000 * USDC,
        "mint": v.previewMint(v.previewDeposit(1_000_000 * USDC)),
        "withdraw": -1_000_000 * USDC,
        "redeem": -v.previewRedeem(v.balanceOf(h.attacker)),
    }[inner]
    h.attacker.arm(v, vault_payload(h, inner), True, sender=s.admin)
    before = observe(h, lender)

    exc = caught(lambda: h.run(s.engine, s.engine.repay.encode_input(h.attacker, 0, repaid)))

    assert_reverted(exc, s.engine.ReceivedLess, asset=h.token.address, expected=repaid, received=max(repaid + moved, 0))
    assert observe(h, lender) == before


@pytest.mark.parametrize("inner", ["repay", "borrow"])
def test_reentry_into_the_engine_while_a_repayment_is_pulled_is_refused(
    hook_market: Hooked, lender: Any, inner: str
) -> None:
    """From the payer's hook during repay, the engine itself is locked: ReentrancyGuardReentrantCall."""
    h, s = hook_market, hook_market.system
    h.run(s.engine, s.engine.borrow.encode_input(0, 60_000 * USDC, h.attacker))
    payload = (
        s.engine.repay.encode_input(h.attacker, 0, 10_000 * USDC)
        if inner == "repay"
        else s.engine.borrow.encode_input(0, 10_000 * USDC, h.attacker)
    )
    h.attacker.arm(s.engine, payload, True, sender=s.admin)
    before = observe(h, lender)
    exc = caught(lambda: h.run(s.engine, s.engine.repay.encode_input(h.attacker, 0, 25_000 * USDC)))
    assert_reverted(exc, s.engine.ReentrancyGuardReentrantCall)
    assert observe(h, lender) == before


def test_reentry_while_a_liquidation_repayment_is_pulled_cannot_move_share_value(
    hook_market: Hooked, chain: Any, alice: Any, lender: Any
) -> None:
    """LIQUIDATION PATH (the lead's code): the liquidator's `tokensToSend` hook runs while the engine pulls the
    repayment and redeems from the vault. Today liquidate books the repayment first and pulls it unmeasured, so the
    redeem runs and must pay exactly what it pays just before the liquidation, from the same state. Once liquidate
    pulls measured as repay does, the redeem moves the vault's cash and the liquidation is refused with
    ReceivedLess(asset, repaid, 0), nothing changed. Either outcome holds the property; nothing else does."""
    h, s = hook_market, hook_market.system
    s.weth.mint(alice, 10 * WAD, sender=alice)
    s.weth.approve(s.engine, MAX_UINT, sender=alice)
    s.engine.deposit(alice, 0, s.weth, WAD, sender=alice)
    s.engine.borrow(0, 1_500 * USDC, alice, sender=alice)
    s.set_price("WETH", 1_700)
    repaid = s.engine.previewLiquidation(alice, 0, s.weth, MAX_UINT).repaid
    liquidate = s.engine.liquidate.encode_input(alice, 0, s.weth, MAX_UINT, 0, h.attacker, b"")
    payload = s.vault.redeem.encode_input(s.vault.previewWithdraw(3_000_000 * USDC), h.attacker, h.attacker)

    snap = chain.snapshot()
    h.run(s.vault, payload)
    h.run(s.engine, liquidate)
    reference = (*observe(h, lender), s.weth.balanceOf(h.attacker))
    chain.restore(snap)

    before = (*observe(h, lender), s.weth.balanceOf(h.attacker))
    h.attacker.arm(s.vault, payload, True, sender=s.admin)
    exc = caught(lambda: h.run(s.engine, liquidate))
    after = (*observe(h, lender), s.weth.balanceOf(h.attacker))
    if exc is None:
        assert not h.attacker.armed()
        assert after == reference
    else:
        assert_reverted(exc, s.engine.ReceivedLess, asset=h.token.address, expected=repaid, received=0)
        assert after == before


@pytest.mark.parametrize("call", ["withdrawReserve", "skim"])
def test_reentry_from_governance_payouts_is_refused(hook_market: Hooked, chain: Any, lender: Any, call: str) -> None:
    """withdrawReserve and skim pay a receiver whose `tokensReceived` hook re-enters the vault: refused with
    ReentrancyGuardReentrantCall, nothing paid."""
    h, s = hook_market, hook_market.system
    admin = s.admin
    s.vault.setRateModel(*FLAT_MAX_RATE, sender=admin)
    h.run(s.engine, s.engine.borrow.encode_input(0, 100_000 * USDC, h.attacker))
    chain.pending_timestamp = chain.blocks.head.timestamp + 30 * DAY
    s.vault.accrue(sender=admin)
    h.token.mint(admin, 777 * USDC, sender=admin)
    h.token.transfer(s.vault, 777 * USDC, sender=admin)  # a donation for skim
    assert s.vault.reserve() > 1_000 * USDC
    h.attacker.arm(s.vault, vault_payload(h, "deposit"), False, sender=admin)
    before = books(s)
    freeze(chain)
    if call == "skim":
        exc = caught(lambda: s.vault.skim(h.attacker, sender=admin))
    else:
        exc = caught(lambda: s.vault.withdrawReserve(1_000 * USDC, h.attacker, sender=admin))
    assert_reverted(exc, s.vault.ReentrancyGuardReentrantCall)
    assert books(s) == before
