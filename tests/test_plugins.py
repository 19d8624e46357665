"""The plugin host: no global state, clear errors naming the plugin, autoload switchable."""

from __future__ import annotations

import importlib.metadata
import io
from pathlib import Path
from typing import Any

import pytest

from commit_email import hookimpl
from commit_email.cli import main
from commit_email.errors import PluginError
from commit_email.plugins import DISABLE_PLUGINS_ENV, PluginHost
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


@pytest.fixture
def broken_plugin_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def entry_points(group: str) -> list[Any]:
        return [FakeEntryPoint()] if group == "commit_email" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delenv(DISABLE_PLUGINS_ENV, raising=False)


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_the_environment_switch_starts_without_installed_plugins(
    broken_plugin_installed: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, value)
    names = PluginHost().plugin_names()
    assert "broken-plugin" not in names and "builtin:commit_email.ticketing" in names
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "0")
    with pytest.raises(PluginError, match="--no-plugins"):
        PluginHost()


def test_no_plugins_on_the_command_line(
    broken_plugin_installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[connector]\npublic_address = "support@acme.example"\n'
                      'internal_address = "helpdesk@acme.example"\n'
                      f'state_dir = "{tmp_path}/state"\n[store]\nurl = "memory:"\n')
    eml = tmp_path / "a.eml"
    eml.write_bytes(b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n")
    # the broken plugin is named, with the way out
    assert main(["inspect", "--config", str(config), str(eml)], out=io.StringIO()) == 2
    out = io.StringIO()
    assert main(["inspect", str(eml), "--config", str(config), "--no-plugins"], out=out) == 0
    assert "route:" in out.getvalue()
    monkeypatch.delenv(DISABLE_PLUGINS_ENV)  # main() set it for this process


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
