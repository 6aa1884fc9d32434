"""Account discovery: every (owner, subId) that ever held collateral, from the engine's events.

An account can only hold collateral after a `Deposited` or a `CollateralMoved` (into `toSubId`) event, so those
two events find every account that can ever need liquidating. The confirmed range (up to `confirmations` blocks
behind the head) is scanned with chunked `eth_getLogs` and checkpointed; the unconfirmed tip is scanned on every
cycle without moving the checkpoint, so a brand-new account is tracked at once. A reorg that replaces the
checkpoint block rolls the checkpoint back to the last block whose stored hash still matches and re-scans.
Accounts are only ever added: an account seen in a block that was later reorged out costs one extra read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi.abi import decode as abi_decode
from hexbytes import HexBytes
from web3 import Web3

CHECKPOINT = "discovery"
# How many recent block hashes are kept for finding the fork point after a reorg.
HASH_HISTORY = 512


class DiscoveryStore(Protocol):
    """What discovery needs from the keeper's store."""

    def add_accounts(self, accounts: Iterable[tuple[str, int, int]]) -> int: ...

    def get_checkpoint(self, name: str) -> tuple[int, str] | None: ...

    def set_checkpoint(self, name: str, block: int, block_hash: str) -> None: ...

    def record_block_hash(self, number: int, block_hash: str) -> None: ...

    def block_hash(self, number: int) -> str | None: ...

    def prune_block_hashes(self, below: int) -> object: ...


@dataclass(frozen=True)
class ScanResult:
    from_block: int
    to_block: int
    new_accounts: int
    reorg_depth: int


def _topic(abi: Sequence[dict[str, Any]], name: str) -> HexBytes:
    """topic0 of event `name`: keccak of its canonical signature, built from the ABI."""
    event = next(e for e in abi if e.get("type") == "event" and e.get("name") == name)
    signature = f"{name}({','.join(str(i['type']) for i in event['inputs'])})"
    return HexBytes(Web3.keccak(text=signature))


class Discovery:
    """Finds accounts from engine events; see the module docstring for the rules."""

    def __init__(
        self,
        w3: Web3,
        store: DiscoveryStore,
        engine: str,
        engine_abi: Sequence[dict[str, Any]],
        start_block: int,
        confirmations: int,
        chunk_size: int = 2_000,
        log: logging.Logger | None = None,
    ) -> None:
        self._w3 = w3
        self._store = store
        self._engine = Web3.to_checksum_address(engine)
        self._deposited = _topic(engine_abi, "Deposited")
        self._moved = _topic(engine_abi, "CollateralMoved")
        self._start = start_block
        self._confirmations = confirmations
        self._chunk = chunk_size
        self._log = log or logging.getLogger("keeper.discovery")

    # ------------------------------------------------------------------ public

    def scan(self) -> ScanResult:
        """Scan confirmed blocks past the checkpoint, then the unconfirmed tip. Returns what was scanned."""
        head = self._w3.eth.block_number
        reorg_depth = self._rewind_if_reorged()
        checkpoint = self._store.get_checkpoint(CHECKPOINT)
        start = checkpoint[0] + 1 if checkpoint else self._start
        safe = head - self._confirmations
        added = 0
        if start <= safe:
            added += self._scan_range(start, safe)
            block = self._w3.eth.get_block(safe)
            safe_hash = Web3.to_hex(block["hash"])
            self._store.record_block_hash(safe, safe_hash)
            self._store.set_checkpoint(CHECKPOINT, safe, safe_hash)
            self._store.prune_block_hashes(safe - HASH_HISTORY)
        tip_start = max(start, safe + 1)
        if tip_start <= head:
            added += self._scan_range(tip_start, head)
        return ScanResult(start, head, added, reorg_depth)

    # ------------------------------------------------------------------ internals

    def _rewind_if_reorged(self) -> int:
        """If the checkpoint block's hash changed, move the checkpoint back to the newest block that still
        matches (or before the start block) and return how many blocks were rolled back."""
        checkpoint = self._store.get_checkpoint(CHECKPOINT)
        if checkpoint is None:
            return 0
        number, stored = checkpoint
        if self._hash_at(number) == stored:
            return 0
        probe = number - 1
        while probe >= self._start:
            known = self._store.block_hash(probe)
            if known is not None and self._hash_at(probe) == known:
                break
            probe -= 1
        if probe < self._start:
            probe = self._start - 1
        depth = number - probe
        self._log.warning("reorg detected: checkpoint %d replaced; re-scanning from block %d", number, probe + 1)
        self._store.set_checkpoint(CHECKPOINT, probe, self._hash_at(probe) or "")
        return depth

    def _hash_at(self, number: int) -> str | None:
        if number < 0:
            return None
        block = self._w3.eth.get_block(number)
        return Web3.to_hex(block["hash"])

    def _scan_range(self, start: int, end: int) -> int:
        added = 0
        lo = start
        chunk = self._chunk
        while lo <= end:
            hi = min(end, lo + chunk - 1)
            try:
                logs = self._w3.eth.get_logs(
                    {
                        "address": self._engine,
                        "fromBlock": lo,
                        "toBlock": hi,
                        "topics": [[self._deposited, self._moved]],
                    }
                )
            except ValueError as exc:
                # Providers refuse ranges with too many results; halve and retry.
                if chunk > 1 and _is_range_error(exc):
                    chunk = max(1, chunk // 2)
                    continue
                raise
            added += self._store.add_accounts(self._accounts_in(logs))
            lo = hi + 1
        return added

    def _accounts_in(self, logs: Iterable[Any]) -> list[tuple[str, int, int]]:
        found: list[tuple[str, int, int]] = []
        for log in logs:
            topics = log["topics"]
            block = int(log["blockNumber"])
            if bytes(topics[0]) == self._deposited:
                # Deposited(caller indexed, owner indexed, subId indexed, asset, amount)
                owner = Web3.to_checksum_address(bytes(topics[2])[-20:])
                sub_id = int.from_bytes(bytes(topics[3]), "big")
                found.append((owner, sub_id, block))
            else:
                # CollateralMoved(owner indexed, fromSubId, toSubId, asset, amount)
                owner = Web3.to_checksum_address(bytes(topics[1])[-20:])
                _from_sub, to_sub, _asset, _amount = abi_decode(
                    ["uint8", "uint8", "address", "uint256"], bytes(log["data"])
                )
                found.append((owner, int(to_sub), block))
        return found


def _is_range_error(exc: ValueError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("query returned more than", "too many", "range", "limit exceeded", "response size"))


class MemoryStore:
    """A DiscoveryStore in memory, for one-off scans (`keeper status`) that keep no state."""

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
