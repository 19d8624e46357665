"""Quote stripping for replies filed under a ticket.

A reply usually drags the whole conversation along below (or, bottom-posted,
above) the new text. The ticket history already holds that conversation, so only
the new part is filed; the stored raw message keeps everything.

The rules work like Commit's "Regular Expressions" setting: each rule finds where
the quoted part *starts*, and the text is cut there. Rules are ordered — the
configured ``threading.quote_patterns`` first, then the built-ins (unless
``builtin_quote_patterns = false``) — and the **earliest** cut wins; the order
only decides which rule gets the credit when two cut at the same place. Cutting
at the earliest marker is what keeps a reply that quotes a forwarded Outlook mail
from keeping the Gmail attribution above it.

Decision on HTML: the rules run on the plain text (the text/plain part, or the
text the message model derived from the HTML). Every client here puts its
attribution line ("On … wrote:", "From: … Sent: …") into the visible text, so the
text rules see it either way. :func:`cut_html_quote` is the fallback for an
HTML-only reply whose quote has no such line (a bare ``blockquote type=cite``):
it cuts the HTML at the client's quote container, and the caller derives text
from what is left.

If cutting would leave nothing (a bottom-posted reply: attribution and quote
first, answer below), the quote block is removed instead of everything after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from attrs import frozen

from .config import ThreadingConfig, compile_regex

__all__ = [
    "BUILTIN_RULES",
    "QuoteRule",
    "RegexRule",
    "StrippedText",
    "TailQuoteRule",
    "cut_html_quote",
    "rules_from_config",
    "strip_quotes",
]

#: A line that may start an attribution: optional indentation, list/bold markers.
_LEAD = r"^[ \t*]*"
#: Attribution lines carry a date or time; demanding a digit keeps prose like
#: "On Monday she wrote:" ... still matching, but "Den skrev:" in running text not.
_HAS_DIGIT = r"(?=[^\n]*\d|[^\n]*\n[^\n]*\d)"
#: The attribution may be wrapped onto a second line by the client (Gmail at 76 chars).
_WRAPPED = r"[^\n]{0,300}?(?:\n[^\n]{0,300}?)?"


class QuoteRule(Protocol):
    """Finds where quoted text starts. ``name`` is reported in notes and logs."""

    @property
    def name(self) -> str: ...

    def find(self, text: str) -> tuple[int, int] | None:
        """Where the quote marker starts and ends, or None when this rule sees no quote."""
        ...


@frozen(kw_only=True)
class RegexRule:
    """Quote starts at the first match of ``pattern`` (multiline, case-insensitive)."""

    name: str
    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, name: str, pattern: str, key: str = "threading.quote_patterns") -> RegexRule:
        return cls(name=name, pattern=compile_regex(pattern, key))

    def find(self, text: str) -> tuple[int, int] | None:
        match = self.pattern.search(text)
        return match.span() if match else None


@frozen(kw_only=True)
class TailQuoteRule:
    """Quote starts at the block of ``>`` lines that ends the text (blank lines allowed)."""

    name: str = "tail '>' lines"

    def find(self, text: str) -> tuple[int, int] | None:
        lines = text.splitlines(keepends=True)
        offset = len(text)
        start: int | None = None
        for line in reversed(lines):
            offset -= len(line)
            stripped = line.strip()
            if stripped.startswith(">"):
                start = offset
            elif stripped:
                break
        return None if start is None else (start, len(text))


def _attribution(name: str, opener: str, verb: str) -> RegexRule:
    """``<opener> … <verb> …:`` on one line or wrapped onto two, with a date in it."""
    pattern = rf"{_LEAD}{opener}\b{_HAS_DIGIT}{_WRAPPED}\b{verb}\b[^\n]{{0,200}}?:[ \t]*$"
    return RegexRule.compile(name, pattern, key=f"builtin quote rule {name!r}")


_SEPARATOR_TITLES = (
    "Original Message",  # Outlook, Thunderbird ("-------- Original Message --------")
    "Ursprüngliche Nachricht",  # German Outlook
    "Originalnachricht",  # German Thunderbird
    "Message d'origine",  # French Outlook
    "Mensaje original",  # Spanish Outlook
    "Oorspronkelijk bericht",  # Dutch Outlook
    "Originalbericht",
    "Ursprungligt meddelande",  # Swedish Outlook
    "Oprindelig meddelelse",  # Danish Outlook
    "Opprinnelig melding",  # Norwegian Outlook
    "Messaggio originale",  # Italian
    "Mensagem original",  # Portuguese
)
_FROM_WORDS = ("From", "Von", "De", "Van", "Från", "Fra", "Da", "Lähettäjä")
_SENT_WORDS = (
    "Sent", "Gesendet", "Envoyé", "Enviado el", "Enviado", "Verzonden", "Skickat", "Sendt",
    "Inviato", "Lähetetty",
)


def _builtin_rules() -> tuple[QuoteRule, ...]:
    titles = "|".join(re.escape(t) for t in _SEPARATOR_TITLES)
    froms = "|".join(_FROM_WORDS)
    sents = "|".join(_SENT_WORDS)
    return (
        RegexRule.compile(
            "original-message separator",
            rf"{_LEAD}-{{2,}}[ \t]*(?:{titles})[ \t]*-{{2,}}[ \t]*$",
            key="builtin quote rule 'original-message separator'",
        ),
        # Outlook's header block: "From: …" then, within three lines (or on the same
        # line when HTML was flattened), "Sent: …" in the client's language.
        RegexRule.compile(
            "Outlook header block",
            # The Sent word must follow whitespace or "*" (a lookbehind, not a consuming
            # group: "[^\n]*" then "[ \t]+" would backtrack quadratically on long blank runs).
            rf"{_LEAD}(?:{froms})[ \t]*:[^\n]*(?:\n[^\n]*){{0,2}}?(?<=[\s*])"
            rf"(?:{sents})[ \t]*:(?=[^\n]*\d)",
            key="builtin quote rule 'Outlook header block'",
        ),
        _attribution("On … wrote:", "On", "wrote"),
        _attribution("Am … schrieb …:", "Am", "schrieb"),
        _attribution("Le … a écrit :", "Le", r"a\s+écrit"),
        _attribution("El … escribió:", "El", "escribió"),
        _attribution("Op … schreef …:", "Op", "schreef"),
        _attribution("Den … skrev …:", "Den", "skrev"),
        _attribution("Il … ha scritto:", "Il", r"ha\s+scritto"),
        _attribution("Em … escreveu:", "Em", "escreveu"),
        TailQuoteRule(),
    )


BUILTIN_RULES: tuple[QuoteRule, ...] = _builtin_rules()


def rules_from_config(config: ThreadingConfig) -> tuple[QuoteRule, ...]:
    """The configured patterns in order, then the built-ins unless they are switched off."""
    custom = tuple(
        RegexRule.compile(f"quote_patterns[{i}]", p, key=f"threading.quote_patterns[{i}]")
        for i, p in enumerate(config.quote_patterns)
    )
    return custom + (BUILTIN_RULES if config.builtin_quote_patterns else ())


@frozen(kw_only=True)
class StrippedText:
    """The new text of a reply and which rule cut it (None: nothing was stripped)."""

    text: str
    rule: str | None = None
    removed: int = 0  # characters cut away

    @property
    def stripped(self) -> bool:
        return self.rule is not None


_SEPARATOR_LINE = re.compile(r"[ \t]*(?:_{5,}|-{5,})[ \t]*")
_LEADING_QUOTE_LINES = re.compile(r"\A(?:[ \t]*(?:>[^\n]*)?\n)*")


def _first_cut(text: str, rules: Iterable[QuoteRule]) -> tuple[int, int, str] | None:
    best: tuple[int, int, str] | None = None
    for rule in rules:
        span = rule.find(text)
        if span is not None and (best is None or span[0] < best[0]):
            best = (*span, rule.name)
    return best


def _tidy(text: str) -> str:
    """Drop trailing blank and separator lines (Outlook's ``____`` above its header block).

    Line by line on purpose: a regex for "separators then blanks at the end" backtracks
    exponentially on long runs of them."""
    lines = text.rstrip().split("\n")
    while lines and (not lines[-1].strip() or _SEPARATOR_LINE.fullmatch(lines[-1])):
        lines.pop()
    return "\n".join(lines).rstrip()


def _answer_below_quote(text: str, marker_end: int) -> str:
    """Bottom-posting: drop the attribution and the ``>`` block, keep the answer below."""
    rest = text[marker_end:].lstrip(" \t")
    return _LEADING_QUOTE_LINES.sub("", rest, count=1).strip()


def strip_quotes(text: str, rules: Sequence[QuoteRule] = BUILTIN_RULES) -> StrippedText:
    """Cut ``text`` at the earliest quote any rule finds."""
    text = text.replace("\r\n", "\n")
    cut = _first_cut(text, rules)
    if cut is None:
        return StrippedText(text=text)
    start, end, name = cut
    head = _tidy(text[:start])
    if not head:
        head = _tidy(_answer_below_quote(text, end))
        if not head:
            return StrippedText(text=text)  # nothing but quote: keep it rather than file nothing
    return StrippedText(text=head, rule=name, removed=len(text) - len(head))


#: Where clients open the quoted part of an HTML reply.
_HTML_QUOTE_MARKERS = re.compile(
    r"""<div[^>]*\bclass\s*=\s*["']?[^"'>]*\bgmail_quote\b"""  # Gmail
    r"""|<div[^>]*\bid\s*=\s*["']?divRplyFwdMsg\b"""  # Outlook (web, 365)
    r"""|<div[^>]*\bid\s*=\s*["']?appendonsend\b"""  # Outlook 365, above divRplyFwdMsg
    r"""|<div[^>]*\bclass\s*=\s*["']?[^"'>]*\bmoz-cite-prefix\b"""  # Thunderbird
    r"""|<blockquote[^>]*\btype\s*=\s*["']?cite\b"""  # Apple Mail, Thunderbird
    r"""|<div[^>]*\bclass\s*=\s*["']?[^"'>]*\byahoo_quoted\b"""  # Yahoo
    r"""|<hr[^>]*\bid\s*=\s*["']?stopSpelling\b""",  # old Outlook.com
    re.IGNORECASE,
)


def cut_html_quote(html: str) -> str | None:
    """The HTML before the client's quote container, or None when there is none.

    Unclosed tags are left for the HTML-to-text step, which tolerates them.
    """
    match = _HTML_QUOTE_MARKERS.search(html)
    if match is None or not html[: match.start()].strip():
        return None
    return html[: match.start()]
