"""A drill's report, computed from what the chain showed (keeper.drills.record.DrillRecord): report.json (the schema in
keeper/drills/schemas/drill-report.schema.json, documented in docs/drills.md), report.md and four plots
(keeper.drills.plots).

Definitions (also in docs/drills.md):

- The drill measures every account on the engine: the ones it seeded and any that were there before it (an earlier
  drill on the same node, a fork's users), which the keeper finds and liquidates too. `accounts` counts the seeded
  ones; `drill.preexisting` describes the others.
- An account is *liquidatable* in a block when, at the end of that block, its prices are valid, it has debt and its
  health is below 1 (what `liquidate` accepts). `liquidatable_accounts` counts the accounts liquidatable at the
  start or in some block, and every liquidated account (the engine liquidates only accounts below health 1, even
  one that a price update and a liquidation in the same block leave healthy at its end), so
  `liquidated_accounts <= liquidatable_accounts` always.
- An *episode* starts at the first block of a run of blocks in which the account is liquidatable. A liquidation's
  latency is the number of blocks from the start of its episode to the block that holds it (1 = the very next
  block); the latency figures of the summary use each episode's first liquidation.
- `missed_liquidations`: accounts liquidatable in the last block, after the settle period (which implies their
  prices were valid).
- `healthy_liquidations`: liquidations of accounts that were not liquidatable-by-health in the parent block
  (valid prices and health >= 1, or no debt).
- `duplicate_submissions`: keeper transactions seen in the node's pool for an account while another pending keeper
  transaction with a different nonce already targeted it (replacements share a nonce and are not counted).
- `user_penalty_usd`: seized value minus repaid value, at the oracle prices of the liquidation's block, summed.
- `keeper_profit_usd`: the same for the keeper's own liquidations, minus the keeper's fees.
- `keeper_fees_paid_eth`, `keeper_fees_paid_usd`: what the keeper paid for gas (gas used x effective gas price of every
  transaction it got mined, reverted ones included), in the native token and at its USD price in that block (the
  keeper's native-price source; 0 USD when the deployment names none).
- `max_underwater_s`: the longest time any account stayed liquidatable in one episode, in chain seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from keeper.core.units import WAD
from keeper.drills.healths import liquidatable
from keeper.drills.plots import plot
from keeper.drills.record import DrillRecord

SCHEMA_FILE = "drill-report.schema.json"


def schema() -> dict[str, Any]:
    text = resources.files("keeper.drills").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def validate(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `doc` does not follow the report schema."""
    jsonschema.validate(doc, schema())


