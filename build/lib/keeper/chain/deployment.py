"""The deployment record (`deployments/<chainId>.json`, written by `ape run deploy`), the node connection, and the
start-up checks that the node, the config and the record agree. The keeper never compiles: the protocol's contracts
are built from the ABIs in the record, and the tokens and feeds it reads from the minimal ERC-20 and
AggregatorV3Interface ABIs shipped in this package (keeper/chain/abi/), whatever contracts the deployment uses there."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, Field, ValidationError
from web3 import HTTPProvider, LegacyWebSocketProvider, Web3
from web3.contract import Contract
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from keeper.core.errors import ChainMismatchError, ConfigError, DeploymentError, NodeUnreachableError, redact_url
from keeper.core.networks import is_local_chain

RECORD_FORMAT = 1
REQUIRED_ABIS = ("MarginEngine", "OracleRouter", "Vault", "Lens")
# The standard interfaces the keeper calls on contracts that are not the protocol's (keeper/chain/abi/<name>.json).
STANDARD_ABIS = ("ERC20", "AggregatorV3Interface")
CORE_CONTRACTS = ("MarginEngine", "Vault", "OracleRouter", "Lens")
REDEPLOY = "regenerate it with `ape run deploy`"

T = TypeVar("T")


@dataclass(frozen=True)
class AssetInfo:
    symbol: str
    token: str  # checksum address
    feed: str  # checksum address
    decimals: int


@dataclass(frozen=True)
class NativeSource:
    """Where the chain's native token (what gas is paid in) gets its USD price: a listed asset priced by the router
    like the native token (`asset`, its symbol, and `token`), or an AggregatorV3Interface feed (`feed`)."""

    asset: str | None = None
    token: str | None = None
    feed: str | None = None

    def describe(self) -> str:
        return f"asset {self.asset}" if self.asset else f"feed {self.feed}"


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    engine: str
    vault: str
    router: str
    lens: str
    debt: AssetInfo
    assets: list[AssetInfo]
    abis: dict[str, list[dict[str, Any]]]
    start_block: int = 0  # the engine's deployment block: event scans start here
    source: Path | None = None  # the file it was read from
    protection: str | None = None  # the ProtectionModule; None in records written before it existed
    native: NativeSource | None = None  # the native token's price source; None when the deploy config named none

    def address_of(self, name: str) -> str | None:
        """The address of a deployed contract by its ABI name (MarginEngine, Vault, OracleRouter, Lens,
        ProtectionModule); None when the record has no such contract."""
        return {
            "MarginEngine": self.engine,
            "Vault": self.vault,
            "OracleRouter": self.router,
            "Lens": self.lens,
            "ProtectionModule": self.protection,
        }.get(name)


# The parts of the record the keeper reads; anything else in it is ignored.
class _Contract(BaseModel):
    address: str
    block: int | None = Field(default=None, ge=0)


class _Asset(BaseModel):
    symbol: str
    token: str
    feed: str
    decimals: int = Field(ge=0, le=77)


class _Native(BaseModel):
    asset: str | None = None
    feed: str | None = None


class _Record(BaseModel):
    format: int
    chain_id: int = Field(gt=0)
    contracts: dict[str, _Contract]
    debt_asset: _Asset
    assets: list[_Asset]
    abis: dict[str, list[dict[str, Any]]]
    native: _Native | None = None


def _checksum(path: Path, where: str, value: str) -> str:
    if not Web3.is_address(value):
        raise DeploymentError(f"deployment file {path} is malformed: {where} is not an address; {REDEPLOY}")
    return Web3.to_checksum_address(value)


def _asset(path: Path, where: str, a: _Asset) -> AssetInfo:
    return AssetInfo(
        symbol=a.symbol,
        token=_checksum(path, f"{where}.token", a.token),
        feed=_checksum(path, f"{where}.feed", a.feed),
        decimals=a.decimals,
    )


def load_deployment(path: Path, expected_chain_id: int | None = None) -> Deployment:
    """Read and check a deployment record. DeploymentError when it is missing or malformed, ChainMismatchError when
    it is for another chain than `expected_chain_id`."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeploymentError(
            f"deployment file {path} not found: deploy with `ape run deploy --network <network>` "
            "(it writes deployments/<chainId>.json) or point `deployment` at the record"
        ) from None
    except OSError as exc:
        raise DeploymentError(f"deployment file {path} cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DeploymentError(
            f"deployment file {path} is not valid JSON (line {exc.lineno}: {exc.msg}); {REDEPLOY}"
        ) from None
    except UnicodeDecodeError:
        raise DeploymentError(f"deployment file {path} is not UTF-8 text; {REDEPLOY}") from None
    if not isinstance(raw, dict):
        raise DeploymentError(f"deployment file {path} is not a deployment record (not a JSON object); {REDEPLOY}")
    if raw.get("format") != RECORD_FORMAT:
        raise DeploymentError(
            f"deployment file {path} has format {raw.get('format')!r}, this keeper reads format {RECORD_FORMAT}; "
            f"{REDEPLOY}"
        )
    try:
        rec = _Record.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise DeploymentError(f"deployment file {path} is malformed ({problems}); {REDEPLOY}") from None
    missing = [f"contracts.{n}" for n in CORE_CONTRACTS if n not in rec.contracts]
    missing += [f"abis.{n}" for n in REQUIRED_ABIS if n not in rec.abis]
    if missing:
        raise DeploymentError(f"deployment file {path} is malformed (missing {', '.join(missing)}); {REDEPLOY}")
    if expected_chain_id is not None and rec.chain_id != expected_chain_id:
        raise ChainMismatchError(
            f"deployment file {path} is for chain {rec.chain_id} but chain_id is {expected_chain_id}: point "
            f"`deployment` at the record for chain {expected_chain_id}, or deploy there with `ape run deploy`"
        )
    addr = {n: _checksum(path, f"contracts.{n}.address", rec.contracts[n].address) for n in CORE_CONTRACTS}
    module = rec.contracts.get("ProtectionModule")
    protection = None if module is None else _checksum(path, "contracts.ProtectionModule.address", module.address)
    assets = [_asset(path, f"assets.{i}", a) for i, a in enumerate(rec.assets)]
    native = None
    if rec.native is not None and (rec.native.asset or rec.native.feed):
        if rec.native.asset and rec.native.feed:
            raise DeploymentError(
                f"deployment file {path} is malformed: native has both an asset and a feed; {REDEPLOY}"
            )
        if rec.native.feed:
            native = NativeSource(feed=_checksum(path, "native.feed", rec.native.feed))
        else:
            token = next((a.token for a in assets if a.symbol == rec.native.asset), None)
            if token is None:
                raise DeploymentError(
                    f"deployment file {path} is malformed: native.asset {rec.native.asset} is not a listed asset; "
                    f"{REDEPLOY}"
                )
            native = NativeSource(asset=rec.native.asset, token=token)
    return Deployment(
        chain_id=rec.chain_id,
        engine=addr["MarginEngine"],
        vault=addr["Vault"],
        router=addr["OracleRouter"],
        lens=addr["Lens"],
        debt=_asset(path, "debt_asset", rec.debt_asset),
        assets=assets,
        abis=rec.abis,
        start_block=rec.contracts["MarginEngine"].block or 0,
        source=path,
        protection=protection,
        native=native,
    )


