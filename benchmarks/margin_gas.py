"""Gas of a whole margin check in the engine, by assets held and grid scenarios: `accountHealth` sent as a
transaction (the full cost a borrow, withdrawal or liquidation pays for its valuation, plus the call's own 21,000
and calldata), for accounts holding 1 to 3 collaterals and owing 1 or 2 debt assets, under the additive rule and
under stored grids of 1 to 32 scenarios.

    python benchmarks/margin_gas.py

The test market (WETH, WBTC, LINK against USDC) with a second debt asset (a DAI-like token with its own feed and
Vault) on a fresh Anvil; every feed is refreshed before each row of measurements, so each price read costs what a
live one does. benchmarks/grid_gas.py gives the grid library's part alone. The last line is
`margin_gas cells=N` followed by `layout@count=gas` for each cell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import conftest  # noqa: E402

from keeper.core.grid import pack  # noqa: E402

WAD = 10**18
MAX_UINT = 2**256 - 1
SCENARIOS = [0, 1, 4, 8, 16, 32]  # 0: the additive rule
COLLATERAL = ("WETH", "WBTC", "LINK")
DEPOSIT = {"WETH": 10 * WAD, "WBTC": 10**8 // 2, "LINK": 2_000 * WAD}


def main() -> int:
    from ape import Project, accounts, chain, networks

    project = Project(ROOT)
    with networks.ethereum.local.use_provider("foundry"):
        acc = accounts.test_accounts
        admin, lender, user = acc[0], acc[1], acc[2]
        s = conftest.deploy_test_system(project, chain, admin, "margin-gas")
        eng = s.engine
        # the lenders: USDC, and a second debt asset with its own feed and Vault
        s.usdc.mint(lender, 10**13, sender=lender)
        s.usdc.approve(s.vault, MAX_UINT, sender=lender)
        s.vault.deposit(10**13, lender, sender=lender)
        dai = admin.deploy(project.MockERC20, "Dai", "DAI", 18)
        dai_feed = admin.deploy(project.MockAggregator, 8, 10**8, "DAI / USD")
        s.router.setFeed(dai, dai_feed, 3600, WAD // 2, 2 * WAD, sender=admin)
        model = (0, 4 * 10**16, 75 * 10**16, 8 * 10**17)
        dai_vault = admin.deploy(project.Vault, dai, "ck DAI", "ckDAI", admin, model, 10**17)
        dai_vault.setEngine(eng, sender=admin)
        eng.listDebt(dai_vault, 10 * WAD, sender=admin)
        dai.mint(lender, 10**25, sender=lender)
        dai.approve(dai_vault, MAX_UINT, sender=lender)
        dai_vault.deposit(10**25, lender, sender=lender)
        # one sub-account per layout: the first n collaterals, 1 or 2 debts
        layouts: list[tuple[str, int]] = []
        for n in (1, 2, 3):
            for debts in (1, 2):
                sub = len(layouts)
                for symbol in COLLATERAL[:n]:
                    conftest.fund(s, user, symbol, DEPOSIT[symbol])
                    eng.deposit(user, sub, s.tokens[symbol], DEPOSIT[symbol], sender=user)
                eng.borrow(sub, 1_000 * 10**6, user, sender=user)
                if debts == 2:
                    eng.borrowAsset(sub, dai, 1_000 * WAD, user, sender=user)
                layouts.append((f"{n} collateral{'s' if n > 1 else ''} + {debts} debt{'s' if debts > 1 else ''}", sub))
        grid = project.IScenarioGrid.at(eng.address)
        tokens = [*(s.tokens[c] for c in COLLATERAL), s.usdc, dai]
        gas: dict[tuple[int, int], int] = {}
        for count in SCENARIOS:
            if count == 0:
                grid.setGrid(0, 0, [], [], sender=admin)
            else:
                columns = [pack([700_000 + 10_000 * ((k + i) % 16) for i in range(count)]) for k in range(len(tokens))]
                grid.setGrid(count, 9 * 10**17, tokens, columns, sender=admin)
            for feed in (*(s.feeds[c] for c in (*COLLATERAL, "USDC")), dai_feed):  # fresh answers, same prices
                feed.setAnswer(feed.latestRoundData()[1], sender=admin)
            for _, sub in layouts:
                gas[(sub, count)] = int(eng.accountHealth.transact(user, sub, sender=user).gas_used)
        _print(layouts, gas)
    return 0


def _print(layouts: list[tuple[str, int]], gas: dict[tuple[int, int], Any]) -> None:
    head = "".join(f"{'additive' if c == 0 else f'{c} sc.':>11}" for c in SCENARIOS)
    print(f"{'assets held':<26}{head}")
    cells = []
    for name, sub in layouts:
        print(f"{name:<26}" + "".join(f"{gas[(sub, c)]:>11,}" for c in SCENARIOS))
        cells += [f"{name.replace(' ', '')}@{c}={gas[(sub, c)]}" for c in SCENARIOS]
    print(f"margin_gas cells={len(cells)} " + " ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
