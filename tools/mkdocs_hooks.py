"""MkDocs hooks (mkdocs.yml ``hooks:``): render the docs' tested code blocks.

Code fences in the how-tos carry an attribute that the test suite acts on:
``file=NAME`` (written out and run), ``source=PATH`` (must equal that repository file) and
``excerpt=PATH`` (its lines must come from that file). Python-Markdown does not know these
attributes and would not recognise the fence at all, so this hook turns each into a caption
line above a plain fence.
"""

from __future__ import annotations

import re
from typing import Any

_FENCE = re.compile(r"^```(?P<lang>[\w+-]+) (?P<attr>file|source|excerpt)=(?P<path>\S+)[ \t]*$",
                    re.MULTILINE)
_CAPTIONS = {"file": "`{}`", "source": "`{}`", "excerpt": "from `{}`"}


def _caption(match: re.Match[str]) -> str:
    caption = _CAPTIONS[match["attr"]].format(match["path"])
    return f"<small>{caption}</small>\n\n```{match['lang']}"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return _FENCE.sub(_caption, markdown)
