"""API by email, the XML side: find a transaction in a mail, parse it safely, answer it.

This is the only module that imports lxml. Everything that arrives here is hostile until
proven otherwise, so the parser is built to refuse rather than to cope:

* the size cap (``xml_api.max_bytes``) is checked before a byte is parsed;
* any DOCTYPE or entity declaration is refused outright, before parsing: that rules out
  the billion laughs, quadratic blow-up, external entities and external DTDs in one go;
* the lxml parser itself resolves no entities, loads no DTD, reaches no network, keeps
  libxml2's own hard limits (no ``huge_tree``) and drops processing instructions;
* XInclude is never processed, and an XInclude element is refused by name;
* the depth cap (``xml_api.max_depth``) is enforced while the parser streams, without
  recursion;
* bytes that are not valid in their declared encoding (UTF-8 by default) are an error,
  never silently replaced.

Element names are matched case-insensitively, ``RangerMSPTransaction`` is an alias of
``CommitCRMTransaction``, and one mail may carry several transactions: several roots one
after the other, or a ``<CommitCRMTransactions>`` wrapper. lxml's exceptions never leave
this module: they become :class:`XmlApiError` with a stable :class:`ErrorCode`.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, Protocol

import attrs
from attrs import field, frozen
from lxml import etree

from ._frozen import PicklesByFields, frozen_mapping
from .deadline import check as check_time
from .errors import CommitEmailError
from .htmltext import html_to_text

__all__ = [
    "ErrorCode",
    "InvalidTransaction",
    "Transaction",
    "TransactionResult",
    "XmlApiError",
    "XmlPayload",
    "decode_xml_bytes",
    "find_payload",
    "locate_transactions",
    "parse_transactions",
    "render_response",
    "render_transaction",
]


class ErrorCode(enum.IntEnum):
    """Stable error numbers carried in ``<ErrorCode>`` of a response. Never renumber one.

    1xx: the XML itself; 2xx: who sent it; 3xx: what it asks for; 4xx: the records it names;
    5xx: our side.
    """

    MALFORMED_XML = 100
    """Not well-formed XML, or not a transaction envelope (stray or duplicate elements)."""
    DOCTYPE_FORBIDDEN = 101
    """A DOCTYPE or entity declaration: refused before parsing (entity expansion, XXE, DTDs)."""
    TOO_LARGE = 102
    """The XML is larger than ``xml_api.max_bytes``."""
    TOO_DEEP = 103
    """Elements are nested deeper than ``xml_api.max_depth``."""
    INVALID_ENCODING = 104
    """The bytes are not valid in the declared encoding (UTF-8 when none is declared)."""
    XINCLUDE_FORBIDDEN = 105
    """An XInclude element: XInclude is never processed."""
    AUTH_FAILED = 200
    """The password is missing or wrong."""
    SENDER_NOT_ALLOWED = 201
    """The sender is not in ``xml_api.allowed_senders``."""
    TOO_MANY_FAILED_LOGINS = 202
    """The sender had ``xml_api.max_failed_logins`` wrong passwords within
    ``xml_api.failed_login_window``: the mail is refused unread and gets no response."""
    NOT_TRIED = 203
    """An earlier transaction of the same mail had a wrong password: one mail is one guess,
    so nothing after it was tried."""
    UNKNOWN_DATAKIND = 300
    """The DataKind is not one of the registered kinds."""
    UNKNOWN_FIELD = 301
    """A field name is not in the DataKind's catalogue (or is not a Commit field name)."""
    MISSING_REQUIRED = 302
    """A required element or field is missing or empty."""
    READ_ONLY_FIELD = 303
    """A field that Commit assigns itself (such as the ticket number) was given."""
    RECORD_NOT_FOUND = 400
    """An update names a REC ID that does not exist."""
    ACCOUNT_NOT_FOUND = 401
    """A ticket (or other record) references an Account REC ID that does not exist."""
    INTERNAL_ERROR = 500
    """The transaction could not be applied because of a fault on our side (store, plugin)."""


