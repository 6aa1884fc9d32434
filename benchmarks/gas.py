"""Gas snapshot of every user operation.

Deploys the system on a fresh Anvil with the test market (TEST_CONFIG from tests/conftest.py, deployed by
scripts/_system.py exactly as the `system` fixture does: mock tokens, mock feeds), drives it to a steady state and
records the full-transaction gas of each operation: the receipt's `gasUsed`, so the 21,000 intrinsic cost and the
calldata are included. Steady state means: a lender and a large borrower are already in the market (the vault is
70 % utilised, so every accrual adds interest and reserve), the user already holds every token involved and has
approved the engine, and no measured operation is the first write of a vault or supply total.

Views are sent as transactions too, so `health_view_*` and `lens_accounts_100` are the gas the call consumes
(intrinsic cost included); `health_view_*_estimate` is what `eth_estimateGas` answers for the same call, which is
far higher because the router refuses to call a feed with less than ~111,600 gas left (docs/gas.md).

    python benchmarks/gas.py              table: operation, gas, snapshot, delta, gas without the intrinsic cost
    python benchmarks/gas.py --write      rewrite gas-snapshot.json
    python benchmarks/gas.py --check      exit 1 if an operation costs more than 2 % above its snapshot
    python benchmarks/gas.py --breakdown  where each operation's gas goes, from Anvil's call traces

Every transaction is mined at an explicit timestamp, 12 s after the previous one, so every run gives the same
numbers. tests/test_gas_snapshot.py runs the same measurement in `make test`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from web3 import Web3

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "gas-snapshot.json"
# An operation fails the check when it costs more than this many percent above its snapshot.
TOLERANCE_PCT = 2
# The portfolio-margin issue's budget: no operation of the hardening's snapshot (frozen in BASELINE) may cost more
# than 3 % above it, whatever the later snapshots say.
BASELINE = Path(__file__).resolve().parent / "gas-baseline-hardening.json"
BASELINE_PCT = 3
# Seconds between two blocks, as on Ethereum mainnet.
BLOCK_TIME = 12
# Gas every transaction pays before its first opcode, and per calldata byte (EIP-2028).
TX_BASE_GAS = 21_000
ZERO_BYTE_GAS, NONZERO_BYTE_GAS = 4, 16
# Sub-accounts read by `lens_accounts_100`: ten owners times ten sub-accounts, each borrowing against WETH.
LENS_OWNERS, LENS_SUBS_PER_OWNER, LENS_FIRST_SUB = 10, 10, 10

# Test-account indexes. The deployer is an account no fixture uses, so inside a pytest session it still has nonce 0
# and every contract lands at the address it has when this script runs on a fresh Anvil: same addresses, same
# calldata, same gas.
DEPLOYER, LENDER, USER, OTHER, LIQUIDATOR, VICTIM_1, VICTIM_3, VICTIM_BAD = 9, 8, 7, 6, 5, 4, 3, 2
# The risk keeper (RISK_KEEPER_ROLE) of the bounded-update operations: Anvil dev account 1, as in local.toml.
RISK_KEEPER = 1
# WETH's keeper bounds (ltv 0.50-0.88, lt 0.60-0.90, steps of 0.05, an hour apart, a day's ramp), as in local.toml.
WETH_BOUNDS = (50 * 10**16, 88 * 10**16, 60 * 10**16, 90 * 10**16, 5 * 10**16, 3600, 86400)


def _module(name: str, path: Path) -> ModuleType:
    """The module at `path`, reusing the copy pytest already imported (so its fixtures are not defined twice)."""
    for mod in list(sys.modules.values()):
        if getattr(mod, "__file__", None) == str(path):
            return mod
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# The fixtures' module holds TEST_CONFIG, the deploy library it loaded (scripts/_system.py) and the System handles.
conftest = _module("ck_conftest", ROOT / "tests" / "conftest.py")
MAX_UINT: int = conftest.MAX_UINT


def units(amount: float, decimals: int) -> int:
    """Whole tokens to token units, exactly."""
    return int(conftest.ck_system.to_wad(amount, decimals))


def calldata_gas(data: bytes) -> int:
    return sum(ZERO_BYTE_GAS if b == 0 else NONZERO_BYTE_GAS for b in data)


@dataclass
class Measurement:
    """Gas per operation, the intrinsic part of it (21,000 + calldata) and the transaction that was measured."""

    gas: dict[str, int] = field(default_factory=dict)
    intrinsic: dict[str, int] = field(default_factory=dict)
    txs: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)


class Bench:
    """A deployed system and a clock: each transaction is mined BLOCK_TIME seconds after the previous one."""

    def __init__(self, system: Any, chain: Any) -> None:
        self.system = system
        self.chain = chain
        self.now: int = chain.blocks.head.timestamp
        self.out = Measurement()

    def tick(self) -> None:
        self.now += BLOCK_TIME
        self.chain.provider.set_timestamp(self.now)

    def tx(self, method: Any, *args: Any, sender: Any) -> Any:
        self.tick()
        return method(*args, sender=sender)

    def measure(self, name: str, method: Any, *args: Any, sender: Any) -> None:
        self._record(name, self.tx(method, *args, sender=sender), method.encode_input(*args))

    def measure_view(self, name: str, method: Any, *args: Any, sender: Any, estimate: bool = False) -> None:
        """Gas a view call consumes, sent as a transaction; with `estimate`, also its eth_estimateGas."""
        self.tick()
        data = method.encode_input(*args)
        if estimate:
            call = {"from": sender.address, "to": method.contract.address, "data": data.to_0x_hex()}
            self.out.gas[f"{name}_estimate"] = self.chain.provider.web3.eth.estimate_gas(call, "pending")
            self.out.intrinsic[f"{name}_estimate"] = TX_BASE_GAS + calldata_gas(data)
        self._record(name, method.transact(*args, sender=sender), data)

    def _record(self, name: str, receipt: Any, data: bytes) -> None:
        self.out.gas[name] = receipt.gas_used
        self.out.intrinsic[name] = TX_BASE_GAS + calldata_gas(data)
        self.out.txs[name] = str(receipt.txn_hash)

    def fund(self, who: Any, symbol: str, amount: float, spender: Any) -> None:
        """Mint whole tokens to `who` and approve `spender` for everything."""
        token = self.system.usdc if symbol == "USDC" else self.system.tokens[symbol]
        self.tx(token.mint, who, units(amount, token.decimals()), sender=who)
        self.tx(token.approve, spender, MAX_UINT, sender=who)

    def deposit(self, who: Any, sub_id: int, symbol: str, amount: float) -> None:
        token = self.system.tokens[symbol]
        self.tx(self.system.engine.deposit, who, sub_id, token, units(amount, token.decimals()), sender=who)

    def borrow(self, who: Any, sub_id: int, usdc: float) -> None:
        self.tx(self.system.engine.borrow, sub_id, units(usdc, 6), who, sender=who)

    def set_price(self, symbol: str, usd: float) -> None:
        feed = self.system.feeds[symbol]
        self.tx(feed.setAnswer, units(usd, feed.decimals()), sender=self.system.admin)


def deploy(project: Any, chain: Any, admin: Any) -> Any:
    """Deploy the test market exactly as the test fixtures do; the handles are conftest's System."""
    return conftest.deploy_test_system(project, chain, admin, "gas")


