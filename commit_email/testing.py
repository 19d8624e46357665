"""A ready harness for plugin authors' and integrators' tests (a public, stable API).

Ten lines test a plugin::

    from commit_email import hookimpl
    from commit_email.model import Account, Match
    from commit_email.testing import assert_valid_plugin, build_message, make_connector

    class VipMatcher:
        @hookimpl
        def commit_email_match_account(self, message, directory):
            if message.sender == "ceo@vip.example":
                return Match(account=directory.get_account("CRDVIP"), how="plugin")
            return None

    assert_valid_plugin(VipMatcher())
    connector = make_connector(plugins=[VipMatcher()], accounts=[Account(rec_id="CRDVIP")])
    outcome = connector.process(build_message(sender="ceo@vip.example", subject="Help"))
    assert outcome.kind == "ticket_created"

What is here:

- **Raw messages** (RFC 822 bytes, as a mailbox would hand them over):
  :func:`build_message` (plain, HTML, attachments, any header), :func:`build_html_message`,
  :func:`build_reply` (a customer reply carrying a ticket token), :func:`build_nagios_alert`
  (Nagios/Icinga 1 notification mails), :func:`xml_transaction` and
  :func:`build_xml_message` (API by email).
- **Collaborators**: :func:`memory_store` (directory, sink and state in one in-memory SQLite
  store), :class:`RecordingMailer`, :func:`make_host` (entry-point autoloading off),
  :func:`make_config`, :func:`make_connector`, and :class:`MemoryMailbox` (a mail source
  ``Runner`` can serve, and the model of a source plugin).
- **Checks**: :func:`assert_valid_plugin` (misspelled hooks, arguments the spec does not have,
  defaulted arguments — all things pluggy accepts silently) and :class:`HookRecorder` /
  :func:`record_hooks` (which hooks ran, with what, returning what).
- **pytest fixtures**: opt in with ``pytest_plugins = ["commit_email.pytest_plugin"]``.
"""

from __future__ import annotations

import difflib
import email.utils
import inspect
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from xml.sax.saxutils import escape

from attrs import field, frozen

from . import hookspecs
from .config import Config, parse_config
from .errors import MailerError, PluginError
from .model import Account, OutcomeKind, OutgoingMail
from .outgoing import serialize
from .pipeline import Connector
from .plugins import PluginHost
from .protocols import Mailer
from .sources import Mailbox
from .store import SQLiteStore, Store

__all__ = [
    "HookCall",
    "HookRecorder",
    "MemoryMailbox",
    "RecordingMailer",
    "assert_valid_plugin",
    "build_html_message",
    "build_message",
    "build_nagios_alert",
    "build_reply",
    "build_xml_message",
    "hook_names",
    "make_config",
    "make_connector",
    "make_host",
    "memory_store",
    "record_hooks",
    "xml_transaction",
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


class MemoryMailbox:
    """A mailbox in memory that ``Runner`` serves like a POP3 or IMAP one.

    ``deliver(raw)`` adds a message under the next id (``"1"``, ``"2"``, …);
    :meth:`as_mailbox` gives the :class:`~commit_email.sources.Mailbox` to hand to
    ``Runner(..., mailbox=...)`` or to return from ``commit_email_register_sources``. Each
    session lists what is left; acknowledged messages are removed (kept with ``keep=True``)
    and noted in ``acknowledged`` with their outcome kind. It is also the smallest complete
    :class:`~commit_email.protocols.MailSession`: a source plugin's author can start from it.
    """

    def __init__(self, name: str = "memory", *, keep: bool = False) -> None:
        self.name = name
        self.keep = keep
        self.messages: dict[str, bytes] = {}
        self.acknowledged: list[tuple[str, OutcomeKind]] = []
        self.sessions = 0
        self._next = 1

    def deliver(self, raw: bytes) -> str:
        """Add a message; returns its id."""
        uid, self._next = str(self._next), self._next + 1
        self.messages[uid] = raw
        return uid

    def session(self) -> _MemorySession:
        """A new session on this mailbox (``Mailbox.open_session``)."""
        self.sessions += 1
        return _MemorySession(self)

    def as_mailbox(self, **schedule: Any) -> Mailbox:
        """This mailbox for ``Runner``; ``schedule`` sets ``poll_interval`` and the like."""
        schedule.setdefault("reconnect_delay", 0.01)
        return Mailbox(name=self.name, kind="memory", open_session=self.session, **schedule)


class _MemorySession:
    """One session of a :class:`MemoryMailbox` (the MailSession protocol)."""

    kind = "memory"

    def __init__(self, box: MemoryMailbox) -> None:
        self._box = box
        self.connected = False

    @property
    def name(self) -> str:
        return self._box.name

    @property
    def keeps_messages(self) -> bool:
        return self._box.keep

    def __enter__(self) -> Self:
        self.connected = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.connected = False

    def message_ids(self) -> list[str]:
        return list(self._box.messages)

    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        return iter([(uid, self._box.messages[uid]) for uid in ids if uid in self._box.messages])

    def acknowledge(self, done: Sequence[tuple[str, OutcomeKind]]) -> list[tuple[str, str]]:
        for uid, kind in done:
            self._box.acknowledged.append((uid, kind))
            if not self._box.keep:
                self._box.messages.pop(uid, None)
        return []


def make_host(*plugins: object, builtins: bool = True, autoload: bool = False) -> PluginHost:
    """A plugin host with ``plugins`` registered and entry-point autoloading off.

    ``autoload=True`` also loads the installed plugins, as a real connector does: a plugin
    distribution's own test uses it to prove that its entry point is found.
    """
    return PluginHost(plugins, autoload=autoload, builtins=builtins)


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
    store: Store | None = None,
    mailer: Mailer | None = None,
    host: PluginHost | None = None,
) -> Connector:
    """A connector on an in-memory store with ``accounts`` loaded and autoloading off.

    ``mailer`` (e.g. a :class:`RecordingMailer`) receives what the connector sends after each
    message; without one, mail stays queued in the store's outbox.
    """
    config = config or make_config()
    store = store or memory_store()
    store.import_accounts(accounts)
    return Connector.from_config(
        config, store=store, mailer=mailer, host=host or make_host(*plugins)
    )


