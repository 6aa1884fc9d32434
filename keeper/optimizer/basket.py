"""Reference books and scenario grids for the portfolio-margin optimizer (issue 14; docs/risk-model.md,
"Correlation and joint Monte Carlo").

A **book** is a sub-account reduced to USD exposures: long legs (collateral) and short legs (debts), `{asset: USD}`.
A **scenario** maps assets to price multipliers; an asset a scenario does not name stays at 1.0. A **grid** is a list
of scenarios. The book's grid health is `min over scenarios of Σ long·m / Σ short·m` (floats here; the contracts
and `keeper.core` round in WAD). The default grid is one scenario, each collateral at its `lt` and the debts at 1,
which is today's additive rule `Σ value·lt / debt`.

To judge a grid, each reference book is sized to grid health exactly 1.0 (its long legs scaled, the shorts kept):
the most a user could borrow against it. Given simulated terminal price ratios over the keeper's delay
(`correlation.simulate`), the book is insolvent on a path when its long legs are worth less than its short legs
at the end of the horizon; `insolvency_probability` is the fraction of such paths.

Calibration (a first, one-parameter search): a book sized to health 1 under a grid where its health is `h` is
insolvent exactly when its terminal long/short ratio falls below `h`, so the target is met iff `h` is at most the
target quantile of that ratio (`safe_health`). `calibrate_scale` scales a template grid's moves by one factor,
the smallest that makes every reference book safe; the book that sets it has no excess collateral, the others
some. Per-scenario scales, bounds from governance and `keeper optimize --grid` are not built yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from keeper.optimizer.correlation import CorrelationError

Scenario = Mapping[str, float]
Grid = Sequence[Scenario]


@dataclass(frozen=True)
class Book:
    """USD exposures of one sub-account: long legs (collateral) and short legs (debts)."""

    name: str
    long: Mapping[str, float]
    short: Mapping[str, float]
    note: str = ""

    def __post_init__(self) -> None:
        legs = list(self.long.values()) + list(self.short.values())
        if any(not v >= 0 for v in legs):
            raise CorrelationError(f"book {self.name!r}: leg values must be >= 0")
        if sum(self.short.values()) <= 0 or sum(self.long.values()) <= 0:
            raise CorrelationError(f"book {self.name!r}: needs a long and a short leg of positive value")

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.long, *self.short]))

    def scaled(self, factor: float) -> Book:
        """The same book with every long leg times `factor` (the shorts unchanged)."""
        return Book(self.name, {a: v * factor for a, v in self.long.items()}, dict(self.short), self.note)


def _moved(legs: Mapping[str, float], scenario: Scenario) -> float:
    return sum(v * scenario.get(a, 1.0) for a, v in legs.items())


def check_grid(grid: Grid) -> None:
    """CorrelationError unless the grid has a scenario and every multiplier is finite and positive."""
    if not grid:
        raise CorrelationError("a grid needs at least one scenario")
    for i, s in enumerate(grid):
        bad = {a: m for a, m in s.items() if not (math.isfinite(m) and m > 0)}
        if bad:
            raise CorrelationError(f"scenario {i}: multipliers must be finite and positive, got {bad}")


def _ratios(book: Book, grid: Grid) -> list[float]:
    check_grid(grid)
    return [_moved(book.long, s) / _moved(book.short, s) for s in grid]


def grid_health(book: Book, grid: Grid) -> float:
    """`min over scenarios of Σ long·m / Σ short·m`; an asset a scenario leaves out moves by 1.0."""
    return min(_ratios(book, grid))


def binding_scenario(book: Book, grid: Grid) -> int:
    """Index of the scenario that sets the book's grid health (the first one on a tie)."""
    ratios = _ratios(book, grid)
    return ratios.index(min(ratios))


def at_health(book: Book, grid: Grid, target: float = 1.0) -> Book:
    """The book with its long legs scaled so that its grid health is exactly `target`."""
    return book.scaled(target / grid_health(book, grid))


def default_grid(lt: Mapping[str, float]) -> list[dict[str, float]]:
    """Today's additive rule as a grid: one scenario, each collateral at its `lt`, the debt assets at 1."""
    return [dict(lt)]


def additive_health(book: Book, lt: Mapping[str, float]) -> float:
    """Today's rule: `Σ value_i·lt_i / Σ debt` (a collateral without an `lt` counts for nothing)."""
    return sum(v * lt.get(a, 0.0) for a, v in book.long.items()) / sum(book.short.values())


