"""Keeper settings: one TOML file plus `KEEPER_*` environment variables. This module is the only reader of the
environment.

Precedence, highest first: keyword overrides passed to `load_settings`, then `KEEPER_<FIELD>` environment variables,
then the TOML file, then the defaults below. Unknown keys in the file and unknown `KEEPER_*` variables are errors, so
a typo never falls back to a default silently. Relative paths in the file are relative to the file's folder; relative
paths from the environment or overrides are relative to the working directory.

Only `load_settings` (and `anvil_from_environment`, for the commands that start an Anvil) read the environment: a
`Settings(...)` built directly, as the drills and the tests do, holds exactly what it was given and the defaults, so a
caller's `KEEPER_*` variables never leak into it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from eth_utils.address import is_checksum_address
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from keeper.core.errors import ConfigError
from keeper.core.networks import is_local_chain
from keeper.optimizer import inputs as opt

ENV_PREFIX = "KEEPER_"
CONFIG_ENV = "KEEPER_CONFIG"  # the config file's path, when --config is not given
DEFAULT_CONFIG = Path("keeper.toml")
PATH_FIELDS = ("deployment", "keystore", "password_file", "state_db", "anvil")
ANVIL_ENV = ENV_PREFIX + "ANVIL"
URL_SCHEMES = ("http", "https", "ws", "wss")


def _check_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() not in URL_SCHEMES:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"must be an http(s):// or ws(s):// URL (got {got})")
    if not host:
        raise ValueError("has no host")
    return value


def _check_readable_file(path: Path) -> Path:
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable by this user: {path}")
    return path


def _check_executable(path: Path) -> Path:
    if not path.exists():
        raise ValueError(f"file not found: {path}; point it at the Anvil binary (make setup links one into .venv/bin)")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ValueError(f"not an executable file: {path}")
    return path


def _check_native_price(value: str) -> str:
    """A listed asset's symbol, or the 0x address of a feed (EIP-55 checksummed when in mixed case)."""
    text = value.strip()
    if text.lower().startswith("0x"):
        digits = text[2:]
        if len(digits) != 40 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError(f"{text!r} is neither an asset symbol nor a 0x address of 20 bytes")
        if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(text):
            raise ValueError(f"{text} has a bad EIP-55 checksum (a typo?); copy the feed address from its source")
        return text
    if not text:
        raise ValueError("is empty; give a listed asset's symbol (e.g. WETH) or a feed address")
    return text


def _check_state_db(path: Path) -> Path:
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path such as {path / 'keeper.db'}")
    folder = path.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot create the folder {folder}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write in {existing}")
    return path


