"""Deploy fails before it spends: every address of a deploy config is checked against the chain before the first
transaction (scripts/_system.py `preflight`), every problem is reported at once with its field, and nothing is
deployed, in-process (`deploy_system`, what the fixtures and `ape run deploy` share) and through `ape run deploy`."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TEST_CONFIG, ck_system
from web3 import Web3

NO_CODE = "0x000000000000000000000000000000000000c0de"


def _bad_checksum(address: str) -> str:
    """`address` (checksummed) with the case of one letter flipped: still the same 20 bytes, wrong EIP-55."""
    i = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    flipped = address[i].lower() if address[i].isupper() else address[i].upper()
    return address[:i] + flipped + address[i + 1 :]


def _config(change: Callable[[dict[str, Any]], None]) -> Any:
    raw = copy.deepcopy(TEST_CONFIG)
    change(raw)
    return ck_system.parse_config(raw)


def _nonce(chain: Any, who: Any) -> int:
    return int(chain.provider.web3.eth.get_transaction_count(who.address))


# Each case: (what it changes, the field named in the message, what the message says about it).
def _cases(system: Any) -> list[tuple[str, Callable[[dict[str, Any]], None], str, str]]:
    weth, wbtc = system.tokens["WETH"].address, system.tokens["WBTC"].address
    usdc_feed, lens = system.feeds["USDC"].address, system.lens.address
    return [
        ("token without code", lambda r: r["debt"].update(token=NO_CODE), "debt.token", "no contract code"),
        (
            "bad EIP-55 checksum",
            lambda r: r["asset"][0].update(token=_bad_checksum(weth)),
            "asset.0.token (WETH)",
            "bad EIP-55 checksum",
        ),
        ("token without decimals()", lambda r: r["asset"][1].update(token=lens), "asset.1.token", "decimals()"),
        ("feed without code", lambda r: r["asset"][0].update(feed=NO_CODE), "asset.0.feed", "no contract code"),
        (
            "feed that is a token",
            lambda r: r["asset"][1].update(feed=wbtc),
            "asset.1.feed (WBTC)",
            "latestRoundData() cannot be read",
        ),
        (
            "feed answering outside the bounds",
            lambda r: r["debt"].update(feed=usdc_feed, min_price=2.0, max_price=3.0),
            "debt.feed",
            "outside (min_price, max_price) = (2.0, 3.0)",
        ),
        (
            "sequencer feed without code",
            lambda r: r.update(sequencer={"feed": NO_CODE}),
            "sequencer.feed",
            "no contract code",
        ),
        ("native feed without code", lambda r: r.update(native={"feed": NO_CODE}), "native.feed", "no contract code"),
        (
            "admin with a bad checksum",
            lambda r: r.update(roles={"admin": _bad_checksum(system.admin.address)}),
            "roles.admin",
            "bad EIP-55 checksum",
        ),
    ]


CASE_NAMES = [
    "token without code",
    "bad EIP-55 checksum",
    "token without decimals()",
    "feed without code",
    "feed that is a token",
    "feed answering outside the bounds",
    "sequencer feed without code",
    "native feed without code",
    "admin with a bad checksum",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_a_bad_address_deploys_nothing(project: Any, chain: Any, admin: Any, system: Any, case: str) -> None:
    [(_, change, field, fragment)] = [c for c in _cases(system) if c[0] == case]
    cfg = _config(change)
    before = _nonce(chain, admin)
    with pytest.raises(ck_system.DeployConfigError) as info:
        ck_system.deploy_system(project, chain, admin, cfg, "bad", source="bad.toml")
    message = str(info.value)
    assert message.startswith(
        "deploy config bad.toml: 1 problem with its addresses on chain 31337; nothing was deployed"
    )
    [line] = message.splitlines()[1:]
    assert line.startswith(f"  {field} "), message
    assert fragment in line, message
    assert _nonce(chain, admin) == before  # not one transaction sent


def test_every_problem_is_reported_at_once(project: Any, chain: Any, admin: Any, system: Any) -> None:
    cases = _cases(system)

    def everything(raw: dict[str, Any]) -> None:
        for _, change, _, _ in cases:
            change(raw)

    before = _nonce(chain, admin)
    with pytest.raises(ck_system.DeployConfigError) as info:
        ck_system.deploy_system(project, chain, admin, _config(everything), "bad")
    lines = str(info.value).splitlines()
    assert f"{len(cases)} problems" in lines[0]
    # The debt asset's token and feed were both changed; every case's field is named on its own line.
    for _, _, field, fragment in cases:
        assert any(line.startswith(f"  {field} ") and fragment in line for line in lines[1:]), (field, lines)
    assert _nonce(chain, admin) == before


def test_existing_tokens_and_feeds_pass(chain: Any, system: Any) -> None:
    """The checks accept what is right: the fixture's deployed tokens and feeds given as existing contracts,
    lowercase and checksummed, and a sequencer feed."""

    def existing(raw: dict[str, Any]) -> None:
        raw["debt"].update(token=system.usdc.address.lower(), feed=system.feeds["USDC"].address)
        for spec in raw["asset"]:
            spec.update(token=system.tokens[spec["symbol"]].address, feed=system.feeds[spec["symbol"]].address)
        raw["sequencer"] = {"feed": system.feeds["USDC"].address}  # any AggregatorV3Interface answers
        raw["native"] = {"feed": system.feeds["WETH"].address}

    assert ck_system.preflight(_config(existing), chain.provider.web3, chain.chain_id) == []


def test_ape_run_deploy_refuses_a_bad_config_before_sending(
    chain: Any, admin: Any, system: Any, tmp_path: Path
) -> None:
    """`ape run deploy` with a config naming a token without code and a misspelt feed address: exit 2, one message
    listing both problems with their fields, no record written, the deployer's nonce unchanged."""
    text = (ROOT / "deployments" / "configs" / "local.toml").read_text(encoding="utf-8")
    bad_feed = _bad_checksum(system.feeds["WETH"].address)
    text = text.replace('token = "mock"          # or the address of an existing ERC-20', f'token = "{NO_CODE}"', 1)
    text = text.replace('symbol = "WETH"\ndecimals = 18', f'symbol = "WETH"\nfeed = "{bad_feed}"\ndecimals = 18', 1)
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "records"
    before = _nonce(chain, admin)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    ape = Path(sys.executable).with_name("ape")
    result = subprocess.run(
        [str(ape), "run", "deploy", "--network", chain.provider.uri, "--config", str(config), "--out-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert f"deploy: deploy config {config}: 2 problems with its addresses on chain 31337; nothing was deployed" in err
    assert f"debt.token {NO_CODE}: no contract code at this address on chain 31337" in err
    assert f"asset.0.feed (WETH) {bad_feed}: has a bad EIP-55 checksum" in err
    assert "Traceback" not in err
    assert "explorer" not in (result.stdout + err).lower()
    assert not out.exists() or not any(out.iterdir())
    assert _nonce(chain, admin) == before
    assert Web3.is_checksum_address(system.feeds["WETH"].address)


@pytest.mark.parametrize(
    ("borrow", "fragment"),
    [
        ([{"symbol": "DOGE"}], "[[borrow]] DOGE is not a listed [[asset]] (WETH, WBTC, LINK)"),
        ([{"symbol": "WETH"}, {"symbol": "WETH"}], "[[borrow]] WETH is given twice"),
        ([{"symbol": "WETH", "min_debt": -1}], "borrow.0.min_debt"),
        ([{"symbol": "WETH", "vault": {"kinc": 0.8}}], "borrow.0.vault.kinc"),
    ],
)
def test_a_bad_borrow_entry_is_named(borrow: list[dict[str, Any]], fragment: str) -> None:
    """[[borrow]] entries are checked with the rest of the config, before anything is sent."""
    raw = copy.deepcopy(TEST_CONFIG) | {"borrow": borrow}
    with pytest.raises(ck_system.DeployConfigError) as info:
        ck_system.parse_config(raw, "borrow.toml")
    assert fragment in str(info.value)
