"""The XML API parser: envelopes it reads, carriers it finds, hostile XML it refuses."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from attrs import frozen
from lxml import etree

from commit_email.xml_api import (
    ErrorCode,
    InvalidTransaction,
    Transaction,
    TransactionResult,
    XmlApiError,
    decode_xml_bytes,
    find_payload,
    locate_transactions,
    parse_transactions,
    render_response,
    render_transaction,
)
from commit_email.xml_api import _hardened_parser as hardened_parser

LIMITS = {"max_bytes": 5_242_880, "max_depth": 32}
# Refusals take well under a millisecond; an expansion that got through would take minutes
# and gigabytes. The bound is loose so a loaded shared CI machine cannot make it flaky.
BLOWUP_BOUND = 5.0

ENVELOPE = """<?xml version="1.0" encoding="utf-8"?>
<CommitCRMTransaction>
  <ExternalApplicationName>Web form</ExternalApplicationName>
  <SendResponseToEmail>forms@acme.example</SendResponseToEmail>
  <Password>s3cret-pw</Password>
  <ReturnTransactionID>form-4711</ReturnTransactionID>
  <DataKind>TICKET</DataKind>
  <RecordData>
    <FLDTKTCARDID>CRD0000000000000001</FLDTKTCARDID>
    <FLDTKTPROBLEM>Printer is out of toner</FLDTKTPROBLEM>
  </RecordData>
