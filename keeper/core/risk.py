"""Pure integer mirror of the on-chain risk math: `contracts/libraries/RiskMath.sol` one function for one, then
the MarginEngine's health, liquidation quote and borrow checks and the Vault's interest accrual.

Rules of this module:
- integers only (no floats, no Decimal), no I/O, nothing global but constants;
- every function has the name of the Solidity function it mirrors, in snake_case, and rounds the same way;
- where the contract's checked arithmetic would revert (a result above 2**256 - 1, a subtraction below zero,
  a division by zero), the mirror raises `Overflow` or `DivisionByZero` (both `ArithmeticError`s), so the keeper
  never believes in a result the chain cannot produce;
- where the engine reverts with a custom error, the mirror raises the exception of the same name with the same
  arguments (`exc.args`, in ABI order), checked in the same order as the contract checks them.

Units, as on-chain: ratios and USD prices/values are WAD (1e18); the borrow index is RAY (1e27); token amounts are
in each token's own decimals. Asset keys are whatever the caller uses (an index into `assetList()`, an address);
they only have to agree between the mappings passed together.

`tests/test_risk_differential.py` compares all of it with the deployed contracts on Anvil, to the wei.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from keeper.core.units import RAY, WAD, YEAR

MAX_UINT = 2**256 - 1
MAX_UINT128 = 2**128 - 1

# MarginEngine constants.
MAX_DISCOUNT = 25 * 10**16  # 25 %: cap of any asset's liquidation discount
MAX_MIN_DISCOUNT = 5 * 10**16  # 5 %: cap of the discount just below health 1
HALF_CLOSE = 5 * 10**17  # 50 % close factor while health is near 1
HEALTH_NEUTRAL_MARGIN = 10**12  # 1e-6: kept below the health-neutral discount, for the rounding of the amounts

K = TypeVar("K", bound=Hashable)


# ------------------------------------------------------------------------------------------------ errors


class ContractRevert(Exception):  # noqa: N818 -- named after what it mirrors: a revert, not a Python error
    """Base of everything the mirror raises where the contract would revert."""


class MathPanic(ContractRevert, ArithmeticError):  # noqa: N818 -- mirrors Solidity's Panic
    """Solidity's `Panic(uint256 code)` from checked arithmetic."""

    code = 0


class Overflow(MathPanic):
    """Panic(0x11): a result above 2**256 - 1 or below zero (checked arithmetic)."""

    code = 0x11


class DivisionByZero(MathPanic):
    """Panic(0x12): a division by zero."""

    code = 0x12


class LiquidationRevert(ContractRevert):
    """A MarginEngine custom error; the class name is the error's name and `args` its arguments."""


class AssetNotListed(LiquidationRevert):
    def __init__(self, asset: object) -> None:
        super().__init__(asset)
        self.asset = asset


class NotLiquidatable(LiquidationRevert):
    def __init__(self, health: int) -> None:
        super().__init__(health)
        self.health = health


class ZeroAmount(LiquidationRevert):
    def __init__(self) -> None:
        super().__init__()


class LiquidationLeavesDust(LiquidationRevert):
    def __init__(self, remaining: int, min_debt: int) -> None:
        super().__init__(remaining, min_debt)
        self.remaining = remaining
        self.min_debt = min_debt


class NothingSeized(LiquidationRevert):
    def __init__(self) -> None:
        super().__init__()


class LiquidationLowersHealth(LiquidationRevert):
    def __init__(self, health_before: int, health_after: int) -> None:
        super().__init__(health_before, health_after)
        self.health_before = health_before
        self.health_after = health_after


class NotInsolvent(LiquidationRevert):
    def __init__(self, cover_value: int, debt_value: int) -> None:
        super().__init__(cover_value, debt_value)
        self.cover_value = cover_value
        self.debt_value = debt_value


class NothingToRepay(LiquidationRevert):
    """The account owes nothing in the debt asset a liquidation would repay."""

    def __init__(self) -> None:
        super().__init__()


class LegValueTooLarge(LiquidationRevert):
    """GridMath's: a leg worth 2^224 (WAD USD) or more, or a scenario's long sum beyond uint256 (its argument is
    then the sum wrapped modulo 2^256, as the assembly loop leaves it)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)


class PriceUnavailable(ContractRevert):
    """A price the computation needs is missing (the router would revert for it). `asset` is the caller's key,
    or `DEBT_ASSET` for the debt asset's price."""

    def __init__(self, asset: object) -> None:
        super().__init__(asset)
        self.asset = asset


DEBT_ASSET = "debt asset"


# ------------------------------------------------------------------------------ checked uint256 arithmetic


def _add(a: int, b: int) -> int:
    r = a + b
    if r > MAX_UINT:
        raise Overflow(f"{a} + {b} overflows uint256")
    return r


def _sub(a: int, b: int) -> int:
    if b > a:
        raise Overflow(f"{a} - {b} underflows")
    return a - b


def _mul(a: int, b: int) -> int:
    r = a * b
    if r > MAX_UINT:
        raise Overflow(f"{a} * {b} overflows uint256")
    return r


def _div(a: int, b: int) -> int:
    if b == 0:
        raise DivisionByZero(f"{a} / 0")
    return a // b


_POW10: tuple[int, ...] = tuple(10**i for i in range(78))  # 10**78 > 2**256


def _pow10(decimals: int) -> int:
    if decimals >= len(_POW10):
        raise Overflow(f"10 ** {decimals} overflows uint256")
    return _POW10[decimals]


