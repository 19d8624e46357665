"""The message model: what commit-email knows about one email.

``Message.from_bytes(raw)`` never raises on bad mail. It builds the stdlib's ``compat32``
tree (which tolerates everything and is several times faster than ``policy.default``) and
then decodes what it needs itself: encoded words, RFC 2231 parameters, charsets under the
names mail clients really send, HTML-only bodies. What could not be decoded cleanly is
listed in ``defects``.

Two private engines do the heavy lifting: :mod:`commit_email._mime` builds the tree
(exactly the stdlib's, faster) and :mod:`commit_email._charsets` decodes text under the
charset names mail really carries.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.message import Message as _StdMessage
from functools import cached_property

import attrs
from attrs import field, frozen

from . import verdicts
from ._charsets import decode_bytes
from ._mime import parse_tree
from .deadline import check as check_time
from .htmltext import html_to_text

__all__ = ["Address", "Attachment", "Message", "decode_bytes", "decode_header_value"]

def _header_str(value: object) -> str:
    """compat32 gives str (8-bit bytes as surrogates) or Header objects; get the raw text."""
    if isinstance(value, email.header.Header):
        return str(value)
    text = str(value)
    if not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text):
        raw = text.encode("ascii", "surrogateescape")
        return decode_bytes(raw)[0]
    return text


#: Longest header whose encoded words are decoded (characters); the rest is cut.
_MAX_ENCODED_HEADER = 65_536
_SPACED_WORD = re.compile(r"=\?[^?\s]+\?[qQ]\?[^?\r\n]{0,200} [^?\r\n]{0,200}\?=")
_ENCODED_WORD_GAP = re.compile(r"(\?=)\s+(=\?)")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def decode_header_value(value: object) -> str:
    """Decode RFC 2047 encoded words, tolerating the usual breakage, into one line of text."""
    text = _header_str(value)
    if "=?" in text and " " in text:
        # Clients write Q-words with raw spaces inside ("=?us-ascii?Q?ABC / 123?="), which
        # RFC 2047 forbids and the stdlib leaves encoded; a space there stands for "_".
        text = _SPACED_WORD.sub(lambda m: m.group(0).replace(" ", "_"), text)
    if "=?" in text and _ENCODED_WORD.search(text):
        if len(text) > _MAX_ENCODED_HEADER:
            # email.header.decode_header is quadratic in the number of encoded words (a
            # 5 MB Subject of them took 40 s); no real header comes near this size.
            text = text[:_MAX_ENCODED_HEADER] + "…"
        # Adjacent encoded words are joined without their whitespace (RFC 2047 §6.2).
        text = _ENCODED_WORD_GAP.sub(r"\1\2", text)
        try:
            parts = email.header.decode_header(text)
        except (email.errors.HeaderParseError, ValueError, LookupError):
            parts = [(text, None)]
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                out.append(decode_bytes(chunk, charset)[0])
            else:
                out.append(chunk)
        text = "".join(out)
    return " ".join(text.split())


@frozen(kw_only=True)
class Address:
    """A mailbox: display name and address as written (``address`` keeps its case)."""

    name: str = ""
    address: str = ""

    @property
    def normalized(self) -> str:
        """The address lower-cased, for matching."""
        return self.address.lower()

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    def __str__(self) -> str:
        return email.utils.formataddr((self.name, self.address)) if self.name else self.address


# The one address parser: the address acted on is the one the standard library's
# ``policy.default`` -- and so every mail client -- shows. getaddresses() reads a header
# before decoding it, so ``=?utf-8?q?x:bob@a.example;?= <eve@b.example>`` gave bob where a
# client shows eve. The header registry is slow (tens of microseconds per header), so the
# plain one-address forms that make up nearly all real headers take a regex that gives the
# same answer (a property test compares both).
_ATOM_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+"
_SIMPLE_ADDRESS = re.compile(
    rf"[ \t]*(?:(?P<name>[A-Za-z0-9 \t!#$%&'*+/=?^_`{{|}}~-]*)<(?P<inner>{_ATOM_ADDR})>"
    rf"|(?P<bare>{_ATOM_ADDR}))[ \t]*"
)
_ADDRESS_HEADER = email.policy.default.header_factory


def _addresses_of(text: str) -> list[Address]:
    simple = None if "=?" in text else _SIMPLE_ADDRESS.fullmatch(text)
    if simple is not None:
        address = simple.group("inner") or simple.group("bare")
        if ".." not in address and not address.startswith(".") and "@." not in address:
            name = " ".join((simple.group("name") or "").split())
            return [Address(name=name, address=address)]
    try:
        parsed = _ADDRESS_HEADER("to", text)
        found = parsed.addresses
    except (email.errors.HeaderParseError, ValueError, IndexError, TypeError, AttributeError):
        return []
    out = []
    for item in found:
        address = item.addr_spec
        if not address or "@" not in address or not item.username or not item.domain:
            continue
        out.append(Address(name=" ".join(item.display_name.split()), address=address))
    return out


def _addresses(values: Iterable[object]) -> tuple[Address, ...]:
    out: list[Address] = []
    for value in values:
        text = _header_str(value).replace("\r", " ").replace("\n", " ")
        out.extend(_addresses_of(text))
    return tuple(out)


_MSGID = re.compile(r"<([^<>\s]+)>")


def _message_ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    found = _MSGID.findall(value)
    if not found:
        found = [tok.strip("<>") for tok in value.split() if "@" in tok]
    return tuple(found)


def parse_date(value: str | None) -> datetime | None:
    """A timezone-aware datetime from a Date header, or None. Naive dates are taken as UTC."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is None:
        # Imported here: only broken dates need it, and it costs startup time.
        from dateutil import parser as dateparser  # noqa: PLC0415

        try:
            parsed = dateparser.parse(value, fuzzy=True)
        except (ValueError, OverflowError, TypeError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@frozen(kw_only=True)
class Attachment:
    """A non-body part: a file, an inline image, an attached message."""

    filename: str
    content_type: str
    data: bytes = field(repr=lambda d: f"<{len(d)} bytes>")
    content_id: str = ""
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


_KEYWORD = re.compile(r"[a-z][a-z-]*")


def _part_filename(part: _StdMessage) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except (ValueError, LookupError, TypeError):
        name = ""
    if isinstance(name, tuple):  # an RFC 2231 triple get_param did not collapse
        name = email.utils.collapse_rfc2231_value(name)
    return decode_header_value(name).strip()


def _payload_bytes(part: _StdMessage) -> tuple[bytes, str | None]:
    """The decoded (transfer-encoding removed) payload of a leaf part."""
    defect = None
    data: bytes | None
    try:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else None
    except (ValueError, TypeError, LookupError):
        data = None
    if data is None:
        payload = part.get_payload()
        if isinstance(payload, str):
            data = payload.encode("ascii", "surrogateescape")
        elif isinstance(payload, list):  # message/* parts: re-serialise the attached message
            data = b"".join(_as_bytes(p) for p in payload if isinstance(p, _StdMessage))
        else:
            data = b""
    cte = str(part.get("content-transfer-encoding", "")).lower()
    if any(type(d).__name__ == "InvalidBase64PaddingDefect" for d in part.defects) or (
        "base64" in cte and any("Base64" in type(d).__name__ for d in part.defects)
    ):
        defect = "damaged base64 payload"
    return data, defect


def _as_bytes(msg: _StdMessage) -> bytes:
    try:
        return msg.as_bytes()
    except (UnicodeError, LookupError, ValueError, TypeError):
        return msg.as_string().encode("utf-8", "surrogateescape")


def _leaf_parts(msg: _StdMessage) -> Iterator[_StdMessage]:
    """The leaves of the MIME tree in order; an attached message (message/*) is one leaf."""
    stack: list[_StdMessage] = [msg]
    while stack:
        part = stack.pop()
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            payload = part.get_payload()
            children = payload if isinstance(payload, list) else []
            stack.extend(c for c in reversed(children) if isinstance(c, _StdMessage))
        else:
            yield part


@frozen(kw_only=True)
class _Body:
    """What decoding the MIME parts gives; :class:`Message` computes it on first use."""

    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]


