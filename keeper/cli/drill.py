"""`keeper drill` and `keeper demo`: options in, a progress display while the drill runs, the summary and the report
paths out. The drill itself is keeper.drills.run; the report keeper.drills.report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keeper.drills import report
from keeper.drills.record import DrillError, DrillOptions, DrillRecord
from keeper.drills.record import Progress as BlockProgress
from keeper.drills.run import run_drill
from keeper.drills.scenario import Scenario, _library_names, load_margin, load_scenario
from keeper.engine.settings import anvil_from_environment

CHECKED = ("missed_liquidations", "healthy_liquidations", "duplicate_submissions")


def _out_dir(given: Path | None, name: str) -> Path:
    out = given or Path("drills") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DrillError(f"{out} already exists and is not an empty folder: choose another --out, or remove it")
    return out


def _quiet_logs() -> None:
    # The keeper logs each liquidation at INFO; during a drill the progress display is the output.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("keeper", "web3", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def execute(scenario: Scenario, args: argparse.Namespace, console: Console) -> tuple[DrillRecord, dict[str, Path]]:
    """Run a drill with a live progress display, write the report; the record and the report's paths."""
    if args.accounts is not None and args.accounts < 1:
        raise DrillError(f"--accounts must be at least 1, not {args.accounts}")
    if args.settle_blocks is not None and args.settle_blocks < 1:
        raise DrillError(f"--settle-blocks must be at least 1, not {args.settle_blocks}")
    out = _out_dir(args.out, scenario.name)
    _quiet_logs()
    quiet = bool(getattr(args, "quiet", False))
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )
    task = progress.add_task("setting up", total=None, detail="")

    def on_phase(text: str) -> None:
        if quiet:
            return
        progress.console.print(f"  {text}")

    def on_block(p: BlockProgress) -> None:
        faults = f" faults: {', '.join(p.faults)}" if p.faults else ""
        detail = (
            f"t={p.scenario_s:>6,}s  liquidatable {p.liquidatable:>4}  liquidations {p.liquidations:>4} "
            f"({p.liquidated_accounts} accounts){faults}"
        )
        progress.update(
            task,
            description="settling" if p.settling else "replaying",
            total=p.blocks,
            completed=p.block,
            detail=detail,
        )

    remote = getattr(args, "rpc_url", None) or getattr(args, "fork_url", None)
    keeper_settings = parse_settings(getattr(args, "set", None) or [])
    if getattr(args, "additive", False):
        scenario = replace(scenario, margin=None)
    elif getattr(args, "margin", None) is not None:
        scenario = replace(scenario, margin=load_margin(args.margin, scenario))
    opts = DrillOptions(
        scenario=scenario,
        out=out,
        accounts=args.accounts,
        seed=args.seed,
        rpc_url=getattr(args, "rpc_url", None),
        fork_url=getattr(args, "fork_url", None),
        deployment=getattr(args, "deployment", None),
        settle_blocks=args.settle_blocks,
        risk=parse_risk(getattr(args, "risk", None) or [], remote),
        keeper_settings=keeper_settings,
        anvil=anvil_from_environment(),
        on_block=on_block,
        on_phase=on_phase,
    )
    with progress:
        record = run_drill(opts)
        progress.update(task, description="writing the report", detail="")
        paths = report.write(record, out)
    return record, paths


def parse_settings(items: list[str]) -> dict[str, str]:
    """`--set NAME=VALUE` flags: settings of the keeper under drill (checked when the keeper is built)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DrillError(f"--set {item!r}: expected NAME=VALUE, e.g. --set max_fee_gwei=200")
        out[name] = value.strip()
    return out


def parse_risk(items: list[str], remote: str | None) -> dict[str, tuple[float, float]] | None:
    """`--risk SYMBOL=LTV/LT` flags: (ltv, lt) per collateral for the embedded deployment."""
    if not items:
        return None
    if remote:
        raise DrillError(
            "--risk sets the parameters of the drill's own deployment; it cannot change --rpc-url/--fork-url"
        )
    out: dict[str, tuple[float, float]] = {}
    for item in items:
        symbol, _, pair = item.partition("=")
        ltv_s, _, lt_s = pair.partition("/")
        try:
            ltv, lt = float(ltv_s), float(lt_s)
        except ValueError:
            raise DrillError(f"--risk {item!r}: expected SYMBOL=LTV/LT, e.g. WETH=0.60/0.67") from None
        if not symbol or not 0 < ltv < lt < 1:
            raise DrillError(f"--risk {item!r}: expected SYMBOL=LTV/LT with 0 < LTV < LT < 1, e.g. WETH=0.60/0.67")
        out[symbol.upper()] = (ltv, lt)
    return out


def show(doc: dict[str, Any], paths: dict[str, Path], console: Console) -> None:
    table = Table(title=f"drill {doc['scenario']}: {doc['accounts']} accounts, seed {doc['seed']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, label in report.SUMMARY_ROWS:
        table.add_row(label, report.fmt(doc["summary"][key]))
    console.print(table)
    console.print(f"report: {paths['json']}  {paths['md']}")
    console.print("plots:  " + "  ".join(str(p) for k, p in paths.items() if k.startswith("plot_")))


def drill(args: argparse.Namespace) -> int:
    console = Console(stderr=False)
    if args.list:
        for name in _library_names():
            sc = load_scenario(name)
            first = sc.description.split(". ")[0].split(": ")[0]
            print(f"{name:<22} {first[:95]}")
        return 0
    if args.scenario is None:
        raise DrillError("give a SCENARIO: a library name (`keeper drill --list` shows them) or a TOML file")
    scenario = load_scenario(args.scenario)
    _, paths = execute(scenario, args, console)
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    show(doc, paths, console)
    failed = [k for k in CHECKED if doc["summary"][k]]
    if args.check and failed:
        found = ", ".join(f"{k}={doc['summary'][k]}" for k in failed)
        print(f"keeper: drill check failed: {found}", file=sys.stderr)
        return 1
    return 0


def demo(args: argparse.Namespace) -> int:
    console = Console()
    scenario = load_scenario(args.scenario)
    console.print(
        f"[bold]keeper demo[/bold]: {scenario.name} on a fresh local Anvil, {args.accounts} accounts; "
        "the keeper is the same code as `keeper run`"
    )
    _, paths = execute(scenario, args, console)
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    show(doc, paths, console)
    return 0
