"""Automated emails & MSP integration: Commit's rule lists and alert correlation.

:class:`AutomatedRules` compiles the ``[automated]`` detection, skip and account rules
once, when the connector is built, and answers per message — which detection rule matched,
which skip rule, which account values the account rules cut out — always with the rule's
index so ``inspect`` can say *why*. All matching is case-insensitive and first match wins.

Cost per message does not grow with the number of rules the way a loop over them would
(an MSP may keep a rule per customer and tool): exact senders and sender domains are
looked up in dicts, every ``subject_contains``/``body_contains`` literal of every rule is
found in one regex pass over the text (a trie of the literals), and only the rules whose
first condition matched are then checked in full, in order. Regexes are compiled once.

:class:`AutomatedStage` (pipeline order 100) puts rules, parsers and correlation together;
this module is itself the built-in plugin that registers it and the built-in parsers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from attrs import frozen

from ._regex import required_literal
from .alerts import (
    BUILTIN_PARSERS,
    Alert,
    AlertMail,
    AlertParser,
    AlertState,
    builtin_parsers,
)
from .config import (
    AccountRule,
    AutomatedConfig,
    Config,
    DetectionRule,
    SkipRule,
    compile_regex,
)
from .deadline import check as check_time
from .errors import AmbiguousMatch
from .hookspecs import hookimpl
from .message import Message
from .model import AccountKind, Match, Outcome, OutcomeKind, Ticket
from .protocols import ConnectorState
from .stages import AUTOMATED_ORDER, AUTOMATED_STAGE, Context, Stage, describe

__all__ = [
    "NOTICE_ENTRY",
    "PROBLEM_ENTRY",
    "RECOVERY_ENTRY",
    "AccountValue",
    "AutomatedRules",
    "AutomatedStage",
    "LiteralFinder",
    "RecoveryMemory",
    "RuleList",
]

log = logging.getLogger("commit_email.automated")


#: Up to this many literals, :class:`LiteralFinder` tests each with ``in``.
_FEW_LITERALS = 4
#: Text characters per pass that make :class:`LiteralFinder`'s pass per first character
#: pay (a pass costs ~0.15 us; one regex without a literal prefix ~0.03 us per character).
_CHARS_PER_PASS = 5


class LiteralFinder:
    """Which of many fixed strings occur in a text, in one pass of one compiled regex.

    The literals become a trie-shaped regex (``ab(?:c|d(?:e)?)``); a match is the longest
    literal starting at its position (the branches of a trie node differ in their first
    character, so at most one can go on). Every shorter literal that is a prefix of it
    occurs at the same position, so it is added from a precomputed table, and the next
    search starts one character after the match's start, so literals that overlap it are
    found too: the answer is exact, not a first-hit heuristic. Texts and literals are
    compared lower-cased.

    The regex deliberately starts with the trie itself, not with a zero-width lookahead
    around it: then ``re`` skips ahead with its literal-prefix scan in C instead of entering
    the pattern at every position of the text — with 1,000 rules' literals that made a
    1,200-character body cost 11 us instead of 0.6 us. That scan needs a literal prefix
    (``re``'s scan for a set of first characters is hardly faster than trying every
    position), so there is also one trie regex per first character: a text long enough to
    pay for a pass per character (about five characters per pass, measured) gets those,
    a short one (a subject, with literals of 26 first characters) the single regex.
    """

    def __init__(self, literals: Iterable[str]) -> None:
        self._literals = sorted({lit.lower() for lit in literals if lit})
        self._prefixes = self._prefix_table(self._literals)
        # a few literals are found faster by ``in`` (C substring search) than by a regex
        self._single: list[re.Pattern[str]] = []
        self._split: list[re.Pattern[str]] = []
        if len(self._literals) > _FEW_LITERALS:
            by_first: dict[str, list[str]] = {}
            for lit in self._literals:
                by_first.setdefault(lit[0], []).append(lit)
            self._single = [re.compile(_trie_pattern(self._literals))]
            self._split = [re.compile(_trie_pattern(part)) for part in by_first.values()] \
                if len(by_first) > 1 else self._single

    @staticmethod
    def _prefix_table(literals: Sequence[str]) -> dict[str, tuple[str, ...]]:
        known = set(literals)
        return {
            lit: tuple(lit[:n] for n in range(1, len(lit) + 1) if lit[:n] in known)
            for lit in literals
        }

    def __len__(self) -> int:
        return len(self._literals)

    def found_in(self, text_lower: str) -> set[str]:
        """The literals occurring in ``text_lower`` (already lower-cased)."""
        if not self._single:
            return {lit for lit in self._literals if lit in text_lower}
        split = len(self._split) * _CHARS_PER_PASS <= len(text_lower)
        found: set[str] = set()
        for regex in self._split if split else self._single:
            search = regex.search
            m = search(text_lower)
            while m is not None:
                found.update(self._prefixes[m.group()])
                m = search(text_lower, m.start() + 1)
        return found


_Trie = dict[str, "_Trie"]


def _trie_pattern(literals: Sequence[str]) -> str:
    trie: _Trie = {}
    for lit in literals:
        node = trie
        for ch in lit:
            node = node.setdefault(ch, {})
        node[""] = {}  # end of a literal

    def render(node: _Trie) -> str:
        branches = [re.escape(ch) + render(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # greedy optional: the longer literal wins, the shorter is the fallback
            return f"(?:{body})?"
        return body

    return render(trie)


class _MailText:
    """One message's texts, lower-cased once and only when a rule needs them.

    Plain attributes filled on first use rather than ``functools.cached_property``, which
    takes a lock on every access in Python 3.11: a measurable share of a few microseconds.
    """

    __slots__ = ("_body", "_subject", "mail", "sender", "sender_domain")

    def __init__(self, mail: AlertMail) -> None:
        self.mail = mail
        self.sender = mail.sender.lower()
        self.sender_domain = self.sender.rpartition("@")[2]
        self._subject: str | None = None
        self._body: str | None = None

    @property
    def subject(self) -> str:
        if self._subject is None:
            self._subject = self.mail.subject.lower()
        return self._subject

    @property
    def body(self) -> str:
        if self._body is None:
            self._body = self.mail.text.lower()
        return self._body


@frozen(kw_only=True)
class _Rule:
    """One detection or skip rule, compiled: every condition that is set must hold."""

    index: int
    senders: frozenset[str]
    domains: frozenset[str]
    subject_contains: str
    body_contains: str
    subject_regex: re.Pattern[str] | None
    body_regex: re.Pattern[str] | None

    def matches(self, text: _MailText) -> bool:
        if (self.senders or self.domains) and not (
            text.sender in self.senders or text.sender_domain in self.domains
        ):
            return False
        if self.subject_contains and self.subject_contains not in text.subject:
            return False
        if self.body_contains and self.body_contains not in text.body:
            return False
        if self.subject_regex is not None and not self.subject_regex.search(text.mail.subject):
            return False
        return self.body_regex is None or bool(self.body_regex.search(text.mail.text))


def _sender_sets(senders: Sequence[str]) -> tuple[frozenset[str], frozenset[str]]:
    """Full addresses, and domains written as ``*@domain``, ``@domain`` or ``domain``."""
    addresses, domains = set(), set()
    for entry in senders:
        value = entry.strip().lower()
        if not value:
            continue
        local, at, domain = value.rpartition("@")
        if at and local not in ("", "*"):
            addresses.add(value)
        else:
            domains.add(domain)
    return frozenset(addresses), frozenset(domains)


def _compile_rule(rule: DetectionRule | SkipRule, index: int, key: str) -> _Rule:
    senders, domains = _sender_sets(getattr(rule, "senders", ()))
    return _Rule(
        index=index,
        senders=senders,
        domains=domains,
        subject_contains=rule.subject_contains.lower(),
        body_contains=rule.body_contains.lower(),
        subject_regex=(compile_regex(rule.subject_regex, f"{key}[{index}].subject_regex")
                       if rule.subject_regex else None),
        body_regex=(compile_regex(rule.body_regex, f"{key}[{index}].body_regex")
                    if rule.body_regex else None),
    )


class _SenderGroup:
    """The rules filed under one sender key, by (subject literal, body literal); "" stands
    for a literal condition the rule does not have. Each group finds only its own rules'
    literals, and only when a message's sender selects the group."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, str], list[int]] = {}

    def add(self, subject_literal: str, body_literal: str, rule_index: int) -> None:
        self.index.setdefault((subject_literal, body_literal), []).append(rule_index)

    def seal(self) -> None:
        self._subject_finder = LiteralFinder(k[0] for k in self.index)
        self._body_finder = LiteralFinder(k[1] for k in self.index)
        self._subject = len(self._subject_finder) > 0
        self._body = len(self._body_finder) > 0

    def collect(self, text: _MailText, found: set[int]) -> None:
        """Add the rules whose literals all occur in ``text`` to ``found``."""
        subjects = ("", *self._subject_finder.found_in(text.subject)) if self._subject else ("",)
        bodies = ("", *self._body_finder.found_in(text.body)) if self._body else ("",)
        lookup = self.index.get
        for subject in subjects:
            for body in bodies:
                hit = lookup((subject, body))
                if hit is not None:
                    found.update(hit)