def percentile(values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile (an observed value; 0 for no values)."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ------------------------------------------------------------------------------------------------ computing


class _Timeline:
    """Per account, per block: liquidatable or not, and where each episode starts."""

    def __init__(self, rec: DrillRecord) -> None:
        self.rec = rec
        self.index = {b.number: j for j, b in enumerate(rec.blocks)}
        n = len(rec.accounts)
        self.liq: list[list[bool]] = [
            [liquidatable(b.ok[i], b.health[i], b.debt[i]) for i in range(n)] for b in rec.blocks
        ]

    def episode_start(self, i: int, j: int) -> int | None:
        """The block index where the episode holding block index j-1 began (None if not liquidatable at j-1)."""
        if j == 0 or not self.liq[j - 1][i]:
            return None
        k = j - 1
        while k > 0 and self.liq[k - 1][i]:
            k -= 1
        return k

    def healthy(self, i: int, j: int) -> bool:
        """Account i was provably healthy at the end of the block before index j."""
        if j == 0:
            return self.rec.initial_health[i] >= 1.0
        b = self.rec.blocks[j - 1]
        return b.ok[i] and (b.debt[i] == 0 or b.health[i] >= WAD)

    def longest_run_s(self) -> float:
        best = 0.0
        blocks = self.rec.blocks
        for i in range(len(self.rec.accounts)):
            start: int | None = None
            for j in range(len(blocks)):
                if self.liq[j][i] and start is None:
                    start = j
                elif not self.liq[j][i] and start is not None:
                    best = max(best, float(blocks[j].timestamp - blocks[start].timestamp))
                    start = None
            if start is not None:  # still liquidatable at the end of the last block: count that block too
                bt = self.rec.scenario.block_time_s
                best = max(best, float(blocks[-1].timestamp - blocks[start].timestamp + bt))
        return best


def protection_summary(rec: DrillRecord) -> dict[str, dict[str, float | int]]:
    """`summary.protected` and `summary.unprotected`: the accounts whose owners opted in to protection against the
    rest, each with its accounts, debt at the start, users' penalty (liquidations and pre-liquidations), and counts
    of liquidations, pre-liquidations and rebalances (counted on the receiving account)."""
    groups: dict[str, dict[str, float | int]] = {}
    seeded = rec.accounts[: rec.seeded]
    for name, member in (("protected", True), ("unprotected", False)):
        accounts = [a for a in seeded if (a in rec.protected) is member]
        keys = set(accounts)
        debts = dict(zip(rec.accounts, rec.start_debt_usd, strict=False))
        liqs = [x for x in rec.liquidations if (x.owner, x.sub_id) in keys]
        pres = [x for x in rec.pre_liquidations if (x.owner, x.sub_id) in keys]
        groups[name] = {
            "accounts": len(accounts),
            "debt_usd": round(sum(debts.get(a, 0.0) for a in accounts), 6),
            "user_penalty_usd": round(sum(x.seized_usd - x.repaid_usd for x in liqs + pres), 6),
            "liquidations": len(liqs),
            "pre_liquidations": len(pres),
            "rebalances": sum(1 for r in rec.rebalances if (r[1], r[3]) in keys),
        }
    return groups


class _Liquidations:
    """The liquidations in order, each with its latency; the first latency of every episode, the liquidations of
    accounts healthy in the block before, and the keeper's gross gain (seized minus repaid, USD)."""

    def __init__(self, rec: DrillRecord, tl: _Timeline) -> None:
        account_index = {a: i for i, a in enumerate(rec.accounts)}
        keeper = rec.keeper.lower()
        self.entries: list[dict[str, Any]] = []
        self.first_latencies: list[int] = []
        self.healthy = 0
        self.keeper_gross = 0.0
        seen_episode: set[tuple[int, int]] = set()
        for liq in sorted(rec.liquidations, key=lambda x: (x.block, x.log_index)):
            i = account_index.get((liq.owner, liq.sub_id))
            j = tl.index[liq.block]
            start = tl.episode_start(i, j) if i is not None else None
            latency = 0 if start is None else j - start
            if i is not None and tl.healthy(i, j):
                self.healthy += 1
            if i is not None and start is not None and (i, start) not in seen_episode:
                seen_episode.add((i, start))
                self.first_latencies.append(latency)
            if liq.liquidator.lower() == keeper:
                self.keeper_gross += liq.seized_usd - liq.repaid_usd
            start_ts = rec.blocks[start].timestamp if start is not None else rec.blocks[j].timestamp
            self.entries.append(
                {
                    "owner": liq.owner,
                    "sub_id": liq.sub_id,
                    "block": liq.block,
                    "tx": liq.tx,
                    "collateral": liq.collateral,
                    "repaid_usd": round(liq.repaid_usd, 6),
                    "seized_usd": round(liq.seized_usd, 6),
                    "latency_blocks": latency,
                    "latency_s": float(rec.blocks[j].timestamp - start_ts),
                }
            )


def build(rec: DrillRecord) -> dict[str, Any]:
    """report.json's content."""
    tl = _Timeline(rec)
    liqs = _Liquidations(rec, tl)
    ever = {i for row in tl.liq for i, v in enumerate(row) if v} | rec.liquidatable_at_start
    liquidated = {(x.owner, x.sub_id) for x in rec.liquidations}
    liquidatable_keys = {rec.accounts[i] for i in ever} | liquidated
    last = tl.liq[-1] if tl.liq else []
    missed = [i for i, v in enumerate(last) if v]
    keeper_txs = [t for t in rec.keeper_txs.values() if t.mined_block is not None]
    fees_eth = sum(t.gas_cost_wei for t in keeper_txs) / 1e18
    gas_usd = sum(t.gas_cost_wei / 1e18 * rec.eth_usd.get(t.mined_block or 0, 0.0) for t in keeper_txs)
    reverted = sum(1 for t in keeper_txs if t.status == 0 and t.account is not None)
    summary = {
        "liquidatable_accounts": len(liquidatable_keys),
        "liquidated_accounts": len(liquidated),
        "missed_liquidations": len(missed),
        "healthy_liquidations": liqs.healthy,
        "reverted_liquidations": reverted,
        "duplicate_submissions": sum(1 for t in rec.keeper_txs.values() if t.duplicate),
        "latency_blocks_p50": percentile(liqs.first_latencies, 50),
        "latency_blocks_p99": percentile(liqs.first_latencies, 99),
        "latency_blocks_max": max(liqs.first_latencies, default=0),
        "bad_debt_usd": round(sum(b[3] for b in rec.bad_debt), 6),
        "user_penalty_usd": round(sum(x.seized_usd - x.repaid_usd for x in rec.liquidations), 6),
        "keeper_profit_usd": round(liqs.keeper_gross - gas_usd, 6),
        "keeper_gas_used": sum(t.gas_used for t in keeper_txs),
        "keeper_fees_paid_eth": round(fees_eth, 9),
        "keeper_fees_paid_usd": round(gas_usd, 6),
        "max_underwater_s": tl.longest_run_s(),
        **protection_summary(rec),
    }
    return {
        "scenario": rec.scenario.name,
        "chain_id": rec.chain_id,
        "seed": rec.seed,
        "accounts": rec.seeded,
        "liquidations": liqs.entries,
        "summary": summary,
        "drill": _drill_section(rec, ever, liquidated, missed),
    }


def _drill_section(
    rec: DrillRecord, ever: set[int], liquidated: set[tuple[str, int]], missed: list[int]
) -> dict[str, Any]:
    """report.json's `drill`: how the drill ran, the accounts that were there before it, and the missed ones."""
    blocks = rec.blocks
    sc = rec.scenario
    bt = sc.block_time_s
    preexisting = set(range(rec.seeded, len(rec.accounts)))
    return {
        "target": rec.target,
        "keeper": rec.keeper,
        "block_time_s": bt,
        "start_block": rec.start_block,
        "end_block": blocks[-1].number if blocks else rec.start_block,
        "replay_blocks": rec.replay_blocks,
        "settle_blocks": max(0, len(blocks) - rec.replay_blocks),
        "chain_seconds": (blocks[-1].timestamp - blocks[0].timestamp) if blocks else 0,
        "wall_seconds": round(rec.wall_s, 3),
        "keeper_tick_max_s": round(max(rec.tick_s, default=0.0), 3),
        "keeper_slow_ticks": sum(1 for t in rec.tick_s if t > bt),
        "faults": [{k: v for k, v in vars(f).items() if v is not None} for f in sc.faults],
        "bad_debt_events": len(rec.bad_debt),
        "preexisting": {
            "accounts": len(preexisting),
            "liquidatable_at_start": len(preexisting & rec.liquidatable_at_start),
            "liquidatable": len(preexisting & ever),
            "liquidated": len({rec.accounts[i] for i in preexisting} & liquidated),
        },
        "risk_params": rec.risk,
        "margin": (
            {"rule": "additive"}
            if sc.margin is None
            else {
                "rule": "grid",
                "scenarios": len(sc.margin.scenarios),
                "initial_scale": sc.margin.initial_scale,
            }
        ),
        **{k: round(v, 2) for k, v in rec.start_totals.items()},
        "missed": [
            {
                "owner": rec.accounts[i][0],
                "sub_id": rec.accounts[i][1],
                "health": blocks[-1].health[i] / WAD,
            }
            for i in missed
        ],
    }


# ------------------------------------------------------------------------------------------------ writing


def write(rec: DrillRecord, out: Path) -> dict[str, Path]:
    """report.json (validated first), report.md and the plots; the paths written."""
    doc = build(rec)
    validate(doc)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    plots = plot(rec, doc, out)
    _atomic(paths["json"], json.dumps(doc, indent=2) + "\n")
    _atomic(paths["md"], markdown(rec, doc, plots))
    paths.update({f"plot_{k}": p for k, p in plots.items()})
    return paths


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


SUMMARY_ROWS = [
    ("liquidatable_accounts", "accounts that became liquidatable"),
    ("liquidated_accounts", "accounts liquidated"),
    ("missed_liquidations", "missed (still liquidatable at the end)"),
    ("healthy_liquidations", "liquidations of healthy accounts"),
    ("reverted_liquidations", "keeper liquidations that reverted"),
    ("duplicate_submissions", "duplicate submissions"),
    ("latency_blocks_p50", "latency p50 (blocks)"),
    ("latency_blocks_p99", "latency p99 (blocks)"),
    ("latency_blocks_max", "latency max (blocks)"),
    ("bad_debt_usd", "bad debt (USD)"),
    ("user_penalty_usd", "users' liquidation penalty (USD)"),
    ("keeper_profit_usd", "keeper profit after gas (USD)"),
    ("keeper_gas_used", "keeper gas used"),
    ("keeper_fees_paid_eth", "keeper fees paid (native token)"),
    ("keeper_fees_paid_usd", "keeper fees paid (USD)"),
    ("max_underwater_s", "longest time liquidatable (s)"),
]


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(rec: DrillRecord, doc: dict[str, Any], plots: dict[str, Path]) -> str:
    sc = rec.scenario
    d = doc["drill"]
    lines = [
        f"# Drill report: {sc.name}",
        "",
        sc.description,
        "",
        f"- target: {d['target']} node, chain {doc['chain_id']}; keeper {d['keeper']}",
        f"- {doc['accounts']} accounts seeded with seed {doc['seed']}, health drawn from "
        f"{sc.accounts.health[0]:g} to {sc.accounts.health[1]:g}, collateral from {', '.join(sc.accounts.assets)}"
        + (
            f"; {d['preexisting']['accounts']} accounts already on the engine measured too "
            f"({d['preexisting']['liquidatable_at_start']} liquidatable at the start, "
            f"{d['preexisting']['liquidated']} liquidated)"
            if d["preexisting"]["accounts"]
            else ""
        ),
        f"- blocks {d['start_block']} to {d['end_block']} ({d['replay_blocks']} replayed, {d['settle_blocks']} to "
        f"settle), {sc.block_time_s} s apart: {d['chain_seconds']:,} s of chain time in {d['wall_seconds']:.1f} s",
        "- collateral ratios: "
        + ", ".join(f"{k} ltv {v['ltv']:g} / lt {v['lt']:g}" for k, v in d.get("risk_params", {}).items())
        + f"; at the start: collateral ${d.get('collateral_usd', 0):,.0f}, borrowing power "
        f"${d.get('borrowing_power_usd', 0):,.0f}, debt ${d.get('debt_usd', 0):,.0f}",
        "- margin rule: "
        + (
            "additive (each collateral at its lt)"
            if d.get("margin", {}).get("rule", "additive") == "additive"
            else f"the scenario's grid of {d['margin']['scenarios']} scenarios (initial scale "
            f"{d['margin']['initial_scale']:g}), set on the engine before seeding"
        ),
        "",
        "## Summary",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {fmt(doc['summary'][key])} |" for key, label in SUMMARY_ROWS]
    if d["faults"]:
        lines += ["", "## Faults", "", "| at (s) | kind | asset | duration (s) | gwei |", "|---:|---|---|---:|---:|"]
        for f in d["faults"]:
            lines.append(
                f"| {f['at']:,} | {f['kind']} | {f.get('asset', '')} | {f['duration']:,} | {f.get('gwei', '')} |"
            )
    if d["missed"]:
        lines += ["", "## Missed", "", "| owner | sub | health |", "|---|---:|---:|"]
        lines += [f"| {m['owner']} | {m['sub_id']} | {m['health']:.4f} |" for m in d["missed"]]
    lines += ["", "## Plots", ""]
    titles = {
        "price": "Prices (market and oracle) with liquidations",
        "accounts": "Liquidatable and liquidated accounts",
        "health": "Health before and after",
        "latency": "Latency of first liquidations",
    }
    lines += [f"![{titles[k]}]({p.name})" for k, p in plots.items()]
    liqs = doc["liquidations"]
    if liqs:
        lines += [
            "",
            f"## Liquidations ({len(liqs)}{', first 50' if len(liqs) > 50 else ''})",
            "",
            "| block | account | collateral | repaid $ | seized $ | latency (blocks) |",
            "|---:|---|---|---:|---:|---:|",
        ]
        for x in liqs[:50]:
            lines.append(
                f"| {x['block']} | {x['owner'][:10]}…/{x['sub_id']} | {x['collateral']} | {x['repaid_usd']:,.2f} | "
                f"{x['seized_usd']:,.2f} | {x['latency_blocks']} |"
            )
    lines += ["", "Definitions of every figure: docs/drills.md, *Report*.", ""]
    return "\n".join(lines)
