"""Shared pytest configuration; feature fixtures live in their own modules."""

pytest_plugins = ["tests.dovecot_fixtures"]
