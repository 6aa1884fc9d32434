"""Settings don't leak, and there is one way to name the Anvil binary: every command run as a user runs it, in a
subprocess, with KEEPER_ANVIL set (the variable docs/keeper.md documents) pointing at a wrapper that records each
start; a drill under a hostile KEEPER_* environment measures exactly what it measures in a clean one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

DRILLS = ROOT / "tests" / "drills"
KEEPER = Path(sys.executable).with_name("keeper")
REAL_ANVIL = Path(sys.executable).with_name("anvil")
HOSTILE = {
    "KEEPER_RPC_URL": "http://10.255.255.1:1",
    "KEEPER_CHAIN_ID": "1",
    "KEEPER_DEPLOYMENT": "/nonexistent.json",
    "KEEPER_MIN_PROFIT_USD": "1000000000000",
    "KEEPER_MAX_FEE_GWEI": "0.000001",
    "KEEPER_PRIORITY_FEE_GWEI": "0",
    "KEEPER_MAX_REPAY_USD": "0.01",
    "KEEPER_CONFIRMATIONS": "64",
    "KEEPER_STATE_DB": "/nonexistent/keeper.db",
    "KEEPER_NOT_A_SETTING": "1",
}


@pytest.fixture
def anvil_wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """An Anvil that writes its arguments to a log, then runs the real one: (binary, its log)."""
    log = tmp_path / "anvil-starts.log"
    wrapper = tmp_path / "my-anvil"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{REAL_ANVIL}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def _env(anvil: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    return {**env, "KEEPER_ANVIL": str(anvil), **extra}


def _config(system: Any, chain: Any, tmp_path: Path) -> Path:
    record = tmp_path / "deployment.json"
    record.write_text(json.dumps(system.deployment.record()))
    config = tmp_path / "keeper.toml"
    config.write_text(
        f'rpc_url = "{chain.provider.uri}"\nchain_id = {chain.chain_id}\ndeployment = "{record}"\n'
        f'dev_account_index = 6\nstate_db = "{tmp_path / "state.db"}"\noptimize_interval_s = 0\n'
    )
    return config


def test_status_and_run_accept_keeper_anvil(
    system: Any, chain: Any, tmp_path: Path, anvil_wrapper: tuple[Path, Path]
) -> None:
    anvil, _ = anvil_wrapper
    config = _config(system, chain, tmp_path)
    status = subprocess.run(
        [str(KEEPER), "status", "--config", str(config)],
        env=_env(anvil),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"chain {chain.chain_id}, block ")

    log_path = tmp_path / "run.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(KEEPER), "run", "--config", str(config)], env=_env(anvil), cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while "running on chain" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "running on chain" in log_path.read_text()


def _drill(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEEPER), *args, "--accounts", "4", "--settle-blocks", "3", "--quiet"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _measured(folder: Path) -> dict[str, Any]:
    """What a drill measured, without what depends on the wall clock (chain timestamps shift the interest by a few
    units, so amounts in USD are left out; counts, latencies and who was liquidated when are kept)."""
    doc = json.loads((folder / "report.json").read_text())
    start = doc["drill"]["start_block"]
    summary = doc["summary"]
    keys = ("liquidatable_accounts", "liquidated_accounts", "missed_liquidations", "healthy_liquidations")
    keys += ("duplicate_submissions", "latency_blocks_p50", "latency_blocks_p99", "latency_blocks_max")
    return {
        "summary": {k: summary[k] for k in keys},
        "liquidations": [(x["owner"], x["sub_id"], x["block"] - start, x["collateral"]) for x in doc["liquidations"]],
    }


def test_drill_and_demo_use_keeper_anvil_and_ignore_a_hostile_environment(
    tmp_path: Path, anvil_wrapper: tuple[Path, Path]
) -> None:
    """`keeper drill` and `keeper demo` start the Anvil KEEPER_ANVIL names. The drill's keeper takes no other
    KEEPER_* variable: with settings that would stop every liquidation (a minimum profit of a trillion dollars, a
    repay limit of a cent, a fee cap of a thousandth of a gwei) and others that would break it (another node, chain
    and state file), it measures exactly what it measures with none."""
    anvil, starts = anvil_wrapper
    scenario = str(DRILLS / "crash.toml")
    clean = _drill(tmp_path, _env(anvil), "drill", scenario, "--out", "clean", "--check")
    assert clean.returncode == 0, clean.stderr
    hostile = _drill(tmp_path, _env(anvil, **HOSTILE), "drill", scenario, "--out", "hostile", "--check")
    assert hostile.returncode == 0, hostile.stderr
    assert "Traceback" not in hostile.stderr
    measured = _measured(tmp_path / "clean")
    assert measured["liquidations"], "nothing liquidated: the comparison would be empty"
    assert _measured(tmp_path / "hostile") == measured

    demo = _drill(tmp_path, _env(anvil, **HOSTILE), "demo", "--scenario", scenario, "--out", "demo")
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "demo" / "report.json").exists()
    assert len(starts.read_text().splitlines()) == 3  # each of the three started the named Anvil
