"""The optimizer reads a feed's history as Chainlink serves it and refuses thin or broken data (issue 12, item 13),
against real Chainlink contracts on Anvil (FluxAggregator phases behind an AggregatorProxy, from npm):

- the walk crosses proxy phases, each with its own decimals, and `keeper optimize --asset` measures σ from all of
  them; `keeper run`'s job does not loosen ratios from the new phase's first rounds;
- too little history (rounds, days) and a frozen feed (σ below the minimum) are refused by the command (exit 2, one
  line) and by the job (nothing sent);
- a feed that reverts fails its own asset only; the job goes on with the others and counts the failure;
- rounds are read in JSON-RPC batches: the requests the node sees are counted by a relay in front of it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from chainlink_feeds import flux, proxy, submit, switch
from web3 import Web3

from keeper.chain.deployment import connect, load_deployment
from keeper.chain.signer import load_signer
from keeper.cli.run import risk_job
from keeper.engine.compose import build_keeper
from keeper.engine.settings import load_settings
from keeper.optimizer import volatility as vol

WAD = 10**18
KEEPER_INDEX = 6
ORACLE_INDEX = 8
PHASE = 1 << 64


@dataclass(frozen=True)
class Pushed:
    """One round as it was submitted: the id the proxy gives it, the answer in its phase's decimals, its time."""

    round_id: int
    answer: int
    updated_at: int
    decimals: int


@dataclass
class Feed:
    """A Chainlink proxy and what was pushed through it, as the reference the reads are checked against."""

    proxy: Any
    aggregators: list[Any] = field(default_factory=list)
    pushed: list[Pushed] = field(default_factory=list)  # oldest first


def reference(pushed: list[Pushed]) -> vol.Estimate:
    """The estimate from what was pushed, every answer brought to 18 decimals here (not by the reader)."""
    return vol.estimate([vol.Round(p.round_id, p.answer * 10 ** (18 - p.decimals), p.updated_at) for p in pushed])


def as_pushed(rounds: list[vol.Round]) -> list[Pushed]:
    return [Pushed(r.round_id, r.answer, r.updated_at, r.decimals) for r in rounds]


def gbm(sigma: float, n: int, seed: int, price: float = 2000.0, dt: int = 1800) -> tuple[list[int], list[float]]:
    """n prices `dt` seconds apart (±20 % jitter) on a GBM with annualised volatility σ; offsets from 0."""
    rng = np.random.default_rng(seed)
    gaps = rng.integers(int(dt * 0.8), int(dt * 1.2), n)
    gaps[0] = 0
    r = rng.standard_normal(n) * sigma * np.sqrt(gaps / (365 * 86400))
    return [int(x) for x in np.cumsum(gaps)], [float(p) for p in price * np.exp(np.cumsum(r))]


def push(chain: Any, feed: Feed, oracle: Any, offsets: list[int], prices: list[float], start: int) -> None:
    """Submit each price to the proxy's current aggregator in its own block at `start + offset`."""
    agg = feed.aggregators[-1]
    decimals = int(agg.decimals())
    phase = int(feed.proxy.phaseId())
    for off, price in zip(offsets, prices, strict=True):
        chain.pending_timestamp = start + off
        n = submit(agg, oracle, round(price * 10**decimals))
        feed.pushed.append(Pushed(phase * PHASE + n, round(price * 10**decimals), start + off, decimals))


def new_feed(admin: Any, oracle: Any, decimals: int) -> Feed:
    agg = flux(admin, oracle, decimals, "ETH / USD")
    return Feed(proxy(admin, agg), [agg])


def new_phase(admin: Any, oracle: Any, feed: Feed, decimals: int) -> None:
    """A new aggregator behind the proxy; its first round is pushed by the caller (the switch needs none)."""
    agg = flux(admin, oracle, decimals, "ETH / USD")
    feed.aggregators.append(agg)
    switch(feed.proxy, admin, agg)


def use_feed(system: Any, feed_address: str, symbol: str = "WETH") -> None:
    """The router prices `symbol` with this feed, with the limits it had."""
    token = system.tokens[symbol]
    cfg = system.router.feedConfig(token)
    system.router.setFeed(token, feed_address, cfg.maxStaleness, cfg.minPrice, cfg.maxPrice, sender=system.admin)


