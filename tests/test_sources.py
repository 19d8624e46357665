"""The source seam: ``run`` drives any MailSession, a plugin adds one through a hook."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from commit_email import ConfigError, SourceError, hookimpl
from commit_email.config import Config
from commit_email.model import OutcomeKind, SourceRef
from commit_email.pipeline import Connector
from commit_email.runner import Runner, Service
from commit_email.sources import Mailbox
from commit_email.store import open_store
from commit_email.testing import (
    MemoryMailbox,
    _MemorySession,
    build_message,
    make_config,
    make_host,
)


def customer_mail(n: int, **kw: Any) -> bytes:
    return build_message(sender=f"user{n}@acme.example", message_id=f"m{n}@acme.example",
                         subject=f"Printer {n}", date="Sat, 28 Nov 2026 10:00:00 +0000", **kw)


class SourcePlugin:
    def __init__(self, *boxes: Mailbox) -> None:
        self.boxes = boxes

    @hookimpl
    def commit_email_register_sources(self) -> Sequence[Mailbox]:
        return self.boxes


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_a_plugin_source_is_served_by_run_like_a_built_in_one(
    connector_factory: Callable[..., Connector],
) -> None:
    memory = MemoryMailbox("graph:support@acme.example")
    for n in range(3):
        memory.deliver(customer_mail(n))
    connector = connector_factory(plugins=[SourcePlugin(memory.as_mailbox())])
    runner = Runner(connector.config, connector, sleep=Sleeps())
    assert runner.run(once=True) == 0
    assert memory.messages == {}
    assert [kind for _, kind in memory.acknowledged] == [OutcomeKind.TICKET_CREATED] * 3
    records = list(connector.state.iter_processed())
    assert {r.source for r in records} == {
        SourceRef(kind="memory", name="graph:support@acme.example", uidl=str(n))
        for n in (1, 2, 3)
    }


def test_a_message_processed_but_not_acknowledged_is_acknowledged_not_fetched_again(
    connector_factory: Callable[..., Connector],
) -> None:
    """A crash between the commit and the acknowledgement leaves the message in the
    mailbox; the next pass finds its id in the processed log and only acknowledges it,
    with the outcome kind the log has (a quarantined one goes where failed mail goes)."""
    memory = MemoryMailbox()
    first = memory.deliver(customer_mail(1))
    connector = connector_factory(plugins=[SourcePlugin(memory.as_mailbox())])
    connector.process(memory.messages[first], SourceRef(kind="memory", name="memory",
                                                         uidl=first))
    summary = Runner(connector.config, connector).poll()
    assert (summary.fetched, summary.known, summary.deleted) == (0, 1, 1)
    assert memory.acknowledged == [(first, OutcomeKind.TICKET_CREATED)]
    assert len(connector.sink.list_tickets()) == 1


def test_a_source_that_keeps_messages_acknowledges_only_quarantined_ones(
    connector_factory: Callable[..., Connector],
) -> None:
    memory = MemoryMailbox(keep=True)
    memory.deliver(customer_mail(1))
    bad = memory.deliver(customer_mail(2, body="x" * 5000))
    connector = connector_factory(plugins=[SourcePlugin(memory.as_mailbox())],
                                  connector={"max_message_bytes": 4000})
    runner = Runner(connector.config, connector)
    first, second = runner.poll(), runner.poll()
    assert (first.fetched, first.tickets, first.quarantined) == (2, 1, 1)
    assert (second.fetched, second.known) == (0, 2)
    assert memory.acknowledged == [(bad, OutcomeKind.QUARANTINED)]
    assert len(memory.messages) == 2  # kept


def test_without_a_mailbox_run_says_which_section_to_fill_in(
    connector_factory: Callable[..., Connector],
) -> None:
    connector = connector_factory()
    with pytest.raises(ConfigError, match=r"pop3.host: no mailbox to read: give \[pop3\] or"):
        Runner(connector.config, connector)


def test_two_mailboxes_in_one_runner_are_refused_by_name(
    connector_factory: Callable[..., Connector],
) -> None:
    boxes = (MemoryMailbox("a").as_mailbox(), MemoryMailbox("b").as_mailbox())
    connector = connector_factory(plugins=[SourcePlugin(*boxes)])
    with pytest.raises(ConfigError, match=r"a Runner serves one mailbox .* memory a, memory b"):
        Runner(connector.config, connector)


class WaitingSession(_MemorySession):
    """A session that waits for mail on the server (like IMAP IDLE)."""

    waits: list[float]
    fail_waits = 0

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> bool:
        self.waits.append(seconds)
        if WaitingSession.fail_waits:
            WaitingSession.fail_waits -= 1
            self.connected = False
            raise SourceError("connection dropped while waiting")
        if len(self.waits) >= 3:
            stop.set()
        return True


def test_a_session_that_can_wait_stays_open_and_waits_instead_of_sleeping(
    connector_factory: Callable[..., Connector],
) -> None:
    memory = MemoryMailbox()
    waits: list[float] = []

    def open_session() -> WaitingSession:
        memory.sessions += 1
        session = WaitingSession(memory)
        session.waits = waits
        return session

    memory.deliver(customer_mail(1))
    mailbox = Mailbox(name="memory", kind="memory", open_session=open_session,
                      poll_interval=7.0, reconnect_delay=0.01)
    connector = connector_factory()
    sleeps = Sleeps()
    runner = Runner(connector.config, connector, mailbox=mailbox, sleep=sleeps)
    WaitingSession.fail_waits = 1
    assert runner.run() == 0
    # The first wait failed: one back-off, one reconnect; then it waited on the new session.
    assert waits == [7.0, 7.0, 7.0]
    assert memory.sessions == 2
    assert len(sleeps) == 1 and sleeps[0] < 0.02  # the back-off, never poll_interval
    assert memory.messages == {}


def test_a_service_serves_every_registered_mailbox_at_once(tmp_path: Path) -> None:
    """Plugin mailboxes and the built-in ones alike: one Runner (and store connection) per
    mailbox, each in its own thread; two with one name are refused."""
    boxes = [MemoryMailbox(name) for name in ("forms", "rmm")]
    for box in boxes:
        for n in range(3):
            box.deliver(build_message(sender=f"u{n}@acme.example", subject=f"{box.name} {n}"))
    url = f"sqlite:///{tmp_path / 'commit.db'}"
    config = make_config(state_dir=tmp_path / "state", store={"url": url})
    plugin = SourcePlugin(*(b.as_mailbox() for b in boxes))

    def factory(cfg: Config) -> Connector:
        return Connector.from_config(cfg, host=make_host(plugin))

    assert Service(config, factory).run(once=True) == 0
    assert all(not b.messages and len(b.acknowledged) == 3 for b in boxes)
    with open_store(url) as store:
        assert sorted({r.source.name for r in store.iter_processed()}) == ["forms", "rmm"]
    twins = SourcePlugin(MemoryMailbox("x").as_mailbox(), MemoryMailbox("x").as_mailbox())
    with pytest.raises(ConfigError, match="two mailboxes are named 'x'"):
        Service(config, lambda cfg: Connector.from_config(cfg, host=make_host(twins))).run()
