"""Unit tests of keeper/core/risk.py with hand-computed cases: every rounding direction, the uint256 overflow the
contracts revert on, the health figures, the liquidation quote's edge cases and the interest accrual.
Pure: no chain (the differential test against the contracts is tests/test_risk_differential.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from keeper.core import risk, units
from keeper.core.risk import MAX_UINT
from keeper.core.units import RAY, WAD

USD = 10**6  # one whole unit of a 6-decimal debt asset
E18 = 10**18  # one whole unit of an 18-decimal token
PCT = WAD // 100


# --------------------------------------------------------------------------------------------- constants


def test_constants_match_riskmath() -> None:
    assert units.WAD == 1_000_000_000_000_000_000
    assert units.RAY == 1_000_000_000_000_000_000_000_000_000
    assert units.YEAR == 31_536_000  # 365 days, as Solidity's `365 days`
    assert risk.MAX_UINT == 2**256 - 1
    assert (risk.MAX_DISCOUNT, risk.MAX_MIN_DISCOUNT, risk.HALF_CLOSE) == (25 * PCT, 5 * PCT, 50 * PCT)


# ------------------------------------------------------------------------------------ rounding, 1 for 1


@pytest.mark.parametrize(
    ("down", "up", "args", "expected_down"),
    [
        (risk.mul_div_down, risk.mul_div_up, (7, 1, 2), 3),  # 3.5
        (risk.mul_div_down, risk.mul_div_up, (10, 10, 3), 33),  # 33.33
        (risk.w_mul_down, risk.w_mul_up, (3, WAD // 2), 1),  # 1.5 wei
        (risk.w_mul_down, risk.w_mul_up, (10**18 + 1, 3 * 10**17), 300_000_000_000_000_000),  # 0.3000...003
        (risk.w_div_down, risk.w_div_up, (1, 3 * WAD), 0),  # 1/3 wei
        (risk.w_div_down, risk.w_div_up, (WAD, 3 * WAD), 333_333_333_333_333_333),  # 1/3
        # 1 unit of a 2-decimal token at a price of 333 (WAD): a value of 3.33
        (risk.value_down, risk.value_up, (1, 333, 2), 3),
        # 3 units of a 6-decimal token at $0.333...: 999,999,999,999.999 WAD
        (risk.value_down, risk.value_up, (3, 333_333_333_333_333_333, 6), 999_999_999_999),
        # $1 of a $3 token with 6 decimals: 333,333.33 units
        (risk.amount_down, risk.amount_up, (WAD, 3 * WAD, 6), 333_333),
        # scaled 10 at index 1.05: 10.5 assets
        (risk.to_assets_down, risk.to_assets_up, (10, 105 * RAY // 100), 10),
        # 10 assets at index 1.05: 9.52 scaled
        (risk.to_scaled_down, risk.to_scaled_up, (10, 105 * RAY // 100), 9),
    ],
)
def test_down_and_up_differ_by_one_on_inexact_division(
    down: Callable[..., int], up: Callable[..., int], args: tuple[int, ...], expected_down: int
) -> None:
    assert down(*args) == expected_down
    assert up(*args) == expected_down + 1


@pytest.mark.parametrize(
    ("down", "up", "args", "expected"),
    [
        (risk.mul_div_down, risk.mul_div_up, (6, 4, 3), 8),
        (risk.mul_div_down, risk.mul_div_up, (0, 5, 7), 0),
        (risk.w_mul_down, risk.w_mul_up, (4 * WAD, WAD // 4), WAD),
        (risk.w_div_down, risk.w_div_up, (WAD, 4 * WAD), WAD // 4),
        (risk.value_down, risk.value_up, (15 * 10**17, 2_000 * WAD, 18), 3_000 * WAD),  # 1.5 ETH at $2,000
        (risk.value_down, risk.value_up, (1, 60_000 * WAD, 8), 600_000_000_000_000),  # 1 sat at $60,000
        (risk.amount_down, risk.amount_up, (3_000 * WAD, 2_000 * WAD, 18), 15 * 10**17),
        (risk.to_assets_down, risk.to_assets_up, (10, 2 * RAY), 20),
        (risk.to_scaled_down, risk.to_scaled_up, (20, 2 * RAY), 10),
    ],
)
def test_down_and_up_agree_on_exact_division(
    down: Callable[..., int], up: Callable[..., int], args: tuple[int, ...], expected: int
) -> None:
    assert down(*args) == up(*args) == expected


def test_down_and_up_differ_by_exactly_one_iff_inexact() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        x, y, d = rng.randrange(2**100), rng.randrange(2**100), rng.randrange(1, 2**90)
        lo, hi = risk.mul_div_down(x, y, d), risk.mul_div_up(x, y, d)
        assert hi - lo == (1 if (x * y) % d else 0)
        assert lo == x * y // d


def test_value_with_zero_and_many_decimals() -> None:
    assert risk.value_down(3, 5 * WAD, 0) == 15 * WAD  # three whole units at $5
    assert risk.value_down(10**36, 7 * WAD, 36) == 7 * WAD
    assert risk.amount_up(1, WAD, 36) == 10**18  # 1 wei-USD of a $1 token with 36 decimals
    assert risk.value_down(1, WAD, 77) == 0  # 10**77 still fits uint256


# ------------------------------------------------------------------------------------- overflow as a revert


def test_product_above_uint256_raises_overflow() -> None:
    with pytest.raises(risk.Overflow):
        risk.mul_div_down(2**255, 2, 1)
    with pytest.raises(risk.Overflow):
        risk.w_mul_down(MAX_UINT // WAD + 1, WAD)
    assert risk.w_mul_down(MAX_UINT // WAD, WAD) == MAX_UINT // WAD


def test_mul_div_up_overflows_on_the_rounding_term_like_solidity() -> None:
    # `x * y + (d - 1)` overflows even though the quotient would fit.
    assert risk.mul_div_down(MAX_UINT, 1, 2) == MAX_UINT // 2
    with pytest.raises(risk.Overflow):
        risk.mul_div_up(MAX_UINT, 1, 2)


def test_division_by_zero_codes_follow_solidity() -> None:
    with pytest.raises(risk.DivisionByZero) as down:
        risk.mul_div_down(1, 1, 0)
    assert down.value.code == 0x12
    # mulDivUp computes `d - 1` first: an underflow, Panic(0x11), not a division by zero.
    with pytest.raises(risk.Overflow) as up:
        risk.mul_div_up(1, 1, 0)
    assert up.value.code == 0x11
    with pytest.raises(risk.DivisionByZero):
        risk.amount_down(WAD, 0, 18)


def test_ten_to_the_78_overflows() -> None:
    with pytest.raises(risk.Overflow):
        risk.value_down(1, 1, 78)


def test_overflow_is_an_arithmetic_error_and_a_contract_revert() -> None:
    assert issubclass(risk.Overflow, ArithmeticError)
    assert issubclass(risk.Overflow, risk.ContractRevert)
    assert issubclass(risk.NotLiquidatable, risk.ContractRevert)
    assert not issubclass(risk.NotLiquidatable, ArithmeticError)


def test_scale_answer() -> None:
    assert risk.scale_answer(2_000_00000000, 8) == 2_000 * WAD
    assert risk.scale_answer(5, 0) == 5 * WAD
    assert risk.scale_answer(123, 18) == 123


# ----------------------------------------------------------------------------------------------- health

ETH = risk.AssetRisk(decimals=18, ltv=80 * PCT, lt=85 * PCT, max_discount=10 * PCT)
BTC = risk.AssetRisk(decimals=8, ltv=75 * PCT, lt=80 * PCT, max_discount=10 * PCT)
PRICES = {"ETH": 2_000 * WAD, "BTC": 60_000 * WAD}
ASSETS = {"ETH": ETH, "BTC": BTC}
PARAMS = risk.RiskParams(min_discount=5 * WAD // 1000, full_close_health=95 * PCT,
                         full_close_debt_value=100 * WAD, min_debt=10 * USD)  # fmt: skip


def test_account_health_hand_computed() -> None:
    # 1.5 ETH ($3,000) and 0.01 BTC ($600); scaled debt 909,090,910 at index 1.1 -> 1,000.000001 USDC (ceil).
    h = risk.account_health({"ETH": 15 * 10**17, "BTC": 10**6}, PRICES, ASSETS, 909_090_910, 11 * RAY // 10, WAD, 6)
    assert h.collateral_value == 3_600 * WAD
    assert h.lt_weighted == (2_550 + 480) * WAD
    assert h.ltv_weighted == (2_400 + 450) * WAD
    assert h.debt == 1_000_000_001  # 909,090,910 * 1.1 = 1,000,000,001 exactly
    assert h.debt_value == 1_000_000_001 * 10**12
    assert h.health == 3_029_999_996_970_000_003  # floor(3,030 / 1,000.000001, 18 decimals)


def test_debt_rounds_up_and_collateral_down() -> None:
    # scaled 1 at index 1 + 1e-27 is 1.000...001 units: 2 owed. 1 wei of a 2-decimal token at 1.99 USD-wei: 0.
    h = risk.account_health({"X": 1}, {"X": 199}, {"X": risk.AssetRisk(2, 1, 2, 0)}, 1, RAY + 1, 3 * WAD // 2, 6)
    assert h.debt == 2
    assert h.debt_value == 3 * 10**12  # 2 units * $1.5 / 1e6
    assert (h.collateral_value, h.lt_weighted, h.ltv_weighted, h.health) == (1, 0, 0, 0)


def test_health_without_debt_is_max_and_needs_no_debt_price() -> None:
    h = risk.account_health({"ETH": E18}, PRICES, ASSETS, 0, RAY, None, 6)
    assert (h.debt, h.debt_value, h.health) == (0, 0, MAX_UINT)
    assert h.collateral_value == 2_000 * WAD
    assert not risk.is_liquidatable(h)


def test_zero_balances_need_neither_price_nor_config() -> None:
    h = risk.account_health({"ETH": E18, "GONE": 0}, PRICES, ASSETS, 0, RAY, None, 6)
    assert h.collateral_value == 2_000 * WAD


def test_missing_prices_and_configs_raise() -> None:
    with pytest.raises(risk.PriceUnavailable) as missing:
        risk.account_health({"ETH": E18}, {}, ASSETS, 0, RAY, None, 6)
    assert missing.value.asset == "ETH"
    with pytest.raises(risk.PriceUnavailable) as debt:
        risk.account_health({"ETH": E18}, PRICES, ASSETS, 1, RAY, None, 6)
    assert debt.value.asset == risk.DEBT_ASSET
    with pytest.raises(risk.AssetNotListed) as unknown:
        risk.account_health({"DOGE": 1}, {"DOGE": WAD}, ASSETS, 0, RAY, None, 6)
    assert unknown.value.args == ("DOGE",)


def test_health_overflow_raises_like_the_contract() -> None:
    # 10**34 whole units of a 0-decimal token at $10**8: value 1e60 WAD, and value * lt overflows uint256.
    whale = {"Z": risk.AssetRisk(0, 50 * PCT, 80 * PCT, 0)}
    with pytest.raises(risk.Overflow):
        risk.account_health({"Z": 10**34}, {"Z": 10**8 * WAD}, whale, 0, RAY, None, 6)
    fine = risk.account_health({"Z": 10**34}, {"Z": 10**7 * WAD}, whale, 0, RAY, None, 6)
    assert fine.lt_weighted == 8 * 10**58


def health(lt_weighted: int, debt_value: int, ltv_weighted: int = 0, debt: int = 1) -> risk.Health:
    h = MAX_UINT if debt_value == 0 else risk.w_div_down(lt_weighted, debt_value)
    return risk.Health(lt_weighted, lt_weighted, ltv_weighted, debt, debt_value, h)


def test_liquidatable_exactly_below_one() -> None:
    assert not risk.is_liquidatable(health(1_000 * WAD, 1_000 * WAD))  # health exactly 1
    assert risk.is_liquidatable(health(1_000 * WAD - 1, 1_000 * WAD))
    assert not risk.is_liquidatable(health(0, 0, debt=0))


def test_margin_and_borrowing_power() -> None:
    assert risk.margin_ok(health(0, 800 * WAD, ltv_weighted=800 * WAD))
    assert not risk.margin_ok(health(0, 800 * WAD + 1, ltv_weighted=800 * WAD))
    assert risk.borrowing_power(health(0, 300 * WAD, ltv_weighted=800 * WAD)) == 500 * WAD
    assert risk.borrowing_power(health(0, 900 * WAD, ltv_weighted=800 * WAD)) == 0


# ----------------------------------------------------------------------------------- discount, close factor


def test_discount_grows_as_health_falls_and_is_capped() -> None:
    assert risk.liquidation_discount(health(98 * WAD, 100 * WAD), ETH, PARAMS) == 25 * WAD // 1000  # 0.5 % + 2 %
    assert risk.liquidation_discount(health(80 * WAD, 100 * WAD), ETH, PARAMS) == 10 * PCT  # 20.5 % capped
    with pytest.raises(risk.NotLiquidatable) as healthy:
        risk.liquidation_discount(health(100 * WAD, 100 * WAD), ETH, PARAMS)
    assert healthy.value.args == (WAD,)


def test_max_repay_close_factor() -> None:
    # Below fullCloseHealth: the whole debt.
    assert risk.max_repay(health(90 * WAD, 100 * WAD, debt=1_001 * USD), PARAMS) == 1_001 * USD
    # Near 1: half, rounded up (an odd debt of 1,001 units -> 501).
    assert risk.max_repay(health(194 * WAD, 200 * WAD, debt=1_001), replace(PARAMS, min_debt=0)) == 501
    # A small position (debtValue <= fullCloseDebtValue, boundary included): the whole debt.
    assert risk.max_repay(health(97 * WAD, 100 * WAD, debt=100 * USD), PARAMS) == 100 * USD
    assert risk.max_repay(health(97 * WAD + 1, 100 * WAD + 1, debt=100 * USD), PARAMS) == 50 * USD


def test_half_close_raised_to_the_whole_debt_when_it_would_leave_less_than_min_debt() -> None:
    h = health(194 * WAD, 200 * WAD, debt=200 * USD)  # health 0.97, $200 of debt: half close
    assert risk.max_repay(h, replace(PARAMS, min_debt=100 * USD)) == 100 * USD  # leaves exactly minDebt
    assert risk.max_repay(h, replace(PARAMS, min_debt=100 * USD + 1)) == 200 * USD


# -------------------------------------------------------------------------------------- liquidation quote

C = risk.AssetRisk(decimals=18, ltv=70 * PCT, lt=80 * PCT, max_discount=10 * PCT)
T = risk.AssetRisk(decimals=6, ltv=70 * PCT, lt=80 * PCT, max_discount=10 * PCT)
Z = risk.AssetRisk(decimals=0, ltv=70 * PCT, lt=80 * PCT, max_discount=10 * PCT)
QUOTE_ASSETS = {"C": C, "T": T, "Z": Z}


def quote(
    balances: dict[str, int],
    prices: dict[str, int],
    scaled: int,
    requested: int,
    collateral: str = "C",
    params: risk.RiskParams = PARAMS,
    index: int = RAY,
) -> risk.Quote:
    """A 6-decimal debt asset at $1."""
    return risk.liquidation_quote(balances, prices, QUOTE_ASSETS, scaled, index, WAD, 6, collateral, requested, params)


def test_quote_partial_seizure() -> None:
    # 10 C at $100 ($800 lt-weighted) against 900 USDC: health 0.888, discount 0.5 % + 11.1 % capped at 10 %
    # (the health-neutral discount 0.888 / 0.8 - 1 = 11.1 % does not bind), full close. Seized = $900 * 1.1 /
    # $100 = 9.9 C.
    q = quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, MAX_UINT)
    assert q == risk.Quote(repaid=900 * USD, seized=99 * 10**17, discount=10 * PCT, max_repay=900 * USD, bad_debt=0)
    assert quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, 100 * USD).seized == 11 * 10**17


def test_quote_insolvent_account_is_written_off_to_its_cover_value_first() -> None:
    # 10 C at $80 ($800) against 900 USDC: the cover value $800 / 1.005 = $796.0199004975... is below the debt, so
    # the debt is first lowered to ceil(796.0199004975) = 796.019901 USDC: 103.980099 USDC written off. Health is
    # then 640 / 796.019901 = 0.80399999..., just under lt * (1 + minDiscount) = 0.804, so the health-neutral
    # discount is just under 0.5 % less the 1e-6 margin: the liquidator repays all 796.019901 USDC for a little
    # less than the 10 C, and no further bad debt is realised.
    q = quote({"C": 10 * E18}, {"C": 80 * WAD}, 900 * USD, MAX_UINT)
    assert q.bad_debt == 103_980_099
    assert q.repaid == q.max_repay == 796_019_901
    assert 5 * PCT // 10 - risk.HEALTH_NEUTRAL_MARGIN - 10**9 < q.discount < 5 * PCT // 10 - risk.HEALTH_NEUTRAL_MARGIN
    assert 9_999 * 10**15 < q.seized < 10 * E18


def test_quote_capped_at_balance_with_other_collateral_left_has_no_bad_debt() -> None:
    # 10 C at $80 and 200 T at $1 ($1,000, lt-weighted $800) against 900 USDC: solvent (cover $995), health 0.888:
    # 10 % discount. The debt buys 12.375 C but there are 10: all of it, for ceil(800 / 1.1) = 727.272728 USDC
    # (rounded up, not ...727); 172.727272 USDC remain against the T, at health 160 / 172.727272 = 0.926.
    q = quote({"C": 10 * E18, "T": 200 * USD}, {"C": 80 * WAD, "T": WAD}, 900 * USD, MAX_UINT)
    assert q == risk.Quote(repaid=727_272_728, seized=10 * E18, discount=10 * PCT, max_repay=900 * USD, bad_debt=0)


def test_quote_whole_balance_may_leave_less_than_min_debt() -> None:
    # The same seizure leaves 172.727272 USDC while T remains: below a 200 USDC minimum debt, and allowed, because
    # it took the whole C (the T settles the rest); before, it reverted and such accounts could get stuck.
    params = replace(PARAMS, min_debt=200 * USD)
    q = quote({"C": 10 * E18, "T": 200 * USD}, {"C": 80 * WAD, "T": WAD}, 900 * USD, MAX_UINT, params=params)
    assert (q.repaid, q.seized, q.bad_debt) == (727_272_728, 10 * E18, 0)


def test_quote_requested_amount_must_not_leave_dust() -> None:
    # 895 of 900 USDC buys 9.845 C of 10: part of the balance stays, so the 5 USDC left is dust.
    with pytest.raises(risk.LiquidationLeavesDust) as dust:
        quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, 895 * USD)
    assert dust.value.args == (5 * USD, 10 * USD)
    with pytest.raises(risk.NothingSeized):  # T is not held: refused before any amount is computed
        quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, 895 * USD, "T")


def test_quote_never_lowers_health() -> None:
    # 10 C at $100 (lt 0.8, $800) and 1 H at $300 (lt 0.9, $270) against 1,250 USDC (solvent: cover $1,293.5):
    # health 1,070 / 1,250 = 0.856, below H's lt, so seizing any H at any discount lowers health; seizing C does
    # not, at most at its health-neutral discount 0.856 / 0.8 - 1 = 7 % (the auction would give 10 %).
    assets = {**QUOTE_ASSETS, "H": risk.AssetRisk(decimals=18, ltv=80 * PCT, lt=90 * PCT, max_discount=5 * PCT)}
    balances, prices = {"C": 10 * E18, "H": E18}, {"C": 100 * WAD, "H": 300 * WAD}
    with pytest.raises(risk.LiquidationLowersHealth) as lowers:
        risk.liquidation_quote(balances, prices, assets, 1_250 * USD, RAY, WAD, 6, "H", 100 * USD, PARAMS)
    before, after = lowers.value.args
    assert before == 856 * 10**15
    assert after < before
    q = risk.liquidation_quote(balances, prices, assets, 1_250 * USD, RAY, WAD, 6, "C", 100 * USD, PARAMS)
    assert q.discount == 7 * PCT - risk.HEALTH_NEUTRAL_MARGIN


def test_quote_zero_amount() -> None:
    with pytest.raises(risk.ZeroAmount):
        quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, 0)


def test_quote_not_liquidatable_carries_the_health() -> None:
    with pytest.raises(risk.NotLiquidatable) as healthy:
        quote({"C": 10 * E18}, {"C": 200 * WAD}, 900 * USD, MAX_UINT)
    assert healthy.value.args == (1_777_777_777_777_777_777,)  # 1,600 / 900
    with pytest.raises(risk.NotLiquidatable) as no_debt:
        quote({"C": 10 * E18}, {"C": 200 * WAD}, 0, MAX_UINT)
    assert no_debt.value.args == (MAX_UINT,)


def test_quote_nothing_seized() -> None:
    with pytest.raises(risk.NothingSeized):  # listed but not held
        quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, MAX_UINT, "T")
    # One whole Z is worth $1,000,000: 1 USDC unit (x 1.1) buys 0 of it.
    with pytest.raises(risk.NothingSeized):
        quote({"Z": 1}, {"Z": 10**6 * WAD}, 900_000 * USD, 1, "Z")


def test_quote_unlisted_collateral_is_checked_first() -> None:
    with pytest.raises(risk.AssetNotListed) as unlisted:
        quote({"C": 10 * E18}, {"C": 200 * WAD}, 900 * USD, MAX_UINT, "DOGE")
    assert unlisted.value.args == ("DOGE",)
    with pytest.raises(risk.AssetNotListed):  # even before an overflowing health
        quote({"Z": 10**34}, {"Z": 10**8 * WAD}, 900 * USD, MAX_UINT, "DOGE")


def test_quote_overflow_and_missing_prices() -> None:
    with pytest.raises(risk.Overflow):
        quote({"Z": 10**34}, {"Z": 10**8 * WAD}, 900 * USD, MAX_UINT, "Z")
    # The seized collateral needs its own price.
    with pytest.raises(risk.PriceUnavailable) as coll:
        quote({"C": 10 * E18, "T": 5}, {"C": 80 * WAD}, 900 * USD, MAX_UINT, "T")
    assert coll.value.asset == "T"
    with pytest.raises(risk.PriceUnavailable) as debt:
        risk.liquidation_quote({"C": E18}, {"C": WAD}, QUOTE_ASSETS, 900 * USD, RAY, None, 6, "C", 1, PARAMS)
    assert debt.value.asset == risk.DEBT_ASSET


def test_quote_values_an_unpriced_dust_balance_at_zero() -> None:
    # 5 units of T without a price do not freeze the liquidation of C: T counts at zero. 10 C at $100 against
    # 900 USDC is solvent on C alone, so the rules are those of an account without T.
    with_dust = quote({"C": 10 * E18, "T": 5}, {"C": 100 * WAD}, 900 * USD, MAX_UINT)
    assert with_dust == quote({"C": 10 * E18}, {"C": 100 * WAD}, 900 * USD, MAX_UINT)


def test_quote_insolvent_with_a_price_missing_pays_the_smallest_discount_and_writes_nothing_off() -> None:
    # 10 C at $80 against 900 USDC with 5 unpriced T: insolvent on what can be priced, but nothing is written off
    # (the T could be worth the debt); the discount is minDiscount, 0.5 %: 900 * 1.005 / 80 = 11.3 C > 10, so the
    # whole C for ceil(800 / 1.005) = 796.019901 USDC, and the rest of the debt stays (the T is not gone).
    q = quote({"C": 10 * E18, "T": 5}, {"C": 80 * WAD}, 900 * USD, MAX_UINT)
    assert q == risk.Quote(repaid=796_019_901, seized=10 * E18, discount=5 * PCT // 10, max_repay=900 * USD,
                           bad_debt=0)  # fmt: skip


def test_quote_half_close_and_raise_to_full() -> None:
    # 12 C at $100 ($960 lt-weighted) against 1,000 USDC: health 0.96 >= 0.95 and $1,000 > $100: half close;
    # discount 0.5 % + 4 % = 4.5 %; $500 * 1.045 / $100 = 5.225 C.
    balances, prices = {"C": 12 * E18}, {"C": 100 * WAD}
    q = quote(balances, prices, 1_000 * USD, MAX_UINT)
    assert q == risk.Quote(repaid=500 * USD, seized=5_225 * 10**15, discount=45 * WAD // 1000,
                           max_repay=500 * USD, bad_debt=0)  # fmt: skip
    # Half would leave 500 < 600: raised to the whole debt.
    raised = replace(PARAMS, min_debt=600 * USD)
    q = quote(balances, prices, 1_000 * USD, MAX_UINT, params=raised)
    assert q == risk.Quote(repaid=1_000 * USD, seized=10_450 * 10**15, discount=45 * WAD // 1000,
                           max_repay=1_000 * USD, bad_debt=0)  # fmt: skip
    with pytest.raises(risk.LiquidationLeavesDust) as dust:
        quote(balances, prices, 1_000 * USD, 600 * USD, params=raised)
    assert dust.value.args == (400 * USD, 600 * USD)


def test_quote_bad_debt_when_the_repayment_extinguishes_no_scaled_debt() -> None:
    # 1 wei of C ($1e-16: 100 wei of USD) against scaled 1,000 at index 1.5 (1,500 units). Insolvent: the cover
    # value floor(100 / 1.005) = 99 wei is ceil(99e6 / 1e18) = 1 unit of debt, ceil(1 / 1.5) = 1 scaled; 999
    # scaled are written off, leaving 2 units owed. Health is then ~0: discount 0. The whole balance costs
    # ceil(100 wei / 1e12) = 1 unit, which extinguishes floor(1 / 1.5) = 0 scaled, and it is the last collateral:
    # the remaining 1 scaled is written off too: 1,000 scaled in all, 1,500 units (not 1,499).
    q = quote({"C": 1}, {"C": 100 * WAD}, 1_000, MAX_UINT, index=3 * RAY // 2)
    assert q == risk.Quote(repaid=1, seized=1, discount=0, max_repay=2, bad_debt=1_500)


def test_write_off_hand_computed() -> None:
    # As in the insolvent quote above: 900 USDC against $800 of C are lowered to 796.019901 USDC.
    assert risk.write_off({"C": 10 * E18}, {"C": 80 * WAD}, QUOTE_ASSETS, 900 * USD, RAY, WAD, 6, PARAMS) == (
        103_980_099,
        103_980_099,
    )
    # At index 1.5 the scaled figures differ: 600 scaled = 900 USDC; the target 796.019901 USDC is
    # ceil(796.019901 / 1.5) = 530.679934 scaled; 69.320066 scaled written off = ceil(103.980099) USDC.
    balances, prices = {"C": 10 * E18}, {"C": 80 * WAD}
    off, assets = risk.write_off(balances, prices, QUOTE_ASSETS, 600 * USD, 3 * RAY // 2, WAD, 6, PARAMS)
    assert off == 600 * USD - 530_679_934
    assert assets == risk.mul_div_up(off, 3, 2)


def test_write_off_refuses_covered_and_unpriced_accounts() -> None:
    # $1,000 of C against 995 USDC: cover $995.02 >= $995: nothing to write off.
    with pytest.raises(risk.NotInsolvent) as covered:
        risk.write_off({"C": 10 * E18}, {"C": 100 * WAD}, QUOTE_ASSETS, 995 * USD, RAY, WAD, 6, PARAMS)
    assert covered.value.args == (995_024_875_621_890_547_263, 995 * WAD)
    with pytest.raises(risk.PriceUnavailable) as unpriced:
        risk.write_off({"C": 10 * E18, "T": 5}, {"C": 80 * WAD}, QUOTE_ASSETS, 900 * USD, RAY, WAD, 6, PARAMS)
    assert unpriced.value.asset == "T"
    with pytest.raises(risk.NotInsolvent):
        risk.write_off({"C": 10 * E18}, {"C": 80 * WAD}, QUOTE_ASSETS, 0, RAY, None, 6, PARAMS)


def test_neutral_discount() -> None:
    assert risk.neutral_discount(90 * PCT, 80 * PCT) == 125 * PCT // 10 - risk.HEALTH_NEUTRAL_MARGIN  # 12.5 %
    assert risk.neutral_discount(80 * PCT, 80 * PCT) == 0
    assert risk.neutral_discount(70 * PCT, 80 * PCT) == 0
    assert risk.neutral_discount(80 * PCT + 8 * 10**11, 80 * PCT) == 0  # within the margin


def test_repaid_scaled() -> None:
    index = 105 * RAY // 100
    assert risk.repaid_scaled(11, 11, 10, index) == 10  # the whole (rounded-up) debt: all scaled debt
    assert risk.repaid_scaled(5, 11, 10, index) == 4  # floor(5 / 1.05)


def test_seize_amounts_both_branches() -> None:
    # Not capped: the repayment is unchanged, the seizure rounds down (999 * 1.1 / 7 = 156.98 -> 156).
    assert risk.seize_amounts(999, 10 * PCT, 1_000, WAD, 7 * WAD, 0, 0) == (999, 156)
    # Capped: 10 units worth $70, / 1.1 = 63.63 -> 64 (rounded up).
    assert risk.seize_amounts(999, 10 * PCT, 10, WAD, 7 * WAD, 0, 0) == (64, 10)


def test_capped_repayment_never_exceeds_the_request() -> None:
    # The contract's `min(..., repaid)` is a guard that never binds: with every rounding, the whole balance's
    # discounted value is at most the requested repayment's value. Both branches, recomputed step by step.
    rng = random.Random(11)
    for _ in range(20_000):
        repaid, balance = rng.randrange(1, 10 ** rng.randint(1, 20)), rng.randrange(1, 10 ** rng.randint(1, 20))
        pd, pc = rng.randrange(1, 10 ** rng.randint(1, 22)), rng.randrange(1, 10 ** rng.randint(1, 22))
        dd, dc, d = rng.randint(0, 18), rng.randint(0, 18), rng.randint(0, risk.MAX_DISCOUNT)
        uncapped = risk.amount_down(risk.w_mul_down(risk.value_down(repaid, pd, dd), WAD + d), pc, dc)
        result = risk.seize_amounts(repaid, d, balance, pd, pc, dc, dd)
        if uncapped <= balance:
            assert result == (repaid, uncapped)
        else:
            pay = risk.amount_up(risk.w_div_up(risk.value_up(balance, pc, dc), WAD + d), pd, dd)
            assert result == (pay, balance)
            assert pay <= repaid


# ------------------------------------------------------------------------------------- liquidation price


def test_liquidation_price_hand_computed() -> None:
    # 10 C (lt 0.8) against $900: liquidatable iff 8 * p < 900, i.e. p <= 112.5 - 1 wei.
    p = risk.liquidation_price({"C": 10 * E18}, {"C": 100 * WAD}, QUOTE_ASSETS, 900 * USD, RAY, WAD, 6, "C")
    assert p == 112_500_000_000_000_000_000 - 1
    for price, liquidatable in ((p, True), (p + 1, False)):
        h = risk.account_health({"C": 10 * E18}, {"C": price}, QUOTE_ASSETS, 900 * USD, RAY, WAD, 6)
        assert risk.is_liquidatable(h) is liquidatable


def test_liquidation_price_none_and_zero() -> None:
    prices = {"C": 100 * WAD, "T": WAD}
    args = (QUOTE_ASSETS, 900 * USD, RAY, WAD, 6)
    assert risk.liquidation_price({"C": 10 * E18}, prices, QUOTE_ASSETS, 0, RAY, WAD, 6, "C") is None  # no debt
    assert risk.liquidation_price({"C": 10 * E18}, prices, *args, "T") is None  # T not held
    assert risk.liquidation_price({"C": 10 * E18, "T": 2_000 * USD}, prices, *args, "C") is None  # T covers it
    # 1 debt unit (6 decimals) at a price of 8e6: a debt value of 8 (WAD, i.e. $8e-18). 10 whole Z at the
    # smallest price, 1, are worth 10, lt-weighted 8: not below 8, so liquidatable only at price 0.
    z = risk.liquidation_price({"Z": 10}, {"Z": 1}, QUOTE_ASSETS, 1, RAY, 8 * USD, 6, "Z")
    assert z == 0


def _liquidatable_at(balances: dict[str, int], prices: dict[str, int], scaled: int, index: int, asset: str,
                     price: int) -> bool:  # fmt: skip
    h = risk.account_health(balances, {**prices, asset: price}, QUOTE_ASSETS, scaled, index, WAD, 6)
    return risk.is_liquidatable(h)


def test_liquidation_price_is_exact() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        balances = {k: rng.randrange(1, 10**25) for k in rng.sample(["C", "T", "Z"], rng.randint(1, 3))}
        prices = {k: rng.randrange(1, 10**24) for k in balances}
        scaled, index = rng.randrange(1, 10**24), rng.randrange(RAY, 3 * RAY)
        asset = rng.choice(list(balances))
        p = risk.liquidation_price(balances, prices, QUOTE_ASSETS, scaled, index, WAD, 6, asset)
        if p is None:
            assert not _liquidatable_at(balances, prices, scaled, index, asset, 0)
        else:
            assert _liquidatable_at(balances, prices, scaled, index, asset, p)
            assert not _liquidatable_at(balances, prices, scaled, index, asset, p + 1)


# ---------------------------------------------------------------------------------------------- borrowing


def test_max_borrow_hand_computed() -> None:
    balances, prices = {"C": 10 * E18}, {"C": 100 * WAD}  # $1,000 at ltv 0.7: $700 of borrowing power
    assert risk.max_borrow(balances, prices, QUOTE_ASSETS, 0, RAY, WAD, 6, 10 * USD) == 700 * USD
    assert risk.max_borrow(balances, prices, QUOTE_ASSETS, 300 * USD, RAY, WAD, 6, 10 * USD) == 400 * USD
    # At index 1.1: 700 USDC is ceil(636.36..) = 636,363,637 scaled, owed as ceil(700.0000007) > 700: one less.
    assert risk.max_borrow(balances, prices, QUOTE_ASSETS, 0, 11 * RAY // 10, WAD, 6, 10 * USD) == 700 * USD - 1


def test_max_borrow_zero_when_min_debt_or_margin_cannot_be_met() -> None:
    balances, prices = {"C": 10**17}, {"C": 100 * WAD}  # $10 at ltv 0.7: $7
    assert risk.max_borrow(balances, prices, QUOTE_ASSETS, 0, RAY, WAD, 6, 10 * USD) == 0
    assert risk.max_borrow(balances, prices, QUOTE_ASSETS, 0, RAY, WAD, 6, 7 * USD) == 7 * USD
    assert risk.max_borrow({}, {}, QUOTE_ASSETS, 0, RAY, WAD, 6, 0) == 0
    # A whale whose risk sums overflow cannot borrow at all (the contract reverts with a panic).
    assert risk.max_borrow({"Z": 10**34}, {"Z": 10**8 * WAD}, QUOTE_ASSETS, 0, RAY, WAD, 6, 0) == 0


def _margin_ok_after(balances: dict[str, int], prices: dict[str, int], scaled: int, index: int, debt_price: int,
                     amount: int) -> bool:  # fmt: skip
    new = scaled + risk.to_scaled_up(amount, index)
    return risk.margin_ok(risk.account_health(balances, prices, QUOTE_ASSETS, new, index, debt_price, 6))


def test_max_borrow_is_the_exact_margin_limit() -> None:
    rng = random.Random(9)
    for _ in range(500):
        balances = {k: rng.randrange(1, 10**22) for k in rng.sample(["C", "T", "Z"], rng.randint(1, 3))}
        prices = {k: rng.randrange(10**10, 10**24) for k in balances}
        index, debt_price = rng.randrange(RAY, 2 * RAY), rng.randrange(WAD // 2, 2 * WAD)
        scaled = rng.choice([0, rng.randrange(10**9)])
        top = risk.max_borrow(balances, prices, QUOTE_ASSETS, scaled, index, debt_price, 6, 0)
        assert not _margin_ok_after(balances, prices, scaled, index, debt_price, top + 1)
        if top:
            assert _margin_ok_after(balances, prices, scaled, index, debt_price, top)


# ------------------------------------------------------------------------------------------------ interest

MODEL = risk.RateModel(base_rate=2 * PCT, slope1=4 * PCT, slope2=75 * PCT, kink=80 * PCT)


def test_utilization_rounds_down() -> None:
    assert risk.utilization(0, 5) == 0
    assert risk.utilization(1, 3) == WAD // 4
    assert risk.utilization(2, 1) == 666_666_666_666_666_666


def test_borrow_rate_below_at_and_above_the_kink() -> None:
    assert risk.borrow_rate(MODEL, 0, 10) == 2 * PCT
    assert risk.borrow_rate(MODEL, 4, 6) == 4 * PCT  # 2 % + 40 % * 4 % / 80 %
    assert risk.borrow_rate(MODEL, 8, 2) == 6 * PCT  # at the kink
    assert risk.borrow_rate(MODEL, 9, 1) == 435 * WAD // 1000  # 6 % + 10 % * 75 % / 20 %


def test_accrue_index_simple_interest_rounded_down() -> None:
    assert risk.accrue_index(RAY, 10 * PCT, units.YEAR) == 11 * RAY // 10
    assert risk.accrue_index(RAY, 10 * PCT, 1) == RAY + 3_170_979_198_376_458_650  # floor(1e26 / 31,536,000)
    with pytest.raises(risk.Overflow):
        risk.accrue_index(RAY, 2**200, 2**60)


def test_pending_mirrors_the_vault() -> None:
    # 1,000,000 units owed, 1,000,000 idle: utilisation 50 %, rate 2 % + 50 % * 4 % / 80 % = 4.5 %, one day.
    acc = risk.pending(RAY, 86_400, 1_000_000, 1_000_000, MODEL, 10 * PCT)
    assert acc.index == 1_000_123_287_671_232_876_712_328_767  # 1 + 4.5 % * 86,400 / 31,536,000, rounded down
    assert acc.interest == 124  # ceil(1,000,123.29) - 1,000,000
    assert acc.to_reserve == 12  # 10 % of 124, rounded down
    assert risk.pending(RAY, 0, 1_000_000, 0, MODEL, 0) == risk.Accrual(RAY, 0, 0)
    assert risk.pending(RAY, 86_400, 0, 5, MODEL, 0) == risk.Accrual(RAY, 0, 0)


def test_stored_accrual_unpacks_the_packed_slot() -> None:
    word = (3 * 10**16 << 192) | (1_795_269_006 << 128) | RAY  # as read from a freshly deployed Vault
    assert risk.StoredAccrual.unpack(word) == risk.StoredAccrual(RAY, 1_795_269_006, 3 * 10**16)


# ------------------------------------------------------------------------------------------- lt ramps


def test_ramped_lt_hand_computed_lowering_rounds_down() -> None:
    """0.85 -> 0.80 over 3 s: after 1 s the exact value is 0.8333...; the ramp gives the lower 0.833...333."""
    lt_from, lt_to = 85 * PCT, 80 * PCT
    assert risk.ramped_lt(lt_from, lt_to, 100, 103, 101) == 833_333_333_333_333_333
    assert risk.ramped_lt(lt_from, lt_to, 100, 103, 102) == 816_666_666_666_666_666
    # A third of 0.05 does not divide: each point is the floor of the exact rational value.
    for t in (101, 102):
        exact_num = lt_from * 3 - (lt_from - lt_to) * (t - 100)
        assert risk.ramped_lt(lt_from, lt_to, 100, 103, t) == exact_num // 3


def test_ramped_lt_holds_its_ends() -> None:
    """Before (and at) start the ramp gives lt_from; at and after end it gives lt_to exactly."""
    lt_from, lt_to = 85 * PCT, 80 * PCT
    assert risk.ramped_lt(lt_from, lt_to, 1_000, 87_400, 0) == lt_from
    assert risk.ramped_lt(lt_from, lt_to, 1_000, 87_400, 1_000) == lt_from
    assert risk.ramped_lt(lt_from, lt_to, 1_000, 87_400, 87_400) == lt_to
    assert risk.ramped_lt(lt_from, lt_to, 1_000, 87_400, 10**12) == lt_to
    assert risk.ramped_lt(lt_from, lt_to, 1_000, 87_400, 87_399) > lt_to


def test_ramped_lt_midpoint_exact() -> None:
    """Halfway through a ramp whose difference divides evenly: exactly the midpoint."""
    assert risk.ramped_lt(90 * PCT, 80 * PCT, 0, 86_400, 43_200) == 85 * PCT


def test_ramped_lt_raising_rounds_down_too() -> None:
    """The same line upwards (not produced by the engine, which raises lt at once) also rounds down."""
    assert risk.ramped_lt(80 * PCT, 85 * PCT, 100, 103, 101) == 816_666_666_666_666_666
    assert risk.ramped_lt(0, 2, 0, 3, 1) == 0  # 2/3 rounded down
    assert risk.ramped_lt(2, 0, 0, 3, 1) == 1  # 4/3 rounded down


def test_ramped_lt_is_monotone_and_within_its_ends_seeded() -> None:
    """Random lowering ramps: never above the previous second's value, never outside [lt_to, lt_from], and
    never above the exact rational point."""
    rng = random.Random(5)
    for _ in range(200):
        lt_to = rng.randrange(0, WAD)
        lt_from = rng.randrange(lt_to, WAD)
        start = rng.randrange(0, 2**32)
        end = start + rng.randrange(1, 365 * 86_400 + 1)
        prev = lt_from
        for t in sorted(rng.randrange(start - 5, end + 5) for _ in range(20)):
            lt = risk.ramped_lt(lt_from, lt_to, start, end, t)
            assert lt_to <= lt <= lt_from
            assert lt <= prev
            if start < t < end:
                # lt <= from - (from - to) * elapsed / span, exactly, in rationals
                assert lt * (end - start) <= lt_from * (end - start) - (lt_from - lt_to) * (t - start)
                assert (lt + 1) * (end - start) > lt_from * (end - start) - (lt_from - lt_to) * (t - start)
            prev = lt
