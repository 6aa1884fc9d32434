"""How fast the optimizer reads a feed's round history: one eth_call per round (the reader before issue 12 item 13)
against `keeper.optimizer.volatility.read_history` (JSON-RPC batch requests), on the same local chain and the
same rounds.

    python benchmarks/feed_history.py --rounds 720
    python benchmarks/feed_history.py --rounds 720 --latency-ms 20    # as if the node were 20 ms away

A fresh Anvil gets two real Chainlink feeds from npm (`tests/thirdparty.py`), each a FluxAggregator behind an
AggregatorProxy, with `--rounds` rounds an hour apart (720 = the optimizer's 30-day window): feed A in one phase,
feed B in two (the aggregator changed halfway, 8 then 18 decimals). Then, at one pinned block:

- **before**: the loop the keeper ran before, `latestRoundData()` then `getRoundData(id - 1)` per round through a
  web3 contract, one request each (feed A only: it stopped at a phase start, so it cannot read feed B);
- **after**: `read_history` with batches of 1, 10, 100 (the default) and 500 calls, on feed A, and with the default on
  feed B (across the phase change).

Every variant must return the same rounds as the reference walk (the run fails otherwise). `--latency-ms` adds that
delay to every HTTP request on the client side, a stand-in for a remote node. Requests are counted on the client.
Each figure is the median of `--reps` runs (default 3). The last line is exactly:
`feed_history rounds=N before_s=X before_requests=R after_s=Y after_requests=Q speedup=Z`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from thirdparty import artifact  # noqa: E402
from web3 import Web3  # noqa: E402
from web3.providers import HTTPProvider  # noqa: E402
from web3.types import RPCEndpoint, RPCResponse  # noqa: E402

from keeper.chain.node import AnvilProcess  # noqa: E402
from keeper.optimizer import volatility as vol  # noqa: E402

ZERO = "0x" + "00" * 20
FEED_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": name,
        "stateMutability": "view",
        "inputs": inputs,
        "outputs": [
            {"name": "roundId", "type": "uint80"},
            {"name": "answer", "type": "int256"},
            {"name": "startedAt", "type": "uint256"},
            {"name": "updatedAt", "type": "uint256"},
            {"name": "answeredInRound", "type": "uint80"},
        ],
    }
    for name, inputs in (("latestRoundData", []), ("getRoundData", [{"name": "_roundId", "type": "uint80"}]))
]


class CountingProvider(HTTPProvider):
    """HTTP provider that counts requests (a batch is one) and waits `latency_s` before each."""

    def __init__(self, url: str, latency_s: float) -> None:
        super().__init__(url, request_kwargs={"timeout": 120})
        self.latency_s = latency_s
        self.requests = 0
        self.methods: dict[str, int] = {}

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.requests += 1
        self.methods[method] = self.methods.get(method, 0) + 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return super().make_request(method, params)

    def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        self.requests += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return super().make_batch_request(requests)


def say(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------------- the chain


def deploy(w3: Web3, owner: str, name: str, *args: Any) -> Any:
    art = artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    # Explicit gas: Anvil's gas estimate of the FluxAggregator constructor reverts (SafeMath), its deployment does not.
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(*args).transact({"from": owner, "gas": 8_000_000})
    )
    return w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])


def flux(w3: Web3, owner: str, oracle: str, decimals: int) -> Any:
    agg = deploy(w3, owner, "FluxAggregator", ZERO, 0, 3600, ZERO, -(2**255), 2**255 - 1, decimals, "ETH / USD")
    tx = agg.functions.changeOracles([], [oracle], [owner], 1, 1, 0).transact({"from": owner})
    w3.eth.wait_for_transaction_receipt(tx)
    return agg


def push(w3: Web3, agg: Any, oracle: str, times: Sequence[int], prices: Sequence[float]) -> None:
    """One round per price, each in its own block at its time."""
    decimals = int(agg.functions.decimals().call())
    first = int(agg.functions.latestRound().call()) + 1
    for i, (t, price) in enumerate(zip(times, prices, strict=True)):
        w3.provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [t])
        tx = agg.functions.submit(first + i, round(price * 10**decimals)).transact({"from": oracle, "gas": 300_000})
        if w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.005)["status"] != 1:
            raise SystemExit(f"round {first + i} of {agg.address} reverted")


def build(w3: Web3, rounds: int, seed: int) -> tuple[str, str, int]:
    """Feeds A (one phase) and B (two phases), `rounds` rounds each an hour apart; returns their proxies and the
    block they are read at."""
    owner, oracle = w3.eth.accounts[0], w3.eth.accounts[1]
    rng = np.random.default_rng(seed)
    prices = 2000.0 * np.exp(np.cumsum(rng.standard_normal(rounds) * 0.8 * np.sqrt(3600 / (365 * 86400))))
    start = int(w3.eth.get_block("latest")["timestamp"]) + 60
    times = [start + 3600 * i for i in range(rounds)]
    a = flux(w3, owner, oracle, 8)
    b1, b2 = flux(w3, owner, oracle, 8), flux(w3, owner, oracle, 18)
    push(w3, a, oracle, times[:1], prices[:1])  # a proxy reads its aggregator's first round when it is set
    proxy_a = deploy(w3, owner, "AggregatorProxy", a.address)
    push(w3, b1, oracle, [times[0] + 60], prices[:1])
    proxy_b = deploy(w3, owner, "AggregatorProxy", b1.address)
    half = rounds // 2
    for i in range(1, rounds):
        push(w3, a, oracle, times[i : i + 1], prices[i : i + 1])
        if i < half:
            push(w3, b1, oracle, [times[i] + 60], prices[i : i + 1])
        else:
            if i == half:
                for call in (proxy_b.functions.proposeAggregator, proxy_b.functions.confirmAggregator):
                    w3.eth.wait_for_transaction_receipt(call(b2.address).transact({"from": owner}))
            push(w3, b2, oracle, [times[i] + 60], prices[i : i + 1])
    return proxy_a.address, proxy_b.address, int(w3.eth.block_number)


# --------------------------------------------------------------------------------------------- the readers


def one_call_per_round(w3: Web3, feed: str, max_rounds: int, block: int) -> list[vol.Round]:
    """The reader before issue 12 item 13: latestRoundData, then getRoundData(id - 1) per round through a web3
    contract, up to the start of the phase."""
    c = w3.eth.contract(address=Web3.to_checksum_address(feed), abi=FEED_ABI)
    rid, answer, _s, updated, _a = c.functions.latestRoundData().call(block_identifier=block)
    out = [vol.Round(int(rid), int(answer), int(updated))]
    phase = int(rid) >> 64
    while len(out) < max_rounds:
        prev = out[-1].round_id - 1
        if prev >> 64 != phase or prev & ((1 << 64) - 1) == 0:
            break
        rid, answer, _s, updated, _a = c.functions.getRoundData(prev).call(block_identifier=block)
        if int(updated) == 0:
            break
        out.append(vol.Round(int(rid), int(answer), int(updated)))
    out.reverse()
    return out


def timed(reps: int, provider: CountingProvider, run: Callable[[], list[vol.Round]]) -> tuple[float, int, list[Any]]:
    """Median seconds over `reps` runs, the requests of one run, and the rounds it read."""
    seconds, requests, rounds = [], 0, []
    for _ in range(reps):
        provider.requests = 0
        provider.methods = {}
        started = time.perf_counter()
        rounds = run()
        seconds.append(time.perf_counter() - started)
        requests = provider.requests
    return statistics.median(seconds), requests, rounds


def key(rounds: Sequence[vol.Round]) -> list[tuple[int, int, int]]:
    return [(r.round_id, r.answer, r.updated_at) for r in rounds]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=720, help="rounds per feed (default 720: 30 days hourly)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every HTTP request (default 0)")
    p.add_argument("--reps", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.rounds < 4:
        raise SystemExit("--rounds must be at least 4")
    with AnvilProcess() as node:
        say(f"anvil at {node.url}; pushing {args.rounds} rounds to each of two feeds ...")
        setup = Web3(HTTPProvider(node.url, request_kwargs={"timeout": 120}))
        started = time.perf_counter()
        feed_a, feed_b, block = build(setup, args.rounds, args.seed)
        say(
            f"pushed in {time.perf_counter() - started:.1f} s; reading at block {block}, latency {args.latency_ms:g} ms"
        )
        provider = CountingProvider(node.url, args.latency_ms / 1000)
        w3 = Web3(provider)
        w3.eth.chain_id  # noqa: B018 (web3 caches it; the first contract call would pay for it)
        n = args.rounds
        before_s, before_req, reference = timed(args.reps, provider, lambda: one_call_per_round(w3, feed_a, n, block))
        say(f"before: requests by method, one run: {provider.methods} (web3.py asks the chain id with each call)")
        if len(reference) != n:
            raise SystemExit(f"the reference walk read {len(reference)} rounds, not {n}")
        say(f"{'reader':46} {'feed':6} {'rounds':>6} {'seconds':>8} {'requests':>8} {'eth_calls':>9}")
        say(f"{'before: one eth_call per round (web3)':46} {'A':6} {n:6} {before_s:8.3f} {before_req:8} {n:9}")
        after: tuple[float, int] = (0.0, 0)
        for batch in (1, 10, vol.BATCH, 500):

            def batched(b: int = batch) -> list[vol.Round]:
                return vol.read_history(w3, feed_a, n, block=block, batch=b).rounds

            s, req, hist = timed(args.reps, provider, batched)
            if key(hist) != key(reference):
                raise SystemExit(f"read_history(batch={batch}) read other rounds than the reference walk")
            calls = vol.read_history(w3, feed_a, n, block=block, batch=batch).calls
            say(f"{f'after: read_history, batches of {batch}':46} {'A':6} {n:6} {s:8.3f} {req:8} {calls:9}")
            if batch == vol.BATCH:
                after = (s, req)
        s, req, hist_b = timed(args.reps, provider, lambda: vol.read_history(w3, feed_b, n, block=block).rounds)
        history_b = vol.read_history(w3, feed_b, n, block=block)
        if len(hist_b) != n or history_b.phases != [2, 1]:
            raise SystemExit(f"feed B: read {len(hist_b)} rounds in phases {history_b.phases}, expected {n} in [2, 1]")
        label = f"after: read_history, batches of {vol.BATCH}, 2 phases"
        say(f"{label:46} {'B':6} {n:6} {s:8.3f} {req:8} {history_b.calls:9}")
    speedup = before_s / after[0] if after[0] else float("inf")
    say(
        f"feed_history rounds={n} before_s={before_s:.3f} before_requests={before_req} after_s={after[0]:.3f} "
        f"after_requests={after[1]} speedup={speedup:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