class _RegexGate:
    """One search that rules out many regex-only rules at once.

    Their subject (or else body) regexes joined into one alternation: when it finds nothing,
    none of them can match. Only regexes without capturing groups join — then wrapping one
    in ``(?:...)`` next to others cannot change what it matches (no group numbers to shift,
    no names to collide); one that starts with global flags (``(?s)...``) does not compile
    wrapped and stays out too. A gate that opens lets all its rules through to the full
    check: exact, and the common message (one no regex rule is about) pays one search.
    """

    def __init__(self, patterns: dict[int, re.Pattern[str]], *, in_subject: bool) -> None:
        joined = "|".join(f"(?:{p.pattern})" for p in patterns.values())
        self._regex = re.compile(joined, _REGEX_FLAGS)
        self._in_subject = in_subject
        self.rules = sorted(patterns)

    def opens(self, text: _MailText) -> bool:
        """Whether any of the joined regexes may match (the rules' own regexes search the
        original text, not the lower-cased one: so does the gate)."""
        mail = text.mail
        return self._regex.search(mail.subject if self._in_subject else mail.text) is not None

    @staticmethod
    def can_join(pattern: re.Pattern[str]) -> bool:
        if pattern.groups or pattern.flags != _REGEX_FLAGS | re.UNICODE:
            return False
        try:
            re.compile(f"(?:{pattern.pattern})", _REGEX_FLAGS)
        except re.error:
            return False
        return True


