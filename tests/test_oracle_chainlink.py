"""The router against real Chainlink contracts (compiled from @chainlink/contracts, see tests/thirdparty.py), beside
the mock: a proxy whose aggregator changes (to other decimals too), a Flux aggregator before its first round, and the
Optimism and Arbitrum sequencer-uptime feeds gating borrowing through the router exactly as the mock does."""

from __future__ import annotations

from typing import Any

import pytest
from chainlink_feeds import flux, phase_of, proxy, sequencer_arbitrum, sequencer_optimism, set_sequencer, submit, switch
from conftest import MAX_UINT, WAD, fund, open_position
from test_oracle_router import UNLISTED, error_data, head_time, reverts_with, view
from test_oracle_try_price import try_price

GRACE = 3600
L1_SENDER = "0x00000000000000000000000000000000000A11CE"
WIDE_BOUNDS = (1, 10**30)  # bounds that a 100x mispricing would pass: only the decimals can catch it


@pytest.fixture
def oracle(accounts: Any) -> Any:
    """The account that reports to the Flux aggregators."""
    return accounts[8]


def test_proxy_switch_to_other_decimals_is_priced_right(system: Any, admin: Any, chain: Any, oracle: Any) -> None:
    """A real AggregatorProxy moves from an 8-decimal to a 6-decimal and then an 18-decimal aggregator (new phases):
    each answer is priced with the decimals of the aggregator that gave it, never with the decimals cached at
    setFeed (which would price the 6-decimal answer 100x too low)."""
    router = system.router
    eight = flux(admin, oracle, 8)
    submit(eight, oracle, 2000 * 10**8)
    feed = proxy(admin, eight)
    router.setFeed(UNLISTED, feed, 3600, *WIDE_BOUNDS, sender=admin)
    assert router.feedConfig(UNLISTED).feedDecimals == 8
    assert router.price(UNLISTED) == 2000 * WAD

    for decimals, answer in ((6, 1999_123456), (18, 2001 * WAD + 7)):
        agg = flux(admin, oracle, decimals)
        submit(agg, oracle, answer)
        phase = switch(feed, admin, agg)
        assert phase_of(feed.latestRoundData()[0]) == phase
        assert feed.decimals() == decimals
        expected = answer * 10 ** (18 - decimals)
        assert router.price(UNLISTED) == expected
        assert try_price(chain, router, UNLISTED) == (True, expected)


def test_proxy_switch_to_more_than_18_decimals_is_refused(system: Any, admin: Any, chain: Any, oracle: Any) -> None:
    """A proxy pointed at an aggregator with 20 decimals is refused with UnsupportedFeedDecimals(asset, feed, 20)
    (tryPrice: false), until it is pointed back at one the router can scale."""
    router = system.router
    first = flux(admin, oracle, 8)
    submit(first, oracle, 2000 * 10**8)
    feed = proxy(admin, first)
    router.setFeed(UNLISTED, feed, 3600, *WIDE_BOUNDS, sender=admin)
    wide = flux(admin, oracle, 20)
    submit(wide, oracle, 2000 * 10**20)
    switch(feed, admin, wide)
    with reverts_with(error_data(router.UnsupportedFeedDecimals, UNLISTED, feed.address, 20)):
        view(chain, router, "price", UNLISTED)
    assert try_price(chain, router, UNLISTED) == (False, 0)
    switch(feed, admin, first)
    assert router.price(UNLISTED) == 2000 * WAD


def test_proxy_switch_reprices_collateral_in_the_engine(
    system: Any, admin: Any, alice: Any, chain: Any, oracle: Any
) -> None:
    """WETH priced through a real proxy: after the proxy moves to a 6-decimal aggregator, the engine values alice's
    WETH at the same $2,000 (health unchanged), so she can still borrow what her margin allows."""
    router, engine = system.router, system.engine
    eight = flux(admin, oracle, 8)
    submit(eight, oracle, 2000 * 10**8)
    feed = proxy(admin, eight)
    router.setFeed(system.weth, feed, 3600, *WIDE_BOUNDS, sender=admin)
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1000 * 10**6)
    before = engine.accountHealth(alice, 0)
    six = flux(admin, oracle, 6)
    submit(six, oracle, 2000 * 10**6)
    switch(feed, admin, six)
    after = engine.accountHealth(alice, 0)
    assert after.collateralValue == before.collateralValue == 2000 * WAD
    receipt = engine.borrow(0, 500 * 10**6, alice, sender=alice)
    assert [log.assets for log in engine.Borrowed.from_receipt(receipt)] == [500 * 10**6]


