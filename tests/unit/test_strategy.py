"""Liquidation planning on hand-built snapshots (pure: no chain)."""

from __future__ import annotations

from keeper.core import risk
from keeper.core.snapshot import Account, AssetView, Market, PriceView
from keeper.engine.strategy import LIQUIDATION_GAS_ESTIMATE, Limits, Plan, Skip, gas_cost_usd, plan_account, plan_all

GWEI = 10**9

WAD = 10**18
USDC = 10**6
PARAMS = risk.RiskParams(
    min_discount=5 * 10**15, full_close_health=95 * 10**16, full_close_debt_value=100 * WAD, min_debt=10 * USDC
)


def _asset(i: int, decimals: int, price_usd: int, lt: float, max_discount: float, ok: bool = True) -> AssetView:
    address = f"0x{i + 1:040x}"
    return AssetView(
        address=address,
        index=i,
        decimals=decimals,
        risk=risk.AssetRisk(
            decimals=decimals, ltv=int((lt - 0.05) * WAD), lt=int(lt * WAD), max_discount=int(max_discount * WAD)
        ),
        price=PriceView(address, ok, price_usd * WAD if ok else 0, b"" if ok else b"\x01"),
    )


def _market(*assets: AssetView, debt_ok: bool = True) -> Market:
    debt = "0x" + "ee" * 20
    return Market(
        block=1,
        timestamp=1,
        index=10**27,
        debt_asset=debt,
        debt_decimals=6,
        debt_price=PriceView(debt, debt_ok, WAD if debt_ok else 0, b""),
        assets=assets,
        params=PARAMS,
    )


def _limits(**kw: int | bool | None) -> Limits:
    base: dict[str, int | bool | None] = {
        "min_profit_usd": 0,
        "max_repay": None,
        "inventory": 10**15,
        "base_fee_wei": 10**9,
        "priority_fee_wei": 0,
        "max_fee_cap_wei": None,
        "native_price_usd": 2000 * WAD,
    }
    base.update(kw)
    return Limits(**base)  # type: ignore[arg-type]


def _account(balances: tuple[int, ...], debt_usdc: int) -> Account:
    mask = sum(1 << i for i, b in enumerate(balances) if b)
    return Account(
        owner="0x" + "aa" * 20,
        sub_id=1,
        scaled_debt=debt_usdc * USDC,
        debt=debt_usdc * USDC,
        mask=mask,
        balances=balances,
    )


def test_healthy_and_debt_free_accounts_get_no_plan() -> None:
    market = _market(_asset(0, 18, 2000, 0.85, 0.10))
    assert plan_account(_account((10**18,), 0), market, _limits()) is None
    assert plan_account(_account((10**18,), 1_000), market, _limits()) is None  # health 1.7


def test_chooses_the_collateral_with_the_larger_discount() -> None:
    """Same value in two collaterals; the one with the higher max discount pays the liquidator more."""
    market = _market(_asset(0, 18, 1000, 0.80, 0.05), _asset(1, 8, 1000, 0.80, 0.12))
    # 10k of each, debt 17k: health = 16k / 17k = 0.941 -> full close; discount min(max, 0.005 + 0.059)
    account = _account((10 * 10**18, 10 * 10**8), 17_000)
    plan = plan_account(account, market, _limits())
    assert isinstance(plan, Plan)
    assert plan.collateral_index == 1
    assert plan.quote.discount == 5 * 10**15 + WAD - plan.health  # below the 12 % cap
    # Whole-debt repayment goes on-chain as "everything", so interest before inclusion cannot leave dust.
    assert plan.request == risk.MAX_UINT
    assert plan.quote.seized == 10 * 10**8  # collateral-limited: all of it
    assert plan.quote.repaid < account.debt


def test_half_close_requests_exactly_the_close_factor() -> None:
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    account = _account((100 * 10**18,), 80_500)  # health 0.9938: 50 % close factor
    plan = plan_account(account, market, _limits())
    assert isinstance(plan, Plan)
    assert plan.request == (80_500 * USDC + 1) // 2
    assert plan.quote.repaid == plan.request


