"""OracleRouter: every price guard with its exact typed error, the gas guard, secondary feeds, the sequencer gate
(also through the engine), ERC-4626 share pricing with its growth cap, access control and events."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from ape.exceptions import ContractLogicError, CustomError
from conftest import MAX_UINT, WAD, fund, open_position
from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3.exceptions import ContractLogicError as Web3ContractLogicError

ZERO = "0x" + "00" * 20
ADMIN_ROLE = b"\x00" * 32
YEAR = 365 * 86400
FEED_CALL_GAS = 100_000
WETH_STALENESS = 3600  # conftest TEST_CONFIG
UNLISTED = "0x00000000000000000000000000000000C0FFEE01"

_ANVIL_CUSTOM = re.compile(r"custom error 0x([0-9a-fA-F]{8}):?\s*([0-9a-fA-F]*)")
_HEX = re.compile(r"0x([0-9a-fA-F]*)")


# ------------------------------------------------------------------------------------------------ helpers


def error_data(error: Any, *args: Any) -> bytes:
    """The exact revert data of custom error `error` (an ape error class, e.g. `router.StalePrice`) with `args`."""
    abi = error.abi
    return keccak(text=abi.selector)[:4] + abi_encode([i.canonical_type for i in abi.inputs], list(args))


def revert_data(exc: BaseException) -> bytes:
    """The raw revert data behind an ape or web3 revert, however the provider reported it.

    Ape decodes only the called contract's own errors, and only on transactions; errors bubbling up from another
    contract arrive as hex, so every form is normalised to bytes before comparing. View calls go through `view`
    (web3), because ape turns the revert data of an argument-less error into text.
    """
    for source in (exc, getattr(exc, "base_err", None)):
        data = getattr(source, "data", None)
        if isinstance(data, str) and (m := _HEX.fullmatch(data)):
            return bytes.fromhex(m[1])
    if isinstance(exc, CustomError):
        types = [i.canonical_type for i in exc.abi.inputs]
        values = [exc.inputs[i.name] for i in exc.abi.inputs]
        return keccak(text=exc.abi.selector)[:4] + abi_encode(types, values)
    message = str(getattr(exc, "revert_message", "") or "").strip()
    if m := _ANVIL_CUSTOM.fullmatch(message):
        return bytes.fromhex(m[1] + m[2])
    if m := _HEX.fullmatch(message):
        return bytes.fromhex(m[1])
    raise AssertionError(f"no revert data in {exc!r}")


@contextmanager
def reverts_with(expected: bytes) -> Iterator[None]:
    """Assert the block reverts with exactly `expected` as revert data (selector and every argument)."""
    try:
        yield
    except (ContractLogicError, Web3ContractLogicError) as exc:
        actual = revert_data(exc)
        assert actual == expected, f"reverted with 0x{actual.hex()}, expected 0x{expected.hex()}"
        return
    raise AssertionError("did not revert")


def view(chain: Any, contract: Any, method: str, *args: Any, gas: int | None = None) -> bytes:
    """eth_call `contract.method(*args)` through web3 (optionally with a gas limit); returns the raw output. On a
    revert web3 raises a ContractLogicError subclass whose `data` is the exact revert data."""
    tx: dict[str, Any] = {"to": contract.address, "data": getattr(contract, method).encode_input(*args)}
    if gas is not None:
        tx["gas"] = gas
    return bytes(chain.provider.web3.eth.call(tx))


def call_with_gas(chain: Any, contract: Any, method: str, args: list[Any], gas: int) -> tuple[bool, bytes]:
    """(True, return data) or (False, revert data) of an eth_call with an explicit gas limit.

    Ape's view calls do not forward a `gas=` argument, hence web3.
    """
    try:
        return True, view(chain, contract, method, *args, gas=gas)
    except Web3ContractLogicError as exc:
        return False, revert_data(exc)


def head_time(chain: Any) -> int:
    return int(chain.blocks.head.timestamp)


# ------------------------------------------------------------------------------------------------ scaling


def test_prices_of_deployed_feeds_are_scaled_to_wad(system: Any) -> None:
    """8-decimal feeds (WETH, WBTC, USDC) and an 18-decimal feed (LINK) all come back as WAD USD per token."""
    r = system.router
    assert r.price(system.weth) == 2000 * WAD
    assert r.price(system.wbtc) == 60_000 * WAD
    assert r.price(system.link) == 15 * WAD
    assert r.price(system.usdc) == WAD
    assert r.feedConfig(system.weth).feedDecimals == 8
    assert r.feedConfig(system.link).feedDecimals == 18


def test_non_round_answers_scale_exactly(system: Any, admin: Any) -> None:
    """Scaling multiplies by 10**(18 - feedDecimals) with no loss: every digit of the answer survives."""
    system.feeds["WETH"].setAnswer(123_456_789_012, sender=admin)  # 1234.56789012 with 8 decimals
    system.feeds["LINK"].setAnswer(15_123_456_789_012_345_678, sender=admin)
    assert system.router.price(system.weth) == 123_456_789_012 * 10**10
    assert system.router.price(system.link) == 15_123_456_789_012_345_678


@pytest.mark.parametrize(("decimals", "answer", "expected"), [(0, 7, 7 * WAD), (6, 1_234_567, 1_234_567 * 10**12)])
def test_other_feed_decimals_scale_to_wad(
    system: Any, admin: Any, project: Any, decimals: int, answer: int, expected: int
) -> None:
    """A 0-decimal and a 6-decimal feed set on a fresh asset are read, stored and scaled to WAD."""
    feed = admin.deploy(project.MockAggregator, decimals, answer, "X / USD")
    system.router.setFeed(UNLISTED, feed, 600, 1, 10**30, sender=admin)
    assert system.router.feedConfig(UNLISTED).feedDecimals == decimals
    assert system.router.price(UNLISTED) == expected


# ------------------------------------------------------------------------------------------------ answer guards


@pytest.mark.parametrize("answer", [0, -1, -2000 * 10**8])
def test_non_positive_answer_is_refused(system: Any, chain: Any, admin: Any, answer: int) -> None:
    """A zero or negative answer reverts NonPositivePrice(asset, answer)."""
    system.feeds["WETH"].setAnswer(answer, sender=admin)
    with reverts_with(error_data(system.router.NonPositivePrice, system.weth.address, answer)):
        view(chain, system.router, "price", system.weth)


def test_staleness_limit_is_inclusive(system: Any, admin: Any, chain: Any) -> None:
    """An answer exactly maxStaleness old is valid; one second older reverts StalePrice(asset, updatedAt, max)."""
    updated = head_time(chain)
    system.feeds["WETH"].setAnswerAt(2100 * 10**8, updated, updated, sender=admin)
    chain.mine(timestamp=updated + WETH_STALENESS)
    assert head_time(chain) == updated + WETH_STALENESS
    assert system.router.price(system.weth) == 2100 * WAD
    chain.mine(timestamp=updated + WETH_STALENESS + 1)
    with reverts_with(error_data(system.router.StalePrice, system.weth.address, updated, WETH_STALENESS)):
        view(chain, system.router, "price", system.weth)


def test_zero_update_time_is_refused(system: Any, chain: Any, admin: Any) -> None:
    """A round with updatedAt == 0 (never completed) reverts InvalidUpdateTime(asset, 0)."""
    system.feeds["WETH"].setAnswerAt(2000 * 10**8, 0, 0, sender=admin)
    with reverts_with(error_data(system.router.InvalidUpdateTime, system.weth.address, 0)):
        view(chain, system.router, "price", system.weth)


def test_future_update_time_is_refused(system: Any, admin: Any, chain: Any) -> None:
    """A round stamped after the current block reverts InvalidUpdateTime(asset, updatedAt)."""
    future = chain.pending_timestamp + 1000
    system.feeds["WETH"].setAnswerAt(2000 * 10**8, future, future, sender=admin)
    assert head_time(chain) < future
    with reverts_with(error_data(system.router.InvalidUpdateTime, system.weth.address, future)):
        view(chain, system.router, "price", system.weth)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (1 * 10**8, False),  # exactly minPrice = $1
        (1 * 10**8 + 1, True),
        (5 * 10**7, False),  # $0.5, below
        (1_000_000 * 10**8, False),  # exactly maxPrice = $1M
        (1_000_000 * 10**8 - 1, True),
        (2_000_000 * 10**8, False),  # above
    ],
)
def test_price_bounds_are_exclusive(system: Any, chain: Any, admin: Any, answer: int, ok: bool) -> None:
    """WETH's bounds ($1, $1M) are exclusive: a price at or beyond either reverts PriceOutOfBounds(asset, price)."""
    system.feeds["WETH"].setAnswer(answer, sender=admin)
    scaled = answer * 10**10
    if ok:
        assert system.router.price(system.weth) == scaled
    else:
        with reverts_with(error_data(system.router.PriceOutOfBounds, system.weth.address, scaled)):
            view(chain, system.router, "price", system.weth)


