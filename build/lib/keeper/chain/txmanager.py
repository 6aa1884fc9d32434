"""The journalled transaction manager: nonces, EIP-1559 fees, replacement, receipts, reorgs and crash recovery.

Rules it keeps:
- The journal is written and committed before anything is sent: an intent (the call, the nonce it holds) and each
  signed transaction for it (raw bytes, hash, fees). After a crash, the journal alone tells what may be in flight.
- Nonces come from one local source of truth: the chain's confirmed count (`eth_getTransactionCount(.., 'latest')`)
  and the nonces held by open intents. A new intent takes the lowest nonce at or above the confirmed count that no
  open intent holds, so a nonce released by a failed send is re-used first; a gap that remains below a held nonce is
  filled with a zero-value transfer to self, so no transaction is ever stuck behind a hole.
- No second transaction is signed for an intent while an earlier one may still land, except at the same nonce (a
  replacement or a cancel, which exclude each other on chain). An intent moves to another nonce only when its old
  one was used on chain by a transaction that is none of its attempts.
- A receipt for any attempt resolves the intent; it is followed to `confirmations` blocks, and goes back to pending
  (and its journalled raw transaction is re-broadcast, same hash) when a reorg removes it.
- A transaction pending for `replace_after_blocks` blocks is replaced at the same nonce with both fees raised by at
  least 12.5 % (rounded up, at least 1 wei), never above its intent's fee ceiling. If the call now reverts in
  simulation, the replacement is a cancel (a zero-value transfer to self) instead.
- Each intent may carry its own fee ceiling (a liquidation's: the fee at which it still earns the minimum profit),
  journalled with it so that a restarted process keeps it; the operator's cap (`FeePolicy.max_fee_cap_wei`), when
  set, applies to every intent. Nothing is signed with a max fee above the lower of the two, and an intent whose
  ceiling is below the current base fee is not sent at all (it could not be mined without a loss).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from requests.exceptions import RequestException
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import TxReceipt

from keeper.chain.journal import Attempt, AttemptKind, Intent, Journal

# Replacement rule of the common clients (geth's default price bump): both fees at least 12.5 % higher.
BUMP_NUMERATOR = 1125
BUMP_DENOMINATOR = 1000
# Estimated gas is raised by this share before signing, so a small change of state before inclusion still fits.
GAS_HEADROOM_PERCENT = 20
TRANSFER_GAS = 21_000
# A fresh intent whose nonce turns out used by a transaction that is not ours is moved at most this many times.
MAX_RENONCE = 3
FILL_KEY_PREFIX = "nonce-fill"

SendErrorClass = Literal[
    "already_known",
    "nonce_too_low",
    "replacement_underpriced",
    "underpriced",
    "insufficient_funds",
    "transport",
    "rejected",
]
SendResult = Literal["sent"] | SendErrorClass
OutcomeStatus = Literal["confirmed", "reverted", "cancelled", "dropped"]


# What a caller asks the manager to send: `to` (None: a contract creation) and `data` (0x-hex or bytes), optionally
# `value` (wei), `gas` (else estimated) and `from` (must be the signer).
TxRequest = TypedDict(
    "TxRequest", {"to": str | None, "data": str | bytes, "value": int, "gas": int, "from": str}, total=False
)


@dataclass(frozen=True)
class FeePolicy:
    """EIP-1559 fee settings in wei per gas: the operator's ceiling on `maxFeePerGas` for every transaction (None:
    none; intents may carry their own) and the tip offered."""

    max_fee_cap_wei: int | None
    priority_fee_wei: int

    def ceiling(self, intent_ceiling: int | None) -> int | None:
        """The lower of the policy's cap and an intent's own ceiling; None when neither is set."""
        given = [c for c in (self.max_fee_cap_wei, intent_ceiling) if c is not None]
        return min(given) if given else None


@dataclass(frozen=True)
class Submission:
    """What `submit` did: `pending` (journalled and handed to the node, or queued for re-broadcast) or `failed`
    (the node refused it; nothing is in flight and its nonce is free again)."""

    intent_key: str
    nonce: int
    tx_hash: str
    status: Literal["pending", "failed"]
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A resolved intent. `confirmed`/`reverted`: its transaction is `confirmations` deep with that receipt status;
    `cancelled`: a cancel took its nonce; `dropped`: its nonce was used by a transaction that is not ours."""

    intent_key: str
    status: OutcomeStatus
    nonce: int
    tx_hash: str | None
    block: int | None
    receipt: TxReceipt | None


