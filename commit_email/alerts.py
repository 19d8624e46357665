"""Monitoring alerts: the :class:`Alert` value and the built-in alert parsers.

An alert parser is any object with a ``name`` and ``parse(message) -> Alert | None``
(:class:`AlertParser`); it returns None for mail that is not its tool's. The built-ins read
the notification mails that Nagios, Icinga 1, Icinga 2 and Monit send out of the box:

- Nagios (``notify-service-by-email`` / ``notify-host-by-email``): a ``***** Nagios *****``
  banner, ``Key: value`` lines (``Notification Type``, ``Service``, ``Host``, ``State``,
  ``Date/Time``, ``Info`` / ``Additional Info``) and the subject
  ``** PROBLEM Service Alert: host/service is CRITICAL **``.
- Icinga 1, and Icinga 2 before 2.8, use the same layout under a ``***** Icinga *****`` banner.
- Icinga 2's ``mail-service-notification.sh`` / ``mail-host-notification.sh``: the subject
  ``[PROBLEM] service on host is CRITICAL!`` (or ``[PROBLEM] Host host is DOWN!``) and a
  ``***** Service Monitoring on … *****`` body with ``Info:``, ``When:``, ``Service:``,
  ``Host:`` lines.
- Monit's default mail format: the subject ``monit alert --  Does not exist nginx`` and a
  body ``Does not exist Service nginx`` with ``Date:``, ``Action:``, ``Host:``,
  ``Description:`` lines.

Parsers work on the decoded message (``subject``, ``text``; quoted-printable and HTML-only
bodies are already decoded by :class:`~commit_email.message.Message`), tolerate mailx's
re-indentation, CRLF, tabs and extra blank lines, and never raise for mail they do not
understand: any text is either recognised or answered with None.
"""

from __future__ import annotations

import enum
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from attrs import field, frozen
from dateutil import parser as dateparser

from ._frozen import PicklesByFields, frozen_mapping

__all__ = [
    "BUILTIN_PARSERS",
    "Alert",
    "AlertMail",
    "AlertParser",
    "AlertState",
    "IcingaParser",
    "MonitParser",
    "NagiosParser",
    "builtin_parsers",
    "field_lines",
    "is_human_reply",
]


class AlertState(enum.StrEnum):
    """What an alert says about its check: broken, fixed, or something else (ack, downtime)."""

    PROBLEM = "problem"
    RECOVERY = "recovery"
    OTHER = "other"


def _key_part(value: str) -> str:
    # Case and inner whitespace differ between a tool's subject and its body (mailx folds
    # long subjects); neither may split one problem into two tickets.
    return " ".join(value.split()).lower()


@frozen(kw_only=True)
class Alert(PicklesByFields):
    """One monitoring notification, as a parser understood it.

    ``source`` names the tool ("nagios", "icinga", "monit", a plugin's name); ``host`` and
    ``service`` identify the check (``service`` is empty for a host alert); ``severity`` is
    the tool's own state word (CRITICAL, DOWN, "Does not exist"); ``external_id`` is the
    tool's problem id when it has one; ``fields`` keeps everything else the parser read.
    """

    source: str
    host: str = ""
    service: str = ""
    state: AlertState = field(default=AlertState.OTHER, converter=AlertState)
    severity: str = ""
    output: str = ""
    external_id: str = ""
    timestamp: datetime | None = None
    fields: Mapping[str, str] = field(factory=dict, converter=frozen_mapping)

    @property
    def identity(self) -> str:
        """The account-independent part of the correlation key.

        The external id when the tool gives one (it survives renamed hosts), else
        source + host + service, normalised for case and whitespace.
        """
        if self.external_id:
            return f"{_key_part(self.source)}#{_key_part(self.external_id)}"
        return f"{_key_part(self.source)}/{_key_part(self.host)}/{_key_part(self.service)}"

    def correlation_key(self, account: str) -> str:
        """The key an alert ticket carries: (account, source, host, service) or the
        external id. Alerts about the same check for two customers never share a ticket."""
        return f"{account}|{self.identity}"

    @property
    def title(self) -> str:
        """A one-line description for a ticket: ``web01/HTTP is CRITICAL``."""
        what = f"{self.host}/{self.service}" if self.service else self.host
        what = what or self.source
        return f"{what} is {self.severity}" if self.severity else what


