"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), capturing what arrives.

Loaded through ``pytest_plugins`` in ``tests/conftest.py``. Fixtures:

- ``smtp_server``: plain SMTP, AUTH PLAIN/LOGIN accepted for user ``support`` /
  password ``secret`` (optional: a client that does not log in may still send);
- ``smtp_starttls_server``: STARTTLS required, certificate from ``test_ca``;
- ``smtp_ssl_server``: implicit TLS (SMTPS), certificate from ``test_ca``;
- the certificates come from ``test_ca`` of ``tests/dovecot_fixtures.py`` (one
  throw-away CA per session, shared with the POP3S tests).

``SmtpTestServer(pipelining=True)`` also lists PIPELINING in its EHLO reply (aiosmtpd reads
commands from one stream in order, so pipelined commands work; it just does not say so),
and records in ``.pipelined`` whether each MAIL arrived with more commands behind it.
``.connections`` counts the TCP connections accepted, ``.drop_connections()`` closes every
open one from the server side (an idle time-out, a restart), and ``script("DATA", "drop")``
closes the connection once the content arrived instead of answering (``"accept-drop"``:
keep the mail, then close without the reply: the client cannot know it arrived).

Every server is an :class:`SmtpTestServer`: ``.messages`` are the captured
:class:`CapturedMail` (envelope and raw bytes exactly as received), ``.config()``
returns a matching :class:`~commit_email.config.SmtpConfig`, and ``.script(...)``
queues SMTP replies to give instead of accepting (``"451 4.7.1 greylisted"``), for
retry tests. Servers are needed for these tests: when ``CI=true`` a missing
aiosmtpd fails the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from commit_email.config import SmtpConfig
from tests.dovecot_fixtures import TestCA

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:  # pragma: no cover - aiosmtpd is a test dependency
    Controller = object
    _have_aiosmtpd = False
else:
    _have_aiosmtpd = True

USER = "support"
PASSWORD = "secret"


def _require(ok: bool, why: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: server tests must run)")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.frozen(kw_only=True)
class CapturedMail:
    """One mail as the server received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # the DATA bytes exactly as received (dot-unstuffed, CRLF line ends)
    auth_user: str | None
    tls: bool

    @property
    def normalized(self) -> bytes:
        """``data`` with LF line ends, for comparing against files written with LF."""
        return self.data.replace(b"\r\n", b"\n")


class _Handler:
    """aiosmtpd handler: records mail, or answers with a scripted reply instead."""

    def __init__(self, *, pipelining: bool = False, data_delay: float = 0.0) -> None:
        self.pipelining = pipelining
        self.data_delay = data_delay
        self.pipelined: list[bool] = []
        self.messages: list[CapturedMail] = []
        self.scripted: dict[str, list[str]] = {"RCPT": [], "DATA": []}
        self.refused: dict[str, str] = {}
        self.oauth_logins = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

    def _scripted(self, command: str) -> str | None:
        with self.lock:
            queue = self.scripted[command]
            return queue.pop(0) if queue else None

    #: set to check XOAUTH2/OAUTHBEARER tokens: token -> the user it is for, or None
    introspect: Callable[[str], str | None] | None = None
    #: (mechanism, user, accepted) of every OAuth login attempt
    oauth_logins: list[tuple[str, str, bool]]

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        return await self._oauth(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> Any:
        return await self._oauth(server, args, "OAUTHBEARER")

    async def _oauth(self, server: Any, args: list[str], mechanism: str) -> Any:
        """Check the token with the authorization server (RFC 7662 introspection); on a
        bad one send the RFC 7628 failure challenge, read the client's answer, then 535."""
        if self.introspect is None:
            return AuthResult(success=False, handled=False,
                              message="504 5.5.4 Unrecognized authentication type")
        if len(args) > 1:
            blob: Any = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        user, token = _parse_oauth(blob, mechanism)
        check = self.introspect
        owner = await asyncio.get_running_loop().run_in_executor(None, check, token)
        ok = owner is not None and owner == user
        with self.lock:
            self.oauth_logins.append((mechanism, user, ok))
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        challenge = json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"})
        answer = await server.challenge_auth(challenge)
        expected = b"\x01" if mechanism == "OAUTHBEARER" else b""
        if answer != expected:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.2 the failure challenge was not answered")
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        buffered = bytes(getattr(server._reader, "_buffer", b""))
        with self.lock:
            self.pipelined.append(buffered.upper().startswith(b"RCPT"))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        reply = self._scripted("RCPT")
        if reply:
            return reply
        with self.lock:
            reply = self.refused.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        reply = self._scripted("DATA")
        if reply == "drop":
            server.transport.close()
            return "421 4.3.0 (never sent: the connection is closed)"
        if reply and reply != "accept-drop":
            return reply
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        mail = CapturedMail(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            auth_user=login.decode() if isinstance(login, bytes) else login,
            tls=server.transport.get_extra_info("ssl_object") is not None,
        )
        with self.arrived:
            self.messages.append(mail)
            self.arrived.notify_all()
        if reply == "accept-drop":
            server.transport.close()
        return "250 2.0.0 queued"