def native_source(setting: str | None, dep: Deployment) -> NativeSource | None:
    """The native token's price source: the `native_price` setting (a listed asset's symbol or a feed address) when
    given, else the deployment record's. ConfigError for a symbol the deployment does not list, and, on a chain that
    is not local, when neither names one (gas could not be priced, so no fee ceiling could be computed)."""
    if setting is not None:
        if setting.lower().startswith("0x"):
            return NativeSource(feed=Web3.to_checksum_address(setting))
        token = next((a.token for a in dep.assets if a.symbol == setting), None)
        if token is None:
            listed = ", ".join(a.symbol for a in dep.assets)
            raise ConfigError(
                f"native_price: {setting} is not an asset of the deployment (it lists {listed}); give one of those "
                "or the address of a USD feed of the native token"
            )
        return NativeSource(asset=setting, token=token)
    if dep.native is None and not is_local_chain(dep.chain_id):
        raise ConfigError(
            f"no price for the native token of chain {dep.chain_id}: the keeper prices gas in USD to bid each "
            f"liquidation up to what it earns, and neither the deployment record {dep.source} (`native`) nor the "
            "native_price setting names one; set native_price to a listed asset priced like the native token "
            "(e.g. WETH) or to a USD feed address of it, or redeploy with a [native] section in the deploy config"
        )
    return dep.native


