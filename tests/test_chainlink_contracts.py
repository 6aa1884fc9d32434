"""The real Chainlink contracts the router tests use (compiled from @chainlink/contracts by tests/thirdparty.py)
behave as the router's rules assume: the proxy's round ids carry the phase, its decimals follow the aggregator,
a Flux aggregator refuses to answer before its first round, and the uptime feeds accept only their bridge."""

from __future__ import annotations

from typing import Any

import pytest
from ape.exceptions import ContractLogicError
from chainlink_feeds import flux, phase_of, proxy, sequencer_arbitrum, sequencer_optimism, set_sequencer, submit, switch
from thirdparty import CACHE, artifact


def test_artifacts_are_cached_by_input_hash() -> None:
    """Compiling twice yields the same artifact from one cache file per compiler."""
    first = artifact("AggregatorProxy")
    assert first["bytecode"].startswith("0x60")
    assert any(p.name.startswith("solc-0.6.6-") for p in CACHE.glob("*.json"))
    artifact.cache_clear()
    assert artifact("AggregatorProxy") == first


def test_proxy_phases_and_decimals(accounts: Any, chain: Any) -> None:
    """Round ids from the proxy are (phase << 64 | aggregator round); a confirmed aggregator starts phase 2 and
    the proxy's decimals become the new aggregator's; the old phase's rounds stay readable."""
    owner, oracle = accounts[0], accounts[1]
    first = flux(owner, oracle, 8)
    submit(first, oracle, 2000 * 10**8)
    submitted_at = chain.blocks.head.timestamp
    feed = proxy(owner, first)
    rid, answer, _, updated, _ = feed.latestRoundData()
    assert (phase_of(rid), rid & (2**64 - 1), answer) == (1, 1, 2000 * 10**8)
    assert updated == submitted_at
    assert feed.decimals() == 8

    second = flux(owner, oracle, 18)
    submit(second, oracle, 2001 * 10**18)
    assert switch(feed, owner, second) == 2
    rid2, answer2, _, _, _ = feed.latestRoundData()
    assert (phase_of(rid2), rid2 & (2**64 - 1), answer2) == (2, 1, 2001 * 10**18)
    assert feed.decimals() == 18
    assert feed.getRoundData(rid)[1] == 2000 * 10**8


def test_flux_reverts_before_its_first_round(accounts: Any) -> None:
    """A Flux aggregator with no completed round reverts latestRoundData ("No data present")."""
    agg = flux(accounts[0], accounts[1], 8)
    with pytest.raises(ContractLogicError, match="No data present"):
        agg.latestRoundData()
    submit(agg, accounts[1], 5)
    assert agg.latestRoundData()[1] == 5


@pytest.mark.parametrize("kind", ["optimism", "arbitrum"])
def test_uptime_feeds_accept_only_their_bridge(accounts: Any, chain: Any, project: Any, kind: str) -> None:
    """An uptime feed starts up (answer 0), records down (1) with the status time in startedAt when its bridge
    sends it, and refuses the same call from anyone else."""
    owner, l1_sender = accounts[0], accounts[7].address
    if kind == "optimism":
        uptime = sequencer_optimism(owner, project, l1_sender)
    else:
        uptime = sequencer_arbitrum(owner, chain, accounts, l1_sender)
    assert uptime.feed.latestRoundData()[1] == 0
    at = chain.blocks.head.timestamp
    set_sequencer(uptime, True, at)
    _, answer, started, _, _ = uptime.feed.latestRoundData()
    assert (answer, started) == (1, at)
    with pytest.raises(ContractLogicError):
        uptime.feed.updateStatus(False, at + 1, sender=owner)
    assert uptime.feed.latestRoundData()[1] == 1