class XmlApiError(CommitEmailError, ValueError):
    """A transaction (or the whole XML) was refused. ``code`` is its :class:`ErrorCode`.

    The message is safe to send back to the sender: it never contains a password.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"XML API error {int(code)} ({code.name}): {message}")


@frozen(kw_only=True)
class Transaction(PicklesByFields):
    """One well-formed transaction, as the sender wrote it (field names upper-cased).

    ``password`` is kept out of ``repr`` and ``str``; compare it, never print it.
    ``position`` is its 1-based place in the mail (0 when not parsed from one); handlers use
    it to make what they create idempotent per mail and transaction.
    """

    external_application_name: str = ""
    send_response_to: str = ""
    password: str = field(default="", repr=False)
    return_transaction_id: str = ""
    data_kind: str = ""
    fields: Mapping[str, str] = field(factory=dict, converter=frozen_mapping)
    position: int = field(default=0, eq=False)


@frozen(kw_only=True)
class InvalidTransaction:
    """A transaction whose envelope is unusable; what could be read is kept for the response.

    It carries no password on purpose: an invalid transaction is never authenticated.
    """

    external_application_name: str = ""
    send_response_to: str = ""
    return_transaction_id: str = ""
    data_kind: str = ""
    code: ErrorCode = ErrorCode.MALFORMED_XML
    message: str = ""


@frozen(kw_only=True)
class TransactionResult:
    """The outcome of one transaction, as the response mail reports it."""

    external_application_name: str = ""
    return_transaction_id: str = ""
    data_kind: str = ""
    ok: bool = False
    rec_id: str = ""
    error_code: ErrorCode | None = None
    error_message: str = ""

    @property
    def status(self) -> str:
        return "OK" if self.ok else "ERROR"


# -- finding the XML in a message -------------------------------------------------------------

_ROOT_NAMES = r"(?:CommitCRM|RangerMSP)Transactions?"
_ROOT_START = re.compile(rf"<\s*(?:[\w.-]+:)?{_ROOT_NAMES}(?=[\s/>])", re.IGNORECASE)
_ROOT_END = re.compile(rf"</\s*(?:[\w.-]+:)?{_ROOT_NAMES}\s*>", re.IGNORECASE)
_ROOT_START_BYTES = re.compile(rb"<\s*(?:[\w.-]+:)?(?:CommitCRM|RangerMSP)Transaction", re.I)
_PROLOGUE = re.compile(r"<\?xml[\s?]|<!DOCTYPE", re.IGNORECASE)
_ROOT_NAME = re.compile(_ROOT_NAMES, re.IGNORECASE)
_EMPTY_ROOT = re.compile(rf"<\s*(?:[\w.-]+:)?{_ROOT_NAMES}[^<>]*/\s*>", re.IGNORECASE)


class AttachmentLike(Protocol):
    """What :func:`find_payload` reads of an attachment (``message.Attachment`` has it)."""

    @property
    def filename(self) -> str | None: ...

    @property
    def content_type(self) -> str: ...

    @property
    def data(self) -> bytes: ...


@frozen(kw_only=True)
class XmlPayload:
    """Where a transaction was found: ``carrier`` plain/html/attachment, and its raw text."""

    carrier: Literal["plain", "html", "attachment"]
    data: str | bytes = field(repr=lambda d: f"<{len(d)} {type(d).__name__}>")
    filename: str = ""


def locate_transactions(text: str) -> str | None:
    """The slice of ``text`` that holds the transaction(s), or None if there is none.

    It runs from the XML declaration or DOCTYPE in front of the first root (kept so that a
    DOCTYPE is refused by name rather than cut off) to the end of the last root's end tag,
    so leading text and a trailing signature do not matter. A root without its end tag
    yields everything from its start: the parser then reports the truncation.
    """
    start_match = _ROOT_START.search(text)
    if start_match is None:
        return None
    start = start_match.start()
    prologue = _PROLOGUE.search(text, 0, start)
    if prologue is not None:
        start = prologue.start()
    end = len(text)
    ends = deque(_ROOT_END.finditer(text, start_match.end()), maxlen=1)
    if ends:
        end = ends[0].end()
    elif (empty := _EMPTY_ROOT.match(text, start_match.start())) is not None:
        end = empty.end()
    return text[start:end]


def _is_xml_attachment(attachment: AttachmentLike) -> bool:
    content_type = (attachment.content_type or "").lower()
    filename = (attachment.filename or "").lower()
    return filename.endswith(".xml") or content_type in ("text/xml", "application/xml")


def _holds_root(data: bytes) -> bool:
    if _ROOT_START_BYTES.search(data):
        return True
    # UTF-16 (with its BOM) is the one common XML encoding that is not ASCII-compatible.
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        head = data[:8192].decode("utf-16", "ignore")
        return _ROOT_START.search(head) is not None
    return False


def find_payload(
    *, text: str | None, html: str | None, attachments: Iterable[AttachmentLike] = ()
) -> XmlPayload | None:
    """The first carrier holding a transaction: plain body, then HTML body, then an
    ``.xml``/``text/xml`` attachment. None means the mail is not an API call.

    Detection looks only for a root start tag, so a mail whose XML turns out to be broken
    is still detected (and rejected), never turned into a ticket.
    """
    if text and (found := locate_transactions(text)) is not None:
        return XmlPayload(carrier="plain", data=found)
    if html and _ROOT_NAME.search(html):
        # XML pasted raw into HTML survives as tags; XML typed into an editor arrives escaped.
        # The name test first: rendering every HTML mail to text cost ~8% of `process`.
        found = locate_transactions(html) or locate_transactions(html_to_text(html))
        if found is not None:
            return XmlPayload(carrier="html", data=found)
    for attachment in attachments:
        if _is_xml_attachment(attachment) and _holds_root(attachment.data):
            return XmlPayload(
                carrier="attachment", data=attachment.data, filename=attachment.filename or ""
            )
    return None


# -- decoding ---------------------------------------------------------------------------------

_DECLARED_ENCODING = re.compile(
    rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']", re.IGNORECASE
)


def decode_xml_bytes(data: bytes) -> str:
    """Decode XML bytes strictly: BOM first, then the declared encoding, else UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8) :], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        declared = _DECLARED_ENCODING.search(data, 0, 1024)
        encoding = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise XmlApiError(ErrorCode.INVALID_ENCODING, f"unknown encoding {encoding!r}") from None
    try:
        return data.decode(codec.name)
    except UnicodeDecodeError as exc:
        raise XmlApiError(
            ErrorCode.INVALID_ENCODING,
            f"the XML is not valid {codec.name} (bad byte at offset {exc.start})",
        ) from None