def test_profit_is_net_of_gas_and_below_minimum_is_skipped() -> None:
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    account = _account((100 * 10**18,), 80_500)
    plan = plan_account(account, market, _limits())
    assert isinstance(plan, Plan)
    seized_usd = risk.value_down(plan.quote.seized, 1000 * WAD, 18)
    repaid_usd = risk.value_up(plan.quote.repaid, WAD, 6)
    gas = gas_cost_usd(LIQUIDATION_GAS_ESTIMATE, _limits())
    assert gas == 230_000 * 10**9 * 2000  # 0.46 USD in WAD
    assert plan.profit_usd == seized_usd - repaid_usd - gas
    # Asking one wei more than it earns after gas at today's fee leaves a ceiling just under the base fee.
    skipped = plan_account(account, market, _limits(min_profit_usd=plan.profit_usd + 1))
    assert isinstance(skipped, Skip)
    assert (skipped.code, skipped.liquidatable) == ("fee", True)
    # Asking more than it earns before gas: no fee would do.
    unprofitable = plan_account(account, market, _limits(min_profit_usd=plan.profit_before_gas_usd + 1))
    assert isinstance(unprofitable, Skip)
    assert unprofitable.code == "profit"
    assert "below the minimum profit" in unprofitable.reason


def test_refused_prices_and_no_inventory_are_skips() -> None:
    stale = _market(_asset(0, 18, 1000, 0.80, 0.10, ok=False))
    account = _account((100 * 10**18,), 80_500)
    skip = plan_account(account, stale, _limits())
    assert isinstance(skip, Skip)
    assert "refused" in skip.reason
    assert (skip.code, skip.liquidatable) == ("unpriced", False)  # not known to be liquidatable at all
    broke = plan_account(account, _market(_asset(0, 18, 1000, 0.80, 0.10)), _limits(inventory=0))
    assert isinstance(broke, Skip)
    assert (broke.code, broke.liquidatable, broke.scaled_debt) == ("inventory", True, account.scaled_debt)


def test_request_is_capped_by_max_repay_without_leaving_dust() -> None:
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    account = _account((100 * 10**18,), 90_000)  # health 0.889: full close
    capped = plan_account(account, market, _limits(max_repay=1_000 * USDC))
    assert isinstance(capped, Plan)
    assert capped.request == 1_000 * USDC
    near_all = plan_account(account, market, _limits(max_repay=89_995 * USDC))
    assert isinstance(near_all, Plan)
    assert near_all.request == 90_000 * USDC - PARAMS.min_debt  # leaves exactly minDebt, not 5 USDC


def test_plan_all_orders_by_profit() -> None:
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    small = _account((10 * 10**18,), 8_500)
    big = Account(
        owner="0x" + "bb" * 20,
        sub_id=0,
        scaled_debt=85_000 * USDC,
        debt=85_000 * USDC,
        mask=1,
        balances=(100 * 10**18,),
    )
    plans, skips = plan_all([small, big], market, _limits())
    assert [p.owner for p in plans] == [big.owner, small.owner]
    assert skips == []


def test_an_unpriceable_dust_does_not_hide_a_liquidatable_account() -> None:
    """1 wei of an asset whose price the router refuses counts at zero, as on-chain: the account is planned and
    its priced collateral seized, exactly as the mirror quotes it without the dust."""
    market = _market(_asset(0, 18, 1000, 0.80, 0.10), _asset(1, 18, 5, 0.70, 0.10, ok=False))
    with_dust = plan_account(_account((100 * 10**18, 1), 90_000), market, _limits())
    alone = plan_account(_account((100 * 10**18, 0), 90_000), market, _limits())
    assert isinstance(with_dust, Plan)
    assert isinstance(alone, Plan)
    assert with_dust.collateral_index == 0
    assert with_dust.quote == alone.quote


