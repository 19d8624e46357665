"""The ``commit-email`` command (see docs/reference/cli.md).

User mistakes (bad config, missing file, malformed CSV) print one line naming the key or
line and exit with status 2; there is no traceback for them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

from . import __version__
from .accounts_csv import read_accounts_csv, reconcile, write_accounts_csv
from .config import Config, ImapConfig, check_secrets, deployment_problems, load_config
from .errors import CommitEmailError, ConfigError, InputError, OAuthError
from .message import Message
from .model import Outcome, OutcomeKind, SourceRef
from .oauth import OAuthCredentials, RefreshTokenStore, refresh_token_path
from .pipeline import Connector
from .plugins import DISABLE_PLUGINS_ENV, PluginHost
from .runner import Service
from .smtp import SmtpMailer
from .sources import iter_messages, one_message
from .storage import redact_url
from .store import OutboxEntry, Store, check_store_url, open_store
from .storecopy import copy_store

__all__ = ["main"]

log = logging.getLogger("commit_email")

Command = Callable[[argparse.Namespace, TextIO], int]


def _store(config: Config) -> Store:
    return open_store(config.store.url, base_dir=config.base_dir,
                      password=config.store.resolved_password())


def _connector(config: Config) -> Connector:
    return Connector.from_config(config)


def _outcome_json(
    source: SourceRef, message_id: str, outcome: Outcome, *, mailbox: str | None = None
) -> str:
    return json.dumps(
        {
            **({"mailbox": mailbox} if mailbox is not None else {}),
            "source": str(source),
            "message_id": message_id,
            "outcome": outcome.kind.value,
            "ticket": outcome.ticket,
            "account": outcome.account,
            "detail": outcome.detail,
        },
        ensure_ascii=False,
    )


def cmd_process(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    connector = _connector(config)
    tally: Counter[str] = Counter()
    created: list[str] = []
    # Mail goes out from threads beside processing; at the end the command waits (at most
    # smtp.drain_timeout) for the outbox to empty. What is left is sent by the next run.
    with connector.sending_in_background(drain=config.smtp.drain_timeout):
        for source, raw in iter_messages(args.paths, mbox=args.mbox):
            outcome = connector.process(raw, source)
            tally[outcome.kind.value] += 1
            if args.json:
                print(_outcome_json(source, outcome.message_id, outcome), file=out)
            else:
                ticket = f" ticket {outcome.ticket}" if outcome.ticket else ""
                print(f"{source}: {outcome.kind.value}{ticket} {outcome.detail}".rstrip(),
                      file=out)
            if outcome.kind in (OutcomeKind.TICKET_CREATED, OutcomeKind.ALERT_TICKET_CREATED):
                created.append(outcome.ticket or "")
    if args.json:
        _log_unsent(connector)
    else:
        total = sum(tally.values())
        summary = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
        print(f"\n{_count(total, 'message')}: {summary or 'none'}", file=out)
        if created:
            print(file=out)
            _print_tickets(connector.sink, out, only=set(created))
        _print_unsent(connector, out)
    return 0


def _print_unsent(connector: Connector, out: TextIO) -> None:
    waiting = connector.state.pending_mail()
    if not waiting:
        return
    failed = sum(entry.failed for entry in waiting)
    if failed:
        # Given-up mail is not retried by the next run: say where to deal with it.
        print(f"\n{_count(failed, 'mail')} given up (refused or out of attempts); "
              "see: commit-email outbox list", file=out)
        waiting = [e for e in waiting if not e.failed]
    if not waiting:
        return
    kinds = Counter(entry.mail.kind for entry in waiting)
    what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    if connector.mailer is None:
        print(f"\n{_count(len(waiting), 'mail')} queued in the outbox ({what}); "
              "configure [smtp] to send them.", file=out)
        return
    # Sending failed: say so, with the server's last answer, instead of only logging it.
    tried = [entry for entry in waiting if entry.last_error]
    if tried:
        print(f"\n{_count(len(waiting), 'mail')} still in the outbox ({what}), "
              f"retried on the next run; last error: {tried[0].last_error}", file=out)
    else:
        print(f"\n{_count(len(waiting), 'mail')} still queued in the outbox ({what}), not "
              f"sent within smtp.drain_timeout; the next run sends them", file=out)


def _log_unsent(connector: Connector) -> None:
    """``process --json`` prints only outcomes: mail left in the outbox goes to the log."""
    if connector.mailer is None:
        return
    waiting = [e for e in connector.state.pending_mail() if not e.failed]
    if waiting:
        log.warning("%s left queued in the outbox; the next run sends them",
                    _count(len(waiting), "mail"))


def _print_tickets(sink: Any, out: TextIO, only: set[str] | None = None) -> None:
    counts = sink.history_counts() if hasattr(sink, "history_counts") else {}
    accounts: dict[str, str] = {}
    printed = False
    for ticket in sink.list_tickets():
        if only is not None and ticket.number not in only:
            continue
        if ticket.account not in accounts:
            account = sink.get_account(ticket.account) if hasattr(sink, "get_account") else None
            accounts[ticket.account] = account.file_as if account else ticket.account
        if not printed:
            print(f"{'TICKET':<7} {'STATE':<6} {'ACCOUNT':<28} {'HISTORY':>7}  DESCRIPTION",
                  file=out)
            printed = True
        state = "closed" if ticket.closed else "open"
        print(
            f"#{ticket.number:<6} {state:<6} {_shorten(accounts[ticket.account], 28):<28} "
            f"{counts.get(ticket.rec_id, 0):>7}  {_shorten(ticket.description, 60)}",
            file=out,
        )


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut[width // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def _count(n: int, noun: str, plural: str = "") -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def cmd_ticket_show(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    store = _store(config)
    ticket = store.get_ticket(number=args.number)
    if ticket is None:
        raise InputError(f"no ticket number {args.number}")
    history = store.history(ticket.rec_id)
    documents = store.documents(ticket.rec_id)
    doc = {
        "number": ticket.number,
        "rec_id": ticket.rec_id,
        "account": ticket.account,
        "contact": ticket.contact,
        "status": ticket.status,
        "closed": ticket.closed,
        "description": ticket.description,
        "created": ticket.created.isoformat(),
        "alert_key": ticket.alert_key,
        "history": [
            {"kind": h.kind, "created": h.created.isoformat(), "author": h.author,
             "subject": h.subject, "message_id": h.message_id, "text": h.text}
            for h in history
        ],
        "documents": [
            {"filename": d.filename, "content_type": d.content_type, "size": d.size,
             "kind": d.kind}
            for d in documents
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False), file=out)
        return 0
    for key in ("number", "rec_id", "account", "contact", "status", "closed", "created",
                "description"):
        print(f"{key + ':':<14}{doc[key]}", file=out)
    print(f"\n{_count(len(history), 'history entry', 'history entries')}",
          file=out)
    for h in history:
        print(f"\n-- {h.created.isoformat()} {h.kind} {h.author} {h.subject}".rstrip(),
              file=out)
        print(h.text, file=out)
    print(f"\n{_count(len(documents), 'document')}", file=out)
    for d in documents:
        print(f"  {d.filename} ({d.content_type}, {_count(d.size, 'byte')})", file=out)
    return 0


def cmd_tickets(args: argparse.Namespace, out: TextIO) -> int:
    if getattr(args, "action", None) == "show":
        return cmd_ticket_show(args, out)
    config = load_config(args.config)
    store = _store(config)
    if args.json:
        counts = store.history_counts()
        tickets = [
            {
                "number": t.number,
                "rec_id": t.rec_id,
                "account": t.account,
                "contact": t.contact,
                "status": t.status,
                "closed": t.closed,
                "description": t.description,
                "history": counts.get(t.rec_id, 0),
                "documents": len(store.documents(t.rec_id)),
                "created": t.created.isoformat(),
                "alert_key": t.alert_key,
            }
            for t in store.list_tickets()
        ]
        print(json.dumps(tickets, indent=2, ensure_ascii=False), file=out)
    else:
        _print_tickets(store, out)
    return 0


def inspection_json(connector: Connector, raw: bytes) -> dict[str, Any]:
    """The ``inspect --json`` document."""
    result = connector.inspect(raw)
    m = result.message
    return {
        "from": m.sender,
        "from_name": m.from_.name if m.from_ else "",
        "to": [a.address for a in m.to],
        "cc": [a.address for a in m.cc],
        "reply_to": [a.address for a in m.reply_to],
        "return_path": m.return_path,
        "subject": m.subject,
        "message_id": m.message_id,
        "date": m.date.isoformat() if m.date else None,
        "in_reply_to": list(m.in_reply_to),
        "references": list(m.references),
        "content_type": m.content_type,
        "text": m.text,
        "html": m.html is not None,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size,
             "inline": a.inline}
            for a in m.attachments
        ],
        "auto_submitted": m.auto_submitted,
        "auto_reply": m.is_auto_reply,
        "bounce": m.is_bounce,
        "defects": list(m.defects),
        "digest": result.digest,
        "route": {
            "outcome": result.outcome.kind.value,
            "stage": result.outcome.stage,
            "detail": result.outcome.detail,
            "ticket": result.outcome.ticket,
            "account": result.outcome.account,
            "notes": [{"step": k, "value": v} for k, v in result.notes],
            "mails": [{"kind": mail.kind, "to": list(mail.recipients)} for mail in result.mails],
            "already_processed": (
                result.already_processed.kind.value if result.already_processed else None
            ),
        },
    }


def cmd_inspect(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    path = Path(args.file)
    try:
        raw = one_message(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from None
    doc = inspection_json(_connector(config), raw)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str), file=out)
        return 0
    route = doc["route"]
    for key in ("from", "from_name", "to", "cc", "subject", "message_id", "date",
                "auto_submitted", "bounce", "defects"):
        print(f"{key + ':':<16}{doc[key]}", file=out)
    for a in doc["attachments"]:
        print(f"{'attachment:':<16}{a['filename']} ({a['content_type']}, {a['size']} bytes)",
              file=out)
    print(f"{'route:':<16}{route['outcome']} via {route['stage']}: {route['detail']}", file=out)
    for note in route["notes"]:
        print(f"  {note['step']}: {note['value']}", file=out)
    if route["already_processed"]:
        print(f"{'processed:':<16}already processed ({route['already_processed']})", file=out)
    text = doc["text"]
    print(f"\n{text[:2000]}{'…' if len(text) > 2000 else ''}", file=out)
    return 0


def cmd_accounts(args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "export":
        return _accounts_export(args, out)
    return _accounts_import(args, out)


def _accounts_export(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    accounts = _store(config).list_accounts()
    if args.output == "-":
        n = write_accounts_csv(accounts, out)
    else:
        # Written whole, then renamed: a crash never leaves half a file under the name.
        target = Path(args.output)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            n = write_accounts_csv(accounts, fh)
        os.replace(tmp, target)
        print(f"exported {_count(n, 'card')} to {target}", file=out)
    return 0


def _accounts_import(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    store = _store(config)
    result = reconcile(read_accounts_csv(args.csv, assign_ids=False), store.list_accounts())
    accounts = result.accounts
    in_file = {a.rec_id for a in accounts}
    for line, account in enumerate(accounts, start=2):
        if account.parent and account.parent not in in_file and not store.get_account(
            account.parent
        ):
            raise InputError(f"parent {account.parent} is not a known Account", path=args.csv,
                             line=line)
    n = store.import_accounts(accounts)
    kinds = Counter(a.kind.value for a in accounts)
    detail = ", ".join(_count(k, v) for v, k in sorted(kinds.items()))
    print(f"imported {_count(n, 'card')} ({detail}; {result.created} new, "
          f"{result.updated} updated) into {redact_url(config.store.url)}", file=out)
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    # The per-poll summary and the line per message are what an operator watches, so
    # ``run`` shows them without -v; the pipeline's own chatter stays at the chosen level.
    runner_log = logging.getLogger("commit_email.runner")
    if runner_log.getEffectiveLevel() > logging.INFO:
        runner_log.setLevel(logging.INFO)
    stop = threading.Event()
    on_outcome = None
    if args.json:
        printing = threading.Lock()

        def on_outcome(source: SourceRef, outcome: Outcome) -> None:
            line = _outcome_json(source, outcome.message_id, outcome, mailbox=source.name)
            with printing:
                print(line, file=out, flush=True)

    # Several mailboxes: a worker process each, so that parsing uses every core.
    setup = functools.partial(_worker_setup, logging.getLogger().getEffectiveLevel())
    service = Service(config, _connector, stop=stop, on_outcome=on_outcome, processes=True,
                      process_setup=setup)
    with _stop_on_signals(stop):
        return service.run(once=args.once)


def _worker_setup(level: int, stop: threading.Event) -> None:
    """The start of a worker process of ``run`` (one per mailbox): the command's logging,
    and SIGTERM/SIGINT (sent to every process of the service) end it after the message in
    hand. Its parent stops it too, and so does the parent's death."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    runner_log = logging.getLogger("commit_email.runner")
    if runner_log.getEffectiveLevel() > logging.INFO:
        runner_log.setLevel(logging.INFO)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=stop.set, name="commit-email-stop", daemon=True).start()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (and SIGINT, Ctrl+C, Ctrl+Break on Windows) set ``stop``: the run ends after
    the message in hand. A second SIGINT interrupts at once. Installed by the command, never
    by the library, and only from the main thread (where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s: stopping after the message in hand", signal.Signals(signum).name)
        # Event.set() takes the event's lock, which the interrupted main thread may hold
        # (inside stop.wait()): set it from another thread so that it can never deadlock.
        threading.Thread(target=stop.set, name="commit-email-stop", daemon=True).start()

    names = ("SIGTERM", "SIGINT", "SIGBREAK")  # SIGBREAK: Ctrl+Break, Windows only
    signals = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_store_copy(args: argparse.Namespace, out: TextIO) -> int:
    urls = (args.source, args.destination)
    for url in urls:
        if url.startswith("memory:") or ":memory:" in url:
            raise InputError(f"{url}: an in-memory store is gone when the command ends")
        check_store_url(url)
    if args.source == args.destination:
        raise InputError("the source and the destination are the same store")
    with open_store(args.source) as source, open_store(args.destination) as destination:
        counts = copy_store(source, destination)
    print(f"copied {redact_url(args.source)} -> {redact_url(args.destination)}", file=out)
    width = max(map(len, counts))
    for table, n in counts.items():
        print(f"  {table:<{width}} {n:>9}", file=out)
    print(f"verified: {sum(counts.values())} rows, the same count in every table", file=out)
    return 0


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    problems = deployment_problems(config)
    if problems:
        raise ConfigError(problems[0], path=args.config)
    checked = check_secrets(config)
    store_url = config.store.url
    if store_url.startswith("sqlite:///") and ":memory:" not in store_url:
        path = config.resolve_path(store_url.removeprefix("sqlite:///").partition("?")[0])
        folder = path.parent
        if not folder.exists() and not folder.parent.exists():
            raise InputError("the store's folder does not exist", path=str(folder))
    # Building the connector loads every plugin and compiles every rule.
    host_plugins = Connector.from_config(config, store=open_store("memory:")).host.plugin_names()
    print(f"{args.config}: OK", file=out)
    print(f"  store: {redact_url(store_url)}", file=out)
    print(f"  secrets resolved: {', '.join(checked) or 'none needed'}", file=out)
    print(f"  plugins: {', '.join(host_plugins)}", file=out)
    return 0


_QUARANTINE_ID = re.compile(r"\(quarantine id ([0-9T-]+[0-9a-f]+)\)")


def cmd_quarantine(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    connector = _connector(config)
    if args.action == "list":
        entries = list(connector.quarantine.entries())
        if args.json:
            print(json.dumps([
                {"id": e.id, "reason": e.reason, "source": str(e.source),
                 "message_id": e.message_id, "created": e.created.isoformat(), "size": e.size,
                 "resolved": e.resolved}
                for e in entries
            ], indent=2), file=out)
        for e in entries if not args.json else ():
            state = f" [replayed: {e.resolved}]" if e.resolved else ""
            print(f"{e.id}  {e.size:>9} bytes  {e.message_id or '-'}  {e.reason}{state}",
                  file=out)
        if not entries and not args.json:
            print("quarantine is empty", file=out)
        return 0
    try:
        entry, raw = connector.quarantine.get(args.id)
    except KeyError:
        raise InputError(f"no quarantine entry {args.id!r}") from None
    outcome = connector.process(raw, entry.source, replay=True)
    if outcome.kind is not OutcomeKind.QUARANTINED:
        connector.quarantine.mark_resolved(entry.id, outcome.kind.value)
    elif (again := _QUARANTINE_ID.search(outcome.detail)) and again.group(1) != entry.id:
        # The new entry is the one to replay next; this one must not look unreplayed.
        connector.quarantine.mark_resolved(entry.id, f"quarantined again as {again.group(1)}")
    print(_outcome_json(entry.source, entry.message_id, outcome), file=out)
    return 0 if outcome.kind is not OutcomeKind.QUARANTINED else 1


def _mail_json(entry: OutboxEntry) -> dict[str, Any]:
    mail = entry.mail
    return {
        "id": entry.id,
        "status": entry.status,
        "kind": mail.kind,
        "sender": mail.sender,
        "recipients": list(mail.recipients),
        "subject": Message.from_bytes(mail.raw).subject,
        "message_id": mail.message_id,
        "ticket": mail.ticket,
        "attempts": entry.attempts,
        "last_error": entry.error,
        "created": entry.created.isoformat() if entry.created else None,
        "last_attempt": entry.last_attempt.isoformat() if entry.last_attempt else None,
        "sent": entry.sent_at.isoformat() if entry.sent_at else None,
    }


def _print_mail(doc: dict[str, Any], out: TextIO) -> None:
    created = (doc["created"] or "")[:16].replace("T", " ")
    print(f"{doc['id']:>5}  {doc['status']:<7} {doc['kind']:<13} {created}  "
          f"{', '.join(doc['recipients'])}  {doc['subject'][:50]}", file=out)
    if doc["ticket"]:
        print(f"       ticket {doc['ticket']}", file=out)
    if doc["last_error"]:
        print(f"       {doc['attempts']} attempts, last error: {doc['last_error']}", file=out)


def _mail_id(text: str, store: Store) -> OutboxEntry:
    # An id is a SQLite rowid: at most 19 digits (a longer number would overflow the query).
    is_id = text.isascii() and text.isdigit() and len(text) < 19
    entry = store.get_mail(int(text)) if is_id else None
    if entry is None:
        raise InputError(f"no outbox mail {text!r} (see: commit-email outbox list)")
    return entry


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--sent-before: not an ISO date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _outbox_list(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    entries = store.all_mail() if args.all else store.pending_mail()
    docs = [_mail_json(e) for e in entries]
    if args.json:
        print(json.dumps(docs, indent=2, ensure_ascii=False), file=out)
        return 0
    for doc in docs:
        _print_mail(doc, out)
    if not docs:
        print("the outbox is empty" if args.all else "no mail waiting or failed", file=out)
    return 0


def _outbox_retry(args: argparse.Namespace, config: Config, store: Store,
                  out: TextIO) -> int:
    if args.all_failed:
        ids = [e.id for e in store.pending_mail() if e.failed]
    else:
        entry = _mail_id(args.id, store)
        if entry.sent:
            raise InputError(f"outbox mail {entry.id} was already sent")
        ids = [entry.id]
    with store.transaction():
        for mail_id in ids:
            store.requeue_mail(mail_id)
    if config.smtp_configured:
        Connector.from_config(config, store=store).flush_outbox()
    entries = [e for e in (store.get_mail(i) for i in ids) if e is not None]
    if args.json:
        print(json.dumps([_mail_json(e) for e in entries], indent=2, ensure_ascii=False),
              file=out)
    else:
        for entry in entries:
            _print_mail(_mail_json(entry), out)
        if not entries:
            print("no failed mail to retry", file=out)
        elif not config.smtp_configured:
            print("queued; configure [smtp] to send it", file=out)
    # Like ``quarantine replay``: 1 tells a script that the mail is still not out.
    unsent = config.smtp_configured and any(not e.sent for e in entries)
    return 1 if unsent else 0


def _outbox_purge(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    if args.sent_before is not None:
        purged = store.delete_sent_mail(_date(args.sent_before))
    else:
        entry = _mail_id(args.id, store)
        if entry.status == "pending" and not args.force:
            # A pending mail is one the connector still means to send (an auto-response,
            # a forward of a customer's mail): removing it loses that mail.
            raise InputError(f"outbox mail {entry.id} is still waiting to be sent; "
                             "use --force to remove it anyway")
        store.delete_mail(entry.id)
        purged = [entry.id]
    if args.json:
        print(json.dumps({"purged": purged}), file=out)
    else:
        print(f"purged {len(purged)} mails" + (f": {', '.join(map(str, purged))}"
                                                 if purged else ""), file=out)
    return 0


def cmd_outbox(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    store = _store(config)
    if args.action == "list":
        return _outbox_list(args, store, out)
    if args.action == "retry":
        return _outbox_retry(args, config, store, out)
    return _outbox_purge(args, store, out)


def cmd_auth(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    if args.action == "login":
        from .authflow import login  # noqa: PLC0415 - only this command signs in

        path = login(config, args.name, out, flow=args.flow or "", timeout=args.timeout)
        print(f"oauth {args.name}: signed in; the refresh token is kept in {path}", file=out)
        return 0
    return _auth_status(config, out, test=args.test)


def _auth_status(config: Config, out: TextIO, *, test: bool) -> int:
    """Every [oauth.NAME] credential; with ``test``, a token for each and a login to every
    mailbox and the relay (nothing fetched, nothing sent)."""
    credentials = OAuthCredentials(config)
    users: dict[str, list[str]] = {}
    for mailbox in config.mailboxes:
        if mailbox.sasl_mechanism:
            kind = "imap" if isinstance(mailbox, ImapConfig) else "pop3"
            users.setdefault(mailbox.oauth, []).append(f"{kind} {mailbox.mailbox}")
    if config.smtp.host and config.smtp.sasl_mechanism:
        users.setdefault(config.smtp.oauth, []).append("smtp")
    failed = 0
    if not config.oauth:
        print("no [oauth.NAME] sections", file=out)
    for name, oauth in sorted(config.oauth.items()):
        print(f"{name}: provider {oauth.provider}, grant {oauth.grant}, used by "
              f"{', '.join(users.get(name, [])) or 'nothing'}", file=out)
        if oauth.grant == "refresh_token":
            try:
                record = RefreshTokenStore(refresh_token_path(config, name)).load_record()
            except OAuthError as exc:
                record, failed = None, failed + 1
                print(f"  refresh token: {exc}", file=out)
            else:
                print("  refresh token: " + (
                    f"kept since {record.get('saved_at', '?')} (last refresh or sign-in)"
                    if record else f"none yet; run: commit-email auth login {name}"), file=out)
        if not test:
            continue
        try:
            token = credentials.get(name).access_token()
        except OAuthError as exc:
            failed += 1
            print(f"  access token: FAILED: {exc}", file=out)
        else:
            expiry = datetime.fromtimestamp(token.expires_at, UTC).isoformat(timespec="seconds")
            print(f"  access token: OK, valid until {expiry}", file=out)
    if test:
        failed += _test_logins(config, credentials, out)
    return 1 if failed else 0


def _test_logins(config: Config, credentials: OAuthCredentials, out: TextIO) -> int:
    """Log in to every mailbox (and leave: no message is fetched or deleted) and the relay."""
    failed = 0
    for box in PluginHost().sources(config, credentials):
        try:
            with box.open_session():
                pass
        except CommitEmailError as exc:
            failed += 1
            print(f"{box.kind} {box.name}: login FAILED: {exc}", file=out)
        else:
            print(f"{box.kind} {box.name}: login OK", file=out)
    if config.smtp.host:
        tokens = credentials.for_login(config.smtp.oauth, config.smtp.sasl_mechanism)
        try:
            SmtpMailer(config.smtp, tokens=tokens).check_login()
        except CommitEmailError as exc:
            failed += 1
            print(f"smtp {config.smtp.host}: login FAILED: {exc}", file=out)
        else:
            print(f"smtp {config.smtp.host}: login OK", file=out)
    return failed


# Options every command takes, accepted before or after the command and its action: they
# are moved behind the last word of the command line, where the innermost parser reads them.
_VALUE_OPTIONS = frozenset({"--config"})
_FLAG_OPTIONS = frozenset({"--json"})


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="the TOML configuration (required)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output (JSON)")


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """Move ``--config FILE``, ``--json`` and ``-v`` wherever they stand to where the parser
    reads them: ``-v`` first, the others last (before a ``--``, which ends options)."""
    front: list[str] = []
    words: list[str] = []
    back: list[str] = []
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        word = items[i]
        if word == "--":
            rest = items[i:]
            break
        if word in _VALUE_OPTIONS and i + 1 < len(items):
            back += [word, items[i + 1]]
            i += 2
            continue
        if word.split("=", 1)[0] in _VALUE_OPTIONS or word in _FLAG_OPTIONS:
            back.append(word)
        elif word in ("--verbose", "--no-plugins") or (
                word.startswith("-v") and set(word[1:]) == {"v"}):
            front.append(word)
        else:
            words.append(word)
        i += 1
    return front + words + back + rest


def _accounts_command(p: argparse.ArgumentParser) -> None:
    acc = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = acc.add_parser("import", help="import Accounts from a CSV file")
    _common_options(imp)
    imp.add_argument("csv", metavar="CSV", help="Accounts CSV (columns: see docs/reference/cli.md)")
    exp = acc.add_parser("export", help="write every Account as a CSV that import reads back")
    _common_options(exp)
    exp.add_argument("output", metavar="CSV", nargs="?", default="-",
                     help="the file to write (default: standard output)")


def _auth_command(p: argparse.ArgumentParser) -> None:
    """``auth login NAME`` and ``auth status [--test]``."""
    a = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    li = a.add_parser("login", help="sign in once and keep the refresh token (grant = "
                                    "refresh_token)")
    _common_options(li)
    li.add_argument("name", metavar="NAME", help="the [oauth.NAME] section")
    li.add_argument("--flow", choices=("device", "browser"),
                    help="device code, or a browser coming back to 127.0.0.1 (default: "
                         "device for Microsoft, browser for Google)")
    li.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                    help="how long to wait for the sign-in (default 900)")
    st = a.add_parser("status", help="every credential: provider, grant, refresh token")
    _common_options(st)
    st.add_argument("--test", action="store_true",
                    help="also get a token for each, and log in to every mailbox and the "
                         "SMTP relay (nothing is fetched or sent); exit 1 if any fails")


def _store_command(sub: Any) -> None:
    """``store copy``: takes URLs, not a configuration (``--config`` is not needed)."""
    p = sub.add_parser("store", help="move a whole store (SQLite <-> PostgreSQL)",
                       description="move a whole store (SQLite <-> PostgreSQL)")
    st = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    cp = st.add_parser(
        "copy", help="copy every row of SRC_URL into the empty store DST_URL, verified by counts",
        description="Copy every row of SRC_URL into the empty store DST_URL (created if "
        "need be), in one transaction, and check the row counts of every table before it "
        "commits. Stop every 'run' on the source first. Relative sqlite:/// paths are "
        "relative to the current folder; PostgreSQL passwords come from the URL, "
        "PGPASSWORD or ~/.pgpass.")
    cp.add_argument("source", metavar="SRC_URL", help="sqlite:///PATH or postgresql://…")
    cp.add_argument("destination", metavar="DST_URL", help="sqlite:///PATH or postgresql://…")
    cp.set_defaults(func=cmd_store_copy, config=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commit-email",
        description="Turn a support mailbox into Commit CRM tickets.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: each message, -vv: debug)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--no-plugins", action="store_true",
                        help="start without the plugins installed as packages (entry points); "
                             f"the same as {DISABLE_PLUGINS_ENV}=1")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(p)
        p.set_defaults(func=func)
        return p

    p = command("run", cmd_run, "poll the POP3 mailbox (forever, or one pass with --once)")
    p.add_argument("--once", action="store_true", help="one complete pass, then exit")

    p = command("process", cmd_process, "process .eml files, Maildir folders and mbox files")
    p.add_argument("--mbox", action="store_true",
                   help="read every file given as an mbox, whatever its name")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=".eml files, Maildir folders and mbox files (*.mbox, *.mbx), in order")

    p = command("inspect", cmd_inspect,
                "show a message's parsed fields and the route it would take; writes nothing")
    p.add_argument("file", metavar="FILE", help="one message (a leading mbox From line is dropped)")

    _accounts_command(command("accounts", cmd_accounts,
                              "load Accounts into the store, or write them out"))

    p = command("tickets", cmd_tickets, "list tickets, or show one with 'show NUMBER'")
    t = p.add_subparsers(dest="action", required=False, metavar="ACTION")
    show = t.add_parser("show", help="one ticket with its history and documents")
    _common_options(show)
    show.add_argument("number", metavar="NUMBER", help="the ticket number")

    p = command("quarantine", cmd_quarantine, "list or replay quarantined messages")
    q = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    _common_options(q.add_parser("list", help="list quarantined messages"))
    rp = q.add_parser("replay", help="process a quarantined message again")
    _common_options(rp)
    rp.add_argument("id", metavar="ID", help="the id shown by 'quarantine list'")

    p = command("outbox", cmd_outbox, "list, retry or purge outgoing mail")
    o = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = o.add_parser("list", help="mail waiting to be sent or given up (failed)")
    _common_options(ls)
    ls.add_argument("--all", action="store_true", help="include mail already sent")
    rt = o.add_parser("retry", help="put failed mail back in the queue and send it now")
    _common_options(rt)
    which = rt.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="the outbox id")
    which.add_argument("--all-failed", action="store_true", help="every failed mail")
    pg = o.add_parser("purge", help="remove a failed mail, or old sent mail")
    _common_options(pg)
    which = pg.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="the outbox id")
    which.add_argument("--sent-before", metavar="DATE",
                       help="every mail sent before DATE (ISO 8601, UTC unless given)")
    pg.add_argument("--force", action="store_true",
                    help="remove the mail even if it is still waiting to be sent")

    command("check-config", cmd_check_config, "validate the configuration; touches no mail")

    _auth_command(command("auth", cmd_auth, "sign in for an [oauth.NAME] section, or list "
                          "the credentials"))
    _store_command(sub)
    return parser


#: What must not reach a terminal from a mail: C0 and C1 controls (escape sequences move the
#: cursor, retitle the window, or on some terminals answer back), DEL, and the Unicode line
#: separators and bidi overrides that make a line read differently from what it holds.
#: Newline, tab and CRLF are the output's own (a CSV export writes CRLF).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]|\r(?!\n)"
)


def _escape(text: str) -> str:
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                       else f"\\u{ord(m.group()):04x}", text)


class _SafeOutput(io.TextIOBase):
    """The command's output stream with control characters escaped: subjects, names and
    file names come from mail, and mail is written by strangers."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_escape(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


class _SafeFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _escape(super().format(record))


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_normalise_argv(sys.argv[1:] if argv is None else argv))
    if not hasattr(args, "config"):
        parser.error("the following arguments are required: --config")
    if not hasattr(args, "json"):
        args.json = False
    if args.no_plugins:
        os.environ[DISABLE_PLUGINS_ENV] = "1"  # this process is ours: every connector sees it
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return int(args.func(args, cast(TextIO, _SafeOutput(out or sys.stdout))))
    except CommitEmailError as exc:
        print(f"commit-email: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