# ------------------------------------------------------------------------------------- RiskMath, 1 for 1


def mul_div_down(x: int, y: int, d: int) -> int:
    """`(x * y) / d`."""
    return _div(_mul(x, y), d)


def mul_div_up(x: int, y: int, d: int) -> int:
    """`(x * y + (d - 1)) / d`; d == 0 underflows `d - 1` (Panic 0x11) before it could divide by zero."""
    return _div(_add(_mul(x, y), _sub(d, 1)), d)


def w_mul_down(x: int, y: int) -> int:
    return mul_div_down(x, y, WAD)


def w_mul_up(x: int, y: int) -> int:
    return mul_div_up(x, y, WAD)


def w_div_down(x: int, y: int) -> int:
    return mul_div_down(x, WAD, y)


def w_div_up(x: int, y: int) -> int:
    return mul_div_up(x, WAD, y)


def value_down(amount: int, price: int, decimals: int) -> int:
    """USD value (WAD) of `amount` token units at `price` (WAD USD per whole token), rounded down."""
    return mul_div_down(amount, price, _pow10(decimals))


def value_up(amount: int, price: int, decimals: int) -> int:
    """USD value (WAD) of `amount` token units at `price`, rounded up."""
    return mul_div_up(amount, price, _pow10(decimals))


def amount_down(value: int, price: int, decimals: int) -> int:
    """Token units worth `value` USD (WAD) at `price`, rounded down."""
    return mul_div_down(value, _pow10(decimals), price)


def amount_up(value: int, price: int, decimals: int) -> int:
    """Token units worth `value` USD (WAD) at `price`, rounded up."""
    return mul_div_up(value, _pow10(decimals), price)


def to_assets_up(scaled: int, index: int) -> int:
    """Debt assets owed for `scaled` debt at borrow index `index` (RAY), rounded up."""
    return mul_div_up(scaled, index, RAY)


def to_assets_down(scaled: int, index: int) -> int:
    """Debt assets for `scaled` debt at `index`, rounded down."""
    return mul_div_down(scaled, index, RAY)


def to_scaled_up(assets: int, index: int) -> int:
    """Scaled debt created by borrowing `assets` at `index`, rounded up."""
    return mul_div_up(assets, RAY, index)


def to_scaled_down(assets: int, index: int) -> int:
    """Scaled debt extinguished by repaying `assets` at `index`, rounded down."""
    return mul_div_down(assets, RAY, index)


def ramped_lt(lt_from: int, lt_to: int, start: int, end: int, now: int) -> int:
    """The effective lt at `now` of a ramp from `lt_from` at `start` to `lt_to` at `end` (start < end): held at
    `lt_from` before `start` and at `lt_to` from `end` on, linear in between, rounded down.
    `RiskMath.interpolateDown`, as `MarginEngine._effectiveLt` calls it with block.timestamp."""
    if now >= end:
        return lt_to
    if now <= start:
        return lt_from
    if lt_from > lt_to:
        return _sub(lt_from, mul_div_up(lt_from - lt_to, now - start, end - start))
    return _add(lt_from, mul_div_down(lt_to - lt_from, now - start, end - start))


# ------------------------------------------------------------------------------------------- OracleRouter


def scale_answer(answer: int, feed_decimals: int) -> int:
    """A feed answer as a WAD price, as `OracleRouter._validatedPrice` scales it (exact: feed decimals <= 18).
    The router's guards (answer > 0, staleness, bounds) are not mirrored: a price the router refuses is one the
    caller leaves out, and the functions below raise `PriceUnavailable` for it."""
    return _mul(answer, _pow10(18 - feed_decimals))


# ------------------------------------------------------------------------------------------ engine types


@dataclass(frozen=True, slots=True)
class AssetRisk:
    """One collateral's `IMarginEngine.AssetConfig` as the risk math uses it (WAD ratios)."""

    decimals: int
    ltv: int
    lt: int
    max_discount: int


@dataclass(frozen=True, slots=True)
class RiskParams:
    """`IMarginEngine.RiskParams`: WAD ratios, `full_close_debt_value` in WAD USD, `min_debt` in debt units."""

    min_discount: int
    full_close_health: int
    full_close_debt_value: int
    min_debt: int


@dataclass(frozen=True, slots=True)
class Health:
    """`IMarginEngine.AccountHealth`, field for field."""

    collateral_value: int  # Σ value_down(c_i), WAD USD
    lt_weighted: int  # Σ w_mul_down(value_down(c_i), lt_i)
    ltv_weighted: int  # Σ w_mul_down(value_down(c_i), ltv_i): borrowing power
    debt: int  # debt-asset units, rounded up
    debt_value: int  # WAD USD, rounded up
    health: int  # WAD, rounded down; MAX_UINT when there is no debt


@dataclass(frozen=True, slots=True)
class Quote:
    """`IMarginEngine.LiquidationQuote`, field for field."""

    repaid: int  # debt-asset units the liquidator pays
    seized: int  # collateral units the liquidator receives
    discount: int  # WAD
    max_repay: int  # debt-asset units allowed by the close factor and the dust rule
    bad_debt: int  # debt-asset units written off by this liquidation


# ------------------------------------------------------------------------ GridMath and the engine's grid


MOVE_UNIT_MILLIONTHS = 10**6  # a stored multiplier m is m / 1e6
MOVE_WAD = 10**12  # ... and m · 1e12 in WAD
LEG_VALUE_LIMIT = 2**224  # GridMath.LegValueTooLarge at or above it


