"""A TCP proxy that can go silent: it forwards every connection to one address until
`silence()`, after which the connections it carries stay open but pass nothing more, as behind a
middlebox that forgot them; connections opened later pass as before."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit


class SilentProxy:
    """A running proxy to the HTTP server at `target_url`; closing it closes every connection."""

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._silences = 0
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        """Silences every connection open now."""
        with self._lock:
            self._silences += 1

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for connection in sockets:
            # A shutdown wakes the threads blocked on the socket, which a close alone does not.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def __enter__(self) -> SilentProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                silences = self._silences
            for source, sink in ((client, upstream), (upstream, client)):
                pipe = threading.Thread(target=self._pipe, args=(source, sink, silences))
                pipe.daemon = True
                pipe.start()

    def _pipe(self, source: socket.socket, sink: socket.socket, silences: int) -> None:
        """Passes what `source` sends on to `sink`, its end included, until silenced."""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            with self._lock:
                silenced = self._silences != silences
            if silenced:
                self._closed.wait()
                return
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
