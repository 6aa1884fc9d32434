"""Required collateral of the reference books under today's additive rule and under a calibrated grid, modelled
(docs/portfolio-margin.md, "Modelled comparison"). Not a drill: both rules are priced on the same correlated Monte
Carlo paths, so the table shows what each rule asks and how often a book at its liquidation line ends insolvent.

    python benchmarks/grid_books.py [--paths 200000] [--horizon-s 86400] [--target 0.01]

The market: ETH, stETH, BTC and LINK with public-order volatilities and correlations (stETH tracks ETH at
correlation 0.995, with a depeg jump), a market-wide jump, USDC flat. Three one-debt markets share it (USDC, ETH
or BTC borrowed).

- **Additive rule (today).** Each collateral's lt is the target quantile of its own USD price ratio over the
  horizon (the one-asset optimizer's core, without liquidation dynamics); the debt counts at its price, with no
  haircut for a rise. A book needs `Σ collateral / debt = 1 / Σ w_i·lt_i`.
- **Grid.** `keeper optimize --grid`'s calibration (keeper/optimizer/gridfit.py): the joint-fall and conditional
  template over the market's volatile assets, scaled until every book of the market meets the target. A book needs
  `1 / grid health` of a 1:1 book.

For each book it prints both requirements, the cut in over-collateralization (`1 - excess_grid / excess_additive`,
excess = requirement - 1), and P(insolvent) at the liquidation line under each rule, on the same paths. The last
line is `grid_books books=N hedged_cut_min=X single_change_max=Y`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keeper.optimizer import basket, correlation, gridfit
from keeper.optimizer.correlation import F64, CommonJump, JointMarket, Jumps

ASSETS = ("ETH", "stETH", "BTC", "LINK")
VOLS = np.array([0.70, 0.70, 0.55, 1.00])
RHO = np.array(
    [
        [1.0, 0.995, 0.80, 0.70],
        [0.995, 1.0, 0.79, 0.70],
        [0.80, 0.79, 1.0, 0.60],
        [0.70, 0.70, 0.60, 1.0],
    ]
)
# One market-wide crash a year of about -8 % (every asset), and stETH depegs of about -3 % twice a year.
COMMON = CommonJump(1.0, -0.08, 0.04, dict.fromkeys(ASSETS, 1.0))
DEPEG = {"stETH": Jumps(2.0, -0.03, 0.02)}
# (market, debt asset, books: name -> collateral weights; "hedged" marks the books the goal is about)
MARKETS = (
    ("USDC debt", "USDC", {"ETH alone": {"ETH": 1.0}, "BTC alone": {"BTC": 1.0}, "LINK alone": {"LINK": 1.0},
                           "ETH+BTC basket": {"ETH": 0.5, "BTC": 0.5}}),
    ("ETH debt", "ETH", {"stETH/ETH loop (hedged)": {"stETH": 1.0}}),
    ("BTC debt", "BTC", {"ETH vs BTC debt (hedged)": {"ETH": 1.0}}),
)  # fmt: skip


def additive_lt(ratios: F64, target: float) -> dict[str, float]:
    """Each asset's lt: the target quantile of its own price ratio (its USD fall it must survive)."""
    return {a: float(np.quantile(ratios[:, i], target)) for i, a in enumerate(ASSETS)}


def p_insolvent(weights: dict[str, float], debt: str, need: float, ratios: F64) -> float:
    """P(the book holding `need` of collateral per unit of debt ends the horizon worth less than its debt)."""
    col = {a: i for i, a in enumerate(ASSETS)}
    long = sum(need * w * ratios[:, col[a]] for a, w in weights.items())
    short = np.ones(ratios.shape[0]) if debt == "USDC" else ratios[:, col[debt]]
    return float(np.mean(long < short))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paths", type=int, default=200_000)
    p.add_argument("--horizon-s", type=float, default=86_400.0)
    p.add_argument("--target", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=14)
    args = p.parse_args()
    market = JointMarket(ASSETS, np.asarray(RHO * np.outer(VOLS, VOLS), dtype=np.float64), COMMON, DEPEG)
    ratios = correlation.simulate(market, args.horizon_s, args.paths, args.seed)
    lt = additive_lt(ratios, args.target)
    full = np.hstack([ratios, np.ones((ratios.shape[0], 1))])
    names = [*ASSETS, "USDC"]
    print(f"{args.paths:,} paths over {args.horizon_s:g} s, target P(insolvent) {args.target:g}")
    print("additive lt: " + ", ".join(f"{a} {v:.3f}" for a, v in lt.items()))
    header = f"{'book':<26}{'additive':>10}{'grid':>8}{'excess cut':>12}{'P add.':>9}{'P grid':>9}"
    print(header)
    hedged_cuts, single_changes = [], []
    for title, debt, books in MARKETS:
        volatile = [a for a in ASSETS if a in {debt} | {c for w in books.values() for c in w}]
        sub = JointMarket(
            tuple(volatile),
            market.covariance[np.ix_([ASSETS.index(a) for a in volatile], [ASSETS.index(a) for a in volatile])],
        )
        template = gridfit.template(sub, args.horizon_s)
        bks = [basket.Book(n, w, {debt: 1.0}) for n, w in books.items()]
        cal = basket.calibrate_scale(template, bks, names, full, args.target)
        print(f"-- {title}: {len(template)} scenarios, scale {cal.scale:.3f} (set by {cal.binding})")
        for name, weights in books.items():
            add_need = 1 / sum(w * lt[a] for a, w in weights.items())
            grid_need = 1 / basket.grid_health(basket.Book(name, weights, {debt: 1.0}), cal.grid)
            cut = 1 - (grid_need - 1) / (add_need - 1)
            pa = p_insolvent(weights, debt, add_need, ratios)
            pg = p_insolvent(weights, debt, grid_need, ratios)
            print(f"{name:<26}{add_need:10.4f}{grid_need:8.4f}{cut:12.1%}{pa:9.2%}{pg:9.2%}")
            if "hedged" in name:
                hedged_cuts.append(cut)
            elif len(weights) == 1:
                single_changes.append(grid_need / add_need - 1)
    print(
        f"grid_books books={sum(len(b) for _, _, b in MARKETS)} hedged_cut_min={min(hedged_cuts):.3f} "
        f"single_change_max={max(single_changes, key=abs):+.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
