"""Deploy the whole collateral-keeper system from a TOML config and record it in deployments/<chainId>.json.

Shared by `ape run deploy` (scripts/deploy.py, which the drills also run) and the test fixtures, so every path
deploys the same way.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from eth_utils import is_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from web3 import Web3

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = ROOT / "deployments"
WAD = 10**18
# The seven keys of an asset's keeper bounds: all or none.
BOUNDS_KEYS = ("ltv_min", "ltv_max", "lt_min", "lt_max", "max_step", "min_interval", "ramp_duration")
MAX_RAMP_DURATION = 365 * 24 * 3600

# The contracts whose ABIs the keeper needs; it never compiles.
KEEPER_ABIS = ("MarginEngine", "OracleRouter", "Vault", "Lens", "ProtectionModule", "MockAggregator", "MockERC20")


class DeployConfigError(Exception):
    """A deploy config that cannot be used; the message names the file, the field and the fix."""


SEED_DEPOSIT_GAS = 250_000


def to_wad(value: float | int | str, decimals: int = 18) -> int:
    """Exact decimal-to-integer conversion (no binary floating point on the way)."""
    return int(Decimal(str(value)) * (10**decimals))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_source(value: str) -> str:
    if value == "mock":
        return value
    if len(value) == 42 and value.startswith("0x"):
        try:
            int(value, 16)
        except ValueError:
            pass
        else:
            return value
    raise ValueError('must be "mock" or a 0x-prefixed 20-byte address')


# "mock" (deploy a mock token or feed) or the address of an existing one.
Source = Annotated[str, AfterValidator(_check_source)]


class FeedSpec(_Strict):
    feed: Source = "mock"
    price: float | None = Field(default=None, gt=0, description="initial USD price of a mock feed")
    feed_decimals: int = Field(default=8, ge=0, le=18)
    max_staleness: int = Field(default=3600, gt=0, lt=2**32)
    min_price: float = Field(ge=0)
    max_price: float = Field(gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> FeedSpec:
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        if self.feed == "mock":
            if self.price is None:
                raise ValueError("price is required for a mock feed")
            if not (self.min_price < self.price < self.max_price):
                raise ValueError("the initial price must lie strictly between min_price and max_price")
        return self


class DebtSpec(FeedSpec):
    symbol: str
    token: Source = "mock"
    decimals: int = Field(default=6, ge=0, le=36)


class AssetSpec(FeedSpec):
    symbol: str
    token: Source = "mock"
    decimals: int = Field(default=18, ge=0, le=36)
    ltv: float = Field(gt=0, lt=1)
    lt: float = Field(gt=0, lt=1)
    max_discount: float = Field(ge=0, le=0.25)
    supply_cap: float = Field(gt=0, description="whole tokens")
    # Bounds of the risk keeper's updates (MarginEngine.setRiskBounds): all seven or none.
    ltv_min: float | None = Field(default=None, ge=0, lt=1)
    ltv_max: float | None = Field(default=None, ge=0, lt=1)
    lt_min: float | None = Field(default=None, ge=0, lt=1)
    lt_max: float | None = Field(default=None, ge=0, lt=1)
    max_step: float | None = Field(default=None, gt=0, lt=1, description="largest change of ltv or lt per update")
    min_interval: int | None = Field(default=None, ge=0, lt=2**32, description="seconds between two updates")
    ramp_duration: int | None = Field(
        default=None, gt=0, le=MAX_RAMP_DURATION, description="seconds over which a lowered lt is reached"
    )

    @model_validator(mode="after")
    def _ratios(self) -> AssetSpec:
        if self.ltv >= self.lt:
            raise ValueError("ltv must be below lt")
        if self.lt * (1 + self.max_discount) >= 1:
            raise ValueError("lt * (1 + max_discount) must be below 1, or a liquidation could lower health")
        return self

    @model_validator(mode="after")
    def _bounds_keys(self) -> AssetSpec:
        given = [k for k in BOUNDS_KEYS if getattr(self, k) is not None]
        if not given:
            return self
        missing = [k for k in BOUNDS_KEYS if k not in given]
        if missing:
            raise ValueError(
                f"risk bounds need all of {', '.join(BOUNDS_KEYS)}; missing: {', '.join(missing)} "
                "(or remove the bounds keys to leave keeper updates disabled for this asset)"
            )
        b = self.bounds()
        assert b is not None
        if not b["ltv_min"] <= self.ltv <= b["ltv_max"]:
            raise ValueError(f"ltv {self.ltv} must lie within [ltv_min, ltv_max] = [{b['ltv_min']}, {b['ltv_max']}]")
        if not b["lt_min"] <= self.lt <= b["lt_max"]:
            raise ValueError(f"lt {self.lt} must lie within [lt_min, lt_max] = [{b['lt_min']}, {b['lt_max']}]")
        if b["lt_max"] * (1 + self.max_discount) >= 1:
            raise ValueError("lt_max * (1 + max_discount) must be below 1, or no keeper update could reach lt_max")
        return self

    def bounds(self) -> dict[str, Any] | None:
        """The keeper bounds as given (fractions and seconds), or None when the asset has none."""
        if self.max_step is None:
            return None
        return {k: getattr(self, k) for k in BOUNDS_KEYS}


class VaultSpec(_Strict):
    name: str = "collateral-keeper vault"
    symbol: str = "ckVAULT"
    base_rate: float = Field(default=0.0, ge=0)
    slope1: float = Field(default=0.04, ge=0)
    slope2: float = Field(default=0.75, ge=0)
    kink: float = Field(default=0.8, gt=0, lt=1)
    reserve_factor: float = Field(default=0.1, ge=0, le=0.5)
    seed_liquidity: float = Field(default=0, ge=0, description="mock debt token only: minted and deposited")


class BorrowSpec(_Strict):
    """A further borrowable asset (`listDebt`): one of the [[asset]]s, lent by a Vault of its own."""

    symbol: str = Field(description="the symbol of a listed [[asset]]")
    min_debt: float = Field(default=0, ge=0, description="whole tokens: the smallest debt a loan of it may leave")
    vault: VaultSpec = VaultSpec()


class RiskSpec(_Strict):
    min_discount: float = Field(default=0.005, ge=0, le=0.05)
    full_close_health: float = Field(default=0.95, ge=0, le=1)
    full_close_debt_usd: float = Field(default=100, ge=0)
    min_debt: float = Field(default=10, ge=0, description="whole debt-asset units")


class ProtectionSpec(_Strict):
    """ProtectionModule bounds: every owner's pre-liquidation opt-in and rebalancer target stays within them."""

    max_pre_threshold: float = Field(default=1.10, gt=1, lt=2**64 / WAD, description="largest pre-threshold health")
    max_discount: float = Field(default=0.03, ge=0, le=0.05, description="largest pre-liquidation discount")
    max_share: float = Field(default=0.5, gt=0, le=1, description="largest share of the debt repaid per call")
    max_target_health: float = Field(default=3.0, gt=1, lt=2**64 / WAD, description="largest rebalancer target")


