"""The node a drill runs on: an Anvil it starts and deploys to (embedded), a running Anvil that holds a deployment
(`--rpc-url`), or an Anvil forking another node (`--fork-url`), whose feeds the drill then takes over."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from eth_utils.crypto import keccak

from keeper.chain.deployment import load_deployment
from keeper.chain.node import AnvilProcess, Rpc
from keeper.drills.deploy import deploy_embedded, find_project
from keeper.drills.driver import SEQUENCER_UP, Driver
from keeper.drills.record import DrillError, DrillOptions
from keeper.drills.system import System

TargetKind = Literal["embedded", "rpc", "fork"]


def open_target(opts: DrillOptions, stack: ExitStack, phase: Callable[[str], None]) -> tuple[Rpc, Path, TargetKind]:
    """The node and the deployment record the drill uses: (rpc, record path, target kind). What it starts is
    stopped when `stack` closes; `phase` hears what it is doing."""
    out = opts.out
    if opts.rpc_url is not None:
        rpc = Rpc(opts.rpc_url)
        stack.callback(rpc.close)
        _require_anvil(rpc, opts.rpc_url)
        chain_id = rpc.chain_id()
        record = opts.deployment or Path("deployments") / f"{chain_id}.json"
        return rpc, _local_copy(record, chain_id, chain_id, out), "rpc"
    if opts.fork_url is not None:
        origin = Rpc(opts.fork_url)
        stack.callback(origin.close)
        origin_chain = origin.chain_id()
        record = opts.deployment or Path("deployments") / f"{origin_chain}.json"
        phase(f"starting Anvil forking chain {origin_chain}")
        node = AnvilProcess(
            ["--fork-url", opts.fork_url, "--chain-id", "31337"], log_path=out / "anvil.log", anvil=opts.anvil
        )
        stack.callback(node.stop)
        return node.rpc, _local_copy(record, origin_chain, 31337, out), "fork"
    project = find_project(opts.project)
    phase("starting Anvil")
    node = AnvilProcess(["--chain-id", "31337", "--accounts", "4"], log_path=out / "anvil.log", anvil=opts.anvil)
    stack.callback(node.stop)
    phase("deploying the contracts (ape run deploy)")
    return node.rpc, deploy_embedded(opts.scenario, node.url, out, project, opts.risk), "embedded"


def _require_anvil(rpc: Rpc, url: str) -> None:
    if not rpc.is_anvil():
        raise DrillError(
            f"the node at {url} is not Anvil: a drill mines blocks, sets time and base fee and drives feeds with "
            "anvil_* methods; use an Anvil node, or --fork-url to fork this one"
        )


def _local_copy(record: Path, chain_id: int, local_chain_id: int, out: Path) -> Path:
    """The deployment record, checked, copied into the drill folder with the drill node's chain id."""
    load_deployment(record, chain_id)  # a clear error if it is missing, malformed or for another chain
    raw = json.loads(record.read_text(encoding="utf-8"))
    raw["chain_id"] = local_chain_id
    copy = out / "deployment.json"
    copy.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return copy


def takeover_feeds(driver: Driver, project: Path | None) -> None:
    """Fork mode: replace every feed of the deployment (and its sequencer feed) with the mock aggregator's runtime
    code, keeping each feed's decimals, so the drill can drive prices. The mock's first slot packs decimals,
    the latest round and the revert/gas-bomb switches; it is cleared so the real feed's storage means nothing."""
    rpc, system = driver.rpc, driver.sys
    code = _mock_runtime(rpc, system, project)
    feeds = [(s, f) for s, f in system.feeds.items()]
    if system.sequencer_feed is not None:
        feeds.append(("sequencer", system.sequencer_feed))
    for symbol, feed in feeds:
        decimals = 0 if symbol == "sequencer" else system.feed_decimals[symbol]
        if rpc.code(feed) == code:
            continue
        rpc.set_code(feed, code)
        rpc.set_storage(feed, 0, decimals)
    if system.sequencer_feed is not None:
        # up, and past its grace period; the drill's own sequencer_down faults take it from here
        since = int(rpc.block()["timestamp"], 16) - system.sequencer_grace - 1
        driver.sequencer(SEQUENCER_UP, since)


def _mock_runtime(rpc: Rpc, system: System, project: Path | None) -> bytes:
    # A deployment made with mock feeds already carries the code; otherwise take it from the compiled project.
    set_answer = keccak(text="setAnswer(int256)")[:4]
    for feed in system.feeds.values():
        code = rpc.code(feed)
        if set_answer in code:
            return code
    root = find_project(project)
    manifest = root / ".build" / "__local__.json"
    try:
        types = json.loads(manifest.read_text(encoding="utf-8"))["contractTypes"]
        return bytes.fromhex(types["MockAggregator"]["runtimeBytecode"]["bytecode"].removeprefix("0x"))
    except (OSError, KeyError, ValueError):
        raise DrillError(f"no compiled MockAggregator in {manifest}: run `make compile` in the checkout") from None