#: The flags of every compiled rule regex (``config.compile_regex``).
_REGEX_FLAGS = re.IGNORECASE | re.MULTILINE


class RuleList:
    """Ordered rules where the first rule whose conditions all hold wins.

    Each rule is filed under every combination of its cheap conditions that must hold
    together: each of its senders (``"=" + address``) or sender domains (``"@" +
    domain``), or "" when it names none; within that sender group, under its subject
    literal and body literal. A message selects at most three groups (its address, its
    domain, and ""), and in each looks up the combinations of the literals that one
    :class:`LiteralFinder` pass over its texts found. So the rules checked in full are only
    those whose sender *and* literals are all there — 500 rules of one RMM sender that
    differ by subject text cost one look-up per subject literal found, not 500 checks — and
    no message searches for the literals of senders it is not from. Rules with neither
    sender nor literal (regex-only) are candidates for every message, but those whose
    regexes can be joined pass a :class:`_RegexGate` first (one for subject regexes, one for
    body regexes). Candidates are checked in full, lowest index first.
    """

    def __init__(self, rules: Sequence[_Rule]) -> None:
        self._rules = list(rules)
        self._groups: dict[str, _SenderGroup] = {}
        self._always: list[int] = []
        by_subject: dict[int, re.Pattern[str]] = {}
        by_body: dict[int, re.Pattern[str]] = {}
        for rule in self._rules:
            senders = [f"={s}" for s in sorted(rule.senders)]
            senders += [f"@{d}" for d in sorted(rule.domains)]
            if not senders and not rule.subject_contains and not rule.body_contains:
                self._file_regex_only(rule, by_subject, by_body)
                continue
            for sender in senders:
                group = self._groups.setdefault(sender, _SenderGroup())
                group.add(rule.subject_contains, rule.body_contains, rule.index)
            if not senders:
                group = self._groups.setdefault("", _SenderGroup())
                group.add(rule.subject_contains, rule.body_contains, rule.index)
        for group in self._groups.values():
            group.seal()
        # one regex behind a gate would only be searched twice
        self._gates = [_RegexGate(gated, in_subject=gated is by_subject)
                       for gated in (by_subject, by_body) if len(gated) >= 2]
        self._always += [i for gated in (by_subject, by_body) if len(gated) < 2 for i in gated]

    def _file_regex_only(self, rule: _Rule, by_subject: dict[int, re.Pattern[str]],
                         by_body: dict[int, re.Pattern[str]]) -> None:
        """A rule with no sender and no literal: filed under the literals its regexes
        require, if they have any; else behind a gate if its regex can join one (its subject
        regex, else its body regex: each must match); else checked every time."""
        subject_literal = required_literal(rule.subject_regex)
        body_literal = required_literal(rule.body_regex)
        if subject_literal or body_literal:
            group = self._groups.setdefault("", _SenderGroup())
            group.add(subject_literal, body_literal, rule.index)
        elif rule.subject_regex is not None and _RegexGate.can_join(rule.subject_regex):
            by_subject[rule.index] = rule.subject_regex
        elif rule.body_regex is not None and _RegexGate.can_join(rule.body_regex):
            by_body[rule.index] = rule.body_regex
        else:
            self._always.append(rule.index)

    def __len__(self) -> int:
        return len(self._rules)

    def _candidates(self, text: _MailText) -> list[int]:
        found: set[int] = set(self._always)
        for gate in self._gates:
            if gate.opens(text):
                found.update(gate.rules)
        groups = self._groups
        for sender in ("", f"={text.sender}", f"@{text.sender_domain}"):
            group = groups.get(sender)
            if group is not None:
                group.collect(text, found)
        return sorted(found)

    def first_match(self, mail: AlertMail) -> int | None:
        """The index of the first rule that matches ``mail``, or None."""
        text = _MailText(mail)
        for i in self._candidates(text):
            if self._rules[i].matches(text):
                return i
        return None

    def scan(self, mail: AlertMail) -> int | None:
        """The same answer as :meth:`first_match`, by checking every rule in order: the
        reference the index is tested and benchmarked against."""
        text = _MailText(mail)
        return next((r.index for r in self._rules if r.matches(text)), None)


