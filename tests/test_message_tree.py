"""commit-email builds the compat32 MIME tree itself (faster), and must build exactly the tree
``email.message_from_bytes`` builds: same headers, payloads, preambles, epilogues, defects.

Proven three ways: on every message of the shared third-party corpus, on the benchmark
corpus, and on MIME structures Hypothesis invents (odd line breaks, boundaries inside text,
missing delimiters, nested multiparts, 8-bit bytes).
"""

from __future__ import annotations

import email
import email.message
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import gen_corpus
from commit_email._mime import parse_tree as _parse_tree
from commit_email.message import Message, _leading_junk
from tests.corpus import corpus_messages, require_corpus


def tree(msg: email.message.Message) -> dict[str, Any]:
    """Everything the feedparser decides, as plain data (payloads kept as stored)."""
    out: dict[str, Any] = {
        "headers": list(msg.raw_items()),
        "defects": [type(d).__name__ for d in msg.defects],
        "default_type": msg.get_default_type(),
        "unixfrom": msg.get_unixfrom(),
        "preamble": msg.preamble,
        "epilogue": msg.epilogue,
    }
    payload = msg.__dict__["_payload"]
    if isinstance(payload, list):
        out["parts"] = [tree(part) for part in payload]
    else:
        out["payload"] = payload
    return out


def assert_same_as_stdlib(raw: bytes) -> None:
    expected = email.message_from_bytes(raw)
    assert tree(_parse_tree(raw)) == tree(expected)
    # A few lines of text before a header block are skipped on purpose (a forwarding tool's
    # "---- Original email message ----"); the rest must be exactly the stdlib's reading.
    start = _leading_junk(raw)
    ours = Message.from_bytes(raw)
    skipped = tuple(d for d in ours._header_defects if "before the headers" in d)
    assert bool(start) == bool(skipped)
    expected = Message._from_tree(raw, email.message_from_bytes(raw[start:]))
    if skipped:
        expected = attrs.evolve(expected, header_defects=(*expected._header_defects, *skipped))
    assert ours == expected


def test_shared_corpus_parses_exactly_as_the_stdlib() -> None:
    files = corpus_messages(require_corpus())
    assert len(files) >= 200
    for path in files:
        raw = path.read_bytes()
        try:
            assert_same_as_stdlib(raw)
        except AssertionError:
            pytest.fail(f"{path} parses differently from email.message_from_bytes")


def test_benchmark_corpus_parses_exactly_as_the_stdlib() -> None:
    for raw in gen_corpus.generate(300):
        assert_same_as_stdlib(raw)


# Hypothesis: MIME made of pieces that sit on the edges of the grammar -------------------

BOUNDARY = "b1"
line_breaks = st.sampled_from(["\r\n", "\n", "\r"])
text_lines = st.lists(
    st.one_of(
        st.sampled_from([
            "plain text", "", " ", "--b1", "--b1--", "--b1 ", "--b1--\t", "--b1x", "--b2",
            "--b2--", "From nobody", "Subject: not a header here", "=?utf-8?q?x?=",
            "caf\u00e9", "\t", "-- b1",
        ]),
        st.text(alphabet="ab -:\t=", max_size=12),
    ),
    max_size=6,
)
# Lines of well-formed text: may still look like delimiters of another boundary.
clean_lines = st.lists(
    st.sampled_from(["plain text", "", " ", "--b1x", "--b2x", "From nobody", "caf\u00e9", "-- b1"]),
    max_size=6,
)


VALID_HEADERS = [
    "Subject: hello", "From: a@b.example", "X-Long: a\r\n folded",
    "Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: base64",
    "Content-Disposition: attachment; filename=x.bin",
    "Content-Type: text/plain; charset=utf-8", "Content-Type: text/html; charset=iso-8859-1",
]
ODD_HEADERS = [
    "Content-Type: message/rfc822", "Content-Type: multipart/digest; boundary=b2",
    "not a header line", "Content-Transfer-Encoding: quoted-printable",
]


@st.composite
def entities(draw: st.DrawFn, depth: int = 0, clean: bool | None = None, nl: str = "") -> str:
    """A message or part. ``clean`` ones are well-formed MIME (the fast path's domain);
    the others break a rule somewhere (the fallback's domain) - both must match the stdlib."""
    if clean is None:
        clean = draw(st.booleans())
        nl = draw(st.sampled_from(["\r\n", "\n"])) if clean else draw(line_breaks)
    if not clean and draw(st.booleans()):
        nl = draw(line_breaks)
    choices = VALID_HEADERS if clean else VALID_HEADERS + ODD_HEADERS
    headers = draw(st.lists(st.sampled_from(choices), max_size=3))
    multipart = depth < 2 and draw(st.booleans())
    boundary = BOUNDARY if depth == 0 else "b2"
    if multipart:
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    head = "".join(h.replace("\r\n", nl) + nl for h in headers)
    separator = nl if clean else draw(st.sampled_from([nl, "", nl + nl]))
    if not multipart:
        return head + separator + nl.join(draw(text_lines if not clean else clean_lines))
    preamble = nl.join(draw(text_lines if not clean else clean_lines))
    parts = draw(st.lists(entities(depth + 1, clean, nl), min_size=1 if clean else 0, max_size=3))
    close = f"--{boundary}--" + draw(st.sampled_from(["", " ", "\t "]))
    if not clean:
        close = draw(st.sampled_from([close, "", f"--{boundary}"]))
    epilogue = nl.join(draw(text_lines if not clean else clean_lines))
    body = preamble + nl if preamble else ""
    for part in parts:
        body += f"--{boundary}{nl}{part}{nl}"
    return head + separator + body + close + nl + epilogue


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entities(), st.sampled_from([b"", b"\xe9\xff", b"\r\n"]))
def test_invented_mime_parses_exactly_as_the_stdlib(text: str, tail: bytes) -> None:
    assert_same_as_stdlib(text.encode("utf-8") + tail)