@dataclass(frozen=True, slots=True)
class GridRule:
    """The engine's stored scenario grid at one block (`Lens.grid`): `count` scenarios, the initial-margin scale,
    and for each listed asset (keyed as the caller keys its balances) and the debt asset the column in force at
    that block (ramps applied), one multiplier per scenario in whole millionths."""

    count: int
    initial_scale: int
    columns: Mapping[Any, tuple[int, ...]]
    debt: tuple[int, ...]
    others: Mapping[Any, tuple[int, ...]] = field(default_factory=dict)  # further debt assets that are not collateral

    def short_column(self, key: Any, primary: Any) -> tuple[int, ...]:
        """A debt's column: the primary's, a further debt's own, or (a debt that is also a collateral) its
        collateral column, as the engine keeps one column per asset."""
        if key == primary:
            return self.debt
        return self.others[key] if key in self.others else self.columns[key]


def _check_leg(value: int) -> None:
    if value >= LEG_VALUE_LIMIT:
        raise LegValueTooLarge(value)


def grid_scenarios(values: Mapping[K, int], debt_value: int, grid: GridRule) -> list[tuple[int, int]]:
    """(long_s, short_s) for each scenario with the one short leg `debt_value` (see `grid_legs`)."""
    return grid_legs(values, [(debt_value, grid.debt)], grid)


