"""Pure tests of the transaction manager's fee and error rules and of the SQLite store: no chain.

(Anvil accepts a replacement at any higher fee, so the 12.5 % rule is checked here, exactly.)"""

from __future__ import annotations

import sqlite3
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from web3.exceptions import ProviderConnectionError, Web3RPCError
from web3.types import RPCResponse

from keeper.chain.index import SqliteIndex
from keeper.chain.journal import SqliteJournal
from keeper.chain.sqlite import SCHEMA_VERSION, StateFile, StoreError
from keeper.chain.txmanager import FeePolicy, SendErrorClass, bump_fees, classify_send_error, initial_fees

GWEI = 10**9

# ------------------------------------------------------------------------------------------ bump_fees


def test_bump_rounds_up_both_fees() -> None:
    # 100 * 1.125 = 112.5 -> 113; 10 * 1.125 = 11.25 -> 12
    assert bump_fees(100, 10, 10**18) == (113, 12)


def test_bump_exact_multiple_is_not_rounded() -> None:
    assert bump_fees(8 * GWEI, 8 * GWEI, 10**18) == (9 * GWEI, 9 * GWEI)


def test_bump_adds_at_least_one_wei() -> None:
    # 12.5 % of 0 and of 1..7 rounds to less than 1 wei: the rule still moves each fee by one.
    assert bump_fees(0, 0, 10) == (1, 1)
    assert bump_fees(1, 1, 10) == (2, 2)
    assert bump_fees(7, 3, 10) == (8, 4)


def test_bump_respects_the_cap() -> None:
    assert bump_fees(100, 10, 113) == (113, 12)
    assert bump_fees(100, 10, 112) is None
    assert bump_fees(100 * GWEI, GWEI, 100 * GWEI) is None