class AlertMail(Protocol):
    """The parts of a :class:`~commit_email.message.Message` a parser may rely on."""

    @property
    def subject(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def html(self) -> str | None: ...

    @property
    def sender(self) -> str: ...

    @property
    def date(self) -> datetime | None: ...


@runtime_checkable
class AlertParser(Protocol):
    """What ``commit_email_register_alert_parsers`` returns objects of."""

    name: str

    def parse(self, message: AlertMail) -> Alert | None:
        """The alert in ``message``, or None when this is not the parser's kind of mail."""
        ...


# -- shared reading helpers ------------------------------------------------------------

# "Key: value", also as HTML tables come out of text conversion: "Key: | value", "Key | value".
_FIELD_LINE = re.compile(
    r"^[ \t>|]*([A-Za-z][A-Za-z0-9 /_.-]{0,40}?)[ \t]*(?::[ \t|]*|\|[ \t]*)(.*?)[ \t|]*$"
)


def _lines(text: str) -> list[str]:
    # mailx and HTML-to-text conversions leave CR, NBSP and trailing blanks behind.
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ").split("\n")


def field_lines(text: str) -> dict[str, str]:
    """``Key: value`` lines of a notification body, keys lower-cased, first one wins.

    A key whose value is empty on its own line (Nagios's ``Additional Info:``) takes the
    following lines up to the next blank line, so multi-line plugin output is kept.
    """
    found: dict[str, str] = {}
    lines = _lines(text)
    i = 0
    while i < len(lines):
        m = _FIELD_LINE.match(lines[i])
        i += 1
        if not m:
            continue
        key, value = " ".join(m.group(1).lower().split()), m.group(2)
        if not value:
            while i < len(lines) and not lines[i].strip():
                i += 1  # "Additional Info:" is followed by a blank line
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i].strip())
                i += 1
            value = "\n".join(block)
        found.setdefault(key, value)
    return found


#: Tools mail at the moment of the event, so their own time and the Date header agree to
#: within minutes; a bigger gap means the tool's date string was not understood.
_PLAUSIBLE_SKEW = timedelta(days=1)


def _timestamp(value: str, fallback: datetime | None) -> datetime | None:
    """A tool's date string as an aware datetime; naive ones take the mail's zone, else UTC."""
    if value:
        try:
            with warnings.catch_warnings():
                # "CET", "EDT"…: dateutil warns and returns a naive time, which is handled
                # below with the mail's own zone
                warnings.simplefilter("ignore", dateparser.UnknownTimezoneWarning)
                parsed = dateparser.parse(value, fuzzy=True)
        except (ValueError, OverflowError, TypeError):
            parsed = None  # dateutil raises all three on odd input
        if parsed is not None:
            if parsed.tzinfo is None:
                tz = fallback.tzinfo if fallback is not None and fallback.tzinfo else UTC
                parsed = parsed.replace(tzinfo=tz)
            try:
                parsed = parsed.astimezone(UTC)
            except (ValueError, OverflowError):
                return fallback  # year 1 or 9999 does not survive the conversion
            if fallback is not None and abs(parsed - fallback) > _PLAUSIBLE_SKEW:
                return fallback  # a fuzzy misreading ("When: yesterday"), not the event time
            return parsed
    return fallback



_PROBLEM_WORDS = frozenset({"CRITICAL", "WARNING", "UNKNOWN", "DOWN", "UNREACHABLE"})
_OK_WORDS = frozenset({"OK", "UP"})


