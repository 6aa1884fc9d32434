"""The keeper's protection planners (keeper/protection.py), pure: every plan is checked against the module's rules
with the exact risk mirror, and against what a simpler plan would do."""

from __future__ import annotations

import pytest

from keeper import protection as pr
from keeper import risk
from keeper.risk import RAY, WAD

WETH, WBTC = "0xweth", "0xwbtc"
PRICES = {WETH: 2000 * WAD, WBTC: 60000 * WAD}
ASSETS = {
    WETH: risk.AssetRisk(decimals=18, ltv=80 * 10**16, lt=85 * 10**16, max_discount=10**17),
    WBTC: risk.AssetRisk(decimals=8, ltv=75 * 10**16, lt=80 * 10**16, max_discount=10**17),
}
BOOK = pr.Book(PRICES, ASSETS, index=RAY, debt_price=WAD, debt_decimals=6, min_debt=10 * 10**6)
TARGET = 120 * 10**16


def sub(sub_id: int, weth: float, debt_usd: float, wbtc: float = 0) -> pr.Sub:
    balances = {WETH: int(weth * 10**18)}
    if wbtc:
        balances[WBTC] = int(wbtc * 10**8)
    return pr.Sub(sub_id, balances, risk.to_scaled_up(int(debt_usd * 10**6), RAY))


def health(s: pr.Sub) -> int:
    return BOOK.health(s.balances, s.scaled_debt).health


def apply(subs: list[pr.Sub], moves: list[pr.Move]) -> dict[int, pr.Sub]:
    work = {s.sub_id: pr.Sub(s.sub_id, dict(s.balances), s.scaled_debt) for s in subs}
    for m in moves:
        work[m.from_sub].balances[m.asset] -= m.amount
        work[m.to_sub].balances[m.asset] = work[m.to_sub].balances.get(m.asset, 0) + m.amount
    return work


def test_one_move_lifts_the_receiver_to_the_target_and_no_further() -> None:
    subs = [sub(0, 1.0, 1650), sub(1, 5.0, 2000)]  # health 1.03 and 4.25
    assert health(subs[0]) < TARGET
    moves = pr.plan_rebalances(BOOK, subs, TARGET)
    assert len(moves) == 1
    after = apply(subs, moves)
    h_recv, h_give = health(after[0]), health(after[1])
    assert h_recv <= TARGET
    # One more wei would pass the target: the move is the largest the rule allows.
    one_more = apply(subs, [pr.Move(1, 0, WETH, moves[0].amount + 1, 0, 0)])
    assert health(one_more[0]) > TARGET
    assert h_give >= TARGET
    assert moves[0].receiver_health_after == h_recv


def test_donors_keep_their_target_and_initial_margin() -> None:
    subs = [sub(0, 1.0, 1700), sub(1, 1.1, 1500)]  # donor at 1.246: it can give only down to 1.2
    moves = pr.plan_rebalances(BOOK, subs, TARGET)
    assert len(moves) == 1
    after = apply(subs, moves)
    give = BOOK.health(after[1].balances, after[1].scaled_debt)
    assert give.health >= TARGET
    assert give.ltv_weighted >= give.debt_value
    assert health(after[0]) < TARGET  # the donor ran out before the receiver reached the target
    more = apply(subs, [pr.Move(1, 0, WETH, moves[0].amount + 10**12, 0, 0)])
    assert health(more[1]) < TARGET


def test_fewest_moves_picks_the_donor_that_lifts_most() -> None:
    # Donors 1 and 2 could each give a little; only donor 3 can lift the receiver to the target in one move.
    subs = [sub(0, 0.5, 1650), sub(1, 1.2, 1500), sub(2, 1.3, 1500), sub(3, 10.0, 100)]
    moves = pr.plan_rebalances(BOOK, subs, TARGET)
    assert len(moves) == 1
    assert moves[0].from_sub == 3
    assert health(apply(subs, moves)[0]) == pytest.approx(TARGET, rel=1e-9)
    # Without donor 3 it takes several moves, each from a donor that keeps its target.
    several = pr.plan_rebalances(BOOK, subs[:3], TARGET)
    assert len(several) >= 2
    after = apply(subs[:3], several)
    assert all(health(after[i]) >= TARGET for i in (1, 2))


