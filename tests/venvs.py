"""Throw-away virtualenvs with distributions pip-installed for real, offline.

For the tests that prove installation works: a plugin found through its entry point, the
example distribution's own tests run against the installed copies. ``pip install
--no-deps --no-build-isolation --no-index`` needs no network; pluggy, lxml, attrs, pytest
and hatchling come from the environment running the suite (the system's, or CI's .venv),
which a ``.pth`` file appends after the new venv's own site-packages, so what was installed
into the venv is imported first.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH: imports must resolve to what is installed."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}


def installed_venv(venv: Path, *distributions: Path) -> Path:
    """Create a venv at ``venv`` with ``distributions`` (source trees) installed; returns
    the venv's ``python``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"],
                          sysconfig.get_paths()["platlib"]])
    Path(own, "_test_runner_env.pth").write_text("\n".join(ours) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index", *map(str, distributions)],
        capture_output=True, text=True, timeout=300, check=False, env=clean_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python
