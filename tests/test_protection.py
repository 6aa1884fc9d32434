"""Opt-in protection on a real Anvil node: the ProtectionModule's rebalancer and pre-liquidation band, and the two
MarginEngine primitives only the module may call (moveCollateralFor, seizeFor).

Interest is switched off in most tests (`no_interest`: a zero rate model), so a sub-account's debt does not move
between two blocks and every expected health is computed exactly here with keeper.risk.account_health, the
integer mirror of the engine's health (itself checked against the engine by the differential tests).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from conftest import MAX_UINT, WAD, fund, open_position, reverts_with
from web3.exceptions import ContractLogicError as Web3ContractLogicError

from keeper.core import risk

PCT = WAD // 100
ZERO_ROLE = b"\x00" * 32
SYMBOLS = ("WETH", "WBTC", "LINK")
# The deploy defaults (scripts/_system.py ProtectionSpec), which TEST_CONFIG keeps.
MAX_PRE, MAX_DISC, MAX_SHARE, MAX_TARGET = 110 * PCT, 3 * PCT, 50 * PCT, 3 * WAD
MIN_DEBT = 10 * 10**6
ENGINE_MIN_DISC = 5 * PCT // 10  # the engine's minDiscount in TEST_CONFIG: the band never pays more
BAND_DISC = min(MAX_DISC, ENGINE_MIN_DISC)


# -------------------------------------------------------------------------------------------------------------- helpers


def events(tx: Any, event: Any) -> list[dict[str, Any]]:
    return [dict(log.event_arguments) for log in tx.decode_logs(event)]


def units(symbol: str, amount: float) -> int:
    return round(amount * 10 ** {"WETH": 18, "WBTC": 8, "LINK": 18, "USDC": 6}[symbol])


def health(system: Any, owner: Any, sub: int) -> int:
    return int(system.engine.accountHealth(owner, sub).health)


def balances(system: Any, owner: Any, sub: int) -> dict[str, int]:
    return {s: int(system.engine.collateralOf(owner, sub, system.tokens[s])) for s in SYMBOLS}


def mirror(system: Any, owner: Any, sub: int, delta: dict[str, int] | None = None, repaid: int = 0) -> risk.Health:
    """The engine's health of (owner, sub) after adding `delta` token units and repaying `repaid` (as `repay`
    books it: scaled debt extinguished rounded down), at current prices."""
    eng = system.engine
    bal = balances(system, owner, sub)
    for s, d in (delta or {}).items():
        bal[s] += d
    index = int(system.vault.borrowIndex())
    scaled = int(eng.position(owner, sub).scaledDebt)
    if repaid:
        debt = risk.to_assets_up(scaled, index)
        scaled = 0 if repaid >= debt else scaled - risk.to_scaled_down(repaid, index)
    configs = {}
    for s in SYMBOLS:
        c = eng.assetConfig(system.tokens[s])
        configs[s] = risk.AssetRisk(decimals=int(c.decimals), ltv=int(c.ltv), lt=int(c.lt), max_discount=0)
    prices = {s: int(system.router.price(system.tokens[s])) for s in SYMBOLS}
    return risk.account_health(bal, prices, configs, scaled, index, int(system.router.price(system.usdc)), 6)


def set_link_price_wad(system: Any, price: int) -> None:
    """LINK's feed has 18 decimals in the test market: any WAD price is exact."""
    system.feeds["LINK"].setAnswer(price, sender=system.admin)


def seized_for(system: Any, repaid: int, discount: int, symbol: str) -> int:
    value = risk.value_down(repaid, int(system.router.price(system.usdc)), 6)
    price = int(system.router.price(system.tokens[symbol]))
    return risk.amount_down(risk.w_mul_down(value, WAD + discount), price, {"WBTC": 8}.get(symbol, 18))


@pytest.fixture
def no_interest(system: Any) -> None:
    """A zero rate model: debt stays exactly constant from block to block."""
    system.vault.setRateModel((0, 0, 0, 80 * PCT), 0, sender=system.admin)


@pytest.fixture
def pm(system: Any) -> Any:
    return system.protection


@pytest.fixture
def operator(accounts: Any) -> Any:
    return accounts[7]


@pytest.fixture
def two_subs(system: Any, alice: Any, no_interest: None) -> None:
    """alice: sub 0 at health 17,000 / 14,000 = 1.2143 (10 WETH, 14,000 USDC); sub 1 at 3.4 (10 WETH, 5,000)."""
    open_position(system, alice, 0, {"WETH": units("WETH", 10)}, 14_000 * 10**6)
    open_position(system, alice, 1, {"WETH": units("WETH", 10)}, 5_000 * 10**6)


# ----------------------------------------------------------------------------------------------------- wiring and roles


def test_deploy_wires_the_module(system: Any, pm: Any) -> None:
    assert system.engine.protectionModule() == pm.address
    assert pm.engine() == system.engine.address
    assert pm.oracle() == system.router.address
    assert tuple(pm.preLiquidationBounds()) == (MAX_PRE, MAX_DISC, MAX_SHARE)
    assert pm.maxTargetHealth() == MAX_TARGET
    assert system.deployment.contracts["ProtectionModule"]["address"] == pm.address
    assert "ProtectionModule" in system.deployment.abis


def test_engine_primitives_refuse_everyone_but_the_module(system: Any, alice: Any, stranger: Any, admin: Any) -> None:
    open_position(system, alice, 0, {"WETH": units("WETH", 1)})
    eng = system.engine
    for who in (stranger, admin, alice):
        with reverts_with(eng.NotProtectionModule, caller=who):
            eng.moveCollateralFor(alice, 0, 1, system.weth, 1, sender=who)
        with reverts_with(eng.NotProtectionModule, caller=who):
            eng.seizeFor(alice, 0, system.weth, 1, who, sender=who)
    assert balances(system, alice, 0)["WETH"] == units("WETH", 1)