@frozen(kw_only=True, eq=False)
class Message:
    """One email as commit-email sees it. Build it with :meth:`from_bytes`.

    The headers are decoded at once; the body (``text``, ``html``, ``attachments``, and
    what depends on them: ``is_bounce``, ``defects``) only when first asked for, so a
    duplicate or an ignored auto-reply costs no transfer decoding, charset decoding or
    HTML rendering. Either way the values are the same, and parsing never raises.

    A message holds facts; what kind of mail it is (``is_bounce``, ``is_auto_reply``) is
    the verdict of :mod:`commit_email.verdicts` on them.
    """

    raw: bytes = field(repr=lambda d: f"<{len(d)} bytes>")
    message_id: str = ""
    subject: str = ""
    from_: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    return_path: str | None = None
    date: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    auto_submitted: str | None = None
    content_type: str = "text/plain"
    #: the content types of the MIME tree's leaves, in order (an attached message is one
    #: leaf; a single-part message has its own type here)
    part_types: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    #: the parsed tree the body is decoded from; emptied once it is, so that a large
    #: message is not held twice (as tree and as decoded parts) while it is processed
    _tree: list[_StdMessage] = field(alias="tree", repr=False)
    #: defects found in the headers
    _header_defects: tuple[str, ...] = field(alias="header_defects", default=(), repr=False)

    @cached_property
    def _body(self) -> _Body:
        std = self._tree[0]
        body = _bodies(std)
        # Decoding the parts can add defects to the tree (a damaged base64 payload).
        defects = [*self._header_defects, *body.defects, *(type(d).__name__ for d in std.defects)]
        self._tree.clear()
        return attrs.evolve(body, defects=tuple(dict.fromkeys(defects)))

    @property
    def text(self) -> str:
        """The plain body; derived from the HTML part when there is no plain one."""
        return self._body.text

    @property
    def html(self) -> str | None:
        """The HTML body, or None."""
        return self._body.html

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        """The non-body parts: files, inline images, attached messages."""
        return self._body.attachments

    # Several stages of one message ask for the verdicts: each is worked out once.
    @cached_property
    def _bounce(self) -> bool:
        return verdicts.is_bounce(self)

    @cached_property
    def _auto_reply(self) -> bool:
        return verdicts.is_auto_reply(self)

    @property
    def is_bounce(self) -> bool:
        """A delivery report, read receipt or complaint (`multipart/report`), or a mail
        daemon returning a message: :func:`commit_email.verdicts.is_bounce`. Decodes the
        body only for a daemon's mail."""
        return self._bounce

    @property
    def is_auto_reply(self) -> bool:
        """An out-of-office or other auto-reply: :func:`commit_email.verdicts.is_auto_reply`."""
        return self._auto_reply

    @property
    def defects(self) -> tuple[str, ...]:
        """What could not be decoded cleanly: headers, MIME structure, encodings."""
        return self._body.defects

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._compared() == other._compared()

    __hash__ = None  # type: ignore[assignment]  # mutable caches; equality is by content

    def _compared(self) -> tuple[object, ...]:
        return (self.raw, self.message_id, self.subject, self.from_, self.to, self.cc,
                self.reply_to, self.return_path, self.date, self.in_reply_to,
                self.references, self.auto_submitted, self.is_auto_reply, self.content_type,
                self.headers, self.text, self.html, self.attachments, self.is_bounce,
                self.defects)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def sender(self) -> str:
        """The From address lower-cased, or ``""``."""
        return self.from_.normalized if self.from_ else ""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), decoded; None when absent."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        lname = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == lname)

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc

    @classmethod
    def from_bytes(cls, raw: bytes) -> Message:
        """Parse raw RFC 822 bytes. Never raises for malformed mail; see ``defects``."""
        start = _leading_junk(raw)
        if start:
            message = cls._from_tree(raw, parse_tree(raw[start:]))
            junk = raw[:start].decode("ascii", "replace").strip()[:80]
            return attrs.evolve(message, header_defects=(
                *message._header_defects, f"a line before the headers was skipped: {junk!r}"))
        return cls._from_tree(raw, parse_tree(raw))

    @classmethod
    def _from_tree(cls, raw: bytes, std: _StdMessage) -> Message:
        defects: list[str] = []
        # raw_items() keeps 8-bit header bytes (as surrogates) that get() would replace.
        raw_headers: dict[str, list[str]] = {}
        for key, value in std.raw_items():
            raw_headers.setdefault(key.lower(), []).append(str(value))
        headers = tuple((k, decode_header_value(v)) for k, v in std.raw_items())

        def first(name: str) -> str | None:
            values = raw_headers.get(name)
            return decode_header_value(values[0]) if values else None

        def all_of(name: str) -> list[str]:
            return raw_headers.get(name, [])

        return_path = _return_path(all_of("return-path"), defects)
        from_ = _acting_sender(
            _addresses(all_of("from")), _addresses(all_of("sender")),
            _addresses(all_of("reply-to")), return_path,
            missing="from" not in raw_headers, defects=defects,
        )
        date_header = first("date")
        date = parse_date(date_header)
        if date_header and date is None:
            defects.append(f"unparseable Date {date_header!r}")
        # RFC 3834 allows parameters and comments: "auto-replied (vacation)", "auto-generated;
        # owner-email=...". The keyword is what counts.
        keyword = _KEYWORD.match((first("auto-submitted") or "").strip().lower())
        auto_submitted = keyword.group(0) if keyword else None

        subject = first("subject") or ""
        return cls(
            raw=raw,
            message_id=(_message_ids(first("message-id")) or ("",))[0],
            subject=subject,
            from_=from_,
            to=_addresses(all_of("to")),
            cc=_addresses(all_of("cc")),
            reply_to=_addresses(all_of("reply-to")),
            return_path=return_path,
            date=date,
            in_reply_to=_message_ids(first("in-reply-to")),
            references=_message_ids(first("references")),
            auto_submitted=auto_submitted,
            content_type=std.get_content_type(),
            part_types=tuple(part.get_content_type() for part in _leaf_parts(std)),
            headers=headers,
            tree=[std],
            header_defects=tuple(defects),
        )


