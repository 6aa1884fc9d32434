"""Volatility from a feed's own round history (docs/risk-model.md).

A push oracle updates at irregular times (a deviation threshold or a heartbeat), so every estimator here works with
the time between rounds: a log return `r_i` over `dt_i` seconds has variance `σ²·dt_i` under a diffusion.

- Realised volatility over a window: `σ² = Σ r_i² / Σ dt_i`, annualised. Summing squared returns and dividing by the
  elapsed time, rather than averaging per-round variances, weights each round by the time it covers, which is right
  for irregular sampling (and unbiased at the stopping times of a deviation trigger).
- EWMA (RiskMetrics style): a variance *rate* `v` decays with elapsed time, not with the number of rounds:
  `v_i = w_i·v_{i-1} + (1 - w_i)·r_i²/dt_i` with `w_i = λ^(dt_i / 1 day)` (λ = 0.94 per day by default).
- Jumps: returns beyond `k` standard deviations of the diffusion (iterated until stable) are counted as jumps; their
  count per year, mean and standard deviation feed the Merton model, and the rest give the diffusion's σ.

`read_history` reads the rounds from the chain. It walks a feed back from its latest round across every Chainlink
proxy phase (an aggregator change starts a new phase; round ids are `phase << 64 | aggregator round`), reads each
phase's answers with that phase's decimals, and sends raw `eth_call`s (encoded here, so no ABI file is needed) in
JSON-RPC batch requests: one request per `batch` rounds instead of one per round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import requests
from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3Exception

from keeper.core.errors import KeeperError
from keeper.optimizer.stress import SECONDS_PER_YEAR

DAY_S = 86400
RISKMETRICS_LAMBDA = 0.94
PHASE_OFFSET = 64  # Chainlink proxies: round id = phase << 64 | the phase aggregator's own round id
AGGREGATOR_ROUND_MASK = (1 << PHASE_OFFSET) - 1
BATCH = 100  # eth_calls per JSON-RPC batch request (public nodes accept 100; the reader halves it if refused)

# AggregatorV3Interface, and AggregatorProxy's phase registry.
_LATEST_ROUND_DATA = function_signature_to_4byte_selector("latestRoundData()")
_GET_ROUND_DATA = function_signature_to_4byte_selector("getRoundData(uint80)")
_DECIMALS = function_signature_to_4byte_selector("decimals()")
_PHASE_AGGREGATORS = function_signature_to_4byte_selector("phaseAggregators(uint16)")
_ROUND_TYPES = ("uint80", "int256", "uint256", "uint256", "uint80")
_ZERO_ADDRESS = "0x" + "00" * 20


class VolatilityError(KeeperError):
    """Not enough usable history to estimate a volatility."""

    reason = "history"  # the label of the risk job's failure metric


class FlatFeedError(VolatilityError):
    """The history's σ is below the stated minimum: a frozen or hard-coded feed, not a calm market."""

    reason = "sigma"


class FeedError(KeeperError):
    """A feed's reads revert or return nothing, or the node does not answer them."""

    def __init__(self, message: str, reason: str = "feed") -> None:
        super().__init__(message)
        self.reason = reason  # "feed": the contract refuses; "rpc": the node failed


@dataclass(frozen=True)
class Round:
    round_id: int
    answer: int
    updated_at: int
    decimals: int = 0  # the answer's decimals (phases of a proxy may differ)

    @property
    def price(self) -> float:
        return self.answer / 10.0**self.decimals


@dataclass(frozen=True)
class Returns:
    log_return: npt.NDArray[np.float64]
    dt_s: npt.NDArray[np.float64]

    @property
    def span_s(self) -> float:
        return float(self.dt_s.sum())


@dataclass(frozen=True)
class Estimate:
    rounds: int
    span_s: float
    realized: float
    ewma: float
    sigma: float  # diffusion σ with jumps removed
    jump_intensity: float
    jump_mean: float
    jump_vol: float


