"""commit-email: turn a support mailbox into Commit CRM help-desk tickets."""

from .config import Config, load_config, parse_config
from .errors import (
    AmbiguousMatch,
    CommitEmailError,
    ConfigError,
    InputError,
    LoginError,
    MailerError,
    MessageError,
    PluginError,
    SourceError,
    StoreError,
)
from .hookspecs import hookimpl
from .message import Address, Attachment, Message
from .model import (
    Account,
    AccountKind,
    Document,
    HistoryEntry,
    Match,
    Outcome,
    OutcomeKind,
    OutgoingMail,
    SourceRef,
    Ticket,
    TicketDraft,
)
from .pipeline import Connector, Inspection
from .plugins import PluginHost
from .protocols import AccountDirectory, ConnectorState, Mailer, TicketSink
from .stages import Context, Stage
from .store import SQLiteStore, open_store

__version__ = "0.1.0.dev0"

__all__ = [
    "Account",
    "AccountDirectory",
    "AccountKind",
    "Address",
    "AmbiguousMatch",
    "Attachment",
    "CommitEmailError",
    "Config",
    "ConfigError",
    "Connector",
    "ConnectorState",
    "Context",
    "Document",
    "HistoryEntry",
    "InputError",
    "Inspection",
    "LoginError",
    "Mailer",
    "MailerError",
    "Match",
    "Message",
    "MessageError",
    "Outcome",
    "OutcomeKind",
    "OutgoingMail",
    "PluginError",
    "PluginHost",
    "SQLiteStore",
    "SourceError",
    "SourceRef",
    "Stage",
    "StoreError",
    "Ticket",
    "TicketDraft",
    "TicketSink",
    "__version__",
    "hookimpl",
    "load_config",
    "open_store",
    "parse_config",
]