class Settings(BaseSettings):
    """Everything a keeper process needs to know. Build it with `load_settings`; see docs/keeper.md for each field."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", env_ignore_empty=True, frozen=True)

    # --- node and chain
    rpc_url: str = Field(description="JSON-RPC endpoint for reads and, unless submit_url is set, for sending")
    submit_url: str | None = Field(default=None, description="separate endpoint for sending transactions")
    chain_id: int = Field(gt=0, description="the chain the keeper must be on; checked against the node")
    rpc_timeout_s: float = Field(default=10.0, gt=0, description="timeout of one JSON-RPC request")
    deployment: Path = Field(description="deployment record written by `ape run deploy`")
    # --- signing key: keystore + password_file, or dev_account_index / private_key on a local chain
    keystore: Path | None = None
    password_file: Path | None = None
    dev_account_index: int | None = Field(default=None, ge=0, lt=2**31)
    private_key: SecretStr | None = None
    # --- loop
    poll_interval_s: float = Field(default=1.0, gt=0)
    confirmations: int = Field(default=2, ge=0, le=64)
    stale_node_s: float = Field(default=60.0, gt=0, description="alert when the head has not moved for this long")
    # --- transactions
    max_fee_gwei: float | None = Field(
        default=None, gt=0, description="operator ceiling on maxFeePerGas for every transaction; unset: none"
    )
    priority_fee_gwei: float = Field(default=1.5, ge=0)
    replace_after_blocks: int = Field(default=3, ge=1, le=1000)
    # --- strategy
    min_profit_usd: float = Field(default=0.0, ge=0)
    max_repay_usd: float | None = Field(default=None, gt=0)
    low_balance_eth: float = Field(default=0.05, ge=0)
    low_inventory: float = Field(default=1000.0, ge=0, description="warn below this many debt-asset tokens")
    native_price: str | None = Field(
        default=None, description="the native token's price: a listed asset's symbol or a USD feed address"
    )
    # --- opt-in protection (docs/protection.md); needs a deployment with the ProtectionModule
    rebalance_enabled: bool = Field(default=False, description="rebalance owners' sub-accounts that authorised us")
    pre_liquidation_enabled: bool = Field(default=False, description="pre-liquidate opted-in accounts in the band")
    # --- insolvency write-offs (docs/keeper.md): land a certain loss before any lender can redeem ahead of it
    write_off_enabled: bool = Field(default=True, description="writeOff insolvent accounts it does not liquidate")
    # --- risk-parameter updates (run when the key holds RISK_KEEPER_ROLE; docs/risk-model.md)
    optimize_interval_s: float = Field(default=3600.0, ge=0, description="how often to re-optimize; 0 = never")
    # The defaults are the optimizer's own (keeper/optimizer/inputs.py); only the paths differ, on purpose (JOB_PATHS).
    optimize_paths: int = Field(default=opt.JOB_PATHS, ge=opt.MIN_PATHS, le=10_000_000)
    optimize_target_prob: float = Field(default=opt.TARGET_PROB, gt=0, lt=1, description="max P(bad debt) at health 1")
    optimize_shortfall_budget: float = Field(
        default=opt.SHORTFALL_BUDGET, gt=0, lt=1, description="max E[bad debt] per $ of debt"
    )
    optimize_liq_prob: float = Field(default=opt.LIQ_PROB, gt=0, lt=1, description="max P(liquidated | opened at ltv)")
    optimize_delay_s: float = Field(default=opt.DELAY_S, ge=0, description="the keeper's reaction delay assumed")
    optimize_oracle_deviation: float = Field(
        default=opt.ORACLE_DEVIATION, ge=0, lt=1, description="the feeds' deviation threshold"
    )
    optimize_window_s: float = Field(default=opt.WINDOW_S, gt=0, description="feed history used for volatility")
    # At most MAX_ROUNDS: the job reads no more rounds than that.
    optimize_min_rounds: int = Field(
        default=opt.MIN_ROUNDS, ge=3, le=opt.MAX_ROUNDS, description="fewest rounds a volatility comes from"
    )
    optimize_min_history_days: float = Field(
        default=opt.MIN_HISTORY_DAYS, ge=0, description="fewest days of rounds it is measured over"
    )
    optimize_min_sigma: float = Field(
        default=opt.MIN_SIGMA, ge=0, description="a lower measured σ is a frozen feed: refused"
    )
    # --- state, metrics, logs
    state_db: Path = Path("keeper-state.db")
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # --- tools
    anvil: Path | None = Field(default=None, description="the Anvil binary the drills start (KEEPER_ANVIL)")

    def optimizer_inputs(self) -> opt.OptimizerInputs:
        """The inputs `keeper run`'s optimizer job runs with: the `optimize_*` settings, the optimizer's defaults
        for the rest."""
        return opt.OptimizerInputs(
            paths=self.optimize_paths,
            oracle_deviation=self.optimize_oracle_deviation,
            delay_s=self.optimize_delay_s,
            target_prob=self.optimize_target_prob,
            shortfall_budget=self.optimize_shortfall_budget,
            liq_prob=self.optimize_liq_prob,
            window_s=self.optimize_window_s,
            min_rounds=self.optimize_min_rounds,
            min_history_days=self.optimize_min_history_days,
            min_sigma=self.optimize_min_sigma,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The values given and nothing else: load_settings reads the file and the environment itself.
        return (init_settings,)

    @field_validator("rpc_url", "submit_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator(*PATH_FIELDS, mode="before")
    @classmethod
    def _expand_user(cls, value: object) -> object:
        return Path(value).expanduser() if isinstance(value, str | Path) else value

    @field_validator("deployment", "keystore", "password_file")
    @classmethod
    def _readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if info.field_name == "deployment" and not value.exists():
            raise ValueError(
                f"file not found: {value}; deploy with `ape run deploy --network <network>` (it writes "
                "deployments/<chainId>.json) or point deployment at the record"
            )
        return _check_readable_file(value)

    @field_validator("state_db")
    @classmethod
    def _state_db(cls, value: Path) -> Path:
        return _check_state_db(value)

    @field_validator("anvil")
    @classmethod
    def _anvil(cls, value: Path | None) -> Path | None:
        return None if value is None else _check_executable(value)

    @field_validator("native_price")
    @classmethod
    def _native_price(cls, value: str | None) -> str | None:
        return None if value is None else _check_native_price(value)

    @field_validator("private_key")
    @classmethod
    def _key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        digits = value.get_secret_value().strip().removeprefix("0x")
        if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError("must be 32 bytes as 64 hex digits (0x optional)")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        if self.max_fee_gwei is not None and self.priority_fee_gwei > self.max_fee_gwei:
            raise ValueError(
                f"priority_fee_gwei: {self.priority_fee_gwei} is above max_fee_gwei {self.max_fee_gwei}; "
                "the tip must fit under the fee cap"
            )
        kinds = []
        if self.keystore is not None or self.password_file is not None:
            kinds.append("keystore + password_file")
        if self.dev_account_index is not None:
            kinds.append("dev_account_index")
        if self.private_key is not None:
            kinds.append("private_key")
        if len(kinds) > 1:
            raise ValueError(
                f"signing key: set exactly one of keystore + password_file, dev_account_index or "
                f"private_key (got {' and '.join(kinds)})"
            )
        if (self.keystore is None) != (self.password_file is None):
            missing = "password_file" if self.password_file is None else "keystore"
            raise ValueError(
                f"{missing}: required with {'keystore' if missing == 'password_file' else 'password_file'}"
                " (an encrypted keystore needs the file holding its password)"
            )
        local = is_local_chain(self.chain_id)
        if self.dev_account_index is not None and not local:
            raise ValueError(
                f"dev_account_index: dev accounts are for local chains (31337, 1337) only, not chain {self.chain_id}; "
                "use keystore + password_file"
            )
        if self.private_key is not None and not local:
            raise ValueError(
                f"private_key: a raw private key is refused on chain {self.chain_id} (local chains 31337 and 1337 "
                "only); use keystore + password_file"
            )
        return self


# ------------------------------------------------------------------------------------------------- loading


def _field_env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; pass --config PATH or create it from keeper.example.toml"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass --config with a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None


def _from_file(path: Path) -> dict[str, Any]:
    """The file's values, with its relative paths made relative to its folder."""
    values = _read_toml(path)
    base = path.absolute().parent
    for name in PATH_FIELDS:
        value = values.get(name)
        if isinstance(value, str):
            p = Path(value).expanduser()
            values[name] = p if p.is_absolute() else base / p
    return values


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    known = {_field_env(name) for name in Settings.model_fields} | {CONFIG_ENV}
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k.upper() not in known)
    if unknown:
        raise ConfigError(
            f"unknown environment variable {', '.join(unknown)}: not a keeper setting (see docs/keeper.md); "
            "unset it or fix the spelling"
        )
    return dict(EnvSettingsSource(Settings)())