@pytest.mark.parametrize("through_proxy", [False, True])
def test_flux_before_first_round_is_refused(
    system: Any, admin: Any, chain: Any, oracle: Any, through_proxy: bool
) -> None:
    """A Flux aggregator that has no round yet reverts latestRoundData; the router refuses it with
    FeedCallFailed(asset, feed) (tryPrice: false), directly or behind a proxy, and prices it after its first round."""
    router = system.router
    agg = flux(admin, oracle, 8)
    feed = proxy(admin, agg) if through_proxy else agg
    router.setFeed(UNLISTED, feed, 3600, *WIDE_BOUNDS, sender=admin)
    with reverts_with(error_data(router.FeedCallFailed, UNLISTED, feed.address)):
        view(chain, router, "price", UNLISTED)
    assert try_price(chain, router, UNLISTED) == (False, 0)
    submit(agg, oracle, 1234 * 10**8)
    assert router.price(UNLISTED) == 1234 * WAD


# ------------------------------------------------------------------------------------------------ sequencer


@pytest.fixture(params=["optimism", "arbitrum"])
def uptime(request: Any, system: Any, admin: Any, chain: Any, accounts: Any, project: Any) -> Any:
    if request.param == "optimism":
        return sequencer_optimism(admin, project, L1_SENDER)
    return sequencer_arbitrum(admin, chain, accounts, L1_SENDER)


def _fresh_prices(system: Any) -> None:
    for symbol in ("WETH", "USDC"):
        system.set_price(symbol, 2000 if symbol == "WETH" else 1)


def test_real_uptime_feed_gates_borrowing_like_the_mock(
    system: Any, admin: Any, alice: Any, liquidator: Any, chain: Any, uptime: Any
) -> None:
    """With a real uptime feed: the router needs read access (without it the feed refuses the router and borrowing
    is refused as SequencerDown); after deployment the grace period applies; once over, borrowing works; a down
    report refuses borrow and withdraw-with-debt with SequencerDown but a liquidation still goes through; a recovery
    starts a new grace period from its status time."""
    router, engine, weth = system.router, system.engine, system.weth
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * 10**6)
    router.setSequencerFeed(uptime.feed, GRACE, sender=admin)
    down = error_data(router.SequencerDown)

    with reverts_with(down):
        engine.borrow(0, 10 * 10**6, alice, sender=alice)
    uptime.feed.addAccess(router, sender=admin)

    started = int(uptime.feed.latestRoundData()[2])
    assert uptime.feed.latestRoundData()[1] == 0
    with reverts_with(error_data(router.SequencerGracePeriod, started, GRACE)):
        engine.borrow(0, 10 * 10**6, alice, sender=alice)

    chain.pending_timestamp = started + GRACE + 1
    _fresh_prices(system)
    receipt = engine.borrow(0, 10 * 10**6, alice, sender=alice)
    assert [log.assets for log in engine.Borrowed.from_receipt(receipt)] == [10 * 10**6]

    set_sequencer(uptime, True, head_time(chain))
    assert uptime.feed.latestRoundData()[1] == 1
    with reverts_with(down):
        engine.borrow(0, 10 * 10**6, alice, sender=alice)
    with reverts_with(down):
        engine.withdraw(0, weth, 1, alice, sender=alice)

    system.set_price("WETH", 1700)
    assert engine.accountHealth(alice, 0).health < WAD
    fund(system, liquidator, "USDC", 2000 * 10**6)
    receipt = engine.liquidate(alice, 0, weth, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    (log,) = engine.Liquidated.from_receipt(receipt)
    assert log.repaid > 0
    assert weth.balanceOf(liquidator) == log.seized > 0

    back = head_time(chain)
    set_sequencer(uptime, False, back)
    assert tuple(uptime.feed.latestRoundData()[1:3]) == (0, back)
    fund(system, alice, "WETH", WAD)
    engine.deposit(alice, 0, weth, WAD, sender=alice)
    with reverts_with(error_data(router.SequencerGracePeriod, back, GRACE)):
        engine.borrow(0, 10 * 10**6, alice, sender=alice)
    chain.pending_timestamp = back + GRACE + 1
    _fresh_prices(system)
    engine.borrow(0, 10 * 10**6, alice, sender=alice)