def write_config(tmp_path: Path, system: Any, chain: Any, feeds: dict[str, str], url: str | None = None) -> Path:
    """A keeper config and a deployment record whose assets name `feeds` (what the keeper before this change read)."""
    record = system.deployment.record()
    for a in record["assets"]:
        if a["symbol"] in feeds:
            a["feed"] = feeds[a["symbol"]]
    (tmp_path / "deployment.json").write_text(json.dumps(record))
    config = tmp_path / "keeper.toml"
    config.write_text(
        f'rpc_url = "{url or chain.provider.uri}"\nchain_id = 31337\ndeployment = "deployment.json"\n'
        f'state_db = "keeper.db"\ndev_account_index = {KEEPER_INDEX}\nconfirmations = 0\n'
    )
    return config


def optimize(tmp_path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeper", "optimize", "--config", str(config), "--asset", "WETH", "--paths", "5000",
         "--horizon-s", "3600", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def bound(system: Any, accounts: Any, symbol: str, ltv: float, lt: float) -> Any:
    """`symbol` at ltv/lt, bounded (ltv 0.50..0.85, lt 0.60..0.90, step 0.05, interval 1 h, ramp 1 day); account 6
    holds the risk-keeper role."""
    engine, admin = system.engine, system.admin
    token = system.tokens[symbol]
    engine.setRiskBounds(token, (50 * 10**16, 85 * 10**16, 60 * 10**16, 90 * 10**16, 5 * 10**16, 3600, 86400),
                         sender=admin)  # fmt: skip
    engine.grantRole(engine.RISK_KEEPER_ROLE(), accounts[KEEPER_INDEX], sender=admin)
    cap = engine.assetSupply(token).supplyCap
    engine.setAssetConfig(token, round(ltv * 1e6) * 10**12, round(lt * 1e6) * 10**12, 10**17, cap, sender=admin)
    return accounts[KEEPER_INDEX]


@pytest.fixture
def oracle(accounts: Any) -> Any:
    return accounts[ORACLE_INDEX]


@pytest.fixture
def keeper_for(system: Any, chain: Any, tmp_path: Path) -> Iterator[Any]:
    """`keeper run`'s Keeper for a config (optimize_paths 5000, no oracle lag), closed after the test."""
    built: list[Any] = []

    def make(config: Path) -> Any:
        settings = load_settings(config, optimize_paths=5000, optimize_oracle_deviation=0.0)
        dep = load_deployment(settings.deployment, 31337)
        keeper = build_keeper(settings, dep, connect(settings.rpc_url), load_signer(settings, 31337))
        built.append(keeper)
        return keeper

    yield make
    for k in built:
        k.close()


def two_phases(chain: Any, admin: Any, oracle: Any, sigma: float, n: int, seed: int) -> Feed:
    """Phase 1: `n` rounds (8 decimals) half an hour apart on a GBM with volatility σ, ending now; phase 2: a new
    aggregator (18 decimals) with 3 rounds a minute apart at barely moving prices, as right after an upgrade."""
    feed = new_feed(admin, oracle, 8)
    offsets, prices = gbm(sigma, n, seed)
    push(chain, feed, oracle, offsets, prices, chain.pending_timestamp + 60)
    new_phase(admin, oracle, feed, 18)
    last = prices[-1]
    push(chain, feed, oracle, [0, 60, 120], [last * 1.0004, last * 1.0001, last * 1.0003], chain.pending_timestamp + 60)
    return feed


# ---------------------------------------------------------------------------------------------- the walk itself


def test_walk_crosses_phases_with_each_phase_decimals(chain: Any, admin: Any, oracle: Any) -> None:
    """Every pushed round comes back, oldest first, with the proxy's phase ids and each phase's decimals; the
    estimate from them equals the estimate from what was pushed (no spurious 10^10 jump at the switch); a round the
    old aggregator reports after the switch is left out; `since` and `max_rounds` cut across phases."""
    feed = two_phases(chain, admin, oracle, 0.8, 60, seed=1)
    w3 = Web3(Web3.HTTPProvider(chain.provider.uri))
    # The old aggregator still answers after the switch: the proxy serves it by id, but it overlaps phase 2.
    chain.pending_timestamp += 30
    submit(feed.aggregators[0], oracle, 1 * 10**8)
    got = vol.read_history(w3, feed.proxy.address, 1000, batch=25)
    assert as_pushed(got.rounds) == feed.pushed
    assert got.phases == [2, 1]
    assert got.end == "the feed's first round"
    assert {r.decimals for r in got.rounds} == {8, 18}
    assert vol.estimate(got.rounds).realized == pytest.approx(reference(feed.pushed).realized, rel=1e-12)
    # 63 rounds (+ the late one), 25 per request, plus the latest, decimals and phase-1 lookups.
    assert got.requests <= math.ceil(64 / 25) + 4
    assert got.calls >= 63
    since = feed.pushed[20].updated_at
    assert as_pushed(vol.read_history(w3, feed.proxy.address, 1000, since=since).rounds) == feed.pushed[20:]
    assert as_pushed(vol.read_history(w3, feed.proxy.address, 10, batch=3).rounds) == feed.pushed[-10:]


# ---------------------------------------------------------------------------------------------- item 1: phases


def test_optimize_measures_across_a_phase_change(
    system: Any, chain: Any, admin: Any, oracle: Any, tmp_path: Path
) -> None:
    """Right after the aggregator changed, `keeper optimize --asset WETH` measures σ from both phases: 120 rounds
    at σ 0.8 before the switch, 3 after. (Before: the 3 new rounds alone gave σ 0.09.)"""
    feed = two_phases(chain, admin, oracle, 0.8, 120, seed=2)
    use_feed(system, feed.proxy.address)
    config = write_config(tmp_path, system, chain, {"WETH": feed.proxy.address})
    out = optimize(tmp_path, config, "--json")
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)["measured"]
    assert m["rounds"] == len(feed.pushed) == 123
    assert m["realized"] == pytest.approx(reference(feed.pushed).realized, rel=1e-12)
    assert m["realized"] == pytest.approx(0.8, rel=0.25)  # 122 returns: σ's standard error is about 6.4 %
    assert m["phases"] == [2, 1]
    assert m["feed"] == feed.proxy.address


