"""Deploy and drive real Chainlink feed contracts (from `thirdparty`) on the test Anvil.

- `flux(owner, oracle, decimals)`: a FluxAggregator with one oracle, no LINK payment (one submission per round);
  `submit(agg, oracle, answer)` completes its next round at the current block.
- `proxy(owner, aggregator)`: an AggregatorProxy; `switch(proxy, owner, aggregator)` proposes and confirms a new
  aggregator, starting a new phase (round ids carry the phase in bits 64..79).
- `sequencer_optimism(...)` / `sequencer_arbitrum(...)`: the L2 sequencer-uptime feeds as shipped, updated through
  their own sender checks (`set_sequencer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from thirdparty import chainlink

ZERO = "0x" + "00" * 20
PHASE_OFFSET = 64
# Arbitrum's L1 -> L2 address alias (AddressAliasHelper.applyL1ToL2Alias).
ARBITRUM_ALIAS_OFFSET = 0x1111000000000000000000000000000000001111


def flux(owner: Any, oracle: Any, decimals: int, description: str = "X / USD") -> Any:
    """A FluxAggregator (no LINK payment, 1-hour round timeout) with `oracle` as its only oracle."""
    agg = owner.deploy(chainlink("FluxAggregator"), ZERO, 0, 3600, ZERO, -(2**255), 2**255 - 1, decimals, description)
    agg.changeOracles([], [oracle.address], [owner.address], 1, 1, 0, sender=owner)
    return agg


def submit(agg: Any, oracle: Any, answer: int) -> int:
    """The oracle answers the aggregator's next round (one submission completes it); returns the round id."""
    round_id = int(agg.latestRound()) + 1
    agg.submit(round_id, answer, sender=oracle)
    return round_id


def proxy(owner: Any, aggregator: Any) -> Any:
    return owner.deploy(chainlink("AggregatorProxy"), aggregator.address)


def switch(feed_proxy: Any, owner: Any, aggregator: Any) -> int:
    """Point the proxy at `aggregator` (propose, confirm); returns the new phase id."""
    feed_proxy.proposeAggregator(aggregator.address, sender=owner)
    feed_proxy.confirmAggregator(aggregator.address, sender=owner)
    return int(feed_proxy.phaseId())


def phase_of(round_id: int) -> int:
    return round_id >> PHASE_OFFSET


@dataclass
class UptimeFeed:
    """A sequencer-uptime feed and how to send it a status: `kind` is "optimism" or "arbitrum"."""

    kind: str
    feed: Any
    operator: Any  # the account that sends the updates (through the messenger on Optimism)
    l1_sender: str
    messenger: Any | None = None


def sequencer_optimism(owner: Any, project: Any, l1_sender: str) -> UptimeFeed:
    """OptimismSequencerUptimeFeed, initially up, reached through a stand-in L2 cross-domain messenger
    (`L2MessengerStandIn`: it reports `l1_sender` as the cross-domain sender, as Optimism's messenger does while
    relaying a message from L1)."""
    messenger = owner.deploy(project.L2MessengerStandIn)
    feed = owner.deploy(chainlink("OptimismSequencerUptimeFeed"), l1_sender, messenger.address, False)
    return UptimeFeed("optimism", feed, owner, l1_sender, messenger)


def sequencer_arbitrum(owner: Any, chain: Any, accounts: Any, l1_sender: str) -> UptimeFeed:
    """ArbitrumSequencerUptimeFeed over a real Chainlink Flags contract, initialised (up); its updates come from
    the L1 sender's L2 alias, impersonated on Anvil."""
    raising = owner.deploy(chainlink("SimpleWriteAccessController"))
    lowering = owner.deploy(chainlink("SimpleWriteAccessController"))
    flags = owner.deploy(chainlink("Flags"), raising.address, lowering.address)
    feed = owner.deploy(chainlink("ArbitrumSequencerUptimeFeed"), flags.address, l1_sender)
    for controller in (raising, lowering):
        controller.addAccess(feed.address, sender=owner)
    flags.addAccess(feed.address, sender=owner)  # the feed reads its flag
    feed.initialize(sender=owner)
    alias = to_checksum_address(((int(l1_sender, 16) + ARBITRUM_ALIAS_OFFSET) % 2**160).to_bytes(20, "big"))
    chain.provider.set_balance(alias, 10**18)
    return UptimeFeed("arbitrum", feed, accounts[alias], l1_sender)


def set_sequencer(uptime: UptimeFeed, down: bool, timestamp: int) -> None:
    """Send the feed a status change stamped `timestamp`, the way its L2 bridge would."""
    if uptime.messenger is not None:
        data = uptime.feed.updateStatus.encode_input(down, timestamp)
        uptime.messenger.relay(uptime.feed.address, uptime.l1_sender, data, sender=uptime.operator)
    else:
        uptime.feed.updateStatus(down, timestamp, sender=uptime.operator)