def _checked_utf8(text: str) -> bytes:
    # A body the MIME layer could not decode arrives with U+FFFD in place of the bad bytes
    # (or lone surrogates); an API call must not be applied with silently altered data.
    if "\ufffd" in text:
        raise XmlApiError(
            ErrorCode.INVALID_ENCODING,
            "the body is not valid in its declared charset (replacement characters found)",
        )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise XmlApiError(
            ErrorCode.INVALID_ENCODING, "the body is not valid in its declared charset"
        ) from None


# -- parsing ----------------------------------------------------------------------------------

_WRAPPER = "commit-email-envelope"
_CDATA = re.compile(r"<!\[CDATA\[.*?\]\]>", re.DOTALL)
_FORBIDDEN_DECLARATION = re.compile(r"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"<\?xml(?:\s[^>]*)?\?>", re.IGNORECASE)
_XINCLUDE_NS = frozenset({"http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude"})
_CHUNK = 64 * 1024

_TRANSACTION = frozenset({"commitcrmtransaction", "rangermsptransaction"})
_TRANSACTIONS = frozenset({"commitcrmtransactions", "rangermsptransactions"})
_ENVELOPE = {
    "externalapplicationname": "external_application_name",
    "sendresponsetoemail": "send_response_to",
    "password": "password",
    "returntransactionid": "return_transaction_id",
    "datakind": "data_kind",
}


def _hardened_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
    )