def grid_legs(
    values: Mapping[K, int], shorts: list[tuple[int, tuple[int, ...]]], grid: GridRule
) -> list[tuple[int, int]]:
    """(long_s, short_s) for each scenario, as `GridMath._moved` sums them: the long legs `values` (collateral
    values, rounded down, by asset) and the short legs `(value, column)` (each debt's value, rounded up), each
    term `value · m / 1e6` rounded down for longs and up for debts. Raises LegValueTooLarge where GridMath does."""
    for v in values.values():
        _check_leg(v)
    for v, _ in shorts:
        _check_leg(v)
    out = []
    for s in range(grid.count):
        short = sum(-(-v * col[s] // MOVE_UNIT_MILLIONTHS) for v, col in shorts)
        if short > MAX_UINT:
            raise LegValueTooLarge(short % 2**256)
        long = 0
        if short:  # GridMath sums the longs only where there is short value
            long = sum(v * grid.columns[a][s] // MOVE_UNIT_MILLIONTHS for a, v in values.items())
            if long > MAX_UINT:
                raise LegValueTooLarge(long % 2**256)
        out.append((long, short))
    return out


def grid_health(values: Mapping[K, int], debt_value: int, grid: GridRule) -> tuple[int, int]:
    """`GridMath.health` with one short leg (see `grid_legs_health`)."""
    return grid_legs_health(values, [(debt_value, grid.debt)], grid)


def grid_legs_health(
    values: Mapping[K, int], shorts: list[tuple[int, tuple[int, ...]]], grid: GridRule
) -> tuple[int, int]:
    """`GridMath.health`: (health, binding scenario), the lowest `w_div_down(long_s, short_s)` over the scenarios
    with short value (the first of equals); (MAX_UINT, -1) with none."""
    health, binding = MAX_UINT, -1
    for s, (long, short) in enumerate(grid_legs(values, shorts, grid)):
        if short:
            h = w_div_down(long, short)
            if h < health:
                health, binding = h, s
    return health, binding


def grid_want_lt(grid: GridRule, collateral: object, binding: int) -> int:
    """The seized collateral's move over the debt's in the binding scenario, rounded up (`_setHealth`'s
    `wantLt`): the lt that makes a liquidation's health-neutral discount `health / lt - 1` under the grid."""
    return mul_div_up(grid.columns[collateral][binding] * MOVE_WAD, WAD, grid.debt[binding] * MOVE_WAD)


# ---------------------------------------------------------------------------------- MarginEngine._health


def account_health(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    grid: GridRule | None = None,
) -> Health:
    """`MarginEngine._health` (what `accountHealth` returns). Only assets with a non-zero balance count (the
    contract walks the account's asset mask, whose bits are exactly its non-zero balances); each needs a price
    and a config. `debt_price` is read only when there is debt, as on-chain. Assets are taken in the mapping's
    order: pass them in `assetList()` order for the same first failure when several would fail. Under a stored
    `grid` the figures are the grid's (`_set_health`)."""
    return account_figures(balances, prices, assets, scaled_debt, index, debt_price, debt_decimals, grid)[0]


def account_figures(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    grid: GridRule | None = None,
) -> tuple[Health, int]:
    """`account_health` and the binding scenario of the grid (-1 under the additive rule or without debt)."""
    debts = _one_debt(scaled_debt, index, debt_price, debt_decimals)
    v = valuation_of(balances, prices, assets, debts, 0, grid, lenient=False)
    return v.health, v.binding


def is_liquidatable(h: Health) -> bool:
    """`debtValue > 0 and ltWeighted < debtValue`, the engine's exact test (equivalent to health < WAD)."""
    return h.debt_value != 0 and h.lt_weighted < h.debt_value


def is_liquidatable_at(health: int, debt: int) -> bool:
    """The same test from an account's reported health and debt (a Lens row): some debt and health below 1."""
    return debt != 0 and health < WAD


def margin_ok(h: Health) -> bool:
    """The initial-margin rule of borrow, withdraw and collateral moves: `ltvWeighted >= debtValue`."""
    return h.ltv_weighted >= h.debt_value


def borrowing_power(h: Health) -> int:
    """Borrowing power left, WAD USD: `ltvWeighted - debtValue`, 0 when the account is at or past its limit."""
    return max(h.ltv_weighted - h.debt_value, 0)


# ----------------------------------------------------------------------------- MarginEngine._repayLimits


def liquidation_discount(h: Health, asset: AssetRisk, params: RiskParams) -> int:
    """The health-scaled part of the discount, `min(maxDiscount, minDiscount + WAD - health)`: a reverse Dutch
    auction in health. Defined for a liquidatable account only; raises NotLiquidatable(health) otherwise, as the
    engine does before computing it. `liquidation_quote` caps it further (`neutral_discount`)."""
    if not is_liquidatable(h):
        raise NotLiquidatable(h.health)
    return min(_sub(_add(params.min_discount, WAD), h.health), asset.max_discount)


def neutral_discount(health: int, lt: int) -> int:
    """`MarginEngine._neutralDiscount`: the largest discount at which seizing collateral of threshold `lt` keeps
    `health` (`health / lt - 1`), less `HEALTH_NEUTRAL_MARGIN`; 0 when there is none."""
    neutral = w_div_down(health, lt)
    return neutral - WAD - HEALTH_NEUTRAL_MARGIN if neutral > WAD + HEALTH_NEUTRAL_MARGIN else 0


def max_repay(h: Health, params: RiskParams) -> int:
    """The primary debt's close factor and dust rule (`max_repay_of`)."""
    return max_repay_of(h, h.debt, params.min_debt, params)


def max_repay_of(h: Health, debt: int, min_debt: int, params: RiskParams) -> int:
    """Close factor and dust rule for a repayment of `debt` (one of the account's debts, with its own `min_debt`):
    all of it when `health < fullCloseHealth` or the account's `debtValue <= fullCloseDebtValue`, else half rounded
    up (`w_mul_up(debt, 0.5)`), raised to the whole debt when the half would leave less than `min_debt`."""
    full_close = h.health < params.full_close_health or h.debt_value <= params.full_close_debt_value
    cap = debt if full_close else w_mul_up(debt, HALF_CLOSE)
    if debt - cap < min_debt:
        cap = debt
    return cap


def repay_limits(h: Health, requested: int, asset: AssetRisk, params: RiskParams) -> Quote:
    """`repay_limits_of` for the primary debt."""
    return repay_limits_of(h, h.debt, params.min_debt, requested, asset, params)


def repay_limits_of(h: Health, debt: int, min_debt: int, requested: int, asset: AssetRisk, params: RiskParams) -> Quote:
    """`EngineModule._repayLimits` for a liquidatable account repaying `debt`: the health-scaled discount, max
    repay and `repaid = min(requested, maxRepay)` (seized and bad debt still 0). Raises ZeroAmount."""
    discount = liquidation_discount(h, asset, params)
    cap = max_repay_of(h, debt, min_debt, params)
    repaid = min(requested, cap)
    if repaid == 0:
        raise ZeroAmount()
    return Quote(repaid=repaid, seized=0, discount=discount, max_repay=cap, bad_debt=0)


# ---------------------------------------------------------------------------- MarginEngine._seizeAmounts


def seize_amounts(
    repaid: int,
    discount: int,
    balance: int,
    debt_price: int,
    coll_price: int,
    coll_decimals: int,
    debt_decimals: int,
) -> tuple[int, int]:
    """(repaid, seized): collateral bought by `repaid` at `discount`, rounded down; when that exceeds `balance`,
    the whole balance and the repayment lowered to its discounted value, rounded up, never above `repaid`."""
    seize_value = w_mul_down(value_down(repaid, debt_price, debt_decimals), _add(WAD, discount))
    seized = amount_down(seize_value, coll_price, coll_decimals)
    if seized <= balance:
        return repaid, seized
    pay_value = w_div_up(value_up(balance, coll_price, coll_decimals), _add(WAD, discount))
    return min(amount_up(pay_value, debt_price, debt_decimals), repaid), balance


def repaid_scaled(repaid: int, debt: int, scaled_debt: int, index: int) -> int:
    """Scaled debt a repayment of `repaid` extinguishes in a liquidation: all of it when the whole (rounded-up)
    debt is repaid, else `to_scaled_down(repaid, index)`."""
    return scaled_debt if repaid == debt else to_scaled_down(repaid, index)


# ------------------------------------------------------------------- MarginEngine._valuation (lenient)


@dataclass(frozen=True, slots=True)
class DebtLeg:
    """One debt an account owes (`Lens.debts` and `Lens.accountDebts`): its scaled amount at its vault's borrow
    `index`, its price (None when the router refuses it), its decimals and the smallest debt a liquidation may
    leave in it (`DebtConfig.minDebt`; the primary's is `RiskParams.min_debt`)."""

    scaled: int
    index: int
    price: int | None
    decimals: int
    min_debt: int = 0


@dataclass(slots=True)
class Owed:
    """One debt during a computation, as the engine's memory `Debt`: what is left of it (`scaled`, less what a
    write-off or the repayment takes), `amount` and `value` rounded up, and `off`, the scaled debt written off."""

    key: Any
    scaled: int
    index: int
    price: int
    decimals: int
    min_debt: int
    amount: int = 0
    value: int = 0
    off: int = 0

    def refresh(self) -> None:
        self.amount = to_assets_up(self.scaled, self.index)
        self.value = value_up(self.amount, self.price, self.decimals)


@dataclass(frozen=True, slots=True)
class Valuation:
    """`MarginEngine._valuation`: the health figures (`debt` the primary's, `debt_value` every debt's), `cover`
    (`Σ w_div_down(value_down(c_i), WAD + min(minDiscount, maxDiscount_i))`), `unpriced` (the first held asset, in
    the mapping's order, without a price, or None; lenient form only), the long legs' `values`, the debts owed
    (`owed`, in the caller's order: pass the primary first, then `debtAssets()` order), and under a grid the
    binding scenario."""

    health: Health
    cover: int
    unpriced: object | None
    values: Mapping[Any, int] = field(default_factory=dict)
    grid: GridRule | None = None
    binding: int = -1
    owed: tuple[Owed, ...] = ()
    primary: Any = DEBT_ASSET


def valuation_of(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    debts: Mapping[Any, DebtLeg],
    min_discount: int,
    grid: GridRule | None = None,
    primary: Any = DEBT_ASSET,
    lenient: bool = True,
) -> Valuation:
    """The valuation over every debt in `debts` (keyed like the grid's columns; `primary` is the key of the
    engine's primary debt asset). Every owed debt needs a price (PriceUnavailable(key)); lenient, a held asset
    missing from `prices` counts at zero, strict it raises PriceUnavailable(asset)."""
    owed = []
    debt_value = 0
    for key, leg in debts.items():
        if leg.scaled == 0:
            continue
        if leg.price is None:
            raise PriceUnavailable(key)
        o = Owed(key, leg.scaled, leg.index, leg.price, leg.decimals, leg.min_debt)
        o.refresh()
        debt_value = _add(debt_value, o.value)
        owed.append(o)
    collateral_value = lt_weighted = ltv_weighted = cover = 0
    unpriced: object | None = None
    values: dict[Any, int] = {}
    for asset, balance in balances.items():
        if balance == 0:
            continue
        cfg = assets.get(asset)
        if cfg is None:
            raise AssetNotListed(asset)
        price = prices.get(asset)
        if price is None:
            if not lenient:
                raise PriceUnavailable(asset)
            unpriced = asset if unpriced is None else unpriced
            price = 0
        value = values[asset] = value_down(balance, price, cfg.decimals)
        collateral_value = _add(collateral_value, value)
        lt_weighted = _add(lt_weighted, w_mul_down(value, cfg.lt))
        ltv_weighted = _add(ltv_weighted, w_mul_down(value, cfg.ltv))
        if lenient:
            cover = _add(cover, w_div_down(value, WAD + min(min_discount, cfg.max_discount)))
    h = Health(collateral_value, lt_weighted, ltv_weighted, _primary_amount(owed, primary), debt_value, MAX_UINT)
    return _set_health(Valuation(h, cover, unpriced, values, grid, -1, tuple(owed), primary))


def _primary_amount(owed: list[Owed] | tuple[Owed, ...], primary: Any) -> int:
    return next((o.amount for o in owed if o.key == primary), 0)


def _set_health(v: Valuation) -> Valuation:
    """`EngineBase._setHealth`: the additive `ltWeighted / debtValue`, or under a grid the grid's health over every
    debt, with `ltWeighted = health · debtValue` and `ltvWeighted = ltWeighted · initialScale` (rounded down);
    MAX_UINT without debt."""
    h = v.health
    if h.debt_value == 0:
        return replace(v, health=replace(h, health=MAX_UINT), binding=-1)
    if v.grid is None:
        return replace(v, health=replace(h, health=w_div_down(h.lt_weighted, h.debt_value)), binding=-1)
    shorts = [(o.value, v.grid.short_column(o.key, v.primary)) for o in v.owed]
    health, binding = grid_legs_health(v.values, shorts, v.grid)
    lt_weighted = w_mul_down(health, h.debt_value)
    after = replace(
        h, health=health, lt_weighted=lt_weighted, ltv_weighted=w_mul_down(lt_weighted, v.grid.initial_scale)
    )
    return replace(v, health=after, binding=binding)


def _one_debt(
    scaled_debt: int, index: int, debt_price: int | None, debt_decimals: int, min_debt: int = 0
) -> dict[Any, DebtLeg]:
    return {DEBT_ASSET: DebtLeg(scaled_debt, index, debt_price, debt_decimals, min_debt)}


def valuation(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    min_discount: int,
    grid: GridRule | None = None,
) -> Valuation:
    """The lenient valuation of a one-debt account: like `account_health`, but a held asset missing from `prices`
    (the router refuses its price) is valued at zero instead of raising. A missing debt-asset price still raises
    PriceUnavailable."""
    return valuation_of(
        balances, prices, assets, _one_debt(scaled_debt, index, debt_price, debt_decimals), min_discount, grid
    )


def _share_off(v: Valuation, owed: list[Owed]) -> tuple[bool, int]:
    """`EngineBase._writeOff` on `owed` (updated in place): when the cover is below the debt value, each debt down
    to its share of the cover, `cover · value_j / debtValue` in its asset rounded up. Returns whether anything
    was written off and the debt value after."""
    total = v.health.debt_value
    if v.cover >= total:
        return False, total
    any_off, after = False, 0
    for o in owed:
        keep = amount_up(mul_div_up(v.cover, o.value, total), o.price, o.decimals)
        if keep < o.amount:
            off = o.scaled - to_scaled_up(keep, o.index)
            o.off, o.scaled, any_off = o.off + off, o.scaled - off, True
            o.refresh()
        after = _add(after, o.value)
    return any_off, after


def _copies(v: Valuation) -> list[Owed]:
    return [replace(o) for o in v.owed]


def _after_write_off(v: Valuation, owed: list[Owed], debt_value: int) -> Valuation:
    h = replace(v.health, debt=_primary_amount(owed, v.primary) if v.health.debt else 0, debt_value=debt_value)
    return _set_health(replace(v, health=h, owed=tuple(owed)))


def written_off_valuation(v: Valuation) -> Valuation:
    """The insolvency write-off (`EngineBase._writeOff`): the whole valuation after it (`v` itself when the account
    is covered), every debt's amount and its `off` (the scaled debt written off), the health a liquidation's limits
    are computed on and the binding scenario. Only applies when every held price is valid (`v.unpriced is None`);
    the caller checks."""
    owed = _copies(v)
    any_off, total = _share_off(v, owed)
    return _after_write_off(v, owed, total) if any_off else v


def write_off_of(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    debts: Mapping[Any, DebtLeg],
    params: RiskParams,
    grid: GridRule | None = None,
    primary: Any = DEBT_ASSET,
) -> dict[Any, int]:
    """`MarginEngine.writeOff`: the scaled debt written off in each debt asset (only those with a write-off).
    Raises PriceUnavailable for an owed debt or the first held asset without a price (the engine reverts with the
    router's error), then NotInsolvent(cover, debtValue) when nothing is to be written off."""
    v = valuation_of(balances, prices, assets, debts, params.min_discount, grid, primary)
    if v.unpriced is not None:
        raise PriceUnavailable(v.unpriced)
    owed = _copies(v)
    if not _share_off(v, owed)[0]:
        raise NotInsolvent(v.cover, v.health.debt_value)
    return {o.key: o.off for o in owed if o.off}


def write_off(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    params: RiskParams,
    grid: GridRule | None = None,
) -> tuple[int, int]:
    """`write_off_of` for a one-debt account: (scaled debt written off, assets written off = to_assets_up of it)."""
    offs = write_off_of(
        balances, prices, assets, _one_debt(scaled_debt, index, debt_price, debt_decimals), params, grid
    )
    off = offs.get(DEBT_ASSET, 0)
    return off, to_assets_up(off, index)


# ----------------------------------------------------------------------------------- MarginEngine._quote


@dataclass(frozen=True, slots=True)
class Settlement:
    """What `liquidate` books besides its quote: the scaled debt the repayment extinguishes and the repaid debt's
    scaled debt written off (the insolvency write-off plus what the last collateral or the liquidation leaves);
    `written_off` has every debt's, by key."""

    quote: Quote
    scaled_repaid: int
    scaled_written_off: int
    written_off: Mapping[Any, int] = field(default_factory=dict)


def liquidation_quote(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    collateral: K,
    requested: int,
    params: RiskParams,
    grid: GridRule | None = None,
) -> Quote:
    """`previewLiquidation(owner, subId, collateral, requested)`; see `liquidation`."""
    return liquidation(
        balances, prices, assets, scaled_debt, index, debt_price, debt_decimals, collateral, requested, params, grid
    ).quote


def liquidation(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    collateral: K,
    requested: int,
    params: RiskParams,
    grid: GridRule | None = None,
) -> Settlement:
    """`liquidation_of` for a one-debt account (`liquidate(owner, subId, collateral, requested)`)."""
    debts = _one_debt(scaled_debt, index, debt_price, debt_decimals, params.min_debt)
    return liquidation_of(balances, prices, assets, debts, DEBT_ASSET, collateral, requested, params, grid)


def liquidation_of(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    debts: Mapping[Any, DebtLeg],
    debt_asset: Any,
    collateral: K,
    requested: int,
    params: RiskParams,
    grid: GridRule | None = None,
    primary: Any = DEBT_ASSET,
) -> Settlement:
    """`EngineModule._quote`: what `liquidateDebt(owner, subId, debt_asset, collateral, requested)` would repay,
    seize and write off. Held assets missing from `prices` are valued at zero (the engine's lenient valuation).
    Raises, in the contract's order: AssetNotListed(collateral); PriceUnavailable for an owed debt or an
    arithmetic failure of the valuation; NotLiquidatable(health); NothingToRepay (nothing owed in `debt_asset`);
    NothingSeized (no balance of `collateral`); PriceUnavailable(collateral); ZeroAmount; NothingSeized (it rounds
    to zero); LiquidationLeavesDust(remaining, minDebt) for a repayment that leaves dust without taking the whole
    balance; LiquidationLowersHealth(before, after). Under a stored `grid` the health is the grid's over every
    debt, the health-neutral cap is taken at the binding scenario and the whole grid is figured again after."""
    cfg = assets.get(collateral)
    if cfg is None:
        raise AssetNotListed(collateral)
    v = valuation_of(balances, prices, assets, debts, params.min_discount, grid, primary)
    h = v.health
    if h.debt_value == 0 or h.lt_weighted >= h.debt_value:
        raise NotLiquidatable(h.health)
    if not any(o.key == debt_asset for o in v.owed):
        raise NothingToRepay()
    balance = balances.get(collateral, 0)
    if balance == 0:
        raise NothingSeized()
    coll_price = prices.get(collateral)
    if coll_price is None:
        raise PriceUnavailable(collateral)

    degraded = v.unpriced is not None and v.cover < h.debt_value
    owed = _copies(v)
    if v.unpriced is None:
        any_off, total = _share_off(v, owed)
        if any_off:
            v = _after_write_off(v, owed, total)
            h = v.health
    want = next(o for o in owed if o.key == debt_asset)

    q = repay_limits_of(h, want.amount, want.min_debt, requested, cfg, params)
    if grid is None:
        want_lt = cfg.lt
    else:
        moved = grid.short_column(debt_asset, primary)[v.binding] * MOVE_WAD
        want_lt = mul_div_up(grid.columns[collateral][v.binding] * MOVE_WAD, WAD, moved)
    cap = min(params.min_discount, q.discount) if degraded else min(q.discount, neutral_discount(h.health, want_lt))
    repaid, seized = seize_amounts(q.repaid, cap, balance, want.price, coll_price, cfg.decimals, want.decimals)
    if seized == 0:
        raise NothingSeized()
    scaled_repaid = repaid_scaled(repaid, want.amount, want.scaled, want.index)
    want.scaled -= scaled_repaid
    debt_after = to_assets_up(want.scaled, want.index)
    closed = False
    if seized == balance:
        if not any(b != 0 for a, b in balances.items() if a != collateral):
            for o in owed:  # the last collateral: every remaining debt is realised in its own vault
                o.off, o.scaled = o.off + o.scaled, 0
            closed = True
    elif debt_after != 0 and debt_after < want.min_debt:
        raise LiquidationLeavesDust(debt_after, want.min_debt)
    value_after = value_up(debt_after, want.price, want.decimals)
    remaining = h.debt_value - want.value + value_after
    if not closed and not degraded and remaining != 0:
        if grid is not None:
            values_after = {**v.values, collateral: value_down(balance - seized, coll_price, cfg.decimals)}
            shorts = [(value_after if o is want else o.value, grid.short_column(o.key, primary)) for o in owed]
            health_after = grid_legs_health(values_after, shorts, grid)[0]
        else:
            lt_after = (
                h.lt_weighted
                - w_mul_down(value_down(balance, coll_price, cfg.decimals), cfg.lt)
                + w_mul_down(value_down(balance - seized, coll_price, cfg.decimals), cfg.lt)
            )
            health_after = w_div_down(lt_after, remaining)
        if health_after < h.health:
            raise LiquidationLowersHealth(h.health, health_after)
        if v.unpriced is None:
            # `_writeOffAfter`: what the account cannot cover after the seizure is written off in the same call.
            one_plus = WAD + min(params.min_discount, cfg.max_discount)
            cover = (
                v.cover
                - w_div_down(value_down(balance, coll_price, cfg.decimals), one_plus)
                + w_div_down(value_down(balance - seized, coll_price, cfg.decimals), one_plus)
            )
            want.amount, want.value = debt_after, value_after
            _share_off(replace(v, cover=cover, health=replace(h, debt_value=remaining)), owed)
    bad_debt = to_assets_up(want.off, want.index) if want.off else 0
    quote = Quote(repaid=repaid, seized=seized, discount=cap, max_repay=q.max_repay, bad_debt=bad_debt)
    return Settlement(quote, scaled_repaid, want.off, {o.key: o.off for o in owed if o.off})


# ------------------------------------------------------------------------------------ status and borrowing


def liquidation_price(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int | None,
    debt_decimals: int,
    asset: K,
    grid: GridRule | None = None,
) -> int | None:
    """The price of `asset` at which the account becomes liquidatable, every other input fixed: an integer WAD
    price, exact under the contract's rounding, such that the account is liquidatable iff `price(asset) <=`
    the result. 0 means it is liquidatable at any price (the other collateral alone falls short); None means no
    price of `asset` makes it liquidatable (no debt, no balance of `asset`, or the other collateral alone covers
    the debt). The bound is computed with unbounded integers: it may exceed what the router can report. Under a
    stored `grid`, found by bisection on the grid's health (which never falls as one collateral's price rises)."""
    cfg = assets.get(asset)
    if cfg is None:
        raise AssetNotListed(asset)
    if grid is not None:
        if not balances.get(asset, 0) or not scaled_debt:
            return None

        def liquidatable(price: int) -> bool:
            try:
                moved = {**prices, asset: price}
                h = account_health(balances, moved, assets, scaled_debt, index, debt_price, debt_decimals, grid)
            except ContractRevert:
                return False  # beyond what the engine values: not a price it would liquidate at
            return is_liquidatable(h)

        if not liquidatable(0):
            return None
        hi = max(prices.get(asset, 0), 1)
        while liquidatable(hi):
            if hi > 2**200:
                return hi  # liquidatable at every price the engine can value
            hi *= 2
        return largest(0, hi - 1, liquidatable)
    balance = balances.get(asset, 0)
    others = {a: b for a, b in balances.items() if a != asset}
    h = account_health(others, prices, assets, scaled_debt, index, debt_price, debt_decimals)
    if h.debt_value == 0 or balance == 0 or h.lt_weighted >= h.debt_value:
        return None
    # Liquidatable iff other_lt + floor(value * lt / WAD) < debtValue, i.e. value * lt < need * WAD, i.e.
    # value <= v_max; and floor(balance * p / 10**dec) <= v_max iff balance * p < (v_max + 1) * 10**dec.
    need = h.debt_value - h.lt_weighted
    v_max = (need * WAD - 1) // cfg.lt
    return ((v_max + 1) * _pow10(cfg.decimals) - 1) // balance


def largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest x in [lo, hi] with ok(x), for ok true at lo and monotone (true then false)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_borrow(
    balances: Mapping[K, int],
    prices: Mapping[K, int],
    assets: Mapping[K, AssetRisk],
    scaled_debt: int,
    index: int,
    debt_price: int,
    debt_decimals: int,
    min_debt: int,
    grid: GridRule | None = None,
) -> int:
    """The largest `assets` that `borrow` accepts on margin at this index and these prices: the new scaled debt
    `scaled_debt + to_scaled_up(assets, index)` must fit uint128, leave a debt of at least `min_debt` and keep
    `ltvWeighted >= debtValue`. 0 when no amount passes. The vault's idle cash (InsufficientLiquidity) and the
    sequencer gate are not part of it."""
    bal = {a: b for a, b in balances.items() if b != 0}

    def fits(amount: int) -> bool:
        try:
            scaled = _add(scaled_debt, to_scaled_up(amount, index))
            if scaled > MAX_UINT128:
                return False
            return margin_ok(account_health(bal, prices, assets, scaled, index, debt_price, debt_decimals, grid))
        except Overflow:
            return False

    if not fits(1):
        return 0
    hi = 1
    while fits(hi * 2):
        hi *= 2
    amount = largest(hi, hi * 2 - 1, fits)
    if to_assets_up(scaled_debt + to_scaled_up(amount, index), index) < min_debt:
        return 0
    return amount


# ------------------------------------------------------------------------------------- Vault interest


@dataclass(frozen=True, slots=True)
class RateModel:
    """`IVault.RateModel`: yearly WAD rates and the WAD utilisation `kink`."""

    base_rate: int
    slope1: int
    slope2: int
    kink: int


@dataclass(frozen=True, slots=True)
class Accrual:
    """What `Vault._pending` returns: the index (RAY) now, the interest and the reserve's share since the last
    accrual (debt-asset units)."""

    index: int
    interest: int
    to_reserve: int


def utilization(debt: int, cash: int) -> int:
    """`debt / (debt + cash)`, WAD, rounded down; 0 without debt."""
    return 0 if debt == 0 else w_div_down(debt, _add(debt, cash))


def borrow_rate(model: RateModel, debt: int, cash: int) -> int:
    """`Vault._rate`: the kinked yearly rate (WAD) at this debt and idle cash."""
    util = utilization(debt, cash)
    if util <= model.kink:
        return _add(model.base_rate, mul_div_down(util, model.slope1, model.kink))
    above = mul_div_down(util - model.kink, model.slope2, _sub(WAD, model.kink))
    return _add(_add(model.base_rate, model.slope1), above)


def accrue_index(index: int, rate: int, elapsed: int) -> int:
    """The index after `elapsed` seconds of simple interest at `rate`, rounded down, before the ceilings."""
    return _add(index, mul_div_down(index, _mul(rate, elapsed), WAD * YEAR))


MAX_BOOKED = 2**127  # `Vault.MAX_BOOKED`: idle + totalDebt never exceed it; deposits and interest stop there
MAX_INDEX = MAX_UINT128  # `Vault.MAX_INDEX`: the borrow index saturates here


def cap_index_down(grown: int, index: int, scaled: int, cash: int) -> int:
    """`Vault._capIndexDown`: `grown` held to MAX_INDEX and to the largest index (rounded down) at which `scaled`
    debt still fits beside `cash` within MAX_BOOKED, never below the stored `index`."""
    room = MAX_BOOKED - cash if cash < MAX_BOOKED else 0
    ceiling = min(mul_div_down(room, RAY, scaled), MAX_INDEX)
    return max(min(grown, ceiling), index)


VAULT_ACCRUAL_SLOT = 8  # Vault storage slot packing `_index` (uint128), `_lastAccrual` (uint64), `_reserveFactor`


@dataclass(frozen=True, slots=True)
class StoredAccrual:
    """The vault's last accrual as stored, which no view returns: `borrowIndex()` is already projected to the
    current block. Read the word with `eth_getStorageAt(vault, VAULT_ACCRUAL_SLOT)`; checked against the deployed
    Vault by the differential test."""

    index: int  # RAY
    last_accrual: int  # unix seconds
    reserve_factor: int  # WAD

    @classmethod
    def unpack(cls, word: int) -> StoredAccrual:
        return cls(word & MAX_UINT128, (word >> 128) & (2**64 - 1), word >> 192)


def pending(
    index: int,
    elapsed: int,
    total_scaled_debt: int,
    idle: int,
    model: RateModel,
    reserve_factor: int,
) -> Accrual:
    """`Vault._pending`: from the stored index, the seconds since the last accrual, the vault's total scaled debt
    and its idle cash. The rate is fixed at the utilisation of the last accrual for the whole span, so projecting
    a later block must start from the stored index and its accrual time (`StoredAccrual`), not from an earlier
    projection such as `borrowIndex()`. The index stops at its ceilings (`cap_index_down`) instead of overflowing."""
    if elapsed == 0 or total_scaled_debt == 0:
        return Accrual(index, 0, 0)
    debt_before = to_assets_up(total_scaled_debt, index)
    grown = accrue_index(index, borrow_rate(model, debt_before, idle), elapsed)
    new_index = cap_index_down(grown, index, total_scaled_debt, idle)
    interest = to_assets_up(total_scaled_debt, new_index) - debt_before
    return Accrual(new_index, interest, w_mul_down(interest, reserve_factor))
