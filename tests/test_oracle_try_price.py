"""OracleRouter.tryPrice: for every way `price` can fail it answers (false, 0) exactly where `price` reverts, the same
price where `price` succeeds, and it never answers "no price" because its caller forwarded too little gas (it reverts
instead), checked with eth_calls at every gas limit and with real transactions from a contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import MAX_UINT, WAD
from eth_abi import decode as abi_decode
from test_oracle_router import UNLISTED, WETH_STALENESS, error_data, head_time, revert_data
from web3.exceptions import ContractLogicError as Web3ContractLogicError

SECONDARY_STALENESS = 600
SECONDARY_DEVIATION = 2 * WAD // 100
# Gas a greedy share's convertToAssets burns: within the router's 100,000 budget, but far more than the 1/64 of it
# that a starved caller would be left with.
GREEDY_SHARE_GAS = 85_000


# ------------------------------------------------------------------------------------------------ helpers


def feed_code(answer: int, returned: int, decimals: int | None = 8) -> bytes:
    """Runtime code of a minimal feed: `decimals()` answers `decimals` (reverts when None); any other call answers
    a round (1, answer, now, now, 0) but returns only its first `returned` bytes (160 is a full
    `latestRoundData`)."""
    push32, mstore, timestamp = b"\x7f", b"\x52", b"\x42"
    body = b"".join(
        [
            b"\x60\x01\x60\x00" + mstore,  # mstore(0x00, 1): roundId
            push32 + answer.to_bytes(32, "big") + b"\x60\x20" + mstore,  # mstore(0x20, answer)
            timestamp + b"\x60\x40" + mstore,  # startedAt = now
            timestamp + b"\x60\x60" + mstore,  # updatedAt = now
            bytes([0x60, returned, 0x60, 0x00, 0xF3]),  # return(0, returned)
        ]
    )
    head_len = 15  # the selector test below
    dec_at = head_len + len(body)
    head = b"".join(
        [
            b"\x60\x00\x35\x60\xe0\x1c",  # shr(224, calldataload(0)): the selector
            b"\x63\x31\x3c\xe5\x67\x14",  # == decimals()
            bytes([0x60, dec_at, 0x57]),  # jumpi(dec_at)
        ]
    )
    return_decimals = bytes([0x60, decimals or 0]) + b"\x60\x00" + mstore + b"\x60\x20\x60\x00\xf3"
    tail = b"\x5b" + (REVERT_CODE if decimals is None else return_decimals)
    code = head + body + tail
    assert len(head) == head_len
    assert code[dec_at] == 0x5B
    return code


REVERT_CODE = bytes.fromhex("60006000fd")  # revert(0, 0)
EMPTY_ANSWER_CODE = bytes.fromhex("00")  # stop: succeeds with no return data


def eth_call(chain: Any, contract: Any, method: str, *args: Any, gas: int | None = None) -> tuple[bool, bytes]:
    """(True, return data) or (False, revert data) of one eth_call."""
    tx: dict[str, Any] = {"to": contract.address, "data": getattr(contract, method).encode_input(*args)}
    if gas is not None:
        tx["gas"] = gas
    try:
        return True, bytes(chain.provider.web3.eth.call(tx))
    except Web3ContractLogicError as exc:
        return False, revert_data(exc)


def try_price(chain: Any, router: Any, asset: str) -> tuple[bool, int]:
    ok, data = eth_call(chain, router, "tryPrice", asset)
    assert ok, f"tryPrice reverted with 0x{data.hex()}"
    answer, value = abi_decode(["bool", "uint256"], data)
    return bool(answer), int(value)


# ------------------------------------------------------------------------------------------------ failure kinds


@dataclass
class Ctx:
    system: Any
    admin: Any
    alice: Any
    chain: Any
    project: Any

    @property
    def router(self) -> Any:
        return self.system.router

    @property
    def weth(self) -> str:
        return str(self.system.weth.address)

    @property
    def feed(self) -> Any:
        return self.system.feeds["WETH"]

    def secondary(self, answer: int = 2000 * WAD) -> Any:
        """An 18-decimal secondary WETH feed (10-minute staleness, 2 % deviation)."""
        feed = self.admin.deploy(self.project.MockAggregator, 18, answer, "WETH / USD (2nd)")
        self.router.setSecondaryFeed(self.weth, feed, SECONDARY_STALENESS, SECONDARY_DEVIATION, sender=self.admin)
        return feed

    def share(self, donation: int = 0) -> Any:
        """An ERC-4626 share over WETH (10 WETH deposited, then `donation` wei sent to it), set with a 15 % cap."""
        vault = self.admin.deploy(self.project.MockERC4626, self.system.weth, "Staked WETH", "sWETH")
        self.system.weth.mint(self.alice, 10 * WAD + donation, sender=self.alice)
        self.system.weth.approve(vault, MAX_UINT, sender=self.alice)
        vault.deposit(10 * WAD, self.alice, sender=self.alice)
        if donation:
            self.system.weth.transfer(vault, donation, sender=self.alice)
        self.router.setShareAsset(vault, self.system.weth, 15 * WAD // 100, sender=self.admin)
        return vault

    def err(self, name: str, *args: Any) -> bytes:
        return error_data(getattr(self.router, name), *args)


def _stale(c: Ctx) -> tuple[str, bytes]:
    updated = head_time(c.chain)
    c.feed.setAnswerAt(2000 * 10**8, updated, updated, sender=c.admin)
    c.chain.mine(timestamp=updated + WETH_STALENESS + 1)
    return c.weth, c.err("StalePrice", c.weth, updated, WETH_STALENESS)


def _zero_update_time(c: Ctx) -> tuple[str, bytes]:
    c.feed.setAnswerAt(2000 * 10**8, 0, 0, sender=c.admin)
    return c.weth, c.err("InvalidUpdateTime", c.weth, 0)


def _future(c: Ctx) -> tuple[str, bytes]:
    future = c.chain.pending_timestamp + 1000
    c.feed.setAnswerAt(2000 * 10**8, future, future, sender=c.admin)
    return c.weth, c.err("InvalidUpdateTime", c.weth, future)


def _fault(c: Ctx, method: str, *args: Any) -> tuple[str, bytes]:
    getattr(c.feed, method)(*args, sender=c.admin)
    return c.weth, c.err("FeedCallFailed", c.weth, c.feed.address)


def _code(c: Ctx, code: bytes) -> tuple[str, bytes]:
    c.chain.provider.set_code(c.feed.address, code)
    return c.weth, c.err("FeedCallFailed", c.weth, c.feed.address)


def _decimals_above_18(c: Ctx) -> tuple[str, bytes]:
    c.chain.provider.set_code(c.feed.address, feed_code(2000 * 10**19, 160, decimals=19))
    return c.weth, c.err("UnsupportedFeedDecimals", c.weth, c.feed.address, 19)


def _answer_too_large_to_scale(c: Ctx) -> tuple[str, bytes]:
    c.chain.provider.set_code(c.feed.address, feed_code(2**255 - 1, 160))  # times 10**10 overflows
    return c.weth, c.err("PriceOutOfBounds", c.weth, 2**256 - 1)


def _secondary_too_large_to_compare(c: Ctx, huge: int = 2**250) -> tuple[str, bytes]:
    """An 18-decimal secondary answer that scales as is but whose gap to the primary, times 1e18, overflows."""
    feed = c.secondary()
    c.chain.provider.set_code(feed.address, feed_code(huge, 160, decimals=18))
    return c.weth, c.err("PriceDeviationTooHigh", c.weth, 2000 * WAD, huge)


def _answer(c: Ctx, answer: int) -> tuple[str, bytes]:
    c.feed.setAnswer(answer, sender=c.admin)
    if answer <= 0:
        return c.weth, c.err("NonPositivePrice", c.weth, answer)
    return c.weth, c.err("PriceOutOfBounds", c.weth, answer * 10**10)


def _secondary_answer(c: Ctx, answer: int) -> tuple[str, bytes]:
    c.secondary(answer)
    if answer <= 0:
        return c.weth, c.err("NonPositivePrice", c.weth, answer)
    return c.weth, c.err("PriceDeviationTooHigh", c.weth, 2000 * WAD, answer)


def _secondary_stale(c: Ctx) -> tuple[str, bytes]:
    feed = c.secondary()
    updated = head_time(c.chain)
    feed.setAnswerAt(2000 * WAD, updated, updated, sender=c.admin)
    c.chain.pending_timestamp = updated + SECONDARY_STALENESS + 1
    c.system.set_price("WETH", 2000)  # the primary stays fresh
    return c.weth, c.err("StalePrice", c.weth, updated, SECONDARY_STALENESS)


def _secondary_code(c: Ctx, code: bytes) -> tuple[str, bytes]:
    feed = c.secondary()
    c.chain.provider.set_code(feed.address, code)
    return c.weth, c.err("FeedCallFailed", c.weth, feed.address)


def _share_underlying_stale(c: Ctx) -> tuple[str, bytes]:
    share = c.share()
    _, expected = _stale(c)
    return str(share.address), expected


def _share_code(c: Ctx, code: bytes) -> tuple[str, bytes]:
    share = c.share()
    c.chain.provider.set_code(share.address, code)
    return str(share.address), c.err("FeedCallFailed", share.address, share.address)


def _share_gas_bomb(c: Ctx) -> tuple[str, bytes]:
    share = c.share()
    share.setConvertGas(200_000, sender=c.admin)  # twice the router's budget
    return str(share.address), c.err("FeedCallFailed", share.address, share.address)


FAILURES: dict[str, Callable[[Ctx], tuple[str, bytes]]] = {
    "not_configured": lambda c: (UNLISTED, c.err("AssetNotConfigured", UNLISTED)),
    "reverting": lambda c: _fault(c, "setReverting", True),
    "gas_bomb": lambda c: _fault(c, "setGasBomb", True),
    "no_code": lambda c: _code(c, b""),
    "short_answer": lambda c: _code(c, feed_code(2000 * 10**8, 128)),
    "decimals_unreadable": lambda c: _code(c, feed_code(2000 * 10**8, 160, decimals=None)),
    "decimals_above_18": _decimals_above_18,
    "answer_too_large_to_scale": _answer_too_large_to_scale,
    "secondary_too_large_to_compare": _secondary_too_large_to_compare,
    # the largest gap whose product with 1e18 fits, so that only adding the primary (rounding up) would overflow
    "secondary_at_the_overflow_edge": lambda c: _secondary_too_large_to_compare(c, 2000 * WAD + (2**256 - 1) // WAD),
    "zero": lambda c: _answer(c, 0),
    "negative": lambda c: _answer(c, -1),
    "zero_update_time": _zero_update_time,
    "future_update_time": _future,
    "stale": _stale,
    "at_min_bound": lambda c: _answer(c, 1 * 10**8),
    "above_max_bound": lambda c: _answer(c, 2_000_000 * 10**8),
    "secondary_disagrees": lambda c: _secondary_answer(c, 2041 * WAD),
    "secondary_non_positive": lambda c: _secondary_answer(c, -5),
    "secondary_stale": _secondary_stale,
    "secondary_reverting": lambda c: _secondary_code(c, REVERT_CODE),
    "secondary_short_answer": lambda c: _secondary_code(c, feed_code(2000 * 10**18, 96, decimals=18)),
    "share_underlying_stale": _share_underlying_stale,
    "share_rate_reverting": lambda c: _share_code(c, REVERT_CODE),
    "share_rate_empty": lambda c: _share_code(c, EMPTY_ANSWER_CODE),
    "share_rate_gas_bomb": _share_gas_bomb,
}


def _oz_rate(total_assets: int, total_supply: int) -> int:
    """OpenZeppelin ERC-4626 convertToAssets(1e18) with no decimals offset, rounded down."""
    return WAD * (total_assets + 1) // (total_supply + 1)


def _share_ok(c: Ctx) -> tuple[str, int]:
    donation = 333_333_333_333_333_337
    share = c.share(donation)
    return str(share.address), 2000 * WAD * _oz_rate(10 * WAD + donation, 10 * WAD) // WAD


def _full_answer_code(c: Ctx) -> tuple[str, int]:
    c.chain.provider.set_code(c.feed.address, feed_code(1234 * 10**8 + 5, 160))
    return c.weth, (1234 * 10**8 + 5) * 10**10


def _secondary_agrees(c: Ctx) -> tuple[str, int]:
    c.secondary(2040 * WAD)  # exactly +2 %
    return c.weth, 2000 * WAD


SUCCESSES: dict[str, Callable[[Ctx], tuple[str, int]]] = {
    "plain_8_decimals": lambda c: (c.weth, 2000 * WAD),
    "plain_18_decimals": lambda c: (str(c.system.link.address), 15 * WAD),
    "full_answer_code": _full_answer_code,
    "secondary_agrees": _secondary_agrees,
    "share": _share_ok,
}


@pytest.fixture
def ctx(system: Any, admin: Any, alice: Any, chain: Any, project: Any) -> Ctx:
    return Ctx(system, admin, alice, chain, project)


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_try_price_is_false_exactly_where_price_reverts(ctx: Ctx, kind: str) -> None:
    """For each failure kind, at the same chain state: `price` reverts with the kind's exact typed error and
    `tryPrice` returns (false, 0)."""
    asset, expected = FAILURES[kind](ctx)
    assert eth_call(ctx.chain, ctx.router, "price", asset) == (False, expected)
    assert try_price(ctx.chain, ctx.router, asset) == (False, 0)


@pytest.mark.parametrize("kind", sorted(SUCCESSES))
def test_try_price_matches_price_where_it_succeeds(ctx: Ctx, kind: str) -> None:
    """Where `price` succeeds, `tryPrice` returns (true, the same price), and both equal the closed form."""
    asset, expected = SUCCESSES[kind](ctx)
    assert ctx.router.price(asset) == expected
    assert try_price(ctx.chain, ctx.router, asset) == (True, expected)


# ------------------------------------------------------------------------------------------------ gas


@pytest.fixture
def caller(admin: Any, project: Any) -> Any:
    return admin.deploy(project.OracleCaller)


def sweep(chain: Any, router: Any, caller: Any, asset: str, limits: range) -> dict[int, tuple[bool, bytes]]:
    """The outcome of `caller.tryPriceWithGas(router, asset, g)` for every g: (True, (ok, price) encoded) or
    (False, revert data)."""
    return {g: eth_call(chain, caller, "tryPriceWithGas", router.address, asset, g, gas=2_000_000) for g in limits}


def check_sweep(router: Any, outcomes: dict[int, tuple[bool, bytes]], answer: tuple[bool, int]) -> int:
    """Every outcome is either `answer` or a revert for lack of gas (InsufficientGasForOracle, or an out-of-gas
    with no data), all reverts lie below all answers, and both kinds occur. Returns the least gas that answers."""
    insufficient = error_data(router.InsufficientGasForOracle, 0)[:4]
    encoded = (True, b"".join(int(v).to_bytes(32, "big") for v in answer))
    answered, starved = [], []
    for gas, outcome in sorted(outcomes.items()):
        if outcome[0]:
            assert outcome == encoded, f"forwarding {gas} gas answered 0x{outcome[1].hex()}, expected {answer}"
            answered.append(gas)
        else:
            data = outcome[1]
            assert data == b"" or (data[:4] == insufficient and len(data) == 36), (gas, data.hex())
            starved.append(gas)
    assert starved, "no gas limit was low enough to starve the call: widen the sweep"
    assert answered, "no gas limit was high enough to answer: widen the sweep"
    assert max(starved) < min(answered)
    return min(answered)


def test_gas_starved_try_price_reverts_and_never_says_no_price(ctx: Ctx, caller: Any) -> None:
    """A contract forwarding g gas to tryPrice gets (true, price) or a revert at every g for a healthy feed, and
    (false, 0) or a revert for a gas-burning feed, switching at the same g: the guard runs before the feed call, so
    how much gas a caller forwards never decides whether a price is available."""
    limits = range(100_000, 160_000, 250)
    healthy = check_sweep(ctx.router, sweep(ctx.chain, ctx.router, caller, ctx.weth, limits), (True, 2000 * WAD))
    ctx.feed.setGasBomb(True, sender=ctx.admin)
    broken = check_sweep(ctx.router, sweep(ctx.chain, ctx.router, caller, ctx.weth, limits), (False, 0))
    assert healthy == broken


def test_gas_starved_share_rate_reverts_and_never_says_no_price(ctx: Ctx, caller: Any) -> None:
    """A share whose convertToAssets needs ~95k gas (within the 100k budget): a caller forwarding too little gas for
    the full budget gets a revert, never (false, 0), at every limit; with enough it gets the price."""
    share = ctx.share()
    share.setConvertGas(GREEDY_SHARE_GAS, sender=ctx.admin)
    expected = 2000 * WAD * share.convertToAssets(WAD) // WAD
    limits = range(100_000, 360_000, 500)
    check_sweep(ctx.router, sweep(ctx.chain, ctx.router, caller, share.address, limits), (True, expected))


def test_real_transactions_at_the_gas_cut_over(ctx: Ctx, caller: Any) -> None:
    """Real transactions from a contract forwarding a fixed gas amount: one unit below the cut-over the transaction
    reverts InsufficientGasForOracle for a healthy and a broken feed alike; at the cut-over it records (true, price)
    for the healthy feed and (false, 0) for the broken one."""
    limits = range(100_000, 160_000, 250)
    cut = check_sweep(ctx.router, sweep(ctx.chain, ctx.router, caller, ctx.weth, limits), (True, 2000 * WAD))
    w3 = ctx.chain.provider.web3
    insufficient = error_data(ctx.router.InsufficientGasForOracle, 0)[:4]

    def send(gas: int) -> Any:
        data = caller.tryPriceWithGas.encode_input(ctx.router.address, ctx.weth, gas)
        tx = {"from": ctx.alice.address, "to": caller.address, "data": data, "gas": 1_000_000}
        return w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx))

    lowest = cut
    while True:  # the exact cut-over: the sweep's step is 250 gas
        ok, _ = eth_call(ctx.chain, caller, "tryPriceWithGas", ctx.router.address, ctx.weth, lowest - 1)
        if not ok:
            break
        lowest -= 1

    for broken, answer in ((False, (True, 2000 * WAD)), (True, (False, 0))):
        if broken:
            ctx.feed.setGasBomb(True, sender=ctx.admin)
        before = (caller.lastOk(), caller.lastPrice())
        assert send(lowest - 1)["status"] == 0
        assert (caller.lastOk(), caller.lastPrice()) == before  # the starved transaction recorded nothing
        ok, data = eth_call(ctx.chain, caller, "tryPriceWithGas", ctx.router.address, ctx.weth, lowest - 1)
        assert not ok
        assert data[:4] == insufficient
        fed = send(lowest)
        assert fed["status"] == 1
        logs = caller.Priced.from_receipt(ctx.chain.provider.get_receipt(fed["transactionHash"].hex()))
        assert [(log.ok, log.price) for log in logs] == [answer]
        assert (caller.lastOk(), caller.lastPrice()) == answer