@frozen(kw_only=True)
class AccountValue:
    """A value an account rule cut out of a message: look it up in ``search_for``."""

    index: int
    search_for: str
    value: str


@frozen(kw_only=True)
class _AccountCutter:
    index: int
    search_for: str
    located_in: str
    after: re.Pattern[str] | None
    before: re.Pattern[str] | None
    regex: re.Pattern[str] | None

    def cut(self, text: str) -> str:
        if self.regex is not None:
            m = self.regex.search(text)
            return (m.group(1) or "").strip() if m else ""
        start, line_end = 0, len(text)
        if self.after is not None:
            m = self.after.search(text)
            if m is None:
                return ""
            start = m.end()
        elif self.before is not None:
            m = self.before.search(text)
            if m is None:
                return ""
            start = text.rfind("\n", 0, m.start()) + 1
        newline = text.find("\n", start)
        line_end = newline if newline >= 0 else len(text)
        end = line_end
        if self.before is not None:
            m = self.before.search(text, start, line_end)
            if m is not None:
                end = m.start()
        return text[start:end].strip()


def _literal(value: str, key: str) -> re.Pattern[str] | None:
    return compile_regex(re.escape(value), key) if value else None


def _compile_account_rule(rule: AccountRule, index: int) -> _AccountCutter:
    key = f"automated.account[{index}]"
    return _AccountCutter(
        index=index,
        search_for=rule.search_for,
        located_in=rule.located_in,
        after=_literal(rule.after, f"{key}.after"),
        before=_literal(rule.before, f"{key}.before"),
        regex=compile_regex(rule.regex, f"{key}.regex") if rule.regex else None,
    )


