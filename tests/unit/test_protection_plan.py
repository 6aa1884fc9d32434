"""The keeper's protection planners (keeper/core/protection.py), pure: every plan is checked against the module's rules
with the exact risk mirror, and against what a simpler plan would do."""

from __future__ import annotations

import pytest

from keeper.core import protection as pr
from keeper.core import risk
from keeper.core.units import RAY, WAD

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


# ---------------------------------------------------------------------------------------------- the band first

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


def test_a_rescue_moves_collateral_only_into_the_liquidatable_sub_accounts() -> None:
    """The rescue batch goes to the liquidatable sub-account alone; a sibling that is only below the target is
    left to ordinary rebalancing, within the reserve."""
    subs = [sub(0, 1.0, 1_716), sub(1, 1.0, 1_600), sub(2, 10.0, 1_000)]  # 0.99, 1.06, 8.5
    moves, rescued = pr.plan_rescue(BOOK, subs, TARGET, {0}, max_moves=4)
    assert rescued == {0}
    assert {m.to_sub for m in moves} == {0}
    assert 1 in {m.to_sub for m in pr.plan_rebalances(BOOK, subs, TARGET)}  # ordinary rebalancing serves sub 1


TARGET_LOW = 115 * 10**16  # the drills' target: below WETH's gap-proof health 1 / 0.85 = 1.176


def banded(s: pr.Sub, threshold: int = 105 * 10**16) -> pr.Sub:
    s.band = threshold
    return s


def shocked_by_hand(weth_fall: float, wbtc_fall: float = 0.0, debt_rise: float = 0.0) -> pr.Book:
    prices = {WETH: int(2000 * (1 - weth_fall)) * WAD, WBTC: int(60000 * (1 - wbtc_fall)) * WAD}
    return pr.Book(prices, ASSETS, index=RAY, debt_price=int(WAD * (1 + debt_rise)), debt_decimals=6)


def test_a_shocked_book_repeats_each_recent_move() -> None:
    shock = pr.Shock({WETH: 10 * 10**16, WBTC: 5 * 10**16}, debt_rise=2 * 10**16)
    mixed = sub(0, 1.5, 4_000, wbtc=0.05)
    by_hand = shocked_by_hand(0.10, 0.05, 0.02)
    assert BOOK.shocked(shock).health(mixed.balances, mixed.scaled_debt) == by_hand.health(
        mixed.balances, mixed.scaled_debt
    )


def test_in_a_calm_market_a_banded_sub_account_is_left_to_its_band() -> None:
    """A sub-account at 1.037 opted into a band at 1.05, a rich sibling, a target of 1.15 (which no lift can make
    gap-proof with WETH). When prices have lately moved 1 % per update, a repeat leaves it at 1.026, inside its band,
    which will catch it: it is not lifted. When they have moved 5 %, a repeat takes it to 0.985, past the band: it
    is lifted. A sub-account without a band, or a plan without a shock, lifts it as before."""

    def owner(band: bool) -> list[pr.Sub]:
        receiver = sub(0, 1.0, 1_640)  # 1700 / 1640 = 1.0366
        return [banded(receiver) if band else receiver, sub(1, 10.0, 2_000)]

    calm, jumpy = pr.Shock({WETH: 10**16}), pr.Shock({WETH: 5 * 10**16})
    receiver = owner(True)[0]
    assert shocked_by_hand(0.01).health(receiver.balances, receiver.scaled_debt).health >= WAD
    assert shocked_by_hand(0.05).health(receiver.balances, receiver.scaled_debt).health < WAD
    assert pr.plan_rebalances(BOOK, owner(True), TARGET_LOW, shock=calm) == []
    for subs, shock in ((owner(True), jumpy), (owner(False), calm), (owner(True), None)):
        moves = pr.plan_rebalances(BOOK, subs, TARGET_LOW, shock=shock)
        assert [m.to_sub for m in moves] == [0]
        assert health(apply(subs, moves)[0]) == pytest.approx(TARGET_LOW, rel=1e-9)


def test_in_a_calm_market_a_lift_that_makes_the_sub_account_gap_proof_is_made() -> None:
    """With a target of 1.2, above WETH's gap-proof health, the same banded sub-account is lifted in a calm market
    when one move takes it to gap-proof, and not when its donor can only lift it part of the way."""
    calm = pr.Shock({WETH: 10**16})
    rich = [banded(sub(0, 1.0, 1_640)), sub(1, 10.0, 2_000)]
    moves = pr.plan_rebalances(BOOK, rich, TARGET, shock=calm)
    assert [m.to_sub for m in moves] == [0]
    assert gap(apply(rich, moves)[0]) >= WAD
    poor = [banded(sub(0, 1.0, 1_640)), sub(1, 1.0, 1_300)]  # it can give down to 1.2 only: 1.037 -> 1.12
    assert pr.plan_rebalances(BOOK, poor, TARGET, shock=calm) == []
    partial = pr.plan_rebalances(BOOK, [sub(0, 1.0, 1_640), sub(1, 1.0, 1_300)], TARGET, shock=calm)
    assert len(partial) == 1  # without a band, the partial lift is made
    assert gap(apply(poor, partial)[0]) < WAD


def test_recent_moves_keep_the_largest_fall_and_rise_for_their_memory() -> None:
    a, debt = "0xa", "0xdebt"
    moves = pr.RecentMoves(memory_s=3_600)
    assert moves.shock([a], debt) == pr.Shock({a: 0}, 0)  # nothing seen yet: calm
    moves.observe(0, {a: 100 * WAD, debt: WAD})
    moves.observe(12, {a: 90 * WAD, debt: WAD})  # -10 %
    moves.observe(24, {a: 99 * WAD, debt: 13 * WAD // 10})  # +10 %, the debt asset +30 %
    moves.observe(36, {debt: WAD})  # no price for `a` in this block: nothing measured for it
    moves.observe(48, {a: 97_02 * WAD // 100})  # -2 % from 99, measured from the last price seen
    assert moves.largest_fall(a) == 10**17
    assert moves.largest_rise(a) == 10**17
    assert moves.shock([a], debt) == pr.Shock({a: 10**17}, 3 * 10**17)
    moves.observe(3_613, {a: 97_02 * WAD // 100})  # an hour after the -10 % (t = 12): forgotten; the -2 % is not
    assert moves.largest_fall(a) == 2 * 10**16
    moves.observe(3_700, {a: 97_02 * WAD // 100, debt: WAD})
    assert moves.shock([a], debt) == pr.Shock({a: 0}, 0)
    moves.observe(3_700, {a: 87_318 * WAD // 1000})  # the next block, the same second: -10 % is still a move
    assert moves.largest_fall(a) == 10**17
    moves.observe(3_690, {a: 97_02 * WAD // 100})  # an older timestamp (out of order): not measured
    assert moves.largest_rise(a) == 0
