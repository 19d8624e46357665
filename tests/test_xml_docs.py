"""docs/reference/xml-api.md stays in step with the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commit_email.xml_api import ErrorCode
from commit_email.xml_catalogue import ACCOUNT_CATALOGUE, DATA_KINDS, TICKET_CATALOGUE

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "xml-api.md"


def documented_table(kind: str) -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split(f"<!-- catalogue:{kind} -->", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `(FLD\w+)` \| (.+?) \|$", table, re.MULTILINE))


@pytest.mark.parametrize(("kind", "catalogue"),
                         [("ACCOUNT", ACCOUNT_CATALOGUE), ("TICKET", TICKET_CATALOGUE)])
def test_the_field_catalogue_is_documented_exactly(kind, catalogue):
    assert documented_table(kind) == dict(catalogue)


def test_every_error_code_is_documented_with_its_number():
    text = PAGE.read_text(encoding="utf-8")
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.name}` |" in text


def test_every_data_kind_is_documented_with_its_rec_id_field():
    text = PAGE.read_text(encoding="utf-8")
    for name, info in DATA_KINDS.items():
        assert re.search(rf"^\| `{re.escape(name)}` \| {info.table} \| `{info.rec_id_field}`",
                         text, re.MULTILINE), name
