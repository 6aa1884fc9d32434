"""The keeper's durable state in one SQLite file: tracked accounts, scan checkpoints, recent block hashes (for reorg
detection) and the transaction journal.

One connection in WAL mode with `synchronous=FULL`, so a committed write survives a crash or a power cut: the journal
relies on that (an intent and its signed transaction are committed before anything is sent). Every write runs in a
`BEGIN IMMEDIATE` transaction; `Store.transaction()` groups several writes into one. The store is meant for one thread
at a time and guards itself with a lock anyway.

The journal has two tables. `intents`: one row per thing the keeper wants done (`intent_key`, e.g. a liquidation of
one account), with the call, the nonce it holds and its status. `attempts`: one row per signed transaction for an
intent (the raw signed bytes, hash, fees, the head block when it was signed, and its own status). An intent may carry
a fee ceiling (`max_fee_ceiling`, wei per gas: no attempt of it pays more), kept across restarts. An intent holds
its nonce while it is open (`pending` or `mined`); at most one open intent per key and per (sender, nonce) is
enforced by partial unique indexes, so a resolved key can be used again later.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from keeper.core.errors import KeeperError

SCHEMA_VERSION = 2  # 2: intents.max_fee_ceiling

IntentStatus = Literal["pending", "mined", "confirmed", "reverted", "cancelled", "failed", "dropped"]
AttemptStatus = Literal["signed", "sent", "rejected"]
AttemptKind = Literal["original", "replacement", "cancel"]

OPEN_STATUSES: tuple[IntentStatus, ...] = ("pending", "mined")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    owner TEXT NOT NULL,
    sub_id INTEGER NOT NULL,
    first_seen_block INTEGER NOT NULL,
    PRIMARY KEY (owner, sub_id)
);
CREATE TABLE IF NOT EXISTS checkpoint (
    name TEXT PRIMARY KEY,
    block INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS block_hashes (
    number INTEGER PRIMARY KEY,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_key TEXT NOT NULL,
    sender TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'mined', 'confirmed', 'reverted', 'cancelled', 'failed',
                                           'dropped')),
    nonce INTEGER NOT NULL,
    to_address TEXT,
    data TEXT NOT NULL,
    value TEXT NOT NULL,
    gas INTEGER NOT NULL,
    simulate INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    tx_hash TEXT,
    block_number INTEGER,
    block_hash TEXT,
    error TEXT,
    max_fee_ceiling TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS intents_open_key ON intents (intent_key) WHERE status IN ('pending', 'mined');
CREATE UNIQUE INDEX IF NOT EXISTS intents_open_nonce ON intents (sender, nonce) WHERE status IN ('pending', 'mined');
CREATE INDEX IF NOT EXISTS intents_status ON intents (status);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_id INTEGER NOT NULL REFERENCES intents (id),
    kind TEXT NOT NULL CHECK (kind IN ('original', 'replacement', 'cancel')),
    nonce INTEGER NOT NULL,
    tx_hash TEXT NOT NULL,
    raw_tx TEXT NOT NULL,
    max_fee INTEGER NOT NULL,
    priority_fee INTEGER NOT NULL,
    sent_at_block INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('signed', 'sent', 'rejected')),
    error_class TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    -- Unique per intent only: after a reorg deeper than the confirmation depth, a new intent can sign bytes
    -- identical to a resolved intent's (same nonce, calldata and fees).
    UNIQUE (intent_id, tx_hash)
);
CREATE INDEX IF NOT EXISTS attempts_intent ON attempts (intent_id);
"""


class StoreError(KeeperError):
    """The state file cannot be used (written by a newer keeper, or not a keeper state file)."""


@dataclass(frozen=True)
class Intent:
    """One journalled intent. `value` is in wei; `to` is None for a contract creation."""

    id: int
    intent_key: str
    sender: str
    status: IntentStatus
    nonce: int
    to: str | None
    data: str
    value: int
    gas: int
    simulate: bool
    created_at: float
    updated_at: float
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    error: str | None
    max_fee_ceiling: int | None = None  # wei per gas; None: only the operator's cap, if any

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class Attempt:
    """One signed transaction for an intent. Fees in wei per gas; `raw_tx` and `tx_hash` are 0x-hex."""

    id: int
    intent_id: int
    kind: AttemptKind
    nonce: int
    tx_hash: str
    raw_tx: str
    max_fee: int
    priority_fee: int
    sent_at_block: int
    status: AttemptStatus
    error_class: str | None
    error: str | None
    created_at: float


