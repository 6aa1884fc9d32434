"""Volatility estimators (optimizer.volatility) on synthetic histories with a known σ, reading a real feed's rounds
back through `getRoundData` on Anvil, and `keeper optimize --asset` measuring its inputs from the chain."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from web3 import Web3

from keeper.optimizer import volatility as vol
from keeper.optimizer.stress import SECONDS_PER_YEAR


def synthetic(
    sigma: float, n: int, seed: int, jumps: int = 0, jump_size: float = -0.1, start: int = 1_700_000_000
) -> list[vol.Round]:
    """A feed history: irregular gaps (30 s to 1 h), GBM log returns with variance σ²·dt, `jumps` extra moves."""
    rng = np.random.default_rng(seed)
    dt = rng.integers(30, 3600, n)
    r = rng.standard_normal(n) * sigma * np.sqrt(dt / SECONDS_PER_YEAR)
    if jumps:
        r[rng.choice(n, jumps, replace=False)] += jump_size
    t = start + np.concatenate([[0], np.cumsum(dt)])
    p = 2000e8 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    return [vol.Round(i + 1, int(p[i]), int(t[i])) for i in range(n + 1)]


@pytest.mark.parametrize("sigma", [0.3, 0.8, 2.0])
def test_realised_and_ewma_recover_sigma_with_irregular_times(sigma: float) -> None:
    est = vol.estimate(synthetic(sigma, 4000, seed=int(sigma * 10)))
    # Realised variance over n returns has relative standard error sqrt(2/n) ≈ 2.2 %; allow 4 of them on σ.
    assert est.realized == pytest.approx(sigma, rel=0.05)
    assert est.sigma == pytest.approx(sigma, rel=0.05)
    # The EWMA forgets fast (λ = 0.94 per day over ~80 days), so it is noisier.
    assert est.ewma == pytest.approx(sigma, rel=0.35)
    assert est.jump_intensity < 5  # a pure diffusion has (almost) no 4σ moves


def test_push_oracle_sampling_is_annualised_by_time() -> None:
    """A push oracle samples at stopping times (1 % deviation or a 1 h heartbeat), so quick rounds carry big moves.
    Weighting by time (Σr² / Σdt) recovers σ; averaging each round's own rate r²/dt does not (it over-weights the
    quick, large moves)."""
    rng = np.random.default_rng(4)
    sigma, step, n = 0.8, 10, 30 * 8640
    x = np.cumsum(rng.standard_normal(n) * sigma * np.sqrt(step / SECONDS_PER_YEAR))
    rounds, last, last_t = [vol.Round(1, 10**10, 0)], 0.0, 0
    for i in range(n):
        t = (i + 1) * step
        if abs(math.expm1(x[i] - last)) >= 0.01 or t - last_t >= 3600:
            rounds.append(vol.Round(len(rounds) + 1, int(1e10 * math.exp(x[i])), t))
            last, last_t = x[i], t
    r = vol.returns(rounds)
    assert vol.realized_vol(r) == pytest.approx(sigma, rel=0.08)
    per_round = math.sqrt(float(np.mean(r.log_return**2 / r.dt_s)) * SECONDS_PER_YEAR)
    assert per_round > sigma * 1.15


def test_jumps_are_separated_from_the_diffusion() -> None:
    rounds = synthetic(0.6, 4000, seed=11, jumps=12, jump_size=-0.12)
    est = vol.estimate(rounds)
    years = est.span_s / SECONDS_PER_YEAR
    assert est.jump_intensity * years == pytest.approx(12, abs=2)
    assert est.jump_mean == pytest.approx(-0.12, abs=0.02)
    assert est.sigma == pytest.approx(0.6, rel=0.06)
    assert est.realized > est.sigma * 1.3  # the jumps inflate the plain realised figure


def test_window_and_bad_rounds() -> None:
    rounds = synthetic(0.8, 200, seed=2)
    last = rounds[-1].updated_at
    windowed = vol.returns(rounds, window_s=6 * 3600)
    assert windowed.span_s <= 6 * 3600
    assert windowed.span_s > 3 * 3600
    broken = [*rounds[:50], vol.Round(999, 0, last + 10), vol.Round(1000, -5, last + 20)]
    assert vol.returns(broken).log_return.size == 49  # non-positive answers are skipped
    with pytest.raises(vol.VolatilityError, match="at least 3 rounds"):
        vol.returns(rounds[:2])
    same_time = [vol.Round(1, 100, 10), vol.Round(2, 101, 10), vol.Round(3, 102, 20), vol.Round(4, 103, 30)]
    assert vol.returns(same_time).log_return.size == 2


# ---------------------------------------------------------------------------------------------- on chain


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