def _return_path(values: list[str], defects: list[str]) -> str | None:
    """The envelope sender: ``""`` for ``<>`` (a bounce), None when there is none or it is
    not exactly one address (an answer to it could go to several people)."""
    if not values:
        return None
    text = _header_str(values[0]).strip()
    if text.strip("<> \t") == "":
        return ""
    found = _addresses_of(text)
    if len(found) != 1 or (len(values) > 1 and _addresses_of(_header_str(values[-1])) != found):
        defects.append("Return-Path is not one address")
        return None
    return found[0].address


def _acting_sender(from_list: tuple[Address, ...], sender: tuple[Address, ...],
                   reply_to: tuple[Address, ...], return_path: str | None, *,
                   missing: bool, defects: list[str]) -> Address | None:
    """The one address the connector acts on, read as every mail client reads it.

    - From with one address: that one.
    - From with several: RFC 5322 then requires a Sender, the one who sent it; when it is
      one address it is used, else the first From address (noted as a defect).
    - No usable From (missing, empty, ``"…" <>``, a group): Sender, then Reply-To, then the
      Return-Path, each only when it is exactly one address (noted as a defect).
    """
    if len(from_list) == 1:
        return from_list[0]
    if from_list:
        if len(sender) == 1:
            return sender[0]
        defects.append(f"From has {len(from_list)} addresses and no single Sender: "
                       "the first one is used")
        return from_list[0]
    defects.append("missing From header" if missing else "From header without an address")
    for name, candidates in (("Sender", sender), ("Reply-To", reply_to)):
        if len(candidates) == 1:
            defects.append(f"sender taken from {name}")
            return candidates[0]
    if return_path:
        defects.append("sender taken from Return-Path")
        return Address(address=return_path)
    return None


