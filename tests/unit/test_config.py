"""Keeper settings, deployment records and signing keys: pure tests, no chain."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from keeper.chain.deployment import REQUIRED_ABIS, load_deployment
from keeper.chain.signer import load_signer
from keeper.core.errors import ChainMismatchError, ConfigError, DeploymentError, SignerError, redact_url
from keeper.engine.settings import Settings, anvil_from_environment, load_settings

ROOT = Path(__file__).resolve().parents[2]
# A well-known throw-away key (Anvil account 9); never a real one.
RAW_KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"
RAW_KEY_ADDRESS = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
ANVIL_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KEEPER_* variable from the caller's shell, and no ./keeper.toml, leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("KEEPER_"):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def toml_value(value: Any) -> str:
    return (
        str(value).lower() if isinstance(value, bool) else json.dumps(str(value) if isinstance(value, Path) else value)
    )


def write_config(folder: Path, name: str = "keeper.toml", **values: Any) -> Path:
    """A config with a local Anvil, a deployment file that exists and dev account 0; `values` change or add keys
    (None removes one)."""
    dep = folder / "deployment.json"
    if not dep.exists():
        dep.write_text("{}")
    base: dict[str, Any] = {
        "rpc_url": "http://127.0.0.1:8545",
        "chain_id": 31337,
        "deployment": "deployment.json",
        "dev_account_index": 0,
        "state_db": "state/keeper.db",
    }
    base.update(values)
    path = folder / name
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in base.items() if v is not None))
    return path


def config_error(path: Path, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, **overrides)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ loading


def test_minimal_config_loads_with_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path))
    assert s.rpc_url == "http://127.0.0.1:8545"
    assert s.chain_id == 31337
    assert s.deployment == tmp_path / "deployment.json"  # not relative to the working directory
    assert s.state_db == tmp_path / "state" / "keeper.db"
    assert s.dev_account_index == 0
    assert (s.poll_interval_s, s.confirmations, s.replace_after_blocks) == (1.0, 2, 3)
    assert (s.log_format, s.log_level, s.metrics_port, s.submit_url) == ("text", "info", None, None)
    assert s.max_fee_gwei is None  # no fixed fee ceiling: each liquidation is bounded by its own economics
    assert (s.anvil, s.native_price, s.low_inventory) == (None, None, 1000.0)


def test_default_file_is_keeper_toml_in_the_working_directory() -> None:
    write_config(Path.cwd(), chain_id=1337)
    assert load_settings().chain_id == 1337


def test_keeper_config_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, name="other.toml", chain_id=1337)
    monkeypatch.setenv("KEEPER_CONFIG", str(path))
    assert load_settings().chain_id == 1337


def test_environment_alone_is_enough_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dep.json").write_text("{}")
    monkeypatch.setenv("KEEPER_RPC_URL", "ws://127.0.0.1:8545")
    monkeypatch.setenv("KEEPER_CHAIN_ID", "31337")
    monkeypatch.setenv("KEEPER_DEPLOYMENT", str(tmp_path / "dep.json"))
    s = load_settings()
    assert (s.rpc_url, s.chain_id, s.deployment) == ("ws://127.0.0.1:8545", 31337, tmp_path / "dep.json")


def test_environment_wins_over_the_file_and_overrides_win_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, confirmations=5, poll_interval_s=2.0, log_format="text")
    monkeypatch.setenv("KEEPER_CONFIRMATIONS", "7")
    monkeypatch.setenv("KEEPER_LOG_FORMAT", "json")
    s = load_settings(path)
    assert (s.confirmations, s.log_format, s.poll_interval_s) == (7, "json", 2.0)
    assert load_settings(path, confirmations=1).confirmations == 1


def test_empty_environment_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_METRICS_PORT", "")
    assert load_settings(write_config(tmp_path, metrics_port=9100)).metrics_port == 9100


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_CONFIRMATIONS", "65")
    msg = config_error(write_config(tmp_path))
    assert "confirmations: Input should be less than or equal to 64 (from KEEPER_CONFIRMATIONS)" in msg


def test_unknown_environment_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_RPC_ULR", "http://x")
    msg = config_error(write_config(tmp_path))
    assert msg.startswith("unknown environment variable KEEPER_RPC_ULR: not a keeper setting")


HOSTILE_ENV = {
    "KEEPER_RPC_URL": "http://10.255.255.1:1",
    "KEEPER_CHAIN_ID": "1337",
    "KEEPER_MIN_PROFIT_USD": "1000000000",
    "KEEPER_MAX_FEE_GWEI": "0.001",
    "KEEPER_PRIORITY_FEE_GWEI": "0.0001",
    "KEEPER_CONFIRMATIONS": "64",
    "KEEPER_LOG_LEVEL": "error",
    "KEEPER_STATE_DB": "/nonexistent/x.db",
}


def test_settings_built_directly_ignore_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the drills and the tests build: `Settings(...)` holds what it was given and the defaults, whatever
    KEEPER_* variables the caller's shell has."""
    (tmp_path / "dep.json").write_text("{}")
    given = {"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337, "deployment": tmp_path / "dep.json"}
    clean = Settings(**given, dev_account_index=1)
    for name, value in HOSTILE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEEPER_NOT_A_SETTING", "1")
    hostile = Settings(**given, dev_account_index=1)
    assert hostile == clean
    assert (hostile.min_profit_usd, hostile.max_fee_gwei, hostile.confirmations) == (0.0, None, 2)
    # load_settings is the one way that reads the environment, and it still does.
    monkeypatch.delenv("KEEPER_NOT_A_SETTING")
    monkeypatch.delenv("KEEPER_STATE_DB")
    loaded = load_settings(write_config(tmp_path))
    assert (loaded.chain_id, loaded.min_profit_usd, loaded.confirmations) == (1337, 1e9, 64)


def test_keeper_anvil_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KEEPER_ANVIL, which docs/keeper.md tells users to set for the drills, is accepted by the settings every
    command loads, checked to be an executable, and read on its own by the commands that start an Anvil."""
    binary = tmp_path / "my-anvil"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("KEEPER_ANVIL", str(binary))
    assert load_settings(write_config(tmp_path)).anvil == binary
    assert anvil_from_environment() == binary
    (tmp_path / "plain").write_text("")
    monkeypatch.setenv("KEEPER_ANVIL", str(tmp_path / "plain"))
    assert f"anvil: not an executable file: {tmp_path / 'plain'} (from KEEPER_ANVIL)" in config_error(
        write_config(tmp_path)
    )
    with pytest.raises(ConfigError, match=r"^KEEPER_ANVIL: not an executable file"):
        anvil_from_environment()
    monkeypatch.delenv("KEEPER_ANVIL")
    assert anvil_from_environment() is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0x5f4ec3df9cbd43714fe2740f5e3616155c5b8419", None),
        ("0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419", None),
        ("0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8418", "bad EIP-55 checksum"),
        ("0x1234", "neither an asset symbol nor a 0x address"),
        ("WETH", None),
    ],
)
def test_native_price_setting(tmp_path: Path, value: str, fragment: str | None) -> None:
    path = write_config(tmp_path, native_price=value)
    if fragment is None:
        assert load_settings(path).native_price == value
    else:
        assert fragment in config_error(path)


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, confirmation=3)
    assert f"confirmation: unknown setting (a typo? see docs/keeper.md for the list) (from {path})" in config_error(
        path
    )


def test_missing_required_field_says_where_to_set_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, rpc_url=None)
    assert f"rpc_url: required; set it in {path} or as KEEPER_RPC_URL" in config_error(path)


def test_missing_file_and_invalid_toml_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert config_error(missing) == (
        f"config file {missing} not found; pass --config PATH or create it from keeper.example.toml"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('rpc_url = "http://x"\nchain_id = \n')
    msg = config_error(bad)
    assert msg.startswith(f"config file {bad} is not valid TOML: ")
    assert "line 2" in msg


def test_every_bad_field_is_listed_without_pydantic_noise(tmp_path: Path) -> None:
    path = write_config(tmp_path, chain_id=0, log_format="xml", metrics_port=70000)
    msg = config_error(path)
    lines = msg.splitlines()
    assert lines[0] == f"config file {path} is invalid:"
    assert lines[1:] == [
        f"  chain_id: Input should be greater than 0 (from {path})",
        f"  metrics_port: Input should be less than or equal to 65535 (from {path})",
        f"  log_format: Input should be 'text' or 'json' (from {path})",
    ]
    assert "pydantic" not in msg
    assert "errors.pydantic.dev" not in msg


RULES = [
    ("rpc_url", "ftp://127.0.0.1", "rpc_url: must be an http(s):// or ws(s):// URL (got scheme 'ftp')"),
    ("rpc_url", "http://", "rpc_url: has no host"),
    ("submit_url", "relay.example:443", "submit_url: must be an http(s):// or ws(s):// URL"),
    ("chain_id", -1, "chain_id: Input should be greater than 0"),
    ("confirmations", -1, "confirmations: Input should be greater than or equal to 0"),
    ("confirmations", 65, "confirmations: Input should be less than or equal to 64"),
    ("poll_interval_s", 0, "poll_interval_s: Input should be greater than 0"),
    ("max_fee_gwei", 0, "max_fee_gwei: Input should be greater than 0"),
    ("priority_fee_gwei", -1, "priority_fee_gwei: Input should be greater than or equal to 0"),
    ("metrics_port", 0, "metrics_port: Input should be greater than or equal to 1"),
    ("metrics_port", 65536, "metrics_port: Input should be less than or equal to 65535"),
    ("log_format", "xml", "log_format: Input should be 'text' or 'json'"),
    ("replace_after_blocks", 0, "replace_after_blocks: Input should be greater than or equal to 1"),
    ("stale_node_s", 0, "stale_node_s: Input should be greater than 0"),
    ("max_repay_usd", 0, "max_repay_usd: Input should be greater than 0"),
    ("dev_account_index", -1, "dev_account_index: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), RULES, ids=[f"{r[0]}={r[1]}" for r in RULES])
def test_validation_rule(tmp_path: Path, field: str, value: Any, fragment: str) -> None:
    assert fragment in config_error(write_config(tmp_path, **{field: value}))


GOOD_EDGES = [
    ("rpc_url", "wss://node.example/v3/abc"),
    ("submit_url", "https://relay.example"),
    ("confirmations", 0),
    ("confirmations", 64),
    ("metrics_port", 1),
    ("metrics_port", 65535),
    ("log_format", "json"),
    ("priority_fee_gwei", 5000.0),  # any tip when no fee ceiling is set
]


@pytest.mark.parametrize(("field", "value"), GOOD_EDGES, ids=[f"{f}={v}" for f, v in GOOD_EDGES])
def test_edge_values_are_accepted(tmp_path: Path, field: str, value: Any) -> None:
    assert getattr(load_settings(write_config(tmp_path, **{field: value})), field) == value


def test_priority_fee_must_fit_under_the_cap(tmp_path: Path) -> None:
    msg = config_error(write_config(tmp_path, max_fee_gwei=2.0, priority_fee_gwei=3.0))
    assert "priority_fee_gwei: 3.0 is above max_fee_gwei 2.0; the tip must fit under the fee cap" in msg


def test_files_must_exist_and_be_files(tmp_path: Path) -> None:
    dep = tmp_path / "deployments" / "5.json"
    assert f"deployment: file not found: {dep}; deploy with `ape run deploy" in config_error(
        write_config(tmp_path, deployment="deployments/5.json")
    )
    assert f"deployment: not a regular file: {tmp_path}" in config_error(write_config(tmp_path, deployment="."))
    (tmp_path / "pw").write_text("x")
    msg = config_error(write_config(tmp_path, dev_account_index=None, keystore="ks.json", password_file="pw"))
    assert f"keystore: file not found: {tmp_path / 'ks.json'}" in msg
    (tmp_path / "ks.json").write_text("{}")
    msg = config_error(write_config(tmp_path, dev_account_index=None, keystore="ks.json", password_file="nopw"))
    assert f"password_file: file not found: {tmp_path / 'nopw'}" in msg


def test_state_db_folder_must_exist_or_be_creatable(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, state_db="a/b/c/keeper.db"))
    assert s.state_db == tmp_path / "a/b/c/keeper.db"
    assert not (tmp_path / "a").exists()  # checking creates nothing
    (tmp_path / "blocker").write_text("a file, not a folder")
    msg = config_error(write_config(tmp_path, state_db="blocker/sub/keeper.db"))
    assert (
        f"state_db: cannot create the folder {tmp_path / 'blocker/sub'}: {tmp_path / 'blocker'} is not a directory"
        in (msg)
    )
    msg = config_error(write_config(tmp_path, state_db="."))
    assert f"state_db: {tmp_path} is a directory; give a file path such as" in msg


# ------------------------------------------------------------------------------------------- signer rules


def make_keystore(folder: Path, password: str = "correct horse", key: str = RAW_KEY) -> tuple[Path, Path]:
    ks = folder / "keystore.json"
    # scrypt with a small cost so the test stays fast; the format is the one geth and `ape accounts` write.
    ks.write_text(json.dumps(Account.encrypt(key, password, kdf="scrypt", iterations=2**10)))
    pw = folder / "password.txt"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    return ks, pw


def test_exactly_one_signing_key(tmp_path: Path) -> None:
    ks, pw = make_keystore(tmp_path)
    msg = config_error(write_config(tmp_path, keystore=ks, password_file=pw))  # and dev_account_index = 0
    assert (
        "signing key: set exactly one of keystore + password_file, dev_account_index or private_key "
        "(got keystore + password_file and dev_account_index)"
    ) in msg
    msg = config_error(write_config(tmp_path, private_key=RAW_KEY))
    assert "(got dev_account_index and private_key)" in msg
    assert RAW_KEY[2:] not in msg


def test_keystore_and_password_file_go_together(tmp_path: Path) -> None:
    ks, pw = make_keystore(tmp_path)
    msg = config_error(write_config(tmp_path, dev_account_index=None, keystore=ks))
    assert "password_file: required with keystore" in msg
    msg = config_error(write_config(tmp_path, dev_account_index=None, password_file=pw))
    assert "keystore: required with password_file" in msg


def test_dev_account_refused_off_local_chains(tmp_path: Path) -> None:
    msg = config_error(write_config(tmp_path, chain_id=11155111))
    assert "dev_account_index: dev accounts are for local chains (31337, 1337) only, not chain 11155111" in msg
    # load_signer checks against the chain it is given (the node's), too.
    s = load_settings(write_config(tmp_path))
    with pytest.raises(SignerError, match=r"dev_account_index is for local chains \(31337, 1337\) only, not chain 1;"):
        load_signer(s, 1)


def test_dev_accounts_are_the_anvil_accounts(tmp_path: Path) -> None:
    assert load_signer(load_settings(write_config(tmp_path)), 31337).address == ANVIL_0
    assert load_signer(load_settings(write_config(tmp_path, dev_account_index=1, chain_id=1337)), 1337).address == (
        ANVIL_1
    )


def test_raw_key_only_on_a_local_chain(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, dev_account_index=None, private_key=RAW_KEY))
    assert load_signer(s, 31337).address == RAW_KEY_ADDRESS
    with pytest.raises(SignerError) as info:
        load_signer(s, 10)
    assert str(info.value).startswith("a raw private_key is refused on chain 10 (local chains 31337 and 1337 only)")
    assert RAW_KEY[2:] not in str(info.value)
    msg = config_error(write_config(tmp_path, dev_account_index=None, private_key=RAW_KEY, chain_id=1))
    assert "private_key: a raw private key is refused on chain 1 (local chains 31337 and 1337 only)" in msg
    assert RAW_KEY[2:] not in msg


def test_keystore_loads_on_any_chain(tmp_path: Path) -> None:
    ks, pw = make_keystore(tmp_path)
    s = load_settings(write_config(tmp_path, dev_account_index=None, keystore=ks, password_file=pw, chain_id=1))
    account = load_signer(s, 1)
    assert account.address == RAW_KEY_ADDRESS
    assert account.key.hex().removeprefix("0x") == RAW_KEY[2:]


def test_wrong_keystore_password(tmp_path: Path) -> None:
    ks, pw = make_keystore(tmp_path)
    pw.write_text("hunter2-wrong")
    s = load_settings(write_config(tmp_path, dev_account_index=None, keystore=ks, password_file=pw))
    with pytest.raises(SignerError) as info:
        load_signer(s, 31337)
    assert str(info.value) == f"wrong password for keystore {ks} (password from {pw})"
    assert "hunter2" not in str(info.value)


def test_keystore_that_is_not_a_keystore(tmp_path: Path) -> None:
    ks, pw = make_keystore(tmp_path)
    s = load_settings(write_config(tmp_path, dev_account_index=None, keystore=ks, password_file=pw))
    ks.write_text("not json")
    with pytest.raises(SignerError, match="is not a JSON keystore file"):
        load_signer(s, 31337)
    ks.write_text('{"address": "00"}')
    with pytest.raises(SignerError, match=r"is not an Ethereum keystore \(no crypto section\)"):
        load_signer(s, 31337)
    doc = Account.encrypt(RAW_KEY, "correct horse", kdf="scrypt", iterations=2**10)
    doc["address"] = ANVIL_0[2:].lower()
    ks.write_text(json.dumps(doc))
    with pytest.raises(SignerError, match=f"decrypts to {RAW_KEY_ADDRESS}, not to the address it records"):
        load_signer(s, 31337)


def test_no_signing_key_is_refused_when_one_is_needed(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, dev_account_index=None))  # enough for `keeper status`
    with pytest.raises(SignerError, match="no signing key configured: set keystore and password_file"):
        load_signer(s, 31337)


# ------------------------------------------------------------------------------------------------ secrets


def test_private_key_never_appears_in_repr_str_or_dumps(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, dev_account_index=None, private_key=RAW_KEY))
    secret = RAW_KEY[2:]
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json")), repr(s.private_key)):
        assert secret not in text
    assert "**********" in repr(s)
    assert s.private_key is not None
    assert s.private_key.get_secret_value() == RAW_KEY


def test_private_key_from_the_environment_never_appears_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", RAW_KEY[:-2])  # wrong length
    with pytest.raises(ConfigError) as info:
        load_settings(write_config(tmp_path, dev_account_index=None))
    msg = str(info.value)
    assert "private_key: must be 32 bytes as 64 hex digits (0x optional) (from KEEPER_PRIVATE_KEY)" in msg
    assert RAW_KEY[2:-2] not in msg
    # The pydantic error, whose text would show the input, is not chained onto the ConfigError.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_password_contents_never_appear(tmp_path: Path) -> None:
    ks, pw = make_keystore(tmp_path, password="s3cret-passphrase")
    s = load_settings(write_config(tmp_path, dev_account_index=None, keystore=ks, password_file=pw))
    assert "s3cret" not in repr(s)
    assert "s3cret" not in s.model_dump_json()
    assert load_signer(s, 31337).address == RAW_KEY_ADDRESS


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact_url("https://user:pw@eth.example/v3/KEY?token=abc#f") == "https://eth.example/…"
    assert redact_url("wss://[::1]:8546/") == "wss://[::1]:8546"
    assert redact_url("nonsense") == "<URL without scheme or host>"


# ------------------------------------------------------------------------------------------- deployments


def record(**changes: Any) -> dict[str, Any]:
    def addr(n: int) -> str:
        return "0x" + f"{n:040x}"

    rec: dict[str, Any] = {
        "format": 1,
        "chain_id": 31337,
        "contracts": {
            "OracleRouter": {"address": addr(1), "block": 3},
            "Vault": {"address": addr(2), "block": 4},
            "MarginEngine": {"address": addr(0xABCDEF), "block": 5},
            "Lens": {"address": addr(4), "block": 6},
        },
        "debt_asset": {"symbol": "USDC", "token": addr(5), "feed": addr(6), "decimals": 6, "mock_token": True},
        "assets": [{"symbol": "WETH", "token": addr(7), "feed": addr(8), "decimals": 18, "ltv": 0.8}],
        "abis": {name: [] for name in REQUIRED_ABIS},
    }
    rec.update(changes)
    return rec


def write_record(tmp_path: Path, rec: dict[str, Any]) -> Path:
    path = tmp_path / "dep.json"
    path.write_text(json.dumps(rec))
    return path


def test_deployment_record_loads() -> None:
    path = Path.cwd() / "dep.json"
    dep = load_deployment(write_record(Path.cwd(), record()), expected_chain_id=31337)
    assert dep.chain_id == 31337
    assert dep.engine == "0x0000000000000000000000000000000000abcDeF"  # checksummed
    assert dep.start_block == 5
    assert dep.debt.symbol == "USDC"
    assert dep.debt.decimals == 6
    assert [a.symbol for a in dep.assets] == ["WETH"]
    assert set(dep.abis) == set(REQUIRED_ABIS)
    assert dep.source == path


def test_deployment_record_problems(tmp_path: Path) -> None:
    path = write_record(tmp_path, record(format=2))
    with pytest.raises(DeploymentError, match=r"has format 2, this keeper reads format 1; regenerate it with `ape run"):
        load_deployment(path)
    abis = {n: [] for n in REQUIRED_ABIS if n != "Lens"}
    with pytest.raises(
        DeploymentError, match=r"is malformed \(missing abis.Lens\); regenerate it with `ape run deploy`"
    ):
        load_deployment(write_record(tmp_path, record(abis=abis)))
    with pytest.raises(DeploymentError, match=r"is malformed \(debt_asset.decimals: Field required\)"):
        load_deployment(write_record(tmp_path, record(debt_asset={"symbol": "U", "token": "0x", "feed": "0x"})))
    bad = record()
    bad["contracts"]["Vault"]["address"] = "0x1234"
    with pytest.raises(DeploymentError, match=r"contracts.Vault.address is not an address"):
        load_deployment(write_record(tmp_path, bad))


def test_deployment_for_another_chain_names_both_ids(tmp_path: Path) -> None:
    path = write_record(tmp_path, record(chain_id=5))
    with pytest.raises(ChainMismatchError) as info:
        load_deployment(path, expected_chain_id=31337)
    assert str(info.value).startswith(f"deployment file {path} is for chain 5 but chain_id is 31337")
    assert info.value.exit_code == 3


# ----------------------------------------------------------------------------------------- documentation


def test_every_setting_is_documented_and_in_the_example() -> None:
    doc = (ROOT / "docs" / "keeper.md").read_text()
    reference = doc.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    example = (ROOT / "keeper.example.toml").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^\| `{name}` \|", reference, re.MULTILINE), f"{name} missing from docs/keeper.md"
        assert re.search(rf"^#? ?{name} = ", example, re.MULTILINE), f"{name} missing from keeper.example.toml"


def test_example_config_is_valid(tmp_path: Path) -> None:
    """keeper.example.toml loads as it is, once its deployment record exists."""
    dep = tmp_path / "31337.json"
    dep.write_text("{}")
    s = load_settings(ROOT / "keeper.example.toml", deployment=dep, state_db=tmp_path / "keeper.db")
    assert (s.rpc_url, s.chain_id, s.dev_account_index) == ("http://127.0.0.1:8545", 31337, 4)
    assert load_signer(s, 31337).address == "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
