"""A small threaded TCP proxy that breaks POP3 sessions on purpose.

It sits on 127.0.0.1 in front of a real server and forwards bytes both ways. Faults are
queued with :meth:`FaultProxy.inject` and each one fires on the next client command that
starts with the given verb (``RETR`` by default):

- :class:`Drop` forwards the command, lets ``after_bytes`` bytes of the reply through, then
  closes both sides (a connection reset in the middle of a message);
- :class:`Stall` forwards the command, lets ``after_bytes`` through, then sends nothing for
  ``seconds`` while keeping the connection open (the client has to time out);
- :class:`Reply` makes the command fail with ``line`` (e.g. ``-ERR``) and never lets the
  server execute it, so the session stays in step. After login the command is swapped for
  an unknown one (``XFAULTn``) and the server's ``-ERR Unknown command: XFAULTn`` is
  rewritten to ``line`` on its way back: the reply then keeps its place among the replies
  to pipelined commands. Login commands (Dovecot's login process words its refusal
  differently) are answered by the proxy itself.

With ``protocol="imap"`` the verb is the command after the tag (``UID FETCH`` counts as
``FETCH``, ``UID MOVE`` as ``MOVE``; the ``DONE`` that ends an IDLE as ``DONE``), and a
:class:`Reply` fault is answered by the proxy itself with the command's tag and ``line``
(``NO …`` or ``BAD …``) and never reaches the server: an IMAP client waits for each tagged
reply, so the session stays in step.

Only plain-text sessions can be inspected like this; TLS tests use Dovecot directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from types import TracebackType

import attrs


@attrs.frozen(kw_only=True)
class Drop:
    after_bytes: int = 0


@attrs.frozen(kw_only=True)
class Stall:
    seconds: float
    after_bytes: int = 0


@attrs.frozen(kw_only=True)
class Reply:
    line: bytes = b"-ERR fault injected by the test proxy"


Fault = Drop | Stall | Reply

#: commands of the authorization state, answered by the proxy itself for a Reply fault
_LOGIN_VERBS = frozenset({b"USER", b"PASS", b"APOP", b"AUTH", b"STLS"})


class _Session:
    """One proxied client connection and the fault (if any) armed on its server side."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.lock = threading.Lock()
        self.armed: Drop | Stall | None = None
        self.passed = 0
        self.closed = threading.Event()
        #: server replies to rewrite (Reply faults after login): marker line -> fault line
        self.swaps: dict[bytes, bytes] = {}
        self.held = b""  # the end of a server chunk that may be the start of a marker

    def run(self) -> None:
        up = threading.Thread(target=self._client_to_server, daemon=True)
        down = threading.Thread(target=self._server_to_client, daemon=True)
        up.start()
        down.start()
        up.join()
        down.join()

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _client_to_server(self) -> None:
        buffer = b""
        try:
            while not self.closed.is_set():
                data = self.client.recv(65536)
                if not data:
                    break
                buffer += data
                first = True
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._command(line + b"\n", new_burst=first)
                    first = False
        except OSError:
            pass
        finally:
            self.close()

    def _command(self, line: bytes, *, new_burst: bool) -> None:
        fault = self.proxy.take_fault(line, new_burst=new_burst)
        if isinstance(fault, Reply) and self.proxy.protocol == "imap":
            tag = line.split(b" ", 1)[0]
            self.client.sendall(tag + b" " + fault.line.rstrip(b"\r\n") + b"\r\n")
            return
        if isinstance(fault, Reply):
            reply = fault.line.rstrip(b"\r\n") + b"\r\n"
            if line.split(b" ", 1)[0].strip().upper() in _LOGIN_VERBS:
                self.client.sendall(reply)
                return
            marker = b"XFAULT%d" % len(self.proxy.fired)
            with self.lock:
                self.swaps[b"-ERR Unknown command: " + marker + b"\r\n"] = reply
            line = marker + b"\r\n"
        elif fault is not None:
            with self.lock:
                self.armed, self.passed = fault, 0
        self.server.sendall(line)

    def _server_to_client(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.server.recv(65536)
                if not data:
                    break
                if not self._forward(self._rewrite(data)):
                    break
        except OSError:
            pass
        finally:
            self.close()

    def _rewrite(self, data: bytes) -> bytes:
        """Put the fault lines in place of the server's replies to the swapped commands."""
        with self.lock:
            data, self.held = self.held + data, b""
            for marker, reply in list(self.swaps.items()):
                if marker in data:
                    data = data.replace(marker, reply)
                    del self.swaps[marker]
            # A marker cut in two by the chunk boundary: hold its start back until the rest.
            for size in range(min(len(data), max(map(len, self.swaps), default=1) - 1), 0, -1):
                if any(marker.startswith(data[-size:]) for marker in self.swaps):
                    data, self.held = data[:-size], data[-size:]
                    break
            return data

    def _forward(self, data: bytes) -> bool:
        with self.lock:
            armed = self.armed
            room = armed.after_bytes - self.passed if armed else len(data)
            self.passed += min(room, len(data))
        if armed is None or room >= len(data):
            self.client.sendall(data)
            return True
        if room > 0:
            self.client.sendall(data[:room])
        if isinstance(armed, Stall):
            self.closed.wait(armed.seconds)
        return False


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; use as a context manager."""

    def __init__(self, target_host: str, target_port: int, *, protocol: str = "pop3") -> None:
        self.target = (target_host, target_port)
        self.protocol = protocol
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so the accept loop notices stop() promptly
        self.port: int = self._listener.getsockname()[1]
        self._faults: deque[list[object]] = deque()  # [verb, fault, commands to let pass]
        self._lock = threading.Lock()
        self._sessions: list[_Session] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.connections = 0
        self.fired: list[tuple[str, Fault]] = []
        #: every client command seen, grouped by the read that brought it: pipelined
        #: commands arrive together, one-by-one commands each in a burst of their own
        self.bursts: list[list[str]] = []

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def inject(self, fault: Fault, command: str = "RETR", *, skip: int = 0) -> None:
        """Queue ``fault`` for a later client command starting with ``command``: the next
        one, or the one after letting ``skip`` such commands through untouched."""
        with self._lock:
            self._faults.append([command.upper().encode("ascii"), fault, skip])

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return [command for burst in self.bursts for command in burst]

    def verb(self, line: bytes) -> bytes:
        """The command word of a client line (see the module docstring for IMAP)."""
        words = line.strip().upper().split()
        if self.protocol != "imap" or len(words) < 2:
            return words[0] if words else b""
        return words[2] if words[1] == b"UID" and len(words) > 2 else words[1]

    def take_fault(self, line: bytes, *, new_burst: bool = True) -> Fault | None:
        verb = self.verb(line)
        with self._lock:
            if new_burst or not self.bursts:
                self.bursts.append([])
            self.bursts[-1].append(line.decode("ascii", "replace").strip())
            for i, entry in enumerate(self._faults):
                command, fault, skip = entry
                if verb != command:
                    continue
                if isinstance(skip, int) and skip > 0:
                    entry[2] = skip - 1
                    return None
                del self._faults[i]
                assert isinstance(fault, Drop | Stall | Reply)
                self.fired.append((line.decode("ascii", "replace").strip(), fault))
                return fault
        return None

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for session in list(self._sessions):
            session.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            self.connections += 1
            session = _Session(self, client, server)
            self._sessions.append(session)
            threading.Thread(target=session.run, daemon=True).start()