def _nagios_state(notification_type: str, severity: str) -> AlertState:
    kind = notification_type.strip().upper()
    if kind == "PROBLEM":
        return AlertState.PROBLEM
    if kind == "RECOVERY":
        return AlertState.RECOVERY
    if kind:  # ACKNOWLEDGEMENT, FLAPPINGSTART, DOWNTIMESTART, CUSTOM, …
        return AlertState.OTHER
    word = severity.strip().upper()
    if word in _OK_WORDS:
        return AlertState.RECOVERY
    if word in _PROBLEM_WORDS:
        return AlertState.PROBLEM
    return AlertState.OTHER


#: Subjects are matched only this far: real ones are short, and the patterns' lazy groups
#: would otherwise make a hostile 20 KB subject cost seconds.
SUBJECT_LIMIT = 512


def _subject(message: AlertMail) -> str:
    return message.subject[:SUBJECT_LIMIT]


#: Re:/Fw: as mail clients write them (English, German, Dutch, French, Nordic, Spanish and
#: Portuguese), with Outlook's "Re[2]:" counter.
_REPLY_PREFIX = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|antw|tr|sv|vs|rv|enc)\s*(?:\[\d+\])?\s*:", re.IGNORECASE
)


def is_human_reply(message: AlertMail) -> bool:
    """A reply to or a forward of an alert is a person writing about it, not the tool: the
    built-in parsers leave it to threading and email to ticket."""
    return _REPLY_PREFIX.match(message.subject) is not None


