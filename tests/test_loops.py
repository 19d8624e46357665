"""The loop guard: every layer gives a reason, and ordinary customer mail gets none."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commit_email.config import Config
from commit_email.errors import ConfigError
from commit_email.loops import LoopGuard, robot_sender_reason
from commit_email.message import Message
from commit_email.model import utcnow
from commit_email.store import SQLiteStore, open_store
from commit_email.testing import build_message, make_config, memory_store

NOW = utcnow()


def config(**loop_protection: object) -> Config:
    return make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": "127.0.0.1", "from_address": "noc@acme.example"},
        loop_protection=loop_protection,
    )


def msg(**kwargs: object) -> Message:
    kwargs.setdefault("sender", "jane@customer.example")
    return Message.from_bytes(build_message(**kwargs))  # type: ignore[arg-type]


def reason(message: Message, *, cfg: Config | None = None,
           store: SQLiteStore | None = None) -> str | None:
    return LoopGuard(cfg or config()).no_response_reason(message, store or memory_store(), NOW)


def test_an_ordinary_customer_mail_may_be_answered() -> None:
    assert reason(msg()) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Auto-Submitted": "auto-generated"}, "Auto-Submitted: auto-generated"),
        ({"Auto-Submitted": "Auto-Generated (cron)"}, "Auto-Submitted: auto-generated"),
        ({"Auto-Submitted": "auto-replied (vacation)"}, "auto-reply"),
        ({"Auto-Submitted": "auto-notified; owner-email=x@y.example"}, "auto-notified"),
        ({"Auto-Submitted": "auto-replied"}, "auto-reply"),
        ({"Precedence": "bulk"}, "Precedence: bulk"),
        ({"Precedence": "junk"}, "Precedence: junk"),
        ({"Precedence": "list"}, "Precedence: list"),
        ({"Precedence": "auto_reply"}, "auto-reply"),
        ({"X-Auto-Response-Suppress": "OOF, AutoReply"}, "X-Auto-Response-Suppress"),
        ({"List-Id": "<users.lists.example>"}, "mailing list"),
        ({"List-Unsubscribe": "<mailto:leave@lists.example>"}, "mailing list"),
        ({"X-Loop": "helpdesk@other.example"}, "X-Loop"),
        ({"X-Commit-Email-Loop": "acme.example"}, "X-Commit-Email-Loop"),
        ({"Return-Path": "<>"}, "empty Return-Path"),
    ],
)
def test_header_layers_refuse_with_a_reason(headers: dict[str, str], expected: str) -> None:
    got = reason(msg(headers=headers))

    assert got is not None
    assert expected in got


def test_auto_submitted_no_is_a_person() -> None:
    assert reason(msg(headers={"Auto-Submitted": "no"})) is None


@pytest.mark.parametrize(
    "sender",
    ["MAILER-DAEMON@mx.customer.example", "postmaster@customer.example",
     "noreply@saas.example", "no-reply@saas.example", "do-not-reply@shop.example",
     "donotreply@bank.example", "bounces+1234@mailer.example", "ppp-request@lists.example",
     "owner-ppp@lists.example", "ppp-bounces@lists.example"],
)
def test_robot_senders_are_not_answered(sender: str) -> None:
    got = reason(msg(sender=sender))

    assert got is not None and "robot" in got


def test_robot_name_is_judged_on_the_local_part_only() -> None:
    assert robot_sender_reason("jane.noreply-fan@customer.example") is None
    assert robot_sender_reason("reply@customer.example") is None
    assert robot_sender_reason("it-admin@customer.example") is None


def test_old_mailman_digest_without_list_id_is_not_answered() -> None:
    got = reason(msg(sender="jane@customer.example",
                     headers={"Sender": "ppp-owner@lists.example",
                              "X-Mailman-Version": "2.0.4"}))

    assert got is not None and "X-Mailman-Version" in got


def test_a_list_sender_header_alone_is_enough() -> None:
    got = reason(msg(headers={"Sender": "Lists <ppp-bounces@lists.example>"}))

    assert got is not None and "ppp-bounces@lists.example" in got


def test_return_path_is_checked_too() -> None:
    got = reason(msg(headers={"Return-Path": "<bounces@newsletter.example>"}))

    assert got is not None and "bounces@newsletter.example" in got


@pytest.mark.parametrize(
    "sender", ["support@acme.example", "HELPDESK@acme.example", "noc@acme.example"]
)
def test_the_connectors_own_addresses_are_not_answered(sender: str) -> None:
    got = reason(msg(sender=sender))

    assert got is not None


def test_our_own_message_id_coming_back_is_not_answered() -> None:
    store = memory_store()
    with store.transaction():
        store.record_sent_message_id("1.abc@commit-email.acme.example", "TKT1")

    got = reason(msg(message_id="1.abc@commit-email.acme.example"), store=store)

    assert got is not None and "our own message" in got


def test_a_dsn_is_not_answered() -> None:
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\n"
        b"To: support@acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <dsn.1@mx.customer.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; jane@customer.example\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\n\r\n--b--\r\n"
    )

    assert reason(Message.from_bytes(raw)) is not None


@pytest.mark.parametrize(
    ("entry", "sender", "refused"),
    [
        ("jane@customer.example", "Jane@Customer.example", True),
        ("*@customer.example", "jane@customer.example", True),
        ("*@customer.example", "jane@sub.customer.example", False),
        (r"^alerts?-.*@rmm\.example$", "alert-7@rmm.example", True),
        (r"^alerts?-.*@rmm\.example$", "jane@customer.example", False),
    ],
)
def test_ignore_senders(entry: str, sender: str, refused: bool) -> None:
    got = reason(msg(sender=sender), cfg=config(ignore_senders=[entry]))

    assert (got is not None and "ignore_senders" in got) is refused


def test_a_bad_ignore_senders_regex_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"ignore_senders\[1\]"):
        config(ignore_senders=["ok@x.example", "(unclosed"])


def test_rate_limit_counts_per_sender_inside_the_window() -> None:
    store = memory_store()
    guard = LoopGuard(config(max_auto_responses_per_sender=2, auto_response_window=600))
    jane = msg()
    with store.transaction():
        guard.record_response(jane, store, NOW - timedelta(seconds=700))
        guard.record_response(jane, store, NOW - timedelta(seconds=100))
        assert guard.no_response_reason(jane, store, NOW) is None  # one inside the window
        guard.record_response(msg(sender="JANE@customer.example"), store,
                              NOW - timedelta(seconds=50))

        got = guard.no_response_reason(jane, store, NOW)

    assert got is not None and got.startswith("rate limit: 2 auto-responses")
    assert guard.no_response_reason(msg(sender="bob@customer.example"), store, NOW) is None


def test_rate_limit_survives_a_restart(store_url: str) -> None:
    guard = LoopGuard(config(max_auto_responses_per_sender=1))
    with open_store(store_url) as store, store.transaction():
        guard.record_response(msg(), store, NOW)

    with open_store(store_url) as reopened:
        got = guard.no_response_reason(msg(), reopened, NOW + timedelta(seconds=1))

    assert got is not None and "rate limit" in got


def test_a_new_verp_return_path_on_every_mail_does_not_reset_the_limit() -> None:
    store = memory_store()
    guard = LoopGuard(config(max_auto_responses_per_sender=2))

    def verp(n: int) -> Message:
        return msg(headers={"Return-Path": f"<srs0=h{n}=jane=customer.example@fwd.example>"})

    with store.transaction():
        for n in range(2):
            assert guard.no_response_reason(verp(n), store, NOW) is None
            guard.record_response(verp(n), store, NOW)

        got = guard.no_response_reason(verp(2), store, NOW)

    assert got is not None and "jane@customer.example" in got


def test_responder_address_prefers_the_envelope_sender() -> None:
    guard = LoopGuard(config())

    assert guard.responder_address(
        msg(headers={"Return-Path": "<Jane.Bounce@customer.example>"})
    ) == "jane.bounce@customer.example"
    assert guard.responder_address(msg()) == "jane@customer.example"


# Properties -------------------------------------------------------------------------------

_header_names = st.sampled_from([
    "Auto-Submitted", "Precedence", "X-Auto-Response-Suppress", "List-Id", "X-Loop",
    "Return-Path", "Sender", "Subject", "From", "Content-Type", "Message-ID", "In-Reply-To",
])
_header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF),
                         max_size=40)


@given(st.lists(st.tuples(_header_names, _header_values), max_size=8),
       st.binary(max_size=200))
def test_the_guard_never_raises_on_arbitrary_headers(
    headers: list[tuple[str, str]], body: bytes
) -> None:
    raw = b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogateescape") for k, v in headers)
    message = Message.from_bytes(raw + b"\r\n" + body)

    got = reason(message)

    assert got is None or isinstance(got, str)


@given(st.sampled_from(["auto-generated", "auto-replied", "auto-notified", "x-anything"]),
       st.sampled_from(["", " (comment)", "; owner-email=a@b.example"]))
def test_any_auto_submitted_keyword_but_no_blocks_the_answer(keyword: str, rest: str) -> None:
    assert reason(msg(headers={"Auto-Submitted": keyword + rest})) is not None