@frozen(kw_only=True)
class _KeyRule:
    """A detection rule's own correlation: ``key_regex`` and ``recovery_contains``."""

    key_regex: re.Pattern[str]
    recovery_contains: str


class AutomatedRules:
    """The compiled ``[automated]`` rule lists of one configuration."""

    def __init__(self, config: AutomatedConfig) -> None:
        self.detection = RuleList(
            [_compile_rule(r, i, "automated.detection") for i, r in enumerate(config.detection)]
        )
        self.skip = RuleList(
            [_compile_rule(r, i, "automated.skip") for i, r in enumerate(config.skip)]
        )
        self._account = [_compile_account_rule(r, i) for i, r in enumerate(config.account)]
        self._keys: dict[int, _KeyRule] = {
            i: _KeyRule(
                key_regex=compile_regex(r.key_regex, f"automated.detection[{i}].key_regex"),
                recovery_contains=r.recovery_contains.lower(),
            )
            for i, r in enumerate(config.detection)
            if r.key_regex
        }

    def detect(self, mail: AlertMail) -> int | None:
        """The index of the first detection rule matching ``mail``, or None."""
        return self.detection.first_match(mail)

    def skipped_by(self, mail: AlertMail) -> int | None:
        """The index of the first skip rule matching ``mail``, or None."""
        return self.skip.first_match(mail)

    def account_values(self, mail: AlertMail, alert: Alert | None = None) -> Iterator[AccountValue]:
        """The values the account rules cut out, in rule order (rules that find none are
        skipped). ``located_in = "host"``/``"service"`` read the parsed alert's fields."""
        for rule in self._account:
            if rule.located_in == "subject":
                text = mail.subject
            elif rule.located_in == "body":
                text = mail.text
            elif alert is None:
                continue
            else:
                text = alert.host if rule.located_in == "host" else alert.service
            value = rule.cut(text)
            if value:
                yield AccountValue(index=rule.index, search_for=rule.search_for, value=value)

    def rule_alert(self, index: int, mail: AlertMail) -> Alert | None:
        """The alert a detection rule with ``key_regex`` describes, for correlation of tools
        no parser knows. The key is searched in the subject, then in the body."""
        rule = self._keys.get(index)
        if rule is None:
            return None
        m = rule.key_regex.search(mail.subject) or rule.key_regex.search(mail.text)
        key = (m.group(1) or "").strip() if m else ""
        if not key:
            return None
        recovered = bool(rule.recovery_contains) and rule.recovery_contains in mail.subject.lower()
        # the sender's domain keeps two tools' identical key texts apart
        domain = mail.sender.rpartition("@")[2].lower()
        return Alert(
            source=f"rule:{domain}" if domain else "rule",
            host=key,
            state=AlertState.RECOVERY if recovered else AlertState.PROBLEM,
            output=mail.subject,
            timestamp=mail.date,
            fields={"detection_rule": str(index)},
        )


# -- the pipeline stage ------------------------------------------------------------------