def _intent(row: sqlite3.Row) -> Intent:
    return Intent(
        id=row["id"],
        intent_key=row["intent_key"],
        sender=row["sender"],
        status=cast(IntentStatus, row["status"]),
        nonce=row["nonce"],
        to=row["to_address"],
        data=row["data"],
        value=int(row["value"]),
        gas=row["gas"],
        simulate=bool(row["simulate"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        tx_hash=row["tx_hash"],
        block_number=row["block_number"],
        block_hash=row["block_hash"],
        error=row["error"],
        max_fee_ceiling=None if row["max_fee_ceiling"] is None else int(row["max_fee_ceiling"]),
    )


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        id=row["id"],
        intent_id=row["intent_id"],
        kind=cast(AttemptKind, row["kind"]),
        nonce=row["nonce"],
        tx_hash=row["tx_hash"],
        raw_tx=row["raw_tx"],
        max_fee=row["max_fee"],
        priority_fee=row["priority_fee"],
        sent_at_block=row["sent_at_block"],
        status=cast(AttemptStatus, row["status"]),
        error_class=row["error_class"],
        error=row["error"],
        created_at=row["created_at"],
    )


class Store:
    """SQLite-backed keeper state; see the module docstring."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE. The connection may be created on
        # one thread and used on the runner's worker thread, never on two at once (the lock sees to that).
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{path} is not a usable keeper state file ({exc}); move it away to start afresh") from exc

    def _migrate(self) -> None:
        with self.transaction():
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this keeper's {SCHEMA_VERSION}: "
                    "upgrade the keeper or point state_db elsewhere"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(intents)")}
            if "max_fee_ceiling" not in columns:  # a version 1 file: its intents keep no ceiling of their own
                self._conn.execute("ALTER TABLE intents ADD COLUMN max_fee_ceiling TEXT")
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of writes: committed at the end, rolled back if the block raises. Nests (the inner block
        joins the outer transaction)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ accounts

    def add_account(self, owner: str, sub_id: int, first_seen_block: int) -> bool:
        """Track (owner, sub_id); True if it was new. An account already tracked keeps its first block."""
        return self.add_accounts([(owner, sub_id, first_seen_block)]) == 1

    def add_accounts(self, accounts: Iterable[tuple[str, int, int]]) -> int:
        """Track each (owner, sub_id, first_seen_block); returns how many were new."""
        with self.transaction():
            added = 0
            for owner, sub_id, block in accounts:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO accounts (owner, sub_id, first_seen_block) VALUES (?, ?, ?)",
                    (owner, sub_id, block),
                )
                added += cur.rowcount
            return added

    def accounts(self) -> list[tuple[str, int]]:
        """Every tracked (owner, sub_id), sorted."""
        with self._lock:
            rows = self._conn.execute("SELECT owner, sub_id FROM accounts ORDER BY owner, sub_id").fetchall()
        return [(row["owner"], row["sub_id"]) for row in rows]

    def first_seen(self, owner: str, sub_id: int) -> int | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT first_seen_block FROM accounts WHERE owner = ? AND sub_id = ?", (owner, sub_id)
            ).fetchone()
        return None if row is None else int(row[0])

    def account_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])

    # ------------------------------------------------------------------ checkpoints and block hashes

    def get_checkpoint(self, name: str) -> tuple[int, str] | None:
        """(block number, block hash) saved under `name`, or None."""
        with self._lock:
            row = self._conn.execute("SELECT block, hash FROM checkpoint WHERE name = ?", (name,)).fetchone()
        return None if row is None else (int(row["block"]), str(row["hash"]))

    def set_checkpoint(self, name: str, block: int, block_hash: str) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO checkpoint (name, block, hash) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET block = excluded.block, hash = excluded.hash",
                (name, block, block_hash),
            )

    def record_block_hash(self, number: int, block_hash: str) -> None:
        """Remember the hash of block `number` (replacing what was stored for it)."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO block_hashes (number, hash) VALUES (?, ?) "
                "ON CONFLICT (number) DO UPDATE SET hash = excluded.hash",
                (number, block_hash),
            )

    def block_hash(self, number: int) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT hash FROM block_hashes WHERE number = ?", (number,)).fetchone()
        return None if row is None else str(row[0])

    def prune_block_hashes(self, below: int) -> int:
        """Forget the hashes of blocks numbered below `below`; returns how many were removed."""
        with self.transaction():
            return self._conn.execute("DELETE FROM block_hashes WHERE number < ?", (below,)).rowcount

    def forget_block_hashes_from(self, number: int) -> int:
        """Forget the hashes of blocks `number` and above (after a reorg replaced them)."""
        with self.transaction():
            return self._conn.execute("DELETE FROM block_hashes WHERE number >= ?", (number,)).rowcount

    # ------------------------------------------------------------------ journal: intents

    def add_intent(
        self,
        intent_key: str,
        sender: str,
        nonce: int,
        to: str | None,
        data: str,
        value: int,
        gas: int,
        simulate: bool,
        max_fee_ceiling: int | None = None,
    ) -> Intent:
        """Journal a new open (`pending`) intent holding `nonce`, with its fee ceiling (wei per gas) if it has one.
        Raises sqlite3.IntegrityError if the key or the nonce is already held by an open intent."""
        now = self._clock()
        ceiling = None if max_fee_ceiling is None else str(max_fee_ceiling)
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO intents (intent_key, sender, status, nonce, to_address, data, value, gas, simulate, "
                "created_at, updated_at, max_fee_ceiling) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (intent_key, sender, nonce, to, data, str(value), gas, int(simulate), now, now, ceiling),
            )
            assert cur.lastrowid is not None
            return self.intent(cur.lastrowid)

    def intent(self, intent_id: int) -> Intent:
        with self._lock:
            row = self._conn.execute("SELECT * FROM intents WHERE id = ?", (intent_id,)).fetchone()
        if row is None:
            raise KeyError(intent_id)
        return _intent(row)

    def open_intent(self, intent_key: str) -> Intent | None:
        """The open (pending or mined) intent with this key, if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM intents WHERE intent_key = ? AND status IN ('pending', 'mined')",
                (intent_key,),
            ).fetchone()
        return None if row is None else _intent(row)

    def open_intents(self, sender: str) -> list[Intent]:
        """Open intents of `sender`, lowest nonce first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM intents WHERE sender = ? AND status IN ('pending', 'mined') ORDER BY nonce",
                (sender,),
            ).fetchall()
        return [_intent(row) for row in rows]

    def intents(self, intent_key: str | None = None) -> list[Intent]:
        """Every intent (or every intent with this key), oldest first."""
        with self._lock:
            if intent_key is None:
                rows = self._conn.execute("SELECT * FROM intents ORDER BY id").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM intents WHERE intent_key = ? ORDER BY id", (intent_key,)
                ).fetchall()
        return [_intent(row) for row in rows]

    def held_nonces(self, sender: str) -> set[int]:
        """Nonces held by open intents of `sender`."""
        return {i.nonce for i in self.open_intents(sender)}

    def set_intent_nonce(self, intent_id: int, nonce: int) -> None:
        """Move a pending intent to another nonce (its old one was used by a transaction that is not ours)."""
        with self.transaction():
            self._conn.execute(
                "UPDATE intents SET nonce = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                (nonce, self._clock(), intent_id),
            )

    def mark_mined(self, intent_id: int, tx_hash: str, block_number: int, block_hash: str) -> None:
        """One of the intent's attempts is in block `block_number` (not yet deep enough to be final)."""
        with self.transaction():
            self._conn.execute(
                "UPDATE intents SET status = 'mined', tx_hash = ?, block_number = ?, block_hash = ?, updated_at = ? "
                "WHERE id = ?",
                (tx_hash, block_number, block_hash, self._clock(), intent_id),
            )

    def mark_unmined(self, intent_id: int) -> None:
        """A reorg removed the block holding the intent's transaction: it is pending again."""
        with self.transaction():
            self._conn.execute(
                "UPDATE intents SET status = 'pending', tx_hash = NULL, block_number = NULL, block_hash = NULL, "
                "updated_at = ? WHERE id = ?",
                (self._clock(), intent_id),
            )

    def resolve_intent(self, intent_id: int, status: IntentStatus, error: str | None = None) -> None:
        """Close an intent with a final status (it no longer holds its nonce or its key)."""
        if status in OPEN_STATUSES:
            raise ValueError(f"{status} is not a final status")
        with self.transaction():
            self._conn.execute(
                "UPDATE intents SET status = ?, error = COALESCE(?, error), updated_at = ? WHERE id = ?",
                (status, error, self._clock(), intent_id),
            )

    # ------------------------------------------------------------------ journal: attempts

    def add_attempt(
        self,
        intent_id: int,
        kind: AttemptKind,
        nonce: int,
        tx_hash: str,
        raw_tx: str,
        max_fee: int,
        priority_fee: int,
        sent_at_block: int,
    ) -> Attempt:
        """Journal a signed transaction (status `signed`: not yet known to have reached a node)."""
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO attempts (intent_id, kind, nonce, tx_hash, raw_tx, max_fee, priority_fee, sent_at_block, "
                "status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'signed', ?)",
                (intent_id, kind, nonce, tx_hash, raw_tx, max_fee, priority_fee, sent_at_block, self._clock()),
            )
            assert cur.lastrowid is not None
            return self.attempt(cur.lastrowid)

    def attempt(self, attempt_id: int) -> Attempt:
        with self._lock:
            row = self._conn.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is None:
            raise KeyError(attempt_id)
        return _attempt(row)

    def attempts(self, intent_id: int) -> list[Attempt]:
        """The intent's attempts, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM attempts WHERE intent_id = ? ORDER BY id", (intent_id,)).fetchall()
        return [_attempt(row) for row in rows]

    def set_attempt_status(
        self,
        attempt_id: int,
        status: AttemptStatus,
        error_class: str | None = None,
        error: str | None = None,
    ) -> None:
        with self.transaction():
            self._conn.execute(
                "UPDATE attempts SET status = ?, error_class = ?, error = ? WHERE id = ?",
                (status, error_class, error, attempt_id),
            )