def test_guards_apply_in_documented_order(system: Any, admin: Any, chain: Any) -> None:
    """Several faults at once report the first guard in the documented order: call, answer > 0, update time,
    staleness, bounds."""
    feed, weth = system.feeds["WETH"], system.weth.address
    feed.setAnswerAt(-5, 0, 0, sender=admin)
    with reverts_with(error_data(system.router.NonPositivePrice, weth, -5)):
        view(chain, system.router, "price", weth)
    feed.setAnswerAt(5 * 10**7, 0, 0, sender=admin)  # below the $1 floor and never updated
    with reverts_with(error_data(system.router.InvalidUpdateTime, weth, 0)):
        view(chain, system.router, "price", weth)
    updated = head_time(chain)
    feed.setAnswerAt(5 * 10**7, updated, updated, sender=admin)
    with reverts_with(error_data(system.router.PriceOutOfBounds, weth, 5 * 10**17)):
        view(chain, system.router, "price", weth)
    chain.mine(timestamp=updated + WETH_STALENESS + 1)
    with reverts_with(error_data(system.router.StalePrice, weth, updated, WETH_STALENESS)):
        view(chain, system.router, "price", weth)
    feed.setReverting(True, sender=admin)
    with reverts_with(error_data(system.router.FeedCallFailed, weth, feed.address)):
        view(chain, system.router, "price", weth)