_HEADER_LINE = re.compile(rb"[!-9;-~]{1,76}:")
_KNOWN_HEADER = re.compile(
    rb"(?i)(from|to|cc|subject|date|message-id|received|return-path|reply-to|sender|"
    rb"mime-version|content-type):")
#: Lines of text before the headers that are skipped at most ("---- Original email
#: message ----" written by a forwarding tool or a web form).
_MAX_JUNK_LINES = 3


def _leading_junk(raw: bytes) -> int:
    """Where the headers start when a few lines of text precede them, else 0.

    Only when the lines after the junk look like a header block: header lines, at least one
    of them a header every mail has. Otherwise the feedparser's answer stands (the whole
    message is then body)."""
    if _HEADER_LINE.match(raw) or not raw[:1].strip() or raw.startswith(b"From "):
        return 0  # headers, a continuation line, an empty line, or an mbox separator
    offset = 0
    for _ in range(_MAX_JUNK_LINES):
        end = raw.find(b"\n", offset, offset + 1000)
        if end < 0:
            return 0
        offset = end + 1
        following = raw[offset:offset + 4000].split(b"\n", 3)[:3]
        if following and all(_HEADER_LINE.match(line) or line[:1] in (b" ", b"\t")
                             for line in following[:2]) and any(
                _KNOWN_HEADER.match(line) for line in following):
            return offset
        if not raw[offset:offset + 1].strip():
            return 0  # an empty line: this was a body all along
    return 0


