"""The IMAP source against a real Dovecot: TLS, login, folders, sizes, MOVE and its fallback."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import imapclient
import pytest

import commit_email.imap
from commit_email.errors import ConfigError, LoginError, SourceError
from commit_email.imap import ImapMailbox
from commit_email.model import OutcomeKind
from commit_email.testing import build_message
from tests.dovecot_fixtures import DovecotServer, as_served
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.server

TICKET = OutcomeKind.TICKET_CREATED


def mail(n: int, **kw: Any) -> bytes:
    return build_message(sender=f"user{n}@acme.example", message_id=f"m{n}@acme.example",
                         subject=f"Printer {n}", date="Sat, 28 Nov 2026 10:00:00 +0000", **kw)


def mailbox(server: DovecotServer, security: str = "plain", *, max_message_bytes: int = 0,
            **overrides: Any) -> ImapMailbox:
    return ImapMailbox(server.imap_config(security, **overrides),
                       max_message_bytes=max_message_bytes)


def other_client(server: DovecotServer) -> imapclient.IMAPClient:
    """A second, ordinary IMAP client on the same mailbox (a person's mail program)."""
    client = imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=10)
    client.login(server.user, server.password)
    return client


# -- reading ---------------------------------------------------------------------------------


def test_messages_are_listed_by_uidvalidity_and_uid_and_read_byte_exact_unseen(
    imap_dovecot: DovecotServer,
) -> None:
    sent = [mail(1), mail(2, body="a line\n" * 500), mail(3)]
    imap_dovecot.deliver_many(sent)
    with mailbox(imap_dovecot, after="keep") as box:
        ids = box.message_ids()
        assert ids == [f"{box.uidvalidity}:{uid}" for uid in (1, 2, 3)]
        assert box.name == f"{imap_dovecot.user}@127.0.0.1:{imap_dovecot.imap_port}/INBOX"
        fetched = list(box.fetch(ids))
    assert fetched == [(i, as_served(raw)) for i, raw in zip(ids, sent, strict=True)]
    # BODY.PEEK[]: nothing was marked read by being fetched.
    client = other_client(imap_dovecot)
    client.select_folder("INBOX", readonly=True)
    assert all(b"\\Seen" not in f for f in client.get_flags([1, 2, 3]).values())
    client.logout()


def test_fetch_reads_in_batches_and_skips_what_someone_else_expunged(
    imap_dovecot: DovecotServer,
) -> None:
    imap_dovecot.deliver_many([mail(n) for n in range(150)])
    with mailbox(imap_dovecot, after="keep") as box:
        ids = box.message_ids()
        client = other_client(imap_dovecot)
        client.select_folder("INBOX")
        client.delete_messages([5])
        client.expunge()
        client.logout()
        got = [i for i, _ in box.fetch(ids)]
    assert len(got) == 149 and f"{box.uidvalidity}:5" not in got


