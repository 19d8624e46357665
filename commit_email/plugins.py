"""The plugin host: one pluggy manager per connector, never a global one.

Registration order decides precedence (pluggy calls the last registered first):
built-ins are registered first and marked ``trylast``, then installed plugins found
through the ``commit_email`` entry-point group, then the host's own plugin objects.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from .errors import PluginError

if TYPE_CHECKING:
    from .alerts import AlertParser
    from .config import Config
    from .message import Message
    from .model import Match, Outcome, Ticket
    from .oauth import OAuthCredentials
    from .protocols import AccountDirectory
    from .sources import Mailbox
    from .stages import Context, Stage, XmlAction

__all__ = [
    "BUILTIN_PLUGINS",
    "DISABLE_PLUGINS_ENV",
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "plugins_disabled",
]

ENTRY_POINT_GROUP = "commit_email"

#: Modules holding the built-in behaviour: each is itself the plugin (module-level hookimpls),
#: or exposes one as ``plugin``. Registered in this order, before everything else.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "commit_email.matching",
    "commit_email.filters",
    "commit_email.automated",
    "commit_email.ticketing",
    "commit_email.xml_actions",
    "commit_email.bounces",
    "commit_email.replies",
    "commit_email.autoresponse",
    "commit_email.mailboxes",
)


def _plugin_name(plugin: object) -> str:
    name = getattr(plugin, "__name__", None) or type(plugin).__name__
    return str(name)


log = logging.getLogger(__name__)

#: Set to 1 (or true/yes) to start without the plugins installed as packages: the switch
#: for a broken plugin, or to rule plugins out when looking for a fault. ``--no-plugins``
#: sets it for one command.
DISABLE_PLUGINS_ENV = "COMMIT_EMAIL_DISABLE_PLUGINS"


def plugins_disabled() -> bool:
    """Whether the environment turns the entry-point plugins off."""
    return os.environ.get(DISABLE_PLUGINS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class PluginHost:
    """Hosts the hooks of one connector and gives typed calls into them."""

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        autoload: bool = True,
        builtins: bool = True,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        if builtins:
            for module_name in BUILTIN_PLUGINS:
                module = importlib.import_module(module_name)
                self.register(getattr(module, "plugin", module), name=f"builtin:{module_name}")
        if autoload:
            self._load_entry_points()
        for plugin in plugins:
            self.register(plugin)

    @property
    def manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for tracing and advanced use)."""
        return self._pm

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object, validating its hooks; errors name the plugin."""
        label = name or _plugin_name(plugin)
        try:
            self._pm.register(plugin, name=label)
            self._check(plugin, label)
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(name=label)
            raise PluginError(str(exc), plugin=label) from exc
        except ValueError as exc:  # already registered
            raise PluginError(str(exc), plugin=label) from exc

    def _check(self, plugin: object, label: str) -> None:
        """Fail on marked hooks that match no spec (pluggy only says so in check_pending)."""
        for attr in dir(plugin):
            if self._pm.parse_hookimpl_opts(plugin, attr) is None:
                continue
            hook = getattr(self._pm.hook, attr, None)
            if hook is None or not hook.has_spec():
                self._pm.unregister(name=label)
                known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("commit_")))
                raise PluginError(f"unknown hook {attr!r} (known hooks: {known})", plugin=label)

    def _load_entry_points(self) -> None:
        if plugins_disabled():
            log.info("%s is set: the installed plugins are not loaded", DISABLE_PLUGINS_ENV)
            return
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self._pm.get_plugin(ep.name) is not None or self._pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"cannot import {ep.value!r}: {type(exc).__name__}: {exc} (the package "
                    f"that installed it is broken; fix or uninstall it, or start without "
                    f"installed plugins: --no-plugins or {DISABLE_PLUGINS_ENV}=1)",
                    plugin=ep.name,
                ) from exc
            self.register(plugin, name=ep.name)

    def plugin_names(self) -> list[str]:
        return [name for name, _ in self._pm.list_name_plugin()]

    # Typed calls into the hooks -------------------------------------------------------

    def match_account(
        self, message: Message, directory: AccountDirectory, config: Config
    ) -> Match | None:
        result: Match | None = self._pm.hook.commit_email_match_account(
            message=message, directory=directory, config=config
        )
        return result

    def alert_parsers(self, config: Config) -> list[AlertParser]:
        results: list[Sequence[AlertParser]] = self._pm.hook.commit_email_register_alert_parsers(
            config=config
        )
        # pluggy returns the last registered first; keep registration order (built-ins first).
        return [parser for group in reversed(results) for parser in (group or ())]

    def xml_actions(self, config: Config) -> dict[str, XmlAction]:
        results: list[Mapping[str, XmlAction]] = self._pm.hook.commit_email_register_xml_actions(
            config=config
        )
        actions: dict[str, XmlAction] = {}
        for group in reversed(results):  # later registrations override earlier ones
            for kind, handler in (group or {}).items():
                actions[kind.upper()] = handler
        return actions

    def stages(self, config: Config) -> list[Stage]:
        results: list[Sequence[Stage]] = self._pm.hook.commit_email_register_stages(config=config)
        stages = [stage for group in reversed(results) for stage in (group or ())]
        return sorted(stages, key=lambda s: s.order)  # stable: same order keeps registration

    def ticket_created(
        self, message: Message, ticket: Ticket, match: Match | None, context: Context
    ) -> None:
        self._pm.hook.commit_email_ticket_created(
            message=message, ticket=ticket, match=match, context=context
        )

    def message_processed(self, message: Message | None, outcome: Outcome) -> None:
        self._pm.hook.commit_email_message_processed(message=message, outcome=outcome)

    def sources(self, config: Config,
                credentials: OAuthCredentials | None = None) -> list[Mailbox]:
        if credentials is None:
            from .oauth import OAuthCredentials  # noqa: PLC0415 - a caller without its own

            credentials = OAuthCredentials(config)
        results: list[Sequence[Mailbox]] = self._pm.hook.commit_email_register_sources(
            config=config, credentials=credentials
        )
        # Built-ins first, then plugins in registration order (pluggy returns them reversed).
        return [box for group in reversed(results) for box in (group or ())]