def terminal_ratio(book: Book, assets: Sequence[str], ratios: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per path, the book's long value over its short value at the horizon, from price ratios (paths, assets)."""
    col = {a: i for i, a in enumerate(assets)}
    missing = [a for a in book.assets if a not in col]
    if missing:
        raise CorrelationError(f"book {book.name!r}: no simulated prices for {missing}")
    long = sum(v * ratios[:, col[a]] for a, v in book.long.items())
    short = sum(v * ratios[:, col[a]] for a, v in book.short.items())
    return np.asarray(long / short, dtype=np.float64)


def insolvency_probability(
    book: Book, grid: Grid, assets: Sequence[str], ratios: npt.NDArray[np.float64], health: float = 1.0
) -> float:
    """P(long < short at the horizon) for the book sized to grid health `health` (1.0: at the liquidation line),
    given simulated terminal price ratios (paths, assets) in the order `assets`."""
    sized = at_health(book, grid, health)
    return float(np.mean(terminal_ratio(sized, assets, ratios) < 1.0))


def safe_health(book: Book, assets: Sequence[str], ratios: npt.NDArray[np.float64], target: float) -> float:
    """The highest grid health the book may have while, sized to health 1, it ends insolvent on at most a share
    `target` of the paths. Sized to health 1 under a grid where the book's health is `h`, the longs are scaled by
    `1/h`, so the book is insolvent exactly when its terminal long/short ratio is below `h`: the answer is the
    order statistic of that ratio with at most `target·paths` values strictly below it."""
    if not 0 <= target < 1:
        raise CorrelationError("the insolvency target must be in [0, 1)")
    x = np.sort(terminal_ratio(book, assets, ratios))
    return float(x[math.floor(target * x.size)])


def scale_grid(template: Grid, scale: float) -> list[dict[str, float]]:
    """Each multiplier moved from 1 by `scale` times its move in `template`: `1 + scale·(m - 1)`."""
    if not scale >= 0:
        raise CorrelationError("a grid scale must be >= 0")
    grid = [{a: 1 + scale * (m - 1) for a, m in s.items()} for s in template]
    check_grid(grid)
    return grid


@dataclass(frozen=True)
class BookFit:
    """One reference book under a calibrated grid."""

    name: str
    safe_health: float  # the most grid health the target allows (safe_health)
    grid_health: float  # what the grid gives the book (<= safe_health when the grid is safe for it)
    p_insolvent: float  # sized to grid health 1
    excess: float  # safe_health / grid_health - 1: collateral the grid asks beyond what the target needs

    @property
    def safe(self) -> bool:
        return self.grid_health <= self.safe_health


@dataclass(frozen=True)
class Calibration:
    scale: float
    grid: list[dict[str, float]]
    books: tuple[BookFit, ...]
    binding: str  # the book that sets the scale


def fit(book: Book, grid: Grid, assets: Sequence[str], ratios: npt.NDArray[np.float64], target: float) -> BookFit:
    safe = safe_health(book, assets, ratios, target)
    h = grid_health(book, grid)
    return BookFit(book.name, safe, h, insolvency_probability(book, grid, assets, ratios), safe / h - 1)


def calibrate_scale(
    template: Grid,
    books: Sequence[Book],
    assets: Sequence[str],
    ratios: npt.NDArray[np.float64],
    target: float,
    max_scale: float | None = None,
    tol: float = 1e-6,
) -> Calibration:
    """The smallest scale of `template` (`scale_grid`) under which every book's grid health is at most its
    `safe_health`, by bisection on each book (a book's grid health falls as the scale grows when the template's
    scenarios move its longs down against its shorts). `max_scale` defaults to the largest scale that keeps every
    multiplier positive. CorrelationError when even `max_scale` leaves a book unsafe."""
    if not books:
        raise CorrelationError("no books to calibrate against")
    check_grid(template)
    if max_scale is None:
        downs = [1 - m for s in template for m in s.values() if m < 1]
        max_scale = 0.999 / max(downs) if downs else 10.0
    need = 0.0
    binding = books[0].name
    for book in books:
        safe = safe_health(book, assets, ratios, target)
        if grid_health(book, scale_grid(template, need)) <= safe:
            continue
        if grid_health(book, scale_grid(template, max_scale)) > safe:
            raise CorrelationError(
                f"book {book.name!r}: no scale of the grid up to {max_scale:g} meets the target {target:g} "
                f"(its safe health is {safe:.4f}); the template lacks a scenario that stresses this book"
            )
        lo, hi = need, max_scale
        while hi - lo > tol:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if grid_health(book, scale_grid(template, mid)) <= safe else (mid, hi)
        need, binding = hi, book.name
    grid = scale_grid(template, need)
    return Calibration(need, grid, tuple(fit(b, grid, assets, ratios, target) for b in books), binding)


@dataclass(frozen=True)
class ReferenceLibrary:
    books: tuple[Book, ...] = field(default_factory=tuple)

    def by_name(self, name: str) -> Book:
        for b in self.books:
            if b.name == name:
                return b
        raise CorrelationError(f"no reference book named {name!r}")


# The reference books of issue 14. Values are USD at the start; the optimizer rescales the longs anyway, so only
# the mix within each side matters.
REFERENCE_BOOKS = ReferenceLibrary(
    (
        Book("single ETH/USDC", {"ETH": 100_000.0}, {"USDC": 80_000.0}, "one volatile collateral, stable debt"),
        Book("stETH/ETH loop", {"stETH": 100_000.0}, {"ETH": 90_000.0}, "liquid-staking loop: basis (depeg) risk"),
        Book("ETH vs BTC debt", {"ETH": 100_000.0}, {"BTC": 70_000.0}, "two majors: the ETH/BTC spread"),
        Book(
            "three-leg basket",
            {"ETH": 60_000.0, "BTC": 40_000.0},
            {"USDC": 70_000.0},
            "a diversified collateral basket against stable debt",
        ),
    )
)
