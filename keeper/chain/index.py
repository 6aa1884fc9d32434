"""The discovery index: every account the keeper tracks (owner, sub-account, first block seen), the scan
checkpoints and the recent block hashes that reorg detection compares. `AccountIndex` is what its users need;
`SqliteIndex` keeps it in the keeper's state file, `MemoryIndex` in memory for one-off scans (`keeper status`,
drills' pre-scans)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from keeper.chain.sqlite import OnStateFile


class AccountIndex(Protocol):
    """What discovery and the block job need from the index."""

    def add_accounts(self, accounts: Iterable[tuple[str, int, int]]) -> int: ...

    def accounts(self) -> list[tuple[str, int]]: ...

    def account_count(self) -> int: ...

    def get_checkpoint(self, name: str) -> tuple[int, str] | None: ...

    def set_checkpoint(self, name: str, block: int, block_hash: str) -> None: ...

    def record_block_hash(self, number: int, block_hash: str) -> None: ...

    def block_hash(self, number: int) -> str | None: ...

    def prune_block_hashes(self, below: int) -> object: ...


class SqliteIndex(OnStateFile):
    """The index in the keeper's state file."""

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


class MemoryIndex:
    """An AccountIndex in memory, for one-off scans that keep no state."""

    def __init__(self) -> None:
        self._accounts: dict[tuple[str, int], int] = {}
        self._checkpoints: dict[str, tuple[int, str]] = {}
        self._hashes: dict[int, str] = {}

    def add_accounts(self, accounts: Iterable[tuple[str, int, int]]) -> int:
        added = 0
        for owner, sub_id, block in accounts:
            if (owner, sub_id) not in self._accounts:
                self._accounts[(owner, sub_id)] = block
                added += 1
        return added

    def accounts(self) -> list[tuple[str, int]]:
        return sorted(self._accounts)

    def account_count(self) -> int:
        return len(self._accounts)

    def get_checkpoint(self, name: str) -> tuple[int, str] | None:
        return self._checkpoints.get(name)

    def set_checkpoint(self, name: str, block: int, block_hash: str) -> None:
        self._checkpoints[name] = (block, block_hash)

    def record_block_hash(self, number: int, block_hash: str) -> None:
        self._hashes[number] = block_hash

    def block_hash(self, number: int) -> str | None:
        return self._hashes.get(number)

    def prune_block_hashes(self, below: int) -> None:
        for n in [n for n in self._hashes if n < below]:
            del self._hashes[n]