# More message builders ------------------------------------------------------------------------


def build_html_message(html: str, **kwargs: Any) -> bytes:
    """An HTML-only message (no text/plain part), as many webmail clients and tools send."""
    return build_message(html=html, body="", **kwargs)


def build_reply(
    number: str | int,
    *,
    subject: str = "Printer is out of toner",
    subject_format: str = "[Ticket#{number}]",
    prefix: str = "Re:",
    body: str = "Thanks, the toner arrived.\n\nAlice\n",
    quoted: str = "Your ticket has been opened.",
    in_reply_to: str | None = None,
    **kwargs: Any,
) -> bytes:
    """A customer's reply to a ticket: ``Re: [Ticket#N] subject`` with the earlier text quoted.

    ``in_reply_to`` (a Message-ID the connector sent) also sets ``References``, the other way a
    reply finds its ticket. ``subject_format`` must match ``[threading]
    subject_format``.
    """
    token = subject_format.format(number=number)
    quote = "".join(f"> {line}\n" for line in quoted.splitlines())
    text = f"{body}\nOn Mon, 2 Mar 2026 at 10:00, Support wrote:\n{quote}" if quoted else body
    references = kwargs.pop("references", [in_reply_to] if in_reply_to else [])
    return build_message(
        subject=f"{prefix} {token} {subject}".strip(),
        body=text,
        in_reply_to=in_reply_to,
        references=references,
        **kwargs,
    )


def build_nagios_alert(
    *,
    host: str = "web01",
    service: str = "HTTP",
    state: str = "CRITICAL",
    notification_type: str = "PROBLEM",
    output: str = "HTTP CRITICAL - Socket timeout after 10 seconds",
    address: str = "192.0.2.10",
    tool: str = "Nagios",
    when: datetime | None = None,
    sender: str = "nagios@monitor.example",
    **kwargs: Any,
) -> bytes:
    """A notification mail as Nagios's stock ``notify-service-by-email`` (``service`` set) or
    ``notify-host-by-email`` (``service=""``) command sends it; ``tool="Icinga"`` gives
    Icinga 1's identical layout. A recovery is ``notification_type="RECOVERY", state="OK"``
    (``"UP"`` for a host).
    """
    stamp = (when or datetime(2026, 3, 2, 10, 0, tzinfo=UTC)).strftime("%a %b %d %H:%M:%S %Z %Y")
    banner = f"***** {tool} *****\n\nNotification Type: {notification_type}\n"
    if service:
        subject = f"** {notification_type} Service Alert: {host}/{service} is {state} **"
        body = (
            f"{banner}\nService: {service}\nHost: {host}\nAddress: {address}\nState: {state}\n\n"
            f"Date/Time: {stamp}\n\nAdditional Info:\n\n{output}\n"
        )
    else:
        subject = f"** {notification_type} Host Alert: {host} is {state} **"
        body = (
            f"{banner}Host: {host}\nState: {state}\nAddress: {address}\nInfo: {output}\n\n"
            f"Date/Time: {stamp}\n"
        )
    return build_message(sender=sender, subject=subject, body=body, **kwargs)


