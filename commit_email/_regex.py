"""What commit-email reads off a regular expression's parse tree (private).

Two things, both from the standard library's private ``re._parser`` — this module is its
only user in the package, because nothing public exposes a pattern's structure:

- :func:`required_literal`: the literal every match of a rule regex contains, so that the
  automated rules can rule out most regexes with one ``in`` test (the literal index);
- :func:`backtracking_risk`: a nested unbounded repetition that can make one search run
  for minutes (``(a+)+$``, ``(\\w+\\s?)*x``). Python's ``re`` cannot be interrupted in the
  middle of a search — no time limit reaches it — so such a regex from the configuration
  is refused when it is loaded.

Without ``re._parser`` (another Python), the literal index is off and no regex is refused.
"""

from __future__ import annotations

import re
import string
from typing import Any

__all__ = ["backtracking_risk", "required_literal"]

try:
    from re import _parser as _re_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - another Python's re
    _re_parser = None


#: Characters a rule regex's literal may be made of for :func:`required_literal`: with
#: ``re.IGNORECASE`` each matches exactly the characters that lower-case to its own lower
#: case — not so "i" and "s", which also match "ı" and "ſ" (checked over all of Unicode).
_FOLD_SAFE = frozenset(string.printable) - set("iIsS")


def required_literal(pattern: re.Pattern[str] | None) -> str:
    """The longest run of plain characters every match of ``pattern`` contains, lower-cased
    ("" if none): wherever the regex matches, this occurs in the lower-cased text, so a
    rule whose literal is absent cannot match. Read from the regex's parse tree — only
    top-level literals, which every match passes through in order."""
    if pattern is None or _re_parser is None:
        return ""
    try:
        tree = _re_parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # a private module of the stdlib: without it, only the gate helps
        return ""
    best, run = "", ""
    for op, av in tree:
        char = chr(av) if op is _re_parser.LITERAL else ""
        run = run + char if char and char in _FOLD_SAFE else ""
        best = max(best, run, key=len)
    # a shorter literal is in almost every text: then one joined search is the better filter
    return best.lower() if len(best) >= _MIN_REQUIRED_LITERAL else ""


_MIN_REQUIRED_LITERAL = 3


def backtracking_risk(pattern: str, flags: int = 0) -> str | None:
    """Why ``pattern`` can backtrack catastrophically, or None.

    Flagged: an unbounded repetition whose body ends in another unbounded repetition with
    nothing but optional items after it (``(a+)+``, ``(\\w+\\s?)*``, ``(?:x*)*``): the
    text can be split between the two repetitions in exponentially many ways, and the search
    tries them all before it fails. A mandatory item after the inner repetition
    (``(\\d+\\.)+``) keeps the splits apart and is not flagged."""
    if _re_parser is None:
        return None
    try:
        tree = _re_parser.parse(pattern, flags)
    except Exception:
        return None
    found = _nested(list(tree), outer=False)
    return (f"{found}: a search can take exponential time on text that almost matches "
            "(make the inner repetition possessive, e.g. \\w++, or require a separator)"
            if found else None)


_UNBOUNDED = getattr(_re_parser, "MAXREPEAT", None)


def _repeat(op: Any, av: Any) -> tuple[int, int, list[Any]] | None:
    if _re_parser is None or op not in (_re_parser.MAX_REPEAT, _re_parser.MIN_REPEAT,
                                        getattr(_re_parser, "POSSESSIVE_REPEAT", None)):
        return None
    low, high, body = av
    return low, high, list(body)


def _children(op: Any, av: Any) -> list[list[Any]]:
    assert _re_parser is not None
    if op is _re_parser.SUBPATTERN:
        return [list(av[-1])]
    if op is _re_parser.BRANCH:
        return [list(b) for b in av[1]]
    if op in (_re_parser.ASSERT, _re_parser.ASSERT_NOT):
        return [list(av[1])]
    return []


def _ends_in_unbounded_repeat(items: list[Any]) -> bool:
    """Whether ``items`` end in an unbounded repetition followed only by optional items."""
    assert _re_parser is not None
    for op, av in reversed(items):
        rep = _repeat(op, av)
        if rep is not None:
            low, high, body = rep
            if high == _UNBOUNDED and op is not getattr(_re_parser, "POSSESSIVE_REPEAT", None):
                return True
            if low == 0:
                if _ends_in_unbounded_repeat(body):
                    return True
                continue  # optional: look further left
            return _ends_in_unbounded_repeat(body)
        if op is _re_parser.SUBPATTERN:
            return _ends_in_unbounded_repeat(list(av[-1]))
        if op is _re_parser.BRANCH:
            return any(_ends_in_unbounded_repeat(list(b)) for b in av[1])
        if op in (_re_parser.AT, _re_parser.ASSERT, _re_parser.ASSERT_NOT):
            continue  # zero-width: consumes nothing
        return False
    return False


def _nested(items: list[Any], *, outer: bool) -> str | None:
    assert _re_parser is not None
    for op, av in items:
        rep = _repeat(op, av)
        if rep is not None:
            _low, high, body = rep
            possessive = op is getattr(_re_parser, "POSSESSIVE_REPEAT", None)
            if high == _UNBOUNDED and not possessive and _ends_in_unbounded_repeat(body):
                return _describe(op, av)
            found = _nested(body, outer=True)
            if found:
                return found
            continue
        for child in _children(op, av):
            found = _nested(child, outer=outer)
            if found:
                return found
    return None


def _describe(op: Any, av: Any) -> str:
    low, high, _ = av
    top = "+" if low == 1 and high == _UNBOUNDED else "*" if low == 0 else f"{{{low},}}"
    return f"a repetition (…){top} around an unbounded repetition"
