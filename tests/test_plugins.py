"""The plugin host: no global state, clear errors naming the plugin, autoload switchable."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from commit_email import hookimpl
from commit_email.errors import PluginError
from commit_email.plugins import PluginHost
from commit_email.testing import make_config, make_host


class Misspelled:
    @hookimpl
    def commit_email_match_acount(self, message: Any) -> None:
        return None


def test_a_misspelled_hook_is_an_error_naming_the_plugin() -> None:
    with pytest.raises(PluginError) as err:
        make_host(Misspelled())
    assert "Misspelled" in str(err.value)
    assert "commit_email_match_acount" in str(err.value)
    assert "commit_email_match_account" in str(err.value)  # the list of known hooks


class WrongArgument:
    @hookimpl
    def commit_email_match_account(self, message: Any, directroy: Any) -> None:
        return None


def test_an_argument_the_spec_does_not_have_is_an_error() -> None:
    with pytest.raises(PluginError) as err:
        make_host(WrongArgument())
    assert "WrongArgument" in str(err.value) and "directroy" in str(err.value)


class FakeEntryPoint:
    name = "broken-plugin"
    value = "broken_plugin_module:plugin"
    group = "commit_email"

    def load(self) -> Any:
        raise ImportError("No module named 'broken_plugin_module'")


def test_a_broken_installed_plugin_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def entry_points(group: str) -> list[Any]:
        return [FakeEntryPoint()] if group == "commit_email" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with pytest.raises(PluginError) as err:
        PluginHost()
    assert "broken-plugin" in str(err.value) and "broken_plugin_module" in str(err.value)
    # With autoloading off the broken plugin is never imported.
    assert "builtin:commit_email.ticketing" in PluginHost(autoload=False).plugin_names()


def test_hosts_do_not_share_plugins() -> None:
    class Extra:
        @hookimpl
        def commit_email_register_stages(self) -> list[Any]:
            return []

    one = make_host(Extra())
    two = make_host()
    assert len(one.plugin_names()) == len(two.plugin_names()) + 1


def test_built_in_stages_are_ordered_by_precedence() -> None:
    stages = make_host().stages(make_config())
    assert [s.name for s in stages] == [
        "bounces", "filter", "automated", "threading", "email_to_ticket"
    ]
    assert [s.order for s in stages] == sorted(s.order for s in stages)


def test_later_xml_actions_override_earlier_ones() -> None:
    class First:
        @hookimpl
        def commit_email_register_xml_actions(self) -> dict[str, Any]:
            return {"TICKET": "first", "ASSET": "first"}

    class Second:
        @hookimpl
        def commit_email_register_xml_actions(self) -> dict[str, Any]:
            return {"ticket": "second"}

    actions = make_host(First(), Second()).xml_actions(make_config())
    assert actions["TICKET"] == "second" and actions["ASSET"] == "first"
