"""The keeper's state file: one SQLite database holding two stores with different owners, the discovery index
(tracked accounts, scan checkpoints, recent block hashes; keeper/chain/index.py) and the transaction journal
(intents and their signed attempts; keeper/chain/journal.py). Each store works on a `StateFile`; another backend
implements the stores' Protocols instead.

One connection in WAL mode with `synchronous=FULL`, so a committed write survives a crash or a power cut: the journal
relies on that (an intent and its signed transaction are committed before anything is sent). Every write runs in a
`BEGIN IMMEDIATE` transaction; `StateFile.transaction()` groups several writes into one. The file is meant for one
thread at a time and guards itself with a lock anyway.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from keeper.core.errors import KeeperError

SCHEMA_VERSION = 2  # 2: intents.max_fee_ceiling

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


class StateFile:
    """The SQLite state file; see the module docstring. `conn` and `lock` are for the stores built on it."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.lock = threading.RLock()
        self._depth = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE. The connection may be created on
        # one thread and used on the runner's worker thread, never on two at once (the lock sees to that).
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"{path} is not a usable keeper state file ({exc}); move it away to start afresh") from exc

    def _migrate(self) -> None:
        with self.transaction():
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this keeper's {SCHEMA_VERSION}: "
                    "upgrade the keeper or point state_db elsewhere"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            columns = {row["name"] for row in self.conn.execute("PRAGMA table_info(intents)")}
            if "max_fee_ceiling" not in columns:  # a version 1 file: its intents keep no ceiling of their own
                self.conn.execute("ALTER TABLE intents ADD COLUMN max_fee_ceiling TEXT")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @property
    def schema_version(self) -> int:
        with self.lock:
            return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of writes: committed at the end, rolled back if the block raises. Nests (the inner block
        joins the outer transaction)."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")


class OnStateFile:
    """A store kept in the state file: built on a `StateFile` it may share with the other store, or opened on a
    path of its own (`open`)."""

    def __init__(self, db: StateFile) -> None:
        self.db = db
        self._conn = db.conn
        self._lock = db.lock
        self._clock = db.clock
        self.transaction = db.transaction

    @classmethod
    def open(cls, path: Path, clock: Callable[[], float] = time.time) -> Self:
        return cls(StateFile(path, clock))

    @property
    def path(self) -> Path:
        return self.db.path

    def close(self) -> None:
        self.db.close()
