"""`keeper status` / `keeper run` start-up checks, run as the operator runs them: `python -m keeper` in a subprocess,
against the fixture's real Anvil where a node is needed. Each bad input gives one `keeper: ...` line with the
documented message, the documented exit code and no traceback."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from keeper.chain.deployment import check_chain, connect, contract, load_deployment
from keeper.cli.main import build_parser, main
from keeper.cli.startup import JsonFormatter
from keeper.engine.settings import load_settings

RAW_KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"  # Anvil account 9


def keeper(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def expect(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> str:
    err = result.stderr
    assert result.returncode == code, err
    assert err.startswith("keeper: "), err
    assert fragment in err, err
    assert "Traceback" not in err
    assert result.stdout == ""
    return err


def toml_value(value: Any) -> str:
    return json.dumps(str(value) if isinstance(value, Path) else value)


def write_config(folder: Path, **values: Any) -> Path:
    """A config for a local chain whose deployment record is ./deployment.json; `values` change keys (None drops)."""
    base: dict[str, Any] = {
        "rpc_url": "http://127.0.0.1:8545",
        "chain_id": 31337,
        "deployment": "deployment.json",
        "state_db": "keeper.db",
    }
    base.update(values)
    path = folder / "keeper.toml"
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in base.items() if v is not None))
    return path


def write_record(folder: Path, rec: dict[str, Any]) -> Path:
    path = folder / "deployment.json"
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def node_url(chain: Any) -> str:
    return str(chain.provider.uri)


@pytest.fixture
def record(system: Any) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(json.dumps(system.deployment.record()))
    return rec


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s


# -------------------------------------------------------------------------------------------- settings


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    err = expect(keeper(tmp_path, "status", "--config", str(missing)), 2, f"config file {missing} not found")
    assert "pass --config PATH or create it from keeper.example.toml" in err
    # --config before the command works the same.
    expect(keeper(tmp_path, "--config", str(missing), "status"), 2, f"config file {missing} not found")


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "keeper.toml"
    path.write_text('rpc_url = "http://127.0.0.1:8545"\nchain_id 31337\n')
    err = expect(keeper(tmp_path, "status", "--config", str(path)), 2, f"config file {path} is not valid TOML: ")
    assert "line 2" in err


def test_bad_field(tmp_path: Path) -> None:
    write_record(tmp_path, {})
    path = write_config(tmp_path, chain_id=0, confirmations=99)
    err = expect(keeper(tmp_path, "status", "--config", str(path)), 2, f"keeper: config file {path} is invalid:\n")
    assert f"  chain_id: Input should be greater than 0 (from {path})\n" in err
    assert f"  confirmations: Input should be less than or equal to 64 (from {path})\n" in err
    assert "pydantic" not in err


def test_missing_deployment_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, deployment="deployments/31337.json")
    expect(
        keeper(tmp_path, "status", "--config", str(path)),
        2,
        f"deployment: file not found: {tmp_path / 'deployments/31337.json'}; deploy with `ape run deploy",
    )


def test_malformed_deployment(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    dep = tmp_path / "deployment.json"
    dep.write_text('{"format": 1, "chain_id": ')
    expect(
        keeper(tmp_path, "status", "--config", str(path)),
        2,
        f"deployment file {dep} is not valid JSON (line 1: Expecting value); regenerate it with `ape run deploy`",
    )
    dep.write_text(json.dumps({"format": 1, "chain_id": 31337, "contracts": {}}))
    expect(keeper(tmp_path, "status", "--config", str(path)), 2, f"deployment file {dep} is malformed (")


def test_raw_key_off_a_local_chain(tmp_path: Path) -> None:
    write_record(tmp_path, {})
    path = write_config(tmp_path, chain_id=1, private_key=RAW_KEY)
    err = expect(
        keeper(tmp_path, "status", "--config", str(path)),
        2,
        "private_key: a raw private key is refused on chain 1 (local chains 31337 and 1337 only); "
        "use keystore + password_file",
    )
    assert RAW_KEY[2:] not in err


def test_usage_error(tmp_path: Path) -> None:
    result = keeper(tmp_path)
    assert result.returncode == 2
    assert "the following arguments are required: COMMAND" in result.stderr
    version = keeper(tmp_path, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, "keeper 0.1.0")


# ------------------------------------------------------------------------------------------------ node


def test_config_chain_differs_from_node(tmp_path: Path, node_url: str, record: dict[str, Any]) -> None:
    record["chain_id"] = 1
    write_record(tmp_path, record)
    path = write_config(tmp_path, rpc_url=node_url, chain_id=1)
    expect(
        keeper(tmp_path, "status", "--config", str(path)),
        3,
        f"keeper: the node at {node_url} is on chain 31337 but chain_id is 1: "
        "fix chain_id or point rpc_url at a node of chain 1",
    )


def test_deployment_for_another_chain(tmp_path: Path, node_url: str, record: dict[str, Any]) -> None:
    record["chain_id"] = 5
    dep = write_record(tmp_path, record)
    path = write_config(tmp_path, rpc_url=node_url)
    expect(
        keeper(tmp_path, "status", "--config", str(path)),
        3,
        f"keeper: deployment file {dep} is for chain 5 but chain_id is 31337: point `deployment` at the record "
        "for chain 31337, or deploy there with `ape run deploy`",
    )


def test_no_engine_code_at_the_address(tmp_path: Path, node_url: str, record: dict[str, Any]) -> None:
    # The same record with every core contract moved to addresses nothing was deployed to.
    for i, name in enumerate(("OracleRouter", "Vault", "MarginEngine", "Lens")):
        record["contracts"][name]["address"] = "0x" + f"{0xDEAD0000 + i:040x}"
    write_record(tmp_path, record)
    path = write_config(tmp_path, rpc_url=node_url)
    engine = Web3.to_checksum_address(record["contracts"]["MarginEngine"]["address"])
    expect(
        keeper(tmp_path, "status", "--config", str(path)),
        2,
        f"keeper: no MarginEngine code at {engine} on chain 31337: the deployment file is for another chain or "
        "the node was reset; redeploy with `ape run deploy`",
    )


def test_unreachable_node_redacts_the_url(tmp_path: Path) -> None:
    port = closed_port()
    rec = {  # a well-formed record: the node is contacted only after the record has been read
        "format": 1,
        "chain_id": 31337,
        "contracts": {n: {"address": "0x" + "11" * 20} for n in ("OracleRouter", "Vault", "MarginEngine", "Lens")},
        "debt_asset": {"symbol": "USDC", "token": "0x" + "22" * 20, "feed": "0x" + "33" * 20, "decimals": 6},
        "assets": [],
        "abis": {n: [] for n in ("MarginEngine", "OracleRouter", "Vault", "Lens", "MockAggregator", "MockERC20")},
    }
    write_record(tmp_path, rec)
    path = write_config(tmp_path, rpc_url=f"http://alice:pa55word@127.0.0.1:{port}/v3/APIKEY123?token=t0k")
    err = expect(
        keeper(tmp_path, "status", "--config", str(path)),
        4,
        f"keeper: cannot reach the node at http://127.0.0.1:{port}/…: connection failed",
    )
    for secret in ("alice", "pa55word", "APIKEY123", "t0k"):
        assert secret not in err


def test_silent_node_times_out(tmp_path: Path, silent_server: socket.socket, record: dict[str, Any]) -> None:
    write_record(tmp_path, record)
    port = silent_server.getsockname()[1]
    path = write_config(tmp_path, rpc_url=f"http://127.0.0.1:{port}", rpc_timeout_s=0.5)
    expect(
        keeper(tmp_path, "status", "--config", str(path)),
        4,
        f"keeper: cannot reach the node at http://127.0.0.1:{port}: no answer within 0.5 s",
    )


def test_interrupt_exits_130_quietly(tmp_path: Path, silent_server: socket.socket, record: dict[str, Any]) -> None:
    write_record(tmp_path, record)
    port = silent_server.getsockname()[1]
    path = write_config(tmp_path, rpc_url=f"http://127.0.0.1:{port}", rpc_timeout_s=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "status", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    silent_server.settimeout(30)
    conn, _ = silent_server.accept()  # the keeper is now waiting for the node's answer
    with conn:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert (out, err) == ("", "")


def test_run_without_a_signing_key(tmp_path: Path, node_url: str, record: dict[str, Any]) -> None:
    write_record(tmp_path, record)
    path = write_config(tmp_path, rpc_url=node_url)
    expect(
        keeper(tmp_path, "run", "--config", str(path)),
        2,
        "keeper: no signing key configured: set keystore and password_file (or dev_account_index on a local chain)",
    )


def test_run_with_a_wrong_keystore_password(tmp_path: Path, node_url: str, record: dict[str, Any]) -> None:
    write_record(tmp_path, record)
    ks = tmp_path / "keeper.json"
    ks.write_text(json.dumps(Account.encrypt(RAW_KEY, "right", kdf="scrypt", iterations=2**10)))
    pw = tmp_path / "keeper.pw"
    pw.write_text("wrong\n")
    pw.chmod(0o600)
    path = write_config(tmp_path, rpc_url=node_url, keystore="keeper.json", password_file="keeper.pw")
    expect(
        keeper(tmp_path, "run", "--config", str(path)),
        2,
        f"keeper: wrong password for keystore {ks} (password from {pw})",
    )


def test_run_off_a_local_chain_needs_a_native_price(tmp_path: Path, record: dict[str, Any]) -> None:
    """Off a local chain, `keeper run` refuses to start (before connecting: no node is listening here) when neither
    the record nor the settings say what gas is worth; `native_price` naming a symbol the deployment does not list
    is refused too; naming one it lists gets past the check (to the unreachable node)."""
    record["chain_id"] = 11155111
    record.pop("native", None)
    dep = write_record(tmp_path, record)
    ks = tmp_path / "keeper.json"
    ks.write_text(json.dumps(Account.encrypt(RAW_KEY, "pw", kdf="scrypt", iterations=2**10)))
    pw = tmp_path / "keeper.pw"
    pw.write_text("pw\n")
    pw.chmod(0o600)
    url = f"http://127.0.0.1:{closed_port()}"
    keys = {"keystore": "keeper.json", "password_file": "keeper.pw", "chain_id": 11155111, "rpc_url": url}
    path = write_config(tmp_path, **keys)
    expect(
        keeper(tmp_path, "run", "--config", str(path)),
        2,
        f"keeper: no price for the native token of chain 11155111: the keeper prices gas in USD to bid each "
        f"liquidation up to what it earns, and neither the deployment record {dep} (`native`) nor the native_price "
        "setting names one;",
    )
    path = write_config(tmp_path, native_price="ETH", **keys)
    expect(
        keeper(tmp_path, "run", "--config", str(path)),
        2,
        "keeper: native_price: ETH is not an asset of the deployment (it lists WETH, WBTC, LINK)",
    )
    path = write_config(tmp_path, native_price="WETH", **keys)
    expect(keeper(tmp_path, "run", "--config", str(path)), 4, "keeper: cannot reach the node at")
    record["native"] = {"asset": "WETH"}
    write_record(tmp_path, record)
    path = write_config(tmp_path, **keys)
    expect(keeper(tmp_path, "run", "--config", str(path)), 4, "keeper: cannot reach the node at")


# ------------------------------------------------------------------------------------------ in-process


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_start_up_checks_pass_on_the_fixture(
    tmp_path: Path, node_url: str, record: dict[str, Any], system: Any, scheme: str
) -> None:
    write_record(tmp_path, record)
    url = node_url.replace("http", scheme, 1)
    settings = load_settings(write_config(tmp_path, rpc_url=url, dev_account_index=4))
    dep = load_deployment(settings.deployment, settings.chain_id)
    w3 = connect(settings.rpc_url, settings.rpc_timeout_s)
    check_chain(w3, settings, dep)
    assert dep.engine == system.engine.address
    assert dep.start_block == record["contracts"]["MarginEngine"]["block"] > 0
    engine = contract(w3, dep, "MarginEngine")
    assert engine.functions.vault().call() == system.vault.address
    usdc = contract(w3, dep, "MockERC20", dep.debt.token)
    assert usdc.functions.decimals().call() == 6
    assert [a.symbol for a in dep.assets] == ["WETH", "WBTC", "LINK"]


def test_main_in_process_returns_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == (
        f"keeper: config file {tmp_path / 'none.toml'} not found; pass --config PATH or create it from "
        "keeper.example.toml\n"
    )
    args = build_parser().parse_args(["--config", "a.toml", "status", "--json"])
    assert (args.config, args.json) == (Path("a.toml"), True)
    assert build_parser().parse_args(["run"]).config is None


def test_json_log_lines() -> None:
    record = logging.LogRecord("keeper.runner", logging.WARNING, __file__, 1, "balance %s low", ("0.01",), None)
    record.account = "0xabc"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "warning"
    assert doc["logger"] == "keeper.runner"
    assert doc["msg"] == "balance 0.01 low"
    assert doc["account"] == "0xabc"
    assert doc["ts"].endswith("+00:00")
