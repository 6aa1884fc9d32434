"""The journalled transaction manager against a real Anvil: crash recovery, duplicates, replacement, reorgs and
the nodes' real "already known" / "nonce too low" answers.

The signer is the test mnemonic's account 7 (no other fixture uses it). Tests that switch Anvil's automine off
switch it back on (and empty the pool) in a finally block."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound

from keeper.chain.journal import Attempt, SqliteJournal
from keeper.chain.txmanager import FeePolicy, Outcome, TxManager, initial_fees

MNEMONIC = "test test test test test test test test test test test junk"
Account.enable_unaudited_hdwallet_features()
SIGNER: LocalAccount = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/7")
ADMIN_KEY: LocalAccount = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/0")
GWEI = 10**9
CHAIN_ID = 31337
POLICY = FeePolicy(max_fee_cap_wei=100 * GWEI, priority_fee_wei=GWEI)
MINT = 1_000 * 10**6
LOG = logging.getLogger("test.txmanager")


class ProcessKilledError(Exception):
    """Stands for the process dying at a chosen point."""


@pytest.fixture
def w3(system: Any, chain: Any) -> Web3:
    return Web3(Web3.HTTPProvider(chain.provider.uri))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keeper.db"


def manager(
    w3: Web3,
    db: Path,
    policy: FeePolicy = POLICY,
    confirmations: int = 2,
    replace_after_blocks: int = 3,
    **hooks: Any,
) -> TxManager:
    """A TxManager on a fresh journal over `db` (a second call is what a restarted process builds)."""
    return TxManager(
        w3, w3, SIGNER, SqliteJournal.open(db), CHAIN_ID, policy, confirmations, replace_after_blocks, LOG, **hooks
    )


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


def mine(w3: Web3, blocks: int = 1, base_fee: int | None = None) -> int:
    """Mine `blocks` blocks (each with `base_fee` when given, which keeps out pool transactions paying less)."""
    for _ in range(blocks):
        if base_fee is not None:
            rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(base_fee))
        rpc(w3, "evm_mine")
    return int(w3.eth.block_number)


@contextmanager
def automine_off(w3: Web3) -> Iterator[None]:
    """Automine off for the block; then the pool is emptied, automine is back on and the base fee is back to what
    it was (Anvil's next base fee is not part of the snapshots ape reverts to)."""
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    rpc(w3, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(w3, "anvil_dropAllTransactions")
        rpc(w3, "evm_setAutomine", True)
        rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(base_fee))


def wait(w3: Web3, tx_hash: str | bytes) -> Any:
    """The receipt, once Anvil has mined the transaction (automine answers before the block exists)."""
    return w3.eth.wait_for_transaction_receipt(HexBytes(tx_hash), timeout=10, poll_latency=0.05)


def mint_tx(system: Any, amount: int = MINT) -> dict[str, Any]:
    return {"to": str(system.usdc.address), "data": HexBytes(system.usdc.mint.encode_input(SIGNER.address, amount))}


def usdc_balance(system: Any) -> int:
    return int(system.usdc.balanceOf(SIGNER.address))


def nonce(w3: Web3) -> int:
    return int(w3.eth.get_transaction_count(SIGNER.address, "latest"))


def receipt_or_none(w3: Web3, tx_hash: str) -> Any:
    try:
        return w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        return None


def pool_hashes(w3: Web3) -> dict[int, str]:
    """The signer's transactions in Anvil's pool, by nonce."""
    content = rpc(w3, "txpool_content")
    ours = {**content["pending"], **content["queued"]}.get(SIGNER.address.lower(), {})
    return {int(n): tx["hash"] for n, tx in ours.items()}


def send_raw(w3: Web3, raw: str, mined: bool = True) -> None:
    """Send a journalled raw transaction behind the manager's back (and wait until it is mined)."""
    tx_hash = w3.eth.send_raw_transaction(HexBytes(raw))
    if mined:
        wait(w3, tx_hash)


def self_transfer(w3: Web3, at_nonce: int) -> str:
    """A transaction from the signer that is not the manager's (another tool using the same key)."""
    signed = SIGNER.sign_transaction(
        {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": at_nonce,
            "to": SIGNER.address,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": 10 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    wait(w3, tx_hash)
    return tx_hash.to_0x_hex()


def follow_to_end(w3: Web3, tm: TxManager, blocks: int = 4) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for _ in range(blocks):
        outcomes += tm.poll(mine(w3))
    return outcomes


def crash_before_send(attempt: Attempt) -> None:
    raise ProcessKilledError(attempt.tx_hash)


# ------------------------------------------------------------------------------------------------ basics


def test_submit_is_followed_to_the_confirmation_depth(system: Any, w3: Web3, db: Path) -> None:
    tm = manager(w3, db, confirmations=3)
    start, balance = nonce(w3), usdc_balance(system)
    fees = initial_fees(int(w3.eth.get_block("latest").get("baseFeePerGas", 0)), POLICY)
    sub = tm.submit("mint:1", mint_tx(system))
    assert sub is not None
    assert (sub.status, sub.nonce) == ("pending", start)
    mined_in = wait(w3, sub.tx_hash)["blockNumber"]
    assert tm.poll(mined_in) == []
    assert tm.poll(mine(w3)) == []  # 2 deep
    [outcome] = tm.poll(mine(w3))  # 3 deep
    assert (outcome.intent_key, outcome.status, outcome.tx_hash, outcome.block) == (
        "mint:1",
        "confirmed",
        sub.tx_hash,
        mined_in,
    )
    assert outcome.receipt is not None
    assert outcome.receipt["status"] == 1
    assert usdc_balance(system) == balance + MINT
    store = SqliteJournal.open(db)
    [intent] = store.intents("mint:1")
    assert (intent.status, intent.nonce, intent.tx_hash) == ("confirmed", start, sub.tx_hash)
    [attempt] = store.attempts(intent.id)
    assert (attempt.status, attempt.max_fee, attempt.priority_fee) == ("sent", *fees)
    assert tm.poll(mine(w3)) == []  # reported once


def test_second_submit_of_a_pending_intent_is_refused(system: Any, w3: Web3, db: Path) -> None:
    tm = manager(w3, db)
    start = nonce(w3)
    with automine_off(w3):
        first = tm.submit("mint:dup", mint_tx(system))
        assert first is not None
        assert tm.submit("mint:dup", mint_tx(system, 5)) is None
        assert pool_hashes(w3) == {start: first.tx_hash}
        assert len(SqliteJournal.open(db).intents("mint:dup")) == 1
        outcomes = []
        for _ in range(3):
            outcomes += tm.poll(mine(w3))
        assert [(o.intent_key, o.status) for o in outcomes] == [("mint:dup", "confirmed")]
    # Resolved: the key can be used again, at the next nonce.
    again = tm.submit("mint:dup", mint_tx(system))
    assert again is not None
    assert again.nonce == start + 1


def test_simulation_refuses_a_reverting_call(system: Any, w3: Web3, db: Path, stranger: Any) -> None:
    tm = manager(w3, db)
    start = nonce(w3)
    overdraw = {"to": str(system.usdc.address), "data": system.usdc.transfer.encode_input(stranger, 1)}
    assert tm.submit("overdraw", overdraw) is None
    assert SqliteJournal.open(db).intents() == []
    assert nonce(w3) == start
    # Without simulation (and with a gas limit, so nothing estimates) it is sent and reported as reverted.
    sub = tm.submit("overdraw", {**overdraw, "gas": 100_000}, simulate=False)
    assert sub is not None
    wait(w3, sub.tx_hash)
    [outcome] = follow_to_end(w3, tm)
    assert (outcome.status, outcome.tx_hash) == ("reverted", sub.tx_hash)
    assert outcome.receipt is not None
    assert outcome.receipt["status"] == 0


def test_refused_send_releases_its_nonce_for_the_next_intent(system: Any, w3: Web3, db: Path) -> None:
    tm = manager(w3, db)
    start = nonce(w3)
    too_big = {**mint_tx(system), "gas": 40_000_000}  # above the block gas limit: every node refuses it
    failed = tm.submit("too-big", too_big, simulate=False)
    assert failed is not None
    assert (failed.status, failed.nonce) == ("failed", start)
    assert failed.error
    assert SqliteJournal.open(db).intents("too-big")[0].status == "failed"
    ok = tm.submit("mint:after", mint_tx(system))
    assert ok is not None
    assert (ok.status, ok.nonce) == ("pending", start)  # the same nonce: no gap
    wait(w3, ok.tx_hash)
    assert [o.status for o in follow_to_end(w3, tm)] == ["confirmed"]
    assert nonce(w3) == start + 1


# ------------------------------------------------------------------------------------------------ crashes


def test_crash_after_journal_before_send_is_sent_once_on_restart(system: Any, w3: Web3, db: Path) -> None:
    start, balance = nonce(w3), usdc_balance(system)
    with pytest.raises(ProcessKilledError):
        manager(w3, db, before_send=crash_before_send).submit("mint:crash", mint_tx(system))
    store = SqliteJournal.open(db)
    [intent] = store.intents("mint:crash")
    [attempt] = store.attempts(intent.id)
    assert (intent.status, intent.nonce, attempt.status) == ("pending", start, "signed")
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction(HexBytes(attempt.tx_hash))  # the node never saw it
    assert nonce(w3) == start

    restarted = manager(w3, db)
    assert restarted.reconcile() == []
    wait(w3, attempt.tx_hash)  # the journalled raw tx, same hash
    assert restarted.reconcile() == []  # a second reconcile sends nothing new
    outcomes = follow_to_end(w3, restarted)
    assert [(o.intent_key, o.status, o.tx_hash) for o in outcomes] == [("mint:crash", "confirmed", attempt.tx_hash)]
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT
    assert len(SqliteJournal.open(db).attempts(intent.id)) == 1
    assert restarted.next_nonce() == start + 1


def test_crash_after_the_node_got_it_is_not_sent_again(system: Any, w3: Web3, db: Path) -> None:
    """The worst moment: the node has the transaction, the journal still says only 'signed'."""
    start = nonce(w3)

    def send_then_die(attempt: Attempt) -> None:
        send_raw(w3, attempt.raw_tx, mined=False)
        raise ProcessKilledError(attempt.tx_hash)

    with automine_off(w3):
        with pytest.raises(ProcessKilledError):
            manager(w3, db, before_send=send_then_die).submit("mint:racy", mint_tx(system))
        [attempt] = SqliteJournal.open(db).attempts(SqliteJournal.open(db).intents("mint:racy")[0].id)
        assert attempt.status == "signed"
        sends: list[str] = []
        restarted = manager(w3, db, before_send=lambda a: sends.append(a.tx_hash))
        assert restarted.reconcile() == []
        assert sends == []  # found in the node's pool: nothing re-sent
        assert SqliteJournal.open(db).attempt(attempt.id).status == "sent"
        assert pool_hashes(w3) == {start: attempt.tx_hash}
        outcomes = []
        for _ in range(3):
            outcomes += restarted.poll(mine(w3))
    assert [(o.status, o.tx_hash) for o in outcomes] == [("confirmed", attempt.tx_hash)]
    assert nonce(w3) == start + 1


def test_kill_between_send_and_receipt_resolves_on_restart(system: Any, w3: Web3, db: Path) -> None:
    start, balance = nonce(w3), usdc_balance(system)

    def die_after_send(attempt: Attempt) -> None:
        raise ProcessKilledError(attempt.tx_hash)

    with pytest.raises(ProcessKilledError):
        manager(w3, db, after_send=die_after_send).submit("mint:kill", mint_tx(system))
    [attempt] = SqliteJournal.open(db).attempts(SqliteJournal.open(db).intents("mint:kill")[0].id)
    assert attempt.status == "sent"
    wait(w3, attempt.tx_hash)
    sends: list[str] = []
    restarted = manager(w3, db, before_send=lambda a: sends.append(a.tx_hash))
    assert restarted.reconcile() == []
    [intent] = SqliteJournal.open(db).intents("mint:kill")
    assert intent.status == "mined"
    outcomes = follow_to_end(w3, restarted)
    assert [(o.intent_key, o.status) for o in outcomes] == [("mint:kill", "confirmed")]
    assert sends == []
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT


KILLED_CHILD = """
import logging, os, signal, sys
from pathlib import Path
from eth_account import Account
from web3 import Web3
from keeper.chain.journal import SqliteJournal
from keeper.chain.txmanager import FeePolicy, TxManager
Account.enable_unaudited_hdwallet_features()
signer = Account.from_mnemonic("{mnemonic}", account_path="m/44'/60'/0'/0/7")
w3 = Web3(Web3.HTTPProvider(sys.argv[1]))
tm = TxManager(w3, w3, signer, SqliteJournal.open(Path(sys.argv[2])), 31337, FeePolicy(100 * 10**9, 10**9), 2, 3,
               logging.getLogger("child"), before_send=lambda attempt: os.kill(os.getpid(), signal.SIGKILL))
tm.submit("mint:kill9", {{"to": sys.argv[3], "data": sys.argv[4]}})
"""


def test_kill_9_after_the_journal_commit(system: Any, w3: Web3, db: Path, chain: Any) -> None:
    """A real SIGKILL right after the journal commit: the committed intent survives the process."""
    start, balance = nonce(w3), usdc_balance(system)
    tx = mint_tx(system)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_CHILD.format(mnemonic=MNEMONIC),
            chain.provider.uri,
            str(db),
            tx["to"],
            tx["data"].to_0x_hex(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert nonce(w3) == start
    [intent] = SqliteJournal.open(db).intents("mint:kill9")
    [attempt] = SqliteJournal.open(db).attempts(intent.id)
    assert (intent.status, attempt.status) == ("pending", "signed")
    restarted = manager(w3, db)
    restarted.reconcile()
    wait(w3, attempt.tx_hash)
    outcomes = follow_to_end(w3, restarted)
    assert [(o.intent_key, o.status, o.tx_hash) for o in outcomes] == [("mint:kill9", "confirmed", attempt.tx_hash)]
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT


# ------------------------------------------------------------------------------------------------ node answers


def test_already_known_when_the_pool_has_it(system: Any, w3: Web3, db: Path) -> None:
    tm = manager(w3, db)
    with automine_off(w3):
        sub = tm.submit("mint:known", mint_tx(system))
        assert sub is not None
        assert tm.rebroadcast("mint:known") == "already_known"  # Anvil: "transaction already imported"
        [intent] = SqliteJournal.open(db).intents("mint:known")
        [attempt] = SqliteJournal.open(db).attempts(intent.id)
        assert (attempt.tx_hash, attempt.status) == (sub.tx_hash, "sent")
        assert pool_hashes(w3) == {sub.nonce: sub.tx_hash}


def test_nonce_taken_by_another_tx_moves_a_new_intent(system: Any, w3: Web3, db: Path) -> None:
    start, balance = nonce(w3), usdc_balance(system)
    foreign: list[str] = []

    def race(attempt: Attempt) -> None:
        if not foreign:  # another tool with the same key takes the nonce just before our send
            foreign.append(self_transfer(w3, attempt.nonce))

    tm = manager(w3, db, before_send=race)
    sub = tm.submit("mint:race", mint_tx(system))
    assert sub is not None
    assert (sub.status, sub.nonce) == ("pending", start + 1)
    wait(w3, sub.tx_hash)
    [intent] = SqliteJournal.open(db).intents("mint:race")
    first, second = SqliteJournal.open(db).attempts(intent.id)
    assert (first.nonce, first.status, first.error_class) == (start, "rejected", "nonce_too_low")
    assert (second.nonce, second.tx_hash) == (start + 1, sub.tx_hash)
    assert receipt_or_none(w3, first.tx_hash) is None
    assert [(o.status, o.tx_hash) for o in follow_to_end(w3, tm)] == [("confirmed", sub.tx_hash)]
    assert nonce(w3) == start + 2
    assert usdc_balance(system) == balance + MINT


def test_nonce_too_low_from_our_own_tx_resolves_the_intent(system: Any, w3: Web3, db: Path) -> None:
    """Re-broadcast races our own (journalled) transaction landing: the node says "nonce too low", the receipts of
    the intent's attempts show it was ours, and nothing new is signed."""
    start, balance = nonce(w3), usdc_balance(system)
    with pytest.raises(ProcessKilledError):
        manager(w3, db, before_send=crash_before_send).submit("mint:own", mint_tx(system))
    [intent] = SqliteJournal.open(db).intents("mint:own")
    [attempt] = SqliteJournal.open(db).attempts(intent.id)
    restarted = manager(w3, db, before_send=lambda a: send_raw(w3, a.raw_tx))  # it lands just before our send
    restarted.reconcile()
    assert SqliteJournal.open(db).intent(intent.id).status == "mined"
    outcomes = follow_to_end(w3, restarted)
    assert [(o.status, o.tx_hash) for o in outcomes] == [("confirmed", attempt.tx_hash)]
    assert len(SqliteJournal.open(db).attempts(intent.id)) == 1
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT


def test_journalled_intent_whose_nonce_was_used_elsewhere_is_dropped(system: Any, w3: Web3, db: Path) -> None:
    start, balance = nonce(w3), usdc_balance(system)
    with pytest.raises(ProcessKilledError):
        manager(w3, db, before_send=crash_before_send).submit("mint:lost", mint_tx(system))
    h = self_transfer(w3, start)
    print("DEBUG", h, receipt_or_none(w3, h), nonce(w3), start, w3.eth.block_number)
    sends: list[str] = []
    restarted = manager(w3, db, before_send=lambda a: sends.append(a.tx_hash))
    [outcome] = restarted.reconcile()
    assert (outcome.intent_key, outcome.status, outcome.nonce) == ("mint:lost", "dropped", start)
    assert sends == []
    assert SqliteJournal.open(db).intents("mint:lost")[0].status == "dropped"
    assert usdc_balance(system) == balance
    assert restarted.next_nonce() == start + 1


def test_unreachable_submit_node_keeps_the_tx_journalled_and_sends_it_later(system: Any, w3: Web3, db: Path) -> None:
    """The send gets no answer (connection refused): outcome unknown, so the nonce stays held and the journalled
    raw transaction goes out on the next poll through a node that answers; it is never signed twice."""
    dead = Web3(Web3.HTTPProvider("http://127.0.0.1:9", exception_retry_configuration=None))
    start, balance = nonce(w3), usdc_balance(system)
    offline = TxManager(w3, dead, SIGNER, SqliteJournal.open(db), CHAIN_ID, POLICY, 2, 3, LOG)
    sub = offline.submit("mint:offline", mint_tx(system))
    assert sub is not None
    assert (sub.status, sub.nonce) == ("pending", start)
    [attempt] = SqliteJournal.open(db).attempts(SqliteJournal.open(db).intents("mint:offline")[0].id)
    assert attempt.status == "signed"
    assert offline.next_nonce() == start + 1  # held, not released
    online = manager(w3, db)
    assert online.poll(int(w3.eth.block_number)) == []
    wait(w3, sub.tx_hash)
    outcomes = follow_to_end(w3, online)
    assert [(o.status, o.tx_hash) for o in outcomes] == [("confirmed", sub.tx_hash)]
    assert len(SqliteJournal.open(db).attempts(attempt.intent_id)) == 1
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT


# ------------------------------------------------------------------------------------------------ replacement


def test_stuck_tx_is_replaced_with_higher_fees_and_only_one_lands(system: Any, w3: Web3, db: Path) -> None:
    tm = manager(w3, db, replace_after_blocks=3)
    start, balance = nonce(w3), usdc_balance(system)
    with automine_off(w3):
        sub = tm.submit("mint:stuck", mint_tx(system))
        assert sub is not None
        store = SqliteJournal.open(db)
        intent_id = store.intents("mint:stuck")[0].id
        [first] = store.attempts(intent_id)
        out = first.max_fee + 1  # a base fee our first attempt cannot pay
        for _ in range(2):
            assert tm.poll(mine(w3, base_fee=out)) == []
            assert len(store.attempts(intent_id)) == 1
        tm.poll(mine(w3, base_fee=out))  # 3 blocks: replaced
        first, second = store.attempts(intent_id)
        assert (second.kind, second.nonce, second.status) == ("replacement", start, "sent")
        assert second.max_fee * 1000 >= first.max_fee * 1125
        assert second.priority_fee * 1000 >= first.priority_fee * 1125
        assert second.max_fee > out
        assert pool_hashes(w3) == {start: second.tx_hash}
        outcomes = []
        for _ in range(3):
            outcomes += tm.poll(mine(w3, base_fee=out))
    assert [(o.status, o.tx_hash) for o in outcomes] == [("confirmed", second.tx_hash)]
    assert receipt_or_none(w3, first.tx_hash) is None
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT


def test_fee_cap_leaves_no_room_so_the_tx_waits(
    system: Any, w3: Web3, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capped = FeePolicy(max_fee_cap_wei=GWEI, priority_fee_wei=GWEI)  # the first attempt already pays the cap
    tm = manager(w3, db, policy=capped, replace_after_blocks=2)
    with automine_off(w3), caplog.at_level(logging.WARNING, logger=LOG.name):
        sub = tm.submit("mint:capped", mint_tx(system))
        assert sub is not None
        for _ in range(4):
            assert tm.poll(mine(w3, base_fee=GWEI + 1)) == []
        [attempt] = SqliteJournal.open(db).attempts(SqliteJournal.open(db).intents("mint:capped")[0].id)
        assert attempt.tx_hash == sub.tx_hash
        assert pool_hashes(w3) == {sub.nonce: sub.tx_hash}
    warnings = [r.getMessage() for r in caplog.records if "leaves no room" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not every block
    assert "mint:capped" in warnings[0]


def test_an_intents_fee_ceiling_bounds_its_bumps_across_a_restart(
    system: Any, w3: Web3, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No operator cap; the intent carries its own ceiling. Stuck behind a base fee it cannot pay, it is bumped by
    replacements (to the fresh 2 * base + tip, at least +12.5 %) up to its ceiling and no further, also by a
    restarted manager that only has the journal to go by; the wait is logged once. An intent whose ceiling is
    already below the base fee is not sent at all."""
    free = FeePolicy(max_fee_cap_wei=None, priority_fee_wei=GWEI)
    tm = manager(w3, db, policy=free, replace_after_blocks=1)
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    ceiling = 2 * base + GWEI + 3 * GWEI  # room for a few bumps over the first max fee (2 * base + tip)
    with automine_off(w3), caplog.at_level(logging.WARNING, logger=LOG.name):
        sub = tm.submit("mint:ceiling", mint_tx(system), max_fee_wei=ceiling)
        assert sub is not None
        restarted = manager(w3, db, policy=free, replace_after_blocks=1)  # what a restarted process builds
        out = ceiling + 1  # a base fee no attempt within the ceiling can pay
        for _ in range(12):
            assert restarted.poll(mine(w3, base_fee=out)) == []
        store = SqliteJournal.open(db)
        [intent] = store.intents("mint:ceiling")
        assert intent.max_fee_ceiling == ceiling
        attempts = store.attempts(intent.id)
        fees = [a.max_fee for a in attempts]
        assert len(attempts) >= 2, fees  # it was replaced
        assert all(b >= _bump_of(a) for a, b in itertools.pairwise(fees)), fees
        assert fees[-1] == ceiling  # up to the ceiling, never above
        assert _bump_of(fees[-1]) > ceiling  # no room left for another valid replacement
        assert pool_hashes(w3) == {sub.nonce: attempts[-1].tx_hash}

        assert tm.submit("mint:too-cheap", mint_tx(system), max_fee_wei=out - 1) is None
        assert store.intents("mint:too-cheap") == []
    waits = [r.getMessage() for r in caplog.records if "leaves no room" in r.getMessage()]
    assert len(waits) == 1, waits
    assert "mint:ceiling" in waits[0]


def _bump_of(fee: int) -> int:
    return max(-(-fee * 1125 // 1000), fee + 1)


def test_replacement_of_a_call_that_now_reverts_is_a_cancel(system: Any, w3: Web3, db: Path, stranger: Any) -> None:
    """transferFrom on an allowance the owner revokes while our tx is stuck: it is not bumped, it is cancelled."""
    usdc = system.usdc
    assert system.admin.address == ADMIN_KEY.address
    usdc.mint(system.admin, MINT, sender=system.admin)
    usdc.approve(SIGNER.address, MINT, sender=system.admin)
    tm = manager(w3, db, replace_after_blocks=2)
    before = int(usdc.balanceOf(stranger))
    pull = {"to": str(usdc.address), "data": usdc.transferFrom.encode_input(system.admin, stranger, MINT)}
    with automine_off(w3):
        sub = tm.submit("pull", pull)
        assert sub is not None
        [first] = SqliteJournal.open(db).attempts(SqliteJournal.open(db).intents("pull")[0].id)
        out = first.max_fee + 1  # a base fee our transaction cannot pay
        revoke = ADMIN_KEY.sign_transaction(
            {
                "type": 2,
                "chainId": CHAIN_ID,
                "nonce": w3.eth.get_transaction_count(ADMIN_KEY.address),
                "to": usdc.address,
                "data": usdc.approve.encode_input(SIGNER.address, 0),
                "value": 0,
                "gas": 100_000,
                "maxFeePerGas": 50 * GWEI,
                "maxPriorityFeePerGas": GWEI,
            }
        )
        w3.eth.send_raw_transaction(revoke.raw_transaction)
        assert tm.poll(mine(w3, base_fee=out)) == []  # the revoke lands, our tx does not
        assert receipt_or_none(w3, revoke.hash.to_0x_hex()) is not None
        tm.poll(mine(w3, base_fee=out))  # 2 blocks: due for replacement, but the call now reverts
        intent_id = SqliteJournal.open(db).intents("pull")[0].id
        first, cancel = SqliteJournal.open(db).attempts(intent_id)
        assert (cancel.kind, cancel.nonce) == ("cancel", first.nonce)
        assert cancel.max_fee * 1000 >= first.max_fee * 1125
        sent = w3.eth.get_transaction(HexBytes(cancel.tx_hash))
        assert (sent["to"], sent["value"], sent["gas"]) == (SIGNER.address, 0, 21_000)
        outcomes = []
        for _ in range(3):
            outcomes += tm.poll(mine(w3, base_fee=out))
    assert [(o.intent_key, o.status, o.tx_hash) for o in outcomes] == [("pull", "cancelled", cancel.tx_hash)]
    assert int(usdc.balanceOf(stranger)) == before


# ------------------------------------------------------------------------------------------------ reorgs and gaps


def test_reorged_out_tx_is_rebroadcast_and_confirmed(system: Any, w3: Web3, db: Path) -> None:
    tm = manager(w3, db, confirmations=2)
    start, balance = nonce(w3), usdc_balance(system)
    sub = tm.submit("mint:reorg", mint_tx(system))
    assert sub is not None
    head = int(wait(w3, sub.tx_hash)["blockNumber"])
    assert tm.poll(head) == []
    intent = SqliteJournal.open(db).intents("mint:reorg")[0]
    assert (intent.status, intent.block_number) == ("mined", head)
    old_hash = intent.block_hash

    rpc(w3, "anvil_reorg", 1, [])  # the block holding it is replaced by an empty one
    assert receipt_or_none(w3, sub.tx_hash) is None
    assert nonce(w3) == start
    sends: list[str] = []
    tm.before_send = lambda a: sends.append(a.tx_hash)
    assert tm.poll(int(w3.eth.block_number)) == []
    assert sends == [sub.tx_hash]  # the journalled raw tx, same hash
    receipt = wait(w3, sub.tx_hash)
    assert receipt["blockHash"].to_0x_hex() != old_hash
    outcomes = tm.poll(int(w3.eth.block_number)) + follow_to_end(w3, tm, blocks=2)
    assert [(o.status, o.tx_hash, o.block) for o in outcomes] == [("confirmed", sub.tx_hash, receipt["blockNumber"])]
    assert len(SqliteJournal.open(db).attempts(intent.id)) == 1
    assert nonce(w3) == start + 1
    assert usdc_balance(system) == balance + MINT


def test_a_released_nonce_below_a_pending_one_is_filled(system: Any, w3: Web3, db: Path) -> None:
    """If a nonce below a held one ever becomes free (here: an operator marks an intent failed by hand), the
    next poll fills it with a zero-value transfer to self, so the later transaction is not stuck behind a gap."""
    tm = manager(w3, db)
    start = nonce(w3)
    with automine_off(w3):
        a = tm.submit("mint:a", mint_tx(system))
        b = tm.submit("mint:b", mint_tx(system))
        assert a is not None
        assert b is not None
        assert (a.nonce, b.nonce) == (start, start + 1)
        store = SqliteJournal.open(db)
        rpc(w3, "anvil_dropTransaction", a.tx_hash)
        store.resolve_intent(store.intents("mint:a")[0].id, "failed", "given up by hand")
        outcomes = []
        for _ in range(3):
            outcomes += tm.poll(mine(w3))
        fill = store.intents(f"nonce-fill:{start}")
        assert len(fill) == 1
        assert fill[0].nonce == start
    assert sorted((o.intent_key, o.status) for o in outcomes) == [
        ("mint:b", "confirmed"),
        (f"nonce-fill:{start}", "confirmed"),
    ]
    assert nonce(w3) == start + 2


def test_a_receipt_for_an_earlier_attempt_resolves_the_intent(system: Any, w3: Web3, db: Path) -> None:
    """A receipt for ANY attempt of the nonce resolves the intent: here the first one lands after a replacement
    was sent elsewhere (the node dropped the replacement)."""
    tm = manager(w3, db, replace_after_blocks=1)
    start = nonce(w3)
    with automine_off(w3):
        sub = tm.submit("mint:any", mint_tx(system))
        assert sub is not None
        store = SqliteJournal.open(db)
        intent_id = store.intents("mint:any")[0].id
        [first] = store.attempts(intent_id)
        tm.poll(mine(w3, base_fee=first.max_fee + 1))
        first, second = store.attempts(intent_id)
        # The replacement vanishes from the pool and the original is broadcast again by someone else.
        rpc(w3, "anvil_dropTransaction", second.tx_hash)
        send_raw(w3, first.raw_tx, mined=False)
        mine(w3)
        outcomes: list[Outcome] = []
        for _ in range(3):
            outcomes += tm.poll(mine(w3))
    assert [(o.status, o.tx_hash) for o in outcomes] == [("confirmed", first.tx_hash)]
    assert receipt_or_none(w3, second.tx_hash) is None
    assert nonce(w3) == start + 1
