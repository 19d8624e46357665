"""The SMTP benchmark fails, instead of reporting a number, when a mail was lost, arrived
twice, arrived without TLS or login, or stayed unsent (its check of every run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import smtp_bench
from commit_email.model import OutgoingMail
from commit_email.store import open_store


def outbox(tmp_path: Path, count: int, *, sent: int) -> tuple[Path, list[str]]:
    """A store whose outbox holds ``count`` answers to different mails, ``sent`` sent."""
    db = tmp_path / "commit.db"
    store = open_store(f"sqlite:///{db}")
    ids = []
    for n in range(count):
        mid = f"answer{n}@commit-email.msp.example"
        raw = (f"Message-ID: <{mid}>\r\nReferences: <customer{n}@cust.example>\r\n\r\nhi\r\n"
               ).encode()
        row = store.enqueue_mail(OutgoingMail(kind="auto_response", sender="s@msp.example",
                                              recipients=(f"c{n}@cust.example",), raw=raw,
                                              message_id=mid))
        if n < sent:
            store.mark_mail_sent(row)
        ids.append(mid)
    store.close()
    return db, ids


def stats(ids: list[str], **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"connections": 1, "mails": len(ids),
                            "message_ids": dict.fromkeys(ids, 1), "not_tls": 0,
                            "not_logged_in": 0, "mail_commands": len(ids),
                            "pipelined": len(ids)}
    data.update(changes)
    return data


OUTCOMES = [{"outcome": "ticket_created"}] * 4


def test_a_complete_run_is_reported(tmp_path: Path) -> None:
    db, ids = outbox(tmp_path, 4, sent=4)
    record = smtp_bench.check_run("t", db, OUTCOMES, 4, stats(ids, connections=2))
    assert record["delivered_once"] == 4
    assert record["mails_causing_outgoing"] == 4
    assert record["connections_per_1000_sent"] == 500.0


@pytest.mark.parametrize(("why", "change"), [
    ("arrived more than once", lambda ids: stats(ids, message_ids={**dict.fromkeys(ids, 1),
                                                                   ids[0]: 2})),
    ("never arrived", lambda ids: stats(ids, message_ids=dict.fromkeys(ids[1:], 1))),
    ("not in the outbox", lambda ids: stats(ids, message_ids={**dict.fromkeys(ids, 1),
                                                              "other@x": 1})),
    ("without TLS", lambda ids: stats(ids, not_tls=1)),
])
def test_a_run_that_did_not_deliver_each_mail_once_fails(
        tmp_path: Path, why: str, change: Callable[[list[str]], dict[str, Any]]) -> None:
    db, ids = outbox(tmp_path, 4, sent=4)
    with pytest.raises(SystemExit, match=why):
        smtp_bench.check_run("t", db, OUTCOMES, 4, change(ids))


def test_mail_left_in_the_outbox_fails(tmp_path: Path) -> None:
    db, ids = outbox(tmp_path, 4, sent=3)
    with pytest.raises(SystemExit, match="1 of 4 outgoing mails not sent"):
        smtp_bench.check_run("t", db, OUTCOMES, 4, stats(ids))


def test_a_corpus_with_too_little_outgoing_mail_fails(tmp_path: Path) -> None:
    db, ids = outbox(tmp_path, 1, sent=1)
    with pytest.raises(SystemExit, match="only 1 of 4 mails caused outgoing mail"):
        smtp_bench.check_run("t", db, OUTCOMES, 4, stats(ids))