def _bodies(std: _StdMessage) -> _Body:
    """The text body, the HTML body, the attachments, and the defects found decoding them."""
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    defects: list[str] = []
    for part in _leaf_parts(std):
        check_time()
        ctype = part.get_content_type()
        maintype = part.get_content_maintype()
        disposition = str(part.get("content-disposition", "")).split(";")[0].strip().lower()
        filename = _part_filename(part)
        is_body_text = (
            ctype in ("text/plain", "text/html")
            and disposition != "attachment"
            and not (filename and disposition == "inline" and ctype != "text/plain")
            and not (filename and ctype == "text/plain" and plain)
        )
        data, defect = _payload_bytes(part)
        if defect:
            defects.append(defect)
        if is_body_text:
            content, charset_defect = _decode_part(part, data)
            if charset_defect:
                defects.append(charset_defect)
            (plain if ctype == "text/plain" else html).append(content)
            continue
        if maintype == "multipart":  # a multipart with a broken or missing boundary
            defects.append("multipart without parts")
            content, _ = decode_bytes(data)
            if content.strip():
                plain.append(content)
            continue
        if not filename:
            ext = {"message/rfc822": ".eml", "text/calendar": ".ics"}.get(ctype, ".bin")
            filename = f"part-{len(attachments) + 1}{ext}"
        attachments.append(
            Attachment(
                filename=filename,
                content_type=ctype,
                data=data,
                content_id=str(part.get("content-id", "")).strip().strip("<>"),
                inline=disposition == "inline" or bool(part.get("content-id")),
            )
        )
    html_text = "\n".join(html) if html else None
    if plain:
        text = "\n".join(plain)
    elif html_text is not None:
        text = html_to_text(html_text)
    else:
        text = ""
    return _Body(text=text, html=html_text, attachments=tuple(attachments),
                 defects=tuple(defects))


def _decode_part(part: _StdMessage, data: bytes) -> tuple[str, str | None]:
    charset = part.get_param("charset")
    if isinstance(charset, tuple):
        charset = email.utils.collapse_rfc2231_value(charset)
    text, defect = decode_bytes(data, charset if isinstance(charset, str) else None)
    return text.replace("\r\n", "\n"), defect
