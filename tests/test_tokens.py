"""Collateral tokens that misbehave (transfer fees, no return values, `false` returns, transfer hooks that re-enter)
and interest-bearing ERC-4626 collateral whose exchange rate a donation tries to inflate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from conftest import MAX_UINT, RAY, WAD, fund, open_position, reverts_with
from test_liquidation import USDC, Asset, Holding, account_health, quote, wad

YEAR = 365 * 24 * 3600
FEED_DECIMALS = 8


@pytest.fixture(autouse=True)
def no_interest(system: Any, admin: Any) -> None:
    """Zero borrow rates so debts stay exactly what was borrowed while blocks advance (index stays RAY). Fixtures
    that open positions request it so it runs first (ape's isolation reorders same-scope fixtures)."""
    system.vault.setRateModel((0, 0, 0, 8 * 10**17), 10**17, sender=admin)
    assert system.vault.borrowIndex() == RAY


def feed_answer(usd: str) -> int:
    return wad(usd) // 10 ** (18 - FEED_DECIMALS)


def list_token(system: Any, project: Any, admin: Any, token: Any, usd: str, asset: Asset) -> Any:
    """Give `token` a fresh mock feed at `usd` and list it as collateral with `asset`'s ratios; returns the feed."""
    feed = admin.deploy(project.MockAggregator, FEED_DECIMALS, feed_answer(usd), "X / USD")
    system.router.setFeed(token, feed, 3600, 1, 10**30, sender=admin)
    system.engine.listAsset(token, asset.ltv, asset.lt, asset.max_discount, 10**30, sender=admin)
    return feed


# ---------------------------------------------------------------- fee on transfer


def test_fee_on_transfer_deposit_reverts_received_less(system: Any, project: Any, admin: Any, alice: Any) -> None:
    """A 1 % transfer fee delivers less than the deposit: ReceivedLess(asset, expected, received), nothing booked."""
    fee_bps = 100
    token = admin.deploy(project.FeeOnTransferToken, fee_bps)
    list_token(system, project, admin, token, "1", Asset(18, 50 * 10**16, 60 * 10**16, 5 * 10**16))
    token.mint(alice, 1000 * WAD, sender=alice)
    token.approve(system.engine, MAX_UINT, sender=alice)
    amount = 100 * WAD
    received = amount - amount * fee_bps // 10_000
    with reverts_with(system.engine.ReceivedLess, asset=token.address, expected=amount, received=received):
        system.engine.deposit(alice, 0, token, amount, sender=alice)
    assert system.engine.collateralOf(alice, 0, token) == 0
    assert system.engine.assetSupply(token).totalSupplied == 0
    assert system.engine.position(alice, 0).assetMask == 0
    assert token.balanceOf(alice) == 1000 * WAD
    assert token.balanceOf(system.engine) == 0


# ---------------------------------------------------------------- no return values


def test_no_return_token_deposit_withdraw_and_seize(
    system: Any, project: Any, admin: Any, alice: Any, bob: Any, liquidator: Any
) -> None:
    """A USDT-like token without return values works end to end: deposit, withdraw and liquidation seizure."""
    token = admin.deploy(project.NoReturnToken, 6)
    asset = Asset(6, 80 * 10**16, 85 * 10**16, 10 * 10**16)
    feed = list_token(system, project, admin, token, "1", asset)
    token.mint(alice, 10_000 * 10**6, sender=alice)
    token.approve(system.engine, MAX_UINT, sender=alice)

    system.engine.deposit(alice, 0, token, 10_000 * 10**6, sender=alice)
    assert system.engine.collateralOf(alice, 0, token) == 10_000 * 10**6
    assert token.balanceOf(system.engine) == 10_000 * 10**6
    assert token.balanceOf(alice) == 0

    system.engine.borrow(0, 7000 * USDC, alice, sender=alice)
    system.engine.withdraw(0, token, 1000 * 10**6, bob, sender=alice)
    assert token.balanceOf(bob) == 1000 * 10**6
    assert system.engine.collateralOf(alice, 0, token) == 9000 * 10**6

    feed.setAnswer(feed_answer("0.85"), sender=admin)
    holdings = {"USDT": Holding(asset, 9000 * 10**6, wad("0.85"))}
    ref = quote(holdings, 7000 * USDC, wad(1), "USDT", MAX_UINT)
    fund(system, liquidator, "USDC", ref.repaid)
    system.engine.liquidate(alice, 0, token, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    assert token.balanceOf(liquidator) == ref.seized
    assert system.engine.collateralOf(alice, 0, token) == 9000 * 10**6 - ref.seized
    assert token.balanceOf(system.engine) == 9000 * 10**6 - ref.seized
    assert system.engine.debtOf(alice, 0) == 7000 * USDC - ref.repaid
    assert system.usdc.balanceOf(liquidator) == 0


# ---------------------------------------------------------------- returns false


@pytest.fixture
def false_token(system: Any, project: Any, admin: Any, alice: Any, no_interest: None) -> Any:
    token = admin.deploy(project.ReturnsFalseToken, 18)
    list_token(system, project, admin, token, "5", Asset(18, 50 * 10**16, 60 * 10**16, 5 * 10**16))
    token.mint(alice, 100 * WAD, sender=alice)
    token.approve(system.engine, MAX_UINT, sender=alice)
    return token


def test_returns_false_deposit_reverts(system: Any, false_token: Any, alice: Any) -> None:
    """A transferFrom that returns false (failing flag, or too little balance) reverts SafeERC20FailedOperation and
    credits nothing."""
    false_token.setFailing(True, sender=alice)
    with reverts_with(system.engine.SafeERC20FailedOperation, token=false_token.address):
        system.engine.deposit(alice, 0, false_token, 10 * WAD, sender=alice)
    false_token.setFailing(False, sender=alice)
    with reverts_with(system.engine.SafeERC20FailedOperation, token=false_token.address):
        system.engine.deposit(alice, 0, false_token, 101 * WAD, sender=alice)
    assert system.engine.collateralOf(alice, 0, false_token) == 0
    assert system.engine.assetSupply(false_token).totalSupplied == 0
    assert system.engine.position(alice, 0).assetMask == 0
    assert false_token.balanceOf(alice) == 100 * WAD

    system.engine.deposit(alice, 0, false_token, 10 * WAD, sender=alice)
    assert system.engine.collateralOf(alice, 0, false_token) == 10 * WAD
    assert false_token.balanceOf(system.engine) == 10 * WAD


def test_returns_false_withdraw_reverts(system: Any, false_token: Any, alice: Any, bob: Any) -> None:
    """A transfer that returns false makes withdraw revert SafeERC20FailedOperation; the balance stays booked."""
    system.engine.deposit(alice, 0, false_token, 10 * WAD, sender=alice)
    false_token.setFailing(True, sender=alice)
    with reverts_with(system.engine.SafeERC20FailedOperation, token=false_token.address):
        system.engine.withdraw(0, false_token, 4 * WAD, bob, sender=alice)
    assert system.engine.collateralOf(alice, 0, false_token) == 10 * WAD
    assert system.engine.assetSupply(false_token).totalSupplied == 10 * WAD
    assert false_token.balanceOf(bob) == 0
    assert false_token.balanceOf(system.engine) == 10 * WAD

    false_token.setFailing(False, sender=alice)
    system.engine.withdraw(0, false_token, 4 * WAD, bob, sender=alice)
    assert false_token.balanceOf(bob) == 4 * WAD
    assert system.engine.collateralOf(alice, 0, false_token) == 6 * WAD


# ---------------------------------------------------------------- re-entrancy


@dataclass
class Hooked:
    token: Any
    attacker: Any


@pytest.fixture
def hooked(system: Any, project: Any, admin: Any, alice: Any, no_interest: None) -> Hooked:
    """A HookToken listed as collateral whose hook is a ReentrancyAttacker; the attacker holds 100 HOOK as
    collateral, 900 HOOK and 10k USDC approved to the engine, and alice has a liquidatable WETH position, so every
    re-entrant payload below would succeed if it were not blocked."""
    token = admin.deploy(project.HookToken)
    list_token(system, project, admin, token, "10", Asset(18, 50 * 10**16, 60 * 10**16, 5 * 10**16))
    attacker = admin.deploy(project.ReentrancyAttacker)
    token.setHook(attacker, sender=admin)
    token.mint(attacker, 1000 * WAD, sender=admin)
    system.usdc.mint(attacker, 10_000 * USDC, sender=admin)
    attacker.execute(token, token.approve.encode_input(system.engine, MAX_UINT), sender=admin)
    attacker.execute(system.usdc, system.usdc.approve.encode_input(system.engine, MAX_UINT), sender=admin)
    deposit = system.engine.deposit.encode_input(attacker, 0, token, 100 * WAD)
    attacker.execute(system.engine, deposit, sender=admin)  # unarmed: an ordinary deposit
    assert system.engine.collateralOf(attacker, 0, token) == 100 * WAD

    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * USDC)
    system.set_price("WETH", 1500)
    return Hooked(token, attacker)


def _payload(system: Any, h: Hooked, alice: Any, name: str) -> bytes:
    engine = system.engine
    if name == "withdraw":
        return engine.withdraw.encode_input(0, h.token, 10 * WAD, h.attacker)
    if name == "borrow":
        return engine.borrow.encode_input(0, 100 * USDC, h.attacker)
    return engine.liquidate.encode_input(alice, 0, system.weth, 100 * USDC, 0, h.attacker, b"")


def _snapshot(system: Any, h: Hooked, alice: Any) -> tuple[int, ...]:
    return (
        h.token.balanceOf(h.attacker),
        h.token.balanceOf(system.engine),
        system.engine.collateralOf(h.attacker, 0, h.token),
        system.engine.debtOf(h.attacker, 0),
        system.usdc.balanceOf(h.attacker),
        system.weth.balanceOf(h.attacker),
        system.engine.debtOf(alice, 0),
        system.engine.collateralOf(alice, 0, system.weth),
    )


@pytest.mark.parametrize("operation", ["deposit", "withdraw"])
@pytest.mark.parametrize("reentry", ["withdraw", "borrow", "liquidate"])
def test_reentry_from_token_hook_reverts(
    system: Any, hooked: Hooked, admin: Any, alice: Any, operation: str, reentry: str
) -> None:
    """Re-entering withdraw/borrow/liquidate from a token transfer inside deposit/withdraw reverts the whole
    transaction with ReentrancyGuardReentrantCall and changes nothing; the same operation with a harmless hook
    succeeds."""
    h, engine = hooked, system.engine
    if operation == "deposit":
        outer = engine.deposit.encode_input(h.attacker, 0, h.token, 50 * WAD)
    else:
        outer = engine.withdraw.encode_input(0, h.token, 50 * WAD, h.attacker)
    h.attacker.arm(engine, _payload(system, h, alice, reentry), sender=admin)
    before = _snapshot(system, h, alice)

    with reverts_with(engine.ReentrancyGuardReentrantCall):
        h.attacker.execute(engine, outer, sender=admin)

    assert _snapshot(system, h, alice) == before
    assert h.attacker.armed()

    h.attacker.arm(h.token, h.token.totalSupply.encode_input(), sender=admin)  # a hook that does not re-enter
    h.attacker.execute(engine, outer, sender=admin)
    assert not h.attacker.armed()
    expected = 150 * WAD if operation == "deposit" else 50 * WAD
    assert engine.collateralOf(h.attacker, 0, h.token) == expected


# ---------------------------------------------------------------- interest-bearing collateral

GROWTH = 10 * 10**16  # the share's exchange rate may grow 10 % a year
SHARE_CAP_MAX_AGE = 30 * 24 * 3600  # the cap stops growing 30 days after the router's last snapshot
SHARE = Asset(18, 75 * 10**16, 80 * 10**16, 8 * 10**16)


@dataclass
class Shares:
    share: Any
    snapshot_rate: int
    snapshot_time: int


def share_price(weth_price: int, rate: int, s: Shares, now: int) -> int:
    """Documented share price: WETH price * min(rate, snapshot * (1 + growth * min(elapsed, 30 days) / YEAR)),
    rounded down."""
    elapsed = min(now - s.snapshot_time, SHARE_CAP_MAX_AGE)
    cap = s.snapshot_rate + s.snapshot_rate * GROWTH * elapsed // (WAD * YEAR)
    return weth_price * min(rate, cap) // WAD


def borrowing_power(price: int, balance: int = 10 * WAD) -> int:
    return account_health({"S": Holding(SHARE, balance, price)}, 0, wad(1)).ltv_weighted


def oz_rate(total_assets: int, total_supply: int) -> int:
    """OpenZeppelin ERC-4626 (no decimals offset): assets for one whole share, rounded down."""
    return WAD * (total_assets + 1) // (total_supply + 1)


@pytest.fixture
def shares(system: Any, project: Any, admin: Any, alice: Any, no_interest: None) -> Shares:
    """An ERC-4626 over WETH (100 WETH seeded by admin) priced through WETH with a 10 %/year cap, listed as
    collateral; alice holds 10 shares in sub-account 0."""
    share = admin.deploy(project.MockERC4626, system.weth, "Staked WETH", "sWETH")
    system.weth.mint(admin, 1000 * WAD, sender=admin)
    system.weth.approve(share, MAX_UINT, sender=admin)
    share.deposit(100 * WAD, admin, sender=admin)
    system.router.setShareAsset(share, system.weth, GROWTH, sender=admin)
    system.engine.listAsset(share, SHARE.ltv, SHARE.lt, SHARE.max_discount, 10**30, sender=admin)
    share.deposit(10 * WAD, alice, sender=admin)
    share.approve(system.engine, MAX_UINT, sender=alice)
    system.engine.deposit(alice, 0, share, 10 * WAD, sender=alice)
    cfg = system.router.shareConfig(share)
    assert cfg.underlying == system.weth.address
    assert cfg.snapshotRate == oz_rate(100 * WAD, 100 * WAD) == WAD
    return Shares(share, cfg.snapshotRate, cfg.snapshotTime)


def _travel(system: Any, chain: Any, seconds: int) -> None:
    """Move time forward and refresh the feeds the share needs (they would be stale otherwise)."""
    chain.pending_timestamp = chain.blocks.head.timestamp + seconds
    system.set_price("WETH", 2000)
    system.set_price("USDC", 1)


def test_share_borrowing_power_follows_exchange_rate(
    system: Any, chain: Any, admin: Any, alice: Any, shares: Shares
) -> None:
    """Below the cap, borrowing power = floor(shares * WETH price * convertToAssets) * ltv, tracking yield and the
    WETH price."""
    s = shares
    now = chain.blocks.head.timestamp
    assert system.engine.accountHealth(alice, 0).ltvWeighted == borrowing_power(share_price(wad(2000), WAD, s, now))
    assert borrowing_power(share_price(wad(2000), WAD, s, now)) == 15_000 * WAD

    _travel(system, chain, 20 * 24 * 3600)  # the cap is now 0.55 % above the snapshot
    system.weth.transfer(s.share, WAD // 2, sender=admin)  # 0.45 % yield: 110.5 WETH behind 110 shares
    rate = oz_rate(110 * WAD + WAD // 2, 110 * WAD)
    assert s.share.convertToAssets(WAD) == rate
    now = chain.blocks.head.timestamp
    price = share_price(wad(2000), rate, s, now)
    assert price == wad(2000) * rate // WAD  # under the cap: the full rate counts
    power = system.engine.accountHealth(alice, 0).ltvWeighted
    assert power == borrowing_power(price)
    assert power > 15_000 * WAD

    system.set_price("WETH", 2500)
    now = chain.blocks.head.timestamp
    assert system.engine.accountHealth(alice, 0).ltvWeighted == borrowing_power(share_price(wad(2500), rate, s, now))


def test_donation_cannot_inflate_borrowing_power(
    system: Any, chain: Any, admin: Any, alice: Any, shares: Shares
) -> None:
    """Donating 110 WETH doubles convertToAssets, but the price uses the capped rate, so borrowing power only
    grows by the allowed 10 %/year and a borrow against the donated value reverts InsufficientMargin."""
    s = shares
    _travel(system, chain, 20 * 24 * 3600)
    system.weth.transfer(s.share, 110 * WAD, sender=admin)
    rate = oz_rate(220 * WAD, 110 * WAD)
    assert s.share.convertToAssets(WAD) == rate
    assert rate > 19 * WAD // 10

    now = chain.blocks.head.timestamp
    capped = share_price(wad(2000), rate, s, now)
    assert capped < wad(2000) * 1006 // 1000  # about 0.55 % above the snapshot after 20 days
    power = system.engine.accountHealth(alice, 0).ltvWeighted
    assert power == borrowing_power(capped)
    assert borrowing_power(wad(2000) * rate // WAD) > power * 19 // 10  # what the donated rate would give

    at = chain.blocks.head.timestamp + 10
    chain.pending_timestamp = at
    with reverts_with(
        system.engine.InsufficientMargin,
        borrowingPower=borrowing_power(share_price(wad(2000), rate, s, at)),
        debtValue=20_000 * WAD,
    ):
        system.engine.borrow(0, 20_000 * USDC, alice, sender=alice)
    system.engine.borrow(0, 15_000 * USDC, alice, sender=alice)
    assert system.engine.debtOf(alice, 0) == 15_000 * USDC


def test_share_liquidation_seizes_at_capped_price(
    system: Any, chain: Any, admin: Any, alice: Any, liquidator: Any, shares: Shares
) -> None:
    """After a donation and a WETH drop, the account is liquidatable at the capped share price (it would be healthy
    at the donated rate) and the liquidator receives shares computed at the capped price."""
    s = shares
    debt = 14_000 * USDC
    system.engine.borrow(0, debt, alice, sender=alice)
    system.weth.transfer(s.share, 110 * WAD, sender=admin)
    rate = oz_rate(220 * WAD, 110 * WAD)
    system.set_price("WETH", 1700)
    uncapped = {"S": Holding(SHARE, 10 * WAD, wad(1700) * rate // WAD)}
    assert account_health(uncapped, debt, wad(1)).health > WAD

    at = chain.blocks.head.timestamp + 5
    holdings = {"S": Holding(SHARE, 10 * WAD, share_price(wad(1700), rate, s, at))}
    assert account_health(holdings, debt, wad(1)).health < WAD
    ref = quote(holdings, debt, wad(1), "S", MAX_UINT)
    fund(system, liquidator, "USDC", ref.repaid)
    chain.pending_timestamp = at
    receipt = system.engine.liquidate(alice, 0, s.share, MAX_UINT, 0, liquidator, b"", sender=liquidator)

    assert s.share.balanceOf(liquidator) == ref.seized
    assert system.engine.collateralOf(alice, 0, s.share) == 10 * WAD - ref.seized
    assert system.engine.debtOf(alice, 0) == debt - ref.repaid
    logs = receipt.events.filter(system.engine.Liquidated)
    assert [(log.repaid, log.seized, log.discount) for log in logs] == [(ref.repaid, ref.seized, ref.discount)]