def _describe(err: ErrorDetails, origin: dict[str, str], config: Path | None) -> str:
    field = ".".join(str(part) for part in err["loc"])
    kind = err["type"]
    if kind == "missing":
        where = f"in {config} or " if config is not None else ""
        return f"{field}: required; set it {where}as {_field_env(field)}"
    if kind == "extra_forbidden":
        problem = "unknown setting (a typo? see docs/keeper.md for the list)"
    else:
        problem = err["msg"].removeprefix("Value error, ")
    line = f"{field}: {problem}" if field else problem
    top = str(err["loc"][0]) if err["loc"] else problem.split(":", 1)[0]
    if top in origin:
        line += f" (from {origin[top]})"
    return line


def load_settings(path: Path | None = None, **overrides: object) -> Settings:
    """Read `path` (else $KEEPER_CONFIG, else ./keeper.toml when it exists), apply `KEEPER_*` variables and then
    `overrides`, and validate. Raises ConfigError listing every bad field as `field: problem`."""
    environ = dict(os.environ)
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    file_values = _from_file(path) if path is not None else {}
    env_values = _from_env(environ)
    origin = {name: str(path) for name in file_values}
    origin |= {name: _field_env(name) for name in env_values}
    for name in overrides:
        origin.pop(name, None)
    try:
        return Settings.model_validate({**file_values, **env_values, **overrides})
    except ValidationError as exc:
        lines = [_describe(err, origin, path) for err in exc.errors(include_url=False, include_input=False)]
        source = f"config file {path}" if path is not None else "the settings (no config file)"
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(f"  {line}" for line in lines)) from None


def anvil_from_environment() -> Path | None:
    """The Anvil binary named by KEEPER_ANVIL (validated like the `anvil` setting), or None. `keeper drill` and
    `keeper demo` read nothing else from the environment: the keeper they run is configured by the drill alone."""
    value = os.environ.get(ANVIL_ENV)
    if not value:
        return None
    try:
        return _check_executable(Path(value).expanduser())
    except ValueError as exc:
        raise ConfigError(f"{ANVIL_ENV}: {exc}") from None
