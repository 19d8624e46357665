"""A ready harness for plugin authors and integrators' tests.

Ten lines test a plugin::

    from commit_email import hookimpl
    from commit_email.testing import build_message, make_connector
    from commit_email.model import Account

    class VipMatcher:
        @hookimpl
        def commit_email_match_account(self, message, directory):
            ...

    connector = make_connector(plugins=[VipMatcher()], accounts=[Account(rec_id="CRD1", ...)])
    outcome = connector.process(build_message(sender="ceo@vip.example", subject="Help"))
    assert outcome.kind == "ticket_created"
"""

from __future__ import annotations

import email.utils
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .config import Config, parse_config
from .errors import MailerError
from .model import Account, OutgoingMail
from .outgoing import serialize
from .pipeline import Connector
from .plugins import PluginHost
from .store import SQLiteStore

__all__ = [
    "RecordingMailer",
    "build_message",
    "make_config",
    "make_connector",
    "make_host",
    "memory_store",
]


def build_message(
    *,
    sender: str = "alice@customer.example",
    sender_name: str = "",
    to: str | Sequence[str] = "support@helpdesk.example",
    cc: Sequence[str] = (),
    subject: str = "Printer is out of toner",
    body: str = "Hello,\n\nthe printer on floor 2 is out of toner.\n\nAlice\n",
    html: str | None = None,
    attachments: Iterable[tuple[str, str, bytes]] = (),
    message_id: str | None = None,
    date: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Raw RFC 822 bytes of a plausible message. ``attachments``: (filename, mime type, data).

    ``html`` alone (``body=""``) gives an HTML-only message; both give multipart/alternative.
    """
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = ", ".join([to] if isinstance(to, str) else to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = date or email.utils.formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or "example.invalid"
    msg["Message-ID"] = f"<{message_id}>" if message_id else email.utils.make_msgid(domain=domain)
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to.strip('<>')}>"
    if references:
        msg["References"] = " ".join(f"<{r.strip('<>')}>" for r in references)
    for name, value in (headers or {}).items():
        msg[name] = value
    if body or html is None:
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html, subtype="html")
    for filename, mime, data in attachments:
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return serialize(msg)


def memory_store() -> SQLiteStore:
    """A fresh, private in-memory store (the SQLite store on ``:memory:``)."""
    return SQLiteStore.in_memory()


class RecordingMailer:
    """A :class:`~commit_email.protocols.Mailer` that keeps what it is asked to send.

    ``fail_next(n)`` makes the next ``n`` sends fail with MailerError (to test retries).
    """

    def __init__(self) -> None:
        self.sent: list[OutgoingMail] = []
        self._failures = 0

    def fail_next(self, n: int = 1) -> None:
        self._failures = n

    def send(self, mail: OutgoingMail) -> None:
        if self._failures:
            self._failures -= 1
            raise MailerError("simulated SMTP failure")
        self.sent.append(mail)

    def of_kind(self, kind: str) -> list[OutgoingMail]:
        return [m for m in self.sent if m.kind == kind]


def make_host(*plugins: object, builtins: bool = True) -> PluginHost:
    """A plugin host with entry-point autoloading off and ``plugins`` registered."""
    return PluginHost(plugins, autoload=False, builtins=builtins)


def make_config(state_dir: str | Path | None = None, **sections: Mapping[str, Any]) -> Config:
    """A Config from keyword sections, e.g. ``make_config(email_to_ticket={"match_domains":
    False})``. Defaults suit tests: in-memory store, example addresses, a temporary state_dir."""
    data: dict[str, Any] = {k: dict(v) for k, v in sections.items()}
    connector = data.setdefault("connector", {})
    connector.setdefault("public_address", "support@helpdesk.example")
    connector.setdefault("internal_address", "helpdesk@helpdesk.example")
    connector.setdefault("state_dir", str(state_dir or tempfile.mkdtemp(prefix="commit-email-")))
    data.setdefault("store", {}).setdefault("url", "memory:")
    return parse_config(data)


def make_connector(
    config: Config | None = None,
    *,
    plugins: Sequence[object] = (),
    accounts: Iterable[Account] = (),
    store: SQLiteStore | None = None,
    mailer: Any = None,
    host: PluginHost | None = None,
) -> Connector:
    """A connector on an in-memory store with ``accounts`` loaded and autoloading off."""
    config = config or make_config()
    store = store or memory_store()
    store.import_accounts(accounts)
    return Connector.from_config(
        config, store=store, mailer=mailer, host=host or make_host(*plugins)
    )