class RecoveryMemory:
    """Recent recoveries by correlation key, so that delivery order cannot reopen a problem.

    Monitoring mail is not delivered in order: a RECOVERY can be fetched before the
    PROBLEM it ends (two relays, a retried delivery, one POP3 batch read in server order).
    The rule: a recovery is remembered with its own event time for ``memory`` seconds of
    processing time; a problem for the same key whose event time is not later than that
    recovery is stale and opens nothing (``alert_skipped``). The memory is kept in the
    connector's state, in the message's transaction: it survives restarts, a rolled-back
    message (``inspect``, a quarantined one) teaches it nothing, and expired entries are
    pruned as new ones arrive. (The converse — a late recovery must not close a newer
    problem's ticket — needs no memory: the ticket's history has the problems' times.)
    """

    def __init__(self, memory: float) -> None:
        self._memory = timedelta(seconds=memory)

    def remember(self, state: ConnectorState, key: str, event_time: datetime,
                 now: datetime) -> None:
        state.remember_recovery(key, event_time, now, expire_before=now - self._memory)

    def recovered_since(self, state: ConnectorState, key: str, event_time: datetime,
                        now: datetime) -> datetime | None:
        """The remembered recovery that makes a problem at ``event_time`` stale, if any."""
        entry = state.recovery_of(key)
        if entry is None:
            return None
        recovered_at, remembered_at = entry
        if now - remembered_at > self._memory:
            return None
        return recovered_at if recovered_at >= event_time else None


#: History entry kinds of an alert ticket: the problems (and repeats) filed under it, its
#: recoveries, and other notices (acknowledgements, downtimes). The opening mail is filed
#: by ``open_ticket`` as an ordinary "email" entry.
PROBLEM_ENTRY = "alert"
RECOVERY_ENTRY = "alert-recovery"
NOTICE_ENTRY = "alert-notice"


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _event_time(alert: Alert, message: Message, now: datetime) -> datetime:
    return _aware(alert.timestamp or message.date or now)


def _latest_problem(ticket: Ticket, ctx: Context) -> datetime | None:
    """When the newest problem mail filed under an alert ticket was sent (history times are
    the mails' Date headers): the opening entry and every later problem entry."""
    history = ctx.sink.history(ticket.rec_id)
    problems = [*history[:1], *(h for h in history[1:] if h.kind == PROBLEM_ENTRY)]
    return max((_aware(h.created) for h in problems), default=None)


def _alert_note(alert: Alert) -> dict[str, str]:
    note = {"source": alert.source, "host": alert.host, "service": alert.service,
            "state": alert.state.value, "severity": alert.severity, "output": alert.output}
    if alert.external_id:
        note["external_id"] = alert.external_id
    if alert.timestamp is not None:
        note["timestamp"] = alert.timestamp.isoformat()
    note.update({f"field.{k}": v for k, v in alert.fields.items()})
    return note


def _description(alert: Alert | None, message: Message) -> str:
    if alert is None or alert.fields.get("detection_rule"):
        return describe(message)
    first_line = next((ln.strip() for ln in alert.output.splitlines() if ln.strip()), "")
    text = f"{alert.title}: {first_line}" if first_line else alert.title
    return text if len(text) <= 250 else text[:249] + "…"


