"""Static against optimized collateral ratios, in the crash drills of the library.

1. Optimize each collateral's lt and ltv with `keeper optimize`: the stress regime is a historical crash's own moves
   (`--from-scenario`, calibrated on black-thursday for WETH and WBTC; LINK, absent there, on october-10-2025), the
   ltv buffer is set in a calm market (`--calm-sigma`, the asset's everyday volatility).
2. Run every crash scenario twice with the same seed and accounts: static ratios (ltv 0.60, lt 0.67 for every
   collateral) and the optimized ones (`keeper drill --risk`).
3. Print one markdown table (bad debt, users' penalty, borrowing power and debt at the start) and write all figures
   to OUT/summary.json.

    python benchmarks/risk_drills.py --out /tmp/risk-drills [--accounts 200] [--paths 100000]

Takes about 10-15 minutes on 2 cores (8 drills)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CRASHES = ("black-thursday", "may-19-2021", "ftx-collapse", "october-10-2025")
STATIC = (0.60, 0.67)
# Asset -> (calibration scenario, everyday annualised volatility for the buffer).
CALIBRATION = {"WETH": ("black-thursday", 0.8), "WBTC": ("black-thursday", 0.6), "LINK": ("october-10-2025", 1.0)}


def keeper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, check=False)


def optimize(symbol: str, paths: int) -> dict[str, float]:
    scenario, sigma = CALIBRATION[symbol]
    done = keeper(
        "optimize", "--sigma", str(sigma), "--from-scenario", f"{scenario}:{symbol}", "--calm-sigma", str(sigma),
        "--paths", str(paths), "--json",
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"keeper optimize failed for {symbol}: {done.stderr.strip()}")
    doc = json.loads(done.stdout)
    return {k: doc[k] for k in ("lt", "ltv", "p_bad_debt", "expected_shortfall", "borrowing_power")}


def drill(scenario: str, risk: dict[str, tuple[float, float]], out: Path, accounts: int) -> dict[str, float]:
    flags = [f"--risk={s}={ltv:.4f}/{lt:.4f}" for s, (ltv, lt) in risk.items()]
    done = keeper("drill", scenario, "--accounts", str(accounts), "--out", str(out), "--quiet", *flags)
    if done.returncode != 0:
        raise SystemExit(f"keeper drill {scenario} failed: {done.stderr.strip()}")
    return report_figures(out)


def report_figures(out: Path) -> dict[str, float]:
    """The figures of a drill's report folder that the benchmarks compare."""
    doc = json.loads((out / "report.json").read_text())
    s, d = doc["summary"], doc["drill"]
    return {
        "bad_debt_usd": s["bad_debt_usd"],
        "user_penalty_usd": s["user_penalty_usd"],
        "liquidated_accounts": s["liquidated_accounts"],
        "missed_liquidations": s["missed_liquidations"],
        "healthy_liquidations": s["healthy_liquidations"],
        "borrowing_power_usd": d["borrowing_power_usd"],
        "debt_usd": d["debt_usd"],
        "collateral_usd": d["collateral_usd"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--paths", type=int, default=100_000)
    args = p.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {s: optimize(s, args.paths) for s in CALIBRATION}
    for s, c in chosen.items():
        print(f"optimized {s}: ltv {c['ltv']:.4f} lt {c['lt']:.4f} (P(bad debt) {c['p_bad_debt']:.2%})", flush=True)
    rows = []
    for scenario in CRASHES:
        symbols = [s for s in CALIBRATION if s != "LINK" or scenario == "october-10-2025"]
        static = drill(scenario, {s: STATIC for s in symbols}, args.out / f"{scenario}-static", args.accounts)
        opt = drill(
            scenario, {s: (chosen[s]["ltv"], chosen[s]["lt"]) for s in symbols}, args.out / f"{scenario}-optimized",
            args.accounts,
        )  # fmt: skip
        rows.append({"scenario": scenario, "static": static, "optimized": opt})
        print(f"{scenario}: static {static}\n{scenario}: optimized {opt}", flush=True)
    (args.out / "summary.json").write_text(json.dumps({"chosen": chosen, "rows": rows}, indent=2))
    print()
    print(
        "| scenario | ratios | bad debt $ | users' penalty $ | penalty per $ debt | borrowing power $ "
        "| power vs static |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        base = r["static"]["borrowing_power_usd"]
        for kind in ("static", "optimized"):
            x = r[kind]
            print(
                f"| {r['scenario']} | {kind} | {x['bad_debt_usd']:,.0f} | {x['user_penalty_usd']:,.0f} | "
                f"{x['user_penalty_usd'] / x['debt_usd']:.2%} | {x['borrowing_power_usd']:,.0f} | "
                f"{x['borrowing_power_usd'] / base - 1:+.2%} |"
            )
    worse = [r["scenario"] for r in rows if r["optimized"]["bad_debt_usd"] > r["static"]["bad_debt_usd"] + 0.01]
    print(f"\nmore bad debt than static in: {', '.join(worse) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