def test_an_insolvent_account_is_planned_on_its_written_off_debt() -> None:
    """$80,000 of collateral against 90,000 USDC: the engine first writes the debt down to the cover value
    80,000 / 1.005 = 79,601.99 USDC, then the close factor and the repayment apply to that; the plan's quote says
    how much is written off and repays the rest in full."""
    market = _market(_asset(0, 18, 800, 0.80, 0.10))
    plan = plan_account(_account((100 * 10**18,), 90_000), market, _limits())
    assert isinstance(plan, Plan)
    target = -(-80_000 * WAD * WAD // (WAD + PARAMS.min_discount) // 10**12)
    assert plan.quote.bad_debt == 90_000 * USDC - target
    assert plan.quote.repaid == target
    assert plan.request == risk.MAX_UINT


def test_a_collateral_whose_seizure_would_lower_health_is_not_chosen() -> None:
    """A high-lt collateral (0.90) in an account at health 0.856: seizing it lowers health at any discount, so the
    engine refuses it; the planner takes the 0.80 one."""
    market = _market(_asset(0, 18, 100, 0.80, 0.10), _asset(1, 18, 300, 0.90, 0.05))
    plan = plan_account(_account((10 * 10**18, 10**18), 1_250), market, _limits())
    assert isinstance(plan, Plan)
    assert plan.collateral_index == 0


# ---------------------------------------------------------------------------------------------- fees by economics


def _cost_usd(gas: int, fee_wei: int, native_usd: int) -> int:
    """What `gas` units at `fee_wei` cost in WAD USD, rounded up: the closed form the keeper must respect."""
    return -(-gas * fee_wei * native_usd // 10**18)


def test_fee_ceiling_is_the_highest_fee_that_still_clears_the_minimum_profit() -> None:
    """At its ceiling a liquidation still earns min_profit after gas for LIQUIDATION_GAS_ESTIMATE; one wei more
    per gas and it would not. A spike of the base fee up to the ceiling does not stop it; above, it is skipped."""
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    account = _account((100 * 10**18,), 80_500)  # health 0.9938: half of it repaid at a 1.1 % discount
    min_profit = 50 * WAD
    plan = plan_account(account, market, _limits(min_profit_usd=min_profit))
    assert isinstance(plan, Plan)
    ceiling = plan.fee_ceiling_wei
    assert ceiling is not None
    margin = plan.profit_before_gas_usd - min_profit
    assert _cost_usd(LIQUIDATION_GAS_ESTIMATE, ceiling, 2000 * WAD) <= margin
    assert _cost_usd(LIQUIDATION_GAS_ESTIMATE, ceiling + 1, 2000 * WAD) > margin
    assert ceiling > 200 * GWEI  # the old fixed cap would have held this one back in a spike
    at_ceiling = plan_account(account, market, _limits(min_profit_usd=min_profit, base_fee_wei=ceiling))
    assert isinstance(at_ceiling, Plan)
    assert at_ceiling.fee_ceiling_wei == ceiling
    assert at_ceiling.profit_usd >= min_profit  # even at the ceiling
    above = plan_account(account, market, _limits(min_profit_usd=min_profit, base_fee_wei=ceiling + 1))
    assert isinstance(above, Skip)
    assert above.code == "fee"
    assert f"{ceiling / 1e9:,.2f} gwei it can pay" in above.reason


def test_operator_cap_lowers_the_ceiling_and_expected_profit_uses_the_fee_paid() -> None:
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    account = _account((100 * 10**18,), 80_500)
    free = plan_account(account, market, _limits())
    assert isinstance(free, Plan)
    assert free.fee_ceiling_wei is not None
    capped = plan_account(account, market, _limits(max_fee_cap_wei=5 * GWEI))
    assert isinstance(capped, Plan)
    assert capped.fee_ceiling_wei == 5 * GWEI < free.fee_ceiling_wei
    # Profit after gas at what the transaction is expected to pay now: base fee plus tip.
    tipped = plan_account(account, market, _limits(base_fee_wei=30 * GWEI, priority_fee_wei=2 * GWEI))
    assert isinstance(tipped, Plan)
    assert tipped.profit_usd == tipped.profit_before_gas_usd - _cost_usd(
        LIQUIDATION_GAS_ESTIMATE, 32 * GWEI, 2000 * WAD
    )


def test_unknown_native_price() -> None:
    """Where gas cannot be priced: on a chain whose native price has a source but no valid answer yet, nothing is
    sent (reason `price`); with no source at all (a local chain) gas counts as free and only the cap bounds fees."""
    market = _market(_asset(0, 18, 1000, 0.80, 0.10))
    account = _account((100 * 10**18,), 80_500)
    waiting = plan_account(account, market, _limits(native_price_usd=0, native_price_required=True))
    assert isinstance(waiting, Skip)
    assert (waiting.code, waiting.liquidatable) == ("price", True)
    local = plan_account(account, market, _limits(native_price_usd=0))
    assert isinstance(local, Plan)
    assert (local.fee_ceiling_wei, local.profit_usd) == (None, local.profit_before_gas_usd)
    local_capped = plan_account(account, market, _limits(native_price_usd=0, max_fee_cap_wei=7 * GWEI))
    assert isinstance(local_capped, Plan)
    assert local_capped.fee_ceiling_wei == 7 * GWEI


def test_under_a_grid_the_plan_is_the_largest_repay_that_keeps_health() -> None:
    """Two scenarios, each crushing one collateral. Seizing A (cheap in the binding scenario 0) raises health
    there but lowers it in scenario 1, where A keeps 95 % of its price: the full half-close request would revert
    LiquidationLowersHealth, so the planner asks the largest amount that does not (the mirror is the engine's,
    tests/test_risk_differential.py), and that still beats B, whose discount is small."""
    from dataclasses import replace

    grid = risk.GridRule(2, WAD, {0: (500_000, 950_000), 1: (600_000, 170_000)}, (1_000_000, 1_000_000))
    market = replace(_market(_asset(0, 18, 1000, 0.80, 0.10), _asset(1, 18, 1000, 0.80, 0.02)), grid=grid)
    # $10,000 of each, debt $11,500: scenario 0 holds 11,000 (health 0.9565), scenario 1 holds 11,200 (0.9739).
    account = _account((10 * WAD, 10 * WAD), 11_500)
    plan = plan_account(account, market, _limits())
    assert isinstance(plan, Plan)
    assert plan.collateral_index == 0
    half = risk.w_mul_up(11_500 * USDC, risk.HALF_CLOSE)
    assert 0 < plan.request < half  # the half close would lower health in scenario 1

    def quote(amount: int, collateral: int = 0) -> risk.Quote:
        b, p, a = {0: 10 * WAD, 1: 10 * WAD}, {0: 1000 * WAD, 1: 1000 * WAD}, {i: market.assets[i].risk for i in (0, 1)}
        return risk.liquidation_quote(b, p, a, 11_500 * USDC, 10**27, WAD, 6, collateral, amount, PARAMS, grid)

    assert quote(plan.request) == plan.quote
    try:
        quote(plan.request * 1002 // 1000)  # asked a tenth of a percent inside the edge, for accrual
    except risk.LiquidationLowersHealth:
        pass
    else:
        raise AssertionError("two tenths of a percent more should lower health")
    # Closed form: seizing A at discount d moves scenario 1 to (11,200 - 0.95·(1 + d)·r) / (11,500 - r), which
    # stays at or above health h0 = 11,000 / 11,500 up to r = (11,200 - 11,500·h0) / (0.95·(1 + d) - h0).
    h0, d = 11_000 / 11_500, plan.quote.discount / WAD
    bound = (11_200 - 11_500 * h0) / (0.95 * (1 + d) - h0)
    assert 0 < (bound - plan.request / USDC) / bound < 0.002
    b = quote(half, 1)  # B takes the whole half close at its 2 % cap, and earns less
    assert plan.quote.repaid * plan.quote.discount > b.repaid * b.discount