class AutomatedStage:
    """Order 100: monitoring and RMM mail becomes alert tickets, one per real problem.

    Detection rules or a parser recognise the mail; skip rules forward it; account rules,
    then the sender, then ``default_account`` find the Account; the alert's correlation key
    decides between a new ticket, appending to the open one, resolving it, or nothing.
    """

    name = AUTOMATED_STAGE
    order = AUTOMATED_ORDER

    def __init__(self, config: Config) -> None:
        self._config = config.automated
        self._rules = AutomatedRules(config.automated)
        self._recoveries = RecoveryMemory(config.automated.recovery_memory)
        self._parsers: list[AlertParser] | None = None

    def _parsers_of(self, ctx: Context) -> list[AlertParser]:
        if self._parsers is None:  # the host is known only once a message arrives
            parsers = list(ctx.host.alert_parsers(ctx.config))
            # Plugins' parsers first (stable sort): a plugin may read a site's variant of a
            # tool's mail that a built-in parser would otherwise claim.
            builtin = tuple(BUILTIN_PARSERS.values())
            self._parsers = sorted(parsers, key=lambda p: type(p) in builtin)
        return self._parsers

    def parse(self, message: Message, ctx: Context) -> tuple[Alert | None, str]:
        """The first parser's alert and that parser's name. A parser that raises is logged
        and skipped: one broken plugin must not stop the message or the other parsers."""
        for parser in self._parsers_of(ctx):
            check_time()
            name = str(getattr(parser, "name", type(parser).__name__))
            try:
                alert = parser.parse(message)
            except Exception as exc:
                log.warning("alert parser %r failed on %s: %s: %s", name,
                            message.message_id or "(no Message-ID)", type(exc).__name__, exc)
                ctx.note("automated.parser_error", f"{name}: {type(exc).__name__}: {exc}")
                continue
            if isinstance(alert, Alert):
                return alert, name
            if alert is not None:
                log.warning("alert parser %r returned %s, not an Alert: ignored", name,
                            type(alert).__name__)
                ctx.note("automated.parser_error", f"{name}: returned {type(alert).__name__}")
        return None, ""

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        detection = self._rules.detect(message)
        alert, parser = self.parse(message, ctx)
        if alert is None and detection is not None:
            alert = self._rules.rule_alert(detection, message)
            parser = f"detection rule {detection}" if alert is not None else ""
        if detection is None and alert is None:
            ctx.note("automated", "not automated: no detection rule matched and no parser "
                     "recognised it")
            return None
        ctx.note("automated.detection_rule", detection if detection is not None else "none")
        if parser:
            ctx.note("automated.parser", parser)
        if alert is not None:
            ctx.note("automated.alert", _alert_note(alert))
        skip = self._rules.skipped_by(message)
        if skip is not None:
            ctx.note("automated.skip_rule", skip)
            return ctx.forward(message, f"automated mail skipped by skip rule {skip}",
                               kind=OutcomeKind.ALERT_SKIPPED, stage=self.name)
        match = self._account(message, alert, ctx)
        if match is None:
            return ctx.forward(message, "automated mail: no Account found by rules, sender or "
                               "default_account", stage=self.name)
        if alert is None:
            ticket = ctx.open_ticket(message, match, description=_description(None, message),
                                     **self._config.ticket_defaults)
            return self._outcome(OutcomeKind.ALERT_TICKET_CREATED, "detected by rule "
                                 f"{detection}; no correlation key", ticket, match)
        return self._correlate(message, alert, match, ctx)

    # Account ---------------------------------------------------------------------------

    def _account(self, message: Message, alert: Alert | None, ctx: Context) -> Match | None:
        for value in self._rules.account_values(message, alert):
            match = self._lookup(value, ctx)
            if match is not None:
                ctx.note("automated.account_rule",
                         f"{value.index}: {value.search_for} = {value.value!r}")
                ctx.note("automated.account", f"{match.account.file_as} ({match.account.rec_id})")
                return match
            ctx.note("automated.account_rule_miss",
                     f"{value.index}: no single Account with {value.search_for} = {value.value!r}")
        if self._config.account_by_sender:
            try:
                match = ctx.match_sender(message)
            except AmbiguousMatch as exc:
                ctx.note("automated.account_by_sender", f"ambiguous: {exc}")
                match = None
            if match is not None and not match.is_employee:
                ctx.note("automated.account", f"by sender ({match.how}): "
                         f"{match.account.file_as} ({match.account.rec_id})")
                return match
        if self._config.default_account:
            account = ctx.directory.get_account(self._config.default_account)
            if account is not None:
                ctx.note("automated.account", f"default_account {account.rec_id}")
                return Match(account=account, how="default")
            ctx.note("automated.account",
                     f"default_account {self._config.default_account!r} does not exist")
        return None

    @staticmethod
    def _lookup(value: AccountValue, ctx: Context) -> Match | None:
        """The one active Account (or a contact's Account) the value names; None when it
        names none or several: account rules never guess."""
        matches: dict[str, Match] = {}
        for card in ctx.directory.find_by_field(value.search_for, value.value):
            if not card.active or card.kind is AccountKind.EMPLOYEE:
                continue
            if card.kind is AccountKind.CONTACT:
                parent = ctx.directory.get_account(card.parent)
                if parent is not None and parent.active:
                    matches[parent.rec_id] = Match(account=parent, contact=card, how="rule")
            else:
                matches.setdefault(card.rec_id, Match(account=card, how="rule"))
        return next(iter(matches.values())) if len(matches) == 1 else None

    # Correlation -----------------------------------------------------------------------

    def _correlate(self, message: Message, alert: Alert, match: Match, ctx: Context) -> Outcome:
        key = alert.correlation_key(match.account.rec_id)
        ctx.note("automated.correlation_key", key)
        open_ticket = ctx.sink.find_open_alert_ticket(key)
        ctx.note("automated.open_ticket", open_ticket.number if open_ticket else "none")
        if alert.state is AlertState.RECOVERY:
            return self._recovery(message, alert, key, match, ctx, open_ticket=open_ticket)
        if open_ticket is not None:
            kind = PROBLEM_ENTRY if alert.state is AlertState.PROBLEM else NOTICE_ENTRY
            ctx.file_message(open_ticket, message, kind=kind)
            return self._outcome(OutcomeKind.ALERT_APPENDED,
                                 f"{alert.state.value} appended: {alert.title}", open_ticket,
                                 match)
        if alert.state is not AlertState.PROBLEM:
            return self._outcome(OutcomeKind.ALERT_SKIPPED,
                                 f"{alert.fields.get('notification_type') or alert.state.value}"
                                 f" notice without an open ticket: {alert.title}", None, match)
        when = _event_time(alert, message, ctx.now)
        recovered = self._recoveries.recovered_since(ctx.state, key, when, ctx.now)
        if recovered is not None:
            ctx.note("automated.stale_problem", f"recovered at {recovered.isoformat()}")
            return self._outcome(OutcomeKind.ALERT_SKIPPED,
                                 f"problem from {when.isoformat()} already recovered at "
                                 f"{recovered.isoformat()}: {alert.title}", None, match)
        ticket = ctx.open_ticket(message, match, description=_description(alert, message),
                                 alert_key=key, **self._config.ticket_defaults)
        return self._outcome(OutcomeKind.ALERT_TICKET_CREATED, f"new alert: {alert.title}",
                             ticket, match)

    def _recovery(self, message: Message, alert: Alert, key: str, match: Match, ctx: Context, *,
                  open_ticket: Ticket | None) -> Outcome:
        self._recoveries.remember(ctx.state, key, _event_time(alert, message, ctx.now), ctx.now)
        if open_ticket is None:
            return self._outcome(OutcomeKind.ALERT_SKIPPED,
                                 f"recovery of {alert.title} without an open ticket", None, match)
        ctx.file_message(open_ticket, message, kind=RECOVERY_ENTRY)
        latest = _latest_problem(open_ticket, ctx)
        sent = _aware(message.date or ctx.now)
        if latest is not None and sent < latest:
            # a late all-clear for an earlier episode: the problem filed after it goes on
            ctx.note("automated.stale_recovery", f"older than the problem of {latest.isoformat()}")
            return self._outcome(OutcomeKind.ALERT_APPENDED,
                                 f"recovery older than the latest problem, ticket kept open: "
                                 f"{alert.title}", open_ticket, match)
        if not self._config.close_on_recovery:
            return self._outcome(OutcomeKind.ALERT_RESOLVED,
                                 f"recovery appended (close_on_recovery off): {alert.title}",
                                 open_ticket, match)
        changes: dict[str, object] = {"closed": True}
        if self._config.closed_status:
            changes["status"] = self._config.closed_status
        ctx.sink.update_ticket(open_ticket.rec_id, changes)
        return self._outcome(OutcomeKind.ALERT_RESOLVED, f"recovered and closed: {alert.title}",
                             open_ticket, match)

    def _outcome(self, kind: OutcomeKind, detail: str, ticket: Ticket | None,
                 match: Match) -> Outcome:
        return Outcome(kind=kind, detail=detail, ticket=ticket.number if ticket else None,
                       account=match.account.rec_id, stage=self.name)


# -- the built-in plugin: this module ---------------------------------------------------


@hookimpl(trylast=True)
def commit_email_register_alert_parsers(config: Config) -> Sequence[AlertParser]:
    return builtin_parsers(config.automated.parsers)


@hookimpl(trylast=True)
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    return [AutomatedStage(config)] if config.automated.enabled else []