def xml_transaction(
    data_kind: str,
    fields: Mapping[str, str],
    *,
    password: str = "",
    external_application_name: str = "commit-email tests",
    send_response_to: str = "",
    return_transaction_id: str = "",
) -> str:
    """One ``<CommitCRMTransaction>`` document. A REC ID field in ``fields``
    (``FLDTKTRECID``, ``FLDCRDRECID``, …) makes it an update, its absence an add."""
    envelope = [
        ("ExternalApplicationName", external_application_name),
        ("SendResponseToEmail", send_response_to),
        ("Password", password),
        ("ReturnTransactionID", return_transaction_id),
        ("DataKind", data_kind),
    ]
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<CommitCRMTransaction>"]
    lines += [f"  <{name}>{escape(value)}</{name}>" for name, value in envelope if value]
    lines.append("  <RecordData>")
    lines += [f"    <{name}>{escape(value)}</{name}>" for name, value in fields.items()]
    lines += ["  </RecordData>", "</CommitCRMTransaction>"]
    return "\n".join(lines) + "\n"


def build_xml_message(
    *transactions: str,
    carrier: Literal["plain", "html", "attachment"] = "plain",
    subject: str = "Web form submission",
    **kwargs: Any,
) -> bytes:
    """A mail carrying XML transactions (from :func:`xml_transaction`) in the plain body, an
    HTML body, or a ``text/xml`` attachment. Several are wrapped in ``<CommitCRMTransactions>``.
    """
    if not transactions:
        raise ValueError("build_xml_message needs at least one transaction")
    if len(transactions) == 1:
        xml = transactions[0]
    else:
        inner = "".join(t.split("?>", 1)[-1] if t.lstrip().startswith("<?xml") else t
                        for t in transactions)
        xml = f'<?xml version="1.0" encoding="utf-8"?>\n<CommitCRMTransactions>{inner}' \
              "</CommitCRMTransactions>\n"
    if carrier == "plain":
        return build_message(subject=subject, body=xml, **kwargs)
    if carrier == "html":
        html = f"<html><body><p>Submitted form:</p><pre>{escape(xml)}</pre></body></html>"
        return build_html_message(html, subject=subject, **kwargs)
    return build_message(
        subject=subject,
        body="The transaction is attached.\n",
        attachments=[("transaction.xml", "text/xml", xml.encode("utf-8"))],
        **kwargs,
    )


# Recording hook calls -------------------------------------------------------------------------


@frozen(kw_only=True)
class HookCall:
    """One call of a hook, as :class:`HookRecorder` saw it.

    ``implementations`` names the plugins pluggy lined up, in call order (a first-result
    hook stops at the first that returns something); ``result`` is what the caller got
    (a list for collect/notify hooks); ``exception`` is set when the call raised.
    """

    name: str
    kwargs: Mapping[str, Any] = field(factory=dict)
    implementations: tuple[str, ...] = ()
    result: Any = None
    exception: BaseException | None = None


