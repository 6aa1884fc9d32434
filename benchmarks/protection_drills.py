"""Opt-in protection in the crash drills: protected owners against unprotected ones, and against a run with nobody
protected (same seed, same accounts) for the bad debt.

For each scenario (by default the library's four crashes and its two synthetic protection shapes), two drills with
the same seed and accounts:
- `protected = 0.5`: half the owners (drawn with the seed) authorise the keeper as rebalancer and opt every
  sub-account into the pre-liquidation band; the keeper runs both strategies;
- `protected = 0`: the same accounts, nobody protected (the bad-debt baseline).
Prints a markdown table and writes OUT/summary.json; the plot goes to OUT/protection.png. Each drill's folder also
gets accounts.json, the per-account record: for every seeded account, its group, debt at the start, each
protection or liquidation that touched it (with the block, the scenario time and the health before and after) and
its health in every block.

    python benchmarks/protection_drills.py --out /tmp/protection-drills [--accounts 200] [--scenarios a,b]

About 2 minutes per drill on 2 cores (two drills per scenario)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "black-thursday",
    "may-19-2021",
    "ftx-collapse",
    "october-10-2025",
    "slide-then-gap",
    "grinding-bear-gaps",
)
# The goal: protected owners pay at least this much less penalty per $ of debt, suffer fewer full
# liquidations, and the protocol has no more bad debt than with nobody protected (to within a cent: interest accrued
# for a block more or less on the same account moves the figure by fractions of one).
GOAL_SAVING = 0.50
BAD_DEBT_TOLERANCE_USD = 0.01
WAD = 10**18


def scenario_with(name: str, fraction: float, out: Path) -> Path:
    text = (ROOT / "keeper" / "drills" / "scenarios" / f"{name}.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^protected\s*=.*\n", "", text)
    text = re.sub(r"(?m)^\[accounts\]\n", f"[accounts]\nprotected = {fraction}\n", text, count=1)
    path = out / f"{name}-protected-{fraction:g}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def drill(scenario: Path, out: Path, accounts: int) -> dict[str, object]:
    """One drill in a child process (a drill starts its own Anvil and stops it): report.json and accounts.json."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", str(scenario), "--accounts", str(accounts), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"drill {scenario} failed: {done.stderr.strip()[-2000:]}")
    doc: dict[str, object] = json.loads((out / "report.json").read_text())
    return doc