def test_unconfigured_asset_is_refused(system: Any, chain: Any) -> None:
    """An asset without a feed reverts AssetNotConfigured(asset)."""
    with reverts_with(error_data(system.router.AssetNotConfigured, UNLISTED)):
        view(chain, system.router, "price", UNLISTED)


# ------------------------------------------------------------------------------------------------ feed call failures


def test_reverting_feed_is_refused(system: Any, chain: Any, admin: Any) -> None:
    """A feed whose latestRoundData reverts yields FeedCallFailed(asset, feed), not the feed's own error."""
    feed = system.feeds["WETH"]
    feed.setReverting(True, sender=admin)
    with reverts_with(error_data(system.router.FeedCallFailed, system.weth.address, feed.address)):
        view(chain, system.router, "price", system.weth)


def test_gas_burning_feed_fails_typed_with_plenty_of_gas(system: Any, admin: Any, chain: Any) -> None:
    """A feed that burns all gas costs at most the budget: the router still reverts FeedCallFailed."""
    feed = system.feeds["WETH"]
    feed.setGasBomb(True, sender=admin)
    expected = error_data(system.router.FeedCallFailed, system.weth.address, feed.address)
    with reverts_with(expected):
        view(chain, system.router, "price", system.weth)
    assert call_with_gas(chain, system.router, "price", [system.weth.address], 1_000_000) == (False, expected)
    assert call_with_gas(chain, system.router, "price", [system.weth.address], 20_000_000) == (False, expected)


def test_feed_without_code_is_refused(system: Any, chain: Any) -> None:
    """A feed that returns no data (its code is gone) is malformed: FeedCallFailed, never a zero price."""
    feed = system.feeds["WETH"]
    chain.provider.set_code(feed.address, b"")
    with reverts_with(error_data(system.router.FeedCallFailed, system.weth.address, feed.address)):
        view(chain, system.router, "price", system.weth)


def test_too_little_gas_reverts_insufficient_gas(system: Any, chain: Any) -> None:
    """A caller forwarding ~60k gas gets InsufficientGasForOracle(gasLeft) with gasLeft below the feed budget."""
    ok, data = call_with_gas(chain, system.router, "price", [system.weth.address], 60_000)
    assert not ok
    selector = error_data(system.router.InsufficientGasForOracle, 0)[:4]
    assert data[:4] == selector
    assert len(data) == 36
    gas_left = int.from_bytes(data[4:], "big")
    assert 0 < gas_left < 60_000 - 21_000
    assert gas_left < FEED_CALL_GAS


def test_gas_guard_never_blames_a_healthy_feed(system: Any, admin: Any, chain: Any) -> None:
    """At every gas limit a healthy feed gives its price or InsufficientGasForOracle, never FeedCallFailed; a
    gas-burning feed gives FeedCallFailed or InsufficientGasForOracle, never an out-of-gas, and the cut-over gas
    limit is the same for both (the guard runs before the feed is called)."""
    router, weth = system.router, system.weth.address
    insufficient = error_data(router.InsufficientGasForOracle, 0)[:4]
    price_word = (2000 * WAD).to_bytes(32, "big")
    limits = range(40_000, 220_000, 1_000)

    healthy_short = set()
    for gas in limits:
        ok, data = call_with_gas(chain, router, "price", [weth], gas)
        if ok:
            assert data == price_word, gas
        else:
            assert data[:4] == insufficient, (gas, data.hex())
            healthy_short.add(gas)

    feed = system.feeds["WETH"]
    feed.setGasBomb(True, sender=admin)
    failed = error_data(router.FeedCallFailed, weth, feed.address)
    bomb_short = set()
    for gas in limits:
        ok, data = call_with_gas(chain, router, "price", [weth], gas)
        assert not ok
        if data[:4] == insufficient:
            bomb_short.add(gas)
        else:
            assert data == failed, (gas, data.hex())

    assert healthy_short == bomb_short
    assert 40_000 in healthy_short
    assert 219_000 not in healthy_short