class HookRecorder:
    """Records every hook call on a plugin host until :meth:`close` (or the ``with`` block's
    end). Built on pluggy's hook-call monitoring, so it sees built-in and plugin calls alike.
    """

    def __init__(self, host: PluginHost) -> None:
        self.calls: list[HookCall] = []
        self._undo: Any = host.manager.add_hookcall_monitoring(self._before, self._after)

    def _before(self, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        pass  # the call is recorded when its result is known

    def _after(
        self,
        outcome: Any,
        hook_name: str,
        hook_impls: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> None:
        exception = outcome.exception
        self.calls.append(
            HookCall(
                name=hook_name,
                kwargs=dict(kwargs),
                # pluggy calls the last registered implementation first
                implementations=tuple(impl.plugin_name for impl in reversed(hook_impls)),
                result=None if exception is not None else outcome.get_result(),
                exception=exception,
            )
        )

    def close(self) -> None:
        """Stop recording (the calls recorded so far stay)."""
        if self._undo is not None:
            self._undo()
            self._undo = None

    def __enter__(self) -> HookRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def names(self) -> list[str]:
        """The names of the hooks called, in call order."""
        return [call.name for call in self.calls]

    def named(self, name: str) -> list[HookCall]:
        """The calls of one hook, in call order."""
        return [call for call in self.calls if call.name == name]

    def last(self, name: str) -> HookCall:
        """The latest call of ``name``; an AssertionError listing what was called if none."""
        calls = self.named(name)
        if not calls:
            seen = ", ".join(dict.fromkeys(self.names())) or "no hook at all"
            raise AssertionError(f"{name} was never called (called: {seen})")
        return calls[-1]


def record_hooks(target: PluginHost | Connector) -> HookRecorder:
    """Start recording the hook calls of a host (or of a connector's host)::

        with record_hooks(connector) as calls:
            connector.process(raw)
        assert calls.last("commit_email_message_processed").kwargs["outcome"].kind == ...
    """
    host = target.host if isinstance(target, Connector) else target
    return HookRecorder(host)


# Validating a plugin --------------------------------------------------------------------------


def hook_names() -> list[str]:
    """Every hook a plugin can implement, sorted."""
    return sorted(name for name in vars(hookspecs) if name.startswith("commit_email_"))


def _label(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)
    return str(name) if name else f"{type(plugin).__name__} instance"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _argument_problems(name: str, impl: Any, spec_args: Sequence[str], cls: str) -> list[str]:
    try:
        params = list(inspect.signature(impl).parameters.values())
    except (TypeError, ValueError):
        return [f"{name}: its signature cannot be read"]
    if cls and params and params[0].name == "self":
        return [f"{name}: {cls} is a class; register an instance of it: {cls}()"]
    takes = f"(the spec's arguments: {', '.join(spec_args) or 'none'})"
    problems = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            stars = "*" if p.kind is p.VAR_POSITIONAL else "**"
            problems.append(f"{name}: {stars}{p.name} receives nothing; pluggy passes only the "
                            f"arguments an implementation names {takes}")
            continue
        if p.kind is p.KEYWORD_ONLY:
            problems.append(f"{name}: keyword-only argument {p.name!r} is never passed; "
                            f"make it a plain argument {takes}")
        elif p.name not in spec_args:
            problems.append(f"{name}: argument {p.name!r} is not in the hook's spec"
                            f"{_did_you_mean(p.name, spec_args)} {takes}")
        if p.default is not p.empty:
            problems.append(f"{name}: argument {p.name!r} has a default value ({p.default!r}); "
                            "pluggy never passes an argument that has a default, so it would "
                            "always be the default. Remove the default")
    return problems


def _hook_problems(host: PluginHost, plugin: object, attr: str) -> list[str]:
    hook = getattr(host.manager.hook, attr, None)
    if hook is None or not hook.has_spec():
        known = hook_names()
        return [f"{attr}: no such hook{_did_you_mean(attr, known)} (hooks: {', '.join(known)})"]
    cls = plugin.__name__ if isinstance(plugin, type) else ""
    return _argument_problems(attr, getattr(plugin, attr), hook.spec.argnames, cls)


def assert_valid_plugin(plugin: object) -> list[str]:
    """Check a plugin object (instance or module) as far as pluggy cannot; return its hooks.

    Raises an AssertionError listing every problem, each naming the hook and the argument:
    a marked function whose name is no hook (a misspelling: pluggy ignores it silently
    unless asked), an argument the hook's spec does not have, an argument with a default
    value (pluggy never passes those), ``*args``/``**kwargs`` or keyword-only arguments,
    a ``commit_email_*`` function not marked with ``@hookimpl`` (ignored by pluggy), a class
    given instead of an instance, and a plugin with no hook at all.
    """
    host = make_host(builtins=False)
    problems: list[str] = []
    hooks: list[str] = []
    for attr in sorted(dir(plugin)):
        if attr.startswith("__"):
            continue
        if host.manager.parse_hookimpl_opts(plugin, attr) is None:
            if attr.startswith("commit_email_") and callable(getattr(plugin, attr, None)):
                problems.append(f"{attr}: not marked with @hookimpl (from commit_email import "
                                "hookimpl), so pluggy ignores it")
            continue
        hooks.append(attr)
        problems += _hook_problems(host, plugin, attr)
    if not hooks and not problems:
        problems.append("it implements no hook (mark the functions with @hookimpl; hooks: "
                        f"{', '.join(hook_names())})")
    if not problems:
        try:  # what pluggy itself validates (wrappers, options)
            host.register(plugin)
        except PluginError as exc:
            problems.append(str(exc))
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise AssertionError(f"{_label(plugin)} is not a valid commit-email plugin:\n{listed}")
    return hooks
