"""The keeper is never silent when it cannot act, and prices gas from what the deployment says the native token is
worth: a real keeper (`build_keeper` + `tick`, or the `keeper run` process) against a real Anvil, every verdict read
from the metrics endpoint, the log and the chain."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, WAD, fund, open_position
from test_keeper_e2e import KEEPER_INDEX, _keeper, _mine, _rpc
from web3 import Web3

from keeper.chain.deployment import standard_abi
from keeper.engine.keeper import Keeper

USDC = 10**6
GWEI = 10**9
# 1 WETH backing 1500 USDC: health 1.13; at 1710, 0.969: half the debt is repaid at a 3.6 % discount, about 27 USD
# before gas.
WETH_DROP = 1710 * 10**8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """The metrics endpoint's samples, `name{labels}` -> value."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _served(keeper: Keeper) -> int:
    port = _free_port()
    keeper.metrics.serve(port)
    return port


def _liquidated(w3: Web3, system: Any, keeper: Keeper, block: int) -> list[tuple[str, int]]:
    engine = w3.eth.contract(address=system.engine.address, abi=keeper.dep.abis["MarginEngine"])
    return [(e.args.owner, e.args.subId) for e in engine.events.Liquidated().get_logs(from_block=block)]


def test_no_inventory_is_counted_and_logged_once_and_the_approval_is_not_a_liquidation(
    system: Any, chain: Any, accounts: Any, alice: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A keeper with gas money but none of the debt asset, and one liquidatable account: the account is counted as
    liquidatable and as skipped for inventory, the inventory gauge says 0, the reason is logged once however many
    blocks pass, and the start-up approval, confirmed, is not counted as a liquidation. Funded, the keeper
    liquidates it: then, and only then, one confirmed liquidation."""
    keeper_account = accounts[KEEPER_INDEX]
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    assert int(system.usdc.balanceOf(keeper_account)) == 0
    keeper = _keeper(system, chain, tmp_path, confirmations=1, low_inventory=100)
    port = _served(keeper)
    w3 = chain.provider.web3
    caplog.set_level(logging.INFO, logger="keeper-test")
    _rpc(w3, "evm_setAutomine", False)
    try:
        keeper.ensure_allowance()  # what `keeper run` does at start-up: one approval, through the journal
        _mine(w3)
        system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
        start = _mine(w3)
        for _ in range(4):
            keeper.tick()
            _mine(w3)
        m = _scrape(port)
        assert m["keeper_accounts_liquidatable"] == 1
        assert m['keeper_accounts_skipped{reason="inventory"}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("keeper_accounts_skipped{")) == 1
        assert m["keeper_debt_inventory"] == 0
        [approval] = keeper.journal.intents("approve-engine")
        assert approval.status == "confirmed"
        assert m["keeper_liquidations_confirmed_total"] == 0
        assert m["keeper_liquidations_sent_total"] == 0
        assert _liquidated(w3, system, keeper, start) == []
        lines = [r for r in caplog.records if "not liquidated" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].levelno == logging.WARNING
        text = lines[0].getMessage()
        assert f"{alice.address}/0" in text
        assert "(inventory)" in text
        assert keeper_account.address in text  # where to send the debt asset

        caplog.clear()
        keeper.housekeeping()
        low = [r.getMessage() for r in caplog.records if "low_inventory" in r.getMessage()]
        assert len(low) == 1
        assert "0.00 USDC" in low[0]

        system.usdc.mint(keeper_account, 1_000_000 * USDC, sender=system.admin)  # the operator funds the keeper
        _mine(w3)
        for _ in range(4):
            keeper.tick()
            _mine(w3)
        m = _scrape(port)
    finally:
        _rpc(w3, "evm_setAutomine", True)
    assert _liquidated(w3, system, keeper, start) == [(alice.address, 0)]
    assert m["keeper_liquidations_confirmed_total"] == 1
    assert m["keeper_debt_inventory"] == pytest.approx(int(system.usdc.balanceOf(keeper_account)) / USDC)
    assert m["keeper_accounts_liquidatable"] == 0
    assert m['keeper_accounts_skipped{reason="inventory"}'] == 0


def _renamed_record(system: Any, tmp_path: Path, native: dict[str, str]) -> Path:
    """The test deployment's record with no asset called WETH (WETH is listed as XETH, WBTC as XBTC) and a native
    price source."""
    raw = system.deployment.record()
    renames = {"WETH": "XETH", "WBTC": "XBTC"}
    for a in raw["assets"]:
        a["symbol"] = renames.get(a["symbol"], a["symbol"])
    raw["native"] = native
    record = tmp_path / "renamed.json"
    record.write_text(json.dumps(raw))
    return record


@pytest.mark.parametrize("source", ["asset", "feed"])
def test_gas_is_priced_through_the_deployments_native_source(
    system: Any, chain: Any, accounts: Any, alice: Any, tmp_path: Path, source: str
) -> None:
    """A deployment whose collateral is not called WETH and names its native price source (a listed asset, or a
    feed address): the keeper prices gas at that source's answer, read from the chain, and bids each liquidation
    by its economics. With the base fee above what this liquidation earns it is skipped for `fee`; below, it is
    sent with a max fee no higher than its ceiling, and mined."""
    weth_feed = system.feeds["WETH"].address
    native = {"asset": "XETH"} if source == "asset" else {"feed": weth_feed}
    record = _renamed_record(system, tmp_path, native)
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    keeper = _keeper(system, chain, tmp_path, record=record, max_fee_gwei=None, priority_fee_gwei=1)
    assert {a.symbol for a in keeper.dep.assets} == {"XETH", "XBTC", "LINK"}
    w3 = chain.provider.web3
    feed = w3.eth.contract(
        address=weth_feed,
        abi=[
            {
                "type": "function",
                "name": "latestRoundData",
                "stateMutability": "view",
                "inputs": [],
                "outputs": [
                    {"name": n, "type": t}
                    for n, t in [("r", "uint80"), ("a", "int256"), ("s", "uint256"), ("u", "uint256"), ("i", "uint80")]
                ],
            }
        ],
    )
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    _rpc(w3, "evm_setAutomine", False)
    try:
        keeper.ensure_allowance()
        _mine(w3)
        system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
        _mine(w3)
        _rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(500 * GWEI))
        spike = _mine(w3)
        keeper.tick()
        answer = int(feed.functions.latestRoundData().call()[1])
        assert keeper.last_limits is not None
        assert keeper.last_limits.native_price_usd == answer * WAD // 10**8 == 1710 * WAD  # not 0: gas is priced
        assert keeper.metrics.accounts_skipped.labels(reason="fee")._value.get() == 1
        assert keeper.metrics.accounts_liquidatable._value.get() == 1
        _rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(500 * GWEI))
        _mine(w3)
        keeper.tick()
        assert _liquidated(w3, system, keeper, spike) == []
        _rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(max(base, GWEI)))
        calm = _mine(w3)
        keeper.tick()
        [intent] = [i for i in keeper.journal.intents() if i.intent_key.startswith(f"liquidate:{alice.address}:0:")]
        ceiling = intent.max_fee_ceiling
        assert ceiling is not None
        # The ceiling is what the liquidation earns (above min_profit 0), spent on its estimated gas at 1710 USD/ETH.
        assert 20 * GWEI < ceiling < 500 * GWEI
        [attempt] = keeper.journal.attempts(intent.id)
        assert attempt.max_fee <= ceiling
        _mine(w3)
        keeper.tick()
    finally:
        _rpc(w3, "evm_setAutomine", True)
    assert _liquidated(w3, system, keeper, calm) == [(alice.address, 0)]


def test_keeper_run_logs_no_line_per_scheduler_run(system: Any, chain: Any, tmp_path: Path) -> None:
    """`keeper run` at log level info, polling every 0.1 s for a few seconds: APScheduler's per-run lines ("Running
    job", "executed successfully") stay out of the log; the keeper's own start-up lines are there."""
    record = tmp_path / "deployment.json"
    record.write_text(json.dumps(system.deployment.record()))
    config = tmp_path / "keeper.toml"
    config.write_text(
        f'rpc_url = "{chain.provider.uri}"\nchain_id = {chain.chain_id}\ndeployment = "{record}"\n'
        f'dev_account_index = {KEEPER_INDEX}\nstate_db = "{tmp_path / "state.db"}"\npoll_interval_s = 0.1\n'
        'log_level = "info"\noptimize_interval_s = 0\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    log_path = tmp_path / "keeper.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keeper", "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "running on chain" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        time.sleep(3.0)  # about 30 runs of the block job
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log_path.read_text()
    assert "running on chain" in text
    assert not re.search(r"Running job|executed successfully", text), text[-2000:]
    assert text.count("\n") < 40, text


@pytest.mark.parametrize(
    ("shipped", "compiled"), [("ERC20", "MockERC20"), ("AggregatorV3Interface", "AggregatorV3Interface")]
)
def test_shipped_abis_match_the_standard_interfaces(project: Any, shipped: str, compiled: str) -> None:
    """The keeper's own minimal ABIs (keeper/chain/abi) declare exactly what the compiled standard implementations have:
    same names, input and output types, mutability, for every function the keeper may call."""

    def signatures(abi: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        return {
            f["name"]: (
                tuple(i["type"] for i in f["inputs"]),
                tuple(o["type"] for o in f["outputs"]),
                f["stateMutability"],
            )
            for f in abi
            if f.get("type") == "function"
        }

    ours = signatures(standard_abi(shipped))
    theirs = signatures([a.model_dump(mode="json") for a in project[compiled].contract_type.abi])
    assert ours
    assert {name: theirs.get(name) for name in ours} == ours


def test_an_insolvent_account_the_keeper_cannot_liquidate_is_written_off_at_once(
    system: Any, chain: Any, accounts: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """With none of the debt asset the keeper cannot liquidate, but an insolvent account's certain loss must not
    wait for someone who can: it sends `writeOff`, and the vault's share price falls at once, before any lender can
    redeem ahead of the loss. A merely liquidatable (covered) account is left alone, and with write-offs turned
    off nothing is sent."""
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    open_position(system, bob, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    keeper_account = accounts[KEEPER_INDEX]
    assert int(system.usdc.balanceOf(keeper_account)) == 0
    w3 = chain.provider.web3
    _rpc(w3, "evm_setAutomine", False)
    try:
        keeper = _keeper(system, chain, tmp_path, confirmations=1)
        keeper.ensure_allowance()
        _mine(w3)
        system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)  # both liquidatable, both covered
        _mine(w3)
        for _ in range(3):
            keeper.tick()
            _mine(w3)
        assert not [i for i in keeper.journal.intents() if i.intent_key.startswith("writeoff:")]
        assert int(system.engine.debtOf(alice, 0)) >= 1500 * USDC  # nothing written off (interest accrues)
        system.feeds["WETH"].setAnswer(1400 * 10**8, sender=system.admin)  # $1,400 against 1,500: insolvent
        _mine(w3)
        price_before = int(system.vault.convertToAssets(10**12))
        for _ in range(3):
            keeper.tick()
            _mine(w3)
    finally:
        _rpc(w3, "evm_setAutomine", True)
    cover = 1400 * WAD * WAD // (WAD + 5 * 10**15)
    target = -(-cover // 10**12)
    for owner in (alice, bob):
        # Written down to the cover value (plus the interest of the blocks since, under a unit).
        assert target <= int(system.engine.debtOf(owner, 0)) <= target + 2
    assert int(system.vault.convertToAssets(10**12)) < price_before
    assert keeper.metrics.write_offs_sent._value.get() == 2
    assert keeper.metrics.liquidations_sent._value.get() == 0
    written = [i for i in keeper.journal.intents() if i.intent_key.startswith("writeoff:")]
    assert sorted(i.status for i in written) == ["confirmed", "confirmed"]


def test_write_offs_can_be_turned_off(system: Any, chain: Any, alice: Any, tmp_path: Path) -> None:
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    system.feeds["WETH"].setAnswer(1400 * 10**8, sender=system.admin)
    keeper = _keeper(system, chain, tmp_path, write_off_enabled=False)
    for _ in range(2):
        keeper.tick()
        chain.mine()
    assert int(system.engine.debtOf(alice, 0)) >= 1500 * USDC
    assert keeper.metrics.write_offs_sent._value.get() == 0
