"""Bounded, ramped risk-parameter updates on a real Anvil node: MarginEngine.setRiskBounds (governance) and
updateRiskParams (RISK_KEEPER_ROLE), the lt ramp every health figure follows, and the deploy config's bounds.

Every expected figure is computed here from the rules on IMarginEngine: a lowered lt ramps linearly from the
effective lt at the update's timestamp to the target at `rampEnd`, rounded down (keeper.core.risk.ramped_lt, which the
differential test checks against the engine block by block); ltv and raised lts apply at once.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import MAX_UINT, RAY, ROOT, WAD, ck_system, reverts_with
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.exceptions import ContractCustomError

from keeper.chain.reads import read_market
from keeper.core import risk

PCT = WAD // 100
ZERO_ROLE = b"\x00" * 32
KEEPER_ROLE = Web3.keccak(text="RISK_KEEPER_ROLE")
DAY = 86_400
YEAR = 365 * DAY

# The test market (conftest.TEST_CONFIG) as the integers the engine holds.
LTV = {"WETH": 80 * PCT, "WBTC": 75 * PCT, "LINK": 60 * PCT}
LT = {"WETH": 85 * PCT, "WBTC": 80 * PCT, "LINK": 70 * PCT}
CAP = {"WETH": 1_000_000 * 10**18, "WBTC": 100_000 * 10**8, "LINK": 10_000_000 * 10**18}
DEC = {"WETH": 18, "WBTC": 8, "LINK": 18}

# WETH's bounds in most tests: ltv 0.50-0.88, lt 0.60-0.90, steps of 0.05, an hour apart, a day's ramp.
BOUNDS = (50 * PCT, 88 * PCT, 60 * PCT, 90 * PCT, 5 * PCT, 3600, DAY)
DISABLED = (0, 0, 0, 0, 0, 0, 0)


# --------------------------------------------------------------------------------------------- helpers


def events(tx: Any, event: Any) -> list[dict[str, Any]]:
    return [dict(log.event_arguments) for log in tx.decode_logs(event)]


def updated(system: Any, keeper: Any, ltv: int, ltf: int, ltt: int, ramp_end: int) -> dict[str, Any]:
    return {"asset": system.weth.address, "keeper": keeper.address, "ltv": ltv, "ltFrom": ltf, "ltTarget": ltt,
            "rampEnd": ramp_end}  # fmt: skip


def cfg_at(system: Any, block: int | None = None, symbol: str = "WETH") -> Any:
    token = system.tokens[symbol]
    return system.engine.assetConfig(token) if block is None else system.engine.assetConfig(token, block_id=block)


def update_at(system: Any, chain: Any, keeper: Any, t: int, ltv: int, lt: int, symbol: str = "WETH") -> Any:
    """updateRiskParams mined at timestamp `t`."""
    chain.pending_timestamp = t
    return system.engine.updateRiskParams(system.tokens[symbol], ltv, lt, sender=keeper)


@pytest.fixture
def keeper(accounts: Any, system: Any, admin: Any) -> Any:
    """A risk keeper (an account no other fixture uses) holding RISK_KEEPER_ROLE."""
    k = accounts[6]
    system.engine.grantRole(KEEPER_ROLE, k, sender=admin)
    return k


@pytest.fixture
def bounded(system: Any, admin: Any, keeper: Any) -> Any:
    """WETH with BOUNDS set and a keeper; returns the bounds' receipt."""
    return system.engine.setRiskBounds(system.weth, BOUNDS, sender=admin)


@pytest.fixture
def t0(chain: Any, bounded: Any) -> int:
    """A timestamp a little ahead of the chain for the first update."""
    return int(chain.pending_timestamp) + 100


# --------------------------------------------------------------------------------------------- roles


def test_role_constant_is_the_hash_of_its_name(system: Any) -> None:
    assert bytes(system.engine.RISK_KEEPER_ROLE()) == bytes(KEEPER_ROLE)