def test_job_does_not_loosen_from_a_new_phase(
    system: Any, chain: Any, accounts: Any, admin: Any, oracle: Any, tmp_path: Path, keeper_for: Any
) -> None:
    """WETH sits at ltv 0.80 / lt 0.90, about what σ 1.5 calls for (the optimizer gives ltv 0.77 for it). After an
    aggregator change, the job measures σ from the whole history and does not raise ltv or lt; from the new phase's
    3 quiet rounds alone (σ 0.1) it chose ltv 0.89 and sent ltv 0.80 -> 0.85."""
    feed = two_phases(chain, admin, oracle, 1.5, 150, seed=3)
    use_feed(system, feed.proxy.address)
    bound(system, accounts, "WETH", 0.80, 0.90)
    weth = system.tokens["WETH"]
    before = system.engine.assetConfig(weth)
    keeper = keeper_for(write_config(tmp_path, system, chain, {"WETH": feed.proxy.address}))
    done = risk_job(keeper, logging.getLogger("test.risk")).run_once()
    chain.mine(1)
    after = system.engine.assetConfig(weth)
    assert after.ltv <= before.ltv
    assert after.lt <= before.lt
    assert [d["asset"] for d in done] == ["WETH"]
    expected = reference(feed.pushed)
    assert done[0]["measured"]["rounds"] == len(feed.pushed)
    assert done[0]["measured"]["sigma"] == pytest.approx(max(expected.sigma, expected.ewma), rel=1e-12)


# ---------------------------------------------------------------------------------------------- item 2: too little


def thin_feed(chain: Any, admin: Any, oracle: Any, n: int = 6, dt: int = 600) -> Feed:
    """A feed `n` rounds old, `dt` seconds apart, moving like σ 0.8."""
    feed = new_feed(admin, oracle, 8)
    offsets, prices = gbm(0.8, n, seed=4, dt=dt)
    push(chain, feed, oracle, offsets, prices, chain.pending_timestamp + 60)
    return feed


def days(chain: Any, feed: Feed) -> str:
    """How far what was pushed reaches back from the head block, in days as the messages print it."""
    return f"{(chain.blocks.head.timestamp - feed.pushed[0].updated_at) / 86400:.2f}"