def test_set_protection_module_is_admin_only_and_switches_the_caller(
    system: Any, pm: Any, alice: Any, stranger: Any, admin: Any, operator: Any, two_subs: None
) -> None:
    eng = system.engine
    with reverts_with(eng.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        eng.setProtectionModule(stranger, sender=stranger)
    tx = eng.setProtectionModule(stranger, sender=admin)
    assert events(tx, eng.ProtectionModuleSet) == [{"module": stranger.address}]
    assert eng.protectionModule() == stranger.address
    # The old module's primitives now fail inside the engine.
    pm.setRebalancer(operator, 15 * WAD // 10, sender=alice)
    with reverts_with(eng.NotProtectionModule, caller=pm):
        pm.rebalance(alice, 1, 0, system.weth, units("WETH", 1), sender=operator)


def test_governance_setters_are_admin_only(pm: Any, stranger: Any) -> None:
    with reverts_with(pm.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        pm.setPreLiquidationBounds(MAX_PRE, MAX_DISC, MAX_SHARE, sender=stranger)
    with reverts_with(pm.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        pm.setMaxTargetHealth(2 * WAD, sender=stranger)
    assert tuple(pm.preLiquidationBounds()) == (MAX_PRE, MAX_DISC, MAX_SHARE)


@pytest.mark.parametrize(
    "bounds",
    [
        pytest.param((WAD, MAX_DISC, MAX_SHARE), id="threshold=1"),
        pytest.param((MAX_PRE, 5 * PCT + 1, MAX_SHARE), id="discount>5%"),
        pytest.param((MAX_PRE, MAX_DISC, 0), id="share=0"),
        pytest.param((MAX_PRE, MAX_DISC, WAD + 1), id="share>1"),
    ],
)
def test_invalid_bounds_are_refused(pm: Any, admin: Any, bounds: tuple[int, int, int]) -> None:
    with reverts_with(pm.InvalidPreLiquidationBounds, maxPreThreshold=bounds[0], maxDiscount=bounds[1],
                      maxShare=bounds[2]):  # fmt: skip
        pm.setPreLiquidationBounds(*bounds, sender=admin)


def test_bounds_at_their_limits_are_accepted(pm: Any, admin: Any) -> None:
    tx = pm.setPreLiquidationBounds(WAD + 1, 5 * PCT, WAD, sender=admin)
    assert events(tx, pm.PreLiquidationBoundsSet) == [{"maxPreThreshold": WAD + 1, "maxDiscount": 5 * PCT,
                                                      "maxShare": WAD}]  # fmt: skip
    with reverts_with(pm.InvalidMaxTargetHealth, maxTargetHealth=WAD):
        pm.setMaxTargetHealth(WAD, sender=admin)
    tx = pm.setMaxTargetHealth(WAD + 1, sender=admin)
    assert events(tx, pm.MaxTargetHealthSet) == [{"maxTargetHealth": WAD + 1}]


# -------------------------------------------------------------------------------------------- rebalancer: authorisation


def test_set_rebalancer_is_per_owner_and_bounded(pm: Any, alice: Any, bob: Any, operator: Any) -> None:
    with reverts_with(pm.InvalidTargetHealth, targetHealth=WAD, maxTargetHealth=MAX_TARGET):
        pm.setRebalancer(operator, WAD, sender=alice)
    with reverts_with(pm.InvalidTargetHealth, targetHealth=MAX_TARGET + 1, maxTargetHealth=MAX_TARGET):
        pm.setRebalancer(operator, MAX_TARGET + 1, sender=alice)
    with reverts_with(pm.InvalidOperator, operator="0x0000000000000000000000000000000000000000"):
        pm.setRebalancer("0x0000000000000000000000000000000000000000", 2 * WAD, sender=alice)
    pm.setRebalancer(operator, WAD + 1, sender=alice)
    tx = pm.setRebalancer(operator, MAX_TARGET, sender=alice)
    assert events(tx, pm.RebalancerSet) == [{"owner": alice.address, "operator": operator.address,
                                            "targetHealth": MAX_TARGET}]  # fmt: skip
    assert pm.rebalancerOf(alice, operator) == MAX_TARGET
    assert pm.rebalancerOf(bob, operator) == 0  # only the caller's own authorisation was written


def test_unauthorised_operator_cannot_rebalance(
    system: Any, pm: Any, alice: Any, bob: Any, operator: Any, stranger: Any, two_subs: None
) -> None:
    pm.setRebalancer(operator, 15 * WAD // 10, sender=alice)
    with reverts_with(pm.NotRebalancer, owner=alice, operator=stranger):
        pm.rebalance(alice, 1, 0, system.weth, units("WETH", 1), sender=stranger)
    # alice's authorisation is not bob's: the operator cannot touch bob's sub-accounts.
    open_position(system, bob, 0, {"WETH": units("WETH", 10)}, 14_000 * 10**6)
    open_position(system, bob, 1, {"WETH": units("WETH", 10)})
    with reverts_with(pm.NotRebalancer, owner=bob, operator=operator):
        pm.rebalance(bob, 1, 0, system.weth, units("WETH", 1), sender=operator)


def test_revoked_operator_cannot_rebalance(system: Any, pm: Any, alice: Any, operator: Any, two_subs: None) -> None:
    pm.setRebalancer(operator, 15 * WAD // 10, sender=alice)
    pm.rebalance(alice, 1, 0, system.weth, units("WETH", 1), sender=operator)
    tx = pm.setRebalancer(operator, 0, sender=alice)
    assert events(tx, pm.RebalancerSet)[0]["targetHealth"] == 0
    with reverts_with(pm.NotRebalancer, owner=alice, operator=operator):
        pm.rebalance(alice, 1, 0, system.weth, units("WETH", 1), sender=operator)


# ---------------------------------------------------------------------------------------------------- rebalancer: rules


def test_rebalance_moves_within_the_owner_and_emits(
    system: Any, pm: Any, alice: Any, operator: Any, two_subs: None
) -> None:
    target = 15 * WAD // 10
    pm.setRebalancer(operator, target, sender=alice)
    amount = units("WETH", 2)
    giver, receiver = mirror(system, alice, 1, {"WETH": -amount}), mirror(system, alice, 0, {"WETH": amount})
    engine_weth = system.weth.balanceOf(system.engine)
    tx = pm.rebalance(alice, 1, 0, system.weth, amount, sender=operator)
    assert events(tx, pm.Rebalanced) == [{"owner": alice.address, "operator": operator.address, "fromSubId": 1,
        "toSubId": 0, "asset": system.weth.address, "amount": amount, "giverHealthAfter": giver.health,
        "receiverHealthAfter": receiver.health}]  # fmt: skip
    assert events(tx, system.engine.CollateralMoved) == [{"owner": alice.address, "fromSubId": 1, "toSubId": 0,
                                                         "asset": system.weth.address, "amount": amount}]  # fmt: skip
    assert (health(system, alice, 1), health(system, alice, 0)) == (giver.health, receiver.health)
    assert balances(system, alice, 0)["WETH"] + balances(system, alice, 1)["WETH"] == units("WETH", 20)
    assert system.weth.balanceOf(system.engine) == engine_weth


def test_same_sub_account_is_refused(system: Any, pm: Any, alice: Any, operator: Any, two_subs: None) -> None:
    pm.setRebalancer(operator, 15 * WAD // 10, sender=alice)
    with reverts_with(pm.SameSubAccount, subId=0):
        pm.rebalance(alice, 0, 0, system.weth, 1, sender=operator)


def test_receiver_must_be_below_target(system: Any, pm: Any, alice: Any, operator: Any, two_subs: None) -> None:
    """At exactly the target the receiver needs no rescue; one wei of health above it, it may receive."""
    h0 = health(system, alice, 0)
    pm.setRebalancer(operator, h0, sender=alice)
    with reverts_with(pm.ReceiverNotBelowTarget, receiverHealth=h0, targetHealth=h0):
        pm.rebalance(alice, 1, 0, system.weth, 1, sender=operator)
    # A receiver without debt is never below any target.
    with reverts_with(pm.ReceiverNotBelowTarget, receiverHealth=MAX_UINT, targetHealth=h0):
        pm.rebalance(alice, 0, 2, system.weth, 1, sender=operator)
    pm.setRebalancer(operator, h0 + 1, sender=alice)
    pm.rebalance(alice, 1, 0, system.weth, 1, sender=operator)


def test_receiver_may_reach_the_target_but_not_pass_it(
    system: Any, pm: Any, alice: Any, operator: Any, two_subs: None
) -> None:
    """The largest amount keeping the receiver at or below the target passes; one wei more is refused."""
    target = 15 * WAD // 10
    pm.setRebalancer(operator, target, sender=alice)
    best = risk.largest(1, units("WETH", 10), lambda a: mirror(system, alice, 0, {"WETH": a}).health <= target)
    over = mirror(system, alice, 0, {"WETH": best + 1}).health
    assert over > target
    with reverts_with(pm.ReceiverAboveTarget, receiverHealthAfter=over, targetHealth=target):
        pm.rebalance(alice, 1, 0, system.weth, best + 1, sender=operator)
    pm.rebalance(alice, 1, 0, system.weth, best, sender=operator)
    assert target - 10**9 < health(system, alice, 0) <= target


def test_giver_must_stay_at_the_target(system: Any, pm: Any, alice: Any, operator: Any, no_interest: None) -> None:
    """Giver at 1.7 (10 WETH, 10,000 USDC), receiver at 1.0625 (5 WETH, 8,000), target 1.5: the giver's limit
    binds first; the largest amount keeping it at 1.5 passes, one wei more is refused."""
    open_position(system, alice, 0, {"WETH": units("WETH", 5)}, 8_000 * 10**6)
    open_position(system, alice, 1, {"WETH": units("WETH", 10)}, 10_000 * 10**6)
    target = 15 * WAD // 10
    pm.setRebalancer(operator, target, sender=alice)
    best = risk.largest(1, units("WETH", 10), lambda a: mirror(system, alice, 1, {"WETH": -a}).health >= target)
    assert mirror(system, alice, 0, {"WETH": best + 1}).health <= target  # the receiver's rule does not bind
    under = mirror(system, alice, 1, {"WETH": -(best + 1)}).health
    with reverts_with(pm.GiverBelowTarget, giverHealthAfter=under, floorHealth=target):
        pm.rebalance(alice, 1, 0, system.weth, best + 1, sender=operator)
    pm.rebalance(alice, 1, 0, system.weth, best, sender=operator)
    assert health(system, alice, 1) >= target


def test_giver_is_never_moved_into_its_own_band(
    system: Any, pm: Any, alice: Any, operator: Any, no_interest: None
) -> None:
    """Issue 12 item 5: with a target (1.02) below the giver's own pre-liquidation threshold (1.10), an operator
    could move the giver into its band and then pre-liquidate it. The giver's floor is max(target, threshold):
    one wei past the amount that keeps it at the threshold is refused with that floor (before, only the target
    bound it), and the amount itself passes."""
    system.set_price("WETH", 2_300)  # borrow where the initial margin allows it, then the price falls
    open_position(system, alice, 0, {"WETH": units("WETH", 50)}, 84_577 * 10**6)  # at $2,000: 1.005
    open_position(system, alice, 1, {"WETH": units("WETH", 10)}, 15_178 * 10**6)  # at $2,000: 1.12
    system.set_price("WETH", 2_000)
    pm.setPreLiquidation(1, MAX_PRE, MAX_DISC, MAX_SHARE, sender=alice)
    target = 102 * PCT
    pm.setRebalancer(operator, target, sender=alice)
    keep = risk.largest(1, units("WETH", 10), lambda a: mirror(system, alice, 1, {"WETH": -a}).health >= MAX_PRE)
    under = mirror(system, alice, 1, {"WETH": -(keep + 1)}).health
    assert target <= under < MAX_PRE  # the target alone would allow it: the giver would sit in its own band
    assert mirror(system, alice, 0, {"WETH": keep + 1}).health <= target  # the receiver's rule does not bind
    with reverts_with(pm.GiverBelowTarget, giverHealthAfter=under, floorHealth=MAX_PRE):
        pm.rebalance(alice, 1, 0, system.weth, keep + 1, sender=operator)
    pm.rebalance(alice, 1, 0, system.weth, keep, sender=operator)
    assert health(system, alice, 1) >= MAX_PRE


def test_a_liquidatable_receiver_must_be_rescued_not_fed(
    system: Any, pm: Any, alice: Any, operator: Any, no_interest: None
) -> None:
    """Issue 12 item 5: pouring a debt-free sub-account's collateral into a liquidatable one that stays
    liquidatable would only hand it to a liquidator (the operator itself, maybe). A move into a liquidatable
    receiver must leave it healthy (ReceiverStillLiquidatable otherwise); a batch must leave it healthy at its
    end."""
    system.set_price("WETH", 2_300)
    open_position(system, alice, 0, {"WETH": units("WETH", 10)}, 18_000 * 10**6)
    open_position(system, alice, 1, {"WETH": units("WETH", 2)})
    system.set_price("WETH", 2_000)  # receiver at 0.9444: liquidatable
    assert health(system, alice, 0) < WAD
    pm.setRebalancer(operator, 120 * PCT, sender=alice)
    need = risk.largest(1, units("WETH", 2), lambda a: mirror(system, alice, 0, {"WETH": a}).health < WAD) + 1
    short = mirror(system, alice, 0, {"WETH": need - 1}).health
    with reverts_with(pm.ReceiverStillLiquidatable, subId=0, healthAfter=short):
        pm.rebalance(alice, 1, 0, system.weth, need - 1, sender=operator)
    half = (need - 1) // 2
    with reverts_with(pm.ReceiverStillLiquidatable, subId=0, healthAfter=short):
        pm.rebalanceBatch(alice, [(1, 0, system.weth, half), (1, 0, system.weth, need - 1 - half)], sender=operator)
    # Two moves that together lift it above 1 pass, although the first alone leaves it liquidatable.
    pm.rebalanceBatch(alice, [(1, 0, system.weth, half), (1, 0, system.weth, need - half)], sender=operator)
    assert health(system, alice, 0) >= WAD


def test_giver_keeps_its_initial_margin(system: Any, pm: Any, alice: Any, operator: Any, no_interest: None) -> None:
    """LINK: lt 0.70, ltv 0.60, so a LINK-only account has its initial margin only at health >= 7/6. With a target
    of 1.10 the health rule alone would let the giver (1.17, margin intact) end at 1.15; its margin refuses it."""
    open_position(system, alice, 0, {"LINK": units("LINK", 1_000)}, 9_000 * 10**6)
    open_position(system, alice, 1, {"LINK": units("LINK", 1_000)}, 8_005 * 10**6)
    set_link_price_wad(system, 1338 * 10**16)  # receiver 9,366 / 9,000 = 1.0407, giver 9,366 / 8,005 = 1.17
    before = system.engine.accountHealth(alice, 1)
    assert before.ltvWeighted >= before.debtValue
    target = 110 * PCT
    pm.setRebalancer(operator, target, sender=alice)
    amount = units("LINK", 15)
    giver = mirror(system, alice, 1, {"LINK": -amount})
    assert giver.health >= target
    assert giver.ltv_weighted < giver.debt_value
    assert mirror(system, alice, 0, {"LINK": amount}).health <= target
    with reverts_with(pm.GiverInsufficientMargin, borrowingPower=giver.ltv_weighted, debtValue=giver.debt_value):
        pm.rebalance(alice, 1, 0, system.link, amount, sender=operator)


def test_giver_without_debt_gives_freely_up_to_the_receiver_target(
    system: Any, pm: Any, alice: Any, operator: Any, no_interest: None
) -> None:
    open_position(system, alice, 0, {"WETH": units("WETH", 10)}, 15_000 * 10**6)
    open_position(system, alice, 1, {"WBTC": units("WBTC", 1)})
    pm.setRebalancer(operator, 2 * WAD, sender=alice)
    pm.rebalance(alice, 1, 0, system.wbtc, units("WBTC", 0.1), sender=operator)
    assert balances(system, alice, 1)["WBTC"] == units("WBTC", 0.9)
    with reverts_with(system.engine.InsufficientCollateral, asset=system.wbtc, balance=units("WBTC", 0.9),
                      requested=units("WBTC", 1)):  # fmt: skip
        pm.rebalance(alice, 1, 0, system.wbtc, units("WBTC", 1), sender=operator)


def test_lowered_max_target_caps_existing_targets(
    system: Any, pm: Any, alice: Any, admin: Any, operator: Any, two_subs: None
) -> None:
    """alice's target 2.0 is applied as 1.2 once governance lowers the maximum: her receiver at 1.2143 is then
    no longer below it."""
    pm.setRebalancer(operator, 2 * WAD, sender=alice)
    pm.setMaxTargetHealth(120 * PCT, sender=admin)
    assert pm.rebalancerOf(alice, operator) == 2 * WAD
    with reverts_with(pm.ReceiverNotBelowTarget, receiverHealth=health(system, alice, 0), targetHealth=120 * PCT):
        pm.rebalance(alice, 1, 0, system.weth, 1, sender=operator)


# ---------------------------------------------------------------------------------------------- rebalancer: batches


def test_batch_rescues_what_no_single_donor_can(system: Any, pm: Any, alice: Any, operator: Any,
                                                no_interest: None) -> None:  # fmt: skip
    """Receiver 0 at 0.9444 (10 WETH, 18,000 USDC: liquidatable); donors 1 and 2 each hold 2 WETH against 2,400
    (1.4167) and can give only down to the target 1.2, 0.3059 WETH each. One donor alone cannot lift the receiver
    above 1 (it needs 0.5883 WETH); both in one batch can, and each move is checked as `rebalance` checks it."""
    system.set_price("WETH", 2_300)  # borrow where the initial margin allows it, then the price falls
    open_position(system, alice, 0, {"WETH": units("WETH", 10)}, 18_000 * 10**6)
    for i in (1, 2):
        open_position(system, alice, i, {"WETH": units("WETH", 2)}, 2_400 * 10**6)
    system.set_price("WETH", 2_000)
    target = 120 * PCT
    pm.setRebalancer(operator, target, sender=alice)
    give = risk.largest(1, units("WETH", 2), lambda a: mirror(system, alice, 1, {"WETH": -a}).health >= target)
    assert mirror(system, alice, 0, {"WETH": give}).health < WAD  # one donor is not enough
    assert mirror(system, alice, 0, {"WETH": 2 * give}).health >= WAD  # two are
    engine_weth = system.weth.balanceOf(system.engine)
    tx = pm.rebalanceBatch(alice, [(1, 0, system.weth, give), (2, 0, system.weth, give)], sender=operator)
    logged = events(tx, pm.Rebalanced)
    assert [(e["fromSubId"], e["toSubId"], e["amount"]) for e in logged] == [(1, 0, give), (2, 0, give)]
    assert logged[1]["receiverHealthAfter"] == health(system, alice, 0) >= WAD
    assert health(system, alice, 1) >= target
    assert health(system, alice, 2) >= target
    assert sum(balances(system, alice, i)["WETH"] for i in range(3)) == units("WETH", 14)
    assert system.weth.balanceOf(system.engine) == engine_weth


def test_batch_is_all_or_nothing(system: Any, pm: Any, alice: Any, operator: Any, two_subs: None) -> None:
    """A valid first move followed by one that lifts the receiver past the target: the batch reverts with the
    second move's error, checked against the state the first left, and nothing moved."""
    target = 15 * WAD // 10
    pm.setRebalancer(operator, target, sender=alice)
    first = units("WETH", 1)
    best = risk.largest(1, units("WETH", 10), lambda a: mirror(system, alice, 0, {"WETH": a}).health <= target)
    second = best - first + 1  # together one wei past the largest allowed amount
    over = mirror(system, alice, 0, {"WETH": first + second}).health
    before = balances(system, alice, 0), balances(system, alice, 1)
    with reverts_with(pm.ReceiverAboveTarget, receiverHealthAfter=over, targetHealth=target):
        pm.rebalanceBatch(alice, [(1, 0, system.weth, first), (1, 0, system.weth, second)], sender=operator)
    assert (balances(system, alice, 0), balances(system, alice, 1)) == before
    # The same two moves one wei smaller pass, and the receiver ends exactly where the mirror says.
    pm.rebalanceBatch(alice, [(1, 0, system.weth, first), (1, 0, system.weth, second - 1)], sender=operator)
    assert health(system, alice, 0) == mirror(system, alice, 0).health <= target
    assert balances(system, alice, 0)["WETH"] == before[0]["WETH"] + best


def test_batch_needs_moves_and_an_authorised_operator(
    system: Any, pm: Any, alice: Any, operator: Any, stranger: Any, two_subs: None
) -> None:
    pm.setRebalancer(operator, 15 * WAD // 10, sender=alice)
    with reverts_with(pm.NoMoves):
        pm.rebalanceBatch(alice, [], sender=operator)
    with reverts_with(pm.NotRebalancer, owner=alice, operator=stranger):
        pm.rebalanceBatch(alice, [(1, 0, system.weth, 1)], sender=stranger)
    with reverts_with(pm.SameSubAccount, subId=1):
        pm.rebalanceBatch(alice, [(1, 0, system.weth, 1), (1, 1, system.weth, 1)], sender=operator)


def test_rebalance_from_a_borrowing_giver_waits_for_the_sequencer(
    system: Any, project: Any, pm: Any, alice: Any, admin: Any, operator: Any, two_subs: None
) -> None:
    """The owner's own move needs an up sequencer when the giver has debt; so does the operator's."""
    feed = project.MockAggregator.deploy(0, 1, "L2 Sequencer Uptime", sender=admin)  # answer 1 = down
    system.router.setSequencerFeed(feed, 3600, sender=admin)
    pm.setRebalancer(operator, 15 * WAD // 10, sender=alice)
    with reverts_with(system.router.SequencerDown):
        pm.rebalance(alice, 1, 0, system.weth, units("WETH", 1), sender=operator)


# ---------------------------------------------------------------------------------------------- pre-liquidation: opt-in


def test_set_pre_liquidation_bounds_each_field(pm: Any, alice: Any) -> None:
    bad = [
        (WAD, MAX_DISC, MAX_SHARE),
        (MAX_PRE + 1, MAX_DISC, MAX_SHARE),
        (MAX_PRE, 0, MAX_SHARE),
        (MAX_PRE, MAX_DISC + 1, MAX_SHARE),
        (MAX_PRE, MAX_DISC, 0),
        (MAX_PRE, MAX_DISC, MAX_SHARE + 1),
        (MAX_PRE, 0, 0),
    ]
    for pt, d, s in bad:
        with reverts_with(pm.InvalidPreLiquidation, preThreshold=pt, discount=d, maxShare=s):
            pm.setPreLiquidation(3, pt, d, s, sender=alice)
    pm.setPreLiquidation(3, WAD + 1, 1, 1, sender=alice)
    tx = pm.setPreLiquidation(3, MAX_PRE, MAX_DISC, MAX_SHARE, sender=alice)
    assert events(tx, pm.PreLiquidationSet) == [{"owner": alice.address, "subId": 3, "preThreshold": MAX_PRE,
                                                "discount": MAX_DISC, "maxShare": MAX_SHARE}]  # fmt: skip
    assert tuple(pm.preLiquidationOf(alice, 3)) == (MAX_PRE, MAX_DISC, MAX_SHARE)
    assert tuple(pm.preLiquidationOf(alice, 4)) == (0, 0, 0)


@pytest.fixture
def banded(system: Any, pm: Any, bob: Any, liquidator: Any, no_interest: None) -> int:
    """bob's sub 0: 1,000 LINK, 9,000 USDC debt, opted in (1.10, 3 %, 50 %); LINK at $13.5: health 1.05.
    The liquidator holds USDC and has approved the module. Returns the health."""
    open_position(system, bob, 0, {"LINK": units("LINK", 1_000)}, 9_000 * 10**6)
    pm.setPreLiquidation(0, MAX_PRE, MAX_DISC, MAX_SHARE, sender=bob)
    set_link_price_wad(system, 135 * 10**17)
    fund(system, liquidator, "USDC", 100_000 * 10**6)
    system.usdc.approve(pm, MAX_UINT, sender=liquidator)
    h = health(system, bob, 0)
    assert h == 105 * PCT
    return h


def test_pre_liquidation_repays_the_share_and_pays_exactly_the_discount(
    system: Any, pm: Any, bob: Any, liquidator: Any, banded: int
) -> None:
    """bob opted in at 3 %: the band pays min(3 %, the engine's minDiscount 0.5 %)."""
    repaid = 4_500 * 10**6  # 50 % of 9,000
    seized = seized_for(system, repaid, BAND_DISC, "LINK")
    after = mirror(system, bob, 0, {"LINK": -seized}, repaid=repaid).health
    assert tuple(pm.previewPreLiquidation(bob, 0, system.link, MAX_UINT)) == (repaid, seized, banded)
    usdc0, link0 = system.usdc.balanceOf(liquidator), system.link.balanceOf(liquidator)
    supplied0 = system.engine.assetSupply(system.link).totalSupplied
    tx = pm.preLiquidate(bob, 0, system.link, MAX_UINT, seized, liquidator, sender=liquidator)
    assert events(tx, pm.PreLiquidated) == [{"caller": liquidator.address, "owner": bob.address, "subId": 0,
        "collateral": system.link.address, "repaid": repaid, "seized": seized, "discount": BAND_DISC,
        "healthBefore": banded, "healthAfter": after}]  # fmt: skip
    assert events(tx, system.engine.CollateralSeized) == [{"owner": bob.address, "subId": 0,
        "asset": system.link.address, "amount": seized, "receiver": liquidator.address}]  # fmt: skip
    assert after > banded
    assert health(system, bob, 0) == after
    assert system.usdc.balanceOf(liquidator) == usdc0 - repaid
    assert system.link.balanceOf(liquidator) == link0 + seized
    assert system.engine.debtOf(bob, 0) == 4_500 * 10**6
    assert system.engine.assetSupply(system.link).totalSupplied == supplied0 - seized
    assert system.usdc.balanceOf(pm) == 0
    assert system.usdc.allowance(pm, system.engine) == MAX_UINT  # the standing approval, never drawn down
    # The liquidator's gain is the discount on the repaid value, less the rounding down of the seized amount.
    gain = risk.value_down(seized, 135 * 10**17, 18) - repaid * 10**12
    assert repaid * 10**12 * BAND_DISC // WAD - 135 * 10**17 // 10**18 - 1 <= gain <= repaid * 10**12 * BAND_DISC // WAD
    # 4,522.5 USD of LINK at 13.5: 335 LINK exactly.
    assert seized == 4_5225 * 10**17 * 10**18 // (135 * 10**17)


def test_a_smaller_request_is_repaid_as_asked(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    repaid, _, _ = pm.previewPreLiquidation(bob, 0, system.link, 1_000 * 10**6)
    assert repaid == 1_000 * 10**6
    pm.preLiquidate(bob, 0, system.link, 1_000 * 10**6, 0, liquidator, sender=liquidator)
    assert system.engine.debtOf(bob, 0) == 8_000 * 10**6


def test_band_lower_edge_is_exactly_one(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    """1,000 LINK at price p: lt-weighted value 700·p. The smallest p with 700·p >= 9,000e18 gives health exactly
    1 (pre-liquidation allowed); one wei less gives health < 1 (UseLiquidation)."""
    p = -(-9_000 * 10**18 // 700)
    set_link_price_wad(system, p - 1)
    below = health(system, bob, 0)
    assert below < WAD
    with reverts_with(pm.UseLiquidation, health=below):
        pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    set_link_price_wad(system, p)
    assert health(system, bob, 0) == WAD
    pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    assert health(system, bob, 0) > WAD


def test_band_upper_edge_is_the_pre_threshold(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    """health == preThreshold is outside the band; preThreshold one wei above the health puts it inside."""
    pm.setPreLiquidation(0, banded, MAX_DISC, MAX_SHARE, sender=bob)
    with reverts_with(pm.NotInPreLiquidationBand, health=banded, preThreshold=banded):
        pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    pm.setPreLiquidation(0, banded + 1, MAX_DISC, MAX_SHARE, sender=bob)
    pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)


def test_account_without_debt_or_opt_in_is_refused(
    system: Any, pm: Any, bob: Any, alice: Any, liquidator: Any, banded: int
) -> None:
    with reverts_with(pm.NotOptedIn, owner=alice, subId=0):
        pm.preLiquidate(alice, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    open_position(system, alice, 0, {"LINK": units("LINK", 1)})
    pm.setPreLiquidation(0, MAX_PRE, MAX_DISC, MAX_SHARE, sender=alice)
    with reverts_with(pm.NotInPreLiquidationBand, health=MAX_UINT, preThreshold=MAX_PRE):
        pm.preLiquidate(alice, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    # Opting out (all zero) ends it at once.
    pm.setPreLiquidation(0, 0, 0, 0, sender=bob)
    with reverts_with(pm.NotOptedIn, owner=bob, subId=0):
        pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)


def test_zero_repayment_and_nothing_seized(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    with reverts_with(pm.ZeroRepayment, requested=0, maxRepay=4_500 * 10**6):
        pm.preLiquidate(bob, 0, system.link, 0, 0, liquidator, sender=liquidator)
    # One USDC unit buys less than one LINK wei? No: 1e-6 USD is 7.6e10 LINK wei; WBTC has 8 decimals, so one
    # USDC unit (1.03e-6 USD) is worth less than a satoshi ($0.0006): nothing to seize.
    open_position(system, bob, 0, {"WBTC": units("WBTC", 0.001)})  # +$60: health 1.0553, still in the band
    with reverts_with(pm.NothingSeized, repaid=1):
        pm.preLiquidate(bob, 0, system.wbtc, 1, 0, liquidator, sender=liquidator)


def test_seize_beyond_the_balance_is_refused(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    open_position(system, bob, 0, {"WETH": units("WETH", 0.1)})  # $200 of WETH; health stays in the band
    h = health(system, bob, 0)
    assert WAD <= h < MAX_PRE
    seized = seized_for(system, 4_500 * 10**6, BAND_DISC, "WETH")
    with reverts_with(pm.SeizeExceedsBalance, seized=seized, balance=units("WETH", 0.1)):
        pm.preLiquidate(bob, 0, system.weth, MAX_UINT, 0, liquidator, sender=liquidator)


def test_min_seized(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    _, seized, _ = pm.previewPreLiquidation(bob, 0, system.link, MAX_UINT)
    with reverts_with(pm.SeizedBelowMinimum, seized=seized, minSeized=seized + 1):
        pm.preLiquidate(bob, 0, system.link, MAX_UINT, seized + 1, liquidator, sender=liquidator)
    tx = pm.preLiquidate(bob, 0, system.link, MAX_UINT, seized, liquidator, sender=liquidator)
    assert events(tx, pm.PreLiquidated)[0]["seized"] == seized


def test_dust_rule(system: Any, pm: Any, bob: Any, liquidator: Any, banded: int) -> None:
    """19 USDC of debt: half (9.5) would leave 9.5 < minDebt 10; 9 leaves exactly 10."""
    carol = liquidator  # any owner: the liquidator pre-liquidates its own small sub-account
    set_link_price_wad(system, 15 * WAD)
    open_position(system, carol, 5, {"LINK": units("LINK", 2.2)}, 19 * 10**6)
    set_link_price_wad(system, 135 * 10**17)  # 2.2·13.5·0.7 / 19 = 1.094
    pm.setPreLiquidation(5, MAX_PRE, MAX_DISC, MAX_SHARE, sender=carol)
    with reverts_with(pm.PreLiquidationLeavesDust, remainingDebt=95 * 10**5, minDebt=MIN_DEBT):
        pm.preLiquidate(carol, 5, system.link, MAX_UINT, 0, carol, sender=carol)
    pm.preLiquidate(carol, 5, system.link, 9 * 10**6, 0, carol, sender=carol)
    assert system.engine.debtOf(carol, 5) == MIN_DEBT


def test_pre_liquidation_must_improve_health(
    system: Any, pm: Any, bob: Any, admin: Any, liquidator: Any, banded: int
) -> None:
    """With LINK's lt raised to 0.996 and the band's 0.5 %, lt·(1 + d) = 1.00098: at health 1.0005 seizing LINK
    lowers health, so the call is refused with both figures."""
    cfg = system.engine.assetConfig(system.link)
    system.engine.setAssetConfig(system.link, 90 * PCT, 996 * PCT // 10, 0, 10_000_000 * 10**18, sender=admin)
    set_link_price_wad(system, -(-9_0045 * 10**17 // 996))  # 996·p ≈ 9,004.5: health 1.0005
    before = health(system, bob, 0)
    assert WAD < before < 1_000_98 * WAD // 100_000
    repaid = 4_500 * 10**6
    seized = seized_for(system, repaid, BAND_DISC, "LINK")
    after = mirror(system, bob, 0, {"LINK": -seized}, repaid=repaid).health
    assert after < before
    with reverts_with(pm.PreLiquidationMustImprove, healthBefore=before, healthAfter=after):
        pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    assert cfg.lt == 70 * PCT  # the market's own LINK config, restored by the chain revert after the test


def test_tightened_bounds_clamp_existing_opt_ins(
    system: Any, pm: Any, bob: Any, admin: Any, liquidator: Any, banded: int
) -> None:
    """bob opted in at (1.10, 3 %, 50 %); governance tightens to (1.04, 0.2 %, 25 %): at health 1.05 he is now
    outside the band; at 1.03 a pre-liquidation repays 25 % at 0.2 %. His stored opt-in is unchanged."""
    pm.setPreLiquidationBounds(104 * PCT, 2 * PCT // 10, 25 * PCT, sender=admin)
    assert tuple(pm.preLiquidationOf(bob, 0)) == (MAX_PRE, MAX_DISC, MAX_SHARE)
    assert tuple(pm.effectivePreLiquidation(bob, 0)) == (104 * PCT, 2 * PCT // 10, 25 * PCT)
    with reverts_with(pm.NotInPreLiquidationBand, health=banded, preThreshold=104 * PCT):
        pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    set_link_price_wad(system, 13_242_857_142_857_142_858)  # 700·p / 9,000 = 1.03
    h = health(system, bob, 0)
    assert WAD <= h < 104 * PCT
    seized = seized_for(system, 2_250 * 10**6, 2 * PCT // 10, "LINK")
    tx = pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    ev = events(tx, pm.PreLiquidated)[0]
    assert (ev["repaid"], ev["seized"], ev["discount"]) == (2_250 * 10**6, seized, 2 * PCT // 10)
    # Loosening again restores the owner's own choice, as far as the engine's minDiscount allows.
    pm.setPreLiquidationBounds(MAX_PRE, MAX_DISC, MAX_SHARE, sender=admin)
    assert tuple(pm.effectivePreLiquidation(bob, 0)) == (MAX_PRE, BAND_DISC, MAX_SHARE)


def test_pre_liquidation_costs_the_user_less_than_the_liquidation_it_prevents(
    system: Any, pm: Any, bob: Any, alice: Any, liquidator: Any, banded: int
) -> None:
    """Two identical accounts (bob opted in, alice not) through the same price fall; penalty = seized value minus
    repaid value. bob is pre-liquidated in the band (50 % at 3 %) and is still healthy after the fall to LINK
    $12.3; alice is liquidated there at health 0.9567 (50 % close factor, discount 0.5 % + 4.33 % = 4.83 %) and
    pays more, per dollar repaid and in total."""
    set_link_price_wad(system, 15 * WAD)
    open_position(system, alice, 0, {"LINK": units("LINK", 1_000)}, 9_000 * 10**6)
    set_link_price_wad(system, 135 * 10**17)
    tx = pm.preLiquidate(bob, 0, system.link, MAX_UINT, 0, liquidator, sender=liquidator)
    pre = events(tx, pm.PreLiquidated)[0]
    pre_penalty = risk.value_down(pre["seized"], 135 * 10**17, 18) - pre["repaid"] * 10**12

    set_link_price_wad(system, 123 * 10**17)
    assert health(system, bob, 0) >= WAD  # the pre-liquidated account is safe at the new price
    h_alice = health(system, alice, 0)
    assert h_alice < WAD
    tx = system.engine.liquidate(alice, 0, system.link, MAX_UINT, 0, liquidator, b"", sender=liquidator)
    liq = events(tx, system.engine.Liquidated)[0]
    liq_penalty = risk.value_down(liq["seized"], 123 * 10**17, 18) - liq["repaid"] * 10**12
    assert liq["discount"] > pre["discount"]
    assert pre_penalty * liq["repaid"] < liq_penalty * pre["repaid"]  # per dollar repaid
    assert pre_penalty < liq_penalty


def test_lifting_an_account_into_the_band_never_costs_it_more_than_the_liquidation(
    system: Any, chain: Any, pm: Any, bob: Any, liquidator: Any, admin: Any, banded: int
) -> None:
    """Issue 12 item 4: bob is just below health 1, where the engine's liquidation would pay minDiscount + (1 -
    health). A liquidator deposits a few wei of LINK to lift him to 1 and pre-liquidates instead: the band pays
    at most the engine's minDiscount, so per dollar repaid bob pays no more than the liquidation would have charged
    (before: the band's 3 %, 4.3 times more). It holds for any minDiscount governance sets."""
    for min_discount in (5 * PCT // 10, 2 * PCT):
        snapshot = chain.snapshot()
        rp = system.engine.riskParams()
        system.engine.setRiskParams((min_discount, rp.fullCloseHealth, rp.fullCloseDebtValue, rp.minDebt),
                                    sender=admin)  # fmt: skip
        set_link_price_wad(system, 9_000 * 10**18 // 700 - 10**15)  # health just below 1
        h = health(system, bob, 0)
        assert WAD - 10**14 < h < WAD
        engine = system.engine.previewLiquidation(bob, 0, system.link, 1_000 * 10**6)
        lift = 1
        while mirror(system, bob, 0, {"LINK": lift}).health < WAD:
            lift *= 2
        fund(system, liquidator, "LINK", lift)
        system.engine.deposit(bob, 0, system.link, lift, sender=liquidator)
        assert health(system, bob, 0) >= WAD
        tx = pm.preLiquidate(bob, 0, system.link, 1_000 * 10**6, 0, liquidator, sender=liquidator)
        pre = events(tx, pm.PreLiquidated)[0]
        assert pre["discount"] == min(MAX_DISC, min_discount) <= engine.discount
        assert pre["seized"] <= engine.seized  # the same repayment buys no more in the band
        chain.restore(snapshot)


# ----------------------------------------------------------------------------------------------------------------- fuzz


FUZZ_STEPS = 150


def _snapshot(system: Any, owner: Any, subs: range) -> dict[int, tuple[Any, dict[str, int]]]:
    """Each sub-account's AccountHealth and balances by symbol (balancesOf is in assetList order)."""
    order = [str(a) for a in system.engine.assetList()]
    names = {system.tokens[s].address: s for s in SYMBOLS}
    out = {}
    for i in subs:
        bal = system.engine.balancesOf(owner, i)
        out[i] = (system.engine.accountHealth(owner, i), {names[order[k]]: int(v) for k, v in enumerate(bal)})
    return out


def test_fuzz_an_operator_cannot_hurt_or_drain_the_owner(
    system: Any, chain: Any, pm: Any, alice: Any, bob: Any, operator: Any, no_interest: None
) -> None:
    """Seeded random sequences: alice has four sub-accounts with random collateral and debt and authorises an
    operator with a random target; between attempts prices move by up to ±12 %. The operator tries random
    rebalances (random direction, asset and log-uniform amount), a third of them batches of two or three moves,
    and now and then one of bob's accounts, which he never authorised. After every successful rebalance or batch,
    with H the target:
      (a) every sub-account's health is >= min(its health before, H), so none becomes liquidatable;
      (b) every sub-account with debt that had its initial margin still has it;
      (c) alice's total of each asset over her sub-accounts is unchanged, and so are the engine's token balances
          and totalSupplied: nothing left the owner or the engine.
    A refused attempt is a reverted transaction. The run must include successes and refusals."""
    rng = random.Random(6)
    subs = range(4)
    caps = {"WETH": 2_000, "WBTC": 60_000, "LINK": 15}
    for i in subs:
        coll = {s: units(s, rng.uniform(500, 8_000) / caps[s]) for s in rng.sample(SYMBOLS, rng.randint(1, 3))}
        open_position(system, alice, i, coll)
        power = int(system.engine.accountHealth(alice, i).ltvWeighted) // 10**12  # USD in USDC units
        if rng.random() < 0.8:
            system.engine.borrow(i, int(power * rng.uniform(0.6, 0.97)), alice, sender=alice)
    open_position(system, bob, 0, {"WETH": units("WETH", 5)}, 7_000 * 10**6)
    open_position(system, bob, 1, {"WETH": units("WETH", 5)})
    target = rng.randint(105, 250) * PCT
    pm.setRebalancer(operator, target, sender=alice)
    prices = {"WETH": 2_000.0, "WBTC": 60_000.0, "LINK": 15.0}
    engine_tokens = {s: system.tokens[s].balanceOf(system.engine) for s in SYMBOLS}
    supplied = {s: system.engine.assetSupply(system.tokens[s]).totalSupplied for s in SYMBOLS}
    w3 = chain.provider.web3
    successes = refusals = batches = 0
    for _ in range(FUZZ_STEPS):
        moved = rng.choice(SYMBOLS)
        prices[moved] = min(max(prices[moved] * rng.uniform(0.88, 1.12), caps[moved] * 0.5), caps[moved] * 1.5)
        system.set_price(moved, round(prices[moved], 6))
        before = _snapshot(system, alice, subs)
        owner = bob if rng.random() < 0.1 else alice
        moves = []
        for _ in range(rng.choice((1, 1, 2, 3))):  # a third of the attempts are batches
            frm, to = rng.sample(list(subs) if owner is alice else [0, 1], 2)
            asset = rng.choice(SYMBOLS)
            held = before[frm][1][asset] if owner is alice else int(system.engine.collateralOf(bob, frm, system.weth))
            amount = max(1, int(held * 10 ** -rng.uniform(0, 4))) if held else rng.randint(1, 10**6)
            moves.append((frm, to, system.tokens[asset], amount))
        if len(moves) == 1:
            method, args = pm.rebalance, (owner, *moves[0])
        else:
            method, args = pm.rebalanceBatch, (owner, moves)
        # eth_call first: ape's revert decoding of a sent transaction costs seconds per refusal.
        call = {"from": operator.address, "to": pm.address, "data": method.encode_input(*args).to_0x_hex()}
        try:
            w3.eth.call(call)  # type: ignore[arg-type]
        except (Web3ContractLogicError, ValueError):
            refusals += 1  # it would revert: nothing changes
            continue
        method(*args, sender=operator)
        assert owner is alice, "an operator rebalanced an owner who never authorised it"
        successes += 1
        batches += len(moves) > 1
        after = _snapshot(system, alice, subs)
        for i in subs:
            hb, ha = before[i][0], after[i][0]
            assert ha.health >= min(hb.health, target), (i, hb.health, ha.health)
            assert ha.health >= WAD or hb.health < WAD
            if ha.debt and hb.ltvWeighted >= hb.debtValue:
                assert ha.ltvWeighted >= ha.debtValue, i
        for s in SYMBOLS:
            assert sum(after[i][1][s] for i in subs) == sum(before[i][1][s] for i in subs)
            assert system.tokens[s].balanceOf(system.engine) == engine_tokens[s]
            assert system.engine.assetSupply(system.tokens[s]).totalSupplied == supplied[s]
    assert successes >= 10, (successes, refusals)
    assert refusals >= 10, (successes, refusals)
    assert batches >= 2, batches  # some successful batches were checked too (random batches mostly fail)


# ----------------------------------------------------------------------------------------------- deployment record


def test_deployment_record_carries_the_module_and_old_records_still_load(system: Any, tmp_path: Any) -> None:
    import json

    from keeper.chain.deployment import load_deployment

    record = json.loads(json.dumps(system.deployment.record()))  # a copy: the fixture's record is shared
    path = tmp_path / "31337.json"
    path.write_text(json.dumps(record))
    assert load_deployment(path).protection == system.protection.address
    assert load_deployment(path).address_of("ProtectionModule") == system.protection.address
    del record["contracts"]["ProtectionModule"]
    del record["abis"]["ProtectionModule"]
    path.write_text(json.dumps(record))
    old = load_deployment(path)
    assert old.protection is None
    assert old.address_of("ProtectionModule") is None
