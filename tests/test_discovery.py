"""Discovery against a real Anvil: every account that can hold collateral is found, the checkpoint lets a
restart resume without a backfill, and the metrics endpoint serves what the keeper counts."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

from conftest import fund, open_position
from web3 import Web3

from keeper.discovery import CHECKPOINT, Discovery
from keeper.metrics import Metrics
from keeper.store import Store


def _discovery(system: Any, w3: Web3, store: Store, confirmations: int = 0, chunk: int = 2_000) -> Discovery:
    dep = system.deployment
    engine = dep.contracts["MarginEngine"]
    return Discovery(
        w3, store, engine["address"], dep.abis["MarginEngine"], engine["block"], confirmations, chunk_size=chunk
    )


def test_finds_deposits_for_others_and_moved_collateral(
    system: Any, chain: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """Deposits by the owner, deposits made for another owner, and a sub-account that only ever received
    collateral through moveCollateral are all tracked; small chunks give the same result."""
    open_position(system, alice, 0, {"WETH": 10**18})
    fund(system, bob, "WBTC", 10**8)
    system.engine.deposit(alice, 7, system.wbtc, 10**8, sender=bob)  # bob pays into alice's sub-account 7
    system.engine.moveCollateral(0, 200, system.weth, 10**17, sender=alice)  # sub 200 never saw a Deposited
    w3 = Web3(Web3.HTTPProvider(chain.provider.uri))
    expected = [(alice.address, 0), (alice.address, 7), (alice.address, 200)]
    for chunk in (2_000, 1):
        store = Store(tmp_path / f"s{chunk}.db")
        _discovery(system, w3, store, chunk=chunk).scan()
        assert sorted(store.accounts()) == sorted(expected)


def test_restart_resumes_from_the_checkpoint(system: Any, chain: Any, alice: Any, bob: Any, tmp_path: Path) -> None:
    """Confirmed blocks are checkpointed; a new Discovery on the same store scans only what came after, and an
    account in the unconfirmed tip is tracked at once without moving the checkpoint."""
    w3 = Web3(Web3.HTTPProvider(chain.provider.uri))
    store = Store(tmp_path / "state.db")
    open_position(system, alice, 0, {"WETH": 10**18})
    chain.mine(3)
    first = _discovery(system, w3, store, confirmations=2).scan()
    checkpoint = store.get_checkpoint(CHECKPOINT)
    assert checkpoint is not None
    assert checkpoint[0] == w3.eth.block_number - 2
    assert checkpoint[1] == Web3.to_hex(w3.eth.get_block(checkpoint[0])["hash"])
    assert first.new_accounts == 1

    open_position(system, bob, 3, {"LINK": 10**18})  # lands in the unconfirmed tip
    second = _discovery(system, w3, store, confirmations=2).scan()  # a "restarted" keeper
    assert second.from_block == checkpoint[0] + 1  # no backfill from the deployment block
    assert second.new_accounts == 1
    assert (bob.address, 3) in store.accounts()
    assert store.get_checkpoint(CHECKPOINT)[0] == w3.eth.block_number - 2


def test_metrics_endpoint_serves_the_keepers_counters(tmp_path: Path) -> None:
    """The Prometheus endpoint exposes the documented names with their current values."""
    metrics = Metrics()
    metrics.accounts_tracked.set(42)
    metrics.liquidations_sent.inc(3)
    metrics.latency_blocks.observe(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "keeper_accounts_tracked 42.0" in body
    assert "keeper_liquidations_sent_total 3.0" in body
    assert 'keeper_liquidation_latency_blocks_bucket{le="1.0"} 1.0' in body