</CommitCRMTransaction>
"""


def parse(xml: str | bytes, **limits: int) -> tuple[Transaction | InvalidTransaction, ...]:
    return parse_transactions(xml, **{**LIMITS, **limits})


def refused(xml: str | bytes, **limits: int) -> XmlApiError:
    with pytest.raises(XmlApiError) as info:
        parse(xml, **limits)
    return info.value


def only(xml: str | bytes) -> Transaction:
    (transaction,) = parse(xml)
    assert isinstance(transaction, Transaction)
    return transaction


# -- envelopes --------------------------------------------------------------------------------


def test_the_spec_envelope_is_read_field_by_field():
    transaction = only(ENVELOPE)
    assert transaction.external_application_name == "Web form"
    assert transaction.send_response_to == "forms@acme.example"
    assert transaction.password == "s3cret-pw"
    assert transaction.return_transaction_id == "form-4711"
    assert transaction.data_kind == "TICKET"
    assert transaction.fields == {
        "FLDTKTCARDID": "CRD0000000000000001",
        "FLDTKTPROBLEM": "Printer is out of toner",
    }


def test_element_names_are_case_insensitive_and_ranger_is_an_alias():
    xml = (
        "<rangermspTRANSACTION><datakind>account</datakind><PASSWORD>pw</PASSWORD>"
        "<recordDATA><fldCrdFullName>Acme Ltd</fldCrdFullName></recordDATA>"
        "</rangermspTRANSACTION>"
    )
    transaction = only(xml)
    assert transaction.data_kind == "ACCOUNT"
    assert transaction.password == "pw"
    assert transaction.fields == {"FLDCRDFULLNAME": "Acme Ltd"}


def test_cdata_keeps_markup_characters_as_text():
    xml = ENVELOPE.replace(
        "Printer is out of toner", "<![CDATA[Toner <black> & cyan\nsecond line]]>"
    )
    assert only(xml).fields["FLDTKTPROBLEM"] == "Toner <black> & cyan\nsecond line"


def test_several_roots_are_read_in_order():
    second = ENVELOPE.replace("form-4711", "form-4712")
    transactions = parse(ENVELOPE + "\n" + second)
    assert [t.return_transaction_id for t in transactions] == ["form-4711", "form-4712"]


def test_a_transactions_wrapper_is_read_in_order():
    inner = ENVELOPE.split("?>", 1)[1]
    xml = f"<CommitCRMTransactions>{inner}{inner.replace('4711', '4712')}</CommitCRMTransactions>"
    transactions = parse(xml)
    assert [t.return_transaction_id for t in transactions] == ["form-4711", "form-4712"]


def test_a_broken_envelope_is_reported_per_transaction_with_what_could_be_read():
    broken = ENVELOPE.replace("<DataKind>TICKET</DataKind>", "").replace("4711", "4712")
    first, second = parse(ENVELOPE + broken)
    assert isinstance(first, Transaction)
    assert isinstance(second, InvalidTransaction)
    assert second.code is ErrorCode.MISSING_REQUIRED
    assert second.return_transaction_id == "form-4712"
    assert second.send_response_to == "forms@acme.example"
    assert "s3cret-pw" not in repr(second)


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (("<RecordData>", "<Bogus>x</Bogus><RecordData>"), ErrorCode.MALFORMED_XML, "Bogus"),
        (("</RecordData>", "<FLDTKTPROBLEM>again</FLDTKTPROBLEM></RecordData>"),
         ErrorCode.MALFORMED_XML, "FLDTKTPROBLEM appears twice"),
        (("Printer is out of toner", "<b>bold</b>"), ErrorCode.MALFORMED_XML, "must hold text"),
        (("<RecordData>", "<Nothing>"), ErrorCode.MALFORMED_XML, "Nothing"),
        (("<DataKind>TICKET</DataKind>", ""), ErrorCode.MISSING_REQUIRED, "DataKind"),
    ],
)
def test_envelope_mistakes_name_the_element(change, code, words):
    old, new = change
    xml = ENVELOPE.replace(old, new)
    if old == "<RecordData>" and new == "<Nothing>":
        xml = xml.replace("</RecordData>", "</Nothing>")
    (transaction,) = parse(xml)
    assert isinstance(transaction, InvalidTransaction)
    assert transaction.code is code
    assert words in transaction.message


def test_the_password_is_never_in_repr_or_str():
    transaction = only(ENVELOPE)
    assert "s3cret-pw" not in repr(transaction)
    assert "s3cret-pw" not in str(transaction)
    assert "s3cret-pw" not in repr(parse(ENVELOPE))


def test_transactions_are_immutable_values():
    transaction = only(ENVELOPE)
    with pytest.raises(AttributeError):
        transaction.data_kind = "ACCOUNT"  # type: ignore[misc]


def test_an_empty_wrapper_is_refused():
    assert refused("<CommitCRMTransactions/>").code is ErrorCode.MALFORMED_XML


def test_a_truncated_transaction_is_malformed():
    assert refused(ENVELOPE[:-40]).code is ErrorCode.MALFORMED_XML


# -- carriers ---------------------------------------------------------------------------------


@frozen(kw_only=True)
class Part:
    filename: str | None
    content_type: str
    data: bytes


def test_leading_text_and_signature_do_not_matter():
    body = f"Hi team,\nplease process this:\n\n{ENVELOPE}\n-- \nJane Doe\n<jane@acme.example>\n"
    payload = find_payload(text=body, html=None)
    assert payload is not None
    assert payload.carrier == "plain"
    assert only(payload.data).return_transaction_id == "form-4711"


def test_quoted_printable_soft_breaks_are_undone_by_the_mime_layer():
    message = EmailMessage()
    message["From"] = "forms@acme.example"
    message["Subject"] = "form"
    long_line = ENVELOPE.replace("\n", "")  # one line of 400+ chars: QP must soft-break it
    message.set_content("Intro text\n" + long_line + "\nBye", cte="quoted-printable")
    raw = message.as_bytes()
    assert b"=\n" in raw or b"=\r\n" in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    payload = find_payload(text=text, html=None)
    assert payload is not None
    assert only(payload.data).fields["FLDTKTPROBLEM"] == "Printer is out of toner"


def test_an_html_body_is_stripped_and_unescaped():
    escaped = ENVELOPE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    html = (
        "<html><head><style>p {color: red}</style></head><body><p>Intro</p>"
        f"<p>{escaped.replace(chr(10), '<br>')}</p><p>Regards&nbsp;Jane</p></body></html>"
    )
    payload = find_payload(text=None, html=html)
    assert payload is not None
    assert payload.carrier == "html"
    assert only(payload.data).fields["FLDTKTCARDID"] == "CRD0000000000000001"


def test_an_xml_attachment_is_a_carrier():
    attachments = [
        Part(filename="logo.png", content_type="image/png", data=b"\x89PNG"),
        Part(filename="order.XML", content_type="application/octet-stream",
             data=ENVELOPE.encode()),
    ]
    payload = find_payload(text="see attached", html=None, attachments=attachments)
    assert payload is not None
    assert payload.carrier == "attachment"
    assert payload.filename == "order.XML"
    assert only(payload.data).data_kind == "TICKET"


def test_a_text_xml_attachment_in_latin1_is_decoded_by_its_declaration():
    latin = ENVELOPE.replace("utf-8", "iso-8859-1").replace("toner", "Tōner").replace("ō", "ö")
    attachment = Part(filename=None, content_type="text/xml", data=latin.encode("iso-8859-1"))
    payload = find_payload(text=None, html=None, attachments=[attachment])
    assert payload is not None
    assert only(payload.data).fields["FLDTKTPROBLEM"] == "Printer is out of Töner"


def test_mail_without_a_transaction_is_not_a_payload():
    other_xml = Part(filename="report.xml", content_type="text/xml", data=b"<feedback/>")
    assert find_payload(text="<?xml version='1.0'?><x/>", html="<p>hi</p>",
                        attachments=[other_xml]) is None


def test_a_broken_transaction_is_still_detected():
    assert find_payload(text="<CommitCRMTransaction><DataKind>", html=None) is not None


def test_locate_keeps_a_doctype_in_front_so_it_is_refused_by_name():
    text = 'junk <!DOCTYPE x [<!ENTITY a "b">]><CommitCRMTransaction/> sig'
    assert locate_transactions(text) == '<!DOCTYPE x [<!ENTITY a "b">]><CommitCRMTransaction/>'


# -- hostile XML ------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<CommitCRMTransaction><DataKind>TICKET</DataKind><Password>pw</Password>
<RecordData><FLDTKTPROBLEM>&lol9;</FLDTKTPROBLEM></RecordData></CommitCRMTransaction>
"""


