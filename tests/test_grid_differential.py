"""The grid rule's mirror (keeper/core/grid.py) against the Solidity (contracts/libraries/GridMath.sol, through
GridHarness) on random portfolios: several long and short legs in assets of any decimals, shared assets, grids of 1
to 32 scenarios with multipliers across their whole range, and no shorts at all. Every case must agree on the
health, the binding scenario and both values under it, to the wei. 10,000 cases in `make test`; set CK_LONG=1 for
100,000."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from eth_utils import keccak

from keeper.core import grid as g
from keeper.core.units import WAD

CASES = 100_000 if os.environ.get("CK_LONG") else 10_000
BATCH = 250
NO_SHORT = 2**256 - 1
ASSETS = [f"a{i}" for i in range(16)]


@pytest.fixture(scope="module")
def harness(project: Any, admin: Any) -> Any:
    return admin.deploy(project.GridHarness)


def _move(rng: random.Random) -> int:
    """A multiplier anywhere in the allowed range, most of them near 1 (whole millionths)."""
    kind = rng.random()
    if kind < 0.1:
        return rng.choice([g.MIN_MOVE, g.MAX_MOVE, WAD])
    if kind < 0.8:
        return rng.randrange(500_000, 1_500_001) * g.MOVE_UNIT
    return rng.randrange(g.MIN_MOVE // g.MOVE_UNIT, g.MAX_MOVE // g.MOVE_UNIT + 1) * g.MOVE_UNIT


def _case(rng: random.Random) -> tuple[g.Book, g.Grid]:
    decimals = {a: rng.choice([0, 2, 6, 8, 18, 24, rng.randrange(0, 25)]) for a in ASSETS}
    prices = {a: rng.choice([1, WAD, 10 ** rng.randrange(0, 27)]) + rng.randrange(0, 10**12) for a in ASSETS}

    def leg(a: str) -> g.Leg:
        scale = 10 ** rng.randrange(0, 31)
        return g.Leg(rng.randrange(0, scale + 1), prices[a], decimals[a])

    held = rng.sample(ASSETS, rng.randrange(1, 6))
    longs = {a: leg(a) for a in held[: rng.randrange(1, len(held) + 1)]}
    shorts = {a: leg(a) for a in rng.sample(ASSETS, rng.randrange(0, 4))}  # may share assets with the longs
    count = rng.choice([1, 1, 2, 8, 9, 16, 32, rng.randrange(1, 33)])
    moved = [*held, *shorts]
    scenarios = tuple(g.Scenario({a: _move(rng) for a in moved if rng.random() < 0.8}) for _ in range(count))
    return g.Book(longs, shorts), g.Grid(scenarios)


def _encode(book: g.Book, grid: g.Grid) -> tuple[Any, ...]:
    def positions(legs: dict[str, g.Leg] | Any) -> list[tuple[Any, ...]]:
        return [(leg.amount, leg.price, leg.decimals, list(g.column(grid, a))) for a, leg in legs.items()]

    return (positions(book.longs), positions(book.shorts), len(grid.scenarios))


def test_grid_health_matches_the_contract_to_the_wei(harness: Any) -> None:
    rng = random.Random(2026_12_07)
    checked = no_debt = several_scenarios = 0
    for _ in range(0, CASES, BATCH):
        cases = [_case(rng) for _ in range(BATCH)]
        results = harness.healthBatch([_encode(book, grid) for book, grid in cases])
        for (book, grid), r in zip(cases, results, strict=True):
            m = g.grid_health(book, grid)
            binding = NO_SHORT if m.binding < 0 else m.binding
            assert (r.health, r.binding, r.longValue, r.shortValue) == (
                m.health,
                binding,
                m.long_value,
                m.short_value,
            ), (
                book,
                grid,
            )
            checked += 1
            no_debt += m.binding < 0
            several_scenarios += len(grid.scenarios) > 1 and m.binding > 0
    assert checked == CASES
    assert no_debt > CASES // 50  # the sample does cover accounts without debt,
    assert several_scenarios > CASES // 4  # and grids bound by another scenario than the first


def test_a_column_without_the_grids_scenarios_is_refused(harness: Any) -> None:
    """A grid of 9 scenarios where one leg's column holds only the first 8 (its second word unset): the library
    refuses to price the ninth at zero, whether that leg is short (it would drop out) or long."""
    full = list(g.column(g.Grid(tuple(g.Scenario({"x": WAD}) for _ in range(9))), "x"))
    short_of_one = list(g.column(g.Grid(tuple(g.Scenario({"x": WAD}) for _ in range(8))), "x"))
    assert harness.health(([(10**18, WAD, 18, full)], [(10**18, WAD, 18, full)], 9)).health == WAD
    unset = keccak(text="UnsetMove(uint256)")[:4].hex()  # the library's error, which the harness ABI does not name
    for long_column, short_column in ((full, short_of_one), (short_of_one, full)):
        with pytest.raises(Exception, match=f"(UnsetMove|{unset})"):
            harness.health(([(10**18, WAD, 18, long_column)], [(10**18, WAD, 18, short_column)], 9))
