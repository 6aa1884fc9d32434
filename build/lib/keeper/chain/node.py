"""Local nodes for drills and benchmarks: an Anvil process the drill starts and stops, raw JSON-RPC to any node, and
the Anvil-only controls a drill drives (mining, time, base fee, impersonation, balances, code and storage).

The drill talks to the node through `Rpc` rather than web3's middleware stack: it sends thousands of small requests
(one block mined, one batch of healths read, one pool inspected per block) and needs each to cost as little as
possible. The keeper under drill keeps its own web3 connection, exactly as `keeper run` has.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from eth_utils.crypto import keccak

from keeper.core.errors import KeeperError, NodeUnreachableError, redact_url


class NodeError(KeeperError):
    """The node refused a request a drill needs (e.g. an anvil_* method on a node that is not Anvil)."""


class RpcError(Exception):
    """A JSON-RPC error answer: `code`, `message` and the revert `data` if any."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class Rpc:
    """Plain JSON-RPC over one keep-alive HTTP session."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._id = 0

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        try:
            reply = self._session.post(self.url, json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise NodeUnreachableError(
                f"cannot reach the node at {redact_url(self.url)} ({type(exc).__name__}); is it running?"
            ) from None
        answer = reply.json()
        if "error" in answer:
            err = answer["error"]
            raise RpcError(method, int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
        return answer["result"]

    def close(self) -> None:
        self._session.close()

    # ---- reading

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block(self, number: int | str = "latest", full: bool = False) -> dict[str, Any]:
        tag = hex(number) if isinstance(number, int) else number
        result: dict[str, Any] = self.call("eth_getBlockByNumber", tag, full)
        return result

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def eth_call(self, to: str, data: bytes | str, block: int | str = "latest", sender: str | None = None) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": data if isinstance(data, str) else "0x" + data.hex()}
        if sender is not None:
            tx["from"] = sender
        tag = hex(block) if isinstance(block, int) else block
        return bytes.fromhex(str(self.call("eth_call", tx, tag))[2:])

    def code(self, address: str) -> bytes:
        return bytes.fromhex(str(self.call("eth_getCode", address, "latest"))[2:])

    def logs(self, address: str, from_block: int, to_block: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(
            "eth_getLogs", {"address": address, "fromBlock": hex(from_block), "toBlock": hex(to_block)}
        )
        return result

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.call("eth_getTransactionReceipt", tx_hash)
        return result

    # ---- Anvil controls

    def is_anvil(self) -> bool:
        try:
            return "anvil" in str(self.call("web3_clientVersion")).lower()
        except RpcError:
            return False

    def send(self, tx: dict[str, Any]) -> str:
        """eth_sendTransaction from a dev or impersonated account; the node signs."""
        return str(self.call("eth_sendTransaction", tx))

    def mine(self, timestamp: int | None = None) -> None:
        if timestamp is not None:
            self.call("evm_setNextBlockTimestamp", hex(timestamp))
        self.call("evm_mine")

    def set_automine(self, on: bool) -> None:
        self.call("evm_setAutomine", on)

    def automine(self) -> bool:
        return bool(self.call("anvil_getAutomine"))

    def set_balance(self, address: str, wei: int) -> None:
        self.call("anvil_setBalance", address, hex(wei))

    def set_code(self, address: str, code: bytes) -> None:
        self.call("anvil_setCode", address, "0x" + code.hex())

    def set_storage(self, address: str, slot: int, value: int) -> None:
        self.call(
            "anvil_setStorageAt", address, "0x" + slot.to_bytes(32, "big").hex(), "0x" + value.to_bytes(32, "big").hex()
        )

    def set_next_base_fee(self, wei: int) -> None:
        self.call("anvil_setNextBlockBaseFeePerGas", hex(wei))

    def pending_from(self, sender: str) -> list[dict[str, Any]]:
        """The transactions of `sender` waiting in the node's pool (txpool_content)."""
        content = self.call("txpool_content")
        out: list[dict[str, Any]] = []
        for bucket in ("pending", "queued"):
            for addr, by_nonce in (content.get(bucket) or {}).items():
                if addr.lower() == sender.lower():
                    out.extend(by_nonce.values())
        return out

    def pool_size(self) -> int:
        status = self.call("txpool_status")
        return int(str(status.get("pending", "0x0")), 16) + int(str(status.get("queued", "0x0")), 16)


