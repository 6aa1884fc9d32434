"""`ape run deploy --network <network> [--config FILE] [--account ALIAS] [--fresh]`

Deploys the whole system from a TOML config and writes deployments/<chainId>.json with addresses, deploy
transactions and blocks, parameters and the ABIs the keeper needs. Re-running against a chain that already holds
the recorded deployment reuses it unless --fresh is given.

Signing: on a local chain (Anvil, chain id 31337) the first test account deploys unless --account is given;
anywhere else --account names an Ape keystore alias (`ape accounts import ALIAS`), never a raw key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from ape import accounts, chain, project
from ape.cli import ConnectedProviderCommand, network_option
from ape.exceptions import AccountsError, ApeException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _system import (
    DEPLOYMENTS,
    DeployConfigError,
    deploy_system,
    existing_deployment,
    load_config,
    write_deployment,
)

LOCAL_CHAIN_IDS = {31337, 1337}
DEFAULT_CONFIG = DEPLOYMENTS / "configs" / "local.toml"


def _fail(message: str) -> None:
    click.secho(f"deploy: {message}", fg="red", err=True)
    sys.exit(2)


@click.command(cls=ConnectedProviderCommand, short_help="Deploy the collateral-keeper contracts")
@network_option()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Deploy config (TOML): assets, feeds, risk parameters, roles.",
)
@click.option("--account", "account_alias", default=None, help="Ape account alias that signs (required off-local).")
@click.option("--fresh", is_flag=True, help="Deploy anew even if deployments/<chainId>.json is live on this chain.")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEPLOYMENTS,
    show_default=True,
    help="Where to write <chainId>.json.",
)
def cli(network: Any, config_path: Path, account_alias: str | None, fresh: bool, out_dir: Path) -> None:
    try:
        cfg = load_config(config_path)
    except DeployConfigError as exc:
        _fail(str(exc))

    chain_id = chain.chain_id
    web3 = chain.provider.web3
    if not fresh:
        try:
            existing = existing_deployment(chain_id, web3, out_dir)
        except DeployConfigError as exc:
            _fail(str(exc))
        if existing is not None:
            engine = existing["contracts"]["MarginEngine"]["address"]
            click.echo(f"deployment for chain {chain_id} is live (MarginEngine {engine}); reusing it.")
            click.echo(f"  record: {out_dir / f'{chain_id}.json'}   (pass --fresh to deploy anew)")
            return

    if account_alias:
        try:
            deployer = accounts.load(account_alias)
        except (AccountsError, IndexError, KeyError):
            _fail(f"no Ape account named {account_alias!r}; create one with `ape accounts import {account_alias}`")
    elif chain_id in LOCAL_CHAIN_IDS:
        deployer = accounts.test_accounts[0]
    else:
        _fail(f"chain {chain_id} is not a local chain: pass --account ALIAS (an Ape keystore account)")

    network_name = getattr(network, "choice", str(network))
    click.echo(f"deploying to chain {chain_id} ({network_name}) from {deployer.address} with {config_path}")
    try:
        dep = deploy_system(project, chain, deployer, cfg, network_name, source=str(config_path))
    except DeployConfigError as exc:
        _fail(str(exc))
    except ApeException as exc:
        _fail(f"a deployment transaction failed: {exc}. Nothing was recorded; fix the cause and re-run.")
    path = write_deployment(dep, out_dir)
    for name, meta in dep.contracts.items():
        click.echo(f"  {name:<16} {meta['address']}  block {meta['block']}")
    click.echo(f"wrote {path}")
