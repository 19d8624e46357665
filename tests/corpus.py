"""The third-party message corpus (the directory in COMMIT_EMAIL_CORPUS), read in place.

``COMMIT_EMAIL_CORPUS`` names its folder (``.ci/run`` sets it). Without it the tests that
need the corpus are skipped locally, and fail under CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def corpus_root() -> Path | None:
    value = os.environ.get("COMMIT_EMAIL_CORPUS")
    if not value:
        return None
    root = Path(value)
    return root if root.is_dir() else None


def require_corpus() -> Path:
    root = corpus_root()
    if root is None:
        if os.environ.get("CI") == "true":
            pytest.fail("COMMIT_EMAIL_CORPUS is not set to the shared corpus folder")
        pytest.skip("COMMIT_EMAIL_CORPUS not set")
    return root


def _is_message(path: Path) -> bool:
    parts = path.parts
    if "LICENSES" in parts or path.name.startswith(("SOURCES", ".")):
        return False
    if "mime4j" in parts:
        return path.suffix == ".msg"
    if "cpython-test_email" in parts:
        return path.name.startswith("msg_")
    return path.suffix not in (".txt", ".md", ".xml")


def corpus_messages(root: Path) -> list[Path]:
    """Every message file of the corpus (expected-result files of mime4j left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and _is_message(p))
