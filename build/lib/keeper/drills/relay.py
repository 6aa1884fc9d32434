"""Relays the drill and the tests put between the keeper and its node.

- `FlakyRelay`: a TCP relay to cut the keeper's RPC and restore it: `down()` drops every open connection and refuses
  new ones at once (a connection-refused outage, not a hang, so the keeper's failures cost no time), `up()` relays
  again. One thread.
- `LogCapProxy`: a JSON-RPC proxy that refuses `eth_getLogs` the way public providers do, over a block-range cap
  and/or a result-count cap, answering with the error (code, message, HTTP status) a named provider returns;
  everything else is passed through. It counts the `eth_getLogs` requests it saw, answered and refused.

Local use only."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import requests


class FlakyRelay:
    """127.0.0.1:<port> -> `upstream`, relaying every connection until `down()`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._serving = True
        self._drop = threading.Event()
        self._dropped = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flaky-relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        self._dropped.clear()
        self._drop.set()
        if not self._dropped.wait(5):
            raise RuntimeError("relay did not drop its connections within 5 s")

    def up(self) -> None:
        self._serving = True

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for sock in list(self._peers):
            self._close_pair(sock)
        self._selector.close()
        self._listener.close()

    def _loop(self) -> None:
        while not self._closing.is_set():
            if self._drop.is_set():
                self._serving = False
                for sock in list(self._peers):
                    self._close_pair(sock)
                self._drop.clear()
                self._dropped.set()
            for key, _ in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._relay(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if not self._serving:
            client.close()
            return
        server = socket.create_connection(self._upstream)
        for sock in (client, server):  # small JSON-RPC messages: no Nagle delay on either leg
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(True)
        self._peers[client] = server
        self._peers[server] = client
        self._selector.register(client, selectors.EVENT_READ, server)
        self._selector.register(server, selectors.EVENT_READ, client)

    def _relay(self, source: socket.socket, target: socket.socket) -> None:
        if source not in self._peers:
            return
        try:
            chunk = source.recv(65536)
            if chunk:
                target.sendall(chunk)
                return
        except OSError:
            pass
        self._close_pair(source)

    def _close_pair(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()


# ------------------------------------------------------------------------------------------------ capped eth_getLogs

# Providers whose refusals LogCapProxy imitates. The messages are the ones these providers return (see
# docs/keeper.md, Discovery against public RPCs); `{n}` is the cap, `{size}` the range asked for, `{lo}`/`{hi}` a
# range that would fit.
ProviderStyle = Literal["alchemy", "infura", "quicknode", "geth"]


@dataclass(frozen=True)
class _Refusal:
    http_status: int
    code: int
    message: str


def _refusal(style: ProviderStyle, kind: Literal["range", "results"], n: int, size: int, lo: int, hi: int) -> _Refusal:
    if style == "alchemy":
        if kind == "range":
            return _Refusal(
                400,
                -32600,
                f"You can make eth_getLogs requests with up to a {n} block range. Based on your parameters, this "
                f"block range should work: [{hex(lo)}, {hex(hi)}]",
            )
        return _Refusal(
            400,
            -32602,
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit "
            f"on the response size, or you can request any block range with a cap of {n} logs in the response. "
            f"Based on your parameters, this block range should work: [{hex(lo)}, {hex(hi)}]",
        )
    if style == "infura":
        if kind == "range":
            return _Refusal(200, -32602, f"range {size} exceeds limit of {n}")
        return _Refusal(200, -32005, f"query returned more than {n} results")
    if style == "quicknode":
        return _Refusal(413, -32614, f"eth_getLogs is limited to a {n:,} range")
    if kind == "range":
        return _Refusal(
            200, -32000, f"block range is larger than max block range, block range = {size}, max block range = {n}"
        )
    return _Refusal(200, -32005, f"query returned more than {n} results")


@dataclass
class LogCapStats:
    requests: list[tuple[int, int]] = field(default_factory=list)  # (fromBlock, toBlock) of each eth_getLogs
    refused: list[tuple[int, int]] = field(default_factory=list)
    answered: list[tuple[int, int]] = field(default_factory=list)


class LogCapProxy:
    """http://127.0.0.1:<port> -> `upstream` (a JSON-RPC URL). `eth_getLogs` over more than `max_blocks` blocks, or
    matching more than `max_results` logs, is refused as `style` refuses it; every other call is forwarded."""

    def __init__(
        self,
        upstream: str,
        max_blocks: int | None = None,
        max_results: int | None = None,
        style: ProviderStyle = "infura",
    ) -> None:
        self.upstream = upstream
        self.max_blocks = max_blocks
        self.max_results = max_results
        self.style: ProviderStyle = style
        self.stats = LogCapStats()
        self._session = requests.Session()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = proxy._handle(json.loads(body))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="log-cap-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._session.close()

    def __enter__(self) -> LogCapProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _forward(self, request: Any) -> Any:
        with self._lock:  # one upstream session; the keeper's requests are sequential anyway
            return self._session.post(self.upstream, json=request, timeout=60).json()

    def _block(self, tag: Any) -> int:
        if isinstance(tag, str) and tag.startswith("0x"):
            return int(tag, 16)
        answer = self._forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []})
        return int(answer["result"], 16)

    def _handle(self, request: Any) -> tuple[int, Any]:
        if isinstance(request, list):
            return 200, [self._handle(r)[1] for r in request]
        if request.get("method") != "eth_getLogs":
            return 200, self._forward(request)
        query = request["params"][0]
        lo, hi = self._block(query.get("fromBlock", "latest")), self._block(query.get("toBlock", "latest"))
        size = hi - lo + 1
        self.stats.requests.append((lo, hi))
        if self.max_blocks is not None and size > self.max_blocks:
            self.stats.refused.append((lo, hi))
            return self._error(
                request, _refusal(self.style, "range", self.max_blocks, size, lo, lo + self.max_blocks - 1)
            )
        reply = self._forward(request)
        logs = reply.get("result")
        if self.max_results is not None and isinstance(logs, list) and len(logs) > self.max_results:
            self.stats.refused.append((lo, hi))
            last = int(logs[self.max_results - 1]["blockNumber"], 16)  # a range that fits: up to the block before
            fit_hi = max(lo, last - 1)
            return self._error(request, _refusal(self.style, "results", self.max_results, size, lo, fit_hi))
        self.stats.answered.append((lo, hi))
        return 200, reply

    @staticmethod
    def _error(request: Any, refusal: _Refusal) -> tuple[int, Any]:
        error = {"code": refusal.code, "message": refusal.message}
        return refusal.http_status, {"jsonrpc": "2.0", "id": request.get("id"), "error": error}
