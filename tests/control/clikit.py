"""Runs the real `rainier` command in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def rainier(
    url: str,
    home: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAINIER_")}
    full = {**base, "RAINIER_HOME": str(home), "RAINIER_URL": url, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rainier.cli.main", *args],
        env=full,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout_s,
    )
