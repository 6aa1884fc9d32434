"""`keeper status` against a real Anvil, run as a user runs it: a subprocess with a config file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import WAD, open_position

ROOT = Path(__file__).resolve().parent.parent


def _config(record: dict[str, Any], chain: Any, tmp_path: Path) -> Path:
    """A keeper config for the deployment `record`, in `tmp_path`."""
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(record))
    cfg = tmp_path / "keeper.toml"
    cfg.write_text(
        f'rpc_url = "{chain.provider.uri}"\nchain_id = {chain.chain_id}\ndeployment = "{path}"\n'
        f'state_db = "{tmp_path / "state.db"}"\n'
    )
    return cfg


def _status(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeper", "status", "--config", str(cfg), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_status_lists_accounts_by_health_with_the_price_that_liquidates_them(
    system: Any, chain: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """Three accounts: the table is sorted by health, healths equal the engine's, and pushing the reported WETH
    price makes the account liquidatable while one unit above leaves it healthy."""
    open_position(system, alice, 0, {"WETH": 10 * 10**18}, borrow=15_000 * 10**6)  # health ~1.133
    open_position(system, alice, 1, {"WETH": 2 * 10**18, "LINK": 100 * 10**18}, borrow=2_000 * 10**6)
    open_position(system, bob, 0, {"WBTC": 10**8})  # no debt
    cfg = _config(system.deployment.record(), chain, tmp_path)
    done = _status(cfg, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = doc["accounts"]
    assert [(r["owner"], r["sub_id"]) for r in rows] == [
        (alice.address, 0),
        (alice.address, 1),
        (bob.address, 0),
    ]
    for r in rows[:2]:
        engine_health = system.engine.accountHealth(r["owner"], r["sub_id"]).health
        assert abs(r["health"] - engine_health / WAD) < 1e-9
        assert r["liquidatable"] is False
    assert rows[2]["health"] is None  # no debt
    assert rows[2]["liquidation_price"] is None
    trigger = rows[0]["liquidation_price"]
    assert trigger["asset"] == "WETH"
    # The reported price (8-decimal feed) makes alice/0 liquidatable; a cent above does not.
    price_8 = int(trigger["usd"] * 10**8)
    system.feeds["WETH"].setAnswer(price_8 + 10**6, sender=system.admin)
    assert system.engine.accountHealth(alice, 0).health >= WAD
    system.feeds["WETH"].setAnswer(price_8, sender=system.admin)
    assert system.engine.accountHealth(alice, 0).health < WAD


def test_status_table_and_refused_price(system: Any, chain: Any, alice: Any, tmp_path: Path) -> None:
    """The text table names each account; an account whose feed the router refuses shows `refused`."""
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1_000 * 10**6)
    open_position(system, alice, 1, {"LINK": 1_000 * 10**18}, borrow=1_000 * 10**6)
    system.feeds["LINK"].setAnswer(0, sender=system.admin)  # zero answer: refused by the router
    done = _status(_config(system.deployment.record(), chain, tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"chain {chain.chain_id}, block ")
    assert "2 accounts" in lines[0]
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == 1
    assert alice.address in refused[0]
