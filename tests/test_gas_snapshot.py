"""The gas snapshot: no user operation costs more than 2 % above gas-snapshot.json, and the snapshot covers every
operation. The measurement is benchmarks/gas.py's own (same deployment, same steady state, same clock), so a
failure here reproduces with `python benchmarks/gas.py --check`; `make gas` rewrites the snapshot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ck_gas_benchmark", ROOT / "benchmarks" / "gas.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gas = _load_benchmark()

# The operations docs/gas.md compares; the benchmark measures these and a few variants.
REQUIRED = {
    "borrow_asset_3_assets",
    "health_view_3_assets_2_debts_grid_16",
    "liquidate_3_assets_2_debts_grid_16",
    "deposit",
    "withdraw",
    "borrow",
    "borrow_3_assets",
    "repay",
    "repay_full",
    "liquidate_partial",
    "liquidate_bad_debt",
    "write_off",
    "health_view_1_asset",
    "health_view_3_assets",
    "lens_accounts_100",
    "vault_deposit",
    "vault_withdraw",
    "set_risk_bounds",
    "update_risk_params",
    "health_view_1_asset_ramping",
    "rebalance",
    "pre_liquidate",
}


@pytest.fixture(scope="module")
def measured(project, chain, accounts) -> dict[str, int]:
    return dict(gas.measure(project, chain, accounts).gas)


def test_no_operation_costs_more_than_its_snapshot(measured):
    """Every measured operation has a snapshot entry within TOLERANCE_PCT, and no entry is stale."""
    problems = gas.regressions(measured, gas.load_snapshot())
    assert not problems, "gas-snapshot.json disagrees (run `make gas` if intended):\n" + "\n".join(problems)


@pytest.mark.xfail(
    strict=True,
    reason="issue 14's goal is missed since several debt assets landed (docs/gas.md): liquidate_partial +4.33 %, "
    "liquidate_partial_3_assets +3.41 %, liquidate_bad_debt +6.38 %, write_off +6.46 %, rebalance +4.22 %, "
    "rebalance_batch_2 +5.76 %, repay_full +3.03 %, lens_accounts_100 +3.13 %, and the governance calls one "
    "DELEGATECALL further, set_risk_bounds +4.25 % and update_risk_params +7.51 %",
)
def test_no_operation_costs_more_than_after_the_hardening(measured):
    """The restructured engine (liquidation by DELEGATECALL into its module) and the grid's default path keep every
    operation within 3 % of the hardening's figures (benchmarks/gas-baseline-hardening.json, frozen)."""
    baseline = gas.load_snapshot(gas.BASELINE)
    assert set(baseline) <= set(measured), "an operation of the hardening's baseline is no longer measured"
    problems = gas.over_baseline(measured, baseline)
    assert not problems, "\n".join(problems)


def test_every_user_operation_is_measured(measured):
    """Dropping an operation from the benchmark (and the snapshot) cannot silently pass the check."""
    assert set(measured) >= REQUIRED


def test_views_cost_less_than_their_estimates(measured):
    """The gas floor before each feed call makes eth_estimateGas ask for more than an accountHealth call uses."""
    for name in ("health_view_1_asset", "health_view_3_assets"):
        assert measured[name] < measured[f"{name}_estimate"]


def test_a_running_ramp_costs_health_about_one_cold_read(measured):
    """During an lt ramp, health reads the ramp's slot (2,100 cold) and interpolates; outside it, neither."""
    extra = measured["health_view_1_asset_ramping"] - measured["health_view_1_asset"]
    assert 2_100 < extra < 4_000


def test_a_rise_over_the_tolerance_is_reported_by_name():
    """2 % over the snapshot passes; one gas more fails, naming the operation."""
    snapshot = {"borrow": 100_000, "repay": 50_000}
    assert gas.regressions({"borrow": 102_000, "repay": 40_000}, snapshot) == []
    problems = gas.regressions({"borrow": 102_001, "repay": 50_000}, snapshot)
    assert len(problems) == 1
    assert problems[0].startswith("borrow: 102,001 gas, +2.00 % over the snapshot's 100,000")


def test_an_operation_missing_from_the_snapshot_is_reported():
    """A measured operation without a snapshot entry fails the check."""
    problems = gas.regressions({"borrow": 100_000, "liquidate": 150_000}, {"borrow": 100_000})
    assert problems == ["liquidate: 150,000 gas, missing from gas-snapshot.json"]


def test_a_stale_snapshot_entry_is_reported():
    """A snapshot entry for an operation the benchmark no longer measures fails the check."""
    problems = gas.regressions({"borrow": 100_000}, {"borrow": 100_000, "flash_loan": 90_000})
    assert problems == ["flash_loan: in gas-snapshot.json but no longer measured"]
