"""The keeper's protection strategies on Anvil (keeper/engine/protect.py through `build_keeper`, as `keeper run` wires
them): it rebalances only owners that authorised it, within their target; it pre-liquidates only opted-in accounts in
their band, improving health; it leaves everyone else alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import fund, open_position
from test_keeper_e2e import KEEPER_INDEX, _keeper, _mine, _rpc
from web3 import Web3

from keeper.engine.protect import PLAN_HEADROOM, Protector

WAD = 10**18


def health(system: Any, owner: Any, sub: int) -> int:
    return int(system.engine.accountHealth(owner, sub).health)


def run_blocks(keeper: Any, w3: Web3, n: int) -> None:
    for _ in range(n):
        _mine(w3)
        keeper.tick()


def run_keeper(system: Any, chain: Any, tmp_path: Path, blocks: int = 4, **settings: Any) -> tuple[Any, int]:
    """A keeper with `settings`, run for `blocks` blocks with automine off; the keeper and the block it started at."""
    keeper = _keeper(system, chain, tmp_path, **settings)
    w3 = chain.provider.web3
    start = chain.blocks.head.number
    _rpc(w3, "evm_setAutomine", False)
    try:
        run_blocks(keeper, w3, blocks)
    finally:
        _rpc(w3, "evm_setAutomine", True)
    return keeper, start


def test_keeper_rebalances_an_owner_that_authorised_it(system: Any, chain: Any, accounts: Any, alice: Any,
                                                       bob: Any, tmp_path: Path) -> None:  # fmt: skip
    # Alice: sub 0 at health 1.069, sub 1 a rich donor; she authorises the keeper with target 1.20. Bob: the same
    # book, no authorisation.
    for owner in (alice, bob):
        open_position(system, owner, 0, {"WETH": 10 * 10**18}, borrow=15_900 * 10**6)  # 2000·10·0.85/15900 = 1.069
        open_position(system, owner, 1, {"WETH": 20 * 10**18}, borrow=5_000 * 10**6)  # 6.8
    keeper_address = accounts[KEEPER_INDEX].address
    system.protection.setRebalancer(keeper_address, 120 * 10**16, sender=alice)
    keeper, _ = run_keeper(system, chain, tmp_path, rebalance_enabled=True)
    # Planned with headroom inside the module's rule: the receiver ends just below the target, the giver above it.
    assert health(system, alice, 0) == pytest.approx(120 * 10**16 - PLAN_HEADROOM, rel=1e-6)
    assert health(system, alice, 0) <= 120 * 10**16 - PLAN_HEADROOM
    assert health(system, alice, 1) >= 120 * 10**16 + PLAN_HEADROOM
    assert health(system, bob, 0) < 107 * 10**16  # not authorised: untouched
    engine = system.engine
    total = engine.collateralOf(alice, 0, system.weth) + engine.collateralOf(alice, 1, system.weth)
    assert total == 30 * 10**18  # nothing left the owner
    assert keeper.metrics.rebalances_sent._value.get() >= 1


def test_keeper_pre_liquidates_opted_in_accounts_in_the_band(system: Any, chain: Any, accounts: Any, alice: Any,
                                                             bob: Any, tmp_path: Path) -> None:  # fmt: skip
    keeper_account = accounts[KEEPER_INDEX]
    fund(system, keeper_account, "USDC", 1_000_000 * 10**6)
    system.usdc.approve(system.protection, 2**256 - 1, sender=keeper_account)
    for owner in (alice, bob):
        open_position(system, owner, 0, {"WETH": 10 * 10**18}, borrow=15_900 * 10**6)  # 1.069: in a 1.10 band
    bounds = system.protection.preLiquidationBounds()
    assert bounds.maxPreThreshold > 1070 * 10**15  # the test's account must fit in the band the bounds allow
    terms = (bounds.maxPreThreshold, min(2 * 10**16, bounds.maxDiscount), min(5 * 10**17, bounds.maxShare))
    system.protection.setPreLiquidation(0, *terms, sender=alice)
    before_alice, before_bob = health(system, alice, 0), health(system, bob, 0)
    keeper, start = run_keeper(system, chain, tmp_path, pre_liquidation_enabled=True)
    logs = list(system.protection.PreLiquidated.range(start, chain.blocks.head.number + 1))
    assert logs, "no pre-liquidation"
    assert {log.owner for log in logs} == {alice.address}
    assert all(log.caller == keeper_account.address for log in logs)
    assert all(log.healthAfter > log.healthBefore for log in logs)
    assert health(system, alice, 0) > before_alice
    assert system.engine.collateralOf(bob, 0, system.weth) == 10 * 10**18  # not opted in: untouched
    assert health(system, bob, 0) <= before_bob  # (only interest moved it)
    assert keeper.metrics.pre_liquidations_sent._value.get() >= 1


@pytest.mark.parametrize("donor_debt", [5_000, 1_250])
def test_keeper_rescues_a_liquidatable_account_instead_of_liquidating_it(
    system: Any, chain: Any, accounts: Any, alice: Any, bob: Any, tmp_path: Path, donor_debt: int
) -> None:
    # Both owners: sub 0 at health 1.069 and a donor, sub 1; WETH then falls 7.5 % and sub 0 is liquidatable
    # (0.989). Alice authorised the keeper: with a rich donor (debt 5,000, health 6.3) her sub 0 is rescued and
    # never liquidated; with a poor one (debt 1,250, health 1.26: it can give 0.045 WETH of the 0.12 needed) no
    # rescue can work and she is liquidated like Bob, who authorised nobody.
    keeper_account = accounts[KEEPER_INDEX]
    fund(system, keeper_account, "USDC", 1_000_000 * 10**6)
    for owner in (alice, bob):
        open_position(system, owner, 0, {"WETH": 10 * 10**18}, borrow=15_900 * 10**6)
        open_position(system, owner, 1, {"WETH": 1 * 10**18 if donor_debt < 2_000 else 20 * 10**18},
                      borrow=donor_debt * 10**6)  # fmt: skip
    system.protection.setRebalancer(keeper_account.address, 120 * 10**16, sender=alice)
    system.set_price("WETH", 1850)
    assert health(system, alice, 0) < WAD
    assert health(system, bob, 0) < WAD
    keeper, start = run_keeper(system, chain, tmp_path, rebalance_enabled=True)
    head = chain.blocks.head.number
    liquidated = {(log.owner, log.subId) for log in system.engine.Liquidated.range(start, head + 1)}
    assert (bob.address, 0) in liquidated  # unprotected: liquidated as usual
    moved = list(system.protection.Rebalanced.range(start, head + 1))
    if donor_debt == 5_000:
        assert (alice.address, 0) not in liquidated
        assert moved
        assert all(log.owner == alice.address and log.toSubId == 0 for log in moved)
        assert health(system, alice, 0) >= WAD
        assert health(system, alice, 1) >= 120 * 10**16
        assert keeper.metrics.rescues_sent._value.get() == 1
        assert (
            alice.address,
            0,
        ) not in keeper.state.first_liquidatable  # rescued: no liquidation latency pending
    else:
        assert (alice.address, 0) in liquidated  # no rescue could lift it above 1: liquidated, not delayed
        # Nothing was poured into the account while it was being liquidated; once the liquidation left it healthy
        # but below the target, ordinary rebalancing may top it up.
        first = min(log.block_number for log in system.engine.Liquidated.range(start, head + 1) if log.owner == alice)
        assert all(log.block_number > first for log in moved if log.toSubId == 0)
        assert keeper.metrics.rescues_sent._value.get() == 0
    total = sum(int(system.engine.collateralOf(alice, i, system.weth)) for i in (0, 1))
    logs = system.engine.Liquidated.range(start, head + 1)
    seized = sum(int(log.seized) for log in logs if log.owner == alice.address)
    assert total + seized == 10 * 10**18 + (1 if donor_debt < 2_000 else 20) * 10**18  # nothing else left the owner


def test_a_module_without_batches_gets_one_move_per_transaction(system: Any, chain: Any, tmp_path: Path) -> None:
    """A deployment record from before `rebalanceBatch` existed: the keeper plans single moves for it."""
    keeper = _keeper(system, chain, tmp_path, rebalance_enabled=True)
    assert keeper.protector is not None
    assert keeper.protector.max_moves > 1  # the current module batches
    module = keeper.protector.module
    old_abi = [item for item in module.abi if item.get("name") != "rebalanceBatch"]
    contract = keeper.w3.eth.contract(address=module.address, abi=old_abi)
    old = Protector(keeper.settings, contract, keeper.txm, keeper.metrics, lambda: None, keeper.log)
    assert old.max_moves == 1


@pytest.mark.parametrize("jump", [False, True])
def test_keeper_leaves_a_banded_account_to_its_band_unless_prices_jump_past_it(
    system: Any, chain: Any, accounts: Any, alice: Any, tmp_path: Path, jump: bool
) -> None:
    """Alice's sub 0 at health 1.037 is opted into a band at 1.05; sub 1 is a rich donor; she authorises the keeper
    with target 1.15, which no lift can make gap-proof (WETH would need 1 / 0.85). In a calm market the keeper
    pre-liquidates sub 0 in its band (half its debt for the band's discount) and does not lift it. When the keeper
    has just seen WETH fall 9 % in one update (2,200 -> 2,000), a repeat would take sub 0 from 1.037 straight below
    1, past the band, so the keeper lifts it to the target instead."""
    keeper_account = accounts[KEEPER_INDEX]
    fund(system, keeper_account, "USDC", 1_000_000 * 10**6)
    system.usdc.approve(system.protection, 2**256 - 1, sender=keeper_account)
    system.set_price("WETH", 2200)  # (1.037 is below the initial margin at 2,000: borrow at 2,200)
    open_position(system, alice, 0, {"WETH": 10 * 10**18}, borrow=16_400 * 10**6)  # 1.037 at 2,000
    open_position(system, alice, 1, {"WETH": 20 * 10**18}, borrow=5_000 * 10**6)
    bounds = system.protection.preLiquidationBounds()
    band = 105 * 10**16
    assert bounds.maxPreThreshold >= band
    system.protection.setPreLiquidation(0, band, min(10**16, bounds.maxDiscount), min(5 * 10**17, bounds.maxShare),
                                        sender=alice)  # fmt: skip
    system.protection.setRebalancer(keeper_account.address, 115 * 10**16, sender=alice)
    keeper = _keeper(system, chain, tmp_path, rebalance_enabled=True, pre_liquidation_enabled=True)
    w3 = chain.provider.web3
    start = chain.blocks.head.number
    if jump:
        keeper.tick()  # the keeper sees WETH at 2,200: sub 0 at 1.14, above its band, and nothing to do
        # The fall lands in a block with the same timestamp as the one the keeper just read, as on an L2 with
        # several blocks a second: it is a move all the same.
        chain.pending_timestamp = chain.blocks.head.timestamp
    system.set_price("WETH", 2000)  # without the tick above, the keeper's first price: nothing moved that it saw
    assert 103 * 10**16 < health(system, alice, 0) < band
    _rpc(w3, "evm_setAutomine", False)
    try:
        run_blocks(keeper, w3, 4)
    finally:
        _rpc(w3, "evm_setAutomine", True)
    head = chain.blocks.head.number
    lifted = [log for log in system.protection.Rebalanced.range(start, head + 1) if log.toSubId == 0]
    pre = [log for log in system.protection.PreLiquidated.range(start, head + 1) if log.subId == 0]
    if jump:
        assert lifted
        assert not pre
        assert health(system, alice, 0) == pytest.approx(115 * 10**16 - PLAN_HEADROOM, rel=1e-4)
    else:
        assert not lifted
        assert pre
        assert all(log.caller == keeper_account.address for log in pre)
        assert int(pre[0].repaid) * 2 >= 16_400 * 10**6 - 10**6  # half the debt, for the band's discount
        assert health(system, alice, 0) > 115 * 10**16  # de-levered: above the target without the sibling's help
        assert health(system, alice, 1) == pytest.approx(20 * 2000 * 0.85 / 5_000 * WAD, rel=1e-4)  # untouched