def run_one(scenario_path: Path, out: Path, accounts: int) -> None:
    """The child: the drill (as `keeper drill` runs it), its report, and the per-account record."""
    from keeper.drills import report
    from keeper.drills.record import DrillOptions
    from keeper.drills.run import run_drill
    from keeper.drills.scenario import load_scenario

    logging.basicConfig(level=logging.WARNING)
    for name in ("keeper", "web3", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rec = run_drill(DrillOptions(scenario=load_scenario(str(scenario_path)), out=out, accounts=accounts))
    report.write(rec, out)
    (out / "accounts.json").write_text(json.dumps(account_record(rec), indent=1) + "\n", encoding="utf-8")


def account_record(rec: Any) -> list[dict[str, Any]]:
    """Per seeded account: owner, sub-account, group, debt at the start, initial health, and every event that
    touched it in time order (`rebalance_in` / `rebalance_out` counted on each end of a move, `pre_liquidation`,
    `liquidation`) with the block index in the replay, the scenario second, the health at the end of the block
    before and of the block itself (WAD as a float; None without debt), and for liquidations the USD penalty; and
    the account's health at the end of every block of the replay (`health`, by block index)."""
    index = {b.number: j for j, b in enumerate(rec.blocks)}
    seeded = rec.accounts[: rec.seeded]
    position = {a: i for i, a in enumerate(seeded)}
    events: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(seeded))}

    def health(j: int, i: int) -> float | None:
        if j < 0:
            h = rec.initial_health[i]
            return None if h == float("inf") else round(h, 5)
        b = rec.blocks[j]
        return round(b.health[i] / WAD, 5) if b.debt[i] else None

    def add(account: tuple[str, int], block: int, kind: str, extra: dict[str, Any]) -> None:
        i = position.get(account)
        j = index.get(block)
        if i is None or j is None:
            return
        s = rec.blocks[j].scenario_s
        events[i].append({"block": j, "s": s, "kind": kind, "before": health(j - 1, i), "after": health(j, i)} | extra)

    for block, owner, from_sub, to_sub in rec.rebalances:
        add((owner, to_sub), block, "rebalance_in", {"from": from_sub})
        add((owner, from_sub), block, "rebalance_out", {"to": to_sub})
    for kind, rows in (("pre_liquidation", rec.pre_liquidations), ("liquidation", rec.liquidations)):
        for x in rows:
            add((x.owner, x.sub_id), x.block, kind, {"penalty_usd": round(x.seized_usd - x.repaid_usd, 4)})
    debts = dict(zip(rec.accounts, rec.start_debt_usd, strict=False))
    return [
        {
            "owner": owner,
            "sub": sub,
            "protected": (owner, sub) in rec.protected,
            "debt_usd": round(debts.get((owner, sub), 0.0), 2),
            "initial_health": health(-1, i),
            "events": sorted(events[i], key=lambda e: (e["block"], e["kind"])),
            "health": [health(j, i) for j in range(len(rec.blocks))],
        }
        for i, (owner, sub) in enumerate(seeded)
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated library scenario names")
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child process: one drill
    args = p.parse_args()
    if args.one is not None:
        run_one(args.one, args.out, args.accounts)
        return 0
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if not (ROOT / "keeper" / "drills" / "scenarios" / f"{n}.toml").is_file()]
    if unknown or not names:
        library = sorted(f.stem for f in (ROOT / "keeper" / "drills" / "scenarios").glob("*.toml"))
        raise SystemExit(f"--scenarios: no library scenario {', '.join(unknown) or '(none given)'}; "
                         f"the library has {', '.join(library)}")  # fmt: skip
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        prot = drill(scenario_with(name, 0.5, args.out), args.out / f"{name}-protected", args.accounts)
        base = drill(scenario_with(name, 0.0, args.out), args.out / f"{name}-nobody", args.accounts)
        s, b = prot["summary"], base["summary"]  # type: ignore[index]
        rows.append({"scenario": name, "protected_run": s, "baseline_run": b})
        print(f"{name}: protected {s['protected']} unprotected {s['unprotected']} "  # type: ignore[index]
              f"bad debt {s['bad_debt_usd']} (nobody protected: {b['bad_debt_usd']})", flush=True)  # type: ignore[index]  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print()
    print("| scenario | group | accounts | debt $ | penalty $ | penalty per $ debt | liquidations | pre-liquidations "
          "| rebalancing moves |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for r in rows:
        s = r["protected_run"]
        per = {}
        for g in ("protected", "unprotected"):
            x = s[g]
            per[g] = x["user_penalty_usd"] / x["debt_usd"] if x["debt_usd"] else 0.0
            print(f"| {r['scenario']} | {g} | {x['accounts']} | {x['debt_usd']:,.0f} | {x['user_penalty_usd']:,.0f} | "
                  f"{per[g]:.2%} | {x['liquidations']} | {x['pre_liquidations']} | {x['rebalances']} |")  # fmt: skip
        ratios.append((r["scenario"], 1 - per["protected"] / per["unprotected"] if per["unprotected"] else 0.0))
    print()
    print("| scenario | penalty per $ debt, protected vs unprotected | full liquidations P / U | bad debt $, half "
          "protected | nobody | goal |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|")
    for (name, saving), r in zip(ratios, rows, strict=True):
        s, base = r["protected_run"], r["baseline_run"]
        fewer = s["protected"]["liquidations"] < s["unprotected"]["liquidations"]  # type: ignore[index]
        no_added = s["bad_debt_usd"] <= base["bad_debt_usd"] + BAD_DEBT_TOLERANCE_USD  # type: ignore[index,operator]
        met = saving >= GOAL_SAVING and fewer and no_added
        print(f"| {name} | {-saving:+.1%} | {s['protected']['liquidations']} / {s['unprotected']['liquidations']} | "
              f"{s['bad_debt_usd']:,.2f} | {base['bad_debt_usd']:,.2f} | {'met' if met else 'NOT met'} |")  # type: ignore[index]  # fmt: skip
    plot(rows, args.out / "protection.png")
    print(f"\nplot: {args.out / 'protection.png'}")
    return 0


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r["scenario"]) for r in rows]
    groups = ("protected", "unprotected")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(11, 1.8 * len(rows) + 2), 4.2))
    width = 0.38
    for k, g in enumerate(groups):
        per = []
        liq = []
        for r in rows:
            x = r["protected_run"][g]  # type: ignore[index]
            per.append(100 * x["user_penalty_usd"] / x["debt_usd"] if x["debt_usd"] else 0)
            liq.append(x["liquidations"])
        xs = [i + (k - 0.5) * width for i in range(len(rows))]
        ax1.bar(xs, per, width, label=g)
        ax2.bar(xs, liq, width, label=g)
    for ax, title in ((ax1, "users' penalty per $ of debt, %"), (ax2, "full liquidations")):
        ax.set_xticks(range(len(rows)), names, rotation=15, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("crash drills, half the owners protected (rebalancer + pre-liquidation band)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
