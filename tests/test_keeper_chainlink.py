"""The keeper against real Chainlink contracts (compiled from @chainlink/contracts, see tests/thirdparty.py): a real
AggregatorProxy whose aggregator changes to one with other decimals in the middle of a crash, and a real sequencer
uptime feed reporting the sequencer down. A real keeper (`build_keeper` + `tick`) on a real Anvil; what it did is
read from the chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chainlink_feeds import flux, proxy, sequencer_optimism, set_sequencer, submit, switch
from conftest import WAD, fund, open_position, reverts_with
from test_keeper_e2e import KEEPER_INDEX, _keeper

USDC = 10**6
L1_SENDER = "0x00000000000000000000000000000000000A11CE"


def _liquidated(system: Any, owner: Any, start: int) -> list[Any]:
    logs = system.engine.Liquidated.query("*", start_block=start)
    return [row for _, row in logs.iterrows() if row["event_arguments"]["owner"] == owner.address]


def test_the_keeper_prices_a_proxy_phase_change_to_other_decimals_right(
    system: Any, chain: Any, accounts: Any, admin: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """WETH is priced through a real AggregatorProxy over an 8-decimal Flux aggregator. Mid-crash the proxy moves
    to a 6-decimal aggregator answering $1,700: alice (health 0.969 there) is liquidated, and bob, who is still
    healthy at $1,700, is not; a keeper or router that kept the old decimals would see WETH at $17."""
    oracle = accounts[8]
    eight = flux(admin, oracle, 8)
    submit(eight, oracle, 2000 * 10**8)
    feed = proxy(admin, eight)
    system.router.setFeed(system.weth, feed, 3600, 1, 10**30, sender=admin)
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * USDC)  # 0.969 at $1,700
    open_position(system, bob, 0, {"WETH": WAD}, borrow=1200 * USDC)  # 1.20 at $1,700
    fund(system, accounts[KEEPER_INDEX], "USDC", 100_000 * USDC)
    keeper = _keeper(system, chain, tmp_path)
    keeper.ensure_allowance()
    keeper.tick()
    start = chain.blocks.head.number
    six = flux(admin, oracle, 6)
    submit(six, oracle, 1700 * 10**6)
    switch(feed, admin, six)
    assert int(system.router.price(system.weth)) == 1700 * WAD
    for _ in range(3):
        chain.mine()
        keeper.tick()
    assert len(_liquidated(system, alice, start)) == 1
    assert _liquidated(system, bob, start) == []
    assert int(system.engine.accountHealth(bob, 0).health) > WAD


def test_the_keeper_liquidates_while_a_real_uptime_feed_reports_the_sequencer_down(
    system: Any, chain: Any, project: Any, accounts: Any, admin: Any, alice: Any, tmp_path: Path
) -> None:
    """A real OptimismSequencerUptimeFeed says the sequencer is down: new risk is refused (SequencerDown), but the
    keeper's liquidation of an account that fell under water goes through: the gate is for new risk only."""
    open_position(system, alice, 0, {"WETH": WAD}, borrow=1500 * USDC)
    uptime = sequencer_optimism(admin, project, L1_SENDER)
    uptime.feed.addAccess(system.router, sender=admin)
    system.router.setSequencerFeed(uptime.feed, 3600, sender=admin)
    set_sequencer(uptime, True, chain.blocks.head.timestamp)
    assert uptime.feed.latestRoundData()[1] == 1  # down
    fund(system, accounts[KEEPER_INDEX], "USDC", 100_000 * USDC)
    keeper = _keeper(system, chain, tmp_path)
    keeper.ensure_allowance()
    start = chain.blocks.head.number
    system.set_price("WETH", 1700)
    for _ in range(3):
        chain.mine()
        keeper.tick()
    assert len(_liquidated(system, alice, start)) == 1
    open_position(system, alice, 1, {"WETH": WAD})
    with reverts_with(system.router.SequencerDown):
        system.engine.borrow(1, 1 * USDC, alice, sender=alice)