def _parse_oauth(blob: bytes, mechanism: str) -> tuple[str, str]:
    """(user, token) of an XOAUTH2 or OAUTHBEARER client response ("" when malformed)."""
    text = blob.decode("utf-8", "replace")
    fields = text.split("\x01")
    user = token = ""
    if mechanism == "OAUTHBEARER":
        gs2 = fields[0].split(",")
        authzid = next((p[2:] for p in gs2 if p.startswith("a=")), "")
        user = authzid.replace("=2C", ",").replace("=3D", "=")
        fields = fields[1:]
    for item in fields:
        if item.startswith("user="):
            user = item[5:]
        elif item.startswith("auth=Bearer "):
            token = item[len("auth=Bearer "):]
    return user, token


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USER.encode()
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def _server_context(ca: TestCA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca.server_cert, ca.server_key)
    return context


class _CountingController(Controller):  # type: ignore[misc]
    """Counts the connections it accepts and keeps them, to drop them on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted = 0
        self.open: list[Any] = []

    def factory(self) -> Any:
        server = super().factory()
        self.accepted += 1
        self.open.append(server)
        return server


class SmtpTestServer:
    """A running aiosmtpd server and what it captured."""

    def __init__(self, *, security: str = "plain", ca: TestCA | None = None,
                 introspect: Callable[[str], str | None] | None = None,
                 pipelining: bool = False, data_delay: float = 0.0) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.security = security
        self.ca = ca
        self._handler = _Handler(pipelining=pipelining, data_delay=data_delay)
        self._handler.introspect = introspect
        kwargs: dict[str, Any] = {
            "authenticator": _authenticate,
            "auth_require_tls": security != "plain",
        }
        if introspect is None:
            kwargs["auth_exclude_mechanism"] = ["XOAUTH2", "OAUTHBEARER"]
        if security == "starttls":
            assert ca is not None
            kwargs.update(tls_context=_server_context(ca), require_starttls=True)
        elif security == "ssl":
            assert ca is not None
            kwargs.update(ssl_context=_server_context(ca))
        self._controller = _CountingController(
            self._handler, hostname=self.host, port=self.port, **kwargs
        )

    def start(self) -> None:
        self._controller.start()
        # start() connects once itself to check the server answers: not a client's.
        self._controller.accepted = 0
        self._controller.open.clear()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[CapturedMail]:
        with self._handler.lock:
            return list(self._handler.messages)

    @property
    def oauth_logins(self) -> list[tuple[str, str, bool]]:
        """(mechanism, user, accepted) of each XOAUTH2/OAUTHBEARER attempt."""
        with self._handler.lock:
            return list(self._handler.oauth_logins)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return int(self._controller.accepted)

    @property
    def pipelined(self) -> list[bool]:
        """For each MAIL received: whether RCPT was already waiting behind it."""
        with self._handler.lock:
            return list(self._handler.pipelined)

    def drop_connections(self) -> None:
        """Close every open connection from the server side, as an idle time-out does."""
        done = threading.Event()

        def close_all() -> None:
            for server in self._controller.open:
                if server.transport is not None:
                    server.transport.close()
            self._controller.open.clear()
            done.set()

        self._controller.loop.call_soon_threadsafe(close_all)
        done.wait(5)

    def clear(self) -> None:
        with self._handler.lock:
            self._handler.messages.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[CapturedMail]:
        """Block until ``count`` mails arrived (delivery is synchronous, so rarely needed)."""
        with self._handler.arrived:
            self._handler.arrived.wait_for(lambda: len(self._handler.messages) >= count, timeout)
            return list(self._handler.messages)

    def script(self, command: str, *replies: str) -> None:
        """Answer the next ``command`` ("RCPT" or "DATA") with these replies, in order."""
        with self._handler.lock:
            self._handler.scripted[command.upper()].extend(replies)

    def refuse(self, address: str, reply: str = "550 5.1.1 no such user") -> None:
        """Answer every RCPT TO ``address`` with ``reply`` (a mailbox that does not exist)."""
        with self._handler.lock:
            self._handler.refused[address.lower()] = reply

    def accept(self, address: str) -> None:
        """Take mail for ``address`` again after :meth:`refuse`."""
        with self._handler.lock:
            self._handler.refused.pop(address.lower(), None)

    def config(self, **overrides: Any) -> SmtpConfig:
        """An SmtpConfig pointing at this server (with the test CA when it speaks TLS)."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "timeout": 5.0,
            "from_address": "support@acme.example",
        }
        if self.ca is not None:
            values["ca_file"] = str(self.ca.ca_cert)
        values.update(overrides)
        return SmtpConfig(**values)


def _server(security: str, ca: TestCA | None) -> Iterator[SmtpTestServer]:
    _require(_have_aiosmtpd, "aiosmtpd is not installed")
    server = SmtpTestServer(security=security, ca=ca)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    yield from _server("plain", None)


@pytest.fixture
def smtp_starttls_server(test_ca: TestCA) -> Iterator[SmtpTestServer]:
    yield from _server("starttls", test_ca)


@pytest.fixture
def smtp_ssl_server(test_ca: TestCA) -> Iterator[SmtpTestServer]:
    yield from _server("ssl", test_ca)
