"""The transaction journal: one row per thing the keeper wants done (an intent, e.g. a liquidation of one account,
with its call, the nonce it holds and its status) and one per signed transaction for it (an attempt: the raw signed
bytes, hash, fees, the head block when it was signed, and its own status). An intent may carry a fee ceiling
(`max_fee_ceiling`, wei per gas: no attempt of it pays more), kept across restarts. An intent holds its nonce while
it is open (`pending` or `mined`); at most one open intent per key and per (sender, nonce) is enforced by partial
unique indexes, so a resolved key can be used again later.

`Journal` is what the transaction manager needs; `SqliteJournal` keeps it in the keeper's state file
(keeper/chain/sqlite.py), whose durability (WAL, synchronous=FULL) the crash-safety of sending rests on.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from keeper.chain.sqlite import OnStateFile

IntentStatus = Literal["pending", "mined", "confirmed", "reverted", "cancelled", "failed", "dropped"]
AttemptStatus = Literal["signed", "sent", "rejected"]
AttemptKind = Literal["original", "replacement", "cancel"]

OPEN_STATUSES: tuple[IntentStatus, ...] = ("pending", "mined")


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


class Journal(Protocol):
    """What the transaction manager needs from the journal."""

    def transaction(self) -> AbstractContextManager[None]: ...

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
    ) -> Intent: ...

    def intent(self, intent_id: int) -> Intent: ...

    def open_intent(self, intent_key: str) -> Intent | None: ...

    def open_intents(self, sender: str) -> list[Intent]: ...

    def intents(self, intent_key: str | None = None) -> list[Intent]: ...

    def held_nonces(self, sender: str) -> set[int]: ...

    def set_intent_nonce(self, intent_id: int, nonce: int) -> None: ...

    def mark_mined(self, intent_id: int, tx_hash: str, block_number: int, block_hash: str) -> None: ...

    def mark_unmined(self, intent_id: int) -> None: ...

    def resolve_intent(self, intent_id: int, status: IntentStatus, error: str | None = None) -> None: ...

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
    ) -> Attempt: ...

    def attempt(self, attempt_id: int) -> Attempt: ...

    def attempts(self, intent_id: int) -> list[Attempt]: ...

    def set_attempt_status(
        self, attempt_id: int, status: AttemptStatus, error_class: str | None = None, error: str | None = None
    ) -> None: ...


class SqliteJournal(OnStateFile):
    """The journal in the keeper's state file."""

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

    # ------------------------------------------------------------------ attempts

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