@cache
def standard_abi(name: str) -> list[dict[str, Any]]:
    """A minimal standard ABI shipped with the package: ERC20 or AggregatorV3Interface."""
    if name not in STANDARD_ABIS:
        raise ValueError(f"no standard ABI {name!r}; there are {', '.join(STANDARD_ABIS)}")
    text = resources.files("keeper.chain").joinpath("abi", f"{name}.json").read_text(encoding="utf-8")
    abi: list[dict[str, Any]] = json.loads(text)
    return abi


def standard_contract(w3: Web3, name: str, address: str) -> Contract:
    """A web3 contract at `address` with the standard ABI `name` (ERC20 or AggregatorV3Interface)."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=standard_abi(name))


def contract(w3: Web3, dep: Deployment, name: str, address: str | None = None) -> Contract:
    """A web3 contract from the record's ABI `name`, at `address` or else at its recorded address."""
    abi = dep.abis.get(name)
    if abi is None:
        raise DeploymentError(f"deployment file {dep.source} has no ABI for {name}; {REDEPLOY}")
    at = address if address is not None else dep.address_of(name)
    if at is None:
        raise ValueError(f"{name} is not a contract of the deployment record; pass its address")
    return w3.eth.contract(address=Web3.to_checksum_address(at), abi=abi)


# ----------------------------------------------------------------------------------------------- the node


def connect(url: str, timeout_s: float = 10.0) -> Web3:
    """A Web3 over HTTP(S) or WS(S) whose requests time out after `timeout_s`, checked to answer eth_chainId.
    NodeUnreachableError (with the URL redacted) when it does not."""
    if urlsplit(url).scheme.lower() in ("ws", "wss"):
        w3 = Web3(LegacyWebSocketProvider(url, websocket_timeout=max(1, math.ceil(timeout_s))))
    else:
        retry = ExceptionRetryConfiguration(
            errors=(requests.ConnectionError, requests.Timeout), retries=2, backoff_factor=0.1
        )
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=retry))
    ask(url, lambda: w3.eth.chain_id, timeout_s)
    return w3


def ask(url: str, call: Callable[[], T], timeout_s: float | None = None) -> T:
    """Run one node request; a transport failure becomes NodeUnreachableError naming the redacted URL."""
    try:
        return call()
    except requests.Timeout:
        reason = f"no answer within {timeout_s:g} s" if timeout_s else "the request timed out"
    except (requests.ConnectionError, ConnectionError):
        reason = "connection failed (nothing listening, DNS failure or network down)"
    except TimeoutError:
        reason = "the request timed out"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    except Exception as exc:  # a web page, a proxy error, a broken websocket: not a JSON-RPC node
        reason = f"not a working JSON-RPC endpoint ({type(exc).__name__})"
    raise NodeUnreachableError(
        f"cannot reach the node at {redact_url(url)}: {reason}; is it running, is rpc_url right?"
    )


class ChainTarget(Protocol):
    """The node and chain the keeper's settings name."""

    @property
    def rpc_url(self) -> str: ...

    @property
    def chain_id(self) -> int: ...

    @property
    def rpc_timeout_s(self) -> float: ...


def check_chain(w3: Web3, settings: ChainTarget, dep: Deployment) -> None:
    """The node is on settings.chain_id, the record is for that chain, and the record's engine has code there."""
    url = settings.rpc_url
    node_chain = ask(url, lambda: w3.eth.chain_id, settings.rpc_timeout_s)
    if node_chain != settings.chain_id:
        raise ChainMismatchError(
            f"the node at {redact_url(url)} is on chain {node_chain} but chain_id is {settings.chain_id}: "
            f"fix chain_id or point rpc_url at a node of chain {settings.chain_id}"
        )
    if dep.chain_id != settings.chain_id:
        raise ChainMismatchError(
            f"deployment file {dep.source} is for chain {dep.chain_id} but chain_id is {settings.chain_id}: point "
            f"`deployment` at the record for chain {settings.chain_id}, or deploy there with `ape run deploy`"
        )
    code = ask(url, lambda: w3.eth.get_code(Web3.to_checksum_address(dep.engine)), settings.rpc_timeout_s)
    if len(code) == 0:
        raise DeploymentError(
            f"no MarginEngine code at {dep.engine} on chain {node_chain}: the deployment file is for another chain "
            "or the node was reset; redeploy with `ape run deploy`"
        )
