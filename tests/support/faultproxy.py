"""A fault-injection TCP proxy for the tests: iscsifs connects to it, it connects to the target.

It can cut every connection, turn the current ones into black holes (a stall: the keepalive must
notice), flip a bit in what the target sends, delay it, or refuse new connections (target down).
Threads and plain sockets, so tests that drive real mounts from subprocesses can steer it.
"""

from __future__ import annotations

import select
import socket
import threading
import time


class TcpProxy:
    """Listens on a free loopback port; each connection taken is joined to one it makes to
    ``upstream`` and handed to ``_connected`` (a subclass's pumps)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = False  # new connections are closed at once (the target is down)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._connected(client, server)

    def _connected(self, client: socket.socket, server: socket.socket) -> None:
        raise NotImplementedError


class FaultProxy(TcpProxy):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.delay = 0.0
        self._flip_after: int | None = None  # flip a bit this many downstream bytes from now
        self._pairs: list[_Pair] = []
        self.connections = 0
        self.flipped = 0
        super().__init__(upstream)

    def _connected(self, client: socket.socket, server: socket.socket) -> None:
        pair = _Pair(self, client, server)
        with self._lock:
            self._pairs.append(pair)
            self.connections += 1
        threading.Thread(target=pair.pump, daemon=True).start()

    # -- faults ----------------------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every current connection, both ways (a reset network path)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def stall(self) -> None:
        """The current connections stay open but carry nothing more, ever (a dead path)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.stalled = True

    def flip_bit(self, after: int = 2000) -> None:
        """Flip one bit in the target's stream, ``after`` bytes from now."""
        self._flip_after = after

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.listener.close()


class _Pair:
    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.stalled = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def pump(self) -> None:
        socks = [self.client, self.server]
        try:
            while not self.closed:
                if self.stalled:
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select(socks, [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        self.close()
                        return
                    if self.stalled:
                        break
                    if s is self.server:
                        data = self._maybe_flip(data)
                        if self.proxy.delay:
                            time.sleep(self.proxy.delay)
                    (self.client if s is self.server else self.server).sendall(data)
        except OSError:
            self.close()

    def _maybe_flip(self, data: bytes) -> bytes:
        after = self.proxy._flip_after
        if after is None:
            return data
        if after >= len(data):
            self.proxy._flip_after = after - len(data)
            return data
        self.proxy._flip_after = None
        self.proxy.flipped += 1
        return data[:after] + bytes([data[after] ^ 0x10]) + data[after + 1 :]
