"""Gas estimation for integrators (issue 12 item 10): why a transaction sent with exactly `eth_estimateGas` can
revert `InsufficientGasForOracle`, and the documented margin that makes borrow, withdraw and liquidate succeed.

An estimate is the least gas limit with which the call succeeds on the state and block it is run against. The
router's gas floor (a full feed budget must remain before each feed call) makes that least limit depend on every
unit of gas spent before the last feed call, with nothing to spare. The vault accrues interest at most once a
block: estimated in the block (or second) of the last accrual, a call does not pay for it; included a block later,
it does (~9.6k gas, before the oracle reads), and the last feed call finds less than the floor. These tests build
exactly that worst case: the vault accrues in the latest block, the estimate runs against the latest block, and the
transaction is mined 12 s later."""

from __future__ import annotations

from typing import Any

from conftest import MAX_UINT, WAD, fund, open_position
from test_oracle_router import error_data, head_time
from test_oracle_try_price import eth_call

from keeper.chain.txmanager import GAS_HEADROOM_PERCENT

BLOCK_TIME = 12
# What the docs tell integrators to add to eth_estimateGas (IOracleRouter, docs/contracts.md).
MARGIN_PERCENT, MARGIN_MIN = 10, 25_000
THREE_ASSETS = {"WETH": WAD, "WBTC": 5 * 10**6, "LINK": 100 * WAD}  # $2,000 + $3,000 + $1,500


def documented_limit(estimate: int) -> int:
    return estimate + max(estimate * MARGIN_PERCENT // 100, MARGIN_MIN)


def worst_case_send(system: Any, chain: Any, tx: dict[str, Any], limit: Any) -> tuple[int, int, Any]:
    """Accrue the vault in a new block, estimate `tx` against that latest block, then mine `tx` 12 s later with
    gas `limit(estimate)`. Returns (estimate, what an estimate on the block it was mined in answers, receipt)."""
    w3 = chain.provider.web3
    system.vault.accrue(sender=system.admin)
    estimate = int(w3.eth.estimate_gas(tx, "latest"))  # type: ignore[arg-type]
    chain.pending_timestamp = head_time(chain) + BLOCK_TIME
    needed = int(w3.eth.estimate_gas(tx, "pending"))  # type: ignore[arg-type]
    tx_hash = w3.eth.send_transaction({**tx, "gas": limit(estimate)})  # type: ignore[typeddict-item]
    return estimate, needed, w3.eth.wait_for_transaction_receipt(tx_hash)


def call_tx(sender: Any, contract: Any, method: str, *args: Any) -> dict[str, Any]:
    return {"from": sender.address, "to": contract.address, "data": getattr(contract, method).encode_input(*args)}


def refresh_prices(system: Any, scale: float = 1.0) -> None:
    for symbol, usd in (("WETH", 2000), ("WBTC", 60_000), ("LINK", 15), ("USDC", 1)):
        system.set_price(symbol, usd if symbol == "USDC" else usd * scale)


def test_exact_estimate_reverts_when_inclusion_pays_an_accrual(system: Any, chain: Any, alice: Any) -> None:
    """The failure the issue saw, made deterministic: a borrow estimated in the block of the last accrual and mined
    a block later, with exactly the estimate, reverts InsufficientGasForOracle (the same call with the documented
    margin succeeds, see below)."""
    open_position(system, alice, 0, {"WETH": 10 * WAD}, borrow=1000 * 10**6)
    tx = call_tx(alice, system.engine, "borrow", 0, 10 * 10**6, alice.address)
    estimate, needed, receipt = worst_case_send(system, chain, tx, lambda e: e)
    assert needed > estimate
    assert receipt["status"] == 0
    assert receipt["gasUsed"] < estimate  # stopped at the guard, with the gas it could not use
    ok, data = eth_call(chain, system.engine, "borrow", 0, 10 * 10**6, alice.address, gas=estimate)
    assert not ok  # the same limit, on the state it was mined on (the accrual still to pay)
    assert data[:4] == error_data(system.router.InsufficientGasForOracle, 0)[:4]


def test_documented_margin_makes_every_operation_succeed(
    system: Any, chain: Any, alice: Any, liquidator: Any, accounts: Any
) -> None:
    """Borrow, withdraw (with debt) and liquidate, three collateral assets held, each sent from a plain web3 account
    with eth_estimateGas plus the documented margin (10 % or 25,000 gas, whichever is more), each in the worst case
    above, eight rounds: every transaction succeeds, and the least limit on the block it was mined in exceeds the
    estimate by less than the margin."""
    engine = system.engine
    open_position(system, alice, 0, THREE_ASSETS, borrow=1000 * 10**6)
    victims = [accounts[i] for i in (3, 5, 7, 8, 9)]
    for who in victims:
        open_position(system, who, 0, THREE_ASSETS, borrow=4700 * 10**6)
    fund(system, liquidator, "USDC", 10**7 * 10**6)
    shortfalls: list[int] = []

    def send(tx: dict[str, Any]) -> None:
        estimate, needed, receipt = worst_case_send(system, chain, tx, documented_limit)
        assert receipt["status"] == 1, (tx["data"][:10], estimate, needed)
        assert needed <= documented_limit(estimate)
        assert needed <= estimate + estimate * GAS_HEADROOM_PERCENT // 100  # the keeper's own headroom covers it
        shortfalls.append(needed - estimate)

    for _ in range(8):
        refresh_prices(system)
        send(call_tx(alice, engine, "borrow", 0, 10 * 10**6, alice.address))
        send(call_tx(alice, engine, "withdraw", 0, system.link.address, WAD, alice.address))

    refresh_prices(system, 0.9)
    for who in victims:
        assert engine.accountHealth(who, 0).health < WAD
        before = engine.debtOf(who, 0)
        send(call_tx(liquidator, engine, "liquidate", who.address, 0, system.weth.address, MAX_UINT, 0,
                     liquidator.address, b""))  # fmt: skip
        assert engine.debtOf(who, 0) < before
    assert len(shortfalls) == 8 * 2 + len(victims)
    assert 0 < max(shortfalls) < MARGIN_MIN  # the worst case did happen, and the margin covered it
    print(f"estimate shortfalls in the worst case: min {min(shortfalls)}, max {max(shortfalls)} gas")
