"""A reproducible corpus of help-desk mail and the Accounts it comes from.

The mix mirrors a real MSP support mailbox after an outage: customer requests (plain and
HTML alternative), replies carrying ticket tokens, monitoring alerts (Nagios, Icinga 2, Monit),
XML transactions, auto-replies and bounces, about 10% with 20-200 KB attachments and
a few percent in legacy charsets (iso-8859-1, windows-1252, iso-2022-jp, koi8-r). The average
message is about 24 KB, the size the issue's floor figure was measured on.

Everything derives from one seed: the same ``(count, seed)`` always yields the same bytes, and
the first N messages of a longer corpus are the N messages of a shorter one (one RNG, consumed
in order), so a smoke run checks a prefix of what the full run measures.

Importable API (other benchmarks use it)::

    generate(count, seed) -> list[bytes]
    iter_messages(count, seed) -> Iterator[bytes]      # streaming, for the memory benchmark
    accounts(n, seed, contacts=None) -> list[dict[str, str]]   # rows of the accounts CSV
    write_accounts_csv(path, rows)
    write_corpus(out_dir, count, seed) -> list[Path]

CLI: ``python benchmarks/gen_corpus.py --count 2000 --out /tmp/corpus`` writes
``DIR/messages/NNNNNN.eml`` and ``DIR/accounts.csv``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import quopri
import random
import sys
import textwrap
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

__all__ = [
    "ACCOUNT_COLUMNS",
    "SEED",
    "XML_PASSWORD",
    "accounts",
    "big_message",
    "generate",
    "iter_messages",
    "write_accounts_csv",
    "write_corpus",
]

SEED = 20261128
#: The password the XML transactions carry; a benchmark config enables the XML API with it.
XML_PASSWORD = "bench-secret"
#: The connector's own address in the generated mail (To: of customer mail).
SUPPORT = "support@msp.example"
ACCOUNT_COLUMNS = (
    "rec_id",
    "file_as",
    "email1",
    "email2",
    "account_number",
    "account_id",
    "field1",
    "field2",
    "field3",
    "field4",
    "kind",
    "parent",
    "active",
)
EPOCH = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

FIRST = (
    "Anna Ben Carla David Emma Felix Greta Hugo Ida Jonas Klara Lukas Mia Noah Olga Paul "
    "Rosa Sven Tina Uwe Vera Walter Yara Zoe Marie Pierre Sophie Louis Jan Eva"
).split()
LAST = (
    "Miller Schmidt Dubois Rossi Novak Jensen Kowalski Fischer Weber Wagner Becker Hoffmann "
    "Schulz Koch Richter Klein Wolf Neumann Schwarz Zimmermann Braun Hartmann Lange Krause"
).split()
WORDS = (
    "printer server backup mailbox outlook vpn firewall license password reset account "
    "invoice network switch laptop monitor update windows office share drive folder access "
    "error message since yesterday morning please could you check again urgent users cannot "
    "connect the and to of is in for with after before when our we have it not does work "
    "restart tried already attached screenshot log file timeout slow disk space quota "
    "certificate expired renewal scanner toner phone extension meeting room calendar sync"
).split()
PUBLIC = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "gmx.net")
SERVICES = ("HTTP", "PING", "SSH", "Disk /", "Load", "Swap", "SMTP", "MySQL", "Backup")

# (charset, sample text, Content-Transfer-Encoding) for the legacy-charset share.
LEGACY = (
    (
        "iso-8859-1",
        "Bonjour, l'imprimante du bureau ne répond plus depuis la mise à jour. "
        "Grüße aus München, Françoise",
        "quoted-printable",
    ),
    (
        "windows-1252",
        "Hi \u2013 the \u201cshared drive\u201d is gone again \u2026 "
        "it costs us \u20ac every hour.",
        "quoted-printable",
    ),
    ("iso-2022-jp", "お世話になっております。プリンターが動きません。至急ご確認ください。", "7bit"),
    (
        "koi8-r",
        "Здравствуйте! Не работает почта на сервере, пользователи не могут войти.",
        "base64",
    ),
)


PLAIN_HEAD = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
_CTE = {cs: cte for cs, _, cte in LEGACY}

# ---------------------------------------------------------------------------- accounts


def _rec_id(prefix: str, i: int) -> str:
    """A 20-character Commit-style REC ID, stable for an index."""
    return f"{prefix}{i:017d}"


def _domain(i: int) -> str:
    return f"cust{i:06d}.example"


def accounts(
    n: int = 5000, seed: int = SEED, *, contacts: int | None = None, employees: int = 20
) -> list[dict[str, str]]:
    """``n`` Accounts (unique domains), ``contacts`` secondary contacts (default ``n``) and a
    few employees, as rows of the accounts CSV. About a third of the Accounts carry their
    bare domain in email2, so domain matching is exercised too."""
    rng = random.Random(seed ^ 0xACC0)
    contacts = n if contacts is None else contacts
    rows: list[dict[str, str]] = []
    for i in range(n):
        dom = _domain(i)
        rows.append(
            _row(
                rec_id=_rec_id("CRD", i),
                file_as=f"Customer {i:06d} Ltd",
                email1=f"info@{dom}",
                email2=dom if rng.random() < 0.33 else f"office@{dom}",
                account_number=f"ACC-{i:06d}",
                account_id=str(10000 + i),
                field1=f"Site {i % 97}",
                field2=rng.choice(("Gold", "Silver", "Bronze")),
                kind="account",
            )
        )
    for j in range(contacts):
        parent = j % n if j < n else rng.randrange(n)
        first, last = FIRST[j % len(FIRST)], LAST[(j // len(FIRST)) % len(LAST)]
        rows.append(
            _row(
                rec_id=_rec_id("CNT", j),
                file_as=f"{first} {last}",
                email1=f"{first.lower()}.{last.lower()}{j}@{_domain(parent)}",
                kind="contact",
                parent=_rec_id("CRD", parent),
            )
        )
    for k in range(employees):
        rows.append(
            _row(
                rec_id=_rec_id("EMP", k),
                file_as=f"Tech {k}",
                email1=f"tech{k}@msp.example",
                kind="employee",
            )
        )
    return rows


def _row(**values: str) -> dict[str, str]:
    row = dict.fromkeys(ACCOUNT_COLUMNS, "")
    row["active"] = "1"
    row.update(values)
    return row


def write_accounts_csv(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=ACCOUNT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------------- messages


class _Writer:
    """Builds one message after another from a single RNG (hence the prefix property)."""

    def __init__(self, seed: int, n_accounts: int) -> None:
        self.rng = random.Random(seed)
        self.n_accounts = n_accounts
        self.seq = 0

    # -- small pieces

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def paragraphs(self, size: int) -> str:
        """About ``size`` characters of wrapped prose."""
        out: list[str] = []
        total = 0
        while total < size:
            para = textwrap.fill(self.words(self.rng.randint(25, 90)).capitalize() + ".", 72)
            out.append(para)
            total += len(para) + 2
        return "\n\n".join(out)

    def person(self) -> tuple[str, str]:
        """(display name, address): mostly known contacts/Accounts, some strangers."""
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first} {last}"
        roll = rng.random()
        if roll < 0.55:  # a secondary contact of accounts(): index j -> parent j % n
            j = rng.randrange(self.n_accounts)
            f2, l2 = FIRST[j % len(FIRST)], LAST[(j // len(FIRST)) % len(LAST)]
            return f"{f2} {l2}", f"{f2.lower()}.{l2.lower()}{j}@{_domain(j)}"
        if roll < 0.75:
            return name, f"info@{_domain(rng.randrange(self.n_accounts))}"
        if roll < 0.90:  # unknown person at a customer domain: domain match when email2 is bare
            return name, f"{first.lower()}.{last.lower()}@{_domain(rng.randrange(self.n_accounts))}"
        return name, f"{first.lower()}{rng.randrange(99)}@{rng.choice(PUBLIC)}"

    def headers(self, sender: tuple[str, str], subject: str, extra: Sequence[str] = ()) -> str:
        self.seq += 1
        when = EPOCH + timedelta(seconds=self.seq * 37)
        name, addr = sender
        lines = [
            f"Return-Path: <{addr}>",
            f"Received: from mx{self.seq % 7}.relay.example"
            f" (mx.relay.example [192.0.2.{self.seq % 250}])"
            f"\n\tby mail.msp.example with ESMTPS id {self.seq:08X}; {format_datetime(when)}",
            f"From: {_addr_header(name, addr)}",
            f"To: Support <{SUPPORT}>",
            f"Subject: {subject}",
            f"Date: {format_datetime(when)}",
            f"Message-ID: <{self.seq:08d}.{self.rng.getrandbits(40):x}@{addr.split('@')[1]}>",
            "MIME-Version: 1.0",
            *extra,
        ]
        return "\n".join(lines) + "\n"

    def boundary(self) -> str:
        return f"=_b{self.seq}_{self.rng.getrandbits(48):012x}"

    # -- bodies

    def text_part(self, text: str, charset: str = "utf-8") -> str:
        if charset == "utf-8" and text.isascii():
            return f"{PLAIN_HEAD}{text}\n"
        return _encoded_part("text/plain", text, charset, _CTE.get(charset, "quoted-printable"))

    def html_of(self, text: str) -> str:
        paras = "".join(f"<p>{p.replace(chr(10), ' ')}</p>\n" for p in text.split("\n\n"))
        return (
            '<html><head><meta charset="utf-8"><style>p{font-family:Calibri,sans-serif}</style>'
            f'</head><body>\n<div class="WordSection1">\n{paras}</div></body></html>'
        )

    def attachment(self) -> str:
        rng = self.rng
        size = rng.randint(20_000, 200_000)
        kind = rng.random()
        if kind < 0.5:
            name, ctype = f"screenshot-{self.seq}.png", "image/png"
            data = b"\x89PNG\r\n\x1a\n" + rng.randbytes(size)
        elif kind < 0.8:
            name, ctype = f"report-{self.seq}.pdf", "application/pdf"
            data = b"%PDF-1.4\n" + rng.randbytes(size)
        else:
            name, ctype = f"server-{self.seq}.log", "text/plain"
            data = "\n".join(
                f"2026-03-02T08:{i % 60:02d}:00 {self.words(8)}" for i in range(size // 60)
            ).encode()
        body = base64.encodebytes(data).decode("ascii")
        return (
            f'Content-Type: {ctype}; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: base64\n\n{body}"
        )

    def customer_body(
        self, text: str, *, html: bool, attach: bool, charset: str
    ) -> tuple[str, str]:
        """(Content-Type header block, body) for a customer mail."""
        if not html and not attach:
            part = self.text_part(text, charset)
            head, _, body = part.partition("\n\n")
            return head + "\n", body
        inner = self.text_part(text, charset)
        if html:
            b = self.boundary()
            html_part = _encoded_part("text/html", self.html_of(text), charset, "quoted-printable")
            inner = (
                f'Content-Type: multipart/alternative; boundary="{b}"\n\n'
                f"--{b}\n{inner}\n--{b}\n{html_part}\n--{b}--\n"
            )
        if not attach:
            head, _, body = inner.partition("\n\n")
            return head + "\n", "This is a multi-part message in MIME format.\n\n" + body
        b = self.boundary()
        parts = [inner] + [self.attachment() for _ in range(1 if self.rng.random() < 0.8 else 2)]
        body = (
            "This is a multi-part message in MIME format.\n\n"
            + "".join(f"--{b}\n{p}\n" for p in parts)
            + f"--{b}--\n"
        )
        return f'Content-Type: multipart/mixed; boundary="{b}"\n', body

    # -- message kinds

    def customer(self, *, reply: bool) -> str:
        rng = self.rng
        sender = self.person()
        legacy = LEGACY[rng.randrange(len(LEGACY))] if rng.random() < 0.05 else None
        topic = self.words(rng.randint(3, 7)).capitalize()
        text = self.paragraphs(rng.choice((800, 2000, 4000, 6000, 9000)))
        charset = "utf-8"
        subject_text = topic
        if legacy:
            charset, sample, _ = legacy
            text = sample + "\n\n" + text
            subject_text = f"{sample[:24]} {topic}"
        elif rng.random() < 0.3:
            text = f"Grüße, {sender[0]} – Müller & Söhne\n\n" + text
        if reply:
            number = rng.randint(1, 2000)
            prefix = rng.choice(("Re: ", "RE: ", "AW: ", "Re: Fw: "))
            subject_text = f"{prefix}[Ticket#{number}] {subject_text}"
            quoted = "\n".join("> " + line for line in self.paragraphs(1200).splitlines())
            text = f"{text}\n\nOn Mon, 2 Mar 2026 at 09:00, Support <{SUPPORT}> wrote:\n{quoted}"
        subject = (
            _encode_header(subject_text, charset)
            if charset != "utf-8" or not subject_text.isascii()
            else subject_text
        )
        html = rng.random() < 0.45
        attach = rng.random() < 0.135
        ctype, body = self.customer_body(text, html=html, attach=attach, charset=charset)
        extra = ["X-Mailer: Microsoft Outlook 16.0"] if html else ["User-Agent: Thunderbird/115.0"]
        if reply:
            extra.append(f"In-Reply-To: <ticket-{rng.randint(1, 2000)}@msp.example>")
        return self.headers(sender, subject, extra) + ctype + "\n" + body

    def alert(self) -> str:
        rng = self.rng
        acct = rng.randrange(self.n_accounts)
        host = f"srv{rng.randrange(40):02d}.{_domain(acct)}"
        state_problem = rng.random() < 0.7
        flavour = rng.random()
        if flavour < 0.6:
            return self._nagios(acct, host, state_problem)
        if flavour < 0.85:
            return self._icinga2(acct, host, state_problem)
        return self._monit(acct, host, state_problem)

    def _nagios(self, acct: int, host: str, problem: bool) -> str:
        service = self.rng.choice(SERVICES)
        ntype, state = ("PROBLEM", "CRITICAL") if problem else ("RECOVERY", "OK")
        subject = f"** {ntype} Service Alert: {host}/{service} is {state} **"
        body = (
            "***** Nagios *****\n\n"
            f"Notification Type: {ntype}\n\nService: {service}\nHost: {host}\n"
            f"Address: 10.{acct % 250}.0.{self.seq % 250}\nState: {state}\n\n"
            f"Date/Time: Mon Mar 2 08:{self.seq % 60:02d}:00 UTC 2026\n\n"
            f"Additional Info:\n\n{service} {state} - {self.words(12)}\n"
        )
        return (
            self.headers(
                ("Nagios", f"nagios@{_domain(acct)}"), subject, ["Auto-Submitted: auto-generated"]
            )
            + "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n"
            + body
        )

    def _icinga2(self, acct: int, host: str, problem: bool) -> str:
        service = self.rng.choice(SERVICES)
        ntype, state = ("PROBLEM", "CRITICAL") if problem else ("RECOVERY", "OK")
        subject = f"[{ntype}] {service} on {host} is {state}!"
        body = (
            "***** Service Monitoring on icinga2 *****\n\n"
            f"{service} on {host} is {state}!\n\n"
            f"Info:    {service} {state} - {self.words(10)}\n\n"
            f"When:    2026-03-02 08:{self.seq % 60:02d}:00 +0000\n"
            f"Service: {service}\nHost:    {host}\nIPv4:\t 10.{acct % 250}.1.{self.seq % 250}\n"
            f"Notification Type: {ntype}\n"
        )
        return (
            self.headers(
                ("Icinga 2", f"icinga@{_domain(acct)}"), subject, ["Auto-Submitted: auto-generated"]
            )
            + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            + body
        )

    def _monit(self, acct: int, host: str, problem: bool) -> str:
        event = "Does not exist" if problem else "Exists"
        service = self.rng.choice(("nginx", "postfix", "sshd", "mysqld"))
        subject = f"monit alert --  {event} {service}"
        body = (
            f"{event} Service {service} \n\n"
            f"\tDate:        Mon, 02 Mar 2026 08:{self.seq % 60:02d}:00\n"
            f"\tAction:      {'restart' if problem else 'alert'}\n\tHost:        {host}\n"
            f"\tDescription: process is {'not ' if problem else ''}running\n\n"
            "Your faithful employee,\nMonit\n"
        )
        return (
            self.headers(("Monit", f"monit@{_domain(acct)}"), subject)
            + "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n"
            + body
        )

    def xml(self) -> str:
        rng = self.rng
        acct = rng.randrange(self.n_accounts)
        problem = self.words(rng.randint(4, 9)).capitalize()
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>\n<CommitCRMTransaction>\n'
            "  <ExternalApplicationName>Web form</ExternalApplicationName>\n"
            f"  <SendResponseToEmail>forms@{_domain(acct)}</SendResponseToEmail>\n"
            f"  <Password>{XML_PASSWORD}</Password>\n"
            f"  <ReturnTransactionID>form-{self.seq + 1}</ReturnTransactionID>\n"
            "  <DataKind>TICKET</DataKind>\n  <RecordData>\n"
            f"    <FLDTKTCARDID>{_rec_id('CRD', acct)}</FLDTKTCARDID>\n"
            f"    <FLDTKTPROBLEM>{problem}</FLDTKTPROBLEM>\n"
            "  </RecordData>\n</CommitCRMTransaction>\n"
        )
        return (
            self.headers(("Web form", f"forms@{_domain(acct)}"), f"Web form request {self.seq + 1}")
            + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            + xml
        )

    def auto_reply(self) -> str:
        sender = self.person()
        text = f"I am out of the office until Monday. {self.words(20)}.\n"
        return (
            self.headers(
                sender,
                "Automatic reply: " + self.words(4),
                ["Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"],
            )
            + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            + text
        )

    def bounce(self) -> str:
        b = self.boundary()
        orig = f"To: lost{self.seq}@nowhere.example\nSubject: Ticket update\n\n{self.words(30)}\n"
        body = (
            f"--{b}\nContent-Type: text/plain; charset=us-ascii\n\n"
            "This is the mail system at host mail.msp.example.\n\n"
            "I'm sorry to have to inform you that your message could not be delivered.\n\n"
            f"--{b}\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mail.msp.example\n\n"
            f"Final-Recipient: rfc822; lost{self.seq}@nowhere.example\n"
            "Action: failed\nStatus: 5.1.1\n\n"
            f"--{b}\nContent-Type: message/rfc822\n\n{orig}\n--{b}--\n"
        )
        return (
            self.headers(
                ("Mail Delivery System", "MAILER-DAEMON@mail.msp.example"),
                "Undelivered Mail Returned to Sender",
                ["Auto-Submitted: auto-replied"],
            )
            + f'Content-Type: multipart/report; report-type=delivery-status; boundary="{b}"\n\n'
            + body
        )

    def next(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.58:
            text = self.customer(reply=False)
        elif roll < 0.76:
            text = self.customer(reply=True)
        elif roll < 0.92:
            text = self.alert()
        elif roll < 0.95:
            text = self.xml()
        elif roll < 0.98:
            text = self.auto_reply()
        else:
            text = self.bounce()
        return _to_wire(text)


def _to_wire(text: str) -> bytes:
    """CRLF line ends, as mail arrives from POP3. Bodies are pre-encoded, so ASCII except
    for the rare 8-bit part (none are generated, but be safe)."""
    return text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")


def _addr_header(name: str, addr: str) -> str:
    if name.isascii():
        return f'"{name}" <{addr}>' if any(c in name for c in ",.;:") else f"{name} <{addr}>"
    return f"{_encode_header(name, 'utf-8')} <{addr}>"


def _encode_header(value: str, charset: str) -> str:
    return Header(value, charset, header_name="Subject").encode(linesep="\n")


def _encoded_part(ctype: str, text: str, charset: str, cte: str) -> str:
    data = text.encode(charset)
    if charset == "iso-2022-jp":  # 7bit by construction (escape sequences)
        body, cte = data.decode("ascii"), "7bit"
    elif cte == "base64":
        body = base64.encodebytes(data).decode("ascii")
    else:
        body = quopri.encodestring(data).decode("ascii")
    return f"Content-Type: {ctype}; charset={charset}\nContent-Transfer-Encoding: {cte}\n\n{body}\n"


def iter_messages(count: int, seed: int = SEED, *, n_accounts: int = 5000) -> Iterator[bytes]:
    """``count`` raw messages (CRLF), senders drawn from ``accounts(n_accounts, seed)``."""
    writer = _Writer(seed, n_accounts)
    for _ in range(count):
        yield writer.next()


def big_message(size: int = 25_000_000, seed: int = SEED, *, n_accounts: int = 5000) -> bytes:
    """One customer mail of about ``size`` bytes on the wire, almost all of it base64
    attachments (a scanned contract, a log bundle): the memory benchmark's 25 MB case."""
    rng = random.Random(seed ^ 0xB16)
    b = f"=_big_{rng.getrandbits(48):012x}"
    j = rng.randrange(n_accounts)
    first, last = FIRST[j % len(FIRST)], LAST[(j // len(FIRST)) % len(LAST)]
    addr = f"{first.lower()}.{last.lower()}{j}@{_domain(j)}"
    head = (
        f"From: {first} {last} <{addr}>\nTo: Support <{SUPPORT}>\n"
        "Subject: Scanned contract and server logs\n"
        f"Date: {format_datetime(EPOCH)}\nMessage-ID: <big.{rng.getrandbits(40):x}@{_domain(j)}>\n"
        f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{b}"\n\n'
        f"--{b}\n{PLAIN_HEAD}Please find the documents attached.\n\n"
    )
    parts = [head]
    # three attachments; base64 grows by 4/3 and each 76-character line gets a CRLF
    raw_per_part = (size - len(head) - 1000) * 3 * 76 // (4 * 78) // 3
    for k, (name, ctype) in enumerate(
        (
            ("contract.pdf", "application/pdf"),
            ("scan.tiff", "image/tiff"),
            ("logs.zip", "application/zip"),
        )
    ):
        data = rng.randbytes(raw_per_part - 1024 * k)
        parts.append(
            f'--{b}\nContent-Type: {ctype}; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: base64\n\n{base64.encodebytes(data).decode('ascii')}\n"
        )
    parts.append(f"--{b}--\n")
    return _to_wire("".join(parts))


def generate(count: int, seed: int = SEED, *, n_accounts: int = 5000) -> list[bytes]:
    return list(iter_messages(count, seed, n_accounts=n_accounts))


def write_corpus(
    out_dir: Path, count: int, seed: int = SEED, *, n_accounts: int = 5000
) -> list[Path]:
    """Write ``out_dir/messages/NNNNNN.eml`` and ``out_dir/accounts.csv``; return the mail paths."""
    msg_dir = out_dir / "messages"
    msg_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, raw in enumerate(iter_messages(count, seed, n_accounts=n_accounts)):
        path = msg_dir / f"{i:06d}.eml"
        path.write_bytes(raw)
        paths.append(path)
    write_accounts_csv(out_dir / "accounts.csv", accounts(n_accounts, seed))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--accounts", type=int, default=5000)
    args = parser.parse_args(argv)
    paths = write_corpus(args.out, args.count, args.seed, n_accounts=args.accounts)
    total = sum(p.stat().st_size for p in paths)
    print(
        f"{len(paths)} messages, {total / 1e6:.1f} MB, {total / max(1, len(paths)) / 1024:.1f} KB "
        f"average -> {args.out}/messages; {args.out}/accounts.csv"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