# ------------------------------------------------------------------------------------------------ Anvil binary


def find_anvil(anvil: Path | None = None) -> str:
    """The Anvil binary: `anvil` when given (the `anvil` setting, KEEPER_ANVIL), else the one beside this Python
    (make setup links it into .venv/bin), else the first on PATH."""
    if anvil is not None:
        if not os.access(anvil, os.X_OK) or not anvil.is_file():
            raise KeeperError(f"anvil {anvil} is not an executable file: fix KEEPER_ANVIL or unset it")
        return str(anvil)
    for c in (str(Path(sys.prefix) / "bin" / "anvil"), shutil.which("anvil")):
        if c and os.access(c, os.X_OK):
            return c
    raise KeeperError(
        "anvil not found: run `make setup` (it installs Anvil from npm and links it into .venv/bin), "
        "or set KEEPER_ANVIL to the binary"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NO_DISK_STATE = ["--max-persisted-states", "0"]


class AnvilProcess:
    """An Anvil started on a free local port, stopped on `stop()` (or when used as a context manager).

    `args` are extra flags, e.g. ["--fork-url", url]. The node's output goes to `log_path` (or is discarded). `anvil`
    names the binary (see `find_anvil`)."""

    def __init__(
        self,
        args: Sequence[str] = (),
        log_path: Path | None = None,
        timeout_s: float = 60.0,
        anvil: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No chain state on disk: Anvil leaves what it persisted in ~/.foundry/anvil/tmp when it stops (bin/anvil).
        keep = [] if any(a in ("--max-persisted-states", "--prune-history") for a in args) else NO_DISK_STATE
        cmd = [find_anvil(anvil), "--host", "127.0.0.1", "--port", str(self.port), *keep, *args]
        self._log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.rpc = Rpc(self.url)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self.stop()
                where = f"; its output is in {log_path}" if log_path else ""
                raise NodeError(f"anvil exited at start with code {self.proc.returncode}{where}")
            try:
                self.rpc.chain_id()
                break
            except NodeUnreachableError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise NodeError(f"anvil did not answer within {timeout_s:g} s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.rpc.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()  # type: ignore[union-attr]

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------ balances

_BALANCE_OF = keccak(text="balanceOf(address)")[:4]


def _balance_of(rpc: Rpc, token: str, owner: str) -> int:
    return int.from_bytes(rpc.eth_call(token, _BALANCE_OF + bytes.fromhex(owner[2:].rjust(64, "0"))), "big")


def _mapping_slot(key: str, slot: int, vyper: bool) -> int:
    k = bytes.fromhex(key[2:].rjust(64, "0"))
    s = slot.to_bytes(32, "big")
    return int.from_bytes(keccak(s + k if vyper else k + s), "big")


def find_balance_slot(rpc: Rpc, token: str, probe_owner: str, max_slot: int = 32) -> tuple[int, bool]:
    """Where `token` keeps its balances mapping: (slot, vyper_layout), found by writing a marker to each candidate
    and reading balanceOf back (restoring the slot each time). NodeError when none of the first slots works."""
    marker = 0x1F2E3D4C5B6A7988
    for vyper in (False, True):
        for slot in range(max_slot):
            key = _mapping_slot(probe_owner, slot, vyper)
            old = int(str(rpc.call("eth_getStorageAt", token, hex(key), "latest")), 16)
            rpc.set_storage(token, key, marker)
            hit = _balance_of(rpc, token, probe_owner) == marker
            rpc.set_storage(token, key, old)
            if hit:
                return slot, vyper
    raise NodeError(
        f"cannot find the balances mapping of token {token}: the drill funds accounts by writing token balances, "
        "which needs a standard ERC-20 layout (a mapping in one of the first 32 slots)"
    )


def deal(rpc: Rpc, token: str, owner: str, amount: int, layout: tuple[int, bool]) -> None:
    """Set `owner`'s balance of `token` to `amount` by writing storage (total supply is left as it was)."""
    slot, vyper = layout
    rpc.set_storage(token, _mapping_slot(owner, slot, vyper), amount)
