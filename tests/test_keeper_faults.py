"""Faults the keeper must survive, on a real Anvil, every verdict read from the chain: a crash with a liquidation in
flight (the real `keeper run` process, killed with SIGKILL and restarted), reorgs that drop a mined liquidation and the
blocks discovery had checkpointed, an RPC outage (a TCP relay the test cuts and restores), a node that stops producing
blocks, and a stale oracle feed."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from conftest import MAX_UINT, ROOT, WAD, fund, open_position
from eth_abi import encode as abi_encode
from hexbytes import HexBytes
from test_keeper_e2e import KEEPER_INDEX, _keeper, _mine, _rpc
from web3 import Web3

from keeper.chain.index import SqliteIndex
from keeper.chain.journal import Journal
from keeper.chain.reads import read_market
from keeper.chain.sqlite import StateFile
from keeper.drills.relay import FlakyRelay
from keeper.engine.keeper import BREAKER_THRESHOLD, Keeper

GWEI = 10**9
USDC = 10**6
# 1 WETH backing 1500 USDC has health 2000 * 0.85 / 1500 = 1.13; at 1710: 0.969, liquidatable but above
# fullCloseHealth, so one liquidation repays half the debt and leaves it healthy (about 1.06).
WETH_DROP = 1710 * 10**8
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- helpers


class FakeClock:
    """The keeper's monotonic clock, moved by the test: backoff and staleness without real sleeping."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CheckpointLog(SqliteIndex):
    """The keeper's index, remembering every checkpoint it was asked to write (to see a rewind that the re-scan
    in the same cycle moves forward again)."""

    def __init__(self, path: Path) -> None:
        super().__init__(StateFile(path))
        self.history: list[tuple[str, int, str]] = []

    def set_checkpoint(self, name: str, block: int, block_hash: str) -> None:
        self.history.append((name, block, block_hash))
        super().set_checkpoint(name, block, block_hash)


def _settings_record(system: Any, tmp_path: Path) -> Path:
    record = tmp_path / "deployment.json"
    record.write_text(json.dumps(system.deployment.record()))
    return record


def _engine(system: Any, w3: Web3) -> Any:
    return w3.eth.contract(address=system.engine.address, abi=system.deployment.record()["abis"]["MarginEngine"])


def _health(engine: Any, owner: str, sub: int, block: int | str = "latest") -> int:
    return int(engine.functions.accountHealth(owner, sub).call(block_identifier=block)[5])


def _liquidated(engine: Any, from_block: int, to_block: int | str = "latest") -> list[Any]:
    return list(engine.events.Liquidated().get_logs(from_block=from_block, to_block=to_block))


def _sample(keeper: Keeper, name: str) -> float:
    value = keeper.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def _liquidation_intents(store: Journal, owner: str, sub: int) -> list[Any]:
    prefix = f"liquidate:{owner}:{sub}:"
    return [i for i in store.intents() if i.intent_key.startswith(prefix)]


