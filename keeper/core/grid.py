"""Portfolio margin by a scenario grid (issue 14, docs/portfolio-margin.md): the integer rule the engine will
enforce, written first here as its executable specification. When the Solidity lands, it is the source of truth and
this module mirrors it to the wei (the differential campaign compares them); until then the default grid is proved
equal to today's additive rule (`risk.account_health`) on random states.

A sub-account holds long legs (collateral balances) and short legs (debts, one per borrowable asset). A scenario
moves every listed asset's price by a WAD multiplier (absent: 1, no move). Under scenario `s`:

    long_s  = Σ w_mul_down(value_down(c_i), m_s,i)     collateral rounded against the account
    short_s = Σ w_mul_up(value_up(d_j), m_s,j)         debts rounded against the account
    health  = min over s of w_div_down(long_s, short_s)     (MAX_UINT with no debt)

Liquidatable iff some debt and health < 1; new risk needs health >= 1 over the initial grid. The default grid is one
joint scenario in which each collateral falls to its `lt` (`ltv` for the initial grid) and debts stay: exactly the
additive rule. Correlation credit comes from joint scenarios (a market-wide fall moves ETH, stETH and BTC together,
so a stETH/ETH loop barely moves) plus spread scenarios (a depeg, a divergence) that price the basis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keeper.core.risk import (
    MAX_UINT,
    AssetRisk,
    mul_div_down,
    value_down,
    value_up,
    w_div_down,
    w_div_up,
    w_mul_down,
    w_mul_up,
)
from keeper.core.units import WAD

K = str  # asset address

MAX_SCENARIOS = 32
MAX_ASSETS = 16
# A multiplier moves a price at most 100x up and never to zero: a scenario prices a crash, not an erasure.
MIN_MOVE = 10**14  # 0.0001
MAX_MOVE = 100 * WAD
# On-chain a multiplier is stored in millionths (32 bits: eight scenarios a storage word, per asset), so a grid's
# multipliers are whole multiples of 1e-6.
MOVE_UNIT = 10**12
MOVES_PER_WORD = 8
# A leg's value (WAD USD) must be below 2^224, so that value · multiplier (< 2^32) cannot overflow on-chain
# (GridMath reverts LegValueTooLarge).
MAX_LEG_VALUE = 2**224
WORDS = MAX_SCENARIOS // MOVES_PER_WORD


class GridError(ValueError):
    """A grid the engine would refuse (too many scenarios or assets, a multiplier out of bounds)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One joint move: asset -> WAD multiplier of its price; an asset not named does not move."""

    moves: Mapping[K, int]

    def move(self, asset: K) -> int:
        return self.moves.get(asset, WAD)


@dataclass(frozen=True, slots=True)
class Grid:
    """A governed grid (`stored`: multipliers in whole millionths, as the engine stores them), or the implicit
    default grid, whose multipliers are the assets' lt (ltv) at full WAD precision, read from their config."""

    scenarios: tuple[Scenario, ...]
    stored: bool = True

    def __post_init__(self) -> None:
        if not 1 <= len(self.scenarios) <= MAX_SCENARIOS:
            raise GridError(f"a grid has 1 to {MAX_SCENARIOS} scenarios, not {len(self.scenarios)}")
        assets = {a for s in self.scenarios for a in s.moves}
        if len(assets) > MAX_ASSETS:
            raise GridError(f"a grid moves at most {MAX_ASSETS} assets, not {len(assets)}")
        for i, s in enumerate(self.scenarios):
            for asset, m in s.moves.items():
                if not MIN_MOVE <= m <= MAX_MOVE:
                    raise GridError(f"scenario {i} moves {asset} by {m}: outside [{MIN_MOVE}, {MAX_MOVE}] (WAD)")
                if self.stored and m % MOVE_UNIT:
                    raise GridError(f"scenario {i} moves {asset} by {m}: not a whole number of millionths")


@dataclass(frozen=True, slots=True)
class Leg:
    """A position in one asset: `amount` in the asset's units (a debt already rounded up from its scaled debt),
    `price` in WAD USD per whole token."""

    amount: int
    price: int
    decimals: int


@dataclass(frozen=True, slots=True)
class Book:
    """A sub-account's portfolio: collateral (long) and debts (short), by asset."""

    longs: Mapping[K, Leg]
    shorts: Mapping[K, Leg]


@dataclass(frozen=True, slots=True)
class GridHealth:
    health: int  # WAD, rounded down; MAX_UINT without debt
    binding: int  # index of the scenario that sets the health (the first of equals); -1 without debt
    long_value: int  # long_s of the binding scenario (WAD USD)
    short_value: int  # short_s of the binding scenario (WAD USD)

    @property
    def liquidatable(self) -> bool:
        return self.short_value != 0 and self.long_value < self.short_value


def _checked(value: int) -> int:
    if value >= MAX_LEG_VALUE:
        raise GridError(f"a leg worth {value} (WAD USD) is beyond what the engine values (2^224)")
    return value


