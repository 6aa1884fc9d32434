"""Account discovery: every (owner, subId) that ever held collateral, from the engine's events.

An account can only hold collateral after a `Deposited` or a `CollateralMoved` (into `toSubId`) event, so those
two events find every account that can ever need liquidating. The confirmed range (up to `confirmations` blocks
behind the head) is scanned with chunked `eth_getLogs` and checkpointed; the unconfirmed tip is scanned on every
cycle without moving the checkpoint, so a brand-new account is tracked at once. A reorg that replaces the
checkpoint block rolls the checkpoint back to the last block whose stored hash still matches and re-scans.
Accounts are only ever added: an account seen in a block that was later reorged out costs one extra read.

Public RPC providers cap `eth_getLogs`: by block range (Alchemy's free tier at 500 or 2,000 blocks, Infura and
QuickNode at 10,000, many others at 1,000 to 50,000) and by result count (10,000 logs at Infura and Alchemy). The
scan adapts its range to what the provider says: a refusal that names a block limit or suggests a range sets the
range to that (and never above a stated limit again); any other range refusal halves it. After a few successful
requests in a row the range doubles again, up to `chunk_size`, so a dense stretch of history that needed small
ranges does not slow the rest of the scan.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi.abi import decode as abi_decode
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3RPCError

from keeper.chain.index import AccountIndex

CHECKPOINT = "discovery"
# How many recent block hashes are kept for finding the fork point after a reorg.
HASH_HISTORY = 512
# Successful eth_getLogs requests in a row after which the range doubles (up to chunk_size).
GROW_AFTER = 3

# What providers answer when an eth_getLogs range is too wide or returns too much (lower-cased substrings). Rate
# limits ("request rate limited", "exceeded its compute units") are not range errors: shrinking would not help.
_RANGE_ERRORS = (
    "query returned more than",  # Infura, geth-based: "query returned more than 10000 results"
    "log response size exceeded",  # Alchemy
    "eth_getlogs requests with up to",  # Alchemy: "You can make eth_getLogs requests with up to a 500 block range"
    "eth_getlogs is limited to",  # QuickNode (HTTP 413): "eth_getLogs is limited to a 10,000 range"
    "exceeds limit of",  # Infura: "range 1000000 exceeds limit of 10000"
    "bigger than range limit",  # Tenderly: "range 9009594 is bigger than range limit 2000"
    "max block range",  # "block range is larger than max block range, ... max block range = 5000"
    "maxblockrange",
    "block range is too",  # Frontier/Moonbeam: "block range is too wide (maximum 1024)"
    "block range too",  # Erigon-based: "block range too large, max range: 1000"; "block range too high"
    "exceeds max results",  # reth: "query exceeds max results 20000, retry with the range A-B"
    "too many logs",
    "too many results",
    "response too large",
)
# A stated block-range limit: "up to a 500 block range", "limit of 10000", "limited to a 10,000 range",
# "range limit 2000", "max block range = 5000", "(maximum 1024)", "max range: 1000".
_LIMIT = re.compile(
    r"(?:up to a|limit of|limited to a|range limit|max block range\s*=?|maximum|max range:?)\s*([0-9][0-9,_]*)\s*[kK]?"
)
# A range the provider suggests: Alchemy's "[0x1a30dfd, 0x1a30ff0]", reth's "retry with the range 25766988-25775072".
_SUGGESTED_HEX = re.compile(r"\[\s*0x([0-9a-fA-F]+)\s*,\s*0x([0-9a-fA-F]+)\s*\]")
_SUGGESTED_DEC = re.compile(r"retry with the range\s+([0-9]+)\s*-\s*([0-9]+)")


def range_error_text(exc: BaseException) -> str | None:
    """The provider's message when `exc` is an eth_getLogs refusal for a too wide range or too many results (from a
    JSON-RPC error, web3's Web3RPCError, or an HTTP error whose body holds one, as QuickNode's 413), else None."""
    parts: list[str] = [str(exc)]
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, Mapping):
        error = exc.rpc_response.get("error")
        if isinstance(error, Mapping):
            parts += [str(error.get("message", "")), str(error.get("data", ""))]
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        parts.append(exc.response.text[:2000])
    elif not isinstance(exc, ValueError):
        return None
    text = " ".join(parts)
    lowered = text.lower()
    return text if any(p in lowered for p in _RANGE_ERRORS) else None


def next_range(text: str, size: int) -> tuple[int, int | None]:
    """After a refusal of `size` blocks with message `text`: (the range to try next, a block limit the provider
    stated or None). A suggested range is taken as given; a stated limit caps the range; otherwise it halves."""
    limit: int | None = None
    for match in _LIMIT.finditer(text):
        digits = match.group(1).replace(",", "").replace("_", "")
        value = int(digits) * (1000 if match.group(0).rstrip().lower().endswith("k") else 1)
        if value > 0:
            limit = value if limit is None else min(limit, value)
    suggested: int | None = None
    if (m := _SUGGESTED_HEX.search(text)) is not None:
        suggested = int(m.group(2), 16) - int(m.group(1), 16) + 1
    elif (m := _SUGGESTED_DEC.search(text)) is not None:
        suggested = int(m.group(2)) - int(m.group(1)) + 1
    nxt = size // 2
    if suggested is not None and 0 < suggested < size:
        nxt = suggested
    elif limit is not None and limit < size:
        nxt = limit
    return max(1, nxt), limit


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
        store: AccountIndex,
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
        self._max_chunk = max(1, chunk_size)
        self._chunk = self._max_chunk  # the range of the next request, adapted to the provider's limits
        self._range_cap: int | None = None  # a block-range limit the provider stated
        self._streak = 0  # successful requests since the range last changed
        self._log = log or logging.getLogger("keeper.discovery")

    @property
    def chunk(self) -> int:
        """The block range the next eth_getLogs request will ask for."""
        return self._chunk

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
        while lo <= end:
            hi = min(end, lo + self._chunk - 1)
            try:
                logs = self._w3.eth.get_logs(
                    {
                        "address": self._engine,
                        "fromBlock": lo,
                        "toBlock": hi,
                        "topics": [[self._deposited, self._moved]],
                    }
                )
            except (Web3RPCError, ValueError, requests.HTTPError) as exc:
                text = range_error_text(exc)
                size = hi - lo + 1
                if text is None or size <= 1:
                    raise
                self._shrink(text, size)
                continue
            added += self._store.add_accounts(self._accounts_in(logs))
            lo = hi + 1
            self._grow()
        return added

    def _shrink(self, text: str, size: int) -> None:
        nxt, limit = next_range(text, size)
        if limit is not None:
            self._range_cap = limit if self._range_cap is None else min(self._range_cap, limit)
            nxt = min(nxt, self._range_cap)
        self._chunk = max(1, min(nxt, size - 1))
        self._streak = 0
        self._log.info(
            "eth_getLogs over %d blocks refused (%s); asking for %d blocks at a time", size, text[:200], self._chunk
        )

    def _grow(self) -> None:
        self._streak += 1
        if self._streak < GROW_AFTER:
            return
        self._streak = 0
        ceiling = self._max_chunk if self._range_cap is None else min(self._max_chunk, self._range_cap)
        self._chunk = min(ceiling, self._chunk * 2)

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
