"""The pipeline's guarantees: one outcome per message, duplicates, quarantine, dry runs."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from commit_email import hookimpl
from commit_email.config import Config
from commit_email.message import Message
from commit_email.model import Match, Outcome, OutcomeKind, utcnow
from commit_email.pipeline import Connector, Context
from commit_email.protocols import AccountDirectory
from commit_email.store import SQLiteStore
from commit_email.testing import RecordingMailer, build_message
from tests.shared import GLOBEX

ConnectorFactory = Callable[..., Connector]


def test_the_same_message_twice_is_a_duplicate(connector: Connector) -> None:
    raw = build_message(sender="it@globex.example")
    first = connector.process(raw)
    second = connector.process(raw)
    assert first.kind is OutcomeKind.TICKET_CREATED
    assert second.kind is OutcomeKind.DUPLICATE
    assert second.ticket == first.ticket
    assert len(connector.sink.list_tickets()) == 1


def test_a_copy_with_other_received_headers_is_a_duplicate(connector: Connector) -> None:
    raw = build_message(sender="it@globex.example", message_id="same@globex.example")
    copy = b"Received: from relay2.example by mx.example; Mon, 23 Nov 2026 09:00:00 +0000\r\n"
    assert connector.process(raw).kind is OutcomeKind.TICKET_CREATED
    assert connector.process(copy + raw).kind is OutcomeKind.DUPLICATE


class ExplodingStage:
    name = "exploding"
    order = 350

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        # Write something first: the quarantine must roll it back.
        ctx.sink.add_record("ASSET", {"FLDASTNAME": "half-written"})
        raise RuntimeError("boom")


class ExplodingPlugin:
    @hookimpl
    def commit_email_register_stages(self) -> Sequence[Any]:
        return [ExplodingStage()]


def test_a_failing_stage_quarantines_the_message_and_rolls_back(
    connector_factory: ConnectorFactory,
) -> None:
    connector = connector_factory(plugins=[ExplodingPlugin()])
    raw = build_message(sender="it@globex.example")
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.QUARANTINED
    assert "RuntimeError: boom" in outcome.detail
    [entry] = connector.quarantine.entries()
    assert connector.quarantine.get(entry.id)[1] == raw  # byte for byte
    assert connector.sink.list_tickets() == []
    rows = connector.state._execute("SELECT count(*) FROM records").fetchone()  # type: ignore[attr-defined]
    assert rows[0] == 0
    # The run goes on, and the same message again is not quarantined twice.
    assert connector.process(raw).kind is OutcomeKind.DUPLICATE
    assert connector.process(build_message(sender="x@y.example")).kind is \
        OutcomeKind.QUARANTINED


def test_replay_after_the_fix_gives_the_real_outcome(
    connector_factory: ConnectorFactory,
) -> None:
    store = SQLiteStore.in_memory()
    broken = connector_factory(plugins=[ExplodingPlugin()], store=store)
    raw = build_message(sender="it@globex.example")
    assert broken.process(raw).kind is OutcomeKind.QUARANTINED
    [entry] = broken.quarantine.entries()
    fixed = connector_factory(accounts=[], store=store)  # same store and state_dir, no plugin
    _, stored = fixed.quarantine.get(entry.id)
    outcome = fixed.process(stored, entry.source, replay=True)
    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert fixed.process(stored).kind is OutcomeKind.DUPLICATE


def test_oversized_mail_is_quarantined_not_parsed(connector_factory: ConnectorFactory) -> None:
    connector = connector_factory(connector={"max_message_bytes": 1000})
    raw = build_message(sender="it@globex.example", body="x" * 5000)
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.QUARANTINED
    assert "max_message_bytes" in outcome.detail
    assert connector.quarantine.get(next(connector.quarantine.entries()).id)[1] == raw


def test_inspect_routes_but_writes_nothing(connector: Connector, mailer: RecordingMailer) -> None:
    raw = build_message(sender="it@globex.example")
    result = connector.inspect(raw)
    assert result.outcome.kind is OutcomeKind.TICKET_CREATED
    assert ("match", f"email: Globex Ltd ({GLOBEX.rec_id})") in result.notes
    assert connector.sink.list_tickets() == []
    assert list(connector.state.iter_processed()) == []
    assert connector.state.pending_mail() == [] and mailer.sent == []
    # and processing afterwards is unaffected
    assert connector.process(raw).ticket == "1"


class VipMatcher:
    """A plugin that sends everything from vip.example to Globex."""

    @hookimpl
    def commit_email_match_account(
        self, message: Message, directory: AccountDirectory
    ) -> Match | None:
        if message.sender.endswith("@vip.example"):
            account = directory.get_account(GLOBEX.rec_id)
            assert account is not None
            return Match(account=account, how="plugin")
        return None


def test_a_plugin_matcher_runs_before_the_built_in_one(
    connector_factory: ConnectorFactory,
) -> None:
    connector = connector_factory(plugins=[VipMatcher()])
    vip = connector.process(build_message(sender="ceo@vip.example"))
    assert vip.kind is OutcomeKind.TICKET_CREATED and vip.account == GLOBEX.rec_id
    assert "plugin" in vip.detail
    # Returning None lets the built-in matcher decide.
    assert connector.process(build_message(sender="new@acme.example")).kind is \
        OutcomeKind.TICKET_CREATED


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.created: list[str] = []

    @hookimpl
    def commit_email_message_processed(self, message: Message | None, outcome: Outcome) -> None:
        self.seen.append((message.subject if message else "", outcome.kind.value))

    @hookimpl
    def commit_email_ticket_created(self, ticket: Any, context: Context) -> None:
        self.created.append(ticket.number)
        assert context.digest


def test_observers_see_every_outcome(connector_factory: ConnectorFactory) -> None:
    recorder = Recorder()
    connector = connector_factory(plugins=[recorder])
    connector.process(build_message(sender="it@globex.example", subject="one"))
    connector.process(build_message(sender="x@unknown.example", subject="two"))
    assert recorder.seen == [("one", "ticket_created"), ("two", "forwarded")]
    assert recorder.created == ["1"]


def test_failed_sends_stay_queued_and_are_retried(
    connector: Connector, mailer: RecordingMailer
) -> None:
    mailer.fail_next(1)
    outcome = connector.process(build_message(sender="x@unknown.example"))
    assert outcome.kind is OutcomeKind.FORWARDED  # the outcome stands even if SMTP fails
    [pending] = connector.state.pending_mail()
    assert pending.attempts == 1 and "simulated" in pending.last_error
    assert connector.flush_outbox() == 0  # not before smtp.retry_interval has passed
    later = utcnow() + timedelta(seconds=connector.config.smtp.retry_interval)
    connector.clock = lambda: later
    assert connector.flush_outbox() == 1
    assert connector.state.pending_mail() == []
    assert len(mailer.sent) == 1


def test_no_stage_claims_it_then_forward(connector_factory: ConnectorFactory) -> None:
    connector = connector_factory(email_to_ticket={"enabled": False})
    outcome = connector.process(build_message(sender="it@globex.example"))
    assert outcome.kind is OutcomeKind.FORWARDED and outcome.stage == "forward"


class RunawayStage:
    """A stage that never ends by itself and swallows every ``Exception`` on the way."""

    name = "runaway"
    order = 5

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        while True:
            with contextlib.suppress(Exception):
                ctx.check_time()


class SlowStage:
    """A stage that takes longer than the limit and has no loop to check in."""

    name = "slow"
    order = 5

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        time.sleep(0.4)
        return None


def _with_stage(stage: object) -> object:
    class StagePlugin:
        @hookimpl
        def commit_email_register_stages(self, config: Config) -> Sequence[Any]:
            return [stage]

    return StagePlugin()


@pytest.mark.parametrize("stage", [RunawayStage(), SlowStage()], ids=["runaway", "slow"])
def test_time_limit_quarantines_a_pathological_message(
    connector_factory: ConnectorFactory, stage: object
) -> None:
    connector = connector_factory(plugins=[_with_stage(stage)],
                                  connector={"message_time_limit": 0.2})
    started = time.monotonic()
    outcome = connector.process(build_message(sender="it@globex.example"))
    assert time.monotonic() - started < 3
    assert outcome.kind is OutcomeKind.QUARANTINED
    assert "MessageTimeout: processing took longer than 0.2 s" in outcome.detail
    assert connector.sink.list_tickets() == []  # rolled back, nothing half-done
    # The store is usable right after: the next message opens its ticket.
    follow_up = connector_factory(connector={"message_time_limit": 0.2})
    assert follow_up.process(build_message(sender="it@globex.example")).ticket


def test_time_limit_needs_no_signals(
    connector_factory: ConnectorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Windows: no SIGALRM, no setitimer. Ordinary mail still works and a runaway
    stage is still stopped."""
    for name in ("SIGALRM", "setitimer", "getitimer", "alarm", "ITIMER_REAL"):
        monkeypatch.delattr(signal, name, raising=False)
    plain = connector_factory()
    assert plain.process(build_message(sender="it@globex.example")).kind is \
        OutcomeKind.TICKET_CREATED
    runaway = connector_factory(plugins=[_with_stage(RunawayStage())],
                                connector={"message_time_limit": 0.2})
    assert runaway.process(build_message(sender="it@globex.example",
                                         message_id="r@x")).kind is OutcomeKind.QUARANTINED


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="a POSIX interval timer")
def test_a_hosts_interval_timer_and_alarm_handler_survive_process(
    connector_factory: ConnectorFactory,
) -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 300)
    try:
        connector = connector_factory(connector={"message_time_limit": 0.5})
        connector.process(build_message(sender="it@globex.example"))
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 290 < remaining <= 300  # the host's timer still runs, untouched
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_time_limit_holds_in_a_worker_thread(connector_factory: ConnectorFactory) -> None:
    connector = connector_factory(plugins=[_with_stage(RunawayStage())],
                                  connector={"message_time_limit": 0.2})
    outcomes: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(connector.process(build_message(sender="it@globex.example")))
    )
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert [o.kind for o in outcomes] == [OutcomeKind.QUARANTINED]


