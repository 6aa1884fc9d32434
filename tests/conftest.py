"""Shared fixtures: the whole system deployed once per session on a real Anvil (ape-foundry), exactly as
`ape run deploy` deploys it; ape reverts chain state around every test."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ape import networks
from ape.exceptions import ContractLogicError, CustomError
from hexbytes import HexBytes

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ck_system", ROOT / "scripts" / "_system.py")
assert _spec is not None
assert _spec.loader is not None
ck_system = importlib.util.module_from_spec(_spec)
sys.modules["ck_system"] = ck_system
_spec.loader.exec_module(ck_system)

WAD = 10**18
RAY = 10**27
MAX_UINT = 2**256 - 1

# The test market: a 6-decimal stablecoin debt asset and three collaterals with different decimals.
TEST_CONFIG: dict[str, Any] = {
    "debt": {
        "symbol": "USDC",
        "decimals": 6,
        "price": 1.0,
        "feed_decimals": 8,
        "max_staleness": 86400,
        "min_price": 0.5,
        "max_price": 2.0,
    },
    "asset": [
        {
            "symbol": "WETH",
            "decimals": 18,
            "price": 2000,
            "feed_decimals": 8,
            "max_staleness": 3600,
            "min_price": 1,
            "max_price": 1_000_000,
            "ltv": 0.80,
            "lt": 0.85,
            "max_discount": 0.10,
            "supply_cap": 1_000_000,
        },
        {
            "symbol": "WBTC",
            "decimals": 8,
            "price": 60000,
            "feed_decimals": 8,
            "max_staleness": 3600,
            "min_price": 100,
            "max_price": 10_000_000,
            "ltv": 0.75,
            "lt": 0.80,
            "max_discount": 0.10,
            "supply_cap": 100_000,
        },
        {
            "symbol": "LINK",
            "decimals": 18,
            "price": 15,
            "feed_decimals": 18,
            "max_staleness": 3600,
            "min_price": 0.01,
            "max_price": 10_000,
            "ltv": 0.60,
            "lt": 0.70,
            "max_discount": 0.12,
            "supply_cap": 10_000_000,
        },
    ],
    "vault": {
        "name": "ck USDC",
        "symbol": "ckUSDC",
        "base_rate": 0.0,
        "slope1": 0.04,
        "slope2": 0.75,
        "kink": 0.8,
        "reserve_factor": 0.1,
        "seed_liquidity": 0,
    },
    "risk": {"min_discount": 0.005, "full_close_health": 0.95, "full_close_debt_usd": 100, "min_debt": 10},
}


@dataclass
class System:
    """Handles to the deployed contracts. Token and feed lookups are by symbol."""

    router: Any
    vault: Any
    engine: Any
    lens: Any
    usdc: Any
    tokens: dict[str, Any]
    feeds: dict[str, Any]
    admin: Any
    deployment: Any
    protection: Any

    @property
    def weth(self) -> Any:
        return self.tokens["WETH"]

    @property
    def wbtc(self) -> Any:
        return self.tokens["WBTC"]

    @property
    def link(self) -> Any:
        return self.tokens["LINK"]

    def set_price(self, symbol: str, usd: float | int, sender: Any | None = None) -> None:
        """Push a new answer (with the feed's decimals) to a mock feed."""
        feed = self.feeds[symbol]
        feed.setAnswer(ck_system.to_wad(usd, feed.decimals()), sender=sender or self.admin)


@pytest.fixture(scope="session")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def lender(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def alice(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def bob(accounts):
    return accounts[3]


@pytest.fixture(scope="session")
def liquidator(accounts):
    return accounts[4]


@pytest.fixture(scope="session")
def stranger(accounts):
    return accounts[5]


def deploy_test_system(project: Any, chain: Any, admin: Any, label: str = "test") -> System:
    """Deploy TEST_CONFIG with the deploy library, exactly as `ape run deploy` would, and wrap the handles.
    Shared by the fixtures and benchmarks/gas.py."""
    dep = ck_system.deploy_system(project, chain, admin, ck_system.parse_config(TEST_CONFIG), label)
    tokens = {a["symbol"]: project.MockERC20.at(a["token"]) for a in dep.assets}
    feeds = {a["symbol"]: project.MockAggregator.at(a["feed"]) for a in dep.assets}
    feeds["USDC"] = project.MockAggregator.at(dep.debt["feed"])
    return System(
        router=project.OracleRouter.at(dep.contracts["OracleRouter"]["address"]),
        vault=project.Vault.at(dep.contracts["Vault"]["address"]),
        engine=project.MarginEngine.at(dep.contracts["MarginEngine"]["address"]),
        lens=project.Lens.at(dep.contracts["Lens"]["address"]),
        usdc=project.MockERC20.at(dep.debt["token"]),
        tokens=tokens,
        feeds=feeds,
        admin=admin,
        deployment=dep,
        protection=project.ProtectionModule.at(dep.contracts["ProtectionModule"]["address"]),
    )


@pytest.fixture(scope="session")
def system(project, chain, admin, lender) -> System:
    sys_ = deploy_test_system(project, chain, admin)
    # A lender provides 10M USDC of liquidity.
    amount = 10_000_000 * 10**6
    sys_.usdc.mint(lender, amount, sender=lender)
    sys_.usdc.approve(sys_.vault, MAX_UINT, sender=lender)
    sys_.vault.deposit(amount, lender, sender=lender)
    return sys_


def fund(system: System, who: Any, symbol: str, amount: int) -> None:
    """Mint `amount` units of a mock token to `who` and approve the engine for everything."""
    token = system.usdc if symbol == "USDC" else system.tokens[symbol]
    token.mint(who, amount, sender=who)
    token.approve(system.engine, MAX_UINT, sender=who)


def open_position(system: System, who: Any, sub_id: int, collateral: dict[str, int], borrow: int = 0) -> None:
    """Deposit each collateral (in token units) into (who, sub_id) and borrow `borrow` USDC units."""
    for symbol, amount in collateral.items():
        fund(system, who, symbol, amount)
        system.engine.deposit(who, sub_id, system.tokens[symbol], amount, sender=who)
    if borrow:
        system.engine.borrow(sub_id, borrow, who, sender=who)


# ------------------------------------------------------------------------------------ exact revert checks
# ape.reverts(SomeError) accepts ANY revert it cannot decode (view calls, errors raised by a contract the callee
# calls), so every test asserts reverts through `reverts_with`, which decodes the raw data itself.


def norm_arg(value: Any) -> Any:
    """Accounts and contracts compare as their checksummed address, like ape decodes them."""
    return str(value.address) if hasattr(value, "address") else value


def _revert_data(message: str) -> HexBytes:
    """The raw revert data behind an error ape could not decode: "0x<selector><args>" from a transaction,
    "custom error 0x<selector>: <args>" from a call, or, for a bare selector that happens to be valid UTF-8,
    the node's text rendering of those bytes."""
    text = message.removeprefix("custom error ").replace(": ", "")
    if text.startswith("0x"):
        return HexBytes(text)
    return HexBytes(message.encode("utf-8"))


@contextmanager
def reverts_with(error: Any, **inputs: Any) -> Iterator[None]:
    """Expect a revert with exactly custom error `error` and exactly `inputs`. An error raised by a contract the
    engine calls (router, vault) is decoded with the ABI of the contract `error` belongs to."""
    with pytest.raises(ContractLogicError) as info:
        yield
    exc = info.value
    if not isinstance(exc, CustomError):
        data = _revert_data(str(exc.revert_message))
        decoded = networks.provider.network.ecosystem.decode_custom_error(data, error.contract.address)
        assert decoded is not None, f"undecodable revert {exc.revert_message!r}, expected {error.__name__}"
        exc = decoded
    assert exc.abi.signature == error.abi.signature, f"reverted with {exc.abi.signature}"
    assert dict(exc.inputs) == {k: norm_arg(v) for k, v in inputs.items()}


# ------------------------------------------------------------------------------------ raw ABI helpers
# For the campaigns that talk JSON-RPC directly (invariants, differential) instead of through ape.


def abi_type(param: dict[str, Any]) -> str:
    """The canonical ABI type of one ABI parameter, tuples expanded: `(address,uint256)[]`."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def plain(value: Any) -> Any:
    """Decoded ABI values in comparable form: addresses lower-case, sequences as tuples."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list | tuple):
        return tuple(plain(v) for v in value)
    return value