# ------------------------------------------------------------------------------------------------ secondary feed


@pytest.fixture
def secondary(system: Any, admin: Any, project: Any) -> Any:
    """An 18-decimal secondary WETH feed at $2000, 10-minute staleness, 2 % maximum deviation."""
    feed = admin.deploy(project.MockAggregator, 18, 2000 * WAD, "WETH / USD (2nd)")
    system.router.setSecondaryFeed(system.weth, feed, 600, 2 * WAD // 100, sender=admin)
    return feed


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (2040 * WAD, True),  # exactly +2 %
        (2040 * WAD + 1, False),
        (1960 * WAD, True),  # exactly -2 %
        (1960 * WAD - 1, False),
        (2000 * WAD, True),
        (2500 * WAD, False),
    ],
)
def test_secondary_deviation_limit(system: Any, chain: Any, admin: Any, secondary: Any, answer: int, ok: bool) -> None:
    """Prices agreeing within maxDeviation return the primary; beyond it PriceDeviationTooHigh(asset, p, s)."""
    secondary.setAnswer(answer, sender=admin)
    if ok:
        assert system.router.price(system.weth) == 2000 * WAD
    else:
        with reverts_with(error_data(system.router.PriceDeviationTooHigh, system.weth.address, 2000 * WAD, answer)):
            view(chain, system.router, "price", system.weth)


def test_stale_secondary_fails_closed(system: Any, admin: Any, chain: Any, secondary: Any) -> None:
    """A secondary older than its own staleness refuses the price even though the primary is fresh."""
    updated = head_time(chain)
    secondary.setAnswerAt(2000 * WAD, updated, updated, sender=admin)
    chain.pending_timestamp = updated + 601
    system.set_price("WETH", 2000)
    with reverts_with(error_data(system.router.StalePrice, system.weth.address, updated, 600)):
        view(chain, system.router, "price", system.weth)


def test_broken_secondary_fails_closed(system: Any, chain: Any, admin: Any, secondary: Any) -> None:
    """A reverting secondary and a non-positive secondary both refuse the price, with their typed errors."""
    secondary.setAnswer(0, sender=admin)
    with reverts_with(error_data(system.router.NonPositivePrice, system.weth.address, 0)):
        view(chain, system.router, "price", system.weth)
    secondary.setReverting(True, sender=admin)
    with reverts_with(error_data(system.router.FeedCallFailed, system.weth.address, secondary.address)):
        view(chain, system.router, "price", system.weth)


def test_removing_secondary_restores_primary(system: Any, admin: Any, secondary: Any) -> None:
    """setSecondaryFeed(asset, 0, ...) clears the config, emits the removal and prices from the primary alone."""
    secondary.setReverting(True, sender=admin)
    receipt = system.router.setSecondaryFeed(system.weth, ZERO, 0, 0, sender=admin)
    logs = system.router.SecondaryFeedSet.from_receipt(receipt)
    assert [log.event_arguments for log in logs] == [
        {"asset": system.weth.address, "feed": ZERO, "maxStaleness": 0, "maxDeviation": 0}
    ]
    cfg = system.router.secondaryConfig(system.weth)
    assert (cfg.feed, cfg.maxStaleness, cfg.feedDecimals, cfg.maxDeviation) == (ZERO, 0, 0, 0)
    assert system.router.price(system.weth) == 2000 * WAD


