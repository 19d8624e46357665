"""API by email, the Commit side: authorise each transaction, apply it, answer it.

:class:`XmlApiStage` (order 200) claims every mail that carries a transaction (see
:func:`commit_email.xml_api.find_payload`); such a mail never becomes a ticket, whatever
happens to its transactions. For each transaction, in order:

1. the sender must be in ``xml_api.allowed_senders`` (when the list is set) and the password
   must match ``xml_api.password`` (compared in constant time);
2. the DataKind's handler, looked up in the ``commit_email_register_xml_actions`` hook,
   applies it inside a nested ``sink.transaction()``: a handler that raises
   :class:`~commit_email.xml_api.XmlApiError` leaves nothing behind, and the next
   transaction still runs;
3. a ``CommitCRMTransactionResponse`` is queued for ``SendResponseToEmail`` (and
   ``response_bcc``) when ``send_response`` is on.

The outcome is ``xml_applied`` when every transaction applied, else ``xml_rejected`` with
the failures in its detail. A fault that is not the sender's (the store failing, a plugin
raising something else) propagates: the pipeline rolls the whole mail back and quarantines
it, so that it can be replayed once the fault is fixed.

One mail is one guess: after a wrong password no later transaction of the mail is tried
(``NOT_TRIED``), and a sender with ``max_failed_logins`` failures within
``failed_login_window`` (counted in the store) is refused unread (``TOO_MANY_FAILED_LOGINS``).
A transaction that was not authenticated is answered at most once per mail, only to the
mail's own sender and only where an auto-response would go (the loop protection and rate
limit of :class:`~commit_email.loops.LoopGuard`): otherwise anybody could make the
connector mail arbitrary addresses, or one address many times.

Writing a handler: a callable ``handler(transaction, ctx) -> rec_id`` (``transaction`` is a
:class:`~commit_email.xml_api.Transaction`, ``ctx`` the pipeline's context with ``sink`` and
``directory``). Raise :class:`~commit_email.xml_api.XmlApiError` to refuse with a code.
Return it from ``commit_email_register_xml_actions`` as ``{"DATAKIND": handler}``; the
last-registered plugin wins a DataKind, and every plugin wins over the built-ins.
"""

from __future__ import annotations

import email.utils
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import attrs
from attrs import frozen

from .config import Config, XmlApiConfig
from .deadline import check as check_time
from .hookspecs import hookimpl
from .loops import LoopGuard
from .message import Message
from .model import (
    ACCOUNT_FIELDS,
    TICKET_FIELDS,
    Account,
    Outcome,
    OutcomeKind,
    OutgoingMail,
    TicketDraft,
)
from .outgoing import LOOP_HEADER, serialize
from .stages import XML_ORDER, XML_STAGE, Context, Stage, XmlAction
from .xml_api import (
    ErrorCode,
    InvalidTransaction,
    Transaction,
    TransactionResult,
    XmlApiError,
    find_payload,
    parse_transactions,
    render_response,
)
from .xml_catalogue import (
    ACCOUNT_CATALOGUE,
    DATA_KINDS,
    TICKET_CATALOGUE,
    DataKind,
    is_commit_field_name,
)

__all__ = [
    "AccountAction",
    "RecordAction",
    "TicketAction",
    "XmlAction",
    "XmlApiPlugin",
    "XmlApiStage",
    "builtin_actions",
    "plugin",
    "sender_allowed",
]

log = logging.getLogger("commit_email.xml")

_REDACTED = "********"


# -- the built-in handlers --------------------------------------------------------------------


def _refuse_unknown(fields: Mapping[str, str], catalogue: Mapping[str, str], kind: str) -> None:
    unknown = sorted(name for name in fields if name not in catalogue)
    if unknown:
        raise XmlApiError(
            ErrorCode.UNKNOWN_FIELD, f"unknown {kind} field(s): {', '.join(unknown)}"
        )


def _require(fields: Mapping[str, str], names: Sequence[str], kind: str) -> None:
    missing = [name for name in names if not fields.get(name)]
    if missing:
        raise XmlApiError(
            ErrorCode.MISSING_REQUIRED, f"adding a {kind} needs {', '.join(missing)}"
        )