def test_stranger_cannot_set_bounds_or_update(system: Any, stranger: Any, bounded: Any) -> None:
    """setRiskBounds needs DEFAULT_ADMIN_ROLE and updateRiskParams RISK_KEEPER_ROLE: exact AccessControl errors."""
    eng = system.engine
    with reverts_with(eng.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        eng.setRiskBounds(system.weth, DISABLED, sender=stranger)
    with reverts_with(eng.AccessControlUnauthorizedAccount, account=stranger, neededRole=bytes(KEEPER_ROLE)):
        eng.updateRiskParams(system.weth, 79 * PCT, 84 * PCT, sender=stranger)
    assert tuple(eng.riskBounds(system.weth)) == BOUNDS
    assert (cfg_at(system).ltv, cfg_at(system).lt) == (LTV["WETH"], LT["WETH"])


def test_admin_without_the_keeper_role_cannot_update(system: Any, admin: Any, bounded: Any) -> None:
    with reverts_with(system.engine.AccessControlUnauthorizedAccount, account=admin, neededRole=bytes(KEEPER_ROLE)):
        system.engine.updateRiskParams(system.weth, 79 * PCT, 84 * PCT, sender=admin)


def test_keeper_cannot_set_bounds(system: Any, keeper: Any, bounded: Any) -> None:
    with reverts_with(system.engine.AccessControlUnauthorizedAccount, account=keeper, neededRole=ZERO_ROLE):
        system.engine.setRiskBounds(system.weth, DISABLED, sender=keeper)


def test_revoked_keeper_cannot_update(system: Any, chain: Any, admin: Any, keeper: Any, t0: int) -> None:
    """The keeper updates once, loses the role, and its next (otherwise valid) update reverts."""
    update_at(system, chain, keeper, t0, 79 * PCT, 86 * PCT)
    system.engine.revokeRole(KEEPER_ROLE, keeper, sender=admin)
    chain.pending_timestamp = t0 + 3600
    with reverts_with(system.engine.AccessControlUnauthorizedAccount, account=keeper, neededRole=bytes(KEEPER_ROLE)):
        system.engine.updateRiskParams(system.weth, 78 * PCT, 87 * PCT, sender=keeper)
    assert (cfg_at(system).ltv, cfg_at(system).lt) == (79 * PCT, 86 * PCT)


# --------------------------------------------------------------------------------------------- bounds


def test_set_risk_bounds_stores_and_emits(system: Any, bounded: Any) -> None:
    assert events(bounded, system.engine.RiskBoundsSet) == [
        {"asset": system.weth.address, "ltvMin": BOUNDS[0], "ltvMax": BOUNDS[1], "ltMin": BOUNDS[2],
         "ltMax": BOUNDS[3], "maxStep": BOUNDS[4], "minInterval": BOUNDS[5], "rampDuration": BOUNDS[6]}
    ]  # fmt: skip
    assert tuple(system.engine.riskBounds(system.weth)) == BOUNDS
    assert tuple(system.engine.riskBounds(system.wbtc)) == DISABLED


@pytest.mark.parametrize(
    "bounds",
    [
        pytest.param((51 * PCT, 50 * PCT, 60 * PCT, 90 * PCT, 5 * PCT, 0, DAY), id="ltvMin>ltvMax"),
        pytest.param((50 * PCT, 88 * PCT, 91 * PCT, 90 * PCT, 5 * PCT, 0, DAY), id="ltMin>ltMax"),
        pytest.param((50 * PCT, 88 * PCT, 60 * PCT, WAD, 5 * PCT, 0, DAY), id="ltMax=1"),
        pytest.param((50 * PCT, 88 * PCT, 60 * PCT, 90 * PCT, 0, 3600, DAY), id="maxStep=0"),
        pytest.param((50 * PCT, 88 * PCT, 60 * PCT, 90 * PCT, 5 * PCT, 3600, 0), id="rampDuration=0"),
        pytest.param((50 * PCT, 88 * PCT, 60 * PCT, 90 * PCT, 5 * PCT, 3600, YEAR + 1), id="rampDuration>1y"),
        pytest.param((0, 0, 0, 0, 0, 1, 0), id="only-minInterval"),
        pytest.param((0, 0, 0, 0, 0, 0, 1), id="only-rampDuration"),
    ],
)
def test_invalid_bounds_are_rejected(system: Any, admin: Any, bounds: tuple[int, ...]) -> None:
    with reverts_with(system.engine.InvalidRiskBounds, asset=system.weth):
        system.engine.setRiskBounds(system.weth, bounds, sender=admin)
    assert tuple(system.engine.riskBounds(system.weth)) == DISABLED


def test_bounds_at_their_edges_are_accepted(system: Any, admin: Any) -> None:
    """ltvMin == ltvMax, ltMin == ltMax, ltMax = 1 - 1 wei, a one-wei step, no interval, a 365-day ramp."""
    edge = (70 * PCT, 70 * PCT, WAD - 1, WAD - 1, 1, 0, YEAR)
    system.engine.setRiskBounds(system.weth, edge, sender=admin)
    assert tuple(system.engine.riskBounds(system.weth)) == edge


def test_bounds_of_an_unlisted_asset_are_refused(system: Any, project: Any, admin: Any, keeper: Any) -> None:
    other = admin.deploy(project.MockERC20, "Other", "OTH", 18)
    with reverts_with(system.engine.AssetNotListed, asset=other):
        system.engine.setRiskBounds(other, BOUNDS, sender=admin)
    with reverts_with(system.engine.AssetNotListed, asset=other):
        system.engine.updateRiskParams(other, 79 * PCT, 84 * PCT, sender=keeper)


def test_update_without_bounds_reverts(system: Any, keeper: Any) -> None:
    with reverts_with(system.engine.RiskBoundsNotSet, asset=system.weth):
        system.engine.updateRiskParams(system.weth, 79 * PCT, 84 * PCT, sender=keeper)


def test_all_zero_bounds_disable_keeper_updates(system: Any, chain: Any, admin: Any, keeper: Any, t0: int) -> None:
    """Bounds that worked are replaced by all zeros: the next update reverts RiskBoundsNotSet."""
    update_at(system, chain, keeper, t0, 79 * PCT, 86 * PCT)
    tx = system.engine.setRiskBounds(system.weth, DISABLED, sender=admin)
    assert events(tx, system.engine.RiskBoundsSet) == [
        {"asset": system.weth.address, "ltvMin": 0, "ltvMax": 0, "ltMin": 0, "ltMax": 0, "maxStep": 0,
         "minInterval": 0, "rampDuration": 0}
    ]  # fmt: skip
    chain.pending_timestamp = t0 + 2 * 3600
    with reverts_with(system.engine.RiskBoundsNotSet, asset=system.weth):
        system.engine.updateRiskParams(system.weth, 80 * PCT, 85 * PCT, sender=keeper)


def test_values_outside_the_bounds_revert(system: Any, admin: Any, keeper: Any) -> None:
    """Narrow bounds, all within one step of the current ltv 0.80 / lt 0.85: one wei outside either end of either
    range reverts with the value and the range; both ends themselves are accepted."""
    eng, weth = system.engine, system.weth
    lo_v, hi_v, lo_t, hi_t = 78 * PCT, 82 * PCT, 83 * PCT, 87 * PCT
    eng.setRiskBounds(weth, (lo_v, hi_v, lo_t, hi_t, 5 * PCT, 0, DAY), sender=admin)
    for ltv, lt, value, lo, hi in [
        (lo_v - 1, 85 * PCT, lo_v - 1, lo_v, hi_v),
        (hi_v + 1, 85 * PCT, hi_v + 1, lo_v, hi_v),
        (80 * PCT, lo_t - 1, lo_t - 1, lo_t, hi_t),
        (80 * PCT, hi_t + 1, hi_t + 1, lo_t, hi_t),
    ]:
        with reverts_with(eng.OutsideRiskBounds, asset=weth, value=value, min=lo, max=hi):
            eng.updateRiskParams(weth, ltv, lt, sender=keeper)
    assert (cfg_at(system).ltv, cfg_at(system).lt, cfg_at(system).rampEnd) == (80 * PCT, 85 * PCT, 0)
    eng.updateRiskParams(weth, lo_v, hi_t, sender=keeper)
    assert (cfg_at(system).ltv, cfg_at(system).lt) == (lo_v, hi_t)
    eng.updateRiskParams(weth, hi_v, lo_t, sender=keeper)
    assert (cfg_at(system).ltv, eng.ltRamp(weth).ltTarget) == (hi_v, lo_t)


def test_steps_larger_than_max_step_revert(system: Any, admin: Any, keeper: Any) -> None:
    """Wide bounds (ltMax 0.95): ltv and lt may each move by exactly maxStep (0.05) and not one wei more, up or
    down; the error names the current value, the requested one and the step."""
    eng, weth = system.engine, system.weth
    step = 5 * PCT
    eng.setRiskBounds(weth, (10 * PCT, 95 * PCT, 10 * PCT, 95 * PCT, step, 0, DAY), sender=admin)
    for ltv, lt, current, requested in [
        (75 * PCT - 1, 85 * PCT, 80 * PCT, 75 * PCT - 1),
        (85 * PCT + 1, 90 * PCT, 80 * PCT, 85 * PCT + 1),
        (75 * PCT, 80 * PCT - 1, 85 * PCT, 80 * PCT - 1),
        (80 * PCT, 90 * PCT + 1, 85 * PCT, 90 * PCT + 1),
    ]:
        with reverts_with(eng.RiskStepTooLarge, asset=weth, current=current, requested=requested, maxStep=step):
            eng.updateRiskParams(weth, ltv, lt, sender=keeper)
    eng.updateRiskParams(weth, 75 * PCT, 80 * PCT, sender=keeper)
    assert (cfg_at(system).ltv, eng.ltRamp(weth).ltTarget) == (75 * PCT, 80 * PCT)


def test_lt_step_during_a_ramp_is_measured_from_the_effective_lt(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    """A ramp 0.85 -> 0.80 over a day; half a day in, the effective lt is 0.825: 0.825 + 0.05 + 1 wei is refused
    with `current` = the effective lt, as is a step of 0.05 + 1 wei down from it a few seconds later; 0.874 is
    accepted (within 0.05 of the effective lt, 0.074 from the target)."""
    eng, weth = system.engine, system.weth
    update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    half = t0 + DAY // 2
    eff = risk.ramped_lt(85 * PCT, 80 * PCT, t0, t0 + DAY, half)
    assert eff == 825 * WAD // 1000
    chain.pending_timestamp = half
    with reverts_with(eng.RiskStepTooLarge, asset=weth, current=eff, requested=eff + 5 * PCT + 1, maxStep=5 * PCT):
        eng.updateRiskParams(weth, 75 * PCT, eff + 5 * PCT + 1, sender=keeper)
    # The failed transaction was mined at `half`; an odd second later the effective lt has moved on.
    t = half + 7
    eff = risk.ramped_lt(85 * PCT, 80 * PCT, t0, t0 + DAY, t)
    with reverts_with(eng.RiskStepTooLarge, asset=weth, current=eff, requested=eff - 5 * PCT - 1, maxStep=5 * PCT):
        update_at(system, chain, keeper, t, 75 * PCT, eff - 5 * PCT - 1)
    tx = update_at(system, chain, keeper, t + 1, 75 * PCT, 874 * WAD // 1000)
    eff = risk.ramped_lt(85 * PCT, 80 * PCT, t0, t0 + DAY, t + 1)
    assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, 75 * PCT, eff, 874 * WAD // 1000, 0)]
    tx = update_at(system, chain, keeper, t + 1 + 3600, 70 * PCT, 874 * WAD // 1000 - 5 * PCT)
    assert events(tx, eng.RiskParamsUpdated)[0]["ltFrom"] == 874 * WAD // 1000


def test_update_too_soon_reverts_with_the_next_allowed_time(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    """The first update needs no wait; the next one is refused one second before lastUpdate + minInterval and
    accepted at it."""
    eng, weth = system.engine, system.weth
    update_at(system, chain, keeper, t0, 79 * PCT, 86 * PCT)
    assert eng.ltRamp(weth).lastUpdate == t0
    with reverts_with(eng.RiskUpdateTooSoon, asset=weth, nextAllowed=t0 + 3600):
        update_at(system, chain, keeper, t0 + 3599, 78 * PCT, 87 * PCT)
    update_at(system, chain, keeper, t0 + 3600, 78 * PCT, 87 * PCT)
    assert (cfg_at(system).ltv, cfg_at(system).lt, eng.ltRamp(weth).lastUpdate) == (78 * PCT, 87 * PCT, t0 + 3600)


def test_ltv_not_below_lt_is_rejected(system: Any, keeper: Any, bounded: Any) -> None:
    eng, weth = system.engine, system.weth
    with reverts_with(eng.InvalidRiskUpdate, asset=weth, ltv=85 * PCT, lt=85 * PCT):
        eng.updateRiskParams(weth, 85 * PCT, 85 * PCT, sender=keeper)
    with reverts_with(eng.InvalidRiskUpdate, asset=weth, ltv=84 * PCT, lt=83 * PCT):
        eng.updateRiskParams(weth, 84 * PCT, 83 * PCT, sender=keeper)
    eng.updateRiskParams(weth, 85 * PCT - 1, 85 * PCT, sender=keeper)
    assert cfg_at(system).ltv == 85 * PCT - 1


def test_lt_that_a_max_discount_liquidation_could_not_improve_is_rejected(system: Any, admin: Any, keeper: Any) -> None:
    """With maxDiscount 0.15 the largest lt is the largest with ceil(lt * 1.15) < 1 (WAD): that one is accepted,
    one wei more is refused."""
    eng, weth = system.engine, system.weth
    eng.setAssetConfig(weth, 80 * PCT, 85 * PCT, 15 * PCT, CAP["WETH"], sender=admin)
    eng.setRiskBounds(weth, (50 * PCT, 88 * PCT, 60 * PCT, 95 * PCT, 5 * PCT, 0, DAY), sender=admin)
    edge = (WAD - 1) * WAD // (WAD + 15 * PCT)
    assert -(-(edge + 1) * (WAD + 15 * PCT) // WAD) >= WAD > -(-edge * (WAD + 15 * PCT) // WAD)
    with reverts_with(eng.InvalidRiskUpdate, asset=weth, ltv=80 * PCT, lt=edge + 1):
        eng.updateRiskParams(weth, 80 * PCT, edge + 1, sender=keeper)
    eng.updateRiskParams(weth, 80 * PCT, edge, sender=keeper)
    assert cfg_at(system).lt == edge


# --------------------------------------------------------------------------------------------- the ramp


def test_lowering_lt_ramps_linearly_to_the_target(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    """ltv applies in the update's block; lt is unchanged there, then follows the line to 0.80 exactly at rampEnd
    and stays there."""
    eng, weth = system.engine, system.weth
    tx = update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    end = t0 + DAY
    assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, 75 * PCT, 85 * PCT, 80 * PCT, end)]
    c = cfg_at(system, tx.block_number)
    assert (c.listed, c.index, c.decimals, c.ltv, c.lt, c.maxDiscount, c.rampEnd) == (
        True, 0, 18, 75 * PCT, 85 * PCT, 10 * PCT, end
    )  # fmt: skip
    assert tuple(eng.ltRamp(weth, block_id=tx.block_number)) == (85 * PCT, 80 * PCT, t0, end, t0)
    expected = {
        t0 + 1: 85 * PCT - 578_703_703_704,  # 0.05 / 86,400 = 578,703,703,703.7 per second, rounded against lt
        t0 + 3 * 3600: 84375 * WAD // 100_000,  # an eighth of the way
        t0 + DAY // 2: 825 * WAD // 1000,
        end - 1: 80 * PCT + 578_703_703_703,
        end: 80 * PCT,
        end + 1: 80 * PCT,
        end + 10 * DAY: 80 * PCT,
    }
    for t, lt in expected.items():
        chain.mine(timestamp=t)
        assert risk.ramped_lt(85 * PCT, 80 * PCT, t0, end, t) == lt
        c = cfg_at(system)
        assert (chain.blocks.head.timestamp, c.lt, c.ltv, c.rampEnd) == (t, lt, 75 * PCT, end)
    assert tuple(eng.ltRamp(weth)) == (80 * PCT, 80 * PCT, t0, end, t0)


def test_health_follows_the_ramp(system: Any, chain: Any, admin: Any, keeper: Any, bounded: Any) -> None:
    """accountHealth's ltWeighted is value * effective lt at each block, and its ltvWeighted uses the new ltv
    from the update's block on. Prices are held valid by a long staleness; rates are frozen."""
    eng = system.engine
    _long_staleness(system, admin)
    system.vault.setRateModel((0, 0, 0, 80 * PCT), 10 * PCT, sender=admin)
    fund_and_borrow(system, admin, 0, 10 * 10**18, 10_000 * 10**6)
    value = 10 * 2000 * WAD
    t0 = int(chain.blocks.head.timestamp) + 10
    tx = update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    h = eng.accountHealth(admin, 0, block_id=tx.block_number)
    assert (h.ltWeighted, h.ltvWeighted) == (value * 85 // 100, value * 75 // 100)
    for t in (t0 + 1, t0 + 12_345, t0 + DAY - 1, t0 + DAY):
        chain.mine(timestamp=t)
        lt = risk.ramped_lt(85 * PCT, 80 * PCT, t0, t0 + DAY, t)
        h = eng.accountHealth(admin, 0)
        assert (h.ltWeighted, h.health) == (value * lt // WAD, value * lt // WAD * WAD // (10_000 * WAD))


def test_raising_lt_applies_at_once_and_clears_the_ramp(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    """An hour into a ramp 0.85 -> 0.80, lt is raised to 0.86: 0.86 in that very block, rampEnd 0, the event's
    ltFrom the effective lt it replaced, and ltRamp reports no ramp."""
    eng, weth = system.engine, system.weth
    update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    t1 = t0 + 3600
    eff = risk.ramped_lt(85 * PCT, 80 * PCT, t0, t0 + DAY, t1)
    tx = update_at(system, chain, keeper, t1, 76 * PCT, 86 * PCT)
    assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, 76 * PCT, eff, 86 * PCT, 0)]
    c = cfg_at(system, tx.block_number)
    assert (c.ltv, c.lt, c.rampEnd) == (76 * PCT, 86 * PCT, 0)
    assert tuple(eng.ltRamp(weth, block_id=tx.block_number)) == (86 * PCT, 86 * PCT, t1, 0, t1)
    chain.mine(timestamp=t0 + DAY // 2)
    assert cfg_at(system).lt == 86 * PCT


def test_raising_or_keeping_lt_without_a_ramp_applies_at_once(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    eng = system.engine
    tx = update_at(system, chain, keeper, t0, 82 * PCT, 88 * PCT)
    assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, 82 * PCT, 85 * PCT, 88 * PCT, 0)]
    assert (cfg_at(system, tx.block_number).lt, cfg_at(system, tx.block_number).rampEnd) == (88 * PCT, 0)
    tx = update_at(system, chain, keeper, t0 + 3600, 81 * PCT, 88 * PCT)
    assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, 81 * PCT, 88 * PCT, 88 * PCT, 0)]
    c = cfg_at(system, tx.block_number)
    assert (c.ltv, c.lt, c.rampEnd) == (81 * PCT, 88 * PCT, 0)


def test_update_during_a_ramp_starts_from_the_effective_lt(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    """Half-way down 0.85 -> 0.80 (effective 0.825) the target becomes 0.78: the new ramp starts at 0.825 in the
    update's block (no jump) and reaches 0.78 a full rampDuration later."""
    eng, weth = system.engine, system.weth
    update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    t1 = t0 + DAY // 2
    chain.mine(timestamp=t1 - 1)
    tx = update_at(system, chain, keeper, t1, 74 * PCT, 78 * PCT)
    eff = 825 * WAD // 1000
    assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, 74 * PCT, eff, 78 * PCT, t1 + DAY)]
    assert cfg_at(system, tx.block_number).lt == eff
    assert cfg_at(system, tx.block_number - 1).lt == risk.ramped_lt(85 * PCT, 80 * PCT, t0, t0 + DAY, t1 - 1)
    assert tuple(eng.ltRamp(weth, block_id=tx.block_number)) == (eff, 78 * PCT, t1, t1 + DAY, t1)
    chain.mine(timestamp=t1 + DAY // 2)
    assert cfg_at(system).lt == (eff + 78 * PCT) // 2
    chain.mine(timestamp=t1 + DAY)
    assert cfg_at(system).lt == 78 * PCT


def test_set_asset_config_clears_a_ramp(system: Any, chain: Any, admin: Any, keeper: Any, t0: int) -> None:
    """Governance keeps its power: during a ramp setAssetConfig sets lt at once (even lower than the effective
    lt) and the ramp is gone."""
    eng, weth = system.engine, system.weth
    update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    chain.pending_timestamp = t0 + 3600
    tx = eng.setAssetConfig(weth, 70 * PCT, 78 * PCT, 10 * PCT, CAP["WETH"], sender=admin)
    c = cfg_at(system, tx.block_number)
    assert (c.ltv, c.lt, c.rampEnd) == (70 * PCT, 78 * PCT, 0)
    assert tuple(eng.ltRamp(weth, block_id=tx.block_number)) == (78 * PCT, 78 * PCT, t0, 0, t0)
    chain.mine(timestamp=t0 + DAY // 2)
    assert cfg_at(system).lt == 78 * PCT


def test_other_assets_are_untouched(system: Any, chain: Any, keeper: Any, t0: int) -> None:
    update_at(system, chain, keeper, t0, 75 * PCT, 80 * PCT)
    chain.mine(timestamp=t0 + DAY // 2)
    for symbol in ("WBTC", "LINK"):
        c = cfg_at(system, symbol=symbol)
        assert (c.ltv, c.lt, c.rampEnd) == (LTV[symbol], LT[symbol], 0)


# --------------------------------------------------------------------------------------------- differential


def test_ramp_matches_the_keeper_mirror_block_by_block(system: Any, chain: Any, admin: Any, keeper: Any) -> None:
    """Seeded: chained lowering updates on WETH with random durations; at random blocks, the engine's
    assetConfig(WETH).lt, the Lens's market config and reads.read_market all equal risk.ramped_lt
    at the block's timestamp."""
    rng = random.Random(55)
    eng, weth = system.engine, system.weth
    w3 = chain.provider.web3
    lens = w3.eth.contract(address=system.lens.address, abi=system.deployment.abis["Lens"])
    ramp = (LT["WETH"], LT["WETH"], 0, 1)  # (from, target, start, end) of the ramp in force: none yet
    ltv, checked = LTV["WETH"], 0
    for _ in range(4):
        duration = rng.randrange(1, 3 * DAY)
        eng.setRiskBounds(weth, (50 * PCT, 88 * PCT, 60 * PCT, 90 * PCT, 5 * PCT, 0, duration), sender=admin)
        t = int(chain.blocks.head.timestamp) + rng.randrange(1, 1000)
        lt_eff = risk.ramped_lt(*ramp, t)
        target = rng.randrange(max(60 * PCT, lt_eff - 5 * PCT), lt_eff)
        ltv = min(ltv, target - 1)
        tx = update_at(system, chain, keeper, t, ltv, target)
        assert events(tx, eng.RiskParamsUpdated) == [updated(system, keeper, ltv, lt_eff, target, t + duration)]
        ramp = (lt_eff, target, t, t + duration)
        for s in sorted(rng.sample(range(t + 1, t + duration + 3), min(6, duration + 2))):
            chain.mine(timestamp=s)
            block = chain.blocks.head.number
            expected = risk.ramped_lt(*ramp, s)
            assert cfg_at(system).lt == expected
            assert lens.functions.market().call(block_identifier=block)[7][0][4] == expected
            market = read_market(lens, block)
            assert (market.timestamp, market.assets[0].risk.lt) == (s, expected)
            checked += 1
    assert checked >= 12


# --------------------------------------------------------------------------------------------- invariant


def _long_staleness(system: Any, admin: Any) -> None:
    """Let every feed's answer stay valid for the whole campaign: prices unchanged means no refresh needed."""
    for token in (*system.tokens.values(), system.usdc):
        fc = system.router.feedConfig(token)
        system.router.setFeed(token, fc.feed, 2**32 - 1, fc.minPrice, fc.maxPrice, sender=admin)


def fund_and_borrow(system: Any, who: Any, sub_id: int, weth: int, usdc: int) -> None:
    system.weth.mint(who, weth, sender=who)
    system.weth.approve(system.engine, MAX_UINT, sender=who)
    system.engine.deposit(who, sub_id, system.weth, weth, sender=who)
    system.engine.borrow(sub_id, usdc, who, sender=who)


def _lt_weighted(amounts: tuple[int, int], prices: tuple[int, int], lts: tuple[int, int]) -> int:
    return sum(
        risk.w_mul_down(risk.value_down(a, p, d), lt)
        for a, p, d, lt in zip(amounts, prices, (DEC["WETH"], DEC["WBTC"]), lts, strict=True)
    )


# Rounds of the campaign: each lowers one asset's lt and samples its ramp. CK_LONG=1 runs the long profile.
ROUNDS = 60 if os.environ.get("CK_LONG") == "1" else 8


@pytest.mark.slow
def test_no_account_is_liquidated_by_a_parameter_change_alone(
    system: Any, project: Any, chain: Any, admin: Any, keeper: Any
) -> None:
    """Seeded campaign. 60 sub-accounts (WETH, WBTC or both) at healths from just above 1 (the largest debt that
    keeps ltWeighted >= debtValue) to 1.3, prices held, interest frozen. Each round lowers a random asset's lt
    (and moves ltv) by a random step within random bounds, samples the ramp and checks:
    (a) every account's health in the update's block equals its health in the block before (none healthy before
        is liquidatable in it, and previewLiquidation reverts NotLiquidatable for each);
    (b) health never rises along the ramp, ends exactly at the health under the target lt, and every account
        healthy under the target lt is healthy at every sample;
    (c) previewLiquidation reverts with exactly NotLiquidatable(health) for each of those at every sample."""
    rng = random.Random(2024)
    eng, w3 = system.engine, chain.provider.web3
    _long_staleness(system, admin)
    system.vault.setRateModel((0, 0, 0, 80 * PCT), 10 * PCT, sender=admin)
    assert system.vault.borrowIndex() == RAY
    system.usdc.mint(admin, 10_000_000 * 10**6, sender=admin)
    system.usdc.approve(system.vault, MAX_UINT, sender=admin)
    system.vault.deposit(10_000_000 * 10**6, admin, sender=admin)

    # Positions opened at WETH $2,000 / WBTC $60,000, then both prices fall 20 %: debts sized for the low prices.
    p1 = (1600 * WAD, 48_000 * WAD)
    bulk = admin.deploy(project.BulkBorrower, eng, [system.weth, system.wbtc])
    positions, amounts = [], []
    for i in range(60):
        kind = i % 3
        a = (rng.randrange(1, 20) * 10**18 if kind != 1 else 0, rng.randrange(1, 100) * 10**6 if kind != 0 else 0)
        lt_w = _lt_weighted(a, p1, (LT["WETH"], LT["WBTC"]))
        health = WAD if i < 15 else rng.randrange(WAD, 13 * WAD // 10)
        positions.append(([a[0], a[1]], lt_w * WAD // health // 10**12))  # debt value = units * 1e12 (USDC @ $1)
        amounts.append(a)
    system.weth.mint(bulk, sum(a[0] for a in amounts), sender=admin)
    system.wbtc.mint(bulk, sum(a[1] for a in amounts), sender=admin)
    bulk.open(positions, 0, sender=admin)
    assert bulk.opened() == 60
    system.feeds["WETH"].setAnswer(1600 * 10**8, sender=admin)
    system.feeds["WBTC"].setAnswer(48_000 * 10**8, sender=admin)
    owners, subs = [bulk.address] * 60, list(range(60))
    base = _healths(system, owners, subs)
    assert all(h >= WAD for h in base)
    assert all(h < WAD + WAD // 10**8 for h in base[:15])  # the first 15 sit within 1e-8 of 1

    not_liquidatable = bytes(Web3.keccak(text="NotLiquidatable(uint256)")[:4])
    previews = 0
    for _ in range(ROUNDS):
        snap = chain.snapshot()
        symbol = rng.choice(("WETH", "WBTC"))
        k = 0 if symbol == "WETH" else 1
        token = system.tokens[symbol]
        step = rng.randrange(PCT, 10 * PCT)
        duration = rng.randrange(60, 3 * DAY)
        eng.setRiskBounds(token, (30 * PCT, 88 * PCT, 40 * PCT, 90 * PCT, step, 0, duration), sender=admin)
        target = rng.randrange(LT[symbol] - step, LT[symbol] - step // 2)
        ltv = rng.randrange(max(30 * PCT, LTV[symbol] - step), min(LTV[symbol] + step, target))
        before = _healths(system, owners, subs)
        t = int(chain.blocks.head.timestamp) + rng.randrange(1, 100)
        tx = update_at(system, chain, keeper, t, ltv, target, symbol)
        lts_target = tuple(target if j == k else LT[s] for j, s in enumerate(("WETH", "WBTC")))
        final = [
            _lt_weighted(a, p1, lts_target) * WAD // (pos[1] * 10**12)
            for a, pos in zip(amounts, positions, strict=True)
        ]
        safe = [i for i in range(60) if final[i] >= WAD]
        assert 0 < len(safe) < 60  # some accounts would be liquidatable at the target: the ramp matters

        def check(block: int, healthy: list[int], token: Any = token) -> list[int]:
            """The healths at `block`; each account in `healthy` is healthy and previewLiquidation refuses it."""
            now = _healths(system, owners, subs, block)
            for i in healthy:
                assert now[i] >= WAD
                data = eng.previewLiquidation.encode_input(bulk.address, i, token, MAX_UINT)
                with pytest.raises(ContractCustomError) as info:
                    w3.eth.call({"to": eng.address, "data": data}, block)
                assert info.value.data == "0x" + (not_liquidatable + abi_encode(["uint256"], [now[i]])).hex()
            return now

        # (a) nothing moves in the update's block: every account healthy before is healthy and not liquidatable
        prev = check(tx.block_number, list(range(60)))
        assert prev == before
        previews += 60
        samples = [*sorted(rng.sample(range(t + 1, t + duration - 1), 5)), t + duration - 1, t + duration]
        for s in samples:
            chain.mine(timestamp=s)
            now = check(chain.blocks.head.number, safe)  # (b) healthy under the target: healthy throughout; (c)
            assert all(h <= p for h, p in zip(now, prev, strict=True))  # (b) non-increasing
            previews += len(safe)
            prev = now
        assert prev == final  # (b) the ramp ends exactly at the target's healths
        chain.restore(snap)
    assert previews > 60 * ROUNDS


def _healths(system: Any, owners: list[str], subs: list[int], block: int | None = None) -> list[int]:
    rows = system.lens.healths(owners, subs) if block is None else system.lens.healths(owners, subs, block_id=block)
    assert all(r.ok for r in rows)
    return [int(r.health.health) for r in rows]


# --------------------------------------------------------------------------------------------- deploy config


def _asset(**extra: Any) -> dict[str, Any]:
    spec = {"symbol": "WETH", "price": 2000, "min_price": 1, "max_price": 10**6, "ltv": 0.8, "lt": 0.85,
            "max_discount": 0.1, "supply_cap": 1000}  # fmt: skip
    return {**spec, **extra}


def _config(asset: dict[str, Any], roles: dict[str, str] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"debt": {"symbol": "USDC", "price": 1, "min_price": 0.5, "max_price": 2}, "asset": [asset]}
    if roles is not None:
        raw["roles"] = roles
    return raw


FULL = {"ltv_min": 0.5, "ltv_max": 0.88, "lt_min": 0.6, "lt_max": 0.9, "max_step": 0.05, "min_interval": 3600,
        "ramp_duration": 86400}  # fmt: skip


def test_config_bounds_need_all_seven_keys() -> None:
    with pytest.raises(ck_system.DeployConfigError) as info:
        ck_system.parse_config(_config(_asset(max_step=0.05, ltv_min=0.5)))
    msg = str(info.value)
    assert "risk bounds need all of ltv_min" in msg
    assert "missing: ltv_max, lt_min, lt_max, min_interval, ramp_duration" in msg
    with pytest.raises(ck_system.DeployConfigError, match="missing: max_step"):
        ck_system.parse_config(_config(_asset(**{k: v for k, v in FULL.items() if k != "max_step"})))
    assert ck_system.parse_config(_config(_asset())).asset[0].bounds() is None
    assert ck_system.parse_config(_config(_asset(**FULL))).asset[0].bounds() == FULL


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ltv_min": 0.81}, "ltv 0.8 must lie within"),
        ({"ltv_max": 0.79}, "ltv 0.8 must lie within"),
        ({"lt_min": 0.86}, "lt 0.85 must lie within"),
        ({"lt_max": 0.84}, "lt 0.85 must lie within"),
        ({"lt_max": 0.91}, "lt_max * (1 + max_discount) must be below 1"),
        ({"max_step": 0}, "asset.0.max_step: Input should be greater than 0"),
        ({"lt_max": 1.0}, "asset.0.lt_max: Input should be less than 1"),
        ({"ramp_duration": 0}, "asset.0.ramp_duration: Input should be greater than 0"),
        ({"ramp_duration": YEAR + 1}, "asset.0.ramp_duration: Input should be less than or equal to 31536000"),
        ({"min_interval": -1}, "asset.0.min_interval: Input should be greater than or equal to 0"),
    ],
)
def test_config_bounds_are_validated(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ck_system.DeployConfigError) as info:
        ck_system.parse_config(_config(_asset(**{**FULL, **change})))
    assert message in str(info.value)


@pytest.mark.parametrize("value", ["mock", "keeper", "0x123", ""])
def test_config_risk_keeper_must_be_none_deployer_or_an_address(value: str) -> None:
    with pytest.raises(ck_system.DeployConfigError, match=re.escape('roles.risk_keeper: Value error, must be "none"')):
        ck_system.parse_config(_config(_asset(), {"risk_keeper": value}))
    assert ck_system.parse_config(_config(_asset())).roles.risk_keeper == "none"


def test_deploying_local_toml_sets_bounds_and_grants_the_keeper(project: Any, chain: Any, admin: Any) -> None:
    """deployments/configs/local.toml deploys with every asset's bounds set on-chain, RISK_KEEPER_ROLE granted to
    Anvil dev account 1, and both recorded."""
    cfg = ck_system.load_config(Path(ROOT) / "deployments" / "configs" / "local.toml")
    dep = ck_system.deploy_system(project, chain, admin, cfg, "local-test")
    eng = project.MarginEngine.at(dep.contracts["MarginEngine"]["address"])
    keeper_address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert dep.roles == {"admin": admin.address, "risk_keeper": keeper_address}
    assert eng.hasRole(KEEPER_ROLE, keeper_address)
    assert not eng.hasRole(KEEPER_ROLE, admin)
    for spec, rec in zip(cfg.asset, dep.assets, strict=True):
        b = spec.bounds()
        assert b is not None
        assert rec["bounds"] == b
        wads = tuple(ck_system.to_wad(b[k]) for k in ("ltv_min", "ltv_max", "lt_min", "lt_max", "max_step"))
        assert tuple(eng.riskBounds(rec["token"])) == (*wads, b["min_interval"], b["ramp_duration"])


def test_deploy_without_bounds_or_keeper_records_none(project: Any, chain: Any, admin: Any) -> None:
    raw = _config(_asset(), {"admin": "deployer", "risk_keeper": "none"})
    dep = ck_system.deploy_system(project, chain, admin, ck_system.parse_config(raw), "bare")
    eng = project.MarginEngine.at(dep.contracts["MarginEngine"]["address"])
    assert dep.roles == {"admin": admin.address, "risk_keeper": None}
    assert dep.assets[0]["bounds"] is None
    assert tuple(eng.riskBounds(dep.assets[0]["token"])) == DISABLED
    assert not eng.hasRole(KEEPER_ROLE, admin)


def test_deploy_can_make_the_deployer_the_keeper(project: Any, chain: Any, admin: Any) -> None:
    raw = _config(_asset(**FULL), {"risk_keeper": "deployer"})
    dep = ck_system.deploy_system(project, chain, admin, ck_system.parse_config(raw), "self-keeper")
    eng = project.MarginEngine.at(dep.contracts["MarginEngine"]["address"])
    assert dep.roles["risk_keeper"] == admin.address
    assert eng.hasRole(KEEPER_ROLE, admin)
    eng.updateRiskParams(dep.assets[0]["token"], 79 * PCT, 84 * PCT, sender=admin)
    assert eng.ltRamp(dep.assets[0]["token"]).ltTarget == 84 * PCT
