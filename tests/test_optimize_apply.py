"""Bounded on-chain updates from the optimizer: the pure planner (the engine's rules, mirrored), `keeper optimize
--apply` as an operator runs it, and `keeper run`'s optimizer job, all against the engine on Anvil."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hexbytes import HexBytes

from keeper.chain.deployment import connect, load_deployment
from keeper.chain.signer import load_signer
from keeper.cli.run import risk_job
from keeper.engine.compose import build_keeper
from keeper.engine.settings import load_settings
from keeper.optimizer import update as oc

WAD = 10**18
KEEPER_INDEX = 6


def onchain(**kw: int) -> oc.Onchain:
    base = {
        "ltv": 60 * 10**16,
        "lt": 67 * 10**16,
        "max_discount": 10 * 10**16,
        "ltv_min": 50 * 10**16,
        "ltv_max": 85 * 10**16,
        "lt_min": 60 * 10**16,
        "lt_max": 90 * 10**16,
        "max_step": 5 * 10**16,
        "min_interval": 3600,
        "ramp_duration": 86400,
        "last_update": 1000,
        "ramp_end": 0,
    }
    base.update(kw)
    return oc.Onchain(**base)


def test_plan_steps_toward_the_choice_by_at_most_max_step() -> None:
    plan = oc.plan_update(0.80, 0.86, onchain(), now=10_000)
    assert isinstance(plan, oc.Plan)
    assert (plan.ltv, plan.lt) == (65 * 10**16, 72 * 10**16)
    assert (plan.target_ltv, plan.target_lt) == (80 * 10**16, 86 * 10**16)
    assert not plan.ramps


def test_plan_clamps_into_bounds_and_the_engine_cap() -> None:
    on = onchain(ltv=84 * 10**16, lt=89 * 10**16)
    plan = oc.plan_update(0.95, 0.99, on, now=10_000)
    assert isinstance(plan, oc.Plan)
    assert plan.target_lt == 90 * 10**16  # the bounds' ceiling, below the engine cap 1/1.1
    assert plan.target_ltv == 85 * 10**16
    tight = oc.plan_update(0.5, 0.99, onchain(lt_max=95 * 10**16, lt=89 * 10**16, max_step=10**17), now=10_000)
    assert isinstance(tight, oc.Plan)
    assert tight.lt * (WAD + 10**17) // WAD < WAD  # lt·(1 + maxDiscount) < 1
    assert tight.lt == oc._lt_cap(10**17)


def test_plan_lowering_ramps() -> None:
    plan = oc.plan_update(0.55, 0.62, onchain(), now=10_000)
    assert isinstance(plan, oc.Plan)
    assert plan.ramps
    assert (plan.ltv, plan.lt) == (55 * 10**16, 62 * 10**16)


@pytest.mark.parametrize(
    ("on", "now", "reason"),
    [
        (onchain(max_step=0), 10_000, "governance has not set bounds"),
        (onchain(last_update=9_000), 10_000, "too soon: the next update is allowed at 12600"),
        (onchain(), 10_000, "already within"),
    ],
)
def test_plan_says_why_nothing_is_due(on: oc.Onchain, now: int, reason: str) -> None:
    result = oc.plan_update(on.ltv / WAD + 0.001, on.lt / WAD + 0.001, on, now)
    assert isinstance(result, str)
    assert reason in result


def test_plan_keeps_ltv_below_lt() -> None:
    # The optimizer's buffer is tiny; the step limit stops lt first, so ltv is held just below it.
    plan = oc.plan_update(0.899, 0.90, onchain(ltv=60 * 10**16, lt=62 * 10**16, max_step=3 * 10**16), now=10_000)
    assert isinstance(plan, oc.Plan)
    assert plan.ltv < plan.lt
    assert plan.lt == 65 * 10**16


# ---------------------------------------------------------------------------------------------- on chain


@pytest.fixture
def bounded(system: Any, accounts: Any) -> Any:
    """WETH at the static 0.60/0.67, bounded (ltv 0.50..0.85, lt 0.60..0.90, step 0.05, interval 1 h, ramp 1 day);
    account 6 holds the role."""
    engine, admin = system.engine, system.admin
    keeper = accounts[KEEPER_INDEX]
    bounds = (50 * 10**16, 85 * 10**16, 60 * 10**16, 90 * 10**16, 5 * 10**16, 3600, 86400)
    engine.setRiskBounds(system.tokens["WETH"], bounds, sender=admin)
    engine.grantRole(engine.RISK_KEEPER_ROLE(), keeper, sender=admin)
    weth = system.tokens["WETH"]
    cap = engine.assetSupply(weth).supplyCap
    engine.setAssetConfig(weth, 60 * 10**16, 67 * 10**16, 10**17, cap, sender=admin)  # the static baseline
    return keeper


def push_history(system: Any, chain: Any) -> None:
    """A day of WETH rounds (a seeded random walk, σ about 0.8) for the job to measure; WBTC gets none."""
    rng = np.random.default_rng(5)
    now = chain.pending_timestamp
    price = 2000e8
    for i in range(48, 0, -1):
        price *= math.exp(rng.standard_normal() * 0.8 * math.sqrt(1800 / 31_536_000))
        system.feeds["WETH"].setAnswerAt(int(price), now - i * 1800, now - i * 1800, sender=system.admin)


def write_config(tmp_path: Path, system: Any, chain: Any, index: int = KEEPER_INDEX) -> Path:
    (tmp_path / "deployment.json").write_text(json.dumps(system.deployment.record()))
    config = tmp_path / "keeper.toml"
    config.write_text(
        f'rpc_url = "{chain.provider.uri}"\nchain_id = 31337\ndeployment = "deployment.json"\n'
        f'state_db = "keeper.db"\ndev_account_index = {index}\nconfirmations = 0\n'
    )
    return config


def optimize(tmp_path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeper", "optimize", "--config", str(config), "--asset", "WETH", "--sigma", "0.8",
         "--paths", "5000", "--horizon-s", "3600", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_apply_sends_one_bounded_step(system: Any, chain: Any, bounded: Any, tmp_path: Path) -> None:
    weth = system.tokens["WETH"]
    before = system.engine.assetConfig(weth)
    config = write_config(tmp_path, system, chain)
    start = chain.blocks.head.number
    out = optimize(tmp_path, config, "--apply", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    applied = doc["applied"]
    assert applied["sent"], applied
    assert applied["status"] == "mined", applied
    after = system.engine.assetConfig(weth)
    # The choice (lt near the 1/1.1 cap, well above) is more than one step away: exactly one step was taken.
    assert doc["lt"] > before.lt / WAD + 0.05
    assert after.lt - before.lt == pytest.approx(5 * 10**16, abs=1)
    assert abs(after.ltv - before.ltv) <= 5 * 10**16
    assert after.ltv < after.lt
    logs = list(system.engine.RiskParamsUpdated.range(start, chain.blocks.head.number + 1))
    assert len(logs) == 1
    assert logs[0].keeper == bounded.address
    assert logs[0].ltTarget == after.lt
    # A second run inside the interval sends nothing and says why.
    again = optimize(tmp_path, config, "--apply")
    assert again.returncode == 0, again.stderr
    assert "not applied: too soon" in again.stdout
    assert system.engine.assetConfig(weth).lt == after.lt


def test_apply_without_the_role_is_refused(system: Any, chain: Any, bounded: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, system, chain, index=7)
    out = optimize(tmp_path, config, "--apply")
    assert out.returncode == 2
    assert out.stderr.startswith("keeper: ")
    assert "does not hold RISK_KEEPER_ROLE" in out.stderr
    assert "Traceback" not in out.stderr


def test_apply_needs_an_asset(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "keeper", "optimize", "--sigma", "0.8", "--apply"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--apply needs --asset" in out.stderr


def test_run_job_updates_bounded_assets_once_per_interval(
    system: Any, chain: Any, bounded: Any, tmp_path: Path
) -> None:
    """`keeper run`'s job, driven directly: WETH (bounded) gets one step; WBTC (no bounds) is left alone; the next
    run inside the interval sends nothing; after the interval, the next step goes out."""
    push_history(system, chain)
    config = write_config(tmp_path, system, chain)
    settings = load_settings(config, optimize_paths=5000, optimize_oracle_deviation=0.0)
    dep = load_deployment(settings.deployment, 31337)
    w3 = connect(settings.rpc_url)
    keeper = build_keeper(settings, dep, w3, load_signer(settings, 31337))
    try:
        job = risk_job(keeper, logging.getLogger("test.risk"))
        weth, wbtc = system.tokens["WETH"], system.tokens["WBTC"]
        wbtc_before = system.engine.assetConfig(wbtc)
        lt0 = system.engine.assetConfig(weth).lt
        first = job.run_once()
        chain.mine(1)
        assert [d["asset"] for d in first] == ["WETH"]
        assert first[0]["sent"]
        assert system.engine.assetConfig(weth).lt == lt0 + 5 * 10**16
        assert system.engine.assetConfig(wbtc) == wbtc_before
        assert job.run_once() == []  # inside the interval: not even simulated
        chain.mine(1, timestamp=chain.pending_timestamp + 3601)
        second = job.run_once()
        chain.mine(1)
        assert second[0]["sent"]
        assert system.engine.assetConfig(weth).lt == lt0 + 10 * 10**16
        assert keeper.metrics.risk_updates_sent._value.get() == 2
    finally:
        keeper.close()


def test_keeper_run_sends_the_update_on_its_schedule(system: Any, chain: Any, bounded: Any, tmp_path: Path) -> None:
    """`keeper run` as an operator starts it: the optimizer job runs at start-up on its own thread, sends one
    bounded step for WETH, and the process still stops cleanly on SIGTERM."""
    push_history(system, chain)
    config = write_config(tmp_path, system, chain)
    with config.open("a") as f:
        f.write("optimize_paths = 5000\noptimize_interval_s = 3600\n")
    weth = system.tokens["WETH"]
    lt0 = system.engine.assetConfig(weth).lt
    start = chain.blocks.head.number
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "run", "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        logs: list[Any] = []
        while not logs and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            logs = list(system.engine.RiskParamsUpdated.range(start, chain.blocks.head.number + 1))
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(logs) == 1, err
    assert logs[0].keeper == bounded.address
    assert system.engine.assetConfig(weth).lt == lt0 + 5 * 10**16
    assert "risk updates on: the key holds RISK_KEEPER_ROLE" in err, err
    assert "risk WETH: ltv" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------- --dry-run


def test_dry_run_shows_the_transaction_and_sends_nothing(system: Any, chain: Any, bounded: Any, tmp_path: Path) -> None:
    """`--dry-run` shows the update `--apply` would send (from, to, function, arguments, calldata, simulation) and
    sends nothing: the key's nonce, the head block and the engine are as they were, and no state file is written.
    The calldata it shows, sent by hand afterwards, is exactly that update."""
    weth = system.tokens["WETH"]
    before = system.engine.assetConfig(weth)
    config = write_config(tmp_path, system, chain)
    nonce, head = bounded.nonce, chain.blocks.head.number
    out = optimize(tmp_path, config, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)["dry_run"]
    assert bounded.nonce == nonce
    assert chain.blocks.head.number == head
    assert system.engine.assetConfig(weth) == before
    assert not (tmp_path / "keeper.db").exists()
    tx, args = shown["tx"], shown["tx"]["args"]
    assert shown["sent"] is False
    assert (tx["from"], tx["to"], tx["function"]) == (
        bounded.address, system.engine.address, "updateRiskParams(address,uint64,uint64)"
    )  # fmt: skip
    assert args["asset"] == weth.address
    assert args["lt"] == before.lt + 5 * 10**16  # one step toward the choice (lt near the cap, far above)
    assert HexBytes(tx["data"]) == HexBytes(system.engine.updateRiskParams.encode_input(weth, args["ltv"], args["lt"]))
    assert shown["simulation"]["ok"] is True
    w3 = chain.provider.web3
    sent = w3.eth.send_transaction({"from": bounded.address, "to": tx["to"], "data": tx["data"]})
    receipt = w3.eth.wait_for_transaction_receipt(sent)
    assert receipt["status"] == 1
    assert 0 < receipt["gasUsed"] <= shown["simulation"]["gas"]
    after = system.engine.assetConfig(weth)
    assert (after.ltv, after.lt) == (args["ltv"], args["lt"])
    # The table form says the same in words.
    text = optimize(tmp_path, config, "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "dry run: --apply would send nothing now: too soon" in text.stdout


def test_dry_run_without_the_role_shows_the_revert(
    system: Any, chain: Any, accounts: Any, bounded: Any, tmp_path: Path
) -> None:
    """A key without RISK_KEEPER_ROLE: the dry run still shows the transaction, with the engine's own error from the
    simulation and a note that --apply would refuse; nothing is sent."""
    config = write_config(tmp_path, system, chain, index=7)
    stranger = accounts[7].address
    nonce = accounts[7].nonce
    out = optimize(tmp_path, config, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert accounts[7].nonce == nonce
    assert "dry run, nothing sent: WETH ltv 0.6000 ->" in out.stdout
    role = system.engine.RISK_KEEPER_ROLE().hex().removeprefix("0x")
    assert f"simulation: reverts: AccessControlUnauthorizedAccount({stranger}, 0x{role})".lower() in out.stdout.lower()
    assert f"the key {stranger} lacks RISK_KEEPER_ROLE: --apply would refuse" in out.stdout
