"""The stdlib's ``compat32`` tree of a mail, built fast (private: the message model's engine,
used by :mod:`commit_email.message`).

:func:`parse_tree` gives exactly the tree ``email.message_from_bytes`` gives (the tests
compare the two on the shared corpus and on generated MIME) but finds MIME boundaries with
``str.find`` instead of feeding every body line through the feedparser: a 150 KB base64
attachment is 2,000 lines the feedparser reads one by one, and that line loop was the
largest single cost of ``process``.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import itertools
import re
from email.message import Message as _StdMessage

__all__ = ["parse_tree"]

# Building the compat32 tree ----------------------------------------------------------------
#
# What the feedparser does, restated for well-formed mail (RFC 2046 §5.1.1): the header block
# ends at the first empty line; a multipart body is split at lines that are exactly
# ``--boundary`` (optionally ``--`` for the last one, then spaces/tabs) and the line break
# before such a line belongs to the delimiter; a part is parsed like a message. Anything
# else (a lone CR line break, a header block ended by a non-header line, message/* parts
# whose payload is a parsed message, multipart/digest defaults, missing or doubled
# delimiters, a transfer encoding on a multipart) is left to the feedparser itself, which
# defines the answer for broken mail: there is no second opinion on damaged input.

_HEADER_PARSER = email.parser.HeaderParser(policy=email.policy.compat32)
_HEADER_BLOCK_END = re.compile(r"\n\r?\n")
_DELIMITER_TAIL = re.compile(r"(?P<end>--)?[ \t]*(?P<linesep>\r\n|\r|\n)?$")
_MULTIPART_CTES = ("7bit", "8bit", "binary")


class _Unusual(Exception):
    """This input is not plain well-formed MIME: let the feedparser decide."""


def parse_tree(raw: bytes) -> _StdMessage:
    """The compat32 tree of ``raw``: identical to ``email.message_from_bytes(raw)``."""
    text = raw.decode("ascii", "surrogateescape")  # exactly what BytesParser does first
    if "\r" not in text or text.count("\r") == text.count("\r\n"):
        try:
            return _entity(text)
        except _Unusual:
            pass
    return email.message_from_string(text)


def _entity(text: str, *, part: bool = False) -> _StdMessage:
    """A message (or, with ``part``, a body part) that occupies all of ``text``."""
    if text.startswith(("\n", "\r\n")):
        head, body = "", text[text.index("\n") + 1 :]
    else:
        found = _HEADER_BLOCK_END.search(text)
        if found is None:
            raise _Unusual
        head, body = text[: found.start() + 1], text[found.end() :]
    msg = _HEADER_PARSER.parsestr(head) if head else _StdMessage()
    if msg.defects or msg.get_payload():  # a non-header line ended the block early
        raise _Unusual
    if msg.get_content_maintype() == "message" or msg.get_content_type() == "multipart/digest":
        raise _Unusual
    if msg.get_content_maintype() != "multipart":
        # The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        msg.set_payload(_strip_line_break(body) if part else body)
        return msg
    boundary = msg.get_boundary()
    if boundary is None:
        raise _Unusual
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _MULTIPART_CTES:
        raise _Unusual
    epilogue = _split_multipart(msg, body, "--" + boundary)
    if part:  # same rule for a nested multipart's epilogue; an empty one becomes None
        msg.epilogue = _strip_line_break(epilogue) if epilogue else None
    else:
        msg.epilogue = epilogue
    return msg


def _delimiters(body: str, delimiter: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_close) of each delimiter line up to and including the close one."""
    found: list[tuple[int, int, bool]] = []
    n = len(delimiter)
    pos = body.find(delimiter)
    while pos != -1:
        if pos == 0 or body[pos - 1] == "\n":
            newline = body.find("\n", pos)
            end = len(body) if newline == -1 else newline + 1
            tail = _DELIMITER_TAIL.match(body[pos:end], n)
            if tail:
                found.append((pos, end, bool(tail.group("end"))))
                if tail.group("end"):
                    break
            pos = body.find(delimiter, end)
        else:
            pos = body.find(delimiter, pos + n)
    return found


def _split_multipart(msg: _StdMessage, body: str, delimiter: str) -> str:
    """Attach the parts of a multipart body to ``msg``; returns the epilogue."""
    lines = _delimiters(body, delimiter)
    if len(lines) < 2 or lines[0][2] or not lines[-1][2]:
        raise _Unusual  # no part, no opening or no closing delimiter
    if lines[0][0]:
        msg.preamble = _strip_line_break(body[: lines[0][0]])
    children: list[_StdMessage | str] = []
    for (_, part_start, _), (part_end, _, _) in itertools.pairwise(lines):
        if part_start == part_end:
            raise _Unusual  # consecutive delimiters: the feedparser folds them together
        children.append(_entity(body[part_start:part_end], part=True))
    msg.set_payload(children)
    return body[lines[-1][1] :]


def _strip_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text