def quadratic_blowup() -> str:
    big = "A" * 100_000
    return (
        f'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "{big}">]>'
        f"<CommitCRMTransaction><DataKind>TICKET</DataKind><RecordData>"
        f"<FLDTKTPROBLEM>{'&a;' * 20_000}</FLDTKTPROBLEM></RecordData></CommitCRMTransaction>"
    )


def test_billion_laughs_is_refused_quickly():
    started = time.perf_counter()
    assert refused(BILLION_LAUGHS).code is ErrorCode.DOCTYPE_FORBIDDEN
    assert time.perf_counter() - started < BLOWUP_BOUND


def test_quadratic_blowup_is_refused_quickly():
    started = time.perf_counter()
    assert refused(quadratic_blowup()).code is ErrorCode.DOCTYPE_FORBIDDEN
    assert time.perf_counter() - started < BLOWUP_BOUND


def test_an_external_entity_never_reads_the_local_file(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        "<CommitCRMTransaction><DataKind>TICKET</DataKind><RecordData>"
        "<FLDTKTPROBLEM>&xxe;</FLDTKTPROBLEM></RecordData></CommitCRMTransaction>"
    )
    error = refused(xml)
    assert error.code is ErrorCode.DOCTYPE_FORBIDDEN
    assert "TOP-SECRET" not in str(error)


def test_an_undeclared_entity_is_malformed_not_resolved():
    xml = ENVELOPE.replace("Printer is out of toner", "&xxe;")
    assert refused(xml).code is ErrorCode.MALFORMED_XML


