"""The threading how-to documents every key it owns and every built-in quote rule."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from commit_email.autoresponse import PLACEHOLDERS
from commit_email.config import LoopProtectionConfig, SmtpConfig, ThreadingConfig
from commit_email.quoting import BUILTIN_RULES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "howto"
       / "threading-and-auto-responses.md").read_text(encoding="utf-8")

KEYS = [
    *(f"smtp.{f.name}" for f in attrs.fields(SmtpConfig)),
    *(f"threading.{f.name}" for f in attrs.fields(ThreadingConfig)),
    *(f"loop_protection.{f.name}" for f in attrs.fields(LoopProtectionConfig)),
    "email_to_ticket.auto_response",
    "email_to_ticket.auto_response_subject",
    "email_to_ticket.auto_response_template",
    "email_to_ticket.auto_response_template_file",
]


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_documented(key: str) -> None:
    name = key.partition(".")[2]
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", DOC), key


@pytest.mark.parametrize("rule", [r.name for r in BUILTIN_RULES])
def test_every_builtin_quote_rule_is_documented(rule: str) -> None:
    assert rule.replace("'", "`") in DOC or rule in DOC


@pytest.mark.parametrize("placeholder", sorted(PLACEHOLDERS))
def test_every_template_placeholder_is_documented(placeholder: str) -> None:
    assert f"`${placeholder}`" in DOC
