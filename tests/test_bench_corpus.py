"""The benchmark corpus is a measuring instrument: it must be reproducible and have the mix
the issue asks for, or the figures measured on it mean nothing."""

from __future__ import annotations

import csv
import email
import email.policy
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import gen_corpus


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return gen_corpus.generate(400)


def test_same_seed_same_bytes_and_shorter_corpus_is_a_prefix(corpus: list[bytes]) -> None:
    assert gen_corpus.generate(50) == corpus[:50]
    assert gen_corpus.generate(50, seed=1) != corpus[:50]


def test_every_message_parses_cleanly_and_has_a_unique_message_id(corpus: list[bytes]) -> None:
    ids = []
    for raw in corpus:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert not [d for part in msg.walk() for d in part.defects], raw[:300]
        body = msg.get_body(("plain", "html"))
        assert body is not None
        assert body.get_content().strip()
        ids.append(msg["Message-ID"])
    assert len(set(ids)) == len(corpus)


def test_mix_has_replies_alerts_xml_attachments_and_legacy_charsets(corpus: list[bytes]) -> None:
    mix = Counter()
    for raw in corpus:
        mix["token"] += b"[Ticket#" in raw
        mix["alert"] += b"Auto-Submitted: auto-generated" in raw or b"monit alert" in raw
        mix["xml"] += b"<CommitCRMTransaction>" in raw
        mix["attachment"] += b"Content-Disposition: attachment" in raw
        mix["html"] += b"text/html" in raw
        mix["legacy"] += any(cs.encode() in raw.lower() for cs, _, _ in gen_corpus.LEGACY)
    n = len(corpus)
    assert 0.10 * n < mix["token"] < 0.30 * n
    assert 0.08 * n < mix["alert"] < 0.25 * n
    assert 0.01 * n < mix["xml"] < 0.08 * n
    assert 0.05 * n < mix["attachment"] < 0.16 * n
    assert 0.15 * n < mix["html"]
    assert 0.01 * n < mix["legacy"] < 0.08 * n
    average = sum(map(len, corpus)) / n
    assert 12_000 < average < 40_000


def test_accounts_csv_has_spec_columns_and_most_senders_are_known(
    corpus: list[bytes], tmp_path: Path
) -> None:
    rows = gen_corpus.accounts(5000)
    path = gen_corpus.write_accounts_csv(tmp_path / "accounts.csv", rows)
    with path.open(newline="", encoding="utf-8") as fh:
        read = list(csv.DictReader(fh))
    assert tuple(read[0]) == gen_corpus.ACCOUNT_COLUMNS
    kinds = Counter(r["kind"] for r in read)
    assert kinds["account"] == 5000
    assert kinds["contact"] == 5000
    assert kinds["employee"] > 0
    parents = {r["rec_id"] for r in read if r["kind"] == "account"}
    assert all(r["parent"] in parents for r in read if r["kind"] == "contact")

    known = {e.lower() for r in read for e in (r["email1"], r["email2"]) if "@" in e}
    domains = {r["email2"] for r in read if r["email2"] and "@" not in r["email2"]}
    senders = [
        email.message_from_bytes(raw, policy=email.policy.default)["From"].addresses[0].addr_spec
        for raw in corpus
    ]
    matched = sum(s.lower() in known or s.split("@")[1] in domains for s in senders)
    assert matched > 0.6 * len(senders)