def test_batches_are_read_ahead_and_closing_early_leaves_the_session_in_step(
    imap_dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several batches are read by a thread one batch ahead; a caller that stops after the
    first message (a stop request, an error) gets the thread joined with its FETCH read to
    the end, so the next command on the session gets its own reply."""
    monkeypatch.setattr(commit_email.imap, "_FETCH_BATCH", 4)
    sent = [mail(n) for n in range(20)]
    imap_dovecot.deliver_many(sent)
    with mailbox(imap_dovecot) as box:
        ids = box.message_ids()
        assert [raw for _, raw in box.fetch(ids)] == [as_served(raw) for raw in sent]
        fetched = box.fetch(ids)
        first_id, _ = next(fetched)
        fetched.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("imap-fetch")]
        assert box.acknowledge([(first_id, TICKET)]) == []
        assert box.message_ids() == ids[1:]
    assert len(imap_dovecot.folder_files("Processed")) == 1


# -- security and login ------------------------------------------------------------------------


def test_imaps_with_the_ca_file(imap_dovecot_tls: DovecotServer) -> None:
    imap_dovecot_tls.deliver(mail(1))
    with mailbox(imap_dovecot_tls, "ssl") as box:
        assert len(box.message_ids()) == 1


def test_starttls_upgrades_before_the_login(imap_dovecot_tls: DovecotServer) -> None:
    """The TLS server refuses plaintext logins; STARTTLS makes this one work."""
    imap_dovecot_tls.deliver(mail(1))
    with mailbox(imap_dovecot_tls, "starttls") as box:
        assert len(box.message_ids()) == 1


def test_starttls_never_falls_back_to_plaintext(imap_dovecot: DovecotServer) -> None:
    # The plain server offers no STARTTLS: the password must not be sent in clear.
    with pytest.raises(SourceError, match="STARTTLS failed, refusing to continue without TLS"):
        mailbox(imap_dovecot, "starttls").connect()


def test_an_unverifiable_certificate_is_refused(imap_dovecot_tls: DovecotServer) -> None:
    with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
        mailbox(imap_dovecot_tls, "ssl", ca_file="").connect()


def test_authenticate_plain(imap_dovecot: DovecotServer) -> None:
    with mailbox(imap_dovecot, auth="plain") as box:
        assert box.message_ids() == []


def test_a_wrong_password_is_a_permanent_login_error(dovecot_factory: Any) -> None:
    server = dovecot_factory()  # its own: a failed login slows later ones down (anvil)
    with pytest.raises(LoginError, match=r"log in: .*AUTHENTICATIONFAILED") as info:
        mailbox(server, password="wrong").connect()
    assert info.value.permanent
    assert "wrong" not in str(info.value)


def test_a_missing_folder_is_a_source_error(imap_dovecot: DovecotServer) -> None:
    with pytest.raises(SourceError, match="SELECT Nowhere"):
        mailbox(imap_dovecot, folder="Nowhere").connect()


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch,
                                              imap_dovecot: DovecotServer) -> None:
    import builtins

    real_import = builtins.__import__

    def no_imapclient(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "imapclient":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "imapclient")
    monkeypatch.setattr(builtins, "__import__", no_imapclient)
    with pytest.raises(ConfigError, match=r"pip install 'commit-email\[imap\]'"):
        mailbox(imap_dovecot).connect()


# -- after the outcome -------------------------------------------------------------------------


def test_move_creates_the_processed_folder_and_moves_each_message_once(
    imap_dovecot: DovecotServer, caplog: pytest.LogCaptureFixture,
) -> None:
    imap_dovecot.deliver_many([mail(1), mail(2), mail(3)])
    with caplog.at_level(logging.INFO, logger="commit_email.imap"), \
            mailbox(imap_dovecot) as box:
        ids = box.message_ids()
        assert box.acknowledge([(ids[0], TICKET), (ids[2], TICKET)]) == []
        assert box.message_ids() == [ids[1]]
    assert "created folder Processed" in caplog.text
    assert len(imap_dovecot.folder_files("Processed")) == 2
    assert len(imap_dovecot.message_files()) == 1
    client = other_client(imap_dovecot)
    assert "Processed" in [name for _, _, name in client.list_sub_folders()]  # mail clients show it
    client.logout()


def test_quarantined_mail_goes_to_the_quarantine_folder(imap_dovecot: DovecotServer) -> None:
    imap_dovecot.deliver_many([mail(1), mail(2)])
    with mailbox(imap_dovecot, quarantine_folder="Failed") as box:
        ids = box.message_ids()
        box.acknowledge([(ids[0], TICKET), (ids[1], OutcomeKind.QUARANTINED)])
    assert len(imap_dovecot.folder_files("Processed")) == 1
    assert len(imap_dovecot.folder_files("Failed")) == 1
    assert imap_dovecot.message_files() == []


def test_delete_expunges_only_these_messages_never_what_others_flagged(
    imap_dovecot: DovecotServer,
) -> None:
    imap_dovecot.deliver_many([mail(1), mail(2), mail(3)])
    client = other_client(imap_dovecot)
    client.select_folder("INBOX")
    client.delete_messages([3])  # a person flagged it \Deleted and has not expunged yet
    with mailbox(imap_dovecot, after="delete") as box:
        ids = box.message_ids()
        box.acknowledge([(ids[0], TICKET), (ids[1], TICKET)])
        assert box.message_ids() == [ids[2]]  # still there: no plain EXPUNGE was sent
    client.logout()
    assert len(imap_dovecot.message_files()) == 1
    assert imap_dovecot.folder_files("Processed") == []


def test_keep_leaves_everything_in_place(imap_dovecot: DovecotServer) -> None:
    imap_dovecot.deliver_many([mail(1), mail(2)])
    with mailbox(imap_dovecot, after="keep") as box:
        assert box.keeps_messages
        ids = box.message_ids()
        box.acknowledge([(i, TICKET) for i in ids])
        assert box.message_ids() == ids


def test_an_id_of_an_older_uidvalidity_is_refused_not_guessed(
    imap_dovecot: DovecotServer,
) -> None:
    imap_dovecot.deliver(mail(1))
    with mailbox(imap_dovecot) as box:
        (id_,) = box.message_ids()
        stale = f"{box.uidvalidity - 1}:1"
        assert box.acknowledge([(stale, TICKET)]) == [(stale, f"UIDVALIDITY is "
                                                       f"{box.uidvalidity} now")]
        assert box.message_ids() == [id_]


def test_without_move_it_copies_flags_and_uid_expunges(dovecot_factory: Any) -> None:
    server = dovecot_factory(imap_capability="IMAP4rev1 LITERAL+ IDLE UIDPLUS")
    server.deliver_many([mail(1), mail(2)])
    with FaultProxy(server.host, server.imap_port, protocol="imap") as proxy:
        with mailbox(server, port=proxy.port) as box:
            assert "MOVE" not in box.capabilities
            ids = box.message_ids()
            assert box.acknowledge([(ids[0], TICKET)]) == []
            assert box.message_ids() == [ids[1]]
        sent = [c.split(" ", 1)[1] for c in proxy.commands if " " in c]
    assert "UID COPY 1 \"Processed\"" in sent, sent
    assert "UID STORE 1 +FLAGS.SILENT (\\Deleted)" in sent
    assert "UID EXPUNGE 1" in sent
    assert "EXPUNGE" not in sent and not any(c.startswith("MOVE") for c in sent)
    assert len(server.folder_files("Processed")) == 1


def test_a_server_without_move_or_uidplus_is_refused_unless_mail_is_kept(
    dovecot_factory: Any,
) -> None:
    server = dovecot_factory(imap_capability="IMAP4rev1 LITERAL+ IDLE")
    with pytest.raises(SourceError, match="neither MOVE nor UIDPLUS"):
        mailbox(server).connect()
    with mailbox(server, after="keep") as box:
        assert box.message_ids() == []


# -- sizes -----------------------------------------------------------------------------------


def test_oversized_mail_is_moved_aside_without_being_downloaded(
    imap_dovecot: DovecotServer, caplog: pytest.LogCaptureFixture,
) -> None:
    imap_dovecot.deliver_many([mail(1), mail(2, body="x" * 200_000)])
    with caplog.at_level(logging.WARNING, logger="commit_email.imap"), \
            mailbox(imap_dovecot, quarantine_folder="Too big", max_message_bytes=50_000) as box:
        ids = box.message_ids()
        fetched = [i for i, _ in box.fetch(ids)]
    assert fetched == [ids[0]]
    assert "over connector.max_message_bytes (50000): moved to Too big" in caplog.text
    assert len(imap_dovecot.folder_files("Too big")) == 1


def test_oversized_mail_without_a_quarantine_folder_is_left_and_logged_once(
    imap_dovecot: DovecotServer, caplog: pytest.LogCaptureFixture,
) -> None:
    imap_dovecot.deliver(mail(1, body="x" * 200_000))
    with caplog.at_level(logging.WARNING, logger="commit_email.imap"), \
            mailbox(imap_dovecot, max_message_bytes=50_000) as box:
        for _ in range(3):
            assert list(box.fetch(box.message_ids())) == []
    assert caplog.text.count("left in INBOX without downloading it") == 1
    assert len(imap_dovecot.message_files()) == 1


# -- IDLE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["plain", "ssl"])
def test_idle_returns_soon_after_new_mail_arrives(
    security: str, request: pytest.FixtureRequest,
) -> None:
    fixture = "imap_dovecot_tls" if security == "ssl" else "imap_dovecot"
    imap_dovecot: DovecotServer = request.getfixturevalue(fixture)
    with mailbox(imap_dovecot, security) as box:
        assert box.message_ids() == []
        timer = threading.Timer(0.5, imap_dovecot.deliver, args=(mail(1),))
        timer.start()
        started = time.monotonic()
        assert box.wait_for_mail(30, threading.Event())
        waited = time.monotonic() - started
        timer.join()
        assert len(box.message_ids()) == 1
    assert 0.4 < waited < 10


def test_idle_ends_when_stop_is_set_and_is_off_when_configured(
    imap_dovecot: DovecotServer,
) -> None:
    stop = threading.Event()
    with mailbox(imap_dovecot) as box:
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        assert box.wait_for_mail(30, stop)
        assert time.monotonic() - started < 3
    with mailbox(imap_dovecot, idle=False) as box:
        assert box.wait_for_mail(30, threading.Event()) is False
