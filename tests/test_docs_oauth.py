"""The OAuth how-to pages: every TOML example in them is a valid configuration."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from commit_email.config import parse_config

HOWTO = Path(__file__).resolve().parent.parent / "docs" / "howto"
PAGES = ["connect-microsoft-365.md", "connect-google-workspace.md"]


def toml_blocks(page: str) -> list[str]:
    text = (HOWTO / page).read_text()
    return [textwrap.dedent(b) for b in re.findall(r"```toml\n(.*?)```", text, re.S)]




@pytest.mark.parametrize("page", PAGES)
def test_every_toml_example_loads(page: str) -> None:
    blocks = toml_blocks(page)
    assert len(blocks) >= 2
    for block in blocks:
        data = tomllib.loads(block)
        config = parse_config({"store": {"url": "memory:"}, **data})
        assert config.oauth, block


def test_the_microsoft_page_names_the_exchange_steps() -> None:
    text = (HOWTO / "connect-microsoft-365.md").read_text()
    for needle in ("New-ServicePrincipal", "Add-MailboxPermission", "POP.AccessAsApp",
                   "SMTP.SendAsApp", "IMAP.AccessAsApp", "commit-email auth login m365"):
        assert needle in text
