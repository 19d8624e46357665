"""Sender authentication: is the From domain of this mail really the sender's?

The From line proves nothing. The receiving mail server checks SPF, DKIM and DMARC and writes
its verdict into ``Authentication-Results`` (RFC 8601), but a sender can write that header
too. So only headers whose authserv-id is in ``[sender_auth] trusted_authserv_ids`` count,
and of those the topmost decides (the receiving server adds its own on top; a forged one
with the same id sits lower down, written before the mail reached it).

The From domain is authenticated when that header says

- ``dmarc=pass`` for the From domain (``header.from``), or
- ``dkim=pass`` with a signing domain (``header.d``, or the domain of ``header.i``) aligned
  with the From domain, or
- ``spf=pass`` with an envelope domain (``smtp.mailfrom``) aligned with it.

Aligned is relaxed alignment (RFC 7489 §3.1): the same domain, or one a subdomain of the
other. With ``verify_dkim`` the connector verifies DKIM signatures itself when no trusted
header is there (dkimpy, extra ``dkim``; DNS lookups bounded by ``dns_timeout``).

What unauthenticated mail loses is ``require_for``: ``employee`` (an employee's privilege of
being filed without telling anyone), ``xml_api`` (writing records), ``threading`` (being
filed into a ticket). Everything a stranger may do, it still may.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from attrs import frozen

from .config import Config, SenderAuthConfig
from .extras import require
from .message import Message

__all__ = ["Verdict", "aligned", "parse_authentication_results", "verdict"]

#: Signatures verified per mail at most: each may cost a DNS lookup.
_MAX_DKIM_SIGNATURES = 3
_COMMENT = re.compile(r"\([^()]*\)")
_RESINFO = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*([A-Za-z0-9_.-]+)(.*)$", re.S)
_PROPERTY = re.compile(r"([A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+)\s*=\s*(\"[^\"]*\"|[^\s;]+)")


@frozen(kw_only=True)
class Result:
    """One ``method=result`` of an Authentication-Results header, with its properties."""

    method: str
    result: str
    properties: dict[str, str]


@frozen(kw_only=True)
class Verdict:
    """Whether the From domain is authenticated, and why (``inspect`` shows ``reason``)."""

    authenticated: bool
    reason: str
    checked: bool = True  # False: sender authentication is off (nothing is taken away)

    def __str__(self) -> str:
        if not self.checked:
            return "not checked ([sender_auth] is off)"
        return f"{'authenticated' if self.authenticated else 'NOT authenticated'}: {self.reason}"


def parse_authentication_results(value: str) -> tuple[str, list[Result]]:
    """(authserv-id lower-cased, its results) of one header value; ("", []) if unreadable.

    Bounded: comments are dropped by a linear regex, the value is split at ``;``."""
    text = " ".join(value.split())
    for _ in range(3):  # nested comments, as deep as anybody writes them
        text = _COMMENT.sub(" ", text)
    head, _, rest = text.partition(";")
    words = head.split()
    if not words:
        return "", []
    results = []
    for item in rest.split(";"):
        found = _RESINFO.match(item)
        if found is None:
            continue
        method, result, tail = found.groups()
        props = {k.lower(): v.strip('"') for k, v in _PROPERTY.findall(tail)}
        results.append(Result(method=method.lower(), result=result.lower(), properties=props))
    return words[0].lower(), results


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: equal, or one is a subdomain of the other (never across a bare TLD)."""
    a, b = domain.lower().strip(".").lstrip("@"), from_domain.lower().strip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return "." in short and long_.endswith("." + short)


def _domain_of(value: str) -> str:
    return value.rpartition("@")[2].strip("<>").lower()


def _from_trusted(message: Message, trusted: frozenset[str]) -> Iterator[tuple[str, list[Result]]]:
    for value in message.header_all("Authentication-Results"):
        authserv_id, results = parse_authentication_results(value)
        if authserv_id in trusted:
            yield authserv_id, results


def _judge(results: list[Result], from_domain: str, authserv_id: str) -> Verdict:
    seen = []
    for r in results:
        seen.append(f"{r.method}={r.result}")
        if r.result != "pass":
            continue
        if r.method == "dmarc" and aligned(r.properties.get("header.from", from_domain),
                                           from_domain):
            return Verdict(authenticated=True, reason=f"dmarc=pass by {authserv_id}")
        if r.method == "dkim":
            signer = r.properties.get("header.d") or _domain_of(r.properties.get("header.i", ""))
            if aligned(signer, from_domain):
                return Verdict(authenticated=True,
                               reason=f"dkim=pass for {signer} by {authserv_id}")
        if r.method == "spf":
            envelope = _domain_of(r.properties.get("smtp.mailfrom", ""))
            if aligned(envelope, from_domain):
                return Verdict(authenticated=True,
                               reason=f"spf=pass for {envelope} by {authserv_id}")
    return Verdict(authenticated=False,
                   reason=f"{authserv_id} says {', '.join(seen) or 'nothing'}; no pass aligned "
                          f"with {from_domain}")


DnsFunc = Callable[..., bytes | None]


def _dkim_verdict(message: Message, from_domain: str, settings: SenderAuthConfig,
                  dnsfunc: DnsFunc | None) -> Verdict:
    dkim = require("dkim", extra="dkim", feature="[sender_auth] verify_dkim")
    signatures = len(message.header_all("DKIM-Signature"))
    if not signatures:
        return Verdict(authenticated=False, reason="no trusted Authentication-Results and "
                                                   "no DKIM signature")
    failures = []
    for index in range(min(signatures, _MAX_DKIM_SIGNATURES)):
        verifier = dkim.DKIM(message.raw, timeout=int(max(1, settings.dns_timeout)))
        kwargs = {"dnsfunc": dnsfunc} if dnsfunc is not None else {}
        try:
            ok = verifier.verify(idx=index, **kwargs)
        except Exception as exc:  # dkimpy raises many kinds for malformed signatures
            failures.append(f"signature {index + 1}: {type(exc).__name__}")
            continue
        signer = (verifier.domain or b"").decode("ascii", "replace")
        if ok and aligned(signer, from_domain):
            return Verdict(authenticated=True, reason=f"DKIM signature of {signer} verified here")
        failures.append(f"signature {index + 1} ({signer or '?'}): "
                        f"{'not aligned' if ok else 'does not verify'}")
    return Verdict(authenticated=False, reason="DKIM: " + "; ".join(failures))


def verdict(message: Message, config: Config, *, dnsfunc: DnsFunc | None = None) -> Verdict:
    """Whether ``message``'s From domain is authenticated under ``[sender_auth]``."""
    settings = config.sender_auth
    if not settings.enabled:
        return Verdict(authenticated=False, reason="", checked=False)
    from_domain = message.from_.domain if message.from_ else ""
    if not from_domain:
        return Verdict(authenticated=False, reason="no From domain")
    trusted = frozenset(s.lower() for s in settings.trusted_authserv_ids)
    for authserv_id, results in _from_trusted(message, trusted):
        return _judge(results, from_domain, authserv_id)  # the topmost trusted one decides
    if settings.verify_dkim:
        return _dkim_verdict(message, from_domain, settings, dnsfunc)
    return Verdict(authenticated=False,
                   reason=f"no Authentication-Results from {', '.join(sorted(trusted))}")