@pytest.fixture
def listening_port():
    """A TCP port that records whether anyone connected (an external DTD must not be fetched)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    connections: list[object] = []

    def accept() -> None:
        try:
            connection, _ = server.accept()
            connections.append(connection)
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    yield server.getsockname()[1], connections
    thread.join()
    server.close()


def test_an_external_dtd_is_refused_and_never_fetched(listening_port):
    port, connections = listening_port
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE CommitCRMTransaction SYSTEM '
        f'"http://127.0.0.1:{port}/evil.dtd">{ENVELOPE.split("?>", 1)[1]}'
    )
    assert refused(xml).code is ErrorCode.DOCTYPE_FORBIDDEN
    time.sleep(0.6)
    assert connections == []


def test_a_lower_case_doctype_after_leading_text_is_refused():
    xml = "see below\n<!doctype x>" + ENVELOPE.split("?>", 1)[1]
    assert refused(xml).code is ErrorCode.DOCTYPE_FORBIDDEN


def test_doctype_text_inside_cdata_is_just_text():
    xml = ENVELOPE.replace("Printer is out of toner", "<![CDATA[<!DOCTYPE html> page]]>")
    assert only(xml).fields["FLDTKTPROBLEM"] == "<!DOCTYPE html> page"


def test_xinclude_is_refused_and_never_processed():
    xml = ENVELOPE.replace(
        "Printer is out of toner",
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" parse="text"/>',
    )
    error = refused(xml)
    assert error.code is ErrorCode.XINCLUDE_FORBIDDEN
    assert "root:" not in str(error)


def test_ten_thousand_deep_nesting_is_refused():
    deep = "<a>" * 10_000 + "</a>" * 10_000
    assert refused(ENVELOPE.replace("Printer is out of toner", deep)).code is ErrorCode.TOO_DEEP


def test_nesting_just_over_the_configured_depth_is_refused():
    nested = "<a>" * 8 + "x" + "</a>" * 8
    xml = ENVELOPE.replace("Printer is out of toner", nested)
    assert refused(xml, max_depth=8).code is ErrorCode.TOO_DEEP


def test_a_50_mb_transaction_is_refused_before_parsing():
    huge = ENVELOPE.replace("Printer is out of toner", "x" * (50 * 1024 * 1024))
    started = time.perf_counter()
    assert refused(huge).code is ErrorCode.TOO_LARGE
    assert refused(huge.encode()).code is ErrorCode.TOO_LARGE
    assert time.perf_counter() - started < BLOWUP_BOUND


def test_invalid_utf8_bytes_are_a_clean_error():
    data = ENVELOPE.encode().replace(b"toner", b"ton\xff\xfer")
    error = refused(data)
    assert error.code is ErrorCode.INVALID_ENCODING
    assert "offset" in error.message


def test_a_body_with_replacement_characters_is_a_clean_error():
    assert refused(ENVELOPE.replace("toner", "ton\ufffder")).code is ErrorCode.INVALID_ENCODING


def test_an_unknown_declared_encoding_is_a_clean_error():
    data = ENVELOPE.replace("utf-8", "x-no-such-codec").encode()
    assert refused(data).code is ErrorCode.INVALID_ENCODING


def test_decode_xml_bytes_honours_a_bom():
    assert decode_xml_bytes(b"\xef\xbb\xbf<a/>") == "<a/>"
    assert decode_xml_bytes("<a>é</a>".encode("utf-16")) == "<a>é</a>"


def test_control_characters_are_malformed():
    assert refused(ENVELOPE.replace("toner", "ton\x00er")).code is ErrorCode.MALFORMED_XML


# -- responses --------------------------------------------------------------------------------


def test_an_ok_response_carries_the_rec_id_and_echoes_the_envelope():
    document = render_response(
        TransactionResult(external_application_name="Web form", return_transaction_id="form-1",
                          data_kind="TICKET", ok=True, rec_id="TKT123")
    ).decode()
    assert "<CommitCRMTransactionResponse>" in document
    for part in ("<Status>OK</Status>", "<RecID>TKT123</RecID>",
                 "<ReturnTransactionID>form-1</ReturnTransactionID>",
                 "<ExternalApplicationName>Web form</ExternalApplicationName>"):
        assert part in document
    assert "ErrorCode" not in document


def test_an_error_response_carries_code_and_message_escaped():
    document = render_response(
        TransactionResult(data_kind="ACCOUNT", error_code=ErrorCode.UNKNOWN_FIELD,
                          error_message="unknown field <FLDX> & more\x00")
    ).decode()
    assert "<Status>ERROR</Status>" in document
    assert "<ErrorCode>301</ErrorCode>" in document
    assert "unknown field &lt;FLDX&gt; &amp; more" in document
    assert "RecID" not in document


def test_render_transaction_round_trips():
    transaction = only(ENVELOPE)
    assert only(render_transaction(transaction)) == transaction


def test_error_codes_are_stable_numbers():
    assert {code.name: int(code) for code in ErrorCode} == {
        "MALFORMED_XML": 100, "DOCTYPE_FORBIDDEN": 101, "TOO_LARGE": 102, "TOO_DEEP": 103,
        "INVALID_ENCODING": 104, "XINCLUDE_FORBIDDEN": 105, "AUTH_FAILED": 200,
        "SENDER_NOT_ALLOWED": 201, "TOO_MANY_FAILED_LOGINS": 202, "NOT_TRIED": 203,
        "UNKNOWN_DATAKIND": 300, "UNKNOWN_FIELD": 301,
        "MISSING_REQUIRED": 302, "READ_ONLY_FIELD": 303, "RECORD_NOT_FOUND": 400,
        "ACCOUNT_NOT_FOUND": 401, "INTERNAL_ERROR": 500,
    }


def test_the_lxml_parser_alone_expands_no_entity_even_without_the_doctype_check():
    # Defence in depth: if the DOCTYPE pre-check were ever bypassed, the parser itself must
    # still neither expand the billion laughs nor read a file.
    parser = hardened_parser()
    started = time.perf_counter()
    try:
        parser.feed(BILLION_LAUGHS.split("?>", 1)[1].encode())
        text = "".join(parser.close().itertext())
    except etree.XMLSyntaxError as exc:  # libxml2 >= 2.12 also refuses the amplification
        text = str(exc)
    assert time.perf_counter() - started < BLOWUP_BOUND
    assert "lollollol" not in text


def test_a_utf16_attachment_is_detected_and_decoded():
    data = ENVELOPE.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    payload = find_payload(text=None, html=None,
                           attachments=[Part(filename="t.xml", content_type="text/xml", data=data)])
    assert payload is not None
    assert only(payload.data).return_transaction_id == "form-4711"


def test_transactions_know_their_position_in_the_mail():
    transactions = parse(ENVELOPE + ENVELOPE.replace("4711", "4712"))
    assert [t.position for t in transactions if isinstance(t, Transaction)] == [1, 2]