class SequencerSpec(_Strict):
    feed: str = "none"
    grace_period: int = Field(default=3600, ge=0, lt=2**32)

    @field_validator("feed")
    @classmethod
    def _feed(cls, v: str) -> str:
        return v if v == "none" else _check_source(v)


class NativeSpec(_Strict):
    """Where the keeper gets the chain's native token's USD price, to price gas: a listed asset priced like it
    (`asset`, e.g. WETH on Ethereum) or an AggregatorV3Interface feed answering USD per native token (`feed`)."""

    asset: str | None = None
    feed: str | None = None

    @field_validator("feed")
    @classmethod
    def _feed(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v == "mock" or not _is_address(v):
            raise ValueError("must be a 0x-prefixed 20-byte address")
        return v

    @model_validator(mode="after")
    def _one(self) -> NativeSpec:
        if (self.asset is None) == (self.feed is None):
            raise ValueError("give exactly one of asset (a listed [[asset]] symbol) or feed (a feed address)")
        return self


class RolesSpec(_Strict):
    admin: str = "deployer"
    risk_keeper: str = "none"

    @field_validator("admin")
    @classmethod
    def _admin(cls, v: str) -> str:
        if v == "deployer":
            return v
        try:
            return _check_source(v) if v != "mock" else "invalid"
        except ValueError as exc:
            raise ValueError('must be "deployer" or a 0x-prefixed address') from exc

    @field_validator("risk_keeper")
    @classmethod
    def _risk_keeper(cls, v: str) -> str:
        if v in ("none", "deployer") or (v != "mock" and _is_address(v)):
            return v
        raise ValueError('must be "none", "deployer" or a 0x-prefixed address')


def _is_address(value: str) -> bool:
    try:
        return _check_source(value) == value
    except ValueError:
        return False


class DeployConfig(_Strict):
    debt: DebtSpec
    asset: list[AssetSpec] = Field(min_length=1, max_length=32)
    vault: VaultSpec = VaultSpec()
    risk: RiskSpec = RiskSpec()
    sequencer: SequencerSpec = SequencerSpec()
    roles: RolesSpec = RolesSpec()
    protection: ProtectionSpec = ProtectionSpec()
    native: NativeSpec | None = None
    borrow: list[BorrowSpec] = Field(default_factory=list, max_length=7)

    @model_validator(mode="after")
    def _unique(self) -> DeployConfig:
        symbols = [a.symbol for a in self.asset] + [self.debt.symbol]
        dupes = {s for s in symbols if symbols.count(s) > 1}
        if dupes:
            raise ValueError(f"asset symbols must be unique; repeated: {', '.join(sorted(dupes))}")
        if self.native is not None and self.native.asset is not None:
            listed = [a.symbol for a in self.asset]
            if self.native.asset not in listed:
                raise ValueError(
                    f"native.asset {self.native.asset} is not a listed [[asset]] ({', '.join(listed)}); name one of "
                    "those or give native.feed"
                )
        listed = [a.symbol for a in self.asset]
        borrowed = [b.symbol for b in self.borrow]
        for symbol in borrowed:
            if symbol not in listed:
                raise ValueError(
                    f"[[borrow]] {symbol} is not a listed [[asset]] ({', '.join(listed)}): a further debt asset is "
                    "one of the assets (its token and feed); list it as an [[asset]] first"
                )
            if borrowed.count(symbol) > 1:
                raise ValueError(f"[[borrow]] {symbol} is given twice")
        return self


def load_config(path: Path) -> DeployConfig:
    """Parse and validate a deploy config, raising DeployConfigError with a readable message."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DeployConfigError(f"deploy config {path} does not exist; pass --config with a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DeployConfigError(f"deploy config {path} is not valid TOML: {exc}") from exc
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "<config>") -> DeployConfig:
    try:
        return DeployConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise DeployConfigError(f"deploy config {source} is invalid:\n" + "\n".join(lines)) from exc


# --------------------------------------------------------------------------------------------- pre-flight

# Selectors of the read-only calls the pre-flight makes: ERC-20 `decimals()`, AggregatorV3Interface `decimals()`
# (the same) and `latestRoundData()`.
DECIMALS_SELECTOR = "0x313ce567"
LATEST_ROUND_SELECTOR = "0xfeaf968c"
MAX_FEED_DECIMALS = 18  # OracleRouter.setFeed refuses more
MAX_TOKEN_DECIMALS = 36


def _checksum_problem(value: str) -> str | None:
    """None for an all-lowercase, all-uppercase or correctly EIP-55 checksummed address; else what is wrong."""
    digits = value[2:]
    if digits == digits.lower() or digits == digits.upper() or is_checksum_address(value):
        return None
    return "has a bad EIP-55 checksum (mixed case that is not the address's checksum): a typo? check it at its source"


def _call(web3: Any, address: str, selector: str) -> bytes | None:
    """The return data of a read-only call, or None when it reverts or the node refuses it."""
    try:
        return bytes(web3.eth.call({"to": Web3.to_checksum_address(address), "data": selector}, "latest"))
    except Exception:
        return None


def _uint_word(data: bytes | None, index: int = 0) -> int | None:
    if data is None or len(data) < 32 * (index + 1):
        return None
    return int.from_bytes(data[32 * index : 32 * (index + 1)], "big")


def _int_word(data: bytes | None, index: int) -> int | None:
    raw = _uint_word(data, index)
    return None if raw is None else raw - (1 << 256) if raw >> 255 else raw


def preflight(cfg: DeployConfig, web3: Any, chain_id: int) -> list[str]:
    """Every address of the config checked against the chain before anything is sent: an EIP-55 checksum when it is
    written in mixed case; contract code for tokens and feeds; `decimals()` for tokens; `decimals()` and
    `latestRoundData()` for feeds (a positive answer, inside the asset's bounds, so the router would take it); the
    sequencer feed's `latestRoundData()`. The roles' addresses are only checksummed (they may be accounts). Returns
    every problem found, each as `field address: what is wrong`; empty when all is well."""
    problems: list[str] = []

    def address_ok(field_name: str, value: str) -> bool:
        bad = _checksum_problem(value)
        if bad is not None:
            problems.append(f"{field_name} {value}: {bad}")
            return False
        return True

    def has_code(field_name: str, value: str, what: str) -> bool:
        try:
            code = web3.eth.get_code(Web3.to_checksum_address(value))
        except Exception as exc:
            problems.append(f"{field_name} {value}: cannot read its code ({exc})")
            return False
        if len(code) == 0:
            problems.append(
                f"{field_name} {value}: no contract code at this address on chain {chain_id}; give the address of "
                f'{what} deployed on this chain, or "mock"'
            )
            return False
        return True

    def token(field_name: str, value: str) -> None:
        if value == "mock" or not address_ok(field_name, value) or not has_code(field_name, value, "the ERC-20"):
            return
        decimals = _uint_word(_call(web3, value, DECIMALS_SELECTOR))
        if decimals is None:
            problems.append(f"{field_name} {value}: decimals() cannot be read; is it an ERC-20 token?")
        elif decimals > MAX_TOKEN_DECIMALS:
            problems.append(f"{field_name} {value}: decimals() is {decimals}, above {MAX_TOKEN_DECIMALS}")

    def feed(field_name: str, value: str, bounds: tuple[float, float] | None) -> None:
        what = "the Chainlink AggregatorV3Interface feed"
        if value == "mock" or not address_ok(field_name, value) or not has_code(field_name, value, what):
            return
        decimals = _uint_word(_call(web3, value, DECIMALS_SELECTOR))
        round_data = _call(web3, value, LATEST_ROUND_SELECTOR)
        answer = _int_word(round_data, 1)
        if decimals is None or answer is None:
            missing = " and ".join(n for n, v in (("decimals()", decimals), ("latestRoundData()", answer)) if v is None)
            problems.append(f"{field_name} {value}: {missing} cannot be read; is it an AggregatorV3Interface feed?")
            return
        if bounds is None:
            return
        if decimals > MAX_FEED_DECIMALS:
            problems.append(f"{field_name} {value}: decimals() is {decimals}; the router takes at most 18")
            return
        price = Decimal(answer) / (Decimal(10) ** decimals)
        low, high = bounds
        if answer <= 0:
            problems.append(f"{field_name} {value}: answers {answer}; a price feed must answer a positive price")
        elif not Decimal(str(low)) < price < Decimal(str(high)):
            problems.append(
                f"{field_name} {value}: answers {price} USD, outside (min_price, max_price) = ({low}, {high}); the "
                "router would refuse every price of it: fix the bounds or the feed"
            )

    token("debt.token", cfg.debt.token)
    feed("debt.feed", cfg.debt.feed, (cfg.debt.min_price, cfg.debt.max_price))
    for i, a in enumerate(cfg.asset):
        token(f"asset.{i}.token ({a.symbol})", a.token)
        feed(f"asset.{i}.feed ({a.symbol})", a.feed, (a.min_price, a.max_price))
    if cfg.sequencer.feed not in ("none", "mock"):
        feed("sequencer.feed", cfg.sequencer.feed, None)
    if cfg.native is not None and cfg.native.feed is not None:
        feed("native.feed", cfg.native.feed, (0.0, float("inf")))
    for field_name, value in (("roles.admin", cfg.roles.admin), ("roles.risk_keeper", cfg.roles.risk_keeper)):
        if value.startswith("0x"):
            address_ok(field_name, value)
    return problems


def check_addresses(cfg: DeployConfig, web3: Any, chain_id: int, source: str) -> None:
    """DeployConfigError listing every problem `preflight` finds; nothing has been sent when it is raised."""
    problems = preflight(cfg, web3, chain_id)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise DeployConfigError(
            f"deploy config {source}: {count} with its addresses on chain {chain_id}; nothing was deployed:\n"
            + "\n".join(f"  {p}" for p in problems)
        )


# --------------------------------------------------------------------------------------------- deployment


@dataclass
class Deployment:
    """What was deployed; `record()` is the JSON written to deployments/<chainId>.json."""

    chain_id: int
    network: str
    deployer: str
    contracts: dict[str, dict[str, Any]] = field(default_factory=dict)
    assets: list[dict[str, Any]] = field(default_factory=list)
    debt: dict[str, Any] = field(default_factory=dict)
    sequencer: dict[str, Any] = field(default_factory=dict)
    native: dict[str, Any] | None = None
    borrow: list[dict[str, Any]] = field(default_factory=list)  # the further debt assets, each with its vault
    parameters: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, str | None] = field(default_factory=dict)
    abis: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The deployment record (a deep copy: callers may change it without changing this deployment)."""
        return copy.deepcopy(
            {
                "format": 1,
                "chain_id": self.chain_id,
                "network": self.network,
                "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "deployer": self.deployer,
                "contracts": self.contracts,
                "debt_asset": self.debt,
                "assets": self.assets,
                "sequencer": self.sequencer,
                "native": self.native,
                "borrow": self.borrow,
                "parameters": self.parameters,
                "roles": self.roles,
                "abis": self.abis,
            }
        )


def _deploy(deployer: Any, container: Any, *args: Any) -> Any:
    return deployer.deploy(container, *args)


def _meta(instance: Any, chain: Any) -> dict[str, Any]:
    tx = str(instance.txn_hash) if getattr(instance, "txn_hash", None) else None
    block = chain.provider.web3.eth.get_transaction_receipt(tx)["blockNumber"] if tx else None
    return {"address": instance.address, "tx": tx, "block": block}


def deploy_system(
    project: Any, chain: Any, deployer: Any, cfg: DeployConfig, network: str, source: str = "(in memory)"
) -> Deployment:
    """Deploy tokens/feeds (mocks where asked), router, vault, engine and lens; wire and configure them. Every
    address of the config is checked first (`preflight`): DeployConfigError, with nothing sent, on any problem."""
    check_addresses(cfg, chain.provider.web3, chain.chain_id, source)
    out = Deployment(chain_id=chain.chain_id, network=network, deployer=deployer.address)
    admin = deployer.address if cfg.roles.admin == "deployer" else cfg.roles.admin
    keeper_role = {"none": None, "deployer": deployer.address}.get(cfg.roles.risk_keeper, cfg.roles.risk_keeper)
    contracts = out.contracts

    def token_and_feed(spec: DebtSpec | AssetSpec) -> tuple[str, str, bool, bool]:
        token_is_mock = spec.token == "mock"
        feed_is_mock = spec.feed == "mock"
        if token_is_mock:
            tok = _deploy(deployer, project.MockERC20, f"Mock {spec.symbol}", spec.symbol, spec.decimals)
            contracts[f"token:{spec.symbol}"] = _meta(tok, chain)
            token = tok.address
        else:
            token = spec.token
        if feed_is_mock:
            answer = to_wad(spec.price or 0, spec.feed_decimals)
            feed_c = _deploy(deployer, project.MockAggregator, spec.feed_decimals, answer, f"{spec.symbol} / USD")
            contracts[f"feed:{spec.symbol}"] = _meta(feed_c, chain)
            feed = feed_c.address
        else:
            feed = spec.feed
        return token, feed, token_is_mock, feed_is_mock

    router = _deploy(deployer, project.OracleRouter, deployer.address)
    contracts["OracleRouter"] = _meta(router, chain)

    debt_token, debt_feed, debt_mock, debt_feed_mock = token_and_feed(cfg.debt)
    v = cfg.vault
    rate_model = (to_wad(v.base_rate), to_wad(v.slope1), to_wad(v.slope2), to_wad(v.kink))
    vault = _deploy(
        deployer, project.Vault, debt_token, v.name, v.symbol, deployer.address, rate_model, to_wad(v.reserve_factor)
    )
    contracts["Vault"] = _meta(vault, chain)

    debt_decimals = cfg.debt.decimals if debt_mock else project.MockERC20.at(debt_token).decimals()
    r = cfg.risk
    params = (
        to_wad(r.min_discount),
        to_wad(r.full_close_health),
        to_wad(r.full_close_debt_usd),
        to_wad(r.min_debt, debt_decimals),
    )
    governance = _deploy(deployer, project.EngineGovernance, vault.address, router.address)
    contracts["EngineGovernance"] = _meta(governance, chain)
    engine = _deploy(
        deployer, project.MarginEngine, vault.address, router.address, deployer.address, params, governance.address
    )
    contracts["MarginEngine"] = _meta(engine, chain)
    lens = _deploy(deployer, project.Lens, engine.address)
    contracts["Lens"] = _meta(lens, chain)

    vault.setEngine(engine.address, sender=deployer)
    d = cfg.debt
    router.setFeed(debt_token, debt_feed, d.max_staleness, to_wad(d.min_price), to_wad(d.max_price), sender=deployer)
    out.debt = {
        "symbol": d.symbol,
        "token": debt_token,
        "feed": debt_feed,
        "decimals": debt_decimals,
        "mock_token": debt_mock,
        "mock_feed": debt_feed_mock,
        "max_staleness": d.max_staleness,
        "min_price": d.min_price,
        "max_price": d.max_price,
    }

    for spec in cfg.asset:
        token, feed, tmock, fmock = token_and_feed(spec)
        router.setFeed(token, feed, spec.max_staleness, to_wad(spec.min_price), to_wad(spec.max_price), sender=deployer)
        decimals = spec.decimals if tmock else project.MockERC20.at(token).decimals()
        engine.listAsset(
            token,
            to_wad(spec.ltv),
            to_wad(spec.lt),
            to_wad(spec.max_discount),
            to_wad(spec.supply_cap, decimals),
            sender=deployer,
        )
        bounds = spec.bounds()
        if bounds is not None:
            wads = tuple(to_wad(bounds[k]) for k in ("ltv_min", "ltv_max", "lt_min", "lt_max", "max_step"))
            engine.setRiskBounds(token, (*wads, bounds["min_interval"], bounds["ramp_duration"]), sender=deployer)
        out.assets.append(
            {
                "symbol": spec.symbol,
                "token": token,
                "feed": feed,
                "decimals": decimals,
                "mock_token": tmock,
                "mock_feed": fmock,
                "ltv": spec.ltv,
                "lt": spec.lt,
                "max_discount": spec.max_discount,
                "supply_cap": spec.supply_cap,
                "max_staleness": spec.max_staleness,
                "min_price": spec.min_price,
                "max_price": spec.max_price,
                "bounds": bounds,
            }
        )

    seq = cfg.sequencer
    if seq.feed != "none":
        if seq.feed == "mock":
            now = chain.pending_timestamp - seq.grace_period - 1
            sfeed = _deploy(deployer, project.MockAggregator, 0, 0, "L2 Sequencer Uptime")
            sfeed.setAnswerAt(0, now, now, sender=deployer)
            contracts["feed:sequencer"] = _meta(sfeed, chain)
            seq_addr = sfeed.address
        else:
            seq_addr = seq.feed
        router.setSequencerFeed(seq_addr, seq.grace_period, sender=deployer)
        out.sequencer = {"feed": seq_addr, "grace_period": seq.grace_period}

    if v.seed_liquidity > 0:
        if not debt_mock:
            raise DeployConfigError("vault.seed_liquidity needs a mock debt token; fund a real vault by depositing")
        amount = to_wad(v.seed_liquidity, debt_decimals)
        debt_c = project.MockERC20.at(debt_token)
        debt_c.mint(deployer.address, amount, sender=deployer)
        debt_c.approve(vault.address, amount, sender=deployer)
        # An explicit limit: the first deposit accrues interest only if a second has passed since the vault's last
        # accrual, so an estimate made in the same second as deployment can fall a few thousand gas short.
        vault.deposit(amount, deployer.address, sender=deployer, gas=SEED_DEPOSIT_GAS)

    for b in cfg.borrow:
        listed = next(a for a in out.assets if a.get("symbol") == b.symbol)
        bv = b.vault
        model = (to_wad(bv.base_rate), to_wad(bv.slope1), to_wad(bv.slope2), to_wad(bv.kink))
        name = bv.name if "name" in bv.model_fields_set else f"ck {b.symbol}"
        symbol = bv.symbol if "symbol" in bv.model_fields_set else f"ck{b.symbol}"
        further = _deploy(
            deployer, project.Vault, listed["token"], name, symbol, deployer.address, model, to_wad(bv.reserve_factor)
        )
        contracts[f"Vault:{b.symbol}"] = _meta(further, chain)
        further.setEngine(engine.address, sender=deployer)
        engine.listDebt(further.address, to_wad(b.min_debt, listed["decimals"]), sender=deployer)
        if bv.seed_liquidity > 0:
            if not listed["mock_token"]:
                raise DeployConfigError(f"[[borrow]] {b.symbol}: vault.seed_liquidity needs a mock token")
            amount = to_wad(bv.seed_liquidity, listed["decimals"])
            token_c = project.MockERC20.at(listed["token"])
            token_c.mint(deployer.address, amount, sender=deployer)
            token_c.approve(further.address, amount, sender=deployer)
            further.deposit(amount, deployer.address, sender=deployer, gas=SEED_DEPOSIT_GAS)
        out.borrow.append(
            {"symbol": b.symbol, "token": listed["token"], "vault": further.address, "min_debt": b.min_debt}
        )

    if keeper_role is not None:
        engine.grantRole(engine.RISK_KEEPER_ROLE(), keeper_role, sender=deployer)

    # The protection module last, so that every other contract keeps the address it had before the module existed.
    pc = cfg.protection
    module = _deploy(deployer, project.ProtectionModule, engine.address, router.address, deployer.address)
    contracts["ProtectionModule"] = _meta(module, chain)
    engine.setProtectionModule(module.address, sender=deployer)
    module.setPreLiquidationBounds(
        to_wad(pc.max_pre_threshold), to_wad(pc.max_discount), to_wad(pc.max_share), sender=deployer
    )
    module.setMaxTargetHealth(to_wad(pc.max_target_health), sender=deployer)

    if admin != deployer.address:
        role = b"\x00" * 32
        further_vaults = [project.Vault.at(b["vault"]) for b in out.borrow]
        for c in (router, vault, engine, module, *further_vaults):
            c.grantRole(role, admin, sender=deployer)
            c.renounceRole(role, deployer.address, sender=deployer)

    if cfg.native is not None:
        out.native = {"asset": cfg.native.asset} if cfg.native.asset else {"feed": cfg.native.feed}
    out.parameters = {"risk": r.model_dump(), "vault": v.model_dump(), "protection": pc.model_dump()}
    out.roles = {"admin": admin, "risk_keeper": keeper_role}
    out.abis = {name: [abi.model_dump(mode="json") for abi in project[name].contract_type.abi] for name in KEEPER_ABIS}
    return out


def deployment_path(chain_id: int, directory: Path = DEPLOYMENTS) -> Path:
    return directory / f"{chain_id}.json"


def write_deployment(dep: Deployment, directory: Path = DEPLOYMENTS) -> Path:
    """Write atomically: a crash mid-write never leaves a half-written deployment file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = deployment_path(dep.chain_id, directory)
    text = json.dumps(dep.record(), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{dep.chain_id}.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def existing_deployment(chain_id: int, web3: Any, directory: Path = DEPLOYMENTS) -> dict[str, Any] | None:
    """The recorded deployment for this chain if its engine still has code there, else None."""
    path = deployment_path(chain_id, directory)
    if not path.exists():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        engine = record["contracts"]["MarginEngine"]["address"]
    except (ValueError, KeyError) as exc:
        raise DeployConfigError(f"{path} is not a deployment record ({exc}); move it away or pass --fresh") from exc
    if len(web3.eth.get_code(engine)) == 0:
        return None
    return record