def test_optimize_refuses_too_little_history(system: Any, chain: Any, admin: Any, oracle: Any, tmp_path: Path) -> None:
    """6 rounds over 50 minutes: `keeper optimize --asset WETH` exits 2 with one line naming the feed, what it has
    and what is needed; more than the defaults ask for passes; with --sigma the command still runs."""
    feed = thin_feed(chain, admin, oracle)
    use_feed(system, feed.proxy.address)
    config = write_config(tmp_path, system, chain, {"WETH": feed.proxy.address})
    reach = days(chain, feed)
    out = optimize(tmp_path, config)
    assert out.returncode == 2, out.stdout
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"keeper: WETH's feed {feed.proxy.address} has 6 rounds reaching back {reach} days")
    assert "at least 24 rounds reaching back 1 day are needed" in lines[0]
    assert "Traceback" not in out.stderr
    # The same history with the minimums lowered below it is measured; with a given σ it is not needed.
    ok = optimize(tmp_path, config, "--min-rounds", "6", "--min-history-days", "0.02", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["measured"]["rounds"] == 6
    given = optimize(tmp_path, config, "--sigma", "0.8", "--json")
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["inputs"]["market"]["jump_intensity"] == 0


def test_job_sends_nothing_from_too_little_history(
    system: Any, chain: Any, accounts: Any, admin: Any, oracle: Any, tmp_path: Path, keeper_for: Any
) -> None:
    feed = thin_feed(chain, admin, oracle)
    use_feed(system, feed.proxy.address)
    keeper_account = bound(system, accounts, "WETH", 0.60, 0.67)
    keeper = keeper_for(write_config(tmp_path, system, chain, {"WETH": feed.proxy.address}))
    nonce = keeper_account.nonce
    before = system.engine.assetConfig(system.tokens["WETH"])
    reach = days(chain, feed)
    done = risk_job(keeper, logging.getLogger("test.risk")).run_once()
    chain.mine(1)
    assert keeper_account.nonce == nonce
    assert system.engine.assetConfig(system.tokens["WETH"]) == before
    assert [(d["asset"], d["sent"], d.get("failed")) for d in done] == [("WETH", False, "history")]
    assert f"has 6 rounds reaching back {reach} days" in done[0]["error"]
    failures = keeper.metrics.risk_optimizer_failures.labels(asset="WETH", reason="history")
    assert failures._value.get() == 1


# ---------------------------------------------------------------------------------------------- item 3: frozen


def frozen_feed(chain: Any, admin: Any, oracle: Any) -> Feed:
    """48 rounds an hour apart over two days, every one the same answer (a frozen or hard-coded feed)."""
    feed = new_feed(admin, oracle, 8)
    offsets = [i * 3600 for i in range(48)]
    push(chain, feed, oracle, offsets, [2000.0] * 48, chain.pending_timestamp + 60)
    return feed


def test_frozen_feed_is_refused(
    system: Any, chain: Any, accounts: Any, admin: Any, oracle: Any, tmp_path: Path, keeper_for: Any
) -> None:
    """Identical answers give σ = 0, which chose ltv = lt (no buffer at all). Refused below the minimum σ, by the
    command (exit 2, one line) and by the job (nothing sent)."""
    feed = frozen_feed(chain, admin, oracle)
    use_feed(system, feed.proxy.address)
    keeper_account = bound(system, accounts, "WETH", 0.60, 0.67)
    config = write_config(tmp_path, system, chain, {"WETH": feed.proxy.address})
    out = optimize(tmp_path, config)
    assert out.returncode == 2, out.stdout
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"keeper: WETH's feed {feed.proxy.address} gives σ 0.0000 from 48 rounds over 1.96")
    assert "below the minimum 0.01" in out.stderr
    keeper = keeper_for(config)
    nonce = keeper_account.nonce
    done = risk_job(keeper, logging.getLogger("test.risk")).run_once()
    chain.mine(1)
    assert keeper_account.nonce == nonce
    assert [(d["asset"], d["sent"], d.get("failed")) for d in done] == [("WETH", False, "sigma")]


# ---------------------------------------------------------------------------------------------- item 4: isolation