def test_secondary_config_and_event(system: Any, admin: Any, project: Any) -> None:
    """setSecondaryFeed stores the feed's decimals and emits SecondaryFeedSet with its arguments."""
    feed = admin.deploy(project.MockAggregator, 6, 2000 * 10**6, "WETH / USD (2nd)")
    receipt = system.router.setSecondaryFeed(system.weth, feed, 900, 3 * WAD // 100, sender=admin)
    logs = system.router.SecondaryFeedSet.from_receipt(receipt)
    assert [log.event_arguments for log in logs] == [
        {"asset": system.weth.address, "feed": feed.address, "maxStaleness": 900, "maxDeviation": 3 * WAD // 100}
    ]
    cfg = system.router.secondaryConfig(system.weth)
    assert (cfg.feed, cfg.maxStaleness, cfg.feedDecimals, cfg.maxDeviation) == (feed.address, 900, 6, 3 * WAD // 100)
    assert system.router.price(system.weth) == 2000 * WAD


# ------------------------------------------------------------------------------------------------ sequencer


@pytest.fixture
def sequencer_mock(system: Any, admin: Any, project: Any, chain: Any) -> Any:
    """A sequencer-uptime feed, up since two hours ago, installed with a one-hour grace period.

    Not named `sequencer`: test_drill.py has a module-scoped fixture of that name, and ape orders a test's fixtures
    by the scopes of every fixture sharing a name, so this one ran before the test's chain snapshot and its
    sequencer setting survived the revert (tests/test_fixture_scopes.py keeps names unique across scopes)."""
    feed = admin.deploy(project.MockAggregator, 0, 0, "L2 Sequencer Uptime")
    since = head_time(chain) - 7200
    feed.setAnswerAt(0, since, since, sender=admin)
    system.router.setSequencerFeed(feed, 3600, sender=admin)
    return feed


def test_no_sequencer_feed_never_gates(system: Any) -> None:
    """Without a sequencer feed the gate is open."""
    assert tuple(system.router.sequencer()) == (ZERO, 0)
    system.router.checkSequencer()


def test_sequencer_up_after_grace_passes(system: Any, sequencer_mock: Any) -> None:
    """An up sequencer whose grace has passed lets new risk through."""
    assert tuple(system.router.sequencer()) == (sequencer_mock.address, 3600)
    system.router.checkSequencer()


def test_sequencer_down_is_refused(system: Any, chain: Any, admin: Any, sequencer_mock: Any) -> None:
    """Answer 1 means down: SequencerDown()."""
    sequencer_mock.setAnswer(1, sender=admin)
    with reverts_with(error_data(system.router.SequencerDown)):
        view(chain, system.router, "checkSequencer")


def test_sequencer_grace_boundary(system: Any, admin: Any, chain: Any, sequencer_mock: Any) -> None:
    """Up for exactly the grace period is still refused with SequencerGracePeriod(startedAt, grace); one second
    later passes."""
    started = head_time(chain)
    sequencer_mock.setAnswerAt(0, started, started, sender=admin)
    chain.mine(timestamp=started + 3600)
    with reverts_with(error_data(system.router.SequencerGracePeriod, started, 3600)):
        view(chain, system.router, "checkSequencer")
    chain.mine(timestamp=started + 3601)
    system.router.checkSequencer()


def test_sequencer_start_in_future_is_a_typed_refusal(system: Any, admin: Any, chain: Any, sequencer_mock: Any) -> None:
    """A status change stamped after the current block is "up for less than the grace period": checkSequencer must
    refuse with one of its typed errors (documented: SequencerDown or SequencerGracePeriod), not an arithmetic
    panic."""
    started = chain.pending_timestamp + 500
    sequencer_mock.setAnswerAt(0, started, started, sender=admin)
    assert head_time(chain) < started
    allowed = {error_data(system.router.SequencerGracePeriod, started, 3600), error_data(system.router.SequencerDown)}
    try:
        view(chain, system.router, "checkSequencer")
    except Web3ContractLogicError as exc:
        data = revert_data(exc)
        assert data in allowed, f"refused with 0x{data.hex()}, not a typed sequencer error"
    else:
        raise AssertionError("checkSequencer let new risk through while the sequencer start lies in the future")


@pytest.mark.parametrize("fault", ["setReverting", "setGasBomb"])
def test_unreadable_sequencer_feed_is_down(
    system: Any, chain: Any, admin: Any, sequencer_mock: Any, fault: str
) -> None:
    """A sequencer feed that reverts or burns its gas budget gates new risk as SequencerDown()."""
    getattr(sequencer_mock, fault)(True, sender=admin)
    with reverts_with(error_data(system.router.SequencerDown)):
        view(chain, system.router, "checkSequencer")


def test_disabling_sequencer_feed_reopens_gate(system: Any, admin: Any, sequencer_mock: Any) -> None:
    """setSequencerFeed(0, 0) removes the gate even while the old feed reports down, and emits the change."""
    sequencer_mock.setAnswer(1, sender=admin)
    receipt = system.router.setSequencerFeed(ZERO, 0, sender=admin)
    logs = system.router.SequencerFeedSet.from_receipt(receipt)
    assert [log.event_arguments for log in logs] == [{"feed": ZERO, "gracePeriod": 0}]
    system.router.checkSequencer()


def test_sequencer_down_blocks_new_risk_but_never_liquidation(
    system: Any, admin: Any, alice: Any, bob: Any, liquidator: Any, sequencer_mock: Any
) -> None:
    """While the sequencer is down: borrow and a withdrawal with debt revert SequencerDown; a debt-free account
    withdraws; collateral can be added; and an unhealthy account is still liquidated."""
    engine, weth = system.engine, system.weth
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * 10**6)
    open_position(system, bob, 0, {"WETH": 2 * 10**18})
    sequencer_mock.setAnswer(1, sender=admin)
    down = error_data(system.router.SequencerDown)

    with reverts_with(down):
        engine.borrow(0, 10 * 10**6, alice, sender=alice)
    with reverts_with(down):
        engine.withdraw(0, weth, 1, alice, sender=alice)

    before = weth.balanceOf(bob)
    engine.withdraw(0, weth, 2 * 10**18, bob, sender=bob)
    assert weth.balanceOf(bob) == before + 2 * 10**18
    assert engine.collateralOf(bob, 0, weth) == 0

    fund(system, alice, "WETH", 10**15)
    engine.deposit(alice, 0, weth, 10**15, sender=alice)
    assert engine.collateralOf(alice, 0, weth) == 10**18 + 10**15

    system.set_price("WETH", 1700)
    assert engine.accountHealth(alice, 0).health < WAD
    fund(system, liquidator, "USDC", 2000 * 10**6)
    debt_before = engine.debtOf(alice, 0)
    collateral_before = engine.collateralOf(alice, 0, weth)
    receipt = engine.liquidate(alice, 0, weth, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    (log,) = engine.Liquidated.from_receipt(receipt)
    assert log.repaid > 0
    assert log.seized > 0
    assert weth.balanceOf(liquidator) == log.seized
    assert engine.collateralOf(alice, 0, weth) == collateral_before - log.seized
    assert engine.debtOf(alice, 0) < debt_before
    assert system.usdc.balanceOf(liquidator) == 2000 * 10**6 - log.repaid


def test_borrow_waits_for_grace_after_recovery(
    system: Any, admin: Any, alice: Any, chain: Any, sequencer_mock: Any
) -> None:
    """After the sequencer comes back, borrowing reverts SequencerGracePeriod until the grace period is over."""
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=100 * 10**6)
    started = head_time(chain)
    sequencer_mock.setAnswerAt(0, started, started, sender=admin)
    with reverts_with(error_data(system.router.SequencerGracePeriod, started, 3600)):
        system.engine.borrow(0, 100 * 10**6, alice, sender=alice)
    chain.pending_timestamp = started + 3601
    system.set_price("WETH", 2000)
    receipt = system.engine.borrow(0, 100 * 10**6, alice, sender=alice)
    (log,) = system.engine.Borrowed.from_receipt(receipt)
    assert (log.owner, log.subId, log.assets) == (alice.address, 0, 100 * 10**6)


# ------------------------------------------------------------------------------------------------ ERC-4626 shares


@pytest.fixture
def share(system: Any, admin: Any, alice: Any, project: Any) -> Any:
    """An ERC-4626 share over WETH with 10 WETH deposited by alice (rate 1:1)."""
    vault = admin.deploy(project.MockERC4626, system.weth, "Staked WETH", "sWETH")
    system.weth.mint(alice, 10 * WAD, sender=alice)
    system.weth.approve(vault, MAX_UINT, sender=alice)
    vault.deposit(10 * WAD, alice, sender=alice)
    return vault


def _oz_rate(total_assets: int, total_supply: int) -> int:
    """OpenZeppelin ERC-4626 convertToAssets(1e18) with no decimals offset, rounded down."""
    return WAD * (total_assets + 1) // (total_supply + 1)


def test_share_price_uses_exchange_rate_rounded_down(
    system: Any, admin: Any, alice: Any, chain: Any, share: Any
) -> None:
    """Share price = underlying price * convertToAssets(1 share) / 1e18, rounded down; the config and the
    ShareAssetSet event record the snapshot."""
    donation = 333_333_333_333_333_337
    system.weth.mint(alice, donation, sender=alice)
    system.weth.transfer(share, donation, sender=alice)
    system.feeds["WETH"].setAnswer(200_012_345_678, sender=admin)  # $2000.12345678
    rate = _oz_rate(10 * WAD + donation, 10 * WAD)
    assert share.convertToAssets(WAD) == rate

    growth = 15 * WAD // 100
    receipt = system.router.setShareAsset(share, system.weth, growth, sender=admin)
    logs = system.router.ShareAssetSet.from_receipt(receipt)
    assert [log.event_arguments for log in logs] == [
        {"share": share.address, "underlying": system.weth.address, "snapshotRate": rate, "maxYearlyGrowth": growth}
    ]
    cfg = system.router.shareConfig(share)
    assert (cfg.underlying, cfg.shareDecimals, cfg.underlyingDecimals) == (system.weth.address, 18, 18)
    assert (cfg.snapshotTime, cfg.maxYearlyGrowth, cfg.snapshotRate) == (head_time(chain), growth, rate)

    weth_price = 200_012_345_678 * 10**10
    assert (weth_price * rate) % WAD != 0  # the rounding direction matters for this pair
    assert system.router.price(share) == weth_price * rate // WAD


def test_donation_is_capped_by_yearly_growth(system: Any, admin: Any, alice: Any, chain: Any, share: Any) -> None:
    """A donation raises convertToAssets at once, but the router uses at most
    snapshot * (1 + maxYearlyGrowth * elapsed / YEAR); once the cap has grown past the rate, the rate applies.
    (With no refresh the cap stops growing 30 days after the snapshot: tests/test_oracle_share_cap.py.)"""
    growth = 15 * WAD // 100
    system.router.setShareAsset(share, system.weth, growth, sender=admin)
    snapshot_time = head_time(chain)
    snapshot_rate = WAD

    system.weth.mint(alice, 5 * WAD, sender=alice)
    system.weth.transfer(share, 5 * WAD, sender=alice)
    donated_rate = _oz_rate(15 * WAD, 10 * WAD)
    assert share.convertToAssets(WAD) == donated_rate

    chain.pending_timestamp = snapshot_time + 30 * 86400
    system.set_price("WETH", 2000)  # keep the underlying fresh after the time travel
    elapsed = head_time(chain) - snapshot_time
    cap = snapshot_rate + snapshot_rate * growth * elapsed // (WAD * YEAR)
    assert snapshot_rate < cap < donated_rate
    assert system.router.price(share) == 2000 * WAD * cap // WAD
    assert system.router.price(share) < 2000 * WAD * donated_rate // WAD

    small_rate = _oz_rate(15 * WAD + 10**15, 10 * WAD)  # a rate the cap reaches within its 30 days
    system.weth.mint(alice, 10**15, sender=alice)
    system.weth.transfer(share, 10**15, sender=alice)
    system.router.setShareAsset(share, system.weth, growth, sender=admin)  # governance accepts the donated rate
    snapshot_time, snapshot_rate = head_time(chain), small_rate
    system.weth.mint(alice, 10**15, sender=alice)
    system.weth.transfer(share, 10**15, sender=alice)
    rate = _oz_rate(15 * WAD + 2 * 10**15, 10 * WAD)
    chain.pending_timestamp = snapshot_time + 20 * 86400
    system.set_price("WETH", 2000)
    elapsed = head_time(chain) - snapshot_time
    assert snapshot_rate + snapshot_rate * growth * elapsed // (WAD * YEAR) > rate
    assert system.router.price(share) == 2000 * WAD * rate // WAD


def test_share_price_inherits_underlying_guards(system: Any, admin: Any, chain: Any, share: Any) -> None:
    """A share is never priced with an invalid underlying price: a stale WETH feed reverts StalePrice for WETH."""
    system.router.setShareAsset(share, system.weth, 15 * WAD // 100, sender=admin)
    updated = system.feeds["WETH"].latestRoundData()[3]
    chain.mine(timestamp=updated + WETH_STALENESS + 1)
    with reverts_with(error_data(system.router.StalePrice, system.weth.address, updated, WETH_STALENESS)):
        view(chain, system.router, "price", share)


def test_share_asset_invalid_config(system: Any, admin: Any, project: Any, share: Any) -> None:
    """setShareAsset refuses a zero share, an underlying without a feed and a share whose asset() differs."""
    token = admin.deploy(project.MockERC20, "Unpriced", "UNP", 18)
    unpriced_share = admin.deploy(project.MockERC4626, token, "Staked UNP", "sUNP")
    invalid = error_data(system.router.InvalidConfig)
    with reverts_with(invalid):
        system.router.setShareAsset(ZERO, system.weth, 0, sender=admin)
    with reverts_with(invalid):
        system.router.setShareAsset(unpriced_share, token, 0, sender=admin)
    with reverts_with(invalid):
        system.router.setShareAsset(share, system.link, 0, sender=admin)
    assert system.router.shareConfig(share).underlying == ZERO


# ------------------------------------------------------------------------------------------------ configuration


def test_set_feed_event_and_config(system: Any, admin: Any, project: Any) -> None:
    """setFeed stores the config with the feed's decimals and emits FeedSet with its arguments."""
    feed = admin.deploy(project.MockAggregator, 8, 42 * 10**8, "X / USD")
    receipt = system.router.setFeed(UNLISTED, feed, 1800, 10**17, 10**21, sender=admin)
    logs = system.router.FeedSet.from_receipt(receipt)
    assert [log.event_arguments for log in logs] == [
        {"asset": UNLISTED, "feed": feed.address, "maxStaleness": 1800, "minPrice": 10**17, "maxPrice": 10**21}
    ]
    cfg = system.router.feedConfig(UNLISTED)
    assert (cfg.feed, cfg.maxStaleness, cfg.feedDecimals, cfg.minPrice, cfg.maxPrice) == (
        feed.address,
        1800,
        8,
        10**17,
        10**21,
    )
    assert system.router.price(UNLISTED) == 42 * WAD


def test_sequencer_feed_event(system: Any, admin: Any, project: Any) -> None:
    """setSequencerFeed emits SequencerFeedSet(feed, grace) and stores both."""
    feed = admin.deploy(project.MockAggregator, 0, 0, "L2 Sequencer Uptime")
    receipt = system.router.setSequencerFeed(feed, 1234, sender=admin)
    logs = system.router.SequencerFeedSet.from_receipt(receipt)
    assert [log.event_arguments for log in logs] == [{"feed": feed.address, "gracePeriod": 1234}]
    assert tuple(system.router.sequencer()) == (feed.address, 1234)


@pytest.mark.parametrize("case", ["zero_asset", "zero_feed", "zero_staleness", "min_eq_max", "min_gt_max", "dec19"])
def test_set_feed_invalid_config(system: Any, admin: Any, project: Any, case: str) -> None:
    """setFeed refuses a zero asset or feed, zero staleness, min >= max and a feed with more than 18 decimals."""
    good = system.feeds["WETH"].address
    args: dict[str, Any] = {"asset": UNLISTED, "feed": good, "staleness": 3600, "lo": 1, "hi": 10**30}
    if case == "zero_asset":
        args["asset"] = ZERO
    elif case == "zero_feed":
        args["feed"] = ZERO
    elif case == "zero_staleness":
        args["staleness"] = 0
    elif case == "min_eq_max":
        args["lo"] = args["hi"] = 5 * WAD
    elif case == "min_gt_max":
        args["lo"], args["hi"] = 6 * WAD, 5 * WAD
    else:
        args["feed"] = admin.deploy(project.MockAggregator, 19, 1, "19 decimals").address
    with reverts_with(error_data(system.router.InvalidConfig)):
        system.router.setFeed(args["asset"], args["feed"], args["staleness"], args["lo"], args["hi"], sender=admin)
    assert system.router.feedConfig(UNLISTED).feed == ZERO


@pytest.mark.parametrize("case", ["no_primary", "zero_staleness", "zero_deviation", "dec19"])
def test_set_secondary_invalid_config(system: Any, admin: Any, project: Any, case: str) -> None:
    """setSecondaryFeed refuses an asset without a primary, zero staleness, zero deviation and > 18 decimals."""
    feed = system.feeds["LINK"].address
    asset, staleness, deviation = system.weth.address, 600, WAD // 100
    if case == "no_primary":
        asset = UNLISTED
    elif case == "zero_staleness":
        staleness = 0
    elif case == "zero_deviation":
        deviation = 0
    else:
        feed = admin.deploy(project.MockAggregator, 19, 1, "19 decimals").address
    with reverts_with(error_data(system.router.InvalidConfig)):
        system.router.setSecondaryFeed(asset, feed, staleness, deviation, sender=admin)
    assert system.router.secondaryConfig(asset).feed == ZERO


SETTERS: dict[str, Callable[[Any, Any], Any]] = {
    "setFeed": lambda s, who: s.router.setFeed(UNLISTED, s.feeds["WETH"], 60, 1, 2, sender=who),
    "setSecondaryFeed": lambda s, who: s.router.setSecondaryFeed(s.weth, s.feeds["LINK"], 60, 1, sender=who),
    "setShareAsset": lambda s, who: s.router.setShareAsset(UNLISTED, s.weth, 1, sender=who),
    "setSequencerFeed": lambda s, who: s.router.setSequencerFeed(s.feeds["WETH"], 60, sender=who),
}


@pytest.mark.parametrize("setter", sorted(SETTERS))
def test_setters_are_admin_only(system: Any, stranger: Any, setter: str) -> None:
    """Every setter reverts AccessControlUnauthorizedAccount(stranger, DEFAULT_ADMIN_ROLE) for a stranger."""
    expected = error_data(system.router.AccessControlUnauthorizedAccount, stranger.address, ADMIN_ROLE)
    with reverts_with(expected):
        SETTERS[setter](system, stranger)
    assert system.router.feedConfig(UNLISTED).feed == ZERO
    assert system.router.secondaryConfig(system.weth).feed == ZERO
    assert tuple(system.router.sequencer()) == (ZERO, 0)
