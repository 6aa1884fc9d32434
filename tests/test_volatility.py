"""Reading a real feed's rounds back through `getRoundData` on Anvil, and `keeper optimize --asset` measuring its
inputs from the chain (the estimators on synthetic histories are tests/unit/test_volatility_estimators.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from unit.histories import synthetic
from web3 import Web3

from keeper.optimizer import volatility as vol


def as_web3(instance: Any, account: Any) -> Any:
    """The same contract through plain web3.py, as the keeper sees it."""
    w3 = Web3(Web3.HTTPProvider(account.provider.uri))
    abi = instance.contract_type.model_dump(mode="json", by_alias=True)["abi"]
    return w3.eth.contract(address=instance.address, abi=abi)


@pytest.fixture
def fresh_feed(project: Any, admin: Any) -> Any:
    return project.MockAggregator.deploy(8, 0, "history", sender=admin)


def test_read_rounds_walks_back_through_get_round_data(fresh_feed: Any, admin: Any) -> None:
    history = synthetic(0.8, 40, seed=3)
    for r in history:
        fresh_feed.setAnswerAt(r.answer, r.updated_at, r.updated_at, sender=admin)
    c = as_web3(fresh_feed, admin)
    got = vol.read_history(c.w3, c.address, max_rounds=1000).rounds
    assert [(g.answer, g.updated_at) for g in got] == [(r.answer, r.updated_at) for r in history]
    assert len(vol.read_history(c.w3, c.address, max_rounds=10).rounds) == 10
    since = history[30].updated_at
    cut = vol.read_history(c.w3, c.address, 1000, since=since).rounds
    assert [g.updated_at for g in cut] == [r.updated_at for r in history[30:]]


def test_read_rounds_stops_at_the_phase_start(fresh_feed: Any, admin: Any) -> None:
    phase = 2 << 64
    for i in range(1, 6):
        fresh_feed.setRound(phase | i, 100_000 + i, 1_000 + i, 1_000 + i, sender=admin)
    c = as_web3(fresh_feed, admin)
    got = vol.read_history(c.w3, c.address, max_rounds=100)
    assert [g.round_id for g in got.rounds] == [phase | i for i in range(1, 6)]
    assert got.end == "phase 1 is not readable (the feed has no phaseAggregators)"  # a plain aggregator, no proxy


def test_optimize_measures_the_asset_from_the_chain(system: Any, chain: Any, admin: Any, tmp_path: Path) -> None:
    """`keeper optimize --asset WETH --json`: σ from the feed's rounds (pushed here with a known σ), discounts from
    the engine, heartbeat from the router; the choice respects the engine's cap."""
    now = chain.pending_timestamp
    history = synthetic(1.2, 300, seed=8, start=now - 300 * 1800)
    shift = now - history[-1].updated_at - 1
    feed = system.feeds["WETH"]
    for r in history:
        feed.setAnswerAt(r.answer, r.updated_at + shift, r.updated_at + shift, sender=admin)
    record = tmp_path / "deployment.json"
    record.write_text(json.dumps(system.deployment.record()))
    config = tmp_path / "keeper.toml"
    config.write_text(
        f'rpc_url = "{chain.provider.uri}"\nchain_id = 31337\ndeployment = "deployment.json"\nstate_db = "k.db"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "keeper", "optimize", "--config", str(config), "--asset", "weth", "--json",
         "--paths", "20000", "--horizon-s", "21600", "--plot", str(tmp_path / "opt.png")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    m = doc["measured"]
    assert m["symbol"] == "WETH"
    assert m["rounds"] >= 290
    # 300 returns: relative standard error of σ ≈ 4 %.
    assert m["realized"] == pytest.approx(1.2, rel=0.2)
    cfg = system.engine.assetConfig(system.tokens["WETH"])
    assert m["max_discount"] == cfg.maxDiscount / 1e18
    assert m["lt"] == cfg.lt / 1e18
    assert doc["inputs"]["oracle"]["heartbeat_s"] == system.router.feedConfig(system.tokens["WETH"]).maxStaleness
    assert doc["lt"] * (1 + m["max_discount"]) < 1
    assert 0 < doc["ltv"] < doc["lt"]
    assert {"lt", "ltv", "p_bad_debt", "expected_shortfall", "paths"} <= doc.keys()
    assert doc["paths"] == 20000
    assert doc["current"]["lt"] == m["lt"]
    assert (tmp_path / "opt.png").stat().st_size > 10_000