# ---------------------------------------------------------------------------------------------- pure helpers


def _ceil_bump(value: int) -> int:
    return max(-(-value * BUMP_NUMERATOR // BUMP_DENOMINATOR), value + 1)


def bump_fees(max_fee: int, priority: int, cap: int | None) -> tuple[int, int] | None:
    """Fees for a replacement of a transaction with (`max_fee`, `priority`): each raised to at least
    ceil(old * 1.125) and at least old + 1 wei. None when the new max fee would exceed `cap` (no valid replacement
    is possible under the cap); `cap` None: no ceiling."""
    new_max = _ceil_bump(max_fee)
    new_priority = min(_ceil_bump(priority), new_max)
    if cap is not None and new_max > cap:
        return None
    return new_max, new_priority


def initial_fees(base_fee: int, policy: FeePolicy, ceiling: int | None = None) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas) for a new transaction: the tip from the policy, and a max fee that
    survives the base fee doubling (2 * base + tip), both within `ceiling` (default: the policy's cap)."""
    limit = policy.max_fee_cap_wei if ceiling is None else ceiling
    max_fee = 2 * base_fee + policy.priority_fee_wei
    if limit is not None:
        max_fee = min(limit, max_fee)
    return max_fee, min(policy.priority_fee_wei, max_fee)


# Substrings of the nodes' answers to eth_sendRawTransaction, lower-cased; the first class that matches wins, so the
# more specific ones come first (erigon prefixes a generic code: "FEE_TOO_LOW: replacement transaction underpriced").
_SEND_ERROR_PATTERNS: tuple[tuple[SendErrorClass, tuple[str, ...]], ...] = (
    (
        "already_known",
        (
            "already known",  # geth, reth, erigon
            "alreadyknown",  # nethermind
            "already_known",  # besu
            "already_exists",  # erigon
            "already imported",  # anvil, openethereum
            "known transaction",  # besu
            "with same hash",  # erigon
            "already in mempool",
        ),
    ),
    (
        "nonce_too_low",
        (
            "nonce too low",  # geth, anvil, reth, erigon
            "nonce_too_low",  # besu
            "oldnonce",  # nethermind
            "nonce is too low",  # openethereum
            "nonce has already been used",
        ),
    ),
    (
        "replacement_underpriced",
        (
            "replacement transaction underpriced",  # geth, anvil, reth, erigon
            "replacement_underpriced",  # besu
            "replacementnotallowed",  # nethermind
            "could not replace existing tx",  # erigon
            "another transaction with same nonce",  # openethereum
        ),
    ),
    (
        "insufficient_funds",
        (
            "insufficient funds",  # geth, anvil, reth, erigon
            "insufficientfunds",  # nethermind
            "exceeds account balance",  # besu
            "upfront_cost_exceeds_balance",  # besu
        ),
    ),
    (
        "underpriced",
        (
            "underpriced",  # geth "transaction underpriced", erigon
            "feetoolow",  # nethermind
            "fee too low",  # erigon
            "fee_too_low",  # erigon
            "less than block base fee",  # geth, anvil
            "gas price too low",
            "gas price is too low",  # openethereum
            "below configured minimum",  # besu
        ),
    ),
)


def _error_text(exc: BaseException) -> str:
    parts = [str(exc)]
    if isinstance(exc, Web3RPCError) and exc.rpc_response is not None:
        error = exc.rpc_response.get("error")
        if isinstance(error, Mapping):
            parts += [str(error.get("message", "")), str(error.get("data", ""))]
    return " ".join(parts).lower()


def classify_send_error(exc: BaseException) -> SendErrorClass:
    """What a failed eth_sendRawTransaction means. `transport`: no answer from the node (connection, timeout,
    HTTP error), so the transaction may or may not have arrived; `rejected`: any other refusal."""
    text = _error_text(exc)
    for cls, patterns in _SEND_ERROR_PATTERNS:
        if any(p in text for p in patterns):
            return cls
    if isinstance(exc, RequestException | OSError | TimeoutError | ProviderConnectionError | TimeExhausted):
        return "transport"
    return "rejected"


# ---------------------------------------------------------------------------------------------- the manager


def _hex(value: bytes | str) -> str:
    return HexBytes(value).to_0x_hex()


class TxManager:
    """Journalled sending for one signer; see the module docstring. Not re-entrant across threads: every public
    method takes the manager's lock.

    `before_send` / `after_send` are test seams, called with the journalled attempt right before and right after
    it is handed to the node (`after_send` only when the node took it)."""

    def __init__(
        self,
        read_w3: Web3,
        submit_w3: Web3,
        signer: LocalAccount,
        journal: Journal,
        chain_id: int,
        policy: FeePolicy,
        confirmations: int,
        replace_after_blocks: int,
        log: logging.Logger,
        *,
        before_send: Callable[[Attempt], None] | None = None,
        after_send: Callable[[Attempt], None] | None = None,
    ) -> None:
        if policy.priority_fee_wei < 0 or (policy.max_fee_cap_wei is not None and policy.max_fee_cap_wei <= 0):
            raise ValueError("fee policy needs a positive cap (or none) and a non-negative tip")
        self._read = read_w3
        self._submit = submit_w3
        self._signer = signer
        self.address = Web3.to_checksum_address(signer.address)
        self.journal = journal
        self._chain_id = chain_id
        self.policy = policy
        self._confirmations = max(confirmations, 1)
        self._replace_after = max(replace_after_blocks, 1)
        self._log = log
        self.before_send = before_send
        self.after_send = after_send
        self._lock = threading.RLock()
        # Intents already reported as held back by the fee cap, so the warning is logged once per fee level.
        self._capped: set[tuple[int, int]] = set()

    # ------------------------------------------------------------------ public API

    def next_nonce(self) -> int:
        """The nonce a new intent would take now: the lowest one at or above the confirmed count that no open
        intent holds."""
        with self._lock:
            return self._free_nonce(self._chain_nonce())

    def in_flight(self, intent_key: str) -> bool:
        """Whether an intent with this key is open (sent, not yet confirmed or abandoned)."""
        with self._lock:
            return self.journal.open_intent(intent_key) is not None

    def submit(
        self, intent_key: str, tx: TxRequest, simulate: bool = True, max_fee_wei: int | None = None
    ) -> Submission | None:
        """Journal and send `tx` (`to`, `data`, optional `value` and `gas`) for `intent_key`, never paying more than
        `max_fee_wei` per gas (this intent's ceiling, replacements included; the policy's cap applies too). Returns
        None, having sent nothing, when an open intent has the same key, when the ceiling is below the current base
        fee, or when `simulate` is set and eth_call (or gas estimation) says the call reverts."""
        if max_fee_wei is not None and max_fee_wei <= 0:
            raise ValueError(f"max_fee_wei must be positive, not {max_fee_wei}")
        with self._lock:
            existing = self.journal.open_intent(intent_key)
            if existing is not None:
                self._log.info(
                    "not sending %s: intent already in flight at nonce %d (%s)",
                    intent_key,
                    existing.nonce,
                    existing.status,
                )
                return None
            sender = tx.get("from")
            if sender is not None and Web3.to_checksum_address(str(sender)) != self.address:
                raise ValueError(f"tx 'from' {sender} is not the signer {self.address}")
            to = None if tx.get("to") is None else Web3.to_checksum_address(str(tx["to"]))
            data = _hex(tx.get("data") or b"")
            value = int(tx.get("value") or 0)
            call: dict[str, Any] = {"from": self.address, "data": data, "value": value}
            if to is not None:
                call["to"] = to
            if simulate:
                reason = self._revert_reason(call)
                if reason is not None:
                    self._log.info("not sending %s: simulation reverts (%s)", intent_key, reason)
                    return None
            gas = tx.get("gas")
            if gas is None:
                try:
                    estimate = int(self._read.eth.estimate_gas(cast(Any, call)))
                except ContractLogicError as exc:
                    self._log.info("not sending %s: gas estimation reverts (%s)", intent_key, exc)
                    return None
                gas = estimate + estimate * GAS_HEADROOM_PERCENT // 100
            return self._create(intent_key, to, data, value, int(gas), simulate, max_fee_wei)

    def poll(self, head_block: int) -> list[Outcome]:
        """Follow every open intent at head `head_block`: confirm, detect reorgs, re-broadcast what the node lost,
        replace what waited too long, fill nonce gaps. Returns the intents resolved by this call."""
        with self._lock:
            return self._sweep(head_block, allow_replace=True)

    def reconcile(self) -> list[Outcome]:
        """Bring the journal in line with the chain (at start, after a crash): each open intent is found mined,
        pending in the node's pool, re-broadcast from its journalled raw transaction, or dropped when its nonce was
        used by a transaction that is not ours. Nothing new is signed except gap fillers."""
        with self._lock:
            head = int(self._read.eth.block_number)
            outcomes = self._sweep(head, allow_replace=False)
            open_now = self.journal.open_intents(self.address)
            self._log.info(
                "journal reconciled at block %d: %d open intent(s), next nonce %d",
                head,
                len(open_now),
                self._free_nonce(self._chain_nonce()),
            )
            return outcomes

    def rebroadcast(self, intent_key: str) -> SendResult:
        """Send the latest live attempt of the open intent `intent_key` again, unchanged (same hash)."""
        with self._lock:
            intent = self.journal.open_intent(intent_key)
            if intent is None:
                raise KeyError(f"no open intent {intent_key!r}")
            current = self._current_attempt(self.journal.attempts(intent.id))
            if current is None:
                raise KeyError(f"intent {intent_key!r} has no live attempt")
            result = self._broadcast(current, fresh=False)
            if result == "nonce_too_low":
                self._nonce_used(intent)
            return result

    # ------------------------------------------------------------------ creating and sending

    def _create(
        self,
        intent_key: str,
        to: str | None,
        data: str,
        value: int,
        gas: int,
        simulate: bool,
        max_fee_wei: int | None = None,
    ) -> Submission | None:
        block = self._read.eth.get_block("latest")
        head = int(block["number"])
        base_fee = int(block.get("baseFeePerGas", 0))
        ceiling = self.policy.ceiling(max_fee_wei)
        if ceiling is not None and ceiling < base_fee:
            self._log.info(
                "not sending %s: the base fee %d wei is above its fee ceiling %d wei", intent_key, base_fee, ceiling
            )
            return None
        max_fee, priority = initial_fees(base_fee, self.policy, ceiling)
        chain_nonce = self._chain_nonce()
        nonce = self._free_nonce(chain_nonce)
        with self.journal.transaction():
            intent = self.journal.add_intent(
                intent_key, self.address, nonce, to, data, value, gas, simulate, max_fee_ceiling=max_fee_wei
            )
            attempt = self._sign(intent, "original", max_fee, priority, head)
        moves = 0
        while True:
            result = self._broadcast(attempt, fresh=True)
            if result in ("sent", "already_known"):
                self._log.info(
                    "sent %s: nonce %d tx %s (max fee %d, tip %d, gas %d)",
                    intent_key,
                    attempt.nonce,
                    attempt.tx_hash,
                    max_fee,
                    priority,
                    gas,
                )
                return Submission(intent_key, attempt.nonce, attempt.tx_hash, "pending")
            if result == "transport":
                self._log.warning(
                    "sending %s (tx %s) got no answer; it stays journalled and is re-broadcast on the next poll",
                    intent_key,
                    attempt.tx_hash,
                )
                return Submission(intent_key, attempt.nonce, attempt.tx_hash, "pending")
            if result == "nonce_too_low":
                if self._nonce_used(intent):
                    return Submission(intent_key, attempt.nonce, attempt.tx_hash, "pending")
                if moves == MAX_RENONCE:
                    self.journal.resolve_intent(intent.id, "failed", "nonce kept being taken by other transactions")
                    self._log.error("gave up on %s: its nonce kept being taken by other transactions", intent_key)
                    return Submission(intent_key, attempt.nonce, attempt.tx_hash, "failed", "nonce taken")
                moves += 1
                new_nonce = self._free_nonce(max(self._chain_nonce(), attempt.nonce + 1))
                self._log.warning(
                    "nonce %d of %s was used by a transaction that is not ours; moving to nonce %d",
                    attempt.nonce,
                    intent_key,
                    new_nonce,
                )
                with self.journal.transaction():
                    self.journal.set_attempt_status(attempt.id, "rejected", "nonce_too_low", "nonce used by another tx")
                    self.journal.set_intent_nonce(intent.id, new_nonce)
                    intent = self.journal.intent(intent.id)
                    attempt = self._sign(intent, "original", max_fee, priority, head)
                continue
            error = self.journal.attempt(attempt.id).error
            self.journal.resolve_intent(intent.id, "failed", error)
            self._log.warning("node refused %s (%s): %s; nonce %d released", intent_key, result, error, attempt.nonce)
            return Submission(intent_key, attempt.nonce, attempt.tx_hash, "failed", error)

    def _sign(self, intent: Intent, kind: AttemptKind, max_fee: int, priority: int, head: int) -> Attempt:
        """Sign a transaction for `intent` at its nonce and journal it (inside the caller's transaction)."""
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self._chain_id,
            "nonce": intent.nonce,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority,
        }
        if kind == "cancel":
            tx.update(to=self.address, value=0, data="0x", gas=TRANSFER_GAS)
        else:
            tx.update(value=intent.value, data=intent.data, gas=intent.gas)
            if intent.to is not None:
                tx["to"] = intent.to
        signed = self._signer.sign_transaction(tx)
        return self.journal.add_attempt(
            intent.id,
            kind,
            intent.nonce,
            _hex(signed.hash),
            _hex(signed.raw_transaction),
            max_fee,
            priority,
            head,
        )

    def _broadcast(self, attempt: Attempt, fresh: bool) -> SendResult:
        """Hand the journalled raw transaction to the node and record what it said. `fresh`: this attempt was never
        accepted before, so a refusal marks it rejected (a re-broadcast that is refused keeps its status)."""
        if self.before_send is not None:
            self.before_send(attempt)
        try:
            self._submit.eth.send_raw_transaction(HexBytes(attempt.raw_tx))
        except Exception as exc:
            cls = classify_send_error(exc)
            if cls == "rejected" and self._node_knows(attempt.tx_hash):
                cls = "already_known"
            if cls == "already_known":
                self.journal.set_attempt_status(attempt.id, "sent")
                return cls
            if cls in ("transport", "nonce_too_low"):
                self._log.info("send of tx %s: %s (%s)", attempt.tx_hash, cls, exc)
                return cls
            if fresh:
                self.journal.set_attempt_status(attempt.id, "rejected", cls, str(exc)[:500])
            else:
                self._log.warning("re-broadcast of tx %s refused (%s): %s", attempt.tx_hash, cls, exc)
            return cls
        self.journal.set_attempt_status(attempt.id, "sent")
        if self.after_send is not None:
            self.after_send(attempt)
        return "sent"

    # ------------------------------------------------------------------ following

    def _sweep(self, head: int, allow_replace: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for intent in self.journal.open_intents(self.address):
            try:
                outcome = self._follow(intent, head, allow_replace)
            except Exception as exc:
                self._log.warning("following %s (nonce %d) failed: %s", intent.intent_key, intent.nonce, exc)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        try:
            self._fill_gaps()
        except Exception as exc:
            self._log.warning("filling nonce gaps failed: %s", exc)
        return outcomes

    def _follow(self, intent: Intent, head: int, allow_replace: bool) -> Outcome | None:
        attempts = self.journal.attempts(intent.id)
        found = self._find_receipt(attempts)
        if found is not None:
            return self._track_mined(intent, found[0], found[1], head)
        reorged = intent.status == "mined"
        if reorged:
            self._log.warning(
                "reorg: tx %s of %s is no longer in block %s; pending again",
                intent.tx_hash,
                intent.intent_key,
                intent.block_number,
            )
            self.journal.mark_unmined(intent.id)
        if intent.nonce < self._chain_nonce():
            # Re-check after reading the nonce: one of ours may have been mined in between.
            found = self._find_receipt(attempts)
            if found is not None:
                return self._track_mined(intent, found[0], found[1], head)
            return self._drop(intent)
        current = self._current_attempt(attempts)
        if current is None:
            self.journal.resolve_intent(intent.id, "failed", "every attempt was refused")
            return None
        if reorged or not self._node_knows(current.tx_hash):
            self._log.info("re-broadcasting tx %s of %s (nonce %d)", current.tx_hash, intent.intent_key, intent.nonce)
            if self._broadcast(current, fresh=current.status == "signed") == "nonce_too_low":
                self._nonce_used(intent)
                return None
        elif current.status == "signed":
            # Journalled, and the node has it: the crash came after the send.
            self.journal.set_attempt_status(current.id, "sent")
        if allow_replace and self._replacement_due(attempts, head):
            self._replace(intent, attempts, head)
        return None

    def _mark_mined(self, intent: Intent, attempt: Attempt, receipt: TxReceipt) -> None:
        number = int(receipt["blockNumber"])
        block_hash = _hex(receipt["blockHash"])
        if intent.status == "mined" and intent.block_hash == block_hash and intent.tx_hash == attempt.tx_hash:
            return
        with self.journal.transaction():
            if attempt.status != "sent":  # journalled, then the process died before it recorded the send
                self.journal.set_attempt_status(attempt.id, "sent")
            self.journal.mark_mined(intent.id, attempt.tx_hash, number, block_hash)
        self._log.info(
            "%s mined: tx %s (nonce %d) in block %d", intent.intent_key, attempt.tx_hash, attempt.nonce, number
        )

    def _track_mined(self, intent: Intent, attempt: Attempt, receipt: TxReceipt, head: int) -> Outcome | None:
        self._mark_mined(intent, attempt, receipt)
        number = int(receipt["blockNumber"])
        if head - number + 1 < self._confirmations:
            return None
        status: OutcomeStatus
        if attempt.kind == "cancel":
            status = "cancelled"
        elif int(receipt["status"]) == 1:
            status = "confirmed"
        else:
            status = "reverted"
        self.journal.resolve_intent(intent.id, status)
        log = self._log.info if status == "confirmed" else self._log.warning
        log(
            "%s %s: tx %s in block %d, gas used %d",
            intent.intent_key,
            status,
            attempt.tx_hash,
            number,
            int(receipt["gasUsed"]),
        )
        return Outcome(intent.intent_key, status, intent.nonce, attempt.tx_hash, number, receipt)

    def _drop(self, intent: Intent) -> Outcome:
        self.journal.resolve_intent(
            intent.id, "dropped", f"nonce {intent.nonce} used by a transaction that is not ours"
        )
        self._log.warning(
            "%s dropped: nonce %d was used by a transaction that is none of its attempts",
            intent.intent_key,
            intent.nonce,
        )
        return Outcome(intent.intent_key, "dropped", intent.nonce, None, None, None)

    def _nonce_used(self, intent: Intent) -> bool:
        """The node says the intent's nonce is used: True if by one of its attempts (now tracked as mined)."""
        found = self._find_receipt(self.journal.attempts(intent.id))
        if found is None:
            return False
        self._mark_mined(intent, found[0], found[1])
        return True

    # ------------------------------------------------------------------ replacing

    @staticmethod
    def _current_attempt(attempts: Sequence[Attempt]) -> Attempt | None:
        live = [a for a in attempts if a.status != "rejected"]
        return live[-1] if live else None

    def _replacement_due(self, attempts: Sequence[Attempt], head: int) -> bool:
        latest = attempts[-1]
        if latest.status == "rejected" and latest.error_class in ("replacement_underpriced", "underpriced"):
            return True
        return head - latest.sent_at_block >= self._replace_after

    def _replace(self, intent: Intent, attempts: Sequence[Attempt], head: int) -> None:
        at_nonce = [a for a in attempts if a.nonce == intent.nonce]
        old_max = max(a.max_fee for a in at_nonce)
        old_priority = max(a.priority_fee for a in at_nonce)
        cap = self.policy.ceiling(intent.max_fee_ceiling)
        bumped = bump_fees(old_max, old_priority, cap)
        if bumped is None:
            if (intent.id, old_max) not in self._capped:
                self._capped.add((intent.id, old_max))
                self._log.warning(
                    "%s pending since block %d but its fee ceiling %d wei leaves no room for a 12.5%% bump over %d; "
                    "waiting",
                    intent.intent_key,
                    attempts[-1].sent_at_block,
                    cap,
                    old_max,
                )
            return
        block = self._read.eth.get_block("latest")
        fresh_max, fresh_priority = initial_fees(int(block.get("baseFeePerGas", 0)), self.policy, cap)
        max_fee = max(bumped[0], fresh_max) if cap is None else min(cap, max(bumped[0], fresh_max))
        priority = min(max_fee, max(bumped[1], fresh_priority))
        kind: AttemptKind = "replacement"
        if any(a.kind == "cancel" for a in at_nonce):
            kind = "cancel"
        elif intent.simulate:
            call: dict[str, Any] = {"from": self.address, "data": intent.data, "value": intent.value}
            if intent.to is not None:
                call["to"] = intent.to
            reason = self._revert_reason(call)
            if reason is not None:
                kind = "cancel"
                self._log.warning(
                    "%s now reverts in simulation (%s): cancelling nonce %d instead of bumping",
                    intent.intent_key,
                    reason,
                    intent.nonce,
                )
        with self.journal.transaction():
            attempt = self._sign(intent, kind, max_fee, priority, head)
        result = self._broadcast(attempt, fresh=True)
        if result in ("sent", "already_known"):
            self._log.info(
                "%s %s at nonce %d: tx %s -> %s, max fee %d -> %d, tip %d -> %d",
                intent.intent_key,
                "cancelled" if kind == "cancel" else "replaced",
                intent.nonce,
                attempts[-1].tx_hash,
                attempt.tx_hash,
                old_max,
                max_fee,
                old_priority,
                priority,
            )
        elif result == "nonce_too_low":
            self._nonce_used(intent)
        elif result != "transport":
            self._log.warning("replacement of %s refused (%s); retrying with higher fees", intent.intent_key, result)

    # ------------------------------------------------------------------ nonces and node queries

    def _chain_nonce(self) -> int:
        return int(self._read.eth.get_transaction_count(self.address, "latest"))

    def _free_nonce(self, start: int) -> int:
        held = self.journal.held_nonces(self.address)
        nonce = start
        while nonce in held:
            nonce += 1
        return nonce

    def _fill_gaps(self) -> None:
        """Send a zero-value transfer to self at every free nonce below the highest held one, so transactions
        behind a released nonce are not stuck."""
        held = self.journal.held_nonces(self.address)
        if not held:
            return
        chain_nonce = self._chain_nonce()
        for nonce in range(chain_nonce, max(held)):
            if nonce in held:
                continue
            self._log.warning("nonce %d is a gap below pending nonce %d: filling it", nonce, max(held))
            self._create(f"{FILL_KEY_PREFIX}:{nonce}", self.address, "0x", 0, TRANSFER_GAS, False)

    def _find_receipt(self, attempts: Sequence[Attempt]) -> tuple[Attempt, TxReceipt] | None:
        for attempt in reversed(attempts):
            try:
                receipt = self._read.eth.get_transaction_receipt(HexBytes(attempt.tx_hash))
            except TransactionNotFound:
                continue
            if receipt is not None and receipt.get("blockNumber") is not None:
                return attempt, receipt
        return None

    def _node_knows(self, tx_hash: str) -> bool:
        """True if the read node or the submit node has the transaction (pending or mined)."""
        for w3 in (self._read, self._submit) if self._submit is not self._read else (self._read,):
            try:
                w3.eth.get_transaction(HexBytes(tx_hash))
            except TransactionNotFound:
                continue
            except Exception as exc:
                self._log.debug("lookup of tx %s failed: %s", tx_hash, exc)
                continue
            return True
        return False

    def _revert_reason(self, call: dict[str, Any]) -> str | None:
        """None if eth_call of `call` succeeds at the latest block, else why it reverts."""
        try:
            self._read.eth.call(cast(Any, call), "latest")
        except ContractLogicError as exc:
            return str(exc) or "reverted"
        return None