def measure(project: Any, chain: Any, accounts: Sequence[Any]) -> Measurement:
    """Deploy on the connected chain, reach the steady state and measure every user operation."""
    s = deploy(project, chain, accounts[DEPLOYER])
    b = Bench(s, chain)
    eng, vault, weth = s.engine, s.vault, s.tokens["WETH"]
    lender, user, other, liquidator = accounts[LENDER], accounts[USER], accounts[OTHER], accounts[LIQUIDATOR]
    roles = {"engine": eng, "vault": vault, "router": s.router, "lens": s.lens, "protection": s.protection,
             "USDC": s.usdc, **s.tokens}  # fmt: skip
    b.out.roles = {c.address.lower(): role for role, c in roles.items()}

    # The market before the user arrives: 1M USDC lent, 700k borrowed against all three collaterals.
    b.fund(lender, "USDC", 2_000_000, vault)
    b.tx(vault.deposit, units(1_000_000, 6), lender, sender=lender)
    for symbol, amount in (("WETH", 100), ("WBTC", 20), ("LINK", 10_000)):
        b.fund(other, symbol, amount, eng)
        b.deposit(other, 0, symbol, amount)
    b.borrow(other, 0, 700_000)

    # The user holds every token involved and has approved the engine, which pulls deposits and repayments.
    for symbol, amount in (("WETH", 1_000), ("WBTC", 100), ("LINK", 100_000), ("USDC", 100_000)):
        b.fund(user, symbol, amount, eng)
    b.deposit(user, 0, "WETH", 10)

    # One collateral asset: a top-up, a first deposit into a new sub-account, then a borrow's life cycle.
    b.measure("deposit", eng.deposit, user, 0, weth, units(1, 18), sender=user)
    b.measure("deposit_new_subaccount", eng.deposit, user, 2, weth, units(1, 18), sender=user)
    b.measure("borrow", eng.borrow, 0, units(10_000, 6), user, sender=user)
    b.measure_view("health_view_1_asset", eng.accountHealth, user, 0, sender=user, estimate=True)
    b.measure("withdraw", eng.withdraw, 0, weth, units(1, 18), user, sender=user)
    b.measure("repay", eng.repay, user, 0, units(2_000, 6), sender=user)
    b.measure("repay_full", eng.repay, user, 0, MAX_UINT, sender=user)

    # Three collateral assets (WETH, WBTC, LINK): every price is read on each margin check.
    for symbol, amount in (("WETH", 5), ("WBTC", 1), ("LINK", 1_000)):
        b.deposit(user, 1, symbol, amount)
    b.measure("borrow_3_assets", eng.borrow, 1, units(10_000, 6), user, sender=user)
    b.measure_view("health_view_3_assets", eng.accountHealth, user, 1, sender=user, estimate=True)
    b.measure("withdraw_3_assets", eng.withdraw, 1, weth, units(1, 18), user, sender=user)

    # The ERC-4626 vault: the lender adds to and takes from an existing position.
    b.measure("vault_deposit", vault.deposit, units(10_000, 6), lender, sender=lender)
    b.measure("vault_withdraw", vault.withdraw, units(10_000, 6), lender, lender, sender=lender)

    # A keeper's batch read of 100 borrowing sub-accounts, one collateral asset each.
    owners = [accounts[i] for i in range(LENS_OWNERS)]
    for owner in owners:
        b.fund(owner, "WETH", LENS_SUBS_PER_OWNER, eng)
    pairs = [(o, LENS_FIRST_SUB + k) for k in range(LENS_SUBS_PER_OWNER) for o in owners]
    for owner, sub_id in pairs:
        b.deposit(owner, sub_id, "WETH", 1)
        b.borrow(owner, sub_id, 500)
    b.measure_view("lens_accounts_100", s.lens.accounts, [o for o, _ in pairs], [i for _, i in pairs], sender=user)

    # Liquidations. At WETH = $1,700 both victims sit between health 0.95 and 1 (close factor 50 %); at $1,000 the
    # third one's collateral is worth less than its debt: the liquidation writes the shortfall off first and repays
    # the rest; its second sub-account, identical, is written off alone (`writeOff`).
    victims: dict[int, tuple[dict[str, float], int]] = {
        VICTIM_1: ({"WETH": 10}, 15_000),  # health 14,450 / 15,000 = 0.963
        VICTIM_3: ({"WETH": 10, "WBTC": 0.1, "LINK": 400}, 24_000),  # (14,450 + 4,800 + 4,200) / 24,000 = 0.977
        VICTIM_BAD: ({"WETH": 1}, 1_590),
    }
    for index, (collateral, debt) in victims.items():
        for sub_id in (0, 1) if index == VICTIM_BAD else (0,):
            for symbol, tokens in collateral.items():
                b.fund(accounts[index], symbol, tokens, eng)
                b.deposit(accounts[index], sub_id, symbol, tokens)
            b.borrow(accounts[index], sub_id, debt)
    b.fund(liquidator, "USDC", 100_000, eng)
    b.fund(liquidator, "WETH", 1, eng)
    b.set_price("WETH", 1_700)
    for name, index in (("liquidate_partial", VICTIM_1), ("liquidate_partial_3_assets", VICTIM_3)):
        args = (accounts[index], 0, weth, MAX_UINT, 0, liquidator, b"")
        b.measure(name, eng.liquidate, *args, sender=liquidator)
        _expect(eng.debtOf(accounts[index], 0) > 0 and eng.collateralOf(accounts[index], 0, weth) > 0, f"{name} closed")
    b.set_price("WETH", 1_000)
    args = (accounts[VICTIM_BAD], 0, weth, MAX_UINT, 0, liquidator, b"")
    paid = s.usdc.balanceOf(liquidator)
    b.measure("liquidate_bad_debt", eng.liquidate, *args, sender=liquidator)
    paid -= s.usdc.balanceOf(liquidator)
    _expect(eng.debtOf(accounts[VICTIM_BAD], 0) == 0, "liquidate_bad_debt left debt")
    _expect(paid < units(1_000, 6), "liquidate_bad_debt wrote nothing off")
    b.measure("write_off", eng.writeOff, accounts[VICTIM_BAD], 1, sender=liquidator)
    _expect(eng.debtOf(accounts[VICTIM_BAD], 1) < units(1_000, 6), "write_off wrote nothing off")

    # Protection (ProtectionModule). The user authorises OTHER as its rebalancer (target 1.5) and moves 100 LINK
    # from a safe sub-account (4: 2,000 LINK, 1,000 USDC) to one at 1.3125 (3: 1,000 LINK, 8,000 USDC), which ends
    # at 1.44. Then its sub-account 5 (1,000 LINK, 8,900 USDC, opted in at 1.10 / 3 % / 50 %) falls to 1.06 as LINK
    # drops to $13.5, and the liquidator pre-liquidates half of its debt. The full transaction is measured, as
    # Morpho's preLiquidate anchor (docs/gas.md).
    pm, link = s.protection, s.tokens["LINK"]
    for sub_id, tokens, debt in ((3, 1_000, 8_000), (4, 2_000, 1_000), (5, 1_000, 8_900)):
        b.deposit(user, sub_id, "LINK", tokens)
        b.borrow(user, sub_id, debt)
    b.tx(pm.setRebalancer, other, units(1.5, 18), sender=user)
    b.measure("rebalance", pm.rebalance, user, 4, 3, link, units(100, 18), sender=other)
    # A rescue-sized batch: two more moves of 20 LINK into sub-account 3 (1.444 -> 1.496, still under 1.5).
    moves = [(4, 3, link, units(20, 18)), (4, 3, link, units(20, 18))]
    b.measure("rebalance_batch_2", pm.rebalanceBatch, user, moves, sender=other)
    _expect(eng.collateralOf(user, 3, link) == units(1_140, 18), "rebalance_batch_2 did not move 40 LINK")
    b.tx(pm.setPreLiquidation, 5, units(1.10, 18), units(0.03, 18), units(0.5, 18), sender=user)
    b.tx(s.usdc.approve, pm, MAX_UINT, sender=liquidator)
    b.set_price("LINK", 13.5)
    b.measure("pre_liquidate", pm.preLiquidate, user, 5, link, MAX_UINT, 0, liquidator, sender=liquidator)
    _expect(units(4_450, 6) <= eng.debtOf(user, 5) < units(4_451, 6), "pre_liquidate did not repay half the debt")

    # Bounded risk updates, last so that no ramp touches the figures above. Governance sets WETH's bounds (the
    # asset's first, as a deploy does) and a keeper raises WETH's lt once (so the ramp slot is not written from
    # zero in the measured update); an hour later it lowers ltv and lt, which starts a ramp.
    keeper = accounts[RISK_KEEPER]
    b.tx(eng.grantRole, eng.RISK_KEEPER_ROLE(), keeper, sender=s.admin)
    b.measure("set_risk_bounds", eng.setRiskBounds, weth, WETH_BOUNDS, sender=s.admin)
    b.tx(eng.updateRiskParams, weth, units(0.80, 18), units(0.86, 18), sender=keeper)
    b.now += WETH_BOUNDS[5]
    b.measure("update_risk_params", eng.updateRiskParams, weth, units(0.78, 18), units(0.83, 18), sender=keeper)
    _expect(eng.assetConfig(weth).rampEnd == b.now + WETH_BOUNDS[6], "update_risk_params started no ramp")
    # One collateral asset, with debt, while WETH's lt ramps: the ramp's slot is read on top of the usual.
    b.set_price("WETH", 1_000)  # an hour has passed: refresh the feed (same price)
    owner = owners[0]
    b.measure_view("health_view_1_asset_ramping", eng.accountHealth, owner, LENS_FIRST_SUB, sender=user)
    _expect(eng.assetConfig(weth).rampEnd > b.now, "health_view_1_asset_ramping measured outside the ramp")

    # The scenario grid (docs/portfolio-margin.md), last of all: 16 scenarios over every listed asset and the
    # debt asset; the same two accounts' health as above (1 collateral + the debt, 3 collaterals + the debt).
    # First a second debt asset, listed before the grid: a DAI-like token with its own feed and Vault. OTHER's
    # sub-account 3 holds the three collaterals and owes USDC and DAI.
    dai = b.tx(project.MockERC20.deploy, "Dai", "DAI", 18, sender=s.admin)
    dai_feed = b.tx(project.MockAggregator.deploy, 8, 10**8, "DAI / USD", sender=s.admin)
    b.tx(s.router.setFeed, dai, dai_feed, 3600, units(0.5, 18), units(2, 18), sender=s.admin)
    model = (0, units(0.04, 18), units(0.75, 18), units(0.8, 18))
    dai_vault = b.tx(project.Vault.deploy, dai, "ck DAI", "ckDAI", s.admin, model, units(0.1, 18), sender=s.admin)
    b.tx(dai_vault.setEngine, eng, sender=s.admin)
    b.tx(eng.listDebt, dai_vault, units(10, 18), sender=s.admin)
    for who, amount in ((lender, 1_000_000), (liquidator, 100_000)):
        b.tx(dai.mint, who, units(amount, 18), sender=who)
        b.tx(dai.approve, eng if who == liquidator else dai_vault, MAX_UINT, sender=who)
    b.tx(dai_vault.deposit, units(1_000_000, 18), lender, sender=lender)
    for symbol, amount in (("WETH", 10), ("WBTC", 0.1), ("LINK", 400)):
        b.fund(other, symbol, amount, eng)
        b.deposit(other, 3, symbol, amount)
    for symbol in ("WETH", "WBTC", "LINK", "USDC"):  # an hour has passed: fresh answers at the same prices
        b.tx(s.feeds[symbol].setAnswer, s.feeds[symbol].latestRoundData()[1], sender=s.admin)
    b.borrow(other, 3, 8_000)
    b.measure("borrow_asset_3_assets", eng.borrowAsset, 3, dai, units(6_000, 18), other, sender=other)
    b.measure_view("health_view_3_assets_2_debts", eng.accountHealth, other, 3, sender=user)

    grid = project.IScenarioGrid.at(eng.address)
    assets = [*eng.assetList(), s.usdc.address]
    columns = [_column([700_000 + 10_000 * ((k + i) % 16) for i in range(GRID_SCENARIOS)]) for k in range(len(assets))]
    # DAI's column: the borrowed asset rises 10 to 25 % (a short loses when its asset rises).
    dai_column = _column([1_100_000 + 10_000 * (i % 16) for i in range(GRID_SCENARIOS)])
    b.tx(grid.setGrid, GRID_SCENARIOS, units(0.9, 18), [*assets, dai], [*columns, dai_column], sender=s.admin)
    for feed in (*(s.feeds[k] for k in ("WETH", "WBTC", "LINK", "USDC")), dai_feed):  # fresh answers, same prices
        b.tx(feed.setAnswer, feed.latestRoundData()[1], sender=s.admin)
    b.measure_view("health_view_1_asset_grid_16", eng.accountHealth, owner, LENS_FIRST_SUB, sender=user)
    b.measure_view("health_view_3_assets_grid_16", eng.accountHealth, user, 1, sender=user)
    for who, sub in ((owner, LENS_FIRST_SUB), (user, 1)):
        _expect(eng.debtOf(who, sub) > 0, "a grid health view measured an account without debt")
    _expect(bin(eng.position(user, 1).assetMask).count("1") == 3, "health_view_3_assets_grid_16 lacks 3 assets")
    b.measure_view("health_view_3_assets_2_debts_grid_16", eng.accountHealth, other, 3, sender=user)

    # The liquidation goal: 3 collaterals and 2 debts over 16 scenarios. WETH falls to $400: OTHER's
    # sub-account 3 is unhealthy under the grid (DAI's rise binds) but covered; a liquidator repays 1,000 DAI.
    b.set_price("WETH", 400)
    _expect(eng.accountHealth(other, 3).health < units(1, 18), "liquidate_3_assets_2_debts_grid_16: healthy")
    args = (other, 3, dai, weth, units(1_000, 18), 0, liquidator, b"")
    b.measure("liquidate_3_assets_2_debts_grid_16", eng.liquidateDebt, *args, sender=liquidator)
    _expect(eng.debtOfAsset(other, 3, dai) == units(5_000, 18) or eng.debtOfAsset(other, 3, dai) > 0,
            "liquidate_3_assets_2_debts_grid_16 closed the DAI debt")  # fmt: skip
    _expect(eng.position(other, 3).debtMask != 0 and eng.debtOf(other, 3) > 0, "a debt vanished")
    return b.out


