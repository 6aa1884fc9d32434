"""`ape run demo` — the system on a fresh local Anvil: deploy, seed borrowers, crash a price, let the keeper act.

The main job of `make demo` until the drills arrive: it deploys with deployments/configs/local.toml, opens
borrowers across sub-accounts and collateral mixes, drops WETH by 30 %, and runs the keeper (the same code as
`keeper run`, in-process, one tick per block) until nothing is liquidatable; it prints every liquidation from the
chain's events and the accounts' health before and after.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from ape import accounts, chain, project
from ape.cli import ConnectedProviderCommand, network_option
from web3 import Web3

from keeper.config import Settings
from keeper.deployment import load_deployment
from keeper.runner import Keeper, build_keeper
from keeper.signer import load_signer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _system import DEPLOYMENTS, deploy_system, load_config, to_wad

WAD = 10**18
MAX_UINT = 2**256 - 1


def _keeper(dep: Any, tmp: Path, liquidator_index: int) -> Keeper:
    """The keeper exactly as `keeper run` builds it, on this chain, signing with a dev account."""
    record = tmp / "deployment.json"
    record.write_text(json.dumps(dep.record()))
    settings = Settings(
        rpc_url=chain.provider.uri,
        chain_id=chain.chain_id,
        deployment=record,
        dev_account_index=liquidator_index,
        confirmations=1,
        state_db=tmp / "state.db",
    )
    w3 = Web3(Web3.HTTPProvider(chain.provider.uri))
    signer = load_signer(settings, chain.chain_id)
    dep_record = load_deployment(record, chain.chain_id)
    return build_keeper(settings, dep_record, w3, signer, log=logging.getLogger("keeper.demo"))


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

    click.secho("\n4. the keeper liquidates (keeper.runner.Keeper in-process, one tick per block)", bold=True)
    usdc.mint(liquidator, 10**13, sender=liquidator)
    start = chain.blocks.head.number
    with tempfile.TemporaryDirectory() as tmp:
        keeper = _keeper(dep, Path(tmp), liquidator_index=1)
        keeper.ensure_allowance()
        for _ in range(10):
            chain.mine(1)
            keeper.tick()
            if all(not ((h := engine.accountHealth(w, s)).debt > 0 and h.health < WAD) for w, s in rows):
                break
        keeper.store.close()
    symbols = {a["token"]: a["symbol"] for a in dep.assets}
    decimals = {a["token"]: a["decimals"] for a in dep.assets}
    liquidations = keeper.engine.events.Liquidated().get_logs(from_block=start)
    bad_debts = keeper.engine.events.BadDebtRealized().get_logs(from_block=start)
    for log in liquidations:
        e = log.args
        click.echo(
            f"  block {log.blockNumber}: {e.owner[:12]} sub {e.subId}: repaid {e.repaid / 10**6:,.2f} USDC, seized "
            f"{e.seized / 10 ** decimals[e.collateral]:,.4f} {symbols[e.collateral]} at {e.discount / WAD:.2%} discount"
        )
    bad = sum(log.args.assets for log in bad_debts)
    click.echo(f"  {len(liquidations)} liquidations by the keeper, {bad / 10**6:,.2f} USDC of bad debt realised")
    click.secho("\n5. after liquidation", bold=True)
    _table(engine, rows)
    click.echo(f"\nvault: totalAssets {vault.totalAssets() / 10**6:,.2f} USDC, reserve {vault.reserve() / 10**6:,.2f}")
