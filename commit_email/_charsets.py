"""Decoding text under the charset names mail really carries (private: the message model's
engine, used by :mod:`commit_email.message`).

Real mail labels charsets with names Python's codec registry does not know
(``ks_c_5601-1987``, ``x-sjis``, ``unicode-1-1-utf-7``) or knows as narrower than what
senders use (``iso-8859-1`` for Windows-1252 text). :func:`decode_bytes` never raises: it
returns the text and, when the bytes did not decode cleanly, a defect saying why.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["decode_bytes"]

# Names seen in real mail that Python's codec registry does not know, or knows as a
# narrower charset than the one senders actually use.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "big5": "big5hkscs",
    "x-sjis": "shift_jis",
    "shift-jis": "cp932",
    "shift_jis": "cp932",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "x-user-defined": "latin-1",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "ansi_x3.4-1968": "ascii",
    "us-ascii": "ascii",
    "iso-2022-jp": "iso2022_jp_ext",
    "iso-8859-1": "cp1252",  # senders label cp1252 text as latin-1 all the time
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "default": "utf-8",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "unknown": "utf-8",
}

_ISO2022_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b(B", b"\x1b$(D")


def _codec(charset: str | None) -> str | None:
    """The Python codec for a MIME charset name, or None when nothing fits."""
    if not charset:
        return None
    name = charset.strip().strip('"').strip("'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        cleaned = re.sub(r"[^a-z0-9]", "", name)
        for candidate in (cleaned, cleaned.replace("windows", "cp"), cleaned.replace("x", "", 1)):
            try:
                return codecs.lookup(candidate).name
            except LookupError:
                continue
    return None


def _mostly_utf8(data: bytes) -> str | None:
    """UTF-8 text with a few broken bytes (a truncated header, say), or None.

    Latin-1 or Windows-1252 text is almost never valid UTF-8 at all, so many valid multi-byte
    sequences against a few invalid bytes say "damaged UTF-8", not "another charset".
    """
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ch > "\x7f" and ch != "\ufffd")
    return text if good > 2 * bad else None


def decode_bytes(data: bytes, charset: str | None = None) -> tuple[str, str | None]:
    """Decode body bytes; returns (text, defect or None).

    Order: valid UTF-8 wins when the label is missing, ASCII or Latin-1 (mislabelled UTF-8 is
    common, and Latin-1 text is almost never valid UTF-8); then the labelled charset; then
    ISO-2022-JP when its escape sequences appear; then UTF-8 with replacement.
    """
    codec = _codec(charset)
    if codec is None and charset and charset.strip():
        defect = f"unknown charset {charset.strip()!r}"
    else:
        defect = None
    if data.isascii():
        if codec == "utf-7" and b"+" in data:  # UTF-7 is ASCII on the wire
            try:
                return data.decode("utf-7"), defect
            except UnicodeDecodeError:
                return data.decode("ascii"), "text not valid in charset 'utf-7'"
        if b"\x1b" in data and any(esc in data for esc in _ISO2022_ESCAPES):
            try:
                return data.decode("iso2022_jp_ext"), defect
            except UnicodeDecodeError:
                pass
        return data.decode("ascii"), defect
    if codec in (None, "ascii", "cp1252", "latin-1", "iso8859-1", "utf-8"):
        try:
            return data.decode("utf-8"), defect
        except UnicodeDecodeError:
            if codec == "utf-8":
                defect = defect or "invalid UTF-8"
            elif (mostly := _mostly_utf8(data)) is not None:
                return mostly, defect or "invalid UTF-8"
    if codec and codec not in ("ascii", "utf-8"):
        try:
            return data.decode(codec), defect
        except (UnicodeDecodeError, LookupError):
            defect = defect or f"text not valid in charset {charset!r}"
            return data.decode(codec, errors="replace"), defect
    if codec is None or codec == "ascii":
        # Unlabelled 8-bit text: Windows-1252 is the likeliest and decodes every byte.
        return data.decode("cp1252", errors="replace"), defect or "8-bit text without charset"
    return data.decode("utf-8", errors="replace"), defect
