"""Discovery against a real Anvil: every account that can hold collateral is found, the checkpoint lets a
restart resume without a backfill, and the metrics endpoint serves what the keeper counts."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import fund, open_position
from web3 import Web3

from keeper.chain.deployment import connect
from keeper.chain.discovery import CHECKPOINT, Discovery
from keeper.chain.index import SqliteIndex
from keeper.drills.relay import LogCapProxy
from keeper.engine.metrics import Metrics


def _discovery(system: Any, w3: Web3, store: SqliteIndex, confirmations: int = 0, chunk: int = 2_000) -> Discovery:
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
        store = SqliteIndex.open(tmp_path / f"s{chunk}.db")
        _discovery(system, w3, store, chunk=chunk).scan()
        assert sorted(store.accounts()) == sorted(expected)


def test_restart_resumes_from_the_checkpoint(system: Any, chain: Any, alice: Any, bob: Any, tmp_path: Path) -> None:
    """Confirmed blocks are checkpointed; a new Discovery on the same store scans only what came after, and an
    account in the unconfirmed tip is tracked at once without moving the checkpoint."""
    w3 = Web3(Web3.HTTPProvider(chain.provider.uri))
    store = SqliteIndex.open(tmp_path / "state.db")
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


def _spread_accounts(system: Any, chain: Any, owner: Any, dense: int, sparse_gap: int) -> list[tuple[str, int]]:
    """`dense` deposits, one per block (automine), then `sparse_gap` empty blocks and one last deposit: a dense
    stretch of history, a sparse one, and an account at the far end."""
    fund(system, owner, "WETH", 10**18)
    subs = list(range(10, 10 + dense))
    for sub in subs:
        system.engine.deposit(owner, sub, system.weth, 10**15, sender=owner)
    chain.mine(sparse_gap)
    system.engine.deposit(owner, 99, system.weth, 10**15, sender=owner)
    return [(owner.address, s) for s in [*subs, 99]]


CAPS = [
    ("alchemy", {"max_blocks": 8}),
    ("infura", {"max_blocks": 8}),
    ("quicknode", {"max_blocks": 8}),
    ("geth", {"max_blocks": 8}),
    ("infura", {"max_results": 3}),
    ("alchemy", {"max_results": 3}),
]


@pytest.mark.parametrize(("style", "cap"), CAPS, ids=[f"{s}-{next(iter(c))}" for s, c in CAPS])
def test_discovery_through_a_provider_that_caps_log_queries(
    system: Any, chain: Any, alice: Any, tmp_path: Path, style: Any, cap: dict[str, int]
) -> None:
    """Through the project's relay, a provider that refuses eth_getLogs over a block range or a result count with
    its real error (JSON-RPC error, or QuickNode's HTTP 413): every account is found, exactly those the chain's own
    logs hold; no answered query broke the cap; the range shrank on the refusals and grew back over the sparse
    stretch; a restarted scan (the tip) goes through as well."""
    expected = _spread_accounts(system, chain, alice, dense=12, sparse_gap=120)
    direct = SqliteIndex.open(tmp_path / "direct.db")
    _discovery(system, Web3(Web3.HTTPProvider(chain.provider.uri)), direct).scan()
    assert set(expected) <= set(direct.accounts())

    with LogCapProxy(chain.provider.uri, style=style, **cap) as proxy:
        w3 = connect(proxy.url)  # as the keeper connects: no retries on HTTP errors
        store = SqliteIndex.open(tmp_path / "capped.db")
        discovery = _discovery(system, w3, store, chunk=64)
        discovery.scan()
        assert store.accounts() == direct.accounts()
        stats = proxy.stats
        assert stats.refused, "the cap was never hit: the test does not test anything"
        if "max_blocks" in cap:
            assert all(hi - lo + 1 <= cap["max_blocks"] for lo, hi in stats.answered)
            # A stated limit is learnt: after the first refusal, no request asks for more than the limit.
            first = stats.requests.index(stats.refused[0])
            assert all(hi - lo + 1 <= cap["max_blocks"] for lo, hi in stats.requests[first + 1 :])
            assert len(stats.refused) == 1
        else:
            sizes = [hi - lo + 1 for lo, hi in stats.answered]
            smallest = sizes.index(min(sizes))
            assert max(sizes[smallest:]) > min(sizes), sizes  # grew back after the dense stretch
        alice_sub = (alice.address, 200)
        system.engine.moveCollateral(99, 200, system.weth, 10**14, sender=alice)
        discovery.scan()
        assert alice_sub in store.accounts()


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
