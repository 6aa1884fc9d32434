"""Shared by the debt-asset test modules (test_vault_hooks, test_vault_fees, test_vault_limits): a system deployed
by the deploy library over any debt token, and revert helpers. Not a test module."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ape import networks
from ape.exceptions import ContractLogicError, CustomError
from conftest import TEST_CONFIG, WAD, System, ck_system, reverts_with
from hexbytes import HexBytes

USDC = 10**6  # the debt tokens here have 6 decimals, like the fixture's USDC
OFFSET = 10**6  # virtual shares
DAY = 24 * 3600
YEAR = 365 * DAY
MAX_BOOKED = 2**127  # IVault: idle + totalDebt never exceed this (documented bound)
MAX_INDEX = 2**128 - 1  # IVault: the borrow index saturates here (documented bound)
FLAT_MAX_RATE = ((10 * WAD, 0, 0, 8 * 10**17), 10**17)  # 1,000 %/yr at any utilisation: the largest rate allowed
ZERO_RATE = ((0, 0, 0, 8 * 10**17), 10**17)


# ---------------------------------------------------------------- systems over a misbehaving debt token


def deploy_over(project: Any, chain: Any, admin: Any, token: Any, label: str) -> System:
    """TEST_CONFIG deployed by the deploy library with `token` as the debt asset."""
    raw = copy.deepcopy(TEST_CONFIG)
    raw["debt"]["token"] = token.address
    dep = ck_system.deploy_system(project, chain, admin, ck_system.parse_config(raw), label)
    feeds = {a["symbol"]: project.MockAggregator.at(a["feed"]) for a in dep.assets}
    feeds["USDC"] = project.MockAggregator.at(dep.debt["feed"])
    return System(
        router=project.OracleRouter.at(dep.contracts["OracleRouter"]["address"]),
        vault=project.Vault.at(dep.contracts["Vault"]["address"]),
        engine=project.MarginEngine.at(dep.contracts["MarginEngine"]["address"]),
        lens=project.Lens.at(dep.contracts["Lens"]["address"]),
        usdc=token,
        tokens={a["symbol"]: project.MockERC20.at(a["token"]) for a in dep.assets},
        feeds=feeds,
        admin=admin,
        deployment=dep,
        protection=project.ProtectionModule.at(dep.contracts["ProtectionModule"]["address"]),
    )


def freeze(chain: Any) -> None:
    """The next block reuses the head's timestamp, so nothing accrues before the next transaction."""
    chain.pending_timestamp = chain.blocks.head.timestamp


def refresh_prices(system: System, chain: Any, weth_usd: int) -> None:
    """Fresh answers at the head's timestamp (after a long time skip every feed is stale)."""
    for symbol, usd in (("WETH", weth_usd), ("WBTC", 60_000), ("LINK", 15), ("USDC", 1)):
        freeze(chain)
        system.set_price(symbol, usd)


def caught(action: Callable[[], Any]) -> ContractLogicError | None:
    """Run `action`; return the revert it raised, or None."""
    try:
        action()
    except ContractLogicError as exc:
        return exc
    return None


def error_name(exc: ContractLogicError, contract: Any) -> str:
    """The name of the custom error `exc` carries, decoded with `contract`'s ABI."""
    if isinstance(exc, CustomError):
        return str(exc.abi.name)
    text = str(exc.revert_message)
    data = HexBytes(text.removeprefix("custom error ").replace(": ", ""))
    decoded = networks.provider.network.ecosystem.decode_custom_error(data, contract.address)
    return str(decoded.abi.name) if decoded is not None else text


def assert_reverted(exc: ContractLogicError | None, error: Any, **inputs: Any) -> None:
    """`exc` is exactly `error(**inputs)` (decoded as conftest.reverts_with does)."""
    with reverts_with(error, **inputs):
        if exc is not None:
            raise exc


def claim(vault: Any, who: Any) -> int:
    return vault.convertToAssets(vault.balanceOf(who))


def books(system: System) -> tuple[int, ...]:
    """Everything a vault operation can move, the other lender's claim first."""
    v, t = system.vault, system.usdc
    return (v.idle(), v.totalScaledDebt(), v.reserve(), v.totalSupply(), v.totalAssets(), t.balanceOf(v))