def _wait_for(predicate: Callable[[], T], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the keeper exited with {proc.returncode} while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------------------------- 1. crash and restart


def _journal(db: Path) -> list[tuple[str, str, int, str | None, str | None]]:
    """(intent_key, status, nonce, mined tx hash, attempt tx hash) of every liquidation intent, read-only."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(
            "SELECT i.intent_key, i.status, i.nonce, i.tx_hash, a.tx_hash FROM intents i "
            "LEFT JOIN attempts a ON a.intent_id = i.id WHERE i.intent_key LIKE 'liquidate:%' ORDER BY i.id, a.id"
        ).fetchall()
    except sqlite3.OperationalError:  # the keeper has not created its tables yet
        return []
    finally:
        conn.close()


def _start_keeper(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "keeper", "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_restart_after_sigkill_keeps_one_liquidation_per_intent_and_contiguous_nonces(
    system: Any, chain: Any, accounts: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """`keeper run` signs and sends two liquidations that stay pending (no mining), is killed with SIGKILL, and
    restarted: the restarted process adopts the journalled transactions instead of signing new ones, so when mining
    resumes each account is liquidated exactly once, the nonces have no gap and no duplicate, and every intent ends
    confirmed. SIGTERM then stops it with exit code 0."""
    keeper_address = accounts[KEEPER_INDEX].address
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)  # also approves the engine
    book = [(alice, 0), (bob, 0)]
    for owner, sub in book:
        open_position(system, owner, sub, {"WETH": 10**18}, borrow=1500 * USDC)
    system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
    w3 = chain.provider.web3
    engine = _engine(system, w3)
    targets = {(o.address, s) for o, s in book}
    assert all(_health(engine, o, s) < WAD for o, s in targets)

    db = tmp_path / "state.db"
    config = tmp_path / "keeper.toml"
    record = _settings_record(system, tmp_path)
    config.write_text(
        f'rpc_url = "{chain.provider.uri}"\nchain_id = {chain.chain_id}\ndeployment = "{record}"\n'
        f'dev_account_index = {KEEPER_INDEX}\nstate_db = "{db}"\npoll_interval_s = 0.2\nconfirmations = 1\n'
        "min_profit_usd = 0\npriority_fee_gwei = 1\nmax_fee_gwei = 500\n"
    )
    start_block = w3.eth.block_number
    start_nonce = w3.eth.get_transaction_count(keeper_address)
    procs: list[subprocess.Popen[bytes]] = []
    _rpc(w3, "evm_setAutomine", False)
    try:
        first = _start_keeper(config, tmp_path / "keeper-1.log")
        procs.append(first)
        _wait_for(lambda: any(row[4] for row in _journal(db)), 40, "a journalled liquidation attempt", first)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        assert w3.eth.block_number == start_block  # nothing mined: whatever was sent is still pending

        second = _start_keeper(config, tmp_path / "keeper-2.log")
        procs.append(second)

        def both_in_flight() -> bool:
            keys = {tuple(row[0].split(":")[1:3]) for row in _journal(db) if row[4]}
            return keys == {(o, str(s)) for o, s in targets}

        _wait_for(both_in_flight, 40, "a liquidation in flight for each account", second)
        time.sleep(1.0)  # a few more cycles of the restarted keeper at the same head: it must not add any
        before_mining = _journal(db)
        assert len({row[0] for row in before_mining}) == len(targets), before_mining  # one intent per account
        assert len({row[4] for row in before_mining}) == len(targets), before_mining  # one signed tx per intent

        _rpc(w3, "evm_setAutomine", True)
        _mine(w3)

        def all_confirmed() -> bool:
            rows = _journal(db)
            return bool(rows) and all(row[1] == "confirmed" for row in rows)

        _wait_for(all_confirmed, 40, "every liquidation intent confirmed", second)
        time.sleep(1.0)  # the keeper runs on: the accounts, healthy again, must not be liquidated again

        os.kill(second.pid, signal.SIGTERM)
        assert second.wait(timeout=15) == 0, (tmp_path / "keeper-2.log").read_text()[-3000:]
    finally:
        for proc in procs:
            _stop(proc)
        _rpc(w3, "evm_setAutomine", True)

    journal = _journal(db)
    head = w3.eth.block_number
    events = _liquidated(engine, start_block + 1, head)
    # Exactly one Liquidated per account, each in the transaction its (only) intent journalled.
    assert sorted((e.args.owner, e.args.subId) for e in events) == sorted(targets)
    intent_tx = {row[0]: row[3] for row in journal}
    assert len(journal) == len(targets), journal
    assert {Web3.to_hex(e.transactionHash) for e in events} == set(intent_tx.values())
    for owner, sub in targets:
        assert _health(engine, owner, sub) >= WAD
    # Nonces: every keeper transaction since the start, gap-free and without a duplicate, none left pending.
    end_nonce = w3.eth.get_transaction_count(keeper_address, "latest")
    assert w3.eth.get_transaction_count(keeper_address, "pending") == end_nonce
    mined = [
        int(tx["nonce"])
        for n in range(start_block + 1, head + 1)
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]
        if tx["from"] == keeper_address
    ]
    assert sorted(mined) == list(range(start_nonce, end_nonce))
    assert len(mined) == len(targets)
    assert sorted(row[2] for row in journal) == list(range(start_nonce, start_nonce + len(targets)))


# ---------------------------------------------------------------------------------------------- 1b. slow inclusion


def test_full_close_mined_a_block_after_planning_still_lands(
    system: Any, chain: Any, accounts: Any, alice: Any, stranger: Any, tmp_path: Path
) -> None:
    """Inclusion is never in the block that was read: here the liquidation is mined 12 s after the block it was
    planned on, at 70 % utilisation (3.5 %/year, about 20 USDC units of interest on 1500 USDC in 12 s). The account
    is below fullCloseHealth, so the keeper repays the whole debt; what it requests must still cover the debt at
    inclusion, or the engine refuses to leave the accrued remainder as dust (LiquidationLeavesDust)."""
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)
    open_position(system, stranger, 0, {"WBTC": 200 * 10**8}, borrow=7_000_000 * USDC)
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    keeper = _keeper(system, chain, tmp_path)
    w3 = chain.provider.web3
    engine = _engine(system, w3)
    _rpc(w3, "evm_setAutomine", False)
    try:
        _mine(w3)
        keeper.tick()
        system.feeds["WETH"].setAnswer(1640 * 10**8, sender=system.admin)  # health 0.93 < fullCloseHealth 0.95
        price_block = _mine(w3)
        keeper.tick()
        _rpc(w3, "evm_increaseTime", 12)
        block = _mine(w3)
    finally:
        _rpc(w3, "evm_setAutomine", True)

    assert _health(engine, alice.address, 0, price_block) < 95 * WAD // 100
    events = _liquidated(engine, block, block)
    assert [(e.args.owner, e.args.subId) for e in events] == [(alice.address, 0)]
    assert int(engine.functions.debtOf(alice.address, 0).call()) == 0


# ---------------------------------------------------------------------------------------------- 2. reorgs


def _raw(w3: Web3, tx_hash: Any) -> str:
    raw = _rpc(w3, "eth_getRawTransactionByHash", HexBytes(tx_hash).to_0x_hex())
    assert raw, tx_hash
    return str(raw)


def test_deep_reorg_rewinds_discovery_and_liquidates_again_on_the_new_chain(
    system: Any, chain: Any, accounts: Any, alice: Any, stranger: Any, liquidator: Any, tmp_path: Path
) -> None:
    """A reorg replaces the blocks holding a new account's deposit, the price drop and the keeper's confirmed
    liquidation, and the discovery checkpoint block. The new chain re-includes the deposit and the price drop in
    other blocks, adds a deposit that never existed before (below the old checkpoint), and drops the liquidation.
    The keeper rolls its checkpoint back to the fork point, finds the new account, and liquidates again, once, at
    the nonce the reorg freed."""
    keeper_address = accounts[KEEPER_INDEX].address
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    fund(system, stranger, "WETH", 10**18)
    fund(system, liquidator, "WETH", 10**18)
    store = CheckpointLog(tmp_path / "state.db")
    keeper = _keeper(system, chain, tmp_path, state=store.db, index=store)
    w3 = chain.provider.web3
    engine = _engine(system, w3)
    nonce0 = w3.eth.get_transaction_count(keeper_address)

    _rpc(w3, "evm_setAutomine", False)
    try:
        fork_point = _mine(w3)
        keeper.tick()
        # Ape gives each transaction the whole block's gas when mining is manual: one per block.
        deposit = system.engine.deposit(stranger, 7, system.weth, 10**18, sender=stranger)
        _mine(w3)
        drop = system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
        _mine(w3)
        keeper.tick()  # finds stranger/7 in the tip, sends the liquidation
        liquidation_block = _mine(w3)
        keeper.tick()
        old_logs = _liquidated(engine, liquidation_block, liquidation_block)
        assert [(e.args.owner, e.args.subId) for e in old_logs] == [(alice.address, 0)]
        old_tx = old_logs[0].transactionHash
        [old_intent] = _liquidation_intents(keeper.journal, alice.address, 0)
        assert old_intent.status == "confirmed"
        head = _mine(w3)
        keeper.tick()
        checkpoint_before = store.get_checkpoint("discovery")
        assert checkpoint_before is not None
        assert checkpoint_before[0] == head - 1 > fork_point + 1  # the reorg will replace the checkpoint block
        assert (stranger.address, 7) in store.accounts()
        assert (liquidator.address, 8) not in store.accounts()

        new_deposit = {
            "from": liquidator.address,
            "to": system.engine.address,
            "data": engine.encode_abi("deposit", [liquidator.address, 8, system.weth.address, 10**18]),
            "gas": hex(400_000),
        }
        depth = head - fork_point
        pairs = [[_raw(w3, drop.txn_hash), 0], [new_deposit, 1], [_raw(w3, deposit.txn_hash), 2]]
        _rpc(w3, "anvil_reorg", depth, pairs)
        assert w3.eth.block_number == head
        assert _rpc(w3, "eth_getTransactionReceipt", Web3.to_hex(old_tx)) is None  # gone with its block
        assert _health(engine, alice.address, 0) < WAD
        history_at_reorg = len(store.history)

        _mine(w3)  # a reorg to the same height is seen with the next block
        keeper.tick()
        # Rolled back to the newest checkpointed block the reorg left in place, then scanned forward again.
        rewind = store.history[history_at_reorg]
        kept = max(b for _, b, _ in store.history[:history_at_reorg] if b <= fork_point)
        assert rewind[1] == kept, store.history
        assert rewind[2] == Web3.to_hex(w3.eth.get_block(kept)["hash"])
        assert store.history[-1][1] > checkpoint_before[0] - depth
        assert (liquidator.address, 8) in store.accounts()  # only in the new chain, below the old checkpoint
        assert (stranger.address, 7) in store.accounts()  # re-included one block later
        new_block = _mine(w3)
        keeper.tick()
    finally:
        _rpc(w3, "evm_setAutomine", True)

    number, block_hash = store.get_checkpoint("discovery") or (-1, "")
    assert block_hash == Web3.to_hex(w3.eth.get_block(number)["hash"])  # the checkpoint is on the new chain
    events = _liquidated(engine, fork_point + 1)
    assert [(e.args.owner, e.args.subId, e.blockNumber) for e in events] == [(alice.address, 0, new_block)]
    assert _health(engine, alice.address, 0) >= WAD
    intents = _liquidation_intents(keeper.journal, alice.address, 0)
    assert [i.status for i in intents] == ["confirmed", "confirmed"]
    assert intents[1].tx_hash == Web3.to_hex(events[0].transactionHash)
    # The new liquidation took the nonce the reorg gave back: no gap, no extra transaction.
    assert intents[1].nonce == intents[0].nonce == nonce0
    assert w3.eth.get_transaction_count(keeper_address) == nonce0 + 1


def test_shallow_reorg_puts_the_mined_liquidation_back_and_rebroadcasts_it(
    system: Any, chain: Any, accounts: Any, alice: Any, tmp_path: Path
) -> None:
    """With two confirmations, a reorg removes the block of a liquidation mined but not yet confirmed. The keeper
    sees the receipt vanish, marks the intent pending again and re-broadcasts the journalled transaction (same hash,
    nothing new signed); it is mined once on the new chain and confirmed there."""
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * USDC)
    keeper = _keeper(system, chain, tmp_path, confirmations=2)
    w3 = chain.provider.web3
    engine = _engine(system, w3)
    _rpc(w3, "evm_setAutomine", False)
    try:
        _mine(w3)
        keeper.tick()
        system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
        drop_block = _mine(w3)
        keeper.tick()
        mined_block = _mine(w3)
        keeper.tick()
        [intent] = _liquidation_intents(keeper.journal, alice.address, 0)
        assert (intent.status, intent.block_number) == ("mined", mined_block)
        [attempt] = keeper.journal.attempts(intent.id)

        _rpc(w3, "anvil_reorg", 1, [])
        assert _rpc(w3, "eth_getTransactionReceipt", attempt.tx_hash) is None
        _mine(w3)
        keeper.tick()
        again = keeper.journal.intent(intent.id)
        assert (again.status, again.block_number) == ("pending", None)  # the keeper saw the reorg
        assert keeper.journal.attempts(intent.id) == [attempt]  # nothing new signed
        remined = _mine(w3)
        keeper.tick()
        _mine(w3)
        keeper.tick()
    finally:
        _rpc(w3, "evm_setAutomine", True)

    final = keeper.journal.intent(intent.id)
    assert (final.status, final.block_number, final.tx_hash) == ("confirmed", remined, attempt.tx_hash)
    events = _liquidated(engine, drop_block)
    assert [(e.args.owner, e.args.subId, e.blockNumber) for e in events] == [(alice.address, 0, remined)]
    assert Web3.to_hex(events[0].transactionHash) == attempt.tx_hash
    assert len(_liquidation_intents(keeper.journal, alice.address, 0)) == 1


# ---------------------------------------------------------------------------------------------- 3. RPC outage


def test_rpc_outage_backs_off_opens_the_breaker_and_recovers(
    system: Any, chain: Any, accounts: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """The keeper's only way to the node goes through a relay that the test cuts; positions become liquidatable
    during the outage. Every tick fails without raising, is counted, waits longer than the one before, and the
    fifth opens the circuit breaker. Once the relay is back the keeper recovers and liquidates every liquidatable
    account, and only those."""
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)
    book = [(alice, 0, 1500), (alice, 1, 1480), (bob, 0, 1400), (bob, 1, 800)]
    for owner, sub, usdc in book:
        open_position(system, owner, sub, {"WETH": 10**18}, borrow=usdc * USDC)
    uri = urlsplit(chain.provider.uri)
    relay = FlakyRelay((uri.hostname or "127.0.0.1", int(uri.port or 8545)))
    clock = FakeClock()
    proxied = Web3(Web3.HTTPProvider(relay.url, request_kwargs={"timeout": 5}, exception_retry_configuration=None))
    keeper = _keeper(system, chain, tmp_path, w3=proxied, clock=clock, poll_interval_s=1.0)
    w3 = chain.provider.web3
    engine = _engine(system, w3)
    try:
        keeper.tick()
        assert keeper.state.failures == 0
        assert keeper.index.account_count() == len(book)

        relay.down()
        drop = system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
        drop_block = drop.block_number
        unhealthy = {(o.address, s) for o, s, _ in book if _health(engine, o.address, s) < WAD}
        assert 2 <= len(unhealthy) < len(book)

        backoffs: list[float] = []
        for n in range(1, BREAKER_THRESHOLD + 2):
            clock.now = keeper.state.next_attempt_at
            keeper.tick()  # must not raise
            assert keeper.state.failures == n
            assert _sample(keeper, "keeper_rpc_errors_total") == n
            backoffs.append(keeper.state.next_attempt_at - clock())
            assert _sample(keeper, "keeper_circuit_open") == (1 if n >= BREAKER_THRESHOLD else 0)
            clock.advance(backoffs[-1] / 2)
            keeper.tick()  # still backing off: not even tried
            assert keeper.state.failures == n
            _mine(w3)
        assert backoffs == sorted(backoffs)
        assert backoffs[0] < backoffs[BREAKER_THRESHOLD - 1], backoffs
        assert keeper.state.breaker_open_until > clock()
        assert _liquidated(engine, drop_block) == []

        relay.up()
        clock.now = keeper.state.next_attempt_at
        head = w3.eth.block_number
        keeper.tick()
        assert keeper.state.failures == 0
        assert keeper.state.last_block == head
        for _ in range(6):
            clock.now = max(clock.now + 1.0, keeper.state.breaker_open_until)
            _mine(w3)
            keeper.tick()
            if all(_health(engine, o, s) >= WAD for o, s in unhealthy):
                break
        assert keeper.state.failures == 0
    finally:
        relay.close()

    events = _liquidated(engine, drop_block)
    assert {(e.args.owner, e.args.subId) for e in events} == unhealthy
    for owner, sub, _ in book:
        h = _health(engine, owner.address, sub)
        assert h >= WAD or h == MAX_UINT


# ---------------------------------------------------------------------------------------------- 4. stale node


def test_stale_node_alerts_once_and_clears_on_the_next_block(
    system: Any, chain: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node that mines on a schedule (automine off, as every public chain) and stops producing blocks."""
    clock = FakeClock()
    keeper = _keeper(system, chain, tmp_path, clock=clock, stale_node_s=60)
    w3 = chain.provider.web3
    caplog.set_level(logging.INFO, logger="keeper-faults")
    _rpc(w3, "evm_setAutomine", False)
    try:
        keeper.tick()
        assert keeper.state.last_block == w3.eth.block_number
        clock.advance(59)
        keeper.tick()
        assert _sample(keeper, "keeper_node_stale") == 0
        clock.advance(2)
        keeper.tick()
        assert _sample(keeper, "keeper_node_stale") == 1
        for _ in range(3):
            clock.advance(30)
            keeper.tick()
        stale_errors = [r for r in caplog.records if r.levelno == logging.ERROR and "stale" in r.getMessage()]
        assert len(stale_errors) == 1, [r.getMessage() for r in stale_errors]
        assert _sample(keeper, "keeper_node_stale") == 1

        head = _mine(w3)
        keeper.tick()
    finally:
        _rpc(w3, "evm_setAutomine", True)
    assert _sample(keeper, "keeper_node_stale") == 0
    assert _sample(keeper, "keeper_last_processed_block") == head
    assert keeper.state.failures == 0


def test_an_idle_automining_local_chain_is_not_stale(
    system: Any, chain: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Anvil with automine on (its default, and ape's) mines a block only for a transaction: with no traffic, ten
    minutes without a block is not staleness, and no error is logged. Switched to manual mining, the same silence
    is staleness again."""
    clock = FakeClock()
    keeper = _keeper(system, chain, tmp_path, clock=clock, stale_node_s=60)
    w3 = chain.provider.web3
    assert _rpc(w3, "anvil_getAutomine") is True
    caplog.set_level(logging.INFO, logger="keeper-test")
    keeper.tick()
    head = keeper.state.last_block
    for _ in range(20):
        clock.advance(30)
        keeper.tick()
    assert w3.eth.block_number == head  # really no block for ten minutes
    assert _sample(keeper, "keeper_node_stale") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    notes = [r.getMessage() for r in caplog.records if "automine" in r.getMessage()]
    assert len(notes) == 1, notes
    _rpc(w3, "evm_setAutomine", False)
    try:
        clock.advance(61)
        keeper.tick()
        assert _sample(keeper, "keeper_node_stale") == 1
    finally:
        _rpc(w3, "evm_setAutomine", True)


# ---------------------------------------------------------------------------------------------- 5. oracle guard


def test_stale_feed_blocks_liquidations_of_its_collateral_until_a_fresh_price(
    system: Any, chain: Any, accounts: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """WETH's latest answer would make two WETH-backed accounts liquidatable, but it is older than the feed's
    maxStaleness, so the router refuses it: the keeper sends nothing for them (while it does liquidate a WBTC-backed
    account in the same blocks). A fresh answer at the same price gets both liquidated in the very next block."""
    fund(system, accounts[KEEPER_INDEX], "USDC", 1_000_000 * USDC)
    weth_book = [(alice, 0), (bob, 0)]
    for owner, sub in weth_book:
        open_position(system, owner, sub, {"WETH": 10**18}, borrow=1500 * USDC)
    # WBTC: health 60000 * 0.8 / 44000 = 1.09; at 54000: 0.98.
    open_position(system, bob, 1, {"WBTC": 10**8}, borrow=44_000 * USDC)
    keeper = _keeper(system, chain, tmp_path)
    w3 = chain.provider.web3
    engine = _engine(system, w3)
    _rpc(w3, "evm_setAutomine", False)
    try:
        _mine(w3)
        keeper.tick()
        now = int(w3.eth.get_block("latest")["timestamp"])
        old = now - 3600 - 60  # WETH maxStaleness is one hour
        system.feeds["WETH"].setAnswerAt(WETH_DROP, old, old, sender=system.admin)
        stale_block = _mine(w3)  # ape gives each transaction the whole block's gas when mining is manual
        system.feeds["WBTC"].setAnswer(54_000 * 10**8, sender=system.admin)
        _mine(w3)
        for _ in range(3):
            keeper.tick()
            _mine(w3)
        assert _sample(keeper, "keeper_accounts_unpriced") == len(weth_book)
        # What the keeper read: the router refuses WETH with StalePrice(asset, updatedAt, maxStaleness).
        weth = read_market(keeper.lens).asset(system.weth.address).price
        stale = Web3.keccak(text="StalePrice(address,uint256,uint256)")[:4]
        assert (weth.ok, weth.error) == (
            False,
            stale + abi_encode(["address", "uint256", "uint256"], [weth.asset, old, 3600]),
        )
        events = _liquidated(engine, stale_block)
        assert [(e.args.owner, e.args.subId) for e in events] == [(bob.address, 1)]
        for owner, sub in weth_book:
            assert _liquidation_intents(keeper.journal, owner.address, sub) == []

        system.feeds["WETH"].setAnswer(WETH_DROP, sender=system.admin)
        fresh_block = _mine(w3)
        keeper.tick()
        next_block = _mine(w3)
        keeper.tick()
    finally:
        _rpc(w3, "evm_setAutomine", True)

    events = _liquidated(engine, fresh_block)
    assert sorted((e.args.owner, e.args.subId, e.blockNumber) for e in events) == sorted(
        (o.address, s, next_block) for o, s in weth_book
    )
    for owner, sub in weth_book:
        # The same answer as the stale one, only fresh: it is the price alone that made them liquidatable.
        assert _health(engine, owner.address, sub, fresh_block) < WAD
        assert _health(engine, owner.address, sub) >= WAD
