"""`ape run demo` — the system on a fresh local Anvil: deploy, seed borrowers, crash a price, liquidate.

Until the keeper exists this is the main job of `make demo`: it deploys with deployments/configs/local.toml,
opens borrowers across sub-accounts and collateral mixes, drops WETH by 30 %, liquidates every account the
engine reports unhealthy (quoting each with previewLiquidation, exactly as a keeper would), and prints the
accounts' health before and after.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import click
from ape import accounts, chain, project
from ape.cli import ConnectedProviderCommand, network_option

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _system import DEPLOYMENTS, deploy_system, load_config, to_wad

WAD = 10**18
MAX_UINT = 2**256 - 1


def _health_str(h: int) -> str:
    return "   no debt" if h == MAX_UINT else f"{h / WAD:10.4f}"


def _table(engine: Any, rows: list[tuple[Any, int]]) -> None:
    click.echo(f"  {'account':<14}{'sub':>4}  {'collateral $':>14}  {'debt $':>12}  {'health':>10}")
    for who, sub in rows:
        h = engine.accountHealth(who, sub)
        click.echo(
            f"  {who.address[:12]:<14}{sub:>4}  {h.collateralValue / WAD:>14,.2f}  "
            f"{h.debtValue / WAD:>12,.2f}  {_health_str(h.health)}"
        )


@click.command(cls=ConnectedProviderCommand, short_help="Deploy, seed, crash and liquidate on a local Anvil")
@network_option()
@click.option("--borrowers", default=8, show_default=True, help="Borrower sub-accounts to open.")
@click.option("--drop", default=0.30, show_default=True, help="Fractional WETH price drop.")
@click.option("--seed", default=7, show_default=True)
def cli(network: Any, borrowers: int, drop: float, seed: int) -> None:
    rng = random.Random(seed)
    cfg = load_config(DEPLOYMENTS / "configs" / "local.toml")
    admin, liquidator = accounts.test_accounts[0], accounts.test_accounts[1]
    click.secho("1. deploying the system to a local Anvil", bold=True)
    dep = deploy_system(project, chain, admin, cfg, getattr(network, "choice", "local"))
    for name in ("OracleRouter", "Vault", "MarginEngine", "Lens"):
        click.echo(f"  {name:<14}{dep.contracts[name]['address']}")
    engine = project.MarginEngine.at(dep.contracts["MarginEngine"]["address"])
    vault = project.Vault.at(dep.contracts["Vault"]["address"])
    usdc = project.MockERC20.at(dep.debt["token"])
    tokens = {a["symbol"]: project.MockERC20.at(a["token"]) for a in dep.assets}
    feeds = {a["symbol"]: project.MockAggregator.at(a["feed"]) for a in dep.assets}
    prices = {a.symbol: a.price for a in cfg.asset}
    click.echo(f"  vault liquidity {vault.totalAssets() / 10**6:,.0f} USDC")

    click.secho(f"\n2. opening {borrowers} borrower sub-accounts", bold=True)
    rows: list[tuple[Any, int]] = []
    for i in range(borrowers):
        who = accounts.test_accounts[2 + i % 6]
        sub = i // 6
        mix = ["WETH"] if i % 3 else ["WETH", rng.choice(["WBTC", "LINK"])]
        power = 0.0
        for symbol in mix:
            usd = rng.uniform(5_000, 50_000)
            spec = next(a for a in cfg.asset if a.symbol == symbol)
            amount = to_wad(round(usd / prices[symbol], 6), spec.decimals)
            tokens[symbol].mint(who, amount, sender=who)
            tokens[symbol].approve(engine, amount, sender=who)
            engine.deposit(who, sub, tokens[symbol], amount, sender=who)
            power += usd * spec.ltv
        # Borrow between 70 % and 99 % of borrowing power: some accounts sit close to their limit.
        engine.borrow(sub, int(power * rng.uniform(0.70, 0.99) * 10**6), who, sender=who)
        rows.append((who, sub))
    _table(engine, rows)

    new_price = prices["WETH"] * (1 - drop)
    click.secho(f"\n3. WETH falls {drop:.0%}: ${prices['WETH']:,.0f} -> ${new_price:,.0f}", bold=True)
    feeds["WETH"].setAnswer(to_wad(new_price, feeds["WETH"].decimals()), sender=admin)
    _table(engine, rows)

    click.secho("\n4. liquidating every unhealthy account (quote, then liquidate)", bold=True)
    usdc.mint(liquidator, 10**13, sender=liquidator)
    usdc.approve(engine, MAX_UINT, sender=liquidator)
    done, bad_debt = 0, 0
    decimals = {a["symbol"]: a["decimals"] for a in dep.assets}
    live_prices = {**prices, "WETH": new_price}
    for who, sub in rows:
        while (h := engine.accountHealth(who, sub)).debt > 0 and h.health < WAD:
            # Seize the collateral the account holds most of, by value.
            symbol = max(
                (s for s in tokens if engine.collateralOf(who, sub, tokens[s]) > 0),
                key=lambda s: engine.collateralOf(who, sub, tokens[s]) / 10 ** decimals[s] * live_prices[s],
            )
            quote = engine.previewLiquidation(who, sub, tokens[symbol], MAX_UINT)
            receipt = engine.liquidate(
                who, sub, tokens[symbol], MAX_UINT, quote.seized, liquidator, b"", sender=liquidator
            )
            done += 1
            bad_debt += quote.badDebt
            click.echo(
                f"  {who.address[:12]} sub {sub}: repaid {quote.repaid / 10**6:,.2f} USDC, seized "
                f"{quote.seized / 10 ** decimals[symbol]:,.4f} {symbol} at {quote.discount / WAD:.2%} discount"
                f"{f', bad debt {quote.badDebt / 10**6:,.2f} USDC' if quote.badDebt else ''}, gas {receipt.gas_used:,}"
            )
    click.echo(f"  {done} liquidations, {bad_debt / 10**6:,.2f} USDC of bad debt realised")
    click.secho("\n5. after liquidation", bold=True)
    _table(engine, rows)
    click.echo(f"\nvault: totalAssets {vault.totalAssets() / 10**6:,.2f} USDC, reserve {vault.reserve() / 10**6:,.2f}")
