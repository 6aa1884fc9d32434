"""The drill report's four plots: prices with liquidations, liquidatable against liquidated accounts, health before
and after, and the latency of first liquidations. Drawn with matplotlib's object API (a Figure and its Agg canvas),
so nothing here selects a global backend or keeps figures open."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from keeper.core.units import WAD
from keeper.drills.healths import liquidatable
from keeper.drills.record import DrillRecord

PLOTS = {
    "price": "price.png",
    "accounts": "accounts.png",
    "health": "health.png",
    "latency": "latency.png",
}
DPI = 110


def plot(rec: DrillRecord, doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Draw the four plots into `out`; their paths by name (the keys of PLOTS)."""
    figures = {
        "price": prices(rec),
        "accounts": accounts(rec),
        "health": healths(rec),
        "latency": latency(rec, doc),
    }
    paths: dict[str, Path] = {}
    for name, fig in figures.items():
        fig.tight_layout()
        paths[name] = out / PLOTS[name]
        fig.savefig(paths[name], dpi=DPI)
    return paths


def prices(rec: DrillRecord) -> Figure:
    """Per asset: the scenario's market price, the oracle's valid answers, faults shaded, liquidations marked."""
    sc = rec.scenario
    blocks = rec.blocks
    xs = [b.scenario_s for b in blocks]
    collateral = [a.symbol for a in sc.assets if not a.quote]
    by_block = {b.number: b for b in blocks}
    fig = Figure(figsize=(10, 2.4 * len(sc.assets)))
    axes = fig.subplots(len(sc.assets), 1, sharex=True, squeeze=False)
    for ax, asset in zip(axes[:, 0], [*collateral, sc.quote.symbol], strict=True):
        path = sc.price_path(asset)
        mx = [p[0] for p in path] + [xs[-1] if xs else 0]
        my = [p[1] for p in path] + [path[-1][1]]
        ax.step(mx, my, where="post", color="0.6", label="market (scenario)")
        oracle = [b.oracle.get(asset) for b in blocks]
        valid = [math.nan if v is None else v for v in oracle]
        ax.step(xs, valid, where="post", color="tab:blue", lw=1.2, label="oracle (valid answers)")
        for f in sc.faults:
            if f.asset in (asset, None) and f.kind != "base_fee":
                ax.axvspan(f.at, f.end, color="tab:red", alpha=0.12)
        marks = [by_block[x.block] for x in rec.liquidations if x.collateral == asset and x.block in by_block]
        lx = [b.scenario_s for b in marks]
        ly = [b.oracle.get(asset) or math.nan for b in marks]
        if lx:
            ax.scatter(lx, ly, marker="v", color="tab:red", s=14, zorder=3, label="liquidation")
        ax.set_ylabel(f"{asset} USD")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    axes[-1, 0].set_xlabel("scenario time (s); shaded: faults")
    fig.suptitle(f"{sc.name}: prices and liquidations")
    return fig


def accounts(rec: DrillRecord) -> Figure:
    """Accounts liquidatable in each block against accounts liquidated so far."""
    blocks = rec.blocks
    xs = [b.scenario_s for b in blocks]
    n = len(rec.accounts)
    now = [sum(liquidatable(b.ok[i], b.health[i], b.debt[i]) for i in range(n)) for b in blocks]
    done: list[int] = []
    seen: set[tuple[str, int]] = set()
    liqs_by_block: dict[int, list[tuple[str, int]]] = {}
    for x in rec.liquidations:
        liqs_by_block.setdefault(x.block, []).append((x.owner, x.sub_id))
    for b in blocks:
        seen.update(liqs_by_block.get(b.number, []))
        done.append(len(seen))
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    ax.plot(xs, now, color="tab:red", label="liquidatable now")
    ax.plot(xs, done, color="tab:green", label="liquidated so far (accounts)")
    ax.set_xlabel("scenario time (s)")
    ax.set_ylabel("accounts")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{rec.scenario.name}: liquidatable vs liquidated")
    return fig


def healths(rec: DrillRecord) -> Figure:
    """The distribution of health (capped) at the start and after the last block, of accounts with debt."""
    blocks = rec.blocks
    cap = 3.0
    before = [min(h, cap) for h in rec.initial_health if math.isfinite(h)]
    after = [
        min(blocks[-1].health[i] / WAD, cap)
        for i in range(len(rec.accounts))
        if blocks and blocks[-1].ok[i] and blocks[-1].debt[i] > 0
    ]
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    bins = [x / 20 for x in range(0, int(cap * 20) + 1)]
    ax.hist(before, bins=bins, alpha=0.6, label=f"before ({len(before)} with debt)")
    ax.hist(after, bins=bins, alpha=0.6, label=f"after ({len(after)} with debt, valid prices)")
    ax.axvline(1.0, color="tab:red", lw=1)
    ax.set_xlabel(f"health (capped at {cap:g})")
    ax.set_ylabel("accounts")
    ax.legend()
    ax.set_title(f"{rec.scenario.name}: health distribution")
    return fig


def latency(rec: DrillRecord, doc: dict[str, Any]) -> Figure:
    """Blocks from liquidatable to the first liquidation of each episode (report.json's liquidations)."""
    firsts: list[int] = []
    seen_ep: set[tuple[str, int, int]] = set()
    for x in doc["liquidations"]:
        key = (x["owner"], x["sub_id"], x["block"] - x["latency_blocks"])
        if x["latency_blocks"] > 0 and key not in seen_ep:
            seen_ep.add(key)
            firsts.append(x["latency_blocks"])
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    top = max(firsts, default=1)
    ax.hist(firsts, bins=[b + 0.5 for b in range(0, top + 1)], color="tab:purple")
    ax.set_xlabel("blocks from liquidatable to first liquidation")
    ax.set_ylabel("episodes")
    s = doc["summary"]
    ax.set_title(
        f"{rec.scenario.name}: latency p50 {s['latency_blocks_p50']}, p99 {s['latency_blocks_p99']}, "
        f"max {s['latency_blocks_max']} blocks"
    )
    return fig
