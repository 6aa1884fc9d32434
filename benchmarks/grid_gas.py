"""Gas of the grid part of a margin check (contracts/libraries/GridMath.sol), by assets held and scenarios.

    python benchmarks/grid_gas.py

A transaction to GridHarness.checkStored per cell: each held asset's column read from storage (only the words the
grid uses), the scenarios walked, the health written. It is the cost the grid adds to a margin check; the price reads,
the balances and the engine's own logic come on top (docs/gas.md has those for today's rule), so a full check is
this plus today's figure for the same assets held, less the lt reads the default rule does. Starts its own Anvil.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAD = 10**18
LAYOUTS = [(1, 1), (2, 1), (3, 2), (4, 2), (8, 2)]  # (collateral assets, debt assets) held
SCENARIOS = [1, 4, 8, 16, 32]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from ape import Project, accounts, networks

    from keeper.core import grid as g

    project = Project(ROOT)
    with networks.ethereum.local.use_provider("foundry"):
        admin = accounts.test_accounts[0]
        harness = admin.deploy(project.GridHarness)
        moves = g.Grid(tuple(g.Scenario({f"a{i}": (70 + i) * 10**16 for i in range(16)}) for _ in range(32)))
        for i in range(16):
            harness.setColumn(i + 1, list(g.column(moves, f"a{i}")), sender=admin)
        harness.checkStored([1], [WAD], [2], [WAD // 2], 1, sender=admin)  # lastHealth's slot written once
        rows = []
        for longs, shorts in LAYOUTS:
            cells = []
            for count in SCENARIOS:
                long_ids = list(range(1, longs + 1))
                short_ids = list(range(longs + 1, longs + shorts + 1))
                tx = harness.checkStored(
                    long_ids, [1000 * WAD] * longs, short_ids, [100 * WAD] * shorts, count, sender=admin
                )
                cells.append(tx.gas_used)
            rows.append(((longs, shorts), cells))
    print("grid part of a margin check, full transaction gas (21,000 intrinsic and calldata included)")
    print(f"{'collateral + debt assets':>26}" + "".join(f"{n:>10} sc." for n in SCENARIOS))
    for (longs, shorts), cells in rows:
        print(f"{f'{longs} + {shorts}':>26}" + "".join(f"{c:>14,}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