def test_several_receivers_and_assets() -> None:
    subs = [sub(0, 1.0, 1650), sub(1, 0.0, 20_000, wbtc=0.4), sub(2, 4.0, 100, wbtc=0.5)]
    moves = pr.plan_rebalances(BOOK, subs, TARGET)
    after = apply(subs, moves)
    assert health(after[0]) == pytest.approx(TARGET, rel=1e-6)
    assert health(after[1]) == pytest.approx(TARGET, rel=1e-6)
    for s in after.values():
        assert s.scaled_debt == 0 or health(s) <= TARGET or health(s) >= TARGET
    # Nothing leaves the owner: per-asset totals are unchanged.
    for asset in (WETH, WBTC):
        assert sum(s.balances.get(asset, 0) for s in subs) == sum(s.balances.get(asset, 0) for s in after.values())


def test_no_donor_no_move() -> None:
    assert pr.plan_rebalances(BOOK, [sub(0, 1.0, 1650), sub(1, 1.0, 1500)], TARGET) == []  # both below target
    assert pr.plan_rebalances(BOOK, [sub(0, 1.0, 1650)], TARGET) == []
    assert pr.plan_rebalances(BOOK, [sub(0, 1.0, 100), sub(1, 5.0, 0)], TARGET) == []  # nobody at risk


CFG = pr.PreConfig(pre_threshold=105 * 10**16, discount=2 * 10**16, max_share=25 * 10**16)


@pytest.mark.parametrize(("debt", "inside"), [(1700, True), (1716, False), (1618, False), (1690, True)])
def test_band_is_one_to_pre_threshold(debt: float, inside: bool) -> None:
    s = sub(0, 1.0, debt)  # 1700 $ collateral·0.85 = 1700 lt-weighted
    h = BOOK.health(s.balances, s.scaled_debt)
    assert pr.in_band(h, CFG) is inside, h.health / WAD
    assert (pr.quote_pre_liquidation(BOOK, s, CFG, WETH) is not None) is inside


def test_pre_liquidation_repays_the_share_pays_the_discount_and_improves_health() -> None:
    s = sub(0, 1.0, 1650)
    q = pr.quote_pre_liquidation(BOOK, s, CFG, WETH)
    assert q is not None
    debt = risk.to_assets_up(s.scaled_debt, RAY)
    assert q.repaid == risk.w_mul_down(debt, CFG.max_share)
    seized_usd = q.seized * 2000 / 10**18
    assert seized_usd == pytest.approx(q.repaid / 10**6 * 1.02, rel=1e-9)
    assert q.health_after > q.health_before
    # Health rises iff collateral/debt > 1 + discount: here 1.03/0.85 = 1.21, so a 25 % discount would lower it.
    greedy = pr.PreConfig(pre_threshold=105 * 10**16, discount=25 * 10**16, max_share=25 * 10**16)
    assert pr.quote_pre_liquidation(BOOK, s, greedy, WETH) is None


def test_pre_liquidation_dust_rule_and_profit() -> None:
    small = sub(0, 0.0125, 20.5)  # debt 20.5: a quarter would leave 15.4 >= 10, allowed
    assert pr.quote_pre_liquidation(BOOK, small, CFG, WETH) is not None
    tiny = sub(0, 0.008, 13.0)  # a quarter would leave 9.75 < 10: repay down to exactly min debt
    q = pr.quote_pre_liquidation(BOOK, tiny, CFG, WETH)
    assert q is not None
    assert risk.to_assets_up(tiny.scaled_debt, RAY) - q.repaid == BOOK.min_debt
    s = sub(0, 1.0, 1650)
    usd = {WETH: 2000.0}
    assert pr.plan_pre_liquidation(BOOK, s, CFG, usd, 1.0, gas_usd=1.0) is not None
    assert pr.plan_pre_liquidation(BOOK, s, CFG, usd, 1.0, gas_usd=100.0) is None  # 2 % of 412 $ < gas


def test_equal_lifts_prefer_the_safer_collateral() -> None:
    # The donor holds both WETH (lt 0.85) and WBTC (lt 0.80) and either alone lifts the receiver to the target; the
    # receiver gets WETH, the asset governance rates safer.
    subs = [sub(0, 1.0, 1650), sub(2, 5.0, 100, wbtc=0.5)]
    moves = pr.plan_rebalances(BOOK, subs, TARGET)
    assert [m.asset for m in moves] == [WETH]
    safer = {  # swap the ratings (not the decimals): now WBTC is the safer one
        WETH: risk.AssetRisk(decimals=18, ltv=75 * 10**16, lt=80 * 10**16, max_discount=10**17),
        WBTC: risk.AssetRisk(decimals=8, ltv=80 * 10**16, lt=85 * 10**16, max_discount=10**17),
    }
    swapped = pr.Book(PRICES, safer, index=RAY, debt_price=WAD, debt_decimals=6, min_debt=10 * 10**6)
    assert [m.asset for m in pr.plan_rebalances(swapped, subs, TARGET)] == [WBTC]


