"""Mail written to hurt the operator rather than the help desk: escape sequences for the
terminal, a subject of megabytes, a Return-Path naming victims, and quarantined copies that
hold passwords."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from commit_email.cli import main
from commit_email.model import OutcomeKind, SourceRef
from commit_email.quarantine import Quarantine
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from tests.shared import DIRECTORY, ROOT

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x9b6n\u202eevil"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    target = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", target, ignore=shutil.ignore_patterns("state"))
    return target


def test_escape_sequences_in_a_subject_never_reach_the_terminal(demo: Path):
    config = str(demo / "commit-email.toml")
    assert main(["accounts", "--config", config, "import", str(demo / "accounts.csv")],
                out=io.StringIO()) == 0
    hostile = demo / "hostile.eml"
    hostile.write_bytes(build_message(sender="jane@acme.example",
                                      subject=f"Printer {ESCAPES}").replace(b"\r\n", b"\n"))
    for argv in (["process", "--config", config, str(hostile)],
                 ["inspect", "--config", config, str(hostile)],
                 ["tickets", "--config", config]):
        out = io.StringIO()
        assert main(argv, out=out) == 0, argv
        text = out.getvalue()
        assert "Printer" in text, argv
        for char in "\x1b\x07\x9b\u202e":
            assert char not in text, (argv, char)
        assert "\\x1b" in text, argv


def test_a_five_megabyte_subject_is_not_echoed_in_the_auto_response():
    mailer = RecordingMailer()
    c = make_connector(make_config(smtp={"host": "127.0.0.1"}), accounts=DIRECTORY,
                       mailer=mailer)
    # Written by hand: the email package's own folding of such a header takes seconds.
    words = " ".join(["=?utf-8?q?Hilfe_=C3=A4?="] * 200_000)  # 5 MB of encoded words
    raw = (f"From: {'N' * 10_000} <jane@acme.example>\r\nTo: support@helpdesk.example\r\n"
           f"Subject: {words}\r\nMessage-ID: <big@acme.example>\r\n\r\nHelp\r\n").encode()
    assert len(raw) > 5_000_000
    outcome = c.process(raw)
    assert outcome.kind is OutcomeKind.TICKET_CREATED
    (answer,) = mailer.of_kind("auto_response")
    assert len(answer.raw) < 20_000


def test_a_return_path_of_two_addresses_gets_no_auto_response():
    mailer = RecordingMailer()
    c = make_connector(make_config(smtp={"host": "127.0.0.1"}), accounts=DIRECTORY,
                       mailer=mailer)
    raw = build_message(sender="jane@acme.example", headers={
        "Return-Path": "<victim9@evil.example>, <victim10@evil.example>"})
    assert c.process(raw).kind is OutcomeKind.TICKET_CREATED
    for mail in mailer.sent:
        assert not any("victim" in r for r in mail.recipients)
        assert b"victim" not in mail.raw.split(b"\r\n\r\n")[0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_quarantined_copies_are_readable_by_their_owner_only(tmp_path: Path):
    old = os.umask(0o022)
    try:
        quarantine = Quarantine(tmp_path / "state" / "quarantine")
        entry = quarantine.add(b"Password: s3cret\r\n\r\n", reason="test",
                               source=SourceRef(kind="file", name="x.eml"))
    finally:
        os.umask(old)
    for path in (tmp_path / "state", tmp_path / "state" / "quarantine"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for suffix in (".eml", ".json"):
        path = tmp_path / "state" / "quarantine" / f"{entry.id}{suffix}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("entry_id", ["../../etc/passwd", "..", "x/y", "20261207T000000-zzzz",
                                      "20261207T000000-0000000a\\..\\x"])
def test_a_quarantine_id_is_never_a_path(tmp_path: Path, entry_id: str):
    with pytest.raises(KeyError):
        Quarantine(tmp_path).get(entry_id)
