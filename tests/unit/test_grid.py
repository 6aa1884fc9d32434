"""The scenario-grid rule (keeper/core/grid.py): its default grid is today's additive rule, checked against the
mirror of the engine (`risk.account_health`, itself checked against the contracts by test_risk_differential) on
random states; hedged books computed by hand; the liquidating fall, ramps and bounds."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.core import grid as g
from keeper.core import risk
from keeper.core.units import RAY, WAD

USD = 10**6  # a 6-decimal stablecoin's unit


@st.composite
def states(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, int], dict[str, risk.AssetRisk], int, int, int, int]:
    n = draw(st.integers(1, 4))
    balances, prices, assets = {}, {}, {}
    for i in range(n):
        a = f"0x{i:040x}"
        decimals = draw(st.integers(0, 24))
        lt = draw(st.integers(10**17, 95 * 10**16))
        ltv = draw(st.integers(5 * 10**16, lt))
        assets[a] = risk.AssetRisk(decimals, ltv, lt, 10**17)
        balances[a] = draw(st.integers(0, 10**30))
        prices[a] = draw(st.integers(1, 10**24))
    scaled = draw(st.integers(0, 10**24))
    index = draw(st.integers(RAY, 3 * RAY))
    debt_price = draw(st.integers(9 * 10**17, 11 * 10**17))
    debt_decimals = draw(st.integers(0, 18))
    return balances, prices, assets, scaled, index, debt_price, debt_decimals


@settings(max_examples=400, deadline=None)
@given(states())
def test_default_grid_is_the_additive_rule(
    state: tuple[dict[str, int], dict[str, int], dict[str, risk.AssetRisk], int, int, int, int],
) -> None:
    balances, prices, assets, scaled, index, debt_price, debt_decimals = state
    h = risk.account_health(balances, prices, assets, scaled, index, debt_price, debt_decimals)
    debt_asset = "0x" + "d" * 40
    book = g.book_of(
        balances, prices, assets, {debt_asset: h.debt}, {debt_asset: debt_price}, {debt_asset: debt_decimals}
    )
    maintenance = g.grid_health(book, g.default_grid(assets))
    initial = g.grid_health(book, g.default_grid(assets, initial=True))
    assert maintenance.health == h.health
    assert maintenance.liquidatable == risk.is_liquidatable(h)
    if h.debt:
        assert maintenance.long_value == h.lt_weighted
        assert maintenance.short_value == h.debt_value
        assert initial.long_value == h.ltv_weighted
        assert (initial.health >= WAD) == risk.margin_ok(h)


def _leg(usd: int) -> g.Leg:
    """`usd` dollars of an 18-decimal token priced at $1 (so amounts read as dollars)."""
    return g.Leg(usd * WAD, WAD, 18)


STETH, ETH, BTC, USDC = "steth", "eth", "btc", "usdc"


def test_a_hedged_loop_gets_correlation_credit() -> None:
    """stETH collateral against ETH debt: the additive rule (stETH at lt 0.80, ETH debt at 1) finds it
    liquidatable; a grid with a joint market fall and a depeg finds it healthy, the depeg binding."""
    book = g.Book({STETH: _leg(100)}, {ETH: _leg(90)})
    additive = g.Grid((g.Scenario({STETH: 80 * 10**16}),))
    joint = g.Scenario({STETH: 70 * 10**16, ETH: 70 * 10**16})  # market down 30 %: both legs
    depeg = g.Scenario({STETH: 93 * 10**16})  # stETH at 0.93 ETH
    portfolio = g.Grid((joint, depeg))
    a = g.grid_health(book, additive)
    p = g.grid_health(book, portfolio)
    assert a.liquidatable
    assert a.health == Fraction(80, 90) * WAD // 1
    assert not p.liquidatable
    assert p.binding == 1
    assert p.health == Fraction(93, 90) * WAD // 1  # 70/63 = 1.111 under the joint fall; 93/90 under the depeg


def test_a_borrowed_asset_needs_an_up_move() -> None:
    """ETH collateral against BTC debt: a divergence scenario where BTC rises 20 % while ETH falls 10 %."""
    book = g.Book({ETH: _leg(150)}, {BTC: _leg(100)})
    grid = g.Grid((g.Scenario({ETH: 70 * 10**16, BTC: 70 * 10**16}), g.Scenario({ETH: 90 * 10**16, BTC: 120 * 10**16})))
    h = g.grid_health(book, grid)
    assert h.binding == 1
    assert (h.long_value, h.short_value) == (135 * WAD, 120 * WAD)
    assert h.health == Fraction(135, 120) * WAD // 1


def test_rounding_is_against_the_account() -> None:
    """A 6-decimal leg of 1 unit at $0.333...: collateral rounds down, debt up, through the move too."""
    third = WAD // 3
    long = g.Book({USDC: g.Leg(1, third, 6)}, {ETH: g.Leg(1, third, 6)})
    values = g.scenario_values(long, g.Scenario({USDC: WAD // 2, ETH: WAD // 2}))
    exact = Fraction(third, 10**6) / 2  # the exact value of either leg after the move, WAD USD
    assert values[0] < exact < values[1]


def test_no_debt_is_never_liquidatable() -> None:
    h = g.grid_health(g.Book({ETH: _leg(1)}, {}), g.Grid((g.Scenario({ETH: MIN}),)))
    assert h.health == risk.MAX_UINT
    assert h.binding == -1
    assert not h.liquidatable
    assert g.liquidating_fall(h) == WAD


MIN = g.MIN_MOVE


@pytest.mark.parametrize("usd", [101, 150, 1_000])
def test_a_fall_smaller_than_the_liquidating_fall_never_liquidates(usd: int) -> None:
    book = g.Book({ETH: _leg(usd), BTC: _leg(usd)}, {USDC: _leg(100)})
    grid = g.Grid((g.Scenario({ETH: 80 * 10**16, BTC: 90 * 10**16}), g.Scenario({ETH: 60 * 10**16})))
    h = g.grid_health(book, grid)
    fall = g.liquidating_fall(h)
    assert 0 < fall < WAD

    def after(f: int) -> g.GridHealth:
        binding = grid.scenarios[h.binding]
        moved = g.Scenario({**binding.moves, **{a: binding.move(a) * (WAD - f) // WAD for a in book.longs}})
        scaled = g.Grid(tuple(moved if i == h.binding else s for i, s in enumerate(grid.scenarios)), stored=False)
        return g.grid_health(g.Book(book.longs, book.shorts), scaled)

    # A further fall f of every long leg in the binding scenario (an asset it does not move falls from 1).
    assert not after(fall - fall // 1000).liquidatable
    assert after(fall + fall // 1000).liquidatable


def test_a_ramped_tightening_moves_health_gradually_and_never_at_once() -> None:
    book = g.Book({ETH: _leg(130)}, {USDC: _leg(100)})
    old = g.Grid((g.Scenario({ETH: 85 * 10**16}),))  # health 1.105
    new = g.Grid((g.Scenario({ETH: 70 * 10**16}), g.Scenario({ETH: 75 * 10**16, USDC: 11 * 10**17})))  # 0.886
    start, end = 1_000, 1_000 + 7 * 86_400
    healths = [g.grid_health(book, g.ramped(old, new, start, end, t)).health for t in range(start, end + 1, 3_600)]
    assert healths[0] == g.grid_health(book, old).health
    assert healths[-1] == g.grid_health(book, new).health
    assert all(b <= a for a, b in itertools.pairwise(healths))  # tightening: never loosens on the way
    assert max(a - b for a, b in itertools.pairwise(healths)) < WAD // 200  # < 0.5 % an hour
    assert g.ramped(old, new, start, end, start - 1) == old
    assert g.ramped(old, new, start, end, end + 1) == new


def test_grid_bounds() -> None:
    with pytest.raises(g.GridError, match="1 to 32 scenarios"):
        g.Grid(())
    with pytest.raises(g.GridError, match="1 to 32 scenarios"):
        g.Grid(tuple(g.Scenario({ETH: WAD}) for _ in range(33)))
    with pytest.raises(g.GridError, match="at most 16 assets"):
        g.Grid((g.Scenario({f"a{i}": WAD for i in range(17)}),))
    with pytest.raises(g.GridError, match="outside"):
        g.Grid((g.Scenario({ETH: 0}),))
    with pytest.raises(g.GridError, match="outside"):
        g.Grid((g.Scenario({ETH: 101 * WAD}),))


def test_columns_pack_eight_millionths_a_word_and_stored_grids_are_whole_millionths() -> None:
    grid = g.Grid(tuple(g.Scenario({ETH: (i + 1) * 10**16}) for i in range(10)))  # ETH at 1 %, 2 %, ... 10 %
    words = g.column(grid, ETH)
    assert len(words) == 4
    assert [(words[i // 8] >> (32 * (i % 8))) & 0xFFFFFFFF for i in range(10)] == [(i + 1) * 10_000 for i in range(10)]
    assert words[2:] == (0, 0)
    assert (g.column(grid, BTC)[0] & 0xFFFFFFFF) == 1_000_000  # an asset no scenario moves stays at 1
    with pytest.raises(g.GridError, match="millionths"):
        g.Grid((g.Scenario({ETH: WAD + 1}),))
    with pytest.raises(g.GridError, match="not stored"):
        g.column(g.default_grid({ETH: risk.AssetRisk(18, 7 * 10**17, 8 * 10**17, 10**17)}), ETH)


def test_a_leg_beyond_the_engines_range_is_refused() -> None:
    """GridMath refuses a leg worth 2^224 WAD USD or more (LegValueTooLarge); so does the mirror."""
    huge = g.Book({ETH: g.Leg(2**224, 1, 0)}, {USDC: _leg(1)})  # 2^224 units of a 0-decimal token at 1e-18 USD
    with pytest.raises(g.GridError, match="2\\^224"):
        g.grid_health(huge, g.Grid((g.Scenario({ETH: WAD}),)))
    # Below it, the health's division is what bounds the long value (long · 1e18 < 2^256), as checked Solidity does.
    assert g.grid_health(g.Book({ETH: g.Leg(2**196, 1, 0)}, {USDC: _leg(1)}), g.Grid((g.Scenario({}),))).health
    with pytest.raises(risk.Overflow):
        g.grid_health(g.Book({ETH: g.Leg(2**224 - 1, 1, 0)}, {USDC: _leg(1)}), g.Grid((g.Scenario({}),)))
