"""`keeper status`: every account by health, with its collateral, debt and the price at which it becomes
liquidatable; under a scenario grid also the scenario that binds and the further fall of every collateral price
that would liquidate it. Works against any node with a deployment file; keeps no state (accounts are found by
scanning the engine's events from its deployment block)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TextIO

from web3 import Web3

from keeper.chain.deployment import Deployment, contract
from keeper.chain.discovery import Discovery
from keeper.chain.index import MemoryIndex
from keeper.chain.reads import read_accounts, read_market
from keeper.core import risk
from keeper.core.snapshot import Account, Market, figures_of, mirror_inputs
from keeper.core.units import WAD


@dataclass(frozen=True)
class Row:
    owner: str
    sub_id: int
    health: float | None  # None: a needed price is refused; inf: no debt
    collateral_usd: float
    debt: float  # whole debt-asset units
    debt_usd: float
    collateral: dict[str, float]  # symbol -> whole tokens
    trigger_asset: str | None  # the asset whose price is shown
    trigger_price: float | None  # USD price of that asset at which the account becomes liquidatable
    binding: int | None = None  # under a grid: the scenario that sets health (None: additive rule or no debt)
    fall_to_liquidation: float | None = None  # fraction every collateral price may still fall; 0: liquidatable


def _symbols(dep: Deployment) -> dict[str, str]:
    return {a.token: a.symbol for a in dep.assets}


def build_rows(market: Market, accounts: list[Account], dep: Deployment) -> list[Row]:
    symbols = _symbols(dep)
    rows: list[Row] = []
    for acc in accounts:
        held = acc.held()
        if not held and not acc.owes():
            continue
        collateral = {
            symbols.get(market.assets[i].address, market.assets[i].address): acc.balances[i]
            / 10 ** market.assets[i].decimals
            for i in held
        }
        figures = figures_of(acc, market)
        h = None if figures is None else figures[0]
        trigger_asset: str | None = None
        trigger_price: float | None = None
        binding: int | None = None
        fall: float | None = None
        inputs = mirror_inputs(acc, market)
        if h is not None and inputs is not None and acc.owes() and held:
            # Every long leg scaled by (1 - f) scales every scenario's long value, hence health, by about as much.
            fall = 0.0 if h.health < WAD else 1 - WAD / h.health
            if market.grid is not None and figures is not None:
                binding = figures[1]
        if h is not None and inputs is not None and acc.debt and held and not any(acc.other_debts):
            balances, prices, assets = inputs
            # The price of the largest collateral (by value) at which health reaches 1, the others fixed.
            biggest = max(held, key=lambda i: risk.value_down(balances[i], prices[i], assets[i].decimals))
            price = risk.liquidation_price(
                balances,
                prices,
                assets,
                acc.scaled_debt,
                market.index,
                market.debt_price.price,
                market.debt_decimals,
                biggest,
                market.grid,
            )
            trigger_asset = symbols.get(market.assets[biggest].address)
            trigger_price = None if price is None else price / 1e18
        rows.append(
            Row(
                owner=acc.owner,
                sub_id=acc.sub_id,
                health=None if h is None else (float("inf") if h.health == risk.MAX_UINT else h.health / 1e18),
                collateral_usd=0.0 if h is None else h.collateral_value / 1e18,
                debt=acc.debt / 10**market.debt_decimals,
                debt_usd=0.0 if h is None else h.debt_value / 1e18,
                collateral=collateral,
                trigger_asset=trigger_asset,
                trigger_price=trigger_price,
                binding=binding,
                fall_to_liquidation=fall,
            )
        )
    rows.sort(key=lambda r: (r.health is not None, r.health if r.health is not None else 0.0))
    return rows


def show(dep: Deployment, w3: Web3, as_json: bool, out: TextIO = sys.stdout) -> int:
    store = MemoryIndex()
    Discovery(w3, store, dep.engine, dep.abis["MarginEngine"], dep.start_block, confirmations=0).scan()
    lens = contract(w3, dep, "Lens")
    head = w3.eth.block_number
    market = read_market(lens, head)
    accounts = read_accounts(lens, store.accounts(), head, other_debts=len(market.other_debts))
    rows = build_rows(market, accounts, dep)
    if as_json:
        doc = {
            "chain_id": dep.chain_id,
            "block": head,
            "accounts": [
                {
                    "owner": r.owner,
                    "sub_id": r.sub_id,
                    "health": None if r.health is None else (None if r.health == float("inf") else r.health),
                    "liquidatable": r.health is not None and r.health < 1,
                    "collateral_usd": r.collateral_usd,
                    "debt": r.debt,
                    "debt_usd": r.debt_usd,
                    "collateral": r.collateral,
                    "liquidation_price": None
                    if r.trigger_asset is None
                    else {"asset": r.trigger_asset, "usd": r.trigger_price},
                    "binding_scenario": r.binding,
                    "fall_to_liquidation": r.fall_to_liquidation,
                }
                for r in rows
            ],
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    out.write(f"chain {dep.chain_id}, block {head}: {len(rows)} accounts\n")
    if market.grid is not None:
        out.write(f"margin: a scenario grid of {market.grid.count} scenarios (docs/portfolio-margin.md)\n")
    grid = market.grid is not None
    extra = f"{'binds':>6}{'fall':>8}" if grid else ""
    out.write(f"{'owner':<44}{'sub':>4}{'health':>10}{'collateral $':>15}{'debt $':>14}{extra}  liquidatable at\n")
    for r in rows:
        health = "refused" if r.health is None else ("-" if r.health == float("inf") else f"{r.health:.4f}")
        trigger = (
            "" if r.trigger_asset is None or r.trigger_price is None else f"{r.trigger_asset} ${r.trigger_price:,.2f}"
        )
        cells = ""
        if grid:
            binds = "-" if r.binding is None else f"s{r.binding}"
            fall = "-" if r.fall_to_liquidation is None else f"{r.fall_to_liquidation:.1%}"
            cells = f"{binds:>6}{fall:>8}"
        out.write(
            f"{r.owner:<44}{r.sub_id:>4}{health:>10}{r.collateral_usd:>15,.2f}{r.debt_usd:>14,.2f}{cells}  {trigger}\n"
        )
    return 0