def _moved(value: int, m: int, up: bool, stored: bool) -> int:
    """value · m rounded down (up): for a stored grid as GridMath computes it, ⌊value · (m / 1e12) / 1e6⌋ (the same
    number as w_mul), for the implicit default grid as the engine's additive rule does, w_mul."""
    if not stored:
        return w_mul_up(value, m) if up else w_mul_down(value, m)
    millionths = m // MOVE_UNIT
    return -(-value * millionths // 10**6) if up else value * millionths // 10**6


def scenario_values(book: Book, scenario: Scenario, stored: bool = True) -> tuple[int, int]:
    """(long_s, short_s) of `book` under `scenario`, each rounded against the account."""
    long = sum(
        _moved(_checked(value_down(leg.amount, leg.price, leg.decimals)), scenario.move(a), False, stored)
        for a, leg in book.longs.items()
        if leg.amount
    )
    short = sum(
        _moved(_checked(value_up(leg.amount, leg.price, leg.decimals)), scenario.move(a), True, stored)
        for a, leg in book.shorts.items()
        if leg.amount
    )
    if max(long, short) > MAX_UINT:
        raise GridError("the scenario's total value overflows uint256")
    return long, short


def grid_health(book: Book, grid: Grid) -> GridHealth:
    """The lowest long/short ratio over the grid's scenarios, and which scenario binds."""
    best: GridHealth | None = None
    for i, scenario in enumerate(grid.scenarios):
        long, short = scenario_values(book, scenario, grid.stored)
        if short == 0:
            continue
        health = w_div_down(long, short)
        if best is None or health < best.health:
            best = GridHealth(health, i, long, short)
    return best if best is not None else GridHealth(MAX_UINT, -1, 0, 0)


def liquidating_fall(h: GridHealth) -> int:
    """The further fall (WAD) of every long leg, on top of the binding scenario, that makes the account
    liquidatable: 1 - 1/health, rounded down (a smaller fall than this never liquidates). 0 when already
    liquidatable; WAD when there is no debt."""
    if h.binding < 0:
        return WAD
    if h.health <= WAD:
        return 0
    return WAD - w_div_up(WAD, h.health)


def default_grid(assets: Mapping[K, AssetRisk], initial: bool = False) -> Grid:
    """Today's additive rule as a grid: one joint scenario, each collateral at its lt (ltv for the initial grid),
    every debt at 1."""
    return Grid((Scenario({a: (cfg.ltv if initial else cfg.lt) for a, cfg in assets.items()}),), stored=False)


def pack(moves: Sequence[int]) -> list[int]:
    """Multipliers in whole millionths, scenario by scenario, packed as the engine stores a column: scenario i in
    bits [32·(i mod 8), 32·(i mod 8) + 32) of word i div 8."""
    words = [0] * WORDS
    for i, m in enumerate(moves):
        words[i // MOVES_PER_WORD] |= m << (32 * (i % MOVES_PER_WORD))
    return words


def unpack(words: Sequence[int], count: int) -> tuple[int, ...]:
    """The first `count` multipliers (whole millionths) of a packed column."""
    return tuple((int(words[i // MOVES_PER_WORD]) >> (32 * (i % MOVES_PER_WORD))) & 0xFFFFFFFF for i in range(count))


def column(grid: Grid, asset: K) -> tuple[int, ...]:
    """`asset`'s multipliers in every scenario, packed as the engine stores them (`pack`), in millionths; an asset a
    scenario does not move is 1."""
    if not grid.stored:
        raise GridError("the default grid is not stored: the engine reads each asset's lt and ltv")
    return tuple(pack([scenario.move(asset) // MOVE_UNIT for scenario in grid.scenarios]))


def ramped(old: Grid, new: Grid, start: int, end: int, now: int) -> Grid:
    """The grid in force at `now` while `old` ramps to `new` over [start, end]: every multiplier moves linearly,
    rounded towards its old value, so a grid change alone moves health gradually and no account is liquidated at
    the moment it is made. A scenario that `old` lacks ramps from no move (1). Before `start`, `old`; from `end`,
    `new`."""
    if now >= end or end <= start:
        return new
    if now <= start:
        return old
    elapsed, span = now - start, end - start
    scenarios = []
    for i, target in enumerate(new.scenarios):
        source = old.scenarios[i] if i < len(old.scenarios) else Scenario({})
        moves = {}
        for asset in sorted({*source.moves, *target.moves}):
            a, b = source.move(asset), target.move(asset)
            step = mul_div_down(abs(b - a), elapsed, span) // MOVE_UNIT * MOVE_UNIT  # whole millionths
            moves[asset] = a + step if b >= a else a - step
        scenarios.append(Scenario(moves))
    return Grid(tuple(scenarios))


def book_of(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    debts: Mapping[K, int],
    debt_prices: Mapping[K, int],
    debt_decimals: Mapping[K, int],
) -> Book:
    """A Book from an account's balances and its debts (asset units, rounded up), with their prices."""
    return Book(
        {a: Leg(b, prices[a], assets[a].decimals) for a, b in balances.items() if b},
        {a: Leg(d, debt_prices[a], debt_decimals[a]) for a, d in debts.items() if d},
    )


def scenario_table(book: Book, grid: Grid) -> Sequence[tuple[int, int, int]]:
    """(long_s, short_s, health_s) for each scenario, for reports (`keeper status`)."""
    rows = []
    for scenario in grid.scenarios:
        long, short = scenario_values(book, scenario, grid.stored)
        rows.append((long, short, MAX_UINT if short == 0 else w_div_down(long, short)))
    return rows