# Scenarios of the grid measured at the end of `measure`.
GRID_SCENARIOS = 16


def _column(moves: list[int]) -> list[int]:
    """A grid column: multipliers in millionths, eight 32-bit values a word."""
    words = [0, 0, 0, 0]
    for i, m in enumerate(moves):
        words[i // 8] |= m << (32 * (i % 8))
    return words


def _expect(condition: bool, what: str) -> None:
    """Stop when the scenario no longer measures what its entry's name says (a contract rule changed)."""
    if not condition:
        raise RuntimeError(f"gas scenario broken: {what}")


# --------------------------------------------------------------------------------------------- snapshot


def load_snapshot(path: Path = SNAPSHOT) -> dict[str, int]:
    if not path.exists():
        return {}
    data: dict[str, int] = json.loads(path.read_text())
    return data


def write_snapshot(gas: dict[str, int], path: Path = SNAPSHOT) -> None:
    path.write_text(json.dumps(dict(sorted(gas.items())), indent=2) + "\n")


def regressions(measured: dict[str, int], snapshot: dict[str, int]) -> list[str]:
    """One line per operation costing more than TOLERANCE_PCT above its snapshot or missing from it, and per
    snapshot entry no longer measured."""
    problems = [
        f"{name}: in gas-snapshot.json but no longer measured" for name in sorted(set(snapshot) - set(measured))
    ]
    for name, gas in sorted(measured.items()):
        if name not in snapshot:
            problems.append(f"{name}: {gas:,} gas, missing from gas-snapshot.json")
        elif gas * 100 > snapshot[name] * (100 + TOLERANCE_PCT):
            rise = (gas - snapshot[name]) * 100 / snapshot[name]
            problems.append(f"{name}: {gas:,} gas, {rise:+.2f} % over the snapshot's {snapshot[name]:,}")
    return problems


def over_baseline(measured: dict[str, int], baseline: dict[str, int]) -> list[str]:
    """One line per operation of the hardening's baseline costing more than BASELINE_PCT above it now."""
    return [
        f"{name}: {measured[name]:,} gas, {(measured[name] - gas) * 100 / gas:+.2f} % over the hardening's {gas:,}"
        for name, gas in sorted(baseline.items())
        if name in measured and measured[name] * 100 > gas * (100 + BASELINE_PCT)
    ]


def table(m: Measurement, snapshot: dict[str, int]) -> str:
    rows = [f"{'operation':<30} {'gas':>10} {'snapshot':>10} {'delta':>8} {'no intrinsic':>13}"]
    for name, gas in sorted(m.gas.items()):
        snap = snapshot.get(name)
        snap_text, delta = (f"{snap:,}", f"{(gas - snap) * 100 / snap:+.2f}%") if snap else ("-", "new")
        rows.append(f"{name:<30} {gas:>10,} {snap_text:>10} {delta:>8} {gas - m.intrinsic[name]:>13,}")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------- breakdown

_SELECTORS = {
    Web3.keccak(text=sig)[:4].hex(): label
    for sig, label in (
        ("price(address)", "oracle"),
        ("checkSequencer()", "sequencer"),
        ("accrue()", "vault accrue"),
        ("borrowIndex()", "vault accrue"),
        ("balanceOf(address)", "balanceOf"),
        ("transfer(address,uint256)", "transfers"),
        ("transferFrom(address,address,uint256)", "transfers"),
        ("lend(uint256,uint256,address)", "vault booking"),
        ("noteRepayment(uint256,uint256)", "vault booking"),
        ("realizeBadDebt(uint256)", "vault booking"),
    )
}
# Gas of reaching a contract for the first time in a transaction (EIP-2929), and again.
COLD_ACCOUNT_GAS, WARM_ACCOUNT_GAS = 2_600, 100


def _split(frame: dict[str, Any], inherited: str | None, m: Measurement, warm: set[str], parts: dict[str, int]) -> int:
    """Add the gas of `frame`'s callees (recursively) to `parts`; return the frame's own gas."""
    own = int(frame["gasUsed"], 16)
    for child in frame.get("calls") or []:
        to = child["to"].lower()
        access = WARM_ACCOUNT_GAS if to in warm else COLD_ACCOUNT_GAS
        warm.add(to)
        label = _SELECTORS.get(child["input"][2:10]) or inherited
        child_own = _split(child, label, m, warm, parts)
        parts[label or f"{m.roles.get(to, 'other')} logic"] += access + child_own
        own -= int(child["gasUsed"], 16) + access
    return own


def breakdown(m: Measurement, trace: Callable[[str], dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Split each operation's gas by what it pays for, from a callTracer trace of its transaction.

    Each call frame's own gas (its gasUsed less its callees'), plus the account-access cost its caller paid to
    reach it, goes to the label of its selector (price, transfer, accrue, ...), else to its caller's label (a feed
    read belongs to the oracle), else to the contract's logic. `intrinsic` is 21,000 plus calldata; refunds lower
    the top frame's logic.
    """
    out: dict[str, dict[str, int]] = {}
    for name, tx in m.txs.items():
        root = trace(tx)
        parts: dict[str, int] = defaultdict(int)
        top = _split(root, None, m, {root["from"].lower(), root["to"].lower()}, parts)
        parts["intrinsic"] = m.intrinsic[name]
        parts[f"{m.roles.get(root['to'].lower(), 'other')} logic"] += top - m.intrinsic[name]
        out[name] = dict(parts)
    return out


def print_breakdown(parts: dict[str, dict[str, int]]) -> None:
    for name in sorted(parts):
        items = sorted(parts[name].items(), key=lambda kv: -kv[1])
        total = sum(v for _, v in items)
        print(f"{name} ({total:,}): " + ", ".join(f"{k} {v:,}" for k, v in items))


# --------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite gas-snapshot.json with the measured gas")
    mode.add_argument("--check", action="store_true", help=f"exit 1 on a rise above {TOLERANCE_PCT} %%")
    mode.add_argument("--breakdown", action="store_true", help="split each operation's gas by what it pays for")
    args = parser.parse_args(argv)

    from ape import Project, accounts, chain, networks

    project = Project(ROOT)
    with networks.ethereum.local.use_provider("foundry") as provider:
        m = measure(project, chain, accounts.test_accounts)
        if args.breakdown:
            print_breakdown(
                breakdown(m, lambda tx: provider.make_request("debug_traceTransaction", [tx, {"tracer": "callTracer"}]))
            )
    snapshot = load_snapshot()
    print(table(m, snapshot))
    if args.write:
        write_snapshot(m.gas)
        print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
    elif args.check:
        problems = regressions(m.gas, snapshot)
        if problems:
            print(f"\ngas-snapshot.json disagrees beyond {TOLERANCE_PCT} % (run `make gas` if this is intended):")
            print("\n".join(f"  {p}" for p in problems))
            return 1
        print(f"\nevery operation within {TOLERANCE_PCT} % of gas-snapshot.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