def _split(
    fields: Mapping[str, str], attributes: Mapping[str, str], rec_id_field: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Model attributes (by attribute name) and the other fields (by Commit name)."""
    # Any: the values feed attrs.evolve(), whose keyword types differ per attribute.
    known: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for name, value in fields.items():
        if name == rec_id_field:
            continue
        if name in attributes:
            known[attributes[name]] = value
        else:
            extra[name] = value
    return known, extra


@frozen
class AccountAction:
    """ACCOUNT: add a Card (``FLDCRDFULLNAME`` required) or update one by ``FLDCRDRECID``."""

    def __call__(self, transaction: Transaction, ctx: Context) -> str:
        fields = transaction.fields
        _refuse_unknown(fields, ACCOUNT_CATALOGUE, "ACCOUNT")
        rec_id = fields.get("FLDCRDRECID", "")
        known, extra = _split(fields, ACCOUNT_FIELDS, "FLDCRDRECID")
        if rec_id:
            if ctx.directory.get_account(rec_id) is None:
                raise XmlApiError(ErrorCode.RECORD_NOT_FOUND, f"no Account with REC ID {rec_id}")
            ctx.sink.update_account(rec_id, {**known, **extra})
            return rec_id
        _require(fields, ["FLDCRDFULLNAME"], "ACCOUNT")
        account = attrs.evolve(Account(rec_id="", extra=extra), **known)
        return ctx.sink.add_account(account).rec_id


@frozen
class TicketAction:
    """TICKET: open a ticket for an existing Account, or update one by ``FLDTKTRECID``."""

    def __call__(self, transaction: Transaction, ctx: Context) -> str:
        fields = transaction.fields
        _refuse_unknown(fields, TICKET_CATALOGUE, "TICKET")
        if "FLDTKTTICKETNO" in fields:
            raise XmlApiError(
                ErrorCode.READ_ONLY_FIELD, "FLDTKTTICKETNO is assigned by Commit and cannot be set"
            )
        self._check_references(fields, ctx)
        rec_id = fields.get("FLDTKTRECID", "")
        known, extra = _split(fields, TICKET_FIELDS, "FLDTKTRECID")
        if rec_id:
            if ctx.sink.get_ticket(rec_id=rec_id) is None:
                raise XmlApiError(ErrorCode.RECORD_NOT_FOUND, f"no ticket with REC ID {rec_id}")
            ctx.sink.update_ticket(rec_id, {**known, **extra})
            return rec_id
        _require(fields, ["FLDTKTCARDID", "FLDTKTPROBLEM"], "TICKET")
        # The source key makes a retried mail find its ticket instead of opening another one.
        source_key = f"{ctx.digest}#xml{transaction.position}" if transaction.position else ""
        draft = attrs.evolve(
            TicketDraft(account=known.pop("account"), description=known.pop("description"),
                        extra=extra, source_key=source_key),
            **known,
        )
        return ctx.sink.create_ticket(draft).rec_id

    @staticmethod
    def _check_references(fields: Mapping[str, str], ctx: Context) -> None:
        account = fields.get("FLDTKTCARDID", "")
        if account and ctx.directory.get_account(account) is None:
            raise XmlApiError(ErrorCode.ACCOUNT_NOT_FOUND, f"no Account with REC ID {account}")
        contact = fields.get("FLDTKTCONTACTID", "")
        if contact and ctx.directory.get_account(contact) is None:
            raise XmlApiError(ErrorCode.ACCOUNT_NOT_FOUND, f"no contact with REC ID {contact}")


@frozen(kw_only=True)
class RecordAction:
    """Any other DataKind: kept as Commit field name/value pairs through ``add_record``.

    ``account_field`` names the field that references an Account, checked when given.
    """

    kind: DataKind
    account_field: str = ""

    def __call__(self, transaction: Transaction, ctx: Context) -> str:
        fields = transaction.fields
        malformed = sorted(name for name in fields if not is_commit_field_name(name))
        if malformed:
            raise XmlApiError(
                ErrorCode.UNKNOWN_FIELD,
                f"not Commit field name(s) for {self.kind}: {', '.join(malformed)}",
            )
        account = fields.get(self.account_field, "") if self.account_field else ""
        if account and ctx.directory.get_account(account) is None:
            raise XmlApiError(ErrorCode.ACCOUNT_NOT_FOUND, f"no Account with REC ID {account}")
        rec_id_field = DATA_KINDS[self.kind].rec_id_field
        rec_id = fields.get(rec_id_field, "")
        values = {name: value for name, value in fields.items() if name != rec_id_field}
        if rec_id:
            if ctx.sink.get_record(self.kind, rec_id) is None:
                raise XmlApiError(
                    ErrorCode.RECORD_NOT_FOUND, f"no {self.kind} with REC ID {rec_id}"
                )
            ctx.sink.update_record(self.kind, rec_id, values)
            return rec_id
        if not values:
            raise XmlApiError(ErrorCode.MISSING_REQUIRED, f"adding a {self.kind} needs fields")
        return ctx.sink.add_record(self.kind, values)


def builtin_actions() -> dict[str, XmlAction]:
    """The ten DataKinds' built-in handlers."""
    return {
        DataKind.ACCOUNT: AccountAction(),
        DataKind.TICKET: TicketAction(),
        DataKind.OPPORTUNITY: RecordAction(kind=DataKind.OPPORTUNITY),
        DataKind.DOCUMENT: RecordAction(kind=DataKind.DOCUMENT),
        DataKind.CHARGE: RecordAction(kind=DataKind.CHARGE, account_field="FLDSLPCARDID"),
        DataKind.APPOINTMENT_OR_TASK: RecordAction(kind=DataKind.APPOINTMENT_OR_TASK),
        DataKind.HISTORY_NOTE: RecordAction(
            kind=DataKind.HISTORY_NOTE, account_field="FLDHISCARDID"
        ),
        DataKind.ITEM: RecordAction(kind=DataKind.ITEM),
        DataKind.ASSET: RecordAction(kind=DataKind.ASSET, account_field="FLDASTACCRECID"),
        DataKind.KBARTICLE: RecordAction(kind=DataKind.KBARTICLE),
    }


# -- authorisation ----------------------------------------------------------------------------


def sender_allowed(sender: str, allowed: Sequence[str]) -> bool:
    """Whether ``sender`` may use the API: any sender when ``allowed`` is empty, else an
    exact address or a ``*@domain`` entry (case-insensitive)."""
    if not allowed:
        return True
    sender = sender.strip().lower()
    domain = sender.rpartition("@")[2]
    for entry in (e.strip().lower() for e in allowed):
        if entry == sender or (entry.startswith("*@") and entry[2:] == domain and domain):
            return True
    return False


def _password_matches(given: str, expected: str) -> bool:
    # Constant time over the bytes; an unset password never matches (the API is then closed).
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _not_tried(transaction: Transaction | InvalidTransaction) -> _Applied:
    result = TransactionResult(
        external_application_name=transaction.external_application_name,
        return_transaction_id=transaction.return_transaction_id,
        data_kind=transaction.data_kind,
        error_code=ErrorCode.NOT_TRIED,
        error_message="not tried: an earlier transaction of this mail failed to log in",
    )
    return _Applied(result=result, response_to=transaction.send_response_to,
                    authenticated=False)


def _plain_address(value: str) -> str:
    """``value`` if it is a single bare address fit for a header, else ""."""
    _name, address = email.utils.parseaddr(value)
    if not address or "@" not in address or any(c in address for c in " \t\r\n,;<>\"'"):
        return ""
    return address


# -- the stage ----------------------------------------------------------------------------------


@frozen(kw_only=True)
class _Applied:
    result: TransactionResult
    response_to: str
    authenticated: bool
    ticket: str | None = None
    account: str | None = None


class XmlApiStage:
    """Claims mail carrying a CommitCRMTransaction and applies it (order 200)."""

    name = XML_STAGE
    order = XML_ORDER

    def __init__(self) -> None:
        self._guards: dict[int, LoopGuard] = {}

    def _guard(self, ctx: Context) -> LoopGuard:
        # The auto-responses' loop protection, built once per configuration.
        guard = self._guards.get(id(ctx.config))
        if guard is None or guard.config is not ctx.config:
            guard = self._guards[id(ctx.config)] = LoopGuard(ctx.config)
        return guard

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        payload = find_payload(text=message.text, html=message.html,
                               attachments=message.attachments)
        if payload is None:
            return None
        settings = ctx.config.xml_api
        secrets = _Secrets(settings)
        ctx.note("xml", f"transaction XML found in the {payload.carrier} "
                 f"{'part ' + payload.filename if payload.filename else 'body'}")
        try:
            transactions = parse_transactions(
                payload.data, max_bytes=settings.max_bytes, max_depth=settings.max_depth
            )
        except XmlApiError as exc:
            detail = secrets.scrub(f"the XML was refused: error {int(exc.code)} "
                                   f"({exc.code.name}): {exc.message}")
            ctx.note("xml", detail)
            log.info("xml_rejected %s: %s", message.message_id or ctx.digest, detail)
            return Outcome(kind=OutcomeKind.XML_REJECTED, detail=detail, stage=self.name)
        locked = self._locked_out(message, ctx)
        if locked is not None:
            detail = secrets.scrub(locked)
            ctx.note("xml", f"{detail}: nothing tried, no response")
            log.warning("xml_rejected %s: %s", message.message_id or ctx.digest, detail)
            return Outcome(kind=OutcomeKind.XML_REJECTED, detail=detail, stage=self.name)
        actions = ctx.host.xml_actions(ctx.config)
        allowed = sender_allowed(message.sender, settings.allowed_senders)
        lost = ctx.sender_loses(message, "xml_api")
        if lost is not None:
            ctx.note("xml", f"the sender is not authenticated ({lost.reason}): "
                     "[sender_auth] requires it for the XML API")
            allowed = False
        applied: list[_Applied] = []
        guessed = False
        for transaction in transactions:
            if guessed:
                # One mail is one guess: after a wrong password nothing else is tried.
                applied.append(_not_tried(transaction))
                continue
            if isinstance(transaction, Transaction):
                # Only a tried password can reach a text we write (a near miss of the real
                # one is sensitive too); untried ones are never looked at.
                secrets.seen(transaction.password)
            applied.append(self._apply(transaction, ctx, actions=actions, allowed=allowed,
                                       expected=secrets.expected))
            if applied[-1].result.error_code == ErrorCode.AUTH_FAILED:
                guessed = True
                self._count_failed_login(message, ctx)
        unauthenticated_answered = False
        for item in applied:
            if item.authenticated:
                self._respond(item, message, ctx, secrets)
            elif not unauthenticated_answered and item.result.error_code != ErrorCode.NOT_TRIED:
                # At most one answer per mail to a sender who did not prove anything, and only
                # where an auto-response would go: otherwise one forged mail makes us mail
                # its victim once per transaction.
                unauthenticated_answered = self._respond_unauthenticated(
                    item, message, ctx, secrets)
        return self._outcome(applied, secrets)

    def _failed_login_key(self, message: Message, ctx: Context) -> str:
        # The sender as the loop guard sees it; a mail without one still counts, together.
        key = message.sender or self._guard(ctx).responder_address(message)
        return (key or "<no sender>").lower()

    def _locked_out(self, message: Message, ctx: Context) -> str | None:
        settings = ctx.config.xml_api
        key = self._failed_login_key(message, ctx)
        since = ctx.now - timedelta(seconds=settings.failed_login_window)
        failed = ctx.state.count_failed_logins(key, since)
        if failed < settings.max_failed_logins:
            return None
        return (f"error {int(ErrorCode.TOO_MANY_FAILED_LOGINS)} (TOO_MANY_FAILED_LOGINS): "
                f"{failed} failed logins from {key} in the last "
                f"{settings.failed_login_window:g} s (max {settings.max_failed_logins})")

    def _count_failed_login(self, message: Message, ctx: Context) -> None:
        settings = ctx.config.xml_api
        ctx.state.record_failed_login(
            self._failed_login_key(message, ctx), ctx.now,
            expire_before=ctx.now - timedelta(seconds=settings.failed_login_window),
        )

    def _apply(
        self,
        transaction: Transaction | InvalidTransaction,
        ctx: Context,
        *,
        actions: Mapping[str, Any],
        allowed: bool,
        expected: str,
    ) -> _Applied:
        check_time()  # thousands of transactions in one mail stop at the time limit
        echo = TransactionResult(
            external_application_name=transaction.external_application_name,
            return_transaction_id=transaction.return_transaction_id,
            data_kind=transaction.data_kind,
        )
        response_to = transaction.send_response_to
        if isinstance(transaction, InvalidTransaction):
            return _Applied(result=attrs.evolve(echo, error_code=transaction.code,
                                                error_message=transaction.message),
                            response_to=response_to, authenticated=False)
        try:
            if not allowed:
                raise XmlApiError(ErrorCode.SENDER_NOT_ALLOWED,
                                  "the sender may not use the XML API")
            if not _password_matches(transaction.password, expected):
                raise XmlApiError(ErrorCode.AUTH_FAILED, "authentication failed")
        except XmlApiError as exc:
            return _Applied(result=attrs.evolve(echo, error_code=exc.code,
                                                error_message=exc.message),
                            response_to=response_to, authenticated=False)
        try:
            rec_id = self._run(transaction, ctx, actions)
        except XmlApiError as exc:
            return _Applied(result=attrs.evolve(echo, error_code=exc.code,
                                                error_message=exc.message),
                            response_to=response_to, authenticated=True)
        ticket = account = None
        if transaction.data_kind == DataKind.TICKET:
            found = ctx.sink.get_ticket(rec_id=rec_id)
            ticket = found.number if found else None
            account = found.account if found else None
        elif transaction.data_kind == DataKind.ACCOUNT:
            account = rec_id
        return _Applied(result=attrs.evolve(echo, ok=True, rec_id=rec_id),
                        response_to=response_to, authenticated=True,
                        ticket=ticket, account=account)

    @staticmethod
    def _run(transaction: Transaction, ctx: Context, actions: Mapping[str, Any]) -> str:
        action = actions.get(transaction.data_kind)
        if action is None:
            raise XmlApiError(
                ErrorCode.UNKNOWN_DATAKIND,
                f"unknown DataKind {transaction.data_kind!r} "
                f"(known: {', '.join(sorted(actions))})",
            )
        try:
            # A nested unit: a refusal half-way through undoes this transaction only.
            with ctx.sink.transaction():
                rec_id = action(transaction, ctx)
        except KeyError as exc:  # the sink's "no such record", e.g. deleted meanwhile
            raise XmlApiError(ErrorCode.RECORD_NOT_FOUND, f"no record {exc}") from None
        if not isinstance(rec_id, str) or not rec_id:
            raise XmlApiError(ErrorCode.INTERNAL_ERROR,
                              f"the {transaction.data_kind} handler returned no REC ID")
        return rec_id

    def _respond_unauthenticated(
        self, item: _Applied, message: Message, ctx: Context, secrets: _Secrets
    ) -> bool:
        """Answer a transaction that proved nothing, if that is safe; whether one was sent."""
        to = _plain_address(item.response_to)
        if not ctx.config.xml_api.send_response or not to:
            return False
        if to.lower() not in {message.sender, self._guard(ctx).responder_address(message)}:
            ctx.note("xml", f"no response to {to}: only the sender gets unauthenticated answers")
            return False
        reason = self._guard(ctx).no_response_reason(message, ctx.state, ctx.now)
        if reason is not None:
            ctx.note("xml", f"no response to {to}: {reason}")
            return False
        self._guard(ctx).record_response(message, ctx.state, ctx.now)
        self._respond(item, message, ctx, secrets)
        return True

    def _respond(self, item: _Applied, message: Message, ctx: Context, secrets: _Secrets) -> None:
        settings = ctx.config.xml_api
        to = _plain_address(item.response_to)
        if not settings.send_response or not to:
            return
        sender = ctx.config.smtp.from_address or ctx.config.connector.public_address
        message_id = ctx.new_message_id()
        raw = _response_mail(
            item.result, sender=sender, to=to, message_id=message_id,
            in_reply_to=message.message_id, loop_token=ctx.config.message_id_domain,
            secrets=secrets,
        )
        bcc = _plain_address(settings.response_bcc)
        ctx.send(OutgoingMail(kind="xml_response", sender=sender,
                              recipients=(to, bcc) if bcc else (to,), raw=raw,
                              message_id=message_id))

    def _outcome(self, applied: Sequence[_Applied], secrets: _Secrets) -> Outcome:
        failures = [
            f"transaction {n} ({a.result.data_kind or '?'}): error {int(a.result.error_code)} "
            f"({a.result.error_code.name}): {a.result.error_message}"
            for n, a in enumerate(applied, 1)
            if a.result.error_code is not None
        ]
        tickets = [a.ticket for a in applied if a.ticket]
        accounts = [a.account for a in applied if a.account]
        if failures:
            kind, detail = OutcomeKind.XML_REJECTED, "; ".join(failures)
        else:
            kind = OutcomeKind.XML_APPLIED
            detail = ", ".join(f"{a.result.data_kind} {a.result.rec_id}" for a in applied)
        return Outcome(kind=kind, detail=secrets.scrub(detail), stage=self.name,
                       ticket=tickets[-1] if tickets else None,
                       account=accounts[-1] if accounts else None)


class _Secrets:
    """The passwords in play for one mail, so that no text we emit can contain them."""

    def __init__(self, settings: XmlApiConfig) -> None:
        self.expected = settings.resolved_password()
        self._all = {self.expected} - {""}
        self._pattern: re.Pattern[str] | None = None

    def seen(self, password: str) -> None:
        if password and password not in self._all:
            self._all.add(password)
            self._pattern = None

    def scrub(self, text: str) -> str:
        """``text`` with every password in play replaced, in any letter case (a password
        written in capitals in another element must not leak either)."""
        if not self._all or not text:
            return text
        if self._pattern is None:
            self._pattern = re.compile(
                "|".join(re.escape(s) for s in sorted(self._all, key=len, reverse=True)),
                re.IGNORECASE,
            )
        return self._pattern.sub(_REDACTED, text)


def _response_mail(
    result: TransactionResult,
    *,
    sender: str,
    to: str,
    message_id: str,
    in_reply_to: str,
    loop_token: str,
    secrets: _Secrets,
) -> bytes:
    scrubbed = attrs.evolve(
        result,
        external_application_name=secrets.scrub(result.external_application_name),
        return_transaction_id=secrets.scrub(result.return_transaction_id),
        error_message=secrets.scrub(result.error_message),
    )
    mail = EmailMessage()
    mail["From"] = sender or "commit-email@localhost"
    mail["To"] = to
    mail["Subject"] = (
        f"CommitCRM transaction response: {scrubbed.status}"
        + (f" ({scrubbed.return_transaction_id})" if scrubbed.return_transaction_id else "")
    ).replace("\r", " ").replace("\n", " ")
    mail["Date"] = email.utils.formatdate(localtime=False)
    mail["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        mail["In-Reply-To"] = f"<{in_reply_to}>"
        mail["References"] = f"<{in_reply_to}>"
    mail["Auto-Submitted"] = "auto-replied"
    mail[LOOP_HEADER] = loop_token
    mail.set_content(render_response(scrubbed).decode("utf-8"), subtype="xml")
    return serialize(mail)


# -- the plugin ---------------------------------------------------------------------------------


class XmlApiPlugin:
    """The built-in XML API: the stage (when ``xml_api.enabled``) and the ten DataKinds."""

    @hookimpl(trylast=True)
    def commit_email_register_stages(self, config: Config) -> Sequence[Stage]:
        return [XmlApiStage()] if config.xml_api.enabled else []

    @hookimpl(trylast=True)
    def commit_email_register_xml_actions(self, config: Config) -> Mapping[str, Any]:
        return builtin_actions()


plugin = XmlApiPlugin()
