"""Which chains are throw-away development chains: there, and only there, dev accounts and raw keys are acceptable
and an idle automining node is not a stale one."""

from __future__ import annotations

LOCAL_CHAIN_IDS = frozenset({31337, 1337})  # Anvil/Hardhat and Ganache/Geth --dev


def is_local_chain(chain_id: int) -> bool:
    """A throw-away development chain, where dev accounts and raw keys are acceptable."""
    return chain_id in LOCAL_CHAIN_IDS
