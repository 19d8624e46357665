"""The hooks of commit-email (pluggy project name ``commit_email``): the reference manual.

Implement any of them on a plain object or module, marked with
``from commit_email import hookimpl``. Implementations may take fewer arguments than
the spec (pluggy passes only the ones named) and must not give them defaults.
Built-in behaviour is registered as plugins too, marked ``trylast``, so a host's or an
installed plugin's implementation runs first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .alerts import AlertParser
    from .config import Config
    from .message import Message
    from .model import Match, Outcome, Ticket
    from .oauth import OAuthCredentials
    from .protocols import AccountDirectory
    from .sources import Mailbox
    from .stages import Context, Stage, XmlAction

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "commit_email"

#: Marks a hook implementation: ``@hookimpl def commit_email_...``.
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec(firstresult=True)
def commit_email_match_account(
    message: Message, directory: AccountDirectory, config: Config
) -> Match | None:
    """Match a message's sender to an Account. Stops at the first non-None result.

    Called by email-to-ticket and by automated-email account detection before the
    built-in matcher, which is itself the last implementation.

    :param message: the message being processed.
    :param directory: the account directory to look in.
    :param config: the connector's configuration (``[email_to_ticket]`` holds the matching
        options).
    :return: a :class:`~commit_email.model.Match`, or None to let the next matcher try.
        Raise :class:`~commit_email.errors.AmbiguousMatch` to refuse to guess (the message is
        then forwarded with the reason).
    """


@hookspec
def commit_email_register_alert_parsers(config: Config) -> Sequence[AlertParser]:
    """Return alert parser objects. Called once when the connector is built.

    :param config: the connector's configuration.

    Each parser has ``name: str`` and ``parse(message) -> Alert | None``. A parser whose name is
    listed in ``[automated] parsers`` (built-ins) or that comes from a plugin is used for
    every message; one that raises is logged and skipped for that message.
    """


@hookspec
def commit_email_register_xml_actions(config: Config) -> Mapping[str, XmlAction]:
    """Return ``{DataKind: handler}`` for the API by email. Called once per connector.

    :param config: the connector's configuration.

    Plugins registered later override earlier ones for the same DataKind, and every plugin
    overrides the built-ins, so a host can replace how ``TICKET`` is applied or add a kind.
    """


@hookspec
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    """Return pipeline stages, configured from ``config``. Called once per connector.

    A stage has ``name``, ``order`` (lower runs first: filter 10, automated 100, XML 200,
    threading 300, email-to-ticket 400) and ``handle(message, ctx) -> Outcome | None``; the
    first stage returning an Outcome decides; when none does, the message is forwarded.
    """


@hookspec
def commit_email_ticket_created(
    message: Message, ticket: Ticket, match: Match | None, context: Context
) -> None:
    """Notify that a ticket was opened from a message (inside the message's transaction).

    The built-in auto-responder implements this; mail it queues with ``context.send`` is sent
    only after the outcome is committed.
    """


@hookspec
def commit_email_message_processed(message: Message | None, outcome: Outcome) -> None:
    """Observe every outcome (metrics, audit), after it is durably recorded.

    :param message: the parsed message, or None when it could not be parsed (quarantined).
    :param outcome: what happened to it.
    """


@hookspec
def commit_email_register_sources(
    config: Config, credentials: OAuthCredentials
) -> Sequence[Mailbox]:
    """Return the mailboxes ``commit-email run`` serves. Called once per run.

    :param config: the connector's configuration.
    :param credentials: the OAuth 2.0 credentials of ``[oauth.NAME]`` sections, shared by
        every mailbox and the SMTP relay (``credentials.get(NAME)`` is a
        :class:`~commit_email.oauth.TokenProvider`), so a source logging in with OAuth uses
        the same cached token as the others.

    The built-in implementation (the last to run) returns the ``[pop3]`` and ``[imap]``
    mailboxes that have a host. A plugin adds a source of its own (Microsoft Graph, an HTTP
    queue) by returning a :class:`~commit_email.sources.Mailbox` whose ``open_session``
    makes a :class:`~commit_email.protocols.MailSession`; its ``name`` must be unique and
    stable, since the processed log files message ids under it.
    """