def _parse_tree(data: bytes, max_depth: int) -> etree._Element:
    """Parse ``data`` (the wrapped envelope), enforcing ``max_depth`` while streaming."""
    parser = _hardened_parser()
    depth = 0
    try:
        for offset in range(0, len(data), _CHUNK):
            check_time()
            parser.feed(data[offset : offset + _CHUNK])
            for event, _element in parser.read_events():
                depth += 1 if event == "start" else -1
                if depth > max_depth + 1:  # +1: the wrapper element we added
                    raise XmlApiError(
                        ErrorCode.TOO_DEEP, f"elements are nested deeper than {max_depth}"
                    )
        root: etree._Element = parser.close()
    except etree.XMLSyntaxError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "not well-formed"
        if "depth" in message.lower():
            raise XmlApiError(
                ErrorCode.TOO_DEEP, f"elements are nested deeper than {max_depth}"
            ) from None
        raise XmlApiError(ErrorCode.MALFORMED_XML, f"not well-formed XML: {message}") from None
    return root


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    """Child elements only: comments and processing instructions have non-string tags."""
    return (child for child in parent if isinstance(child.tag, str))


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname.lower()


def _text_of(element: etree._Element, what: str) -> str:
    if next(_elements(element), None) is not None:
        raise XmlApiError(ErrorCode.MALFORMED_XML, f"{what} must hold text, not elements")
    return (element.text or "").strip()


def _read_transaction(element: etree._Element) -> Transaction | InvalidTransaction:
    envelope: dict[str, str] = {}
    record: etree._Element | None = None
    problem: XmlApiError | None = None
    for child in _elements(element):
        name = _local(child)
        try:
            if name == "recorddata":
                if record is not None:
                    raise XmlApiError(ErrorCode.MALFORMED_XML, "RecordData appears twice")
                record = child
            elif name in _ENVELOPE:
                if _ENVELOPE[name] in envelope:
                    raise XmlApiError(ErrorCode.MALFORMED_XML, f"<{child.tag}> appears twice")
                envelope[_ENVELOPE[name]] = _text_of(child, f"<{etree.QName(child).localname}>")
            else:
                raise XmlApiError(
                    ErrorCode.MALFORMED_XML,
                    f"unexpected element <{etree.QName(child).localname}> in a transaction",
                )
        except XmlApiError as exc:
            problem = problem or exc
    envelope["data_kind"] = envelope.get("data_kind", "").upper()
    try:
        if problem is not None:
            raise problem
        if not envelope["data_kind"]:
            raise XmlApiError(ErrorCode.MISSING_REQUIRED, "the transaction has no <DataKind>")
        if record is None:
            raise XmlApiError(ErrorCode.MISSING_REQUIRED, "the transaction has no <RecordData>")
        return Transaction(
            external_application_name=envelope.get("external_application_name", ""),
            send_response_to=envelope.get("send_response_to", ""),
            password=envelope.get("password", ""),
            return_transaction_id=envelope.get("return_transaction_id", ""),
            data_kind=envelope["data_kind"],
            fields=_read_fields(record),
        )
    except XmlApiError as exc:
        envelope.pop("password", None)
        return InvalidTransaction(code=exc.code, message=exc.message, **envelope)


def _read_fields(record: etree._Element) -> dict[str, str]:
    fields: dict[str, str] = {}
    for child in _elements(record):
        name = etree.QName(child).localname.upper()
        if name in fields:
            raise XmlApiError(ErrorCode.MALFORMED_XML, f"field {name} appears twice")
        fields[name] = _text_of(child, f"field {name}")
    return fields


def _read_roots(wrapper: etree._Element) -> list[Transaction | InvalidTransaction]:
    transactions: list[Transaction | InvalidTransaction] = []
    for root in _elements(wrapper):
        name = _local(root)
        if name in _TRANSACTION:
            transactions.append(_read_transaction(root))
        elif name in _TRANSACTIONS:
            for inner in _elements(root):
                if _local(inner) in _TRANSACTION:
                    transactions.append(_read_transaction(inner))
                else:
                    transactions.append(_stray(inner))
        else:
            transactions.append(_stray(root))
    return transactions


def _stray(element: etree._Element) -> InvalidTransaction:
    return InvalidTransaction(
        message=f"unexpected element <{etree.QName(element).localname}> "
        "where a transaction was expected"
    )