def _usable(rounds: Sequence[Round], window_s: float | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Times and prices of the valid rounds, oldest first: non-positive answers skipped, rounds sharing a timestamp
    collapsed to the last one, and with `window_s` only the last window before the newest round."""
    good = sorted((r for r in rounds if r.answer > 0 and r.updated_at > 0), key=lambda r: (r.updated_at, r.round_id))
    if window_s is not None and good:
        start = good[-1].updated_at - window_s
        good = [r for r in good if r.updated_at >= start]
    t = np.array([r.updated_at for r in good], dtype=np.float64)
    p = np.array([r.price for r in good], dtype=np.float64)
    if t.size:
        keep = np.append(t[1:] != t[:-1], True)
        t, p = t[keep], p[keep]
    return t, p


def coverage(rounds: Sequence[Round], now: int) -> tuple[int, float]:
    """How much usable history `rounds` hold at time `now`: the number of valid rounds at distinct times, and the
    seconds the oldest of them reaches back from `now` (0 without any)."""
    t, _ = _usable(rounds, None)
    return int(t.size), float(now - t[0]) if t.size else 0.0


def returns(rounds: Sequence[Round], window_s: float | None = None) -> Returns:
    """Log returns between consecutive valid rounds, oldest first; rounds with a non-positive answer are skipped, and
    rounds sharing a timestamp collapse to the last one. `window_s` keeps the last window before the newest round."""
    t, p = _usable(rounds, window_s)
    if t.size < 3:
        raise VolatilityError(f"need at least 3 rounds at distinct times, have {t.size}")
    return Returns(np.diff(np.log(p)), np.diff(t))


def realized_vol(r: Returns) -> float:
    """Annualised realised volatility: sqrt(Σ r² / Σ dt · seconds per year)."""
    return math.sqrt(float(np.sum(r.log_return**2)) / r.span_s * SECONDS_PER_YEAR)


def ewma_vol(r: Returns, lam: float = RISKMETRICS_LAMBDA) -> float:
    """Annualised EWMA volatility with time-scaled decay, seeded with the realised rate of the first day of history
    (or the first tenth of it, whichever is shorter)."""
    if not 0 < lam < 1:
        raise VolatilityError("EWMA lambda must be in (0, 1)")
    rate = r.log_return**2 / r.dt_s
    warm = max(2, int(np.searchsorted(np.cumsum(r.dt_s), min(DAY_S, r.span_s / 10))) + 1)
    v = float(np.sum(r.log_return[:warm] ** 2) / np.sum(r.dt_s[:warm]))
    weights = lam ** (r.dt_s / DAY_S)
    for w, x in zip(weights[warm:], rate[warm:], strict=True):
        v = w * v + (1 - w) * x
    return math.sqrt(v * SECONDS_PER_YEAR)


def split_jumps(r: Returns, k: float = 4.0, max_iter: int = 20) -> tuple[float, npt.NDArray[np.bool_]]:
    """Diffusion σ (annualised) and the mask of returns counted as jumps: |r| > k·σ·√dt, iterated to a fixed point."""
    jumps = np.zeros(r.log_return.size, dtype=np.bool_)
    sigma = 0.0
    for _ in range(max_iter):
        keep = ~jumps
        span = float(r.dt_s[keep].sum())
        sigma = math.sqrt(float(np.sum(r.log_return[keep] ** 2)) / span * SECONDS_PER_YEAR) if span else 0.0
        limit = k * sigma * np.sqrt(r.dt_s / SECONDS_PER_YEAR)
        new = np.abs(r.log_return) > limit
        if np.array_equal(new, jumps):
            break
        jumps = new
    return sigma, jumps


def estimate(rounds: Sequence[Round], window_s: float | None = None, lam: float = RISKMETRICS_LAMBDA) -> Estimate:
    r = returns(rounds, window_s)
    sigma, jumps = split_jumps(r)
    sizes = r.log_return[jumps]
    years = r.span_s / SECONDS_PER_YEAR
    return Estimate(
        rounds=int(r.log_return.size + 1),
        span_s=r.span_s,
        realized=realized_vol(r),
        ewma=ewma_vol(r, lam),
        sigma=sigma,
        jump_intensity=float(sizes.size / years) if years else 0.0,
        jump_mean=float(sizes.mean()) if sizes.size else 0.0,
        jump_vol=float(sizes.std()) if sizes.size > 1 else 0.0,
    )


# ---------------------------------------------------------------------------------------------- reading a feed


class _Calls:
    """Raw `eth_call`s pinned to one block, sent as JSON-RPC batch requests of at most `batch` calls (a single call
    as a plain request). A node that refuses a batch as a whole gets it again in halves, and smaller batches from
    then on. Counts the requests and the calls for the benchmark."""

    def __init__(self, w3: Web3, block: int | str, batch: int) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._provider: Any = w3.provider
        self._block = hex(block) if isinstance(block, int) else block
        self.batch = batch
        self.requests = 0
        self.calls = 0

    def __call__(self, calls: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        """Each call's return data, or None when it reverts or returns nothing (no code, no such function)."""
        out: list[bytes | None] = []
        start = 0
        while start < len(calls):
            part = calls[start : start + self.batch]
            out += self._send(part)
            start += len(part)
        return out

    def _send(self, part: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        payload = [("eth_call", [{"to": to, "data": "0x" + data.hex()}, self._block]) for to, data in part]
        self.requests += 1
        self.calls += len(part)
        try:
            if len(payload) == 1:
                answers: Any = [self._provider.make_request(*payload[0])]
            else:
                answers = self._provider.make_batch_request(payload)
        except (requests.RequestException, OSError, Web3Exception) as exc:
            raise FeedError(f"the node failed to answer {len(part)} eth_call(s): {exc}", reason="rpc") from exc
        if not isinstance(answers, list):  # one error object for the whole batch: too large, or batches refused
            if len(part) == 1:
                raise FeedError(f"the node refused an eth_call: {_error_text(answers)}", reason="rpc")
            half = len(part) // 2
            self.batch = min(self.batch, half)
            return self._send(part[:half]) + self._send(part[half:])
        if len(answers) != len(part):
            raise FeedError(f"the node answered {len(answers)} of {len(part)} batched eth_calls", reason="rpc")
        return [self._result(a) for a in answers]

    @staticmethod
    def _result(answer: Any) -> bytes | None:
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is not None:
            if _is_revert(error):
                return None
            raise FeedError(f"the node refused an eth_call: {_error_text(answer)}", reason="rpc")
        data = bytes(HexBytes(answer.get("result") or "0x"))
        return data or None


def _is_revert(error: Any) -> bool:
    """A JSON-RPC error that says the call reverted (code 3 with revert data, or geth's "execution reverted")."""
    if not isinstance(error, dict):
        return False
    return error.get("code") == 3 or "revert" in str(error.get("message", "")).lower()


def _error_text(answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return f"{error.get('message', 'error')} (code {error.get('code')})"
    return str(answer)[:200]


@dataclass
class History:
    """A feed's rounds as read back from `latestRoundData`, and how the walk went."""

    feed: str
    rounds: list[Round] = field(default_factory=list)  # oldest first
    phases: list[int] = field(default_factory=list)  # proxy phases read, newest first; [0]: not a proxy
    end: str = ""  # why the walk stopped
    requests: int = 0  # JSON-RPC requests (a batch counts once)
    calls: int = 0  # eth_calls


def _decode_round(data: bytes | None, decimals: int) -> Round | None:
    if data is None:
        return None
    try:
        rid, answer, _started, updated, _answered = decode(_ROUND_TYPES, data)
    except DecodingError:
        return None
    return Round(int(rid), int(answer), int(updated), decimals)


def _decode_uint(data: bytes | None, kind: str) -> int | None:
    if data is None:
        return None
    try:
        return int(decode([kind], data)[0])
    except DecodingError:
        return None


def _decode_address(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        address = str(decode(["address"], data)[0])
    except DecodingError:
        return None
    return None if int(address, 16) == 0 else to_checksum_address(address)


def read_history(
    w3: Web3, feed: str, max_rounds: int, since: int = 0, block: int | str = "latest", batch: int = BATCH
) -> History:
    """Walk `feed` back from its latest round with `getRoundData`, `batch` rounds per JSON-RPC request, until
    `max_rounds` rounds, a round older than `since`, or the first round of the feed. At the first round of a proxy
    phase the walk goes on in the phase before: `phaseAggregators(phase - 1)` gives that phase's aggregator, whose
    `latestRoundData` and `decimals` give where its rounds end and their scale; the proxy serves them by id
    (`phase << 64 | n`). Rounds an old aggregator reported after the newer phase began are left out. A missing round
    ends the walk. Every call is pinned to `block`. FeedError when the feed's latest round or decimals cannot be read.
    """
    if max_rounds < 1:
        raise ValueError("max_rounds must be at least 1")
    feed = to_checksum_address(feed)
    call = _Calls(w3, block, batch)
    latest_raw, decimals_raw = call([(feed, _LATEST_ROUND_DATA), (feed, _DECIMALS)])
    decimals = _decode_uint(decimals_raw, "uint8")
    latest = _decode_round(latest_raw, decimals or 0)
    if latest is None:
        raise FeedError(
            f"feed {feed}: latestRoundData reverts or returns nothing (a feed before its first round, or not a "
            "Chainlink feed at this address)"
        )
    if decimals is None:
        raise FeedError(f"feed {feed}: decimals() reverts or returns nothing (not a Chainlink feed at this address)")
    history = History(feed, [latest])
    phase = latest.round_id >> PHASE_OFFSET
    history.phases.append(phase)
    top = (latest.round_id & AGGREGATOR_ROUND_MASK) - 1
    end = _walk_phase(call, history, phase, top, decimals, since, None, max_rounds)
    while end == "phase start" and phase > 1:
        phase -= 1
        (aggregator_raw,) = call([(feed, _PHASE_AGGREGATORS + encode(["uint16"], [phase]))])
        aggregator = _decode_address(aggregator_raw)
        if aggregator is None:
            end = f"phase {phase} is not readable (the feed has no phaseAggregators)"
            break
        last_raw, phase_decimals_raw = call([(aggregator, _LATEST_ROUND_DATA), (aggregator, _DECIMALS)])
        phase_decimals = _decode_uint(phase_decimals_raw, "uint8")
        last = _decode_round(last_raw, 0)
        history.phases.append(phase)
        if last is None or phase_decimals is None:
            continue  # an aggregator that never answered: nothing to read in this phase
        top = last.round_id & AGGREGATOR_ROUND_MASK
        cutoff = history.rounds[-1].updated_at
        end = _walk_phase(call, history, phase, top, phase_decimals, since, cutoff, max_rounds)
    history.end = "the feed's first round" if end == "phase start" else end
    history.rounds.reverse()
    history.requests, history.calls = call.requests, call.calls
    return history


def _walk_phase(
    call: _Calls,
    history: History,
    phase: int,
    top: int,
    decimals: int,
    since: int,
    cutoff: int | None,
    max_rounds: int,
) -> str:
    """Append the rounds of `phase` from aggregator round `top` down to 1 (newest first) to `history`; returns why
    it stopped. Rounds updated after `cutoff` (an old aggregator still answering after the switch) are skipped."""
    n = top
    while n >= 1:
        wanted = max_rounds - len(history.rounds)
        size = min(call.batch, n, wanted) if cutoff is None else min(call.batch, n)
        ids = [(phase << PHASE_OFFSET) | (n - i) for i in range(size)]
        answers = call([(history.feed, _GET_ROUND_DATA + encode(["uint80"], [rid])) for rid in ids])
        for rid, answer in zip(ids, answers, strict=True):
            r = _decode_round(answer, decimals)
            if r is None or r.updated_at == 0:
                return f"a missing round (id {rid}, round {rid & AGGREGATOR_ROUND_MASK} of phase {phase})"
            if r.updated_at < since:
                return "the window start"
            if cutoff is not None and r.updated_at > cutoff:
                continue
            history.rounds.append(r)
            if len(history.rounds) >= max_rounds:
                return f"the max-rounds limit ({max_rounds})"
        n -= size
    return "phase start"
