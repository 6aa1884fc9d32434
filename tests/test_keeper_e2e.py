"""End to end: the keeper's own code (discovery, batch reads, risk mirror, planning, simulation, journalled sending)
against a real Anvil with mining under the test's control, like interval mining: the keeper reads block N, sends,
and the next block holds its transactions. Everything is checked from the chain: events and views at the parent
block of each liquidation."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import MAX_UINT, WAD, fund, open_position
from web3 import Web3

from keeper.chain.deployment import load_deployment
from keeper.chain.index import AccountIndex
from keeper.chain.signer import load_signer
from keeper.chain.sqlite import StateFile
from keeper.engine.compose import build_keeper
from keeper.engine.keeper import Keeper
from keeper.engine.settings import Settings

KEEPER_INDEX = 6  # ape test account 6: used by no other fixture


def _rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


def _mine(w3: Web3) -> int:
    _rpc(w3, "evm_mine")
    return w3.eth.block_number


def _keeper(
    system: Any,
    chain: Any,
    tmp_path: Path,
    *,
    w3: Web3 | None = None,
    clock: Callable[[], float] = time.monotonic,
    state: StateFile | None = None,
    index: AccountIndex | None = None,
    record: Path | None = None,
    **overrides: Any,
) -> Keeper:
    """A keeper wired exactly as `keeper run` wires it (compose.build_keeper), with the test's web3, clock, state
    file, index and deployment record when given."""
    if record is None:
        record = tmp_path / "deployment.json"
        record.write_text(json.dumps(system.deployment.record()))
    settings = Settings(
        **{
            "rpc_url": chain.provider.uri,
            "chain_id": chain.chain_id,
            "deployment": record,
            "dev_account_index": KEEPER_INDEX,
            "confirmations": 1,
            "state_db": tmp_path / "state.db",
            "min_profit_usd": 0,
            "priority_fee_gwei": 1,
            "max_fee_gwei": 500,
            **overrides,
        }
    )
    dep = load_deployment(record, chain.chain_id)
    w3 = w3 or Web3(Web3.HTTPProvider(chain.provider.uri))
    signer = load_signer(settings, chain.chain_id)
    return build_keeper(
        settings, dep, w3, signer, state=state, index=index, clock=clock, log=logging.getLogger("keeper-test")
    )


def test_keeper_liquidates_every_liquidatable_account_and_no_healthy_one(
    system: Any, chain: Any, accounts: Any, alice: Any, bob: Any, tmp_path: Path
) -> None:
    """Eight borrowers between health 1.06 and 1.62; WETH falls 15 %; the keeper liquidates exactly those the
    drop made unhealthy, in the block after the price update, and keeps going until none is left."""
    keeper_account = accounts[KEEPER_INDEX]
    fund(system, keeper_account, "USDC", 5_000_000 * 10**6)
    # (owner, sub, WETH, USDC borrowed): health = 2000 * 0.85 * weth / debt
    book = [
        (alice, 0, 10, 15_900),  # health 1.069 (at most ltv 0.80: 16,000)
        (alice, 1, 10, 15_500),  # 1.097
        (alice, 2, 5, 6_000),  # 1.417
        (alice, 3, 2, 2_100),  # 1.619
        (bob, 0, 10, 15_950),  # 1.066
        (bob, 1, 4, 6_200),  # 1.097
        (bob, 2, 1, 1_500),  # 1.133 (small position: full close)
        (bob, 3, 20, 25_000),  # 1.36
    ]
    for owner, sub, weth, usdc in book:
        open_position(system, owner, sub, {"WETH": weth * 10**18}, borrow=usdc * 10**6)

    keeper = _keeper(system, chain, tmp_path)
    w3 = chain.provider.web3
    _rpc(w3, "evm_setAutomine", False)
    try:
        _mine(w3)
        keeper.tick()  # discovers accounts, approves the engine
        _mine(w3)
        keeper.tick()
        assert keeper.index.account_count() == len(book)

        system.feeds["WETH"].setAnswer(1700 * 10**8, sender=system.admin)  # -15 %
        price_block = _mine(w3)
        engine = w3.eth.contract(address=system.engine.address, abi=keeper.dep.abis["MarginEngine"])

        def health(owner: Any, sub: int, block: int) -> int:
            return int(engine.functions.accountHealth(owner.address, sub).call(block_identifier=block)[5])

        unhealthy = {(o.address, s) for o, s, _, _ in book if health(o, s, price_block) < WAD}
        assert 3 <= len(unhealthy) < len(book)  # the scenario really has both kinds

        first_liquidation: dict[tuple[str, int], int] = {}
        for _ in range(12):
            keeper.tick()
            block = _mine(w3)
            logs = engine.events.Liquidated().get_logs(from_block=block, to_block=block)
            for log in logs:
                key = (log.args.owner, log.args.subId)
                # Never a healthy account: it was unhealthy in the parent block.
                assert health_of_addr(engine, key, block - 1) < WAD, key
                first_liquidation.setdefault(key, block)
            still = [k for k in unhealthy if health_of_addr(engine, k, block) < WAD]
            if not still and block > price_block + 2:
                break
        assert set(first_liquidation) == unhealthy
        # Within one block of the price update: all first liquidations in the very next block.
        assert all(b == price_block + 1 for b in first_liquidation.values()), first_liquidation
        # Every account the drop made unhealthy is healthy again or closed; the others were never touched.
        for owner, sub, _, _ in book:
            h = health(owner, sub, w3.eth.block_number)
            assert h >= WAD or h == MAX_UINT
        assert keeper.metrics.liquidations_sent._value.get() >= len(unhealthy)
    finally:
        _rpc(w3, "evm_setAutomine", True)


def health_of_addr(engine: Any, key: tuple[str, int], block: int) -> int:
    return int(engine.functions.accountHealth(key[0], key[1]).call(block_identifier=block)[5])


def test_low_signer_balance_is_reported(system: Any, chain: Any, accounts: Any, tmp_path: Path, caplog: Any) -> None:
    """Housekeeping publishes the signer's balance and warns while it is below low_balance_eth."""
    balance = accounts[KEEPER_INDEX].balance
    keeper = _keeper(system, chain, tmp_path, low_balance_eth=balance / 1e18 + 1)
    with caplog.at_level(logging.WARNING, logger="keeper-test"):
        keeper.housekeeping()
    assert keeper.metrics.signer_balance._value.get() == balance / 1e18
    assert any("below" in r.getMessage() and keeper.signer.address in r.getMessage() for r in caplog.records)
    (tmp_path / "funded").mkdir()
    funded = _keeper(system, chain, tmp_path / "funded", low_balance_eth=0.01, low_inventory=0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keeper-test"):
        funded.housekeeping()
    assert not caplog.records