def _refuse_xinclude(wrapper: etree._Element) -> None:
    for element in wrapper.iter():
        if isinstance(element.tag, str) and etree.QName(element).namespace in _XINCLUDE_NS:
            raise XmlApiError(ErrorCode.XINCLUDE_FORBIDDEN, "XInclude is not processed")


def parse_transactions(
    xml: str | bytes, *, max_bytes: int, max_depth: int
) -> tuple[Transaction | InvalidTransaction, ...]:
    """Every transaction in ``xml`` (a body slice from :func:`locate_transactions`, or the
    bytes of an attachment), in order.

    Raises :class:`XmlApiError` when the XML as a whole is refused (too large, a DOCTYPE,
    not well-formed, too deep, badly encoded, XInclude, no transaction at all). A single
    transaction with a broken envelope comes back as :class:`InvalidTransaction`, so that
    its sender still gets a response.
    """
    if len(xml) > max_bytes:
        raise XmlApiError(ErrorCode.TOO_LARGE, f"the XML is larger than {max_bytes} bytes")
    text = decode_xml_bytes(xml) if isinstance(xml, bytes) else xml
    located = locate_transactions(text)
    if located is None:
        raise XmlApiError(ErrorCode.MALFORMED_XML, "no CommitCRMTransaction element found")
    if _FORBIDDEN_DECLARATION.search(_CDATA.sub("", located)):
        raise XmlApiError(
            ErrorCode.DOCTYPE_FORBIDDEN, "DOCTYPE and entity declarations are not accepted"
        )
    # Several roots are not one XML document: drop their declarations and parse them inside
    # a wrapper element of our own.
    body = _checked_utf8(_XML_DECLARATION.sub("", located))
    if len(body) > max_bytes:
        raise XmlApiError(ErrorCode.TOO_LARGE, f"the XML is larger than {max_bytes} bytes")
    wrapper = _parse_tree(f"<{_WRAPPER}>".encode() + body + f"</{_WRAPPER}>".encode(), max_depth)
    _refuse_xinclude(wrapper)
    transactions = _read_roots(wrapper)
    if not transactions:
        raise XmlApiError(ErrorCode.MALFORMED_XML, "the XML holds no transaction")
    return tuple(
        attrs.evolve(t, position=n) if isinstance(t, Transaction) else t
        for n, t in enumerate(transactions, 1)
    )


# -- responses --------------------------------------------------------------------------------

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(value: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", value)


def render_response(result: TransactionResult) -> bytes:
    """The ``CommitCRMTransactionResponse`` document for one transaction (UTF-8 bytes)."""
    root = etree.Element("CommitCRMTransactionResponse")
    parts: list[tuple[str, str]] = [
        ("ExternalApplicationName", result.external_application_name),
        ("ReturnTransactionID", result.return_transaction_id),
        ("DataKind", result.data_kind),
        ("Status", result.status),
    ]
    if result.ok:
        parts.append(("RecID", result.rec_id))
    else:
        code = result.error_code if result.error_code is not None else ErrorCode.INTERNAL_ERROR
        parts += [("ErrorCode", str(int(code))), ("ErrorMessage", result.error_message)]
    for tag, value in parts:
        etree.SubElement(root, tag).text = _xml_safe(value)
    document: bytes = etree.tostring(
        root, xml_declaration=True, encoding="utf-8", pretty_print=True
    )
    return document


def render_transaction(transaction: Transaction) -> bytes:
    """A ``CommitCRMTransaction`` document for ``transaction`` (UTF-8 bytes).

    For clients and tests: what a web form or script would mail to the connector.
    """
    root = etree.Element("CommitCRMTransaction")
    for tag, value in (
        ("ExternalApplicationName", transaction.external_application_name),
        ("SendResponseToEmail", transaction.send_response_to),
        ("Password", transaction.password),
        ("ReturnTransactionID", transaction.return_transaction_id),
        ("DataKind", transaction.data_kind),
    ):
        if value:
            etree.SubElement(root, tag).text = _xml_safe(value)
    record = etree.SubElement(root, "RecordData")
    for name, value in transaction.fields.items():
        etree.SubElement(record, name).text = _xml_safe(value)
    document: bytes = etree.tostring(
        root, xml_declaration=True, encoding="utf-8", pretty_print=True
    )
    return document
