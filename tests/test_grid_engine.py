"""The scenario grid in the engine, on a real Anvil: governance (IScenarioGrid at the engine's address, run in the
EngineModule), the grid health every margin check and liquidation uses, the risk keeper's bounded, ramped updates,
and the module's plumbing.

References: the engine's own additive figures before a grid is set (the default-grid equivalence), and
keeper.core.grid (the integer mirror that tests/test_grid_differential.py checks against GridMath on 10,000
portfolios) for every grid health, ramp and column.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from conftest import WAD, open_position, reverts_with
from web3 import Web3

from keeper.core import grid as g

PCT = WAD // 100
MILLION = 10**6
KEEPER_ROLE = Web3.keccak(text="RISK_KEEPER_ROLE")
ZERO_ROLE = b"\x00" * 32
DAY = 86_400
LT = {"WETH": 85 * PCT, "WBTC": 80 * PCT, "LINK": 70 * PCT}
DEC = {"WETH": 18, "WBTC": 8, "LINK": 18}
PRICE = {"WETH": 2000, "WBTC": 60_000, "LINK": 15}
SYMBOLS = ("WETH", "WBTC", "LINK")


@pytest.fixture
def sg(project, system) -> Any:
    """The engine through IScenarioGrid: its fallback runs these in the module."""
    return project.IScenarioGrid.at(system.engine.address)


def assets_of(system: Any) -> list[Any]:
    return [system.tokens[s] for s in SYMBOLS] + [system.usdc]


def set_grid(sg: Any, system: Any, columns: dict[str, list[int]], scale: int = WAD) -> Any:
    """Set a grid from per-symbol multipliers (millionths); USDC is the debt asset."""
    count = len(next(iter(columns.values())))
    tokens = [system.usdc if s == "USDC" else system.tokens[s] for s in columns]
    return sg.setGrid(count, scale, tokens, [g.pack(m) for m in columns.values()], sender=system.admin)


def spec_health(system: Any, owner: Any, sub: int, columns: dict[str, list[int]]) -> g.GridHealth:
    """The account's grid health and binding scenario by keeper.core.grid (the executable specification, checked
    against GridMath by tests/test_grid_differential.py) from chain-read balances, prices and debt."""
    longs = {}
    for s in SYMBOLS:
        bal = system.engine.collateralOf(owner, sub, system.tokens[s])
        if bal:
            longs[s] = g.Leg(bal, system.router.price(system.tokens[s]), DEC[s])
    debt = system.engine.debtOf(owner, sub)
    shorts = {"USDC": g.Leg(debt, system.router.price(system.usdc), 6)} if debt else {}
    count = len(columns["USDC"])
    grid = g.Grid(tuple(g.Scenario({a: m[i] * 10**12 for a, m in columns.items()}) for i in range(count)))
    return g.grid_health(g.Book(longs, shorts), grid)


def mirror_health(system: Any, owner: Any, sub: int, columns: dict[str, list[int]]) -> int:
    return spec_health(system, owner, sub, columns).health


# ------------------------------------------------------------------------------------------- equivalence


def test_a_stored_default_grid_gives_exactly_the_additive_health(system, sg, alice, chain):
    """One scenario where each collateral moves to its lt and the debt stays: every account's health, and its
    liquidatability, are what the engine's additive rule gave a moment before (the default-grid equivalence on
    the engine; test_grid.py proves it on 400 random states for the mirror)."""
    rng = random.Random(14)
    # No interest: the engine's own figures a block apart stay exactly comparable (each transaction mines a block,
    # and the index would otherwise grow with the seconds between them).
    system.vault.setRateModel((0, 0, 0, WAD // 2), 0, sender=system.admin)
    accounts = []
    for sub in range(12):
        coll = {
            s: rng.randint(2_000, 100_000) * 10 ** DEC[s] // PRICE[s] + rng.randint(0, 10**6)
            for s in rng.sample(SYMBOLS, rng.randint(1, 3))
        }
        open_position(system, alice, sub, coll)
        power = system.engine.accountHealth(alice, sub).ltvWeighted // 10**12  # USDC units at $1
        system.engine.borrow(sub, power * rng.randint(80, 99) // 100, alice, sender=alice)
        accounts.append(sub)
    system.set_price("WETH", 1700)
    system.set_price("WBTC", 52_000)
    before = {sub: system.engine.accountHealth(alice, sub).health for sub in accounts}
    assert any(h < WAD for h in before.values())
    assert any(h >= WAD for h in before.values())
    set_grid(sg, system, {s: [LT[s] // 10**12] for s in SYMBOLS} | {"USDC": [MILLION]})
    for sub in accounts:
        assert system.engine.accountHealth(alice, sub).health == before[sub]
        assert system.engine.liquidationHealth(alice, sub).health == before[sub]


# ------------------------------------------------------------------------------------------- the rule


def test_joint_scenarios_give_diversification_credit_and_match_the_mirror(system, sg, alice):
    """ETH and BTC do not both fall to their worst in one scenario: an account holding both is healthier than the
    additive rule makes it, and exactly as healthy as the mirror says."""
    open_position(system, alice, 0, {"WETH": 10 * 10**18, "WBTC": 10**8}, borrow=50_000 * MILLION)
    additive = system.engine.accountHealth(alice, 0).health
    cols = {"WETH": [800_000, 950_000], "WBTC": [950_000, 800_000], "LINK": [700_000, 700_000],
            "USDC": [MILLION, MILLION]}  # fmt: skip
    set_grid(sg, system, cols)
    h = system.engine.accountHealth(alice, 0)
    assert h.health == mirror_health(system, alice, 0, cols)
    assert h.health > additive
    # ltWeighted is the debt value the grid supports: below the debt value exactly when health < 1.
    assert h.ltWeighted == h.health * h.debtValue // WAD


def test_the_initial_scale_gates_new_risk(system, sg, alice):
    """New risk needs health · initialScale ≥ 1: a borrow the maintenance grid would allow is refused under a
    scale of 0.9 and allowed once the account stays above 1/0.9."""
    cols = {s: [LT[s] // 10**12] for s in SYMBOLS} | {"USDC": [MILLION]}
    set_grid(sg, system, cols, scale=90 * PCT)
    open_position(system, alice, 0, {"WETH": 10 * 10**18})  # $20,000, lt 0.85: $17,000 maintenance
    e = system.engine
    # No debt yet, so the index is exactly 1: health 17,000/16,000, supported 17,000, borrowing power 15,300.
    with reverts_with(e.InsufficientMargin, borrowingPower=15_300 * WAD, debtValue=16_000 * WAD):
        e.borrow(0, 16_000 * MILLION, alice, sender=alice)
    e.borrow(0, 15_000 * MILLION, alice, sender=alice)  # health 1.133 · 0.9 ≥ 1
    h = e.accountHealth(alice, 0)
    assert h.ltvWeighted == h.ltWeighted * 90 // 100 >= h.debtValue


def test_liquidation_under_the_grid_never_lowers_health(system, sg, alice, liquidator):
    """An account unhealthy under the grid (healthy under the additive rule) is liquidated, and its grid health
    after is not below the health before; the quote is what the liquidation does."""
    open_position(system, alice, 0, {"WETH": 10 * 10**18, "WBTC": 10**8}, borrow=60_000 * MILLION)
    cols = {"WETH": [600_000, 800_000], "WBTC": [800_000, 600_000], "LINK": [600_000, 600_000],
            "USDC": [MILLION, MILLION]}  # fmt: skip
    set_grid(sg, system, cols)
    e = system.engine
    before = e.accountHealth(alice, 0).health
    assert before < WAD
    assert before == mirror_health(system, alice, 0, cols)
    system.usdc.mint(liquidator, 10_000 * MILLION, sender=liquidator)
    system.usdc.approve(e, 2**256 - 1, sender=liquidator)
    eth0 = system.weth.balanceOf(liquidator)
    tx = e.liquidate(alice, 0, system.weth, 10_000 * MILLION, 0, liquidator, b"", sender=liquidator)
    [ev] = tx.decode_logs(e.Liquidated)
    assert system.weth.balanceOf(liquidator) - eth0 == ev.seized > 0
    after = e.accountHealth(alice, 0).health
    assert after >= before
    assert after == mirror_health(system, alice, 0, cols)


# ------------------------------------------------------------------------------------------- governance


def test_only_the_admin_sets_a_grid_and_it_must_be_whole(system, sg, stranger):
    good = {s: [LT[s] // 10**12] for s in SYMBOLS} | {"USDC": [MILLION]}
    assets, cols = assets_of(system), [g.pack(m) for m in good.values()]
    with reverts_with(sg.AccessControlUnauthorizedAccount, account=stranger, neededRole=ZERO_ROLE):
        sg.setGrid(1, WAD, assets, cols, sender=stranger)
    with reverts_with(sg.InvalidGrid, count=33, initialScale=WAD):
        sg.setGrid(33, WAD, assets, cols, sender=system.admin)
    with reverts_with(sg.InvalidGrid, count=1, initialScale=0):
        sg.setGrid(1, 0, assets, cols, sender=system.admin)
    with reverts_with(sg.InvalidGrid, count=1, initialScale=WAD + 1):
        sg.setGrid(1, WAD + 1, assets, cols, sender=system.admin)
    with reverts_with(sg.GridAssetsMismatch, asset="0x" + "00" * 20):  # the debt asset left out
        sg.setGrid(1, WAD, assets[:-1], cols[:-1], sender=system.admin)
    with reverts_with(sg.GridAssetsMismatch, asset=system.weth):  # twice
        sg.setGrid(1, WAD, [*assets, system.weth], [*cols, cols[0]], sender=system.admin)
    with reverts_with(sg.InvalidMove, asset=system.weth, scenario=0, m=99):
        sg.setGrid(1, WAD, assets, [g.pack([99]), *cols[1:]], sender=system.admin)
    with reverts_with(sg.InvalidMove, asset=system.weth, scenario=0, m=100 * MILLION + 1):
        sg.setGrid(1, WAD, assets, [g.pack([100 * MILLION + 1]), *cols[1:]], sender=system.admin)
    with reverts_with(sg.InvalidMove, asset=system.weth, scenario=1, m=MILLION):  # beyond the count
        sg.setGrid(1, WAD, assets, [g.pack([850_000, MILLION]), *cols[1:]], sender=system.admin)
    tx = sg.setGrid(1, WAD, assets, cols, sender=system.admin)
    assert [dict(ev.event_arguments) for ev in tx.decode_logs(sg.GridSet)] == [{"count": 1, "initialScale": WAD}]
    set_events = tx.decode_logs(sg.GridColumnSet)
    assert {str(ev.asset) for ev in set_events} == {str(a.address) for a in assets}
    view = sg.grid(system.weth)
    assert view.count == 1
    assert list(g.unpack(view.effective, 1)) == [850_000]
    # Count 0 returns to the additive rule.
    sg.setGrid(0, 0, [], [], sender=system.admin)
    assert sg.grid(system.weth).count == 0


def test_listing_under_a_grid_gives_the_new_asset_its_lt_everywhere(project, system, sg):
    set_grid(sg, system, {s: [LT[s] // 10**12] * 3 for s in SYMBOLS} | {"USDC": [MILLION] * 3})
    token = project.MockERC20.deploy("Ondo", "ONDO", 18, sender=system.admin)
    system.engine.listAsset(token, 50 * PCT, 600_000_123_456_789_012, 10 * PCT, 10**30, sender=system.admin)
    view = sg.grid(token)
    assert list(g.unpack(view.target, 3)) == [600_000] * 3
    assert list(g.unpack(view.effective, 3)) == [600_000] * 3


# ------------------------------------------------------------------------------------------- keeper updates

BOUND_LO, BOUND_HI = 500_000, 1_200_000
LIMITS = (50_000, 3600, DAY)  # maxStep 0.05, an hour apart, a day's ramp


def test_keeper_updates_are_bounded_and_ramp_without_liquidating_at_once(system, sg, alice, admin, chain):
    cols = {"WETH": [800_000, 900_000], "WBTC": [900_000, 800_000], "LINK": [700_000, 700_000],
            "USDC": [MILLION, MILLION]}  # fmt: skip
    set_grid(sg, system, cols)
    keeper = admin
    assets = assets_of(system)
    with reverts_with(sg.AccessControlUnauthorizedAccount, account=keeper, neededRole=bytes(KEEPER_ROLE)):
        sg.updateGrid([system.weth], [g.pack([760_000, 900_000])], sender=keeper)
    system.engine.grantRole(KEEPER_ROLE, keeper, sender=admin)
    with reverts_with(sg.GridBoundsNotSet):
        sg.updateGrid([system.weth], [g.pack([760_000, 900_000])], sender=keeper)
    lo, hi = [g.pack([BOUND_LO] * 2)] * 4, [g.pack([BOUND_HI] * 2)] * 4
    with reverts_with(sg.InvalidGridBounds, asset=system.weth, scenario=0):
        sg.setGridBounds(
            [system.weth], [g.pack([BOUND_HI, BOUND_LO])], [g.pack([BOUND_LO, BOUND_HI])], LIMITS, sender=admin
        )
    sg.setGridBounds(assets, lo, hi, LIMITS, sender=admin)

    # An account just healthy under the grid.
    open_position(system, alice, 0, {"WETH": 10 * 10**18}, borrow=15_800 * MILLION)
    h0 = system.engine.accountHealth(alice, 0).health
    assert WAD <= h0 < WAD * 102 // 100

    with reverts_with(sg.GridOutsideBounds, asset=system.weth, scenario=0, m=450_000, lower=BOUND_LO, upper=BOUND_HI):
        sg.updateGrid([system.weth], [g.pack([450_000, 900_000])], sender=keeper)
    with reverts_with(sg.GridStepTooLarge, asset=system.weth, scenario=0, current=800_000, requested=740_000,
                      maxStep=50_000):  # fmt: skip
        sg.updateGrid([system.weth], [g.pack([740_000, 900_000])], sender=keeper)
    tx = sg.updateGrid([system.weth], [g.pack([760_000, 900_000])], sender=keeper)
    t0 = chain.blocks.head.timestamp
    ev = [dict(e.event_arguments) for e in tx.decode_logs(sg.GridUpdated)]
    assert ev == [{"keeper": keeper.address, "rampStart": t0, "rampEnd": t0 + DAY}]
    # At the moment of the update nothing moved: the account's health is the old grid's (its debt accrues).
    assert list(g.unpack(sg.grid(system.weth).effective, 2)) == cols["WETH"]
    assert system.engine.accountHealth(alice, 0).health == mirror_health(system, alice, 0, cols) >= WAD
    with reverts_with(sg.GridUpdateTooSoon, nextAllowed=t0 + 3600):
        sg.updateGrid([system.weth], [g.pack([760_000, 900_000])], sender=keeper)

    # Halfway and at the end the column in force is the mirror's ramp, and so is the account's health.
    old = g.Grid(tuple(g.Scenario({"WETH": m * 10**12}) for m in (800_000, 900_000)))
    new = g.Grid(tuple(g.Scenario({"WETH": m * 10**12}) for m in (760_000, 900_000)))
    for dt in (DAY // 3, DAY // 2 + 17, DAY):
        chain.mine(timestamp=t0 + dt)
        system.set_price("WETH", 2000)  # fresh answers after the jump in time
        system.set_price("USDC", 1)
        now = chain.blocks.head.timestamp
        want = g.ramped(old, new, t0, t0 + DAY, now)
        got = list(g.unpack(sg.grid(system.weth).effective, 2))
        assert got == [s.move("WETH") // 10**12 for s in want.scenarios]
        ramp_cols = dict(cols) | {"WETH": got}
        assert system.engine.accountHealth(alice, 0).health == mirror_health(system, alice, 0, ramp_cols)
    assert system.engine.accountHealth(alice, 0).health < WAD  # the tightened grid binds, a day later


# ------------------------------------------------------------------------------------------- plumbing


def test_the_modules_run_only_inside_their_engine(project, system, stranger):
    module = project.EngineModule.at(system.engine.module())
    with reverts_with(module.DirectCall):
        module.writeOff(stranger, 0, sender=system.admin)
    governance = project.EngineGovernance.at(system.engine.governance())
    with reverts_with(governance.DirectCall):
        governance.setGrid(0, 0, [], [], sender=system.admin)
    assert governance.binding() == (system.vault.address, system.router.address)
    with reverts_with(system.engine.NotSelf, caller=stranger):
        system.engine.delegateView(b"", sender=stranger)


def test_the_keeper_reads_the_grid_plans_by_it_and_status_names_the_binding_scenario(
    system, sg, alice, liquidator, tmp_path
):
    """Under a stored grid the keeper's reads carry the grid (Lens.grid), its health equals the engine's, its plan
    is what the engine quotes and does, and `keeper status` names the scenario that binds (keeper.core.grid, the
    spec, as the reference) and the fall that would liquidate."""
    from keeper.chain.deployment import load_deployment
    from keeper.chain.reads import read_accounts, read_market
    from keeper.core import risk
    from keeper.core.snapshot import health_of
    from keeper.engine import status
    from keeper.engine.strategy import Limits, Plan, plan_account

    w3 = system.engine.provider.web3
    lens = w3.eth.contract(address=system.lens.address, abi=system.deployment.record()["abis"]["Lens"])
    assert read_market(lens).grid is None  # the additive rule
    open_position(system, alice, 0, {"WETH": 10 * 10**18, "WBTC": 10**8}, borrow=60_000 * MILLION)
    open_position(system, alice, 1, {"WETH": 20 * 10**18}, borrow=20_000 * MILLION)
    cols = {"WETH": [600_000, 800_000], "WBTC": [800_000, 600_000], "LINK": [600_000, 600_000],
            "USDC": [MILLION, MILLION]}  # fmt: skip
    set_grid(sg, system, cols)
    market = read_market(lens)
    assert market.grid is not None
    assert market.grid.count == 2
    accounts = read_accounts(lens, [(str(alice.address), 0), (str(alice.address), 1)])
    for acc in accounts:
        mirrored = health_of(acc, market)
        assert mirrored is not None
        assert tuple(system.engine.accountHealth(alice, acc.sub_id)) == _fields(mirrored)
    # Status: sub 0 ($20,000 of WETH, $60,000 of WBTC) binds where WBTC falls to 0.6 (scenario 1); sub 1 (all
    # WETH) where WETH does (scenario 0).
    record = tmp_path / "deployment.json"
    record.write_text(json.dumps(system.deployment.record()))
    rows = {r.sub_id: r for r in status.build_rows(market, accounts, load_deployment(record, 31337))}
    for sub in (0, 1):
        h = mirror_health(system, alice, sub, cols)
        assert rows[sub].health == pytest.approx(h / WAD)
    spec0 = spec_health(system, alice, 0, cols).binding
    assert rows[0].binding == spec0 == 1
    assert rows[0].fall_to_liquidation == 0.0  # already liquidatable
    assert rows[1].binding == spec_health(system, alice, 1, cols).binding == 0
    assert 0 < rows[1].fall_to_liquidation < 1
    # The plan for sub 0 is the engine's preview, and the liquidation does what it says.
    limits = Limits(0, None, 10**30, 0, 0, None, 0)
    plan = plan_account(accounts[0], market, limits)
    assert isinstance(plan, Plan)
    preview = system.engine.previewLiquidation(alice, 0, plan.collateral, plan.request)
    assert tuple(preview) == (plan.quote.repaid, plan.quote.seized, plan.quote.discount, plan.quote.max_repay,
                              plan.quote.bad_debt)  # fmt: skip
    system.usdc.mint(liquidator, 10**12, sender=liquidator)
    system.usdc.approve(system.engine, 2**256 - 1, sender=liquidator)
    before = system.engine.accountHealth(alice, 0).health
    tx = system.engine.liquidate(alice, 0, plan.collateral, plan.request, 0, liquidator, b"", sender=liquidator)
    [ev] = tx.decode_logs(system.engine.Liquidated)
    assert (ev.repaid, ev.seized) == (plan.quote.repaid, plan.quote.seized)
    assert before <= system.engine.accountHealth(alice, 0).health < risk.MAX_UINT


def _fields(h: Any) -> tuple[int, ...]:
    return (h.collateral_value, h.lt_weighted, h.ltv_weighted, h.debt, h.debt_value, h.health)


def test_a_real_keeper_says_which_rule_binds_and_liquidates_under_the_grid(
    system, sg, chain, alice, accounts, tmp_path, caplog
):
    """`build_keeper` + `tick`, as `keeper run` does: the keeper logs the margin rule once and when governance
    changes it, exports the grid's size, and liquidates an account that only the grid makes liquidatable, with
    the engine's own figures as the reference (health not lowered, the account no longer liquidatable or smaller)."""
    import logging

    from test_keeper_e2e import KEEPER_INDEX, _keeper, _mine

    w3 = chain.provider.web3
    keeper_account = accounts[KEEPER_INDEX]
    system.usdc.mint(keeper_account, 1_000_000 * MILLION, sender=system.admin)
    # $80,000 of collateral, $60,000 of debt: additive health (20,000·0.85 + 60,000·0.80) / 60,000 = 1.083.
    open_position(system, alice, 0, {"WETH": 10 * 10**18, "WBTC": 10**8}, borrow=60_000 * MILLION)
    keeper = _keeper(system, chain, tmp_path)
    caplog.set_level(logging.INFO, logger="keeper-test")
    keeper.ensure_allowance()  # what `keeper run` does at start-up
    _mine(w3)
    keeper.tick()
    _mine(w3)
    assert keeper.metrics.grid_scenarios._value.get() == 0
    cols = {"WETH": [600_000, 800_000], "WBTC": [800_000, 600_000], "LINK": [600_000, 600_000],
            "USDC": [MILLION, MILLION]}  # fmt: skip
    set_grid(sg, system, cols)
    before = system.engine.accountHealth(alice, 0).health
    assert before < WAD  # only the grid makes it liquidatable
    start = w3.eth.block_number
    for _ in range(3):
        keeper.tick()
        _mine(w3)
    assert keeper.metrics.grid_scenarios._value.get() == 2
    rules = [r.getMessage() for r in caplog.records if "the engine margins by" in r.getMessage()]
    assert len(rules) == 2, rules  # the additive rule at start-up, then the grid once
    assert "scenario grid of 2 scenarios" in rules[1]
    engine = w3.eth.contract(address=system.engine.address, abi=keeper.dep.abis["MarginEngine"])
    events = engine.events.Liquidated().get_logs(from_block=start)
    assert [(e.args.owner, e.args.subId) for e in events][:1] == [(alice.address, 0)]
    assert system.engine.accountHealth(alice, 0).health >= before
    keeper.close()
