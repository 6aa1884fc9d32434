"""The books of a drill scenario under the additive rule and under a scenario grid, side by side: what each rule
asks as initial collateral per unit of debt (from the deployment's ltvs and the grid's scenarios, the same figures
the drill's seeding reaches on chain), and, given the two drills' report folders, what happened in them.

    keeper drill october-10-2025-books --margin deployments/grids/local-usdc.toml --out /tmp/oct-grid
    keeper drill october-10-2025-books --out /tmp/oct-additive
    python benchmarks/books_side_by_side.py october-10-2025-books deployments/grids/local-usdc.toml \\
        --grid-run /tmp/oct-grid --additive-run /tmp/oct-additive --plot docs/img/portfolio-books.png

The table's "excess cut" is `1 - (grid - 1) / (additive - 1)`: the share of the over-collateralization the grid
no longer asks. The last line is `books_side_by_side books=N hedged_cut=X`, X the lowest cut over the books with a
debt that is not the quote asset (the hedged ones)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from risk_drills import report_figures  # noqa: E402

from keeper.drills.deploy import local_template, seeding_params  # noqa: E402
from keeper.drills.scenario import Scenario, load_margin, load_scenario  # noqa: E402
from keeper.drills.seeding import supported_usd  # noqa: E402


def requirements(sc: Scenario, grid: Scenario, params: SimpleNamespace) -> list[tuple[str, float, float, bool]]:
    """(book, additive collateral per debt, grid collateral per debt, hedged) at the initial margin."""
    rows = []
    for book in sc.accounts.books:
        usd = {s: w / sum(book.long.values()) for s, w in book.long.items()}
        additive = 1 / supported_usd(sc, params, usd, initial=True, shorts=dict(book.short))
        by_grid = 1 / supported_usd(grid, params, usd, initial=True, shorts=dict(book.short))
        rows.append((book.name, additive, by_grid, any(s != sc.quote.symbol for s in book.short)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", help="a scenario with [[accounts.book]] (library name or path)")
    parser.add_argument("grid", type=Path, help="a TOML file with a [margin] grid (deployments/grids/)")
    parser.add_argument("--grid-run", type=Path, help="report folder of the drill under the grid")
    parser.add_argument("--additive-run", type=Path, help="report folder of the drill under the additive rule")
    parser.add_argument("--plot", type=Path, help="write a bar chart of the requirements here")
    args = parser.parse_args(argv)

    sc = replace(load_scenario(args.scenario), margin=None)
    if not sc.accounts.books:
        parser.error(f"scenario {sc.name!r} has no [[accounts.book]]")
    grid = replace(sc, margin=load_margin(args.grid, sc))
    params = seeding_params(local_template(ROOT, sc))
    rows = requirements(sc, grid, params)
    print(f"initial collateral per unit of debt, {sc.name} under {args.grid}")
    print(f"{'book':<14}{'additive':>10}{'grid':>10}{'change':>9}{'excess cut':>12}")
    for name, additive, by_grid, hedged in rows:
        cut = 1 - (by_grid - 1) / (additive - 1)
        mark = " (hedged)" if hedged else ""
        print(f"{name:<14}{additive:10.4f}{by_grid:10.4f}{by_grid / additive - 1:9.1%}{cut:12.1%}{mark}")
    if args.grid_run and args.additive_run:
        print("\nthe drills")
        runs = {"additive": report_figures(args.additive_run), "grid": report_figures(args.grid_run)}
        keys = ("collateral_usd", "debt_usd", "liquidated_accounts", "missed_liquidations", "healthy_liquidations",
                "bad_debt_usd", "user_penalty_usd")  # fmt: skip
        print(f"{'':<10}" + "".join(f"{k:>22}" for k in keys))
        for rule, fig in runs.items():
            print(f"{rule:<10}" + "".join(f"{fig[k]:>22,.2f}" if isinstance(fig[k], float) else f"{fig[k]:>22}"
                                          for k in keys))  # fmt: skip
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.6))
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r[1] for r in rows], width=0.4, label="additive rule")
        ax.bar([x + 0.2 for x in xs], [r[2] for r in rows], width=0.4, label="scenario grid")
        ax.set_xticks(list(xs), [r[0] for r in rows])
        ax.set_ylim(1.0, max(r[1] for r in rows) * 1.05)
        ax.set_ylabel("initial collateral / debt")
        ax.set_title(f"{sc.name}: what each rule asks of each book")
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")
    hedged_cuts = [1 - (g - 1) / (a - 1) for _, a, g, h in rows if h]
    cut = min(hedged_cuts) if hedged_cuts else float("nan")
    print(f"books_side_by_side books={len(rows)} hedged_cut={cut:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