@given(
    max_fee=st.integers(min_value=0, max_value=10**15),
    ratio=st.fractions(min_value=0, max_value=1),
    cap=st.integers(min_value=0, max_value=2 * 10**15),
)
def test_bump_is_the_smallest_valid_replacement(max_fee: int, ratio: Fraction, cap: int) -> None:
    priority = int(max_fee * ratio)
    bumped = bump_fees(max_fee, priority, cap)
    need_max = max(-(-max_fee * 1125 // 1000), max_fee + 1)
    if need_max > cap:
        assert bumped is None
        return
    assert bumped is not None
    new_max, new_priority = bumped
    assert new_max * 1000 >= max_fee * 1125
    assert new_priority * 1000 >= priority * 1125
    assert new_max >= max_fee + 1
    assert new_priority >= priority + 1
    assert new_priority <= new_max <= cap
    # Smallest: one wei less would break the 12.5 % rule or the +1 rule.
    assert (new_max - 1) * 1000 < max_fee * 1125 or new_max - 1 < max_fee + 1
    assert (new_priority - 1) * 1000 < priority * 1125 or new_priority - 1 < priority + 1


# ------------------------------------------------------------------------------------------ initial_fees


def test_initial_fees_double_the_base_fee_plus_tip() -> None:
    policy = FeePolicy(max_fee_cap_wei=100 * GWEI, priority_fee_wei=2 * GWEI)
    assert initial_fees(10 * GWEI, policy) == (22 * GWEI, 2 * GWEI)


def test_initial_fees_capped() -> None:
    policy = FeePolicy(max_fee_cap_wei=15 * GWEI, priority_fee_wei=2 * GWEI)
    assert initial_fees(10 * GWEI, policy) == (15 * GWEI, 2 * GWEI)


def test_initial_tip_never_above_max_fee() -> None:
    policy = FeePolicy(max_fee_cap_wei=GWEI, priority_fee_wei=2 * GWEI)
    assert initial_fees(0, policy) == (GWEI, GWEI)


def test_initial_fees_on_a_zero_base_fee() -> None:
    policy = FeePolicy(max_fee_cap_wei=100 * GWEI, priority_fee_wei=3)
    assert initial_fees(0, policy) == (3, 3)


def test_without_any_ceiling_fees_follow_the_base_fee() -> None:
    """No operator cap (the default) and no intent ceiling: 2 * base + tip however high the base fee, and every
    bump is possible."""
    policy = FeePolicy(max_fee_cap_wei=None, priority_fee_wei=2 * GWEI)
    assert initial_fees(5_000 * GWEI, policy) == (10_002 * GWEI, 2 * GWEI)
    assert bump_fees(10**21, 10**20, None) == (1125 * 10**18, 1125 * 10**17)


def test_an_intent_ceiling_bounds_the_first_fees_and_the_lower_of_two_ceilings_wins() -> None:
    policy = FeePolicy(max_fee_cap_wei=None, priority_fee_wei=2 * GWEI)
    assert initial_fees(500 * GWEI, policy, 700 * GWEI) == (700 * GWEI, 2 * GWEI)
    assert policy.ceiling(700 * GWEI) == 700 * GWEI
    assert policy.ceiling(None) is None
    capped = FeePolicy(max_fee_cap_wei=300 * GWEI, priority_fee_wei=2 * GWEI)
    assert (capped.ceiling(700 * GWEI), capped.ceiling(100 * GWEI), capped.ceiling(None)) == (
        300 * GWEI,
        100 * GWEI,
        300 * GWEI,
    )


# ------------------------------------------------------------------------------------------ classify_send_error


def rpc_error(message: str, code: int = -32000, data: str | None = None) -> Web3RPCError:
    """The exception web3 raises for a JSON-RPC error answer."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    response: RPCResponse = {"jsonrpc": "2.0", "id": 1, "error": error}  # type: ignore[typeddict-item]
    return Web3RPCError(str(error), rpc_response=response)


NODE_MESSAGES: list[tuple[str, str, SendErrorClass]] = [
    # geth
    ("geth", "already known", "already_known"),
    ("geth", "nonce too low: next nonce 12, tx nonce 11", "nonce_too_low"),
    ("geth", "replacement transaction underpriced", "replacement_underpriced"),
    ("geth", "transaction underpriced: tip needed 1000000000, tip permitted 100", "underpriced"),
    (
        "geth",
        "insufficient funds for gas * price + value: balance 0, tx cost 21000000000000, overshot 1",
        "insufficient_funds",
    ),
    ("geth", "max fee per gas less than block base fee: address 0xab, maxFeePerGas: 7, baseFee: 8", "underpriced"),
    ("geth", "intrinsic gas too low: gas 20000, minimum needed 21000", "rejected"),
    ("geth", "exceeds block gas limit", "rejected"),
    # anvil (as answered by the Anvil the tests run)
    ("anvil", "transaction already imported", "already_known"),
    ("anvil", "nonce too low", "nonce_too_low"),
    ("anvil", "max fee per gas less than block base fee", "underpriced"),
    ("anvil", "Insufficient funds for gas * price + value", "insufficient_funds"),
    # nethermind: result codes (older releases) and messages
    ("nethermind", "AlreadyKnown", "already_known"),
    ("nethermind", "OldNonce, Current nonce: 5, nonce of rejected tx: 3", "nonce_too_low"),
    ("nethermind", "ReplacementNotAllowed", "replacement_underpriced"),
    ("nethermind", "FeeTooLow, MaxFeePerGas too low", "underpriced"),
    ("nethermind", "FeeTooLowToCompete", "underpriced"),
    ("nethermind", "InsufficientFunds, Account balance: 0, cumulative cost: 21000", "insufficient_funds"),
    # erigon: import result code, then the discard reason
    ("erigon", "ALREADY_EXISTS: already known", "already_known"),
    ("erigon", "INTERNAL_ERROR: existing tx with same hash", "already_known"),
    ("erigon", "INVALID: nonce too low", "nonce_too_low"),
    ("erigon", "FEE_TOO_LOW: replacement transaction underpriced", "replacement_underpriced"),
    ("erigon", "INVALID: could not replace existing tx", "replacement_underpriced"),
    ("erigon", "FEE_TOO_LOW: fee too low", "underpriced"),
    ("erigon", "INVALID: insufficient funds", "insufficient_funds"),
    # besu
    ("besu", "Known transaction", "already_known"),
    ("besu", "Nonce too low", "nonce_too_low"),
    ("besu", "Replacement transaction underpriced", "replacement_underpriced"),
    ("besu", "Upfront cost exceeds account balance", "insufficient_funds"),
    ("besu", "Gas price below configured minimum gas price", "underpriced"),
    # openethereum
    ("openethereum", "Transaction with the same hash was already imported.", "already_known"),
    ("openethereum", "Transaction nonce is too low. Try incrementing the nonce.", "nonce_too_low"),
    (
        "openethereum",
        "Transaction gas price is too low. There is another transaction with same nonce in the queue. "
        "Try increasing the gas price or incrementing the nonce.",
        "replacement_underpriced",
    ),
]


@pytest.mark.parametrize(("node", "message", "expected"), NODE_MESSAGES)
def test_classify_node_messages(node: str, message: str, expected: SendErrorClass) -> None:
    assert classify_send_error(rpc_error(message)) == expected, node


def test_classify_reads_the_error_data_too() -> None:
    assert classify_send_error(rpc_error("invalid transaction", data="nonce too low")) == "nonce_too_low"


def test_classify_plain_value_error() -> None:
    # Older web3 and some middlewares raise ValueError with the error object as its argument.
    assert classify_send_error(ValueError({"code": -32000, "message": "already known"})) == "already_known"
    assert classify_send_error(ValueError("invalid sender")) == "rejected"


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("Connection refused"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.HTTPError("502 Server Error: Bad Gateway"),
        TimeoutError(),
        ConnectionResetError(),
        ProviderConnectionError("could not connect"),
    ],
)
def test_classify_transport_failures(exc: BaseException) -> None:
    assert classify_send_error(exc) == "transport"


# ------------------------------------------------------------------------------------------ store


class Store:
    """One state file with both of its stores, the discovery index and the journal, for the tests below that use
    both through one name (an attribute is looked up on the index, then the journal, then the file)."""

    def __init__(self, path: Path) -> None:
        self.db = StateFile(path)
        self.index = SqliteIndex(self.db)
        self.journal = SqliteJournal(self.db)

    def __getattr__(self, name: str) -> Any:
        for part in (self.index, self.journal, self.db):
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "keeper.db")


def test_store_pragmas_and_version(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version == SCHEMA_VERSION


def test_store_reopens_idempotently_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "keeper.db"
    first = Store(path)
    first.add_account("0xA", 1, 10)
    first.set_checkpoint("discovery", 10, "0xh10")
    first.close()
    second = Store(path)
    assert second.accounts() == [("0xA", 1)]
    assert second.get_checkpoint("discovery") == (10, "0xh10")
    assert second.schema_version == SCHEMA_VERSION


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "keeper.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this keeper"):
        Store(path)


def test_store_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "keeper.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable keeper state file"):
        Store(path)


def test_accounts_added_once_and_sorted(store: Store) -> None:
    assert store.add_accounts([("0xB", 2, 5), ("0xA", 7, 6), ("0xB", 2, 9)]) == 2
    assert store.add_account("0xA", 7, 8) is False
    assert store.add_account("0xA", 0, 8) is True
    assert store.accounts() == [("0xA", 0), ("0xA", 7), ("0xB", 2)]
    assert store.first_seen("0xB", 2) == 5  # the later sighting does not move it
    assert store.first_seen("0xC", 0) is None
    assert store.account_count() == 3


def test_checkpoint_upsert(store: Store) -> None:
    assert store.get_checkpoint("discovery") is None
    store.set_checkpoint("discovery", 5, "0x05")
    store.set_checkpoint("discovery", 9, "0x09")
    store.set_checkpoint("other", 1, "0x01")
    assert store.get_checkpoint("discovery") == (9, "0x09")
    assert store.get_checkpoint("other") == (1, "0x01")


def test_block_hashes_record_replace_prune(store: Store) -> None:
    for n in range(10):
        store.record_block_hash(n, f"0x{n:02x}")
    store.record_block_hash(9, "0xfork")
    assert store.block_hash(9) == "0xfork"
    assert store.prune_block_hashes(below=4) == 4
    assert store.block_hash(3) is None
    assert store.block_hash(4) == "0x04"
    assert store.forget_block_hashes_from(8) == 2
    assert [store.block_hash(n) for n in (7, 8, 9)] == ["0x07", None, None]


def test_transaction_rolls_back_everything_on_error(store: Store) -> None:
    def write_then_fail() -> None:
        with store.transaction():
            store.add_account("0xA", 1, 1)
            with store.transaction():  # joins the outer transaction
                store.set_checkpoint("discovery", 1, "0x01")
            raise RuntimeError("crash mid-way")

    with pytest.raises(RuntimeError, match="crash mid-way"):
        write_then_fail()
    assert store.accounts() == []
    assert store.get_checkpoint("discovery") is None
    with store.transaction():
        store.add_account("0xA", 1, 1)
        store.set_checkpoint("discovery", 1, "0x01")
    assert store.accounts() == [("0xA", 1)]


def test_committed_writes_are_visible_to_another_connection(store: Store) -> None:
    intent = store.add_intent("k", "0xS", 4, "0xT", "0x", 0, 21_000, simulate=False)
    store.add_attempt(intent.id, "original", 4, "0xhash", "0xraw", 10, 1, 100)
    other = Store(store.path)  # what a restarted process sees (WAL: no checkpoint needed)
    assert [a.tx_hash for a in other.attempts(intent.id)] == ["0xhash"]
    assert other.open_intent("k") == store.intent(intent.id)


def test_journal_one_open_intent_per_key_and_per_nonce(store: Store) -> None:
    first = store.add_intent("liquidate:a", "0xS", 0, "0xT", "0x01", 0, 100_000, simulate=True)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_intent("liquidate:a", "0xS", 1, "0xT", "0x01", 0, 100_000, simulate=True)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_intent("liquidate:b", "0xS", 0, "0xT", "0x01", 0, 100_000, simulate=True)
    # Another sender may use the same nonce.
    store.add_intent("other-sender", "0xZ", 0, "0xT", "0x", 0, 21_000, simulate=False)
    assert store.held_nonces("0xS") == {0}
    store.resolve_intent(first.id, "confirmed")
    again = store.add_intent("liquidate:a", "0xS", 1, "0xT", "0x01", 0, 100_000, simulate=True)
    assert store.open_intent("liquidate:a") == again
    assert [i.status for i in store.intents("liquidate:a")] == ["confirmed", "pending"]
    with pytest.raises(ValueError, match="not a final status"):
        store.resolve_intent(again.id, "mined")


def test_journal_values_round_trip(store: Store) -> None:
    big = 10**30  # wei values above 2**63 are stored exactly
    intent = store.add_intent("k", "0xS", 3, None, "0xdeadbeef", big, 50_000, simulate=True)
    assert (intent.to, intent.data, intent.value, intent.gas, intent.simulate) == (
        None,
        "0xdeadbeef",
        big,
        50_000,
        True,
    )
    attempt = store.add_attempt(intent.id, "original", 3, "0xh1", "0xr1", 30 * GWEI, GWEI, 77)
    assert attempt.status == "signed"
    store.set_attempt_status(attempt.id, "sent")
    store.add_attempt(intent.id, "replacement", 3, "0xh2", "0xr2", 34 * GWEI, 2 * GWEI, 81)
    store.set_attempt_status(attempt.id, "rejected", "underpriced", "transaction underpriced")
    got = store.attempts(intent.id)
    assert [(a.tx_hash, a.kind, a.status, a.sent_at_block) for a in got] == [
        ("0xh1", "original", "rejected", 77),
        ("0xh2", "replacement", "signed", 81),
    ]
    assert got[0].error_class == "underpriced"
    with pytest.raises(sqlite3.IntegrityError):  # a hash is journalled once
        store.add_attempt(intent.id, "replacement", 3, "0xh2", "0xr2", 34 * GWEI, 2 * GWEI, 81)


def test_journal_keeps_each_intents_fee_ceiling(tmp_path: Path) -> None:
    """A liquidation's fee ceiling is journalled with it and survives reopening the file (a restart); intents
    without one (approvals, fillers) keep None."""
    path = tmp_path / "keeper.db"
    store = Store(path)
    ceiling = 2**70  # beyond SQLite's 64-bit integers: stored exactly
    store.add_intent("liquidate:a", "0xS", 1, "0xT", "0x01", 0, 100_000, simulate=True, max_fee_ceiling=ceiling)
    store.add_intent("approve-engine", "0xS", 2, "0xT", "0x02", 0, 60_000, simulate=True)
    store.close()
    again = Store(path)
    assert [(i.intent_key, i.max_fee_ceiling) for i in again.open_intents("0xS")] == [
        ("liquidate:a", ceiling),
        ("approve-engine", None),
    ]


# The journal's tables as schema version 1 wrote them (before intents carried a fee ceiling).
SCHEMA_V1_INTENTS = """
CREATE TABLE intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, intent_key TEXT NOT NULL, sender TEXT NOT NULL, status TEXT NOT NULL,
    nonce INTEGER NOT NULL, to_address TEXT, data TEXT NOT NULL, value TEXT NOT NULL, gas INTEGER NOT NULL,
    simulate INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, tx_hash TEXT,
    block_number INTEGER, block_hash TEXT, error TEXT
);
INSERT INTO intents (intent_key, sender, status, nonce, to_address, data, value, gas, simulate, created_at,
                     updated_at) VALUES ('liquidate:old', '0xS', 'pending', 7, '0xT', '0x', '0', 90000, 1, 1, 1);
PRAGMA user_version = 1;
"""


def test_a_version_1_state_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A state file written by the previous keeper opens: its open intent is kept (with no ceiling of its own, so
    only the operator's cap bounds it) and new intents journal theirs."""
    path = tmp_path / "keeper.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1_INTENTS)
    conn.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION == 2
    [old] = store.open_intents("0xS")
    assert (old.intent_key, old.nonce, old.max_fee_ceiling) == ("liquidate:old", 7, None)
    new = store.add_intent("liquidate:new", "0xS", 8, "0xT", "0x", 0, 90_000, simulate=True, max_fee_ceiling=5)
    assert new.max_fee_ceiling == 5


def test_journal_mined_unmined_and_renonce(store: Store) -> None:
    intent = store.add_intent("k", "0xS", 3, "0xT", "0x", 0, 21_000, simulate=False)
    store.mark_mined(intent.id, "0xh", 12, "0xb12")
    mined = store.intent(intent.id)
    assert (mined.status, mined.tx_hash, mined.block_number, mined.block_hash) == ("mined", "0xh", 12, "0xb12")
    assert mined.is_open
    store.mark_unmined(intent.id)
    back = store.intent(intent.id)
    assert (back.status, back.tx_hash, back.block_number) == ("pending", None, None)
    store.set_intent_nonce(intent.id, 4)
    assert store.held_nonces("0xS") == {4}
    store.resolve_intent(intent.id, "dropped", "nonce used elsewhere")
    assert store.held_nonces("0xS") == set()
    assert store.intent(intent.id).error == "nonce used elsewhere"
