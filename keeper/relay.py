"""A TCP relay the drill (and the fault tests) put between the keeper and its node, to cut the keeper's RPC and
restore it: `down()` drops every open connection and refuses new ones at once (a connection-refused outage, not a
hang, so the keeper's failures cost no time), `up()` relays again. One thread; local use only."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


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