def test_headroom_plans_inside_the_rule() -> None:
    subs = [sub(0, 1.0, 1650), sub(1, 1.1, 1500)]  # the donor binds: it can give only down to its floor
    room = 10**15
    moves = pr.plan_rebalances(BOOK, subs, TARGET, headroom=room)
    after = pr.apply_moves(subs, moves)
    assert health(after[1]) >= TARGET + room  # the donor keeps the target plus the headroom
    exact = pr.apply_moves(subs, pr.plan_rebalances(BOOK, subs, TARGET))
    assert health(exact[1]) < TARGET + room  # which the exact plan does not
    rich = [sub(0, 1.0, 1650), sub(1, 5.0, 2000)]  # the receiver binds: lifted to the target minus the headroom
    lifted = pr.apply_moves(rich, pr.plan_rebalances(BOOK, rich, TARGET, headroom=room))
    assert TARGET - room - 10**12 <= health(lifted[0]) <= TARGET - room
    # The headroom never exceeds a quarter of the target's margin over 1: a target of 1.002 keeps a band.
    low = WAD + 2 * 10**15
    tight = pr.plan_rebalances(BOOK, [sub(0, 1.0, 1699), sub(1, 5.0, 2000)], low, headroom=room)
    assert tight
    assert WAD < tight[0].receiver_health_after <= low - (low - WAD) // 4


def test_excluded_sub_accounts_receive_nothing() -> None:
    subs = [sub(0, 1.0, 1650), sub(1, 1.0, 1600), sub(2, 10.0, 100)]
    moves = pr.plan_rebalances(BOOK, subs, TARGET, exclude=frozenset({0}))
    assert moves
    assert {m.to_sub for m in moves} == {1}


def test_rescue_lifts_a_liquidatable_account_above_one() -> None:
    # Sub 0 at 0.944 (liquidatable); subs 1 and 2 at 1.4167 can each give only down to 1.2: one alone does not
    # lift sub 0 above 1, two do, within MAX_BATCH moves.
    subs = [sub(0, 10.0, 18_000), sub(1, 2.0, 2_400), sub(2, 2.0, 2_400)]
    moves, rescued = pr.plan_rescue(BOOK, subs, TARGET, {0}, max_moves=4)
    assert rescued == {0}
    assert len(moves) == 2
    assert {m.from_sub for m in moves} == {1, 2}
    after = pr.apply_moves(subs, moves)
    assert health(after[0]) >= WAD
    assert all(health(after[i]) >= TARGET for i in (1, 2))
    # One move allowed: nothing can be rescued, so nothing is planned (the account is left to the liquidator).
    assert pr.plan_rescue(BOOK, subs, TARGET, {0}, max_moves=1) == ([], set())


def test_rescue_sends_nothing_into_an_account_it_cannot_save() -> None:
    # Sub 0 is beyond rescue (0.5), sub 1 is just below 1 and can be saved: the moves go to sub 1 only, although
    # sub 0 is the more at risk and would be served first by ordinary rebalancing.
    subs = [sub(0, 1.0, 3_400), sub(1, 10.0, 17_100), sub(2, 3.0, 3_000)]
    assert health(subs[0]) < health(subs[1]) < WAD
    moves, rescued = pr.plan_rescue(BOOK, subs, TARGET, {0, 1}, max_moves=4)
    assert rescued == {1}
    assert moves
    assert {m.to_sub for m in moves} == {1}
    assert pr.plan_rebalances(BOOK, subs, TARGET, max_moves=1)[0].to_sub == 0


def test_a_donor_is_never_planned_into_its_own_band() -> None:
    """A donor opted into a pre-liquidation band at 1.5 gives only down to 1.5 (plus the headroom), not to the
    target 1.2: the module refuses a giver left in its own band."""
    donor = sub(1, 2.0, 2125)  # health 1.6: it could give 0.165 WETH down to the target, 0.124 down to its band
    donor.band = 150 * 10**16
    subs = [sub(0, 1.0, 1650), donor]
    moves = pr.plan_rebalances(BOOK, subs, TARGET, headroom=10**15)
    assert len(moves) == 1
    after = apply(subs, moves)
    assert 150 * 10**16 + 10**15 <= health(after[1]) < 151 * 10**16  # as far as the band allows, no further
    unbanded = pr.plan_rebalances(BOOK, [sub(0, 1.0, 1650), sub(1, 2.0, 2125)], TARGET, headroom=10**15)
    assert moves[0].amount < unbanded[0].amount


