"""Property: whatever the HTML or text body (up to about 1 MB), a message reaches an outcome
within the configured time limit plus a margin, and the outcome is a clear one."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from commit_email.model import OutcomeKind
from commit_email.testing import build_message, make_config, make_connector

LIMIT = 2.0
#: the limit is checked between steps; one step (a regex over the body, the HTML tokenizer
#: over a chunk) may run a little past it, and this machine is shared
MARGIN = 3.0

PIECES = ["<!--", "-->", "<", ">", "<p ", 'a="x" ', "a=", '"', "<b>", "</b>", "&amp;", "&#x",
          "&", "<script>", "</script>", "<![CDATA[", "]]>", "<style>", "text ", "\n", " ",
          "On Mon, 1 Jan 2024, Jane wrote:\n> ", "> ", "-----Original Message-----\n",
          "=?utf-8?q?x?=", "\u00e4", "\u202e", "<div><div><div>", "</div>"]

bodies = st.tuples(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=40).map("".join),
    # Hypothesis favours small numbers: ask for the large sizes outright
    st.one_of(st.integers(min_value=1, max_value=5_000),
              st.sampled_from([100_000, 400_000, 1_000_000])),
).map(lambda t: (t[0] * (t[1] // max(len(t[0]), 1) + 1))[: t[1]])

CLEAR = {OutcomeKind.TICKET_CREATED, OutcomeKind.FORWARDED, OutcomeKind.IGNORED,
         OutcomeKind.QUARANTINED, OutcomeKind.TICKET_UPDATED}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(body=bodies, as_html=st.booleans())
@example(body="<!--" * 250_000, as_html=True)
@example(body="<" * 1_000_000, as_html=True)
@example(body="<p " + 'a="x" ' * 160_000 + ">", as_html=True)
@example(body="> " * 500_000, as_html=False)
def test_any_body_reaches_an_outcome_within_the_limit(body: str, as_html: bool) -> None:
    connector = make_connector(make_config(connector={"message_time_limit": LIMIT}))
    raw = (build_message(sender="eve@evil.example", subject="x", body="", html=body)
           if as_html else build_message(sender="eve@evil.example", subject="x", body=body))
    started = time.monotonic()
    outcome = connector.process(raw)
    elapsed = time.monotonic() - started
    assert outcome.kind in CLEAR, outcome
    assert elapsed < LIMIT + MARGIN, (elapsed, len(body), body[:80])
