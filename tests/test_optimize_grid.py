"""`keeper optimize --grid` against the engine on Anvil: the joint estimate from real feed rounds (against the
process that generated them), the calibrated grid's insolvency probability (re-simulated independently, with a
different seed and generator), governance's `setGrid` from the printed calldata, the risk keeper's bounded,
ramped `updateGrid`, and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_optimize_apply import KEEPER_INDEX, write_config

from keeper.core.grid import pack, unpack
from keeper.optimizer import basket
from keeper.optimizer.gridfit import MILLION

SIGMA = {"WETH": 0.8, "WBTC": 0.6, "LINK": 1.0}
RHO = 0.8  # every pair, through one common factor
STEP_S = 1800
ROUNDS = 240  # five days of half-hourly rounds
TARGET = 0.01
PATHS = 20_000


def push_joint_history(project: Any, system: Any, chain: Any) -> None:
    """Five days of half-hourly rounds of WETH, WBTC and LINK driven by one common factor (pairwise correlation
    RHO) plus their own noise, on fresh feeds the router is pointed at (so no round another test left is read),
    all after each feed's first round; USDC's feed stays flat."""
    rng = np.random.default_rng(14)
    dt = STEP_S / 31_536_000
    price = {"WETH": 2000.0, "WBTC": 60_000.0, "LINK": 15.0}
    start = chain.pending_timestamp
    feeds = {}
    for symbol in SIGMA:
        feeds[symbol] = project.MockAggregator.deploy(8, int(price[symbol] * 1e8), symbol, sender=system.admin)
        system.router.setFeed(system.tokens[symbol], feeds[symbol], 10**9, 1, 2**128 - 1, sender=system.admin)
    chain.pending_timestamp = start + (ROUNDS + 1) * STEP_S
    chain.mine()
    for i in range(1, ROUNDS + 1):
        common = rng.standard_normal()
        for symbol, sigma in SIGMA.items():
            z = math.sqrt(RHO) * common + math.sqrt(1 - RHO) * rng.standard_normal()
            price[symbol] *= math.exp(sigma * math.sqrt(dt) * z - 0.5 * sigma**2 * dt)
            at = start + i * STEP_S
            feeds[symbol].setAnswerAt(int(price[symbol] * 1e8), at, at, sender=system.admin)


def optimize_grid(tmp_path: Path, config: Path, *extra: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "keeper", "optimize", "--config", str(config), "--grid", "--paths", str(PATHS),
         "--horizon-s", "86400", "--target-prob", str(TARGET), "--window-s", str(ROUNDS * STEP_S + 600), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def market(project: Any, system: Any, chain: Any, tmp_path: Path) -> Path:
    push_joint_history(project, system, chain)
    return write_config(tmp_path, system, chain)


def test_the_grid_is_calibrated_from_the_joint_history(system: Any, market: Path, tmp_path: Path) -> None:
    out = optimize_grid(tmp_path, market, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["held_at_one"] == ["USDC"]  # the flat debt feed
    # The estimate recovers the process that made the rounds: with 240 returns the sample volatility within 15 %,
    # the one used (the larger of EWMA and sample) not below it, and the correlations within 0.12.
    for symbol, sigma in SIGMA.items():
        assert doc["sample_vols"][symbol] == pytest.approx(sigma, rel=0.15)
        assert doc["vols"][symbol] == max(doc["sample_vols"][symbol], doc["ewma_vols"][symbol])
    corr = np.array(doc["sample_correlation"])
    assert np.all(np.abs(corr[np.triu_indices(3, 1)] - RHO) < 0.12)
    # The joint fall, and a fall and a rise for each of the three volatile assets.
    assert doc["scenarios"] == 7
    cols = doc["columns"]
    assert all(c == [MILLION] * 7 for c in [cols["USDC"]])
    assert all(100 <= m <= 100 * MILLION for c in cols.values() for m in c)
    # Independent check: a fresh correlated GBM with the generating volatilities and correlation (not the
    # estimate; another seed and generator); each reference book sized to the stored grid's health 1 ends the day
    # insolvent on about the target share of paths at most (a tolerance for estimation error and Monte Carlo
    # noise).
    names = list(SIGMA)
    cov = np.array([[SIGMA[a] * SIGMA[b] * (1.0 if a == b else RHO) for b in names] for a in names])
    tau = 86_400 / 31_536_000
    z = np.random.Generator(np.random.PCG64DXSM(99)).standard_normal((200_000, 3)) @ np.linalg.cholesky(cov * tau).T
    ratios = np.hstack([np.exp(z - 0.5 * np.diag(cov) * tau), np.ones((200_000, 1))])
    grid = [{a: cols[a][i] / MILLION for a in cols} for i in range(7)]
    for book in doc["books"]:
        long = {a: 1.0 for a in names} if book["name"].startswith("basket") else {book["name"].split("/")[0]: 1.0}
        b = basket.Book(book["name"], long, {"USDC": 0.7})
        p = basket.insolvency_probability(b, grid, [*names, "USDC"], ratios)
        assert p <= 2 * TARGET, (book["name"], p)
        assert book["p_insolvent"] <= TARGET * 1.05


def test_governance_sets_it_and_the_risk_keeper_steps_toward_it(
    project: Any, system: Any, chain: Any, market: Path, tmp_path: Path, accounts: Any
) -> None:
    engine, admin = system.engine, system.admin
    sg = project.IScenarioGrid.at(engine.address)
    # No grid yet: the risk keeper can do nothing, and the dry run prints governance's setGrid.
    dry = optimize_grid(tmp_path, market, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    d = json.loads(dry.stdout)["dry_run"]
    assert "no grid" in d["reason"]
    set_grid = d["set_grid"]
    choice = json.loads(dry.stdout)["columns"]
    # The admin sends it as printed; the engine then holds exactly the calibrated columns.
    w3 = chain.provider.web3
    tx = w3.eth.send_transaction({"from": admin.address, "to": set_grid["to"], "data": set_grid["data"]})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    symbols = ["WETH", "WBTC", "LINK", "USDC"]
    assets = [system.tokens[s] for s in symbols[:3]] + [system.usdc]
    for symbol, token in zip(symbols, assets, strict=True):
        assert list(unpack(sg.grid(token).effective, 7)) == choice[symbol]
    # Looser by 3 % in every collateral scenario (stored by the admin), bounds wide, steps of 2 %.
    loose = {s: [m + (30_000 if s != "USDC" else 0) for m in choice[s]] for s in symbols}
    sg.setGrid(7, 9 * 10**17, assets, [pack(loose[s]) for s in symbols], sender=admin)
    lower, upper = pack([100] * 7), pack([100 * MILLION] * 7)
    sg.setGridBounds(assets, [lower] * 4, [upper] * 4, (20_000, 3600, 86400), sender=admin)
    keeper = accounts[KEEPER_INDEX]
    engine.grantRole(engine.RISK_KEEPER_ROLE(), keeper, sender=admin)
    out = optimize_grid(tmp_path, market, "--apply", "--json")
    assert out.returncode == 0, out.stderr
    applied = json.loads(out.stdout)["applied"]
    assert applied["sent"], applied
    assert applied["status"] == "mined"
    for s, a in zip(symbols, assets, strict=True):
        target = list(unpack(sg.grid(a).target, 7))
        want = [m - 20_000 if s != "USDC" else m for m in loose[s]]  # one step of 2 % toward the choice
        assert target == want, s
    # Inside the interval: nothing is sent, and the output says why.
    again = optimize_grid(tmp_path, market, "--apply")
    assert again.returncode == 0, again.stderr
    assert "not applied: too soon" in again.stdout


def test_bad_combinations_are_refused(market: Path, tmp_path: Path) -> None:
    out = optimize_grid(tmp_path, market, "--asset", "WETH")
    assert out.returncode == 2
    assert "--grid calibrates the whole market" in out.stderr
    assert "Traceback" not in out.stderr


def test_thin_history_is_refused(market: Path, tmp_path: Path) -> None:
    """Five days of rounds do not reach back the ten days asked for: nothing is chosen, and the message says why."""
    out = optimize_grid(tmp_path, market, "--min-history-days", "10", "--dry-run")
    assert out.returncode != 0
    assert "less than --min-history-days 10" in out.stderr
    assert "Traceback" not in out.stderr


def test_apply_without_the_role_is_refused(system: Any, chain: Any, market: Path, tmp_path: Path) -> None:
    out = optimize_grid(tmp_path, write_config(tmp_path, system, chain, index=7), "--apply")
    assert out.returncode != 0
    assert "does not hold RISK_KEEPER_ROLE" in out.stderr
    assert "Traceback" not in out.stderr