def test_thousands_of_xml_transactions_stop_at_the_time_limit(
    connector_factory: ConnectorFactory,
) -> None:
    """No plugin involved: the engine's own loops check the time."""
    one = ("<CommitCRMTransaction><ExternalApplicationName>x</ExternalApplicationName>"
           "<SendResponseToEmail>it@globex.example</SendResponseToEmail><Password>p</Password>"
           "<ReturnTransactionID>{n}</ReturnTransactionID><DataKind>ACCOUNT</DataKind>"
           "<RecordData><FLDCRDFULLNAME>x{n}</FLDCRDFULLNAME></RecordData>"
           "</CommitCRMTransaction>")
    body = "".join(one.format(n=n) for n in range(20000))
    connector = connector_factory(connector={"message_time_limit": 0.05},
                                  xml_api={"enabled": True, "password": "secret"})
    outcome = connector.process(build_message(sender="it@globex.example", body=body))
    assert outcome.kind is OutcomeKind.QUARANTINED, outcome
    assert "longer than 0.05 s" in outcome.detail


def test_a_bare_header_block_is_still_mail(connector: Connector) -> None:
    assert connector.process(b"From: \r\n\r\n").kind is OutcomeKind.FORWARDED


@pytest.mark.parametrize(("raw", "why"), [
    (b"", "an empty file"),
    (b"  \r\n\r\n", "an empty file"),
    (b"\x00\x01\x02", "binary data"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 40, "binary data"),
    (b"garbage" * 100, "no mail header fields"),
    (b"Shopping list: milk\nTodo: call Bob\n\nnothing else\n", "no mail header fields"),
])
def test_non_mail_is_quarantined_not_forwarded(
    connector: Connector, raw: bytes, why: str
) -> None:
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.QUARANTINED
    assert f"{why}, not an RFC 822 message" in outcome.detail
    (entry,) = connector.quarantine.entries()
    assert connector.quarantine.get(entry.id)[1] == raw  # kept byte for byte, replayable