# ---------------------------------------------------------------------------------------------- the gap reserve

# The book after every collateral falls by 1 - lt at once, written by hand: WETH 2000·0.85, WBTC 60000·0.80.
GAPPED = pr.Book(
    {WETH: 1700 * WAD, WBTC: 48000 * WAD}, ASSETS, index=RAY, debt_price=WAD, debt_decimals=6, min_debt=10 * 10**6
)


def gap(s: pr.Sub) -> int:
    return GAPPED.health(s.balances, s.scaled_debt).health


def test_gap_health_is_the_health_after_each_collateral_falls_by_one_minus_lt() -> None:
    mixed = sub(0, 1.5, 4_000, wbtc=0.05)
    assert pr.gap_health(BOOK, mixed.balances, mixed.scaled_debt) == gap(mixed)
    # One asset: every value scales by its lt, so the gap health is the health times lt (to rounding).
    only_weth = sub(1, 2.0, 2_500)
    assert pr.gap_health(BOOK, only_weth.balances, only_weth.scaled_debt) == pytest.approx(
        health(only_weth) * 0.85, rel=1e-12
    )


def test_a_donor_keeps_its_gap_reserve() -> None:
    """A WBTC donor at health 1.30 could give down to the target 1.2, but a 20 % gap (1 - lt) would then take it
    below 1; it gives only what keeps its gap health at or above 1, and the receiver stays below the target."""
    donor = sub(1, 0.0, 3_692, wbtc=0.1)  # health 4800 / 3692 = 1.300, gap health 3840 / 3692 = 1.040
    subs = [sub(0, 1.0, 1650), donor]
    moves = pr.plan_rebalances(BOOK, subs, TARGET)
    assert len(moves) == 1
    assert (moves[0].from_sub, moves[0].asset) == (1, WBTC)
    after = apply(subs, moves)
    assert gap(after[1]) >= WAD
    one_more = apply(subs, [pr.Move(1, 0, WBTC, moves[0].amount + 1, 0, 0)])
    assert gap(one_more[1]) < WAD  # the largest move the reserve allows
    assert health(after[0]) < TARGET  # the reserve, not the target, bounded it
    # Without the reserve (a rescue's rule) the donor gives down to the target, past its reserve.
    spent = pr.plan_rebalances(BOOK, subs, TARGET, gap_reserve=False)
    assert spent[0].amount > moves[0].amount
    assert health(apply(subs, spent)[1]) >= TARGET
    assert gap(apply(subs, spent)[1]) < WAD


def test_a_donor_below_its_reserve_gives_nothing_but_a_rescue() -> None:
    """A donor whose gap health is already below 1 lifts no sibling that is merely below the target, but it still
    rescues one that is liquidatable: a rescue spends the reserve to save a liquidation that is certain now."""
    donor = sub(2, 0.0, 3_900, wbtc=0.1)  # health 1.231 >= the target 1.2, gap health 0.985 < 1
    assert gap(donor) < WAD <= TARGET <= health(donor)
    below_target = sub(0, 1.0, 1_650)  # 1.03
    assert pr.plan_rebalances(BOOK, [below_target, donor], TARGET) == []
    liquidatable = sub(0, 1.0, 1_716)  # 0.9907
    moves, rescued = pr.plan_rescue(BOOK, [liquidatable, donor], TARGET, {0}, max_moves=4)
    assert rescued == {0}
    after = apply([liquidatable, donor], moves)
    assert health(after[0]) >= WAD
    assert health(after[2]) >= TARGET


def test_a_rescue_moves_collateral_only_into_the_liquidatable_sub_accounts() -> None:
    """The rescue batch goes to the liquidatable sub-account alone; a sibling that is only below the target is
    left to ordinary rebalancing, within the reserve."""
    subs = [sub(0, 1.0, 1_716), sub(1, 1.0, 1_600), sub(2, 10.0, 1_000)]  # 0.99, 1.06, 8.5
    moves, rescued = pr.plan_rescue(BOOK, subs, TARGET, {0}, max_moves=4)
    assert rescued == {0}
    assert {m.to_sub for m in moves} == {0}
    assert 1 in {m.to_sub for m in pr.plan_rebalances(BOOK, subs, TARGET)}  # ordinary rebalancing serves sub 1