def test_a_reverting_feed_fails_only_its_asset(
    system: Any, chain: Any, accounts: Any, admin: Any, oracle: Any, tmp_path: Path, keeper_for: Any, caplog: Any
) -> None:
    """WETH's feed is a Flux aggregator before its first round (latestRoundData reverts); WBTC's is healthy. The job
    logs WETH's failure with its reason, counts it, and still sends WBTC's update; the command says it in one line."""
    broken = flux(admin, oracle, 8, "ETH / USD")
    use_feed(system, broken.address, "WETH")
    healthy = two_phases(chain, admin, oracle, 0.8, 60, seed=5)
    use_feed(system, healthy.proxy.address, "WBTC")
    keeper_account = bound(system, accounts, "WETH", 0.60, 0.67)
    bound(system, accounts, "WBTC", 0.60, 0.67)
    config = write_config(tmp_path, system, chain, {"WETH": broken.address, "WBTC": healthy.proxy.address})
    keeper = keeper_for(config)
    nonce = keeper_account.nonce
    with caplog.at_level(logging.WARNING, logger="test.risk"):
        done = risk_job(keeper, logging.getLogger("test.risk")).run_once()
    chain.mine(1)
    assert [(d["asset"], d["sent"], d.get("failed")) for d in done] == [("WETH", False, "feed"), ("WBTC", True, None)]
    assert keeper_account.nonce == nonce + 1  # WBTC's update
    assert system.engine.assetConfig(system.tokens["WBTC"]).lt == 72 * 10**16
    assert f"risk WETH: not optimized (feed): WETH: feed {broken.address}: latestRoundData reverts" in caplog.text
    assert keeper.metrics.risk_optimizer_failures.labels(asset="WETH", reason="feed")._value.get() == 1
    out = optimize(tmp_path, config)
    assert out.returncode == 2
    assert out.stderr.startswith(f"keeper: WETH: feed {broken.address}: latestRoundData reverts")
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------- item 5: batches


class CountingRelay:
    """An HTTP JSON-RPC relay in front of the node that counts what reaches it: requests, and eth_calls in them.
    Like some hosted nodes, it can refuse batches larger than `max_batch` (one error object for the whole batch), or
    answer every eth_call with HTTP 429 (`limited`)."""

    def __init__(self, upstream: str, max_batch: int | None = None) -> None:
        relay = self
        self.requests = 0
        self.eth_calls = 0
        self.refused = 0
        self.limited = False
        self._lock = threading.Lock()
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                doc = json.loads(body)
                calls = [d for d in (doc if isinstance(doc, list) else [doc]) if d.get("method") == "eth_call"]
                with relay._lock:
                    relay.requests += 1
                    relay.eth_calls += len(calls)
                if calls and relay.limited:
                    self.answer(429, b'{"error": "too many requests"}')
                elif max_batch is not None and isinstance(doc, list) and len(doc) > max_batch:
                    with relay._lock:
                        relay.refused += 1
                    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}}
                    self.answer(200, json.dumps(error).encode())
                else:
                    answer = session.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=60)
                    self.answer(answer.status_code, answer.content)

            def answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_rounds_are_read_in_batches(system: Any, chain: Any, admin: Any, oracle: Any, tmp_path: Path) -> None:
    """`keeper optimize --asset WETH` over 300 rounds: the node sees a few requests, not one per round."""
    feed = new_feed(admin, oracle, 8)
    offsets, prices = gbm(0.8, 300, seed=6, dt=600)
    push(chain, feed, oracle, offsets, prices, chain.pending_timestamp + 60)
    use_feed(system, feed.proxy.address)
    relay = CountingRelay(chain.provider.uri)
    try:
        config = write_config(tmp_path, system, chain, {"WETH": feed.proxy.address}, url=relay.url)
        out = optimize(tmp_path, config, "--json")
    finally:
        relay.close()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["measured"]["rounds"] == 300
    assert relay.eth_calls >= 300
    # 300 rounds in batches of 100, plus start-up checks and the engine's and router's reads.
    assert relay.requests < 40, relay.requests


def test_a_node_that_refuses_large_batches_or_fails(chain: Any, admin: Any, oracle: Any) -> None:
    """A node that refuses batches over 16 calls still gives every round (the reader halves a refused batch and keeps
    the smaller size); a node that fails (HTTP 429) is a FeedError of reason "rpc", not a traceback or a short
    history."""
    feed = two_phases(chain, admin, oracle, 0.8, 60, seed=7)
    relay = CountingRelay(chain.provider.uri, max_batch=16)
    try:
        w3 = Web3(Web3.HTTPProvider(relay.url))
        got = vol.read_history(w3, feed.proxy.address, 1000)
        assert as_pushed(got.rounds) == feed.pushed
        # 4 requests to start (latest and decimals, phase 2's rounds, phase 1's aggregator, its latest and decimals);
        # phase 1's 60 rounds in one batch: refused; each half of 30: refused, then sent as two batches of 15.
        assert relay.refused == 3
        assert got.requests == 4 + 1 + 2 * (1 + 2)
        relay.limited = True
        with pytest.raises(vol.FeedError, match="the node failed to answer") as failed:
            vol.read_history(w3, feed.proxy.address, 1000)
        assert failed.value.reason == "rpc"
    finally:
        relay.close()
