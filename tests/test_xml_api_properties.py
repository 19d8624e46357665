"""Property tests of the XML API parser: generated envelopes round-trip, junk never crashes it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commit_email.xml_api import (
    ErrorCode,
    InvalidTransaction,
    Transaction,
    XmlApiError,
    find_payload,
    parse_transactions,
    render_transaction,
)

LIMITS = {"max_bytes": 1_000_000, "max_depth": 32}

# Characters XML 1.0 allows, minus U+FFFD (the parser treats it as a decoding failure) and
# CR (XML normalises line ends, so it cannot round-trip).
xml_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\r\ufffd\ufffe\uffff",
        min_codepoint=0x09,
    ).filter(lambda c: c in "\t\n" or ord(c) >= 0x20),
    max_size=60,
).map(str.strip)

field_names = st.from_regex(r"FLD[A-Z]{3}[A-Z0-9]{1,12}", fullmatch=True)

transactions = st.builds(
    Transaction,
    external_application_name=xml_text,
    send_response_to=xml_text,
    password=xml_text,
    return_transaction_id=xml_text,
    data_kind=st.sampled_from(["ACCOUNT", "TICKET", "CHARGE", "HISTORY-NOTE", "KBARTICLE"]),
    fields=st.dictionaries(field_names, xml_text, max_size=6),
)


def parse(xml: str | bytes) -> tuple[Transaction | InvalidTransaction, ...]:
    return parse_transactions(xml, **LIMITS)


def refusal_or_result(xml: str | bytes) -> ErrorCode | tuple[object, ...]:
    """The error code of a refusal, or the parsed transactions; any other exception escapes."""
    try:
        return parse(xml)
    except XmlApiError as exc:
        return exc.code


@given(transactions)
def test_a_rendered_transaction_parses_back_to_itself(transaction):
    assert parse(render_transaction(transaction)) == (transaction,)


@given(st.lists(transactions, min_size=1, max_size=4), xml_text, xml_text)
def test_several_transactions_survive_leading_and_trailing_text(batch, before, after):
    before = before.replace("<", " ")
    after = after.replace("<", " ")
    body = before + "\n" + "\n".join(render_transaction(t).decode() for t in batch) + "\n" + after
    payload = find_payload(text=body, html=None)
    assert payload is not None
    assert parse(payload.data) == tuple(batch)


def random_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(name, flips, strict=True))


@st.composite
def cased_envelopes(draw: st.DrawFn) -> tuple[str, str]:
    root = random_case(draw, draw(st.sampled_from(["CommitCRMTransaction",
                                                   "RangerMSPTransaction"])))
    kind = random_case(draw, "DataKind")
    record = random_case(draw, "RecordData")
    field = random_case(draw, "FLDTKTPROBLEM")
    return (
        f"<{root}><{kind}>ticket</{kind}><{record}><{field}>x</{field}></{record}></{root}>",
        field,
    )


@given(cased_envelopes())
def test_element_names_match_in_any_case(envelope):
    xml, _ = envelope
    (transaction,) = parse(xml)
    assert isinstance(transaction, Transaction)
    assert transaction.data_kind == "TICKET"
    assert transaction.fields == {"FLDTKTPROBLEM": "x"}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_junk_is_refused_cleanly(junk):
    outcome = refusal_or_result(junk)
    assert isinstance(outcome, ErrorCode) or all(
        isinstance(t, Transaction | InvalidTransaction) for t in outcome
    )


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    data = bytearray(render_transaction(draw(transactions)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(list(b"<>/&;![]?=\"'x\x00\xff ")))
        if action == "insert":
            data.insert(position, byte)
        elif position < len(data):
            if action == "delete":
                del data[position]
            else:
                data[position] = byte
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(mutated_envelopes())
def test_mutated_envelopes_are_parsed_or_refused_never_crash(data):
    outcome = refusal_or_result(data)
    assert isinstance(outcome, ErrorCode) or all(
        isinstance(t, Transaction | InvalidTransaction) for t in outcome
    )
