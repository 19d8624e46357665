"""HTML to readable plain text, for HTML-only mail (no dependency).

Block elements become line breaks, table cells are separated by `` | `` so that a
monitoring tool's status table stays readable, links keep their target, and
scripts, styles and the document head are dropped.

The markup is split by one regular expression whose every token ends at the next ``<`` or
at a bounded distance, so the work is linear in the input whatever it holds: the standard
library's ``html.parser`` rescans an unclosed comment for every ``<!--`` after it (20,000
of them took 5 s, 200,000 took minutes), and mail is written by whoever wants to.
"""

from __future__ import annotations

import html
import re

from .deadline import check as check_time

__all__ = ["html_to_text"]

_BLOCK = frozenset(
    "address article aside blockquote dd div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody thead tfoot ul".split()
)
_SKIP = frozenset(("script", "style", "head", "title", "template", "noscript"))

#: One token: a comment (unclosed: to the end, as browsers read it), CDATA, a declaration
#: or processing instruction, or a tag. Quoted attribute values may hold ``>``; the
#: possessive and atomic forms leave nothing to backtrack into.
_TOKEN = re.compile(
    r"<!--.*?(?:--!?>|\Z)"
    r"|<!\[CDATA\[.*?(?:\]\]>|\Z)"
    r"|<[!?][^<>]*+>?"
    r"|<(/?)([a-zA-Z][a-zA-Z0-9:_-]*+)((?>[^<>\"']++|\"[^\"]*+\"|'[^']*+')*+)>",
    re.DOTALL,
)
_ATTRIBUTE = re.compile(
    r"""(?:^|[\s"'/])([a-zA-Z_:][-\w:.]*+)\s*+=\s*+(?:"([^"]*+)"|'([^']*+)'|([^\s"'=<>`]++))"""
)
#: The end of a raw-text element: its content is not markup.
_RAW_END = {name: re.compile(rf"</{name}\s*+>", re.IGNORECASE) for name in ("script", "style")}


def _attributes(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _ATTRIBUTE.finditer(text):
        name = match.group(1).lower()
        if name not in found:
            value = next((g for g in match.groups()[1:] if g is not None), "")
            found[name] = html.unescape(value)
    return found


class _TextExtractor:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.cells_in_row = 0
        self.href: str | None = None
        self.link_text: list[str] = []

    def feed(self, markup: str) -> None:
        position = 0
        length = len(markup)
        tokens = 0
        while position < length:
            tokens += 1
            if not tokens & 1023:
                check_time()
            match = _TOKEN.search(markup, position)
            if match is None:
                self.handle_data(html.unescape(markup[position:]))
                return
            if match.start() > position:
                self.handle_data(html.unescape(markup[position:match.start()]))
            position = match.end()
            name = match.group(2)
            if name is None:
                continue  # a comment, CDATA, a declaration
            tag = name.lower()
            if match.group(1):
                self.handle_endtag(tag)
                continue
            self.handle_starttag(tag, match.group(3))
            raw_end = _RAW_END.get(tag)
            if raw_end is not None:  # a script's "<" is not a tag
                end = raw_end.search(markup, position)
                position = end.start() if end else length

    def handle_starttag(self, tag: str, attribute_text: str) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "tr":
            self.out.append("\n")
            self.cells_in_row = 0
        elif tag in ("td", "th"):
            if self.cells_in_row:
                self.out.append(" | ")
            self.cells_in_row += 1
        elif tag == "pre":
            self.pre_depth += 1
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in _BLOCK:
            self.out.append("\n")
        elif tag == "a":
            self.href = _attributes(attribute_text).get("href")
            self.link_text = []
        elif tag == "img":
            alt = _attributes(attribute_text).get("alt")
            if alt:
                self.out.append(f"[{alt}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
            self.out.append("\n")
        elif tag in _BLOCK or tag == "tr":
            self.out.append("\n")
        elif tag == "a" and self.href:
            label = "".join(self.link_text).strip()
            href = self.href
            if href.startswith(("http:", "https:")) and href != label:
                self.out.append(f" <{href}>")
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if not self.pre_depth:
            data = re.sub(r"\s+", " ", data)
        if self.href is not None:
            self.link_text.append(data)
        self.out.append(data)


def html_to_text(markup: str) -> str:
    """The readable text of an HTML document or fragment."""
    parser = _TextExtractor()
    parser.feed(markup)
    text = "".join(parser.out)
    lines = [line.strip() for line in text.splitlines()]
    collapsed: list[str] = []
    for line in lines:
        if not line and (not collapsed or not collapsed[-1]):
            continue
        collapsed.append(line)
    return "\n".join(collapsed).strip()
