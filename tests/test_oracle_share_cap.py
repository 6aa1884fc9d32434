"""ERC-4626 collateral: the exchange-rate cap stays tight over time. Anyone may move the snapshot to
min(rate, cap) once a day (`refreshShareRate`); after a year of steady growth a donation is priced at most by the
growth allowed since the last refresh; refreshes cannot carry a donation in faster than the allowed growth; with no
refresh the cap stops growing after 30 days."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from conftest import MAX_UINT, WAD
from test_oracle_router import error_data, head_time, reverts_with

YEAR = 365 * 86400
DAY = 86400
GROWTH = 15 * WAD // 100  # maxYearlyGrowth: 15 % a year
DEPOSIT = 1000 * WAD


@pytest.fixture
def share(system: Any, admin: Any, alice: Any, project: Any) -> Any:
    """A share over WETH holding alice's 1,000 WETH (rate 1:1), priced with a 15 %/year cap."""
    vault = admin.deploy(project.MockERC4626, system.weth, "Staked WETH", "sWETH")
    system.weth.mint(alice, DEPOSIT, sender=alice)
    system.weth.approve(vault, MAX_UINT, sender=alice)
    vault.deposit(DEPOSIT, alice, sender=alice)
    system.router.setShareAsset(vault, system.weth, GROWTH, sender=admin)
    return vault


def add_assets(system: Any, share: Any, who: Any, amount: int) -> None:
    """Send `amount` WETH to the share contract: yield when small and regular, a donation when large and sudden."""
    system.weth.mint(who, amount, sender=who)
    system.weth.transfer(share, amount, sender=who)


def at(system: Any, chain: Any, timestamp: int) -> None:
    """Move to `timestamp` and keep the WETH feed fresh there."""
    chain.pending_timestamp = timestamp
    system.set_price("WETH", 2000)


def cap_down(snapshot: int, snapshot_time: int, now: int) -> int:
    """The documented cap: snapshot * (1 + growth * min(elapsed, 30 days) / YEAR), rounded down."""
    elapsed = min(now - snapshot_time, 30 * DAY)
    return snapshot + snapshot * GROWTH * elapsed // (WAD * YEAR)


def test_year_of_growth_then_donation_priced_at_most_growth_since_last_refresh(
    system: Any, chain: Any, alice: Any, stranger: Any, share: Any
) -> None:
    """The share earns 5 % over a year, paid weekly, and a keeper refreshes weekly. A day after the last refresh,
    a one-block donation of 15 % of the assets raises the exchange rate by 15 %, but the share's price rises at
    most by one day's allowed growth (15 %/year for a day, ~0.04 %), where a snapshot a year old let it in whole."""
    router = system.router
    start = head_time(chain)
    weekly_yield = DEPOSIT * 5 // 100 // 52
    for week in range(1, 53):
        at(system, chain, start + week * 7 * DAY)
        add_assets(system, share, alice, weekly_yield)
        router.refreshShareRate(share, sender=stranger)

    rate = share.convertToAssets(WAD)
    assert rate > WAD * 1049 // 1000  # a year of real growth
    cfg = router.shareConfig(share)
    assert cfg.snapshotRate == rate  # the real rate was below the cap at every weekly refresh
    price_before = router.price(share)
    assert price_before == 2000 * rate

    at(system, chain, cfg.snapshotTime + DAY)
    add_assets(system, share, stranger, share.totalAssets() * 15 // 100)
    donated = share.convertToAssets(WAD)
    assert donated > rate * 114 // 100
    now = head_time(chain)
    allowed = cap_down(cfg.snapshotRate, cfg.snapshotTime, now)
    assert router.price(share) == 2000 * allowed
    assert now - cfg.snapshotTime <= DAY + 10
    assert allowed - rate <= rate * GROWTH * (now - cfg.snapshotTime) // (WAD * YEAR) + 1  # a day's growth, no more
    assert router.price(share) < 2000 * rate * 10005 // 10000  # under +0.05 %, against +15 % donated


def test_refreshes_cannot_ratchet_in_a_donation(system: Any, chain: Any, alice: Any, stranger: Any, share: Any) -> None:
    """A donation of 15 % right after the snapshot, then a refresh at every allowed moment for 60 days: each
    snapshot is min(rate, cap) = the cap, so the priced rate never exceeds the snapshot grown at 15 %/year
    compounded daily (~2.5 % after 60 days), and a refresh within a day of the last one is refused."""
    router = system.router
    cfg = router.shareConfig(share)
    t0, r0 = cfg.snapshotTime, cfg.snapshotRate
    add_assets(system, share, stranger, DEPOSIT * 15 // 100)
    donated = share.convertToAssets(WAD)

    with reverts_with(error_data(router.ShareRefreshTooSoon, share.address, t0 + DAY)):
        router.refreshShareRate(share, sender=stranger)

    snapshot, snapshot_time = r0, t0
    compounded = Fraction(r0)  # r0 grown at 15 %/year compounded at every refresh, exactly
    for _day in range(1, 61):
        at(system, chain, snapshot_time + DAY)
        receipt = router.refreshShareRate(share, sender=stranger)
        now = head_time(chain)
        expected = min(donated, cap_down(snapshot, snapshot_time, now))
        logs = router.ShareRateRefreshed.from_receipt(receipt)
        assert [(log.share, log.rate, log.snapshotRate) for log in logs] == [(share.address, donated, expected)]
        compounded *= 1 + Fraction(GROWTH * (now - snapshot_time), WAD * YEAR)
        snapshot, snapshot_time = expected, now
        assert router.shareConfig(share).snapshotRate == snapshot
        assert router.price(share) == 2000 * snapshot
        assert snapshot <= compounded
    assert snapshot < r0 * 1025 // 1000 < donated


def test_without_refresh_the_cap_stops_growing_after_30_days(
    system: Any, chain: Any, stranger: Any, share: Any
) -> None:
    """A donation with no refresh: the cap grows for 30 days after the snapshot and then stays there, so an
    unattended share is priced at most 30 days of allowed growth (+1.23 %) above its last snapshot."""
    router = system.router
    cfg = router.shareConfig(share)
    add_assets(system, share, stranger, DEPOSIT * 15 // 100)
    for days in (10, 30, 31, 365, 4 * 365):
        at(system, chain, cfg.snapshotTime + days * DAY)
        expected = cap_down(cfg.snapshotRate, cfg.snapshotTime, head_time(chain))
        assert router.price(share) == 2000 * expected
    assert expected == WAD + WAD * GROWTH * 30 * DAY // (WAD * YEAR)


def test_refresh_errors(system: Any, chain: Any, stranger: Any, share: Any) -> None:
    """Refreshing an unknown share reverts AssetNotConfigured; a share whose rate cannot be read reverts
    FeedCallFailed(share, share) and keeps its snapshot."""
    router = system.router
    unknown = system.weth.address
    with reverts_with(error_data(router.AssetNotConfigured, unknown)):
        router.refreshShareRate(unknown, sender=stranger)
    before = router.shareConfig(share)
    at(system, chain, before.snapshotTime + DAY)
    share.setConvertGas(10**6, sender=stranger)  # beyond the router's budget
    with reverts_with(error_data(router.FeedCallFailed, share.address, share.address)):
        router.refreshShareRate(share, sender=stranger)
    assert router.shareConfig(share).snapshotTime == before.snapshotTime