def _first(fields: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = fields.get(name, "").strip()
        if value:
            return value
    return ""


def _extra_fields(fields: Mapping[str, str], used: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in used and v}


# -- Nagios family (Nagios, Icinga 1, Icinga 2 < 2.8) -----------------------------------

#: ``** PROBLEM Service Alert: web01/HTTP is CRITICAL **``, ``** RECOVERY Host Alert: fw is UP **``
_NAGIOS_SUBJECT = re.compile(
    r"\*\*\s*(?P<type>[A-Z]+)\s+(?P<kind>Service|Host)\s+Alert:\s*(?P<what>.+?)\s+is\s+"
    r"(?P<state>[A-Z]+)\s*\**\s*$",
    re.IGNORECASE,
)
#: ``PROBLEM - web01 - HTTP is CRITICAL`` (Icinga 2 before 2.8, from its sample scripts)
_DASH_SUBJECT = re.compile(
    r"^\s*(?P<type>[A-Z]+)\s+-\s+(?P<host>.+?)(?:\s+-\s+(?P<service>.+?))?\s+is\s+"
    r"(?P<state>[A-Z]+)\s*$",
    re.IGNORECASE,
)
_BANNER = re.compile(r"^[ \t]*\*{3,}\s*(?P<tool>Nagios|Icinga)\b[^*\n]*\*{3,}", re.I | re.M)


def _banner_tool(text: str) -> str:
    m = _BANNER.search(text)
    return m.group("tool").lower() if m else ""


def _parse_nagios_layout(message: AlertMail, source: str) -> Alert | None:
    """The ``Notification Type:`` / ``Host:`` / ``State:`` layout shared by the family."""
    fields = field_lines(message.text)
    subject = _NAGIOS_SUBJECT.search(_subject(message))
    dash = None if subject else _DASH_SUBJECT.match(_subject(message))
    host = _first(fields, "host", "hostname", "nagios hostname", "host name")
    service = _first(fields, "service", "service description")
    severity = _first(fields, "state", "service state", "host state")
    kind = _first(fields, "notification type", "notification")
    if subject:
        what = subject.group("what")
        if subject.group("kind").lower() == "service" and "/" in what:
            subj_host, _, subj_service = what.partition("/")
        else:
            subj_host, subj_service = what, ""
        host = host or subj_host.strip()
        service = service or subj_service.strip()
        severity = severity or subject.group("state")
        kind = kind or subject.group("type")
    elif dash:
        host = host or dash.group("host")
        service = service or (dash.group("service") or "")
        severity = severity or dash.group("state")
        kind = kind or dash.group("type")
    if not host or not (kind or severity):
        return None
    output = _first(fields, "additional info", "info", "service output", "host output", "output")
    when = _first(fields, "date/time", "date", "when")
    used = ("host", "service", "state", "notification type", "additional info", "info",
            "date/time")
    return Alert(
        source=source,
        host=host,
        service=service,
        state=_nagios_state(kind, severity),
        severity=severity.upper(),
        output=output,
        timestamp=_timestamp(when, message.date),
        fields={"notification_type": kind.upper(), **_extra_fields(fields, used)},
    )


class NagiosParser:
    """Nagios's default ``notify-service-by-email`` and ``notify-host-by-email`` mails."""

    name = "nagios"

    def parse(self, message: AlertMail) -> Alert | None:
        if is_human_reply(message):
            return None
        tool = _banner_tool(message.text)
        if tool == "icinga":
            return None  # Icinga 1 copied the layout; IcingaParser reports it as Icinga
        if tool != "nagios" and not _NAGIOS_SUBJECT.search(_subject(message)):
            return None
        return _parse_nagios_layout(message, self.name)


# -- Icinga 2 (>= 2.8 scripts) ---------------------------------------------------------

#: ``[PROBLEM] HTTP on web01 is CRITICAL!`` and ``[PROBLEM] Host web01 is DOWN!``
_ICINGA2_SUBJECT = re.compile(
    r"\[(?P<type>[A-Z]+)\]\s*(?:(?P<hostkw>Host)\s+(?P<host>.+?)|(?P<service>.+?)\s+on\s+"
    r"(?P<shost>.+?))\s+is\s+(?P<state>[A-Z]+)!?\s*$",
    re.IGNORECASE,
)
_ICINGA2_BANNER = re.compile(
    r"\*{3,}\s*(?P<kind>Service|Host)\s+Monitoring\s+on\s+(?P<server>\S+)\s*\*{3,}", re.I
)
#: the body's headline ``HTTP on web01 is CRITICAL!`` / ``web01 is DOWN!``
_ICINGA2_HEADLINE = re.compile(r"^\s*(?P<what>.+?)\s+is\s+(?P<state>[A-Z]+)!\s*$", re.I | re.M)


def _parse_icinga2(message: AlertMail) -> Alert | None:
    banner = _ICINGA2_BANNER.search(message.text)
    subject = _ICINGA2_SUBJECT.search(_subject(message))
    if banner is None and subject is None:
        return None
    fields = field_lines(message.text)
    host = _first(fields, "host")
    service = _first(fields, "service")
    severity, kind = "", ""
    is_host = banner is not None and banner.group("kind").lower() == "host"
    if subject:
        kind = subject.group("type")
        severity = subject.group("state")
        is_host = is_host or bool(subject.group("hostkw"))
        if is_host:
            host = host or (subject.group("host") or "").strip()
        else:
            host = host or (subject.group("shost") or "").strip()
            service = service or (subject.group("service") or "").strip()
    if not severity and banner is not None:
        headline = _ICINGA2_HEADLINE.search(message.text, banner.end())
        severity = headline.group("state") if headline else ""
    if is_host:
        service = ""
    if not host or not severity:
        return None
    extra = _extra_fields(fields, ("host", "service", "info", "when"))
    if banner is not None:
        extra["monitoring_server"] = banner.group("server")
    return Alert(
        source="icinga",
        host=host,
        service=service,
        state=_nagios_state(kind, severity),
        severity=severity.upper(),
        output=_first(fields, "info"),
        timestamp=_timestamp(_first(fields, "when"), message.date),
        fields={"notification_type": kind.upper(), **extra},
    )


class IcingaParser:
    """Icinga 1 and Icinga 2 notification mails, in both of Icinga 2's script layouts."""

    name = "icinga"

    def parse(self, message: AlertMail) -> Alert | None:
        if is_human_reply(message):
            return None
        if _banner_tool(message.text) == "icinga":
            return _parse_nagios_layout(message, self.name)
        return _parse_icinga2(message)


# -- Monit -----------------------------------------------------------------------------

_MONIT_SUBJECT = re.compile(r"^\s*monit\s+alert\s*--\s*(?P<event>.+?)\s+(?P<service>\S+)\s*$", re.I)
_MONIT_HEADLINE = re.compile(r"^\s*(?P<event>\S.*?)\s+Service\s+(?P<service>\S+)\s*$", re.I | re.M)
_MONIT_SIGNATURE = re.compile(r"Your\s+faithful\s+employee,?\s*\n\s*Monit", re.I)

# Monit's event table: each event has a failed and a succeeded name. "Action done" is what
# Monit sends after an administrator's start/restart, which counts as the fix.
_MONIT_RECOVERY_EXACT = frozenset(
    {"exists", "timeout recovery", "link up", "action done", "type succeeded"}
)
_MONIT_RECOVERY_SUFFIX = (" succeeded", " ok")
_MONIT_PROBLEM_EXACT = frozenset(
    {"does not exist", "timeout", "link down", "invalid type", "data access error",
     "content match"}
)
_MONIT_PROBLEM_SUFFIX = (" failed", " exceeded", " matched", " error")


def monit_state(event: str, description: str = "") -> AlertState:
    """Classify a Monit ``$EVENT`` name; changes and unknown events are OTHER.

    "Action done" follows an administrator's action: a start, restart or monitor is the
    fix, but a "stop action done" or "unmonitor action done" fixes nothing.
    """
    word = " ".join(event.lower().split())
    if word == "action done" and re.search(r"\b(?:stop|unmonitor)\b", description, re.I):
        return AlertState.OTHER
    if word in _MONIT_RECOVERY_EXACT or word.endswith(_MONIT_RECOVERY_SUFFIX):
        return AlertState.RECOVERY
    if word in _MONIT_PROBLEM_EXACT or word.endswith(_MONIT_PROBLEM_SUFFIX):
        return AlertState.PROBLEM
    return AlertState.OTHER


class MonitParser:
    """Monit's default alert mail and its recovery ("Exists", "… succeeded", "Action done")."""

    name = "monit"

    def parse(self, message: AlertMail) -> Alert | None:
        if is_human_reply(message):
            return None
        subject = _MONIT_SUBJECT.match(_subject(message))
        text = message.text.replace("\r\n", "\n")
        signed = _MONIT_SIGNATURE.search(text) is not None
        if subject is None and not signed:
            return None
        fields = field_lines(text)
        headline = _MONIT_HEADLINE.search(text)
        if headline is not None:
            event, service = headline.group("event"), headline.group("service")
        elif subject is not None:
            event, service = subject.group("event"), subject.group("service")
        else:
            return None
        host = _first(fields, "host")
        if not host:
            _, _, domain = message.sender.partition("@")  # Monit mails from monit@$HOST
            host = domain
        if not host:
            return None
        event = " ".join(event.split())
        return Alert(
            source=self.name,
            host=host,
            service=service,
            state=monit_state(event, _first(fields, "description")),
            severity=event,
            output=_first(fields, "description"),
            timestamp=_timestamp(_first(fields, "date"), message.date),
            fields={"event": event, **_extra_fields(fields, ("host", "description", "date"))},
        )


#: The built-in parsers by the name ``[automated] parsers`` enables them with.
BUILTIN_PARSERS: Mapping[str, Callable[[], AlertParser]] = {
    "nagios": NagiosParser,
    "icinga": IcingaParser,
    "monit": MonitParser,
}


def builtin_parsers(names: Sequence[str]) -> list[AlertParser]:
    """Fresh instances of the named built-in parsers, in the order given; unknown names are
    skipped here (config validation reports them)."""
    return [BUILTIN_PARSERS[n]() for n in names if n in BUILTIN_PARSERS]
